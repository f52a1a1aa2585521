"""Kernel-tower benchmark (issues 2 and 13): wall time and peak memory of K2,
K3, K4, the per-order cost ratio, a per-tuple nested-``jax.grad`` baseline,
and the paths side by side on a two-layer tanh MLP.

    python benchmarks/tower.py                 # every case
    python benchmarks/tower.py --case small    # a quick look
    python benchmarks/tower.py --case paths    # the paths side by side (issue 13)

Every figure is measured in this run; nothing is compared with stored numbers.
Each measurement runs in its own subprocess so that its peak resident memory
(ru_maxrss) belongs to it alone; compilation is timed separately from the run.

Targets: time(K(r+1)) / (n · time(K(r))) ≤ 4; the vectorised K3 ≥ 100× faster
than computing it one tuple at a time with nested jax.grad (at n = 16).

Paths (issue 13), for f(x) = a · tanh(W x) / √m with n = 8, widths 1024 and
2048, towers to K2, K3, K4, all in one child process per width:
(a) the baseline, written here independently: K2 as the Gram of the two
layers' per-point gradients, each higher order one JVP along ∇f(x_b) over
it, vmapped over b; (a') the same with K2 from the hand-written outer-product
factors of the two layers (what only a structured path can do); (b) the project's generic path on the same function as a
hand-written Equinox module; (c) an ``eqx.nn.MLP`` of the same size (its
structured path); (d) the project's FFNet (depth 0) with the same weights as
(a), (b); and, for reference, (e) the generic path as it was before issue 13
(every order, K2 included, one JVP level). Targets: (b)/(a) ≤ 1.5 and
(c)/(d) ≤ 2; (b)/(a') is printed for reference. Times are the best of ``--repeats`` runs after compilation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASES = {
    "small": {"width": 128, "depth": 2, "n": 8, "orders": (2, 3, 4)},
    "issue": {"width": 512, "depth": 3, "n": 32, "orders": (2, 3, 4)},
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


def measure_paths(width: int, n: int, repeats: int) -> dict:
    """Runs in a child process: the paths (a)–(e) of the module docstring,
    each tower to K2, K3, K4, best of ``repeats`` runs, and their differences."""
    import time

    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import nth_dynamics as nd

    d = 7
    x = jax.random.normal(jax.random.key(0), (n, d))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    ffnet = nd.FFNet(d, width, 0, key=jax.random.key(1))

    class TwoLayer(eqx.Module):
        W: jax.Array
        a: jax.Array

        def __call__(self, x):
            return jnp.dot(self.a, jnp.tanh(self.W @ x)) / jnp.sqrt(self.a.shape[0])

    module = TwoLayer(ffnet.W0, ffnet.a)
    mlp = eqx.nn.MLP(d, "scalar", width, 1, activation=jnp.tanh, key=jax.random.key(2))
    assert nd.engine.kernels.structured_path(mlp, None)

    def f(p, x_b):
        W, a = p
        return jnp.dot(a, jnp.tanh(W @ x_b)) / jnp.sqrt(a.shape[0])

    def gram_of_layer_gradients(p):
        """K2 = Σ_layers Gram of the per-point gradients of each layer."""
        gradients = jax.vmap(jax.grad(f), in_axes=(None, 0))(p, x)
        return sum(g.reshape(n, -1) @ g.reshape(n, -1).T for g in gradients)

    def gram_of_factors(p):
        """K2 = Σ_layers Gram of the hand-written outer-product factors of ∇f."""
        W, a = p
        z = x @ W.T                                             # (n, m)
        feature = jnp.tanh(z) / jnp.sqrt(width)                 # ∂f/∂a
        signal = a * (1 - jnp.tanh(z) ** 2) / jnp.sqrt(width)   # ∂f/∂W = signal xᵀ
        return feature @ feature.T + (signal @ signal.T) * (x @ x.T)

    def baseline(k2):
        """K2, then each order one JVP along ∇f(x_b) over the previous, vmapped over b."""

        def up(kernel):
            def kernel_up(p):
                directions = jax.vmap(jax.grad(f), in_axes=(None, 0))(p, x)
                stacked = jax.vmap(lambda g: jax.jvp(kernel, (p,), (g,))[1])(directions)
                return jnp.moveaxis(stacked, 0, -1)

            return kernel_up

        def make(order):
            kernels = [k2]
            for _ in range(3, order + 1):
                kernels.append(up(kernels[-1]))
            run = jax.jit(lambda p: tuple(kernel(p) for kernel in kernels))
            return lambda: run((module.W, module.a))

        return make

    def previous_generic(order):
        """(e): the generic path before issue 13: K2 = one JVP of f(X) per direction."""
        params, static = eqx.partition(module, eqx.is_inexact_array)

        def f(p, x_b):
            return eqx.combine(p, static)(x_b)

        def up(kernel):
            def kernel_up(p):
                stacked = jax.vmap(lambda x_b: jax.jvp(kernel, (p,), (jax.grad(f)(p, x_b),))[1])(x)
                return jnp.moveaxis(stacked, 0, -1)

            return kernel_up

        kernels = [lambda p: jax.vmap(f, in_axes=(None, 0))(p, x)]
        for _ in range(2, order + 1):
            kernels.append(up(kernels[-1]))
        run = eqx.filter_jit(lambda p: tuple(kernel(p) for kernel in kernels[1:]))
        return lambda: run(params)

    paths = {
        "a baseline": baseline(gram_of_layer_gradients),
        "a' factors baseline": baseline(gram_of_factors),
        "b generic": lambda order: lambda: nd.kernel_tower(module, x, order),
        "c eqx.nn.MLP": lambda order: lambda: nd.kernel_tower(mlp, x, order),
        "d FFNet": lambda order: lambda: nd.kernel_tower(ffnet, x, order),
        "e previous generic": previous_generic,
        "c' eqx.nn.MLP generic": lambda order: lambda: nd.kernel_tower(
            mlp, x, order, filter_spec=jax.tree.map(eqx.is_inexact_array, mlp)),
    }
    times, towers = {}, {}
    for order in (2, 3, 4):
        calls = {name: make(order) for name, make in paths.items()}
        for name, call in calls.items():
            towers[name, order] = jax.block_until_ready(call())  # compile
        best = dict.fromkeys(calls, float("inf"))
        for _ in range(repeats):  # interleaved, so that load from other processes hits every path alike
            for name, call in calls.items():
                start = time.perf_counter()
                jax.block_until_ready(call())
                best[name] = min(best[name], time.perf_counter() - start)
        for name, value in best.items():
            times[f"{name} K{order}"] = value

    def difference(first, second):
        return max(float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(v)))
                   for u, v in zip(towers[first, 4], towers[second, 4], strict=True))

    differences = {
        "generic vs baseline": difference("b generic", "a baseline"),
        "generic vs factors baseline": difference("b generic", "a' factors baseline"),
        "generic vs previous generic": difference("b generic", "e previous generic"),
        "generic vs FFNet (same function)": difference("b generic", "d FFNet"),
        "eqx.nn.MLP structured vs its generic": difference("c eqx.nn.MLP", "c' eqx.nn.MLP generic"),
    }
    return {"times": times, "differences": differences}


def run_paths(widths, n: int, repeats: int) -> None:
    print(f"\n== paths side by side: f = a·tanh(W x)/√m, d = 7, n = N_eval = {n} (best of {repeats} runs, seconds)")
    for width in widths:
        result = in_child("measure_paths", width=width, n=n, repeats=repeats)
        times = result["times"]
        print(f"\nwidth {width}")
        names = ["a baseline", "a' factors baseline", "b generic", "c eqx.nn.MLP", "d FFNet",
                 "e previous generic", "c' eqx.nn.MLP generic"]
        print(f"{'tower to':>9} " + " ".join(f"{name:>22}" for name in names)
              + f" {'b/a (≤1.5)':>11} {'b/a_':>7} {'c/d (≤2)':>9} {'e/b':>7}")
        for order in (2, 3, 4):
            t = {name: times[f"{name} K{order}"] for name in names}
            print(f"{'K' + str(order):>9} " + " ".join(f"{t[name]:22.5f}" for name in names)
                  + f" {t['b generic'] / t['a baseline']:11.2f} {t['b generic'] / t[names[1]]:7.2f}"
                  + f" {t['c eqx.nn.MLP'] / t['d FFNet']:9.2f}"
                  + f" {t['e previous generic'] / t['b generic']:7.2f}")
        for what, value in result["differences"].items():
            print(f"  max relative difference, {what} (K2…K4): {value:.1e}")


def in_child(function: str, **kwargs) -> dict:
    code = (
        f"import json, sys; sys.path.insert(0, {sys.path[0]!r}); from tower import {function} as fn; "
        "print(json.dumps(fn(**json.loads(sys.argv[1]))))"
    )
    # run from the directory of the checkout whose nth_dynamics is measured (python -c puts it first)
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True, check=False
    )
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
    parser.add_argument("--case", choices=[*CASES, "paths", "all"], default="all")
    parser.add_argument("--batch-size", type=int, default=None, help="direction chunk (default: auto)")
    parser.add_argument("--baseline-tuples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7, help="runs per path (paths case)")
    args = parser.parse_args()
    if args.case in ("paths", "all"):
        run_paths((1024, 2048), 8, args.repeats)
    if args.case == "paths":
        return
    for name, case in CASES.items():
        if args.case in (name, "all"):
            run_case(name, **case, batch_size=args.batch_size)
    if args.case in ("issue", "all"):
        run_baseline(512, 3, 16, args.baseline_tuples)
    else:
        run_baseline(128, 2, 16, args.baseline_tuples)


if __name__ == "__main__":
    main()
