"""Kernel-tower benchmark (issue 2): wall time and peak memory of K2, K3, K4,
the per-order cost ratio, and a per-tuple nested-``jax.grad`` baseline.

    python benchmarks/tower.py                 # small case + the issue's case
    python benchmarks/tower.py --case small    # a quick look

Every figure is measured in this run; nothing is compared with stored numbers.
Each measurement runs in its own subprocess so that its peak resident memory
(ru_maxrss) belongs to it alone; compilation is timed separately from the run.

Targets: time(K(r+1)) / (n · time(K(r))) ≤ 4; the vectorised K3 ≥ 100× faster
than computing it one tuple at a time with nested jax.grad (at n = 16).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASES = {
    "small": dict(width=128, depth=2, n=8, orders=(2, 3, 4)),
    "issue": dict(width=512, depth=3, n=32, orders=(2, 3, 4)),
}


def measure_tower(width: int, depth: int, n: int, order: int, batch_size: int | None) -> dict:
    """Runs in a child process: compile once, then time a second call."""
    import resource
    import time

    import jax
    import jax.numpy as jnp

    import nth_dynamics as nd

    x = jax.random.normal(jax.random.key(0), (n, 7))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    model = nd.ResNet(7, width, depth, key=jax.random.key(1))
    start = time.perf_counter()
    jax.block_until_ready(nd.kernel_tower(model, x, order, batch_size=batch_size))
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(nd.kernel_tower(model, x, order, batch_size=batch_size))
    run = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"run_s": run, "compile_s": max(first - run, 0.0), "peak_bytes": peak}


def measure_baseline(width: int, depth: int, n: int, tuples: int) -> dict:
    """K3 one tuple (a1, a2, b) at a time with nested jax.grad, as public
    research scripts do: K3 = <∇θ <∇f(x_a1), ∇f(x_a2)>, ∇f(x_b)>. Times
    ``tuples`` tuples after compilation and extrapolates to all n³ of them
    (the per-tuple cost is constant), and checks them against the tower."""
    import itertools
    import time

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    import nth_dynamics as nd

    x = jax.random.normal(jax.random.key(0), (n, 7))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    model = nd.ResNet(7, width, depth, key=jax.random.key(1))
    params, static = eqx.partition(model, model.trained_filter())
    flat, unravel = ravel_pytree(params)

    def f(theta, x_a):
        return eqx.combine(unravel(theta), static)(x_a)

    grad_f = jax.grad(f)

    @jax.jit
    def k3_entry(theta, x1, x2, xb):
        k2_entry = lambda th: jnp.vdot(grad_f(th, x1), grad_f(th, x2))
        return jnp.vdot(jax.grad(k2_entry)(theta), grad_f(theta, xb))

    all_tuples = list(itertools.product(range(n), repeat=3))
    k3_entry(flat, x[0], x[0], x[0]).block_until_ready()
    sample = all_tuples[:: max(1, len(all_tuples) // tuples)][:tuples]
    start = time.perf_counter()
    values = [float(k3_entry(flat, x[a], x[b], x[c])) for a, b, c in sample]
    per_tuple = (time.perf_counter() - start) / len(sample)
    _, k3 = nd.kernel_tower(model, x, 3)
    error = max(abs(v - float(k3[a, b, c])) for v, (a, b, c) in zip(values, sample))
    return {"per_tuple_s": per_tuple, "all_tuples_s": per_tuple * len(all_tuples), "max_abs_diff": error}


def in_child(function: str, **kwargs) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, %r); from tower import %s as fn; "
        "print(json.dumps(fn(**json.loads(sys.argv[1]))))" % (sys.path[0], function)
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_case(name: str, width: int, depth: int, n: int, orders, batch_size) -> None:
    print(f"\n== {name}: ResNet width {width}, depth {depth}, n = N_eval = {n}, batch_size {batch_size or 'auto'}")
    print(f"{'order':>5} {'run s':>9} {'compile s':>9} {'peak MB':>9} {'t(r)/(n t(r-1))':>16}")
    previous = None
    for order in orders:
        result = in_child("measure_tower", width=width, depth=depth, n=n, order=order, batch_size=batch_size)
        ratio = "" if previous is None else f"{result['run_s'] / (n * previous):16.2f}"
        print(f"{order:>5} {result['run_s']:9.3f} {result['compile_s']:9.1f} {result['peak_bytes'] / 1e6:9.0f} {ratio}")
        previous = result["run_s"]


def run_baseline(width: int, depth: int, n: int, tuples: int) -> None:
    print(f"\n== K3 baseline: nested jax.grad one tuple at a time, ResNet width {width}, depth {depth}, n = {n}")
    tower = in_child("measure_tower", width=width, depth=depth, n=n, order=3, batch_size=None)
    base = in_child("measure_baseline", width=width, depth=depth, n=n, tuples=tuples)
    print(f"per tuple {base['per_tuple_s'] * 1e3:.2f} ms × {n**3} tuples = {base['all_tuples_s']:.1f} s "
          f"(max |difference| from the tower {base['max_abs_diff']:.1e})")
    print(f"kernel_tower K2+K3: {tower['run_s']:.3f} s  →  {base['all_tuples_s'] / tower['run_s']:.0f}× faster (target ≥ 100×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--batch-size", type=int, default=None, help="direction chunk (default: auto)")
    parser.add_argument("--baseline-tuples", type=int, default=64)
    args = parser.parse_args()
    for name, case in CASES.items():
        if args.case in (name, "all"):
            run_case(name, **case, batch_size=args.batch_size)
    if args.case in ("issue", "all"):
        run_baseline(512, 3, 16, args.baseline_tuples)
    else:
        run_baseline(128, 2, 16, args.baseline_tuples)


if __name__ == "__main__":
    main()
