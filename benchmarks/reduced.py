"""Reduced-basis hierarchy benchmark (docs/theory.md §8): the full tower and
solve against the projected ones, then the reduced path alone at large n.

    PYTHONPATH=. python benchmarks/reduced.py                    # every case below
    PYTHONPATH=. python benchmarks/reduced.py --n 16 32 --orders 4 --arch resnet
    PYTHONPATH=. python benchmarks/reduced.py --reduced-only --n 128 256

For each case (architecture, n, p): the wall time of the full tower K2…Kp and
of its solve, of the projected tower on the final basis and of its solve
(both timed on a second call, after compilation), their ratios
time_full/time_reduced, the seed and final ranks k, max|f_reduced − f_full|
over times and points divided by E_p = max_t ‖f_GF − f_full‖₂/√n (the
truncation error the reduced path must resolve), and the basis error
estimate on the same scale. The whole :func:`reduced_hierarchy` (seed tower,
enlarged tower, four solves, compilations) is timed too. Every figure is
measured in this run; each case runs in its own subprocess so that its peak
resident memory (ru_maxrss) is its own.

Targets: n = 64, p = 4, width 512: the reduced tower ≥ 10× faster than the
full one with outputs within 1e−3·E_4; p = 4 at n = 128 (two seeds, depth 2)
in ≤ 10 min; p = 4 at n = 256 runs at all.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

FULL_FITS = {4: 64, 5: 32}
"""Largest n at which the full tower of order p is measured (K5 at n = 64 is 8.6 GB)."""


def measure(
    arch: str, n: int, order: int, width: int, depth: int, t1: float, full: bool, seed: int = 0, rtol: float = 1e-12
) -> dict:
    """Runs in a child process."""
    import resource
    import time

    import jax
    import jax.numpy as jnp

    import nth_dynamics as nd

    key_x, key_model = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(key_x, (n, 7))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jnp.sin(2 * x[:, 0]) + x[:, 1]
    model = nd.make_network(arch, 7, width, depth, key=key_model)
    ts = jnp.linspace(0.0, t1, 17)
    tolerances = {"rtol": rtol, "atol": rtol}

    def timed(fn):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        return out, time.perf_counter() - start

    out: dict = {"arch": arch, "n": n, "order": order, "width": width, "depth": depth}
    reference, out["reference_s"] = timed(lambda: nd.gradient_flow(model, x, y, ts, **tolerances))
    reduced, out["reduced_hierarchy_s"] = timed(lambda: nd.reduced_hierarchy(
        model, x, y, ts, (order,), reference=reference.f - y, reference_f=reference.f, accuracy=None, **tolerances
    ))
    basis = reduced.basis
    out.update(k=reduced.rank, seed_k=reduced.seed_rank, estimate_ratio=float(reduced.basis_error_ratio[0]))
    f0 = jax.vmap(model)(x)
    timed(lambda: nd.kernel_tower(model, x, order, basis=basis))  # compiled already; warm the cache
    tower, out["reduced_tower_s"] = timed(lambda: nd.kernel_tower(model, x, order, basis=basis))
    timed(lambda: nd.solve_nth(tower, f0, y, ts, basis=basis, **tolerances))
    solution, out["reduced_solve_s"] = timed(lambda: nd.solve_nth(tower, f0, y, ts, basis=basis, **tolerances))
    if full:
        _, compile_and_run = timed(lambda: nd.kernel_tower(model, x, order))
        full_tower, out["full_tower_s"] = timed(lambda: nd.kernel_tower(model, x, order))
        out["full_compile_s"] = max(compile_and_run - out["full_tower_s"], 0.0)
        timed(lambda: nd.solve_nth(full_tower, f0, y, ts, **tolerances))
        full_solution, out["full_solve_s"] = timed(lambda: nd.solve_nth(full_tower, f0, y, ts, **tolerances))
        e_p = float(jnp.max(jnp.linalg.norm(reference.f - full_solution.f, axis=1)) / jnp.sqrt(n))
        out["E_p"] = e_p
        out["error_ratio"] = float(jnp.max(jnp.abs(reduced.trajectories[0].f - full_solution.f))) / e_p
        out["reduced_tower_error"] = float(jnp.max(jnp.abs(solution.f - full_solution.f))) / e_p
    out["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def in_child(**kwargs) -> dict:
    code = (
        f"import json, sys; sys.path.insert(0, {sys.path[0]!r}); from reduced import measure; "
        "print(json.dumps(measure(**json.loads(sys.argv[1]))))"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(result: dict) -> None:
    head = f"{result['arch']:>6} n={result['n']:>3} p={result['order']} k={result['seed_k']}→{result['k']:<3}"
    reduced = f"reduced tower {result['reduced_tower_s']:8.2f} s solve {result['reduced_solve_s']:6.2f} s"
    total = (f"whole reduced_hierarchy {result['reduced_hierarchy_s']:7.1f} s (reference {result['reference_s']:6.1f} s),"
             f" peak {result['peak_bytes'] / 1e6:6.0f} MB")
    line = f"{head} {reduced} | {total} | estimate/E_p {result['estimate_ratio']:.1e}"
    if "full_tower_s" in result:
        line += (
            f"\n{'':24}full tower {result['full_tower_s']:8.2f} s solve {result['full_solve_s']:6.2f} s"
            f" | tower ×{result['full_tower_s'] / result['reduced_tower_s']:5.1f}"
            f" solve ×{result['full_solve_s'] / result['reduced_solve_s']:5.1f}"
            f" | max|f_red − f_full|/E_p {result['error_ratio']:.1e} (E_p = {result['E_p']:.2e})"
        )
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--orders", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--arch", nargs="+", default=["ffnet", "resnet"])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--t1", type=float, default=4.0)
    parser.add_argument("--reduced-only", action="store_true", help="only the large cases, reduced path alone")
    parser.add_argument("--large", type=int, nargs="*", default=[128, 256], help="reduced path alone at these n")
    parser.add_argument("--seeds", type=int, default=2, help="network seeds of each large case (one cell)")
    parser.add_argument("--rtol", type=float, default=1e-12,
                        help="rtol = atol of every solve: E_4 is ~1e−6 here, so 1e−3·E_p needs solves well below 1e−9")
    args = parser.parse_args()
    print(f"width {args.width}, depth {args.depth}, t1 = {args.t1}, N_eval = n, rtol = atol = {args.rtol:g}, float64")
    if not args.reduced_only:
        for arch in args.arch:
            for order in args.orders:
                for n in args.n:
                    report(in_child(arch=arch, n=n, order=order, width=args.width, depth=args.depth,
                                    t1=args.t1, full=n <= FULL_FITS.get(order, 0), rtol=args.rtol))
    for n in args.large:
        for arch in args.arch:
            cell = 0.0
            for seed in range(args.seeds):
                result = in_child(arch=arch, n=n, order=4, width=args.width, depth=args.depth, t1=args.t1,
                                  full=False, seed=seed, rtol=args.rtol)
                report(result)
                cell += result["reference_s"] + result["reduced_hierarchy_s"]
            print(f"{'':24}cell of {args.seeds} seeds (reference + reduced_hierarchy, compilations included, "
                  f"one process per seed): {cell / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
