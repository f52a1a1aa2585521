"""The machine model behind every rough time estimate (``validate`` and the
budget checks of sweeps and studies): one sustained throughput and one
compilation time, so that all estimates speak of the same machine."""

FLOPS_PER_SECOND = 2e10
"""Sustained throughput of the rough time estimate: two CPU cores, BLAS-bound
(calibrated on scenarios/ffnet_width_to_4096.yaml: 10 min measured, 13 estimated)."""

COMPILE_SECONDS = 5.0
"""Assumed compilation time of one stage (dominant for small cells)."""
