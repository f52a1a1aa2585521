"""Reading a result against the theory: scaling-law fits (``analysis``, over
``power_law`` and ``tolerance``) and the report (``plots.write_report``, over
``figures``, ``markdown`` and ``series``). Reads saved Datasets only."""
