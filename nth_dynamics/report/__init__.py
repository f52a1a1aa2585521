"""Reading a result against the theory: scaling-law fits (``analysis``) and the
report's figures and markdown (``plots``). Reads saved Datasets only."""
