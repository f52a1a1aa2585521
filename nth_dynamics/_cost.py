"""The machine model behind every rough time estimate (``validate`` and the
budget checks of sweeps and studies): one sustained throughput and one
compilation time, so that all estimates speak of the same machine."""

FLOPS_PER_SECOND = 2e10
"""Sustained throughput of the rough time estimate: two CPU cores, BLAS-bound
(calibrated on scenarios/ffnet_width_to_4096.yaml: 10 min measured, 13 estimated)."""

COMPILE_SECONDS = 5.0
"""Assumed compilation time of one stage (dominant for small cells)."""

BYTES_PER_SECOND = 1e10
"""Sustained memory traffic of the rough time estimate (two CPU cores)."""

SOLVER_PARAMETER_PASSES = 100
"""Passes over the trained parameters per step of an adaptive Runge–Kutta
solve of gradient flow, besides its gradients: the stage combinations
(Tsit5: 7 stages, up to six terms each), the error estimate and its norm.
For wide networks on few points they, not the gradients, set the time
(a depth-32, width-1024 FFNet at n = 4: ~0.2 s a step per seed); fitted to the
reference times of the committed cells (benchmarks/estimates.py)."""
