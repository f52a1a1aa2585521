"""Benchmark of the infinite-width kernels (nth_dynamics.theory.limits), not a test.

Target (issue 5): NNGP + NTK of 1000 × 1000 points at depth 1000 in under 10 s.
The baseline, measured in the same run, is the straightforward implementation:
NumPy, the whole 1000 × 1000 pair matrix updated layer by layer with
``np.arccos`` (timed over a few layers; its cost per layer is constant, so it
is scaled to the full depth). Run: ``python benchmarks/limits.py [n] [depth]``.
"""

import sys
import time

import numpy as np

import nth_dynamics  # noqa: F401  (float64)
from nth_dynamics.theory import limits


def naive_relu_ffnet(x: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """docs/theory.md §6's recursion for the plain-ReLU FFNet of ``depth`` (NNGP, NTK), per layer on full matrices."""
    K = x @ x.T
    theta = K.copy()
    for _ in range(depth + 1):  # hidden layers, then the readout
        diag = np.sqrt(np.diag(K))
        scale = np.outer(diag, diag)
        rho = np.clip(K / scale, -1, 1)
        angle = np.arccos(rho)
        sigma = 0.5 * scale * (np.sqrt(1 - rho**2) + (np.pi - angle) * rho) / np.pi
        sigma_dot = 0.5 * (np.pi - angle) / np.pi
        theta = theta * sigma_dot + sigma
        K = sigma
    return K, theta


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if hasattr(result, "ntk"):
        result.ntk.block_until_ready()
    return time.perf_counter() - start, result


def main(n: int = 1000, depth: int = 1000) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 10)) / np.sqrt(10)

    # the baseline agrees with limits (checked on a shallow net, where 2^(−L) stays representable)
    _, naive = naive_relu_ffnet(x[:50], 5)
    reference = np.asarray(limits.ntk(x[:50], None, "ffnet", 5, activation="relu"))
    assert np.allclose(naive, reference, rtol=1e-10), "baseline and limits disagree"

    baseline_layers = 10
    t_naive, _ = timed(naive_relu_ffnet, x, baseline_layers - 1)
    baseline = t_naive / baseline_layers * (depth + 1)
    print(f"points {n} × {n}, depth {depth}")
    print(f"baseline (NumPy, full matrices per layer): {t_naive:.2f} s for {baseline_layers} layers → {baseline:.1f} s at depth {depth}")

    for architecture, options in (
        ("ffnet", dict(activation="relu")),
        ("resnet", dict(activation="relu", gamma=0.5)),
        ("resnet", dict(activation="relu", gamma=0.0)),
    ):
        compile_time, _ = timed(limits.kernels, x, None, architecture, 1, **options)  # compiles; depth is traced
        t_one, _ = timed(limits.kernels, x, None, architecture, 1, **options)
        t_full, _ = timed(limits.kernels, x, None, architecture, depth, **options)
        label = f"{architecture} {options}"
        verdict = "OK" if t_full < 10 else "SLOWER THAN TARGET"
        print(
            f"{label:52s} {t_full:6.2f} s  (compile {compile_time:.2f} s; depth 1: {t_one:.3f} s, "
            f"× depth = {t_one * depth:.1f} s)  speed-up vs baseline {baseline / t_full:5.1f}×  [{verdict} < 10 s]"
        )

    # smooth activations: 2-D Gauss–Hermite costs q² activation calls per pair and layer
    small, small_depth = 100, 20
    timed(limits.kernels, x[:small], None, "ffnet", 1, activation="tanh")  # compile
    t_tanh, _ = timed(limits.kernels, x[:small], None, "ffnet", small_depth, activation="tanh")
    pair_layers = small * small * (small_depth + 1)
    print(
        f"tanh (Gauss–Hermite, {limits.DEFAULT_QUADRATURE_NODES}² nodes) {small} × {small}, depth {small_depth}: "
        f"{t_tanh:.2f} s = {t_tanh / pair_layers * 1e6:.1f} µs per pair and layer "
        f"(ReLU: {t_full / ((n * n) * (depth + 1)) * 1e9:.1f} ns)"
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
