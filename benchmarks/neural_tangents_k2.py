"""K2 of the generic path against neural-tangents' ``empirical_ntk_fn`` (issue 13:
"keep that lead"), on the same weights, in one run.

    python benchmarks/neural_tangents_k2.py --nt-python /path/to/nt-venv/bin/python

neural-tangents 0.6.5 is archived and needs jax 0.4.25 (docs/neural_tangents.md):
it runs in its own venv, given by ``--nt-python``, never imported here. The
network is stax's ``Dense(m), Erf, Dense(1)`` (NTK parametrisation, no
biases) on n = 8 points of S⁶, widths 1024 and 2048. Its child process
initialises the weights, times every ``implementation`` of
``empirical_ntk_fn`` (jacobian contraction, NTK-vector products, structured
derivatives) and writes weights and kernel to a file; the project's child
process computes K2 of a hand-written Equinox module with those weights on
the generic path (whose dense leaves it reads off the jaxpr as outer
products, engine/structure.py), the plain Gram of per-point gradients
(neural-tangents' jacobian contraction, the generic path before those
rules) as a bare ``jax.jit`` (what the jax versions alone make of it), and
K2 of the project's FFNet computing the same
function (its structured path, against neural-tangents' structured derivatives). Both in float64, best of
``--repeats`` runs after compilation, in each of ``--rounds`` alternating
runs of the two children (the best round counts); printed: each time,
project / best neural-tangents, and the largest difference of the kernels.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

NEURAL_TANGENTS = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
import neural_tangents as nt
from neural_tangents import stax
width, n, d, repeats, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
x = jax.random.normal(jax.random.PRNGKey(0), (n, d))
x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
init_fn, apply_fn, _ = stax.serial(stax.Dense(width), stax.Erf(), stax.Dense(1))
_, params = init_fn(jax.random.PRNGKey(1), x.shape)
times = {}
kernel = None
for name, implementation in [("jacobian_contraction", 1), ("ntk_vector_products", 2), ("structured_derivatives", 3)]:
    fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=implementation))
    k = fn(x, None, params).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x, None, params).block_until_ready()
        best = min(best, time.perf_counter() - start)
    times[name] = best
    kernel = np.asarray(k).reshape(n, n)
np.savez(out, x=np.asarray(x), W1=np.asarray(params[0][0]), W2=np.asarray(params[2][0]), kernel=kernel)
print(json.dumps(times))
"""

PROJECT = r"""
import json, sys, time
import numpy as np
import jax, jax.numpy as jnp, equinox as eqx
import nth_dynamics as nd
repeats, path = int(sys.argv[1]), sys.argv[2]
data = np.load(path)

class TwoLayer(eqx.Module):
    W1: jax.Array
    W2: jax.Array
    def __call__(self, x):  # stax's Dense(m), Erf, Dense(1) with parameterization="ntk"
        h = x @ self.W1 / jnp.sqrt(self.W1.shape[0])
        return (jax.scipy.special.erf(h) @ self.W2)[0] / jnp.sqrt(self.W2.shape[0])

model = TwoLayer(jnp.asarray(data["W1"]), jnp.asarray(data["W2"]))
x = jnp.asarray(data["x"])
(k2,) = jax.block_until_ready(nd.kernel_tower(model, x, 2))  # a hand-written module: the generic path
best = float("inf")
for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(nd.kernel_tower(model, x, 2))
    best = min(best, time.perf_counter() - start)
def bare(p):  # the plain Gram as bare jax.jit, in this venv's jax: separates version from algorithm
    g = jax.vmap(jax.grad(lambda p, x_b: eqx.combine(p, static)(x_b)), in_axes=(None, 0))(p, x)
    return sum(u.reshape(len(x), -1) @ u.reshape(len(x), -1).T for u in jax.tree.leaves(g))
params, static = eqx.partition(model, eqx.is_inexact_array)
bare = jax.jit(bare)
jax.block_until_ready(bare(params))
bare_best = float("inf")
for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(bare(params))
    bare_best = min(bare_best, time.perf_counter() - start)
# the same function as the project's FFNet (depth 0, erf): its structured path.
# Its first layer has unit-variance weights on the input as given, so stax's
# Dense(m) on x (W x / √d) is the FFNet on x / √d with W0 = W1ᵀ, a = W2[:, 0]
ffnet = nd.FFNet(x.shape[1], model.W1.shape[1], 0, activation="erf", key=jax.random.key(0))
ffnet = eqx.tree_at(lambda net: (net.W0, net.a), ffnet, (model.W1.T, model.W2[:, 0]))
x_ffnet = x / jnp.sqrt(x.shape[1])
(k2_ffnet,) = jax.block_until_ready(nd.kernel_tower(ffnet, x_ffnet, 2))
structured_best = float("inf")
for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(nd.kernel_tower(ffnet, x_ffnet, 2))
    structured_best = min(structured_best, time.perf_counter() - start)
print(json.dumps({"project": best, "bare": bare_best, "structured": structured_best,
                  "structured_difference": float(np.max(np.abs(np.asarray(k2_ffnet) - data["kernel"]))),
                  "difference": float(np.max(np.abs(np.asarray(k2) - data["kernel"]))),
                  "scale": float(np.max(np.abs(data["kernel"])))}))
"""


def run(python: str, code: str, *args) -> dict:
    out = subprocess.run([python, "-c", code, *map(str, args)], capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nt-python", required=True, help="python of a venv with neural-tangents 0.6.5")
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--d", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of both children; best of each")
    args = parser.parse_args()
    print(f"n = {args.n}, d = {args.d}, float64, best of {args.repeats} in each of {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            path = Path(tmp) / f"w{width}.npz"
            # rounds alternate the two children: on a shared machine a slow spell
            # then hits both libraries alike, and each keeps its best round
            rounds = [(run(args.nt_python, NEURAL_TANGENTS, width, args.n, args.d, args.repeats, path),
                       run(sys.executable, PROJECT, args.repeats, path)) for _ in range(args.rounds)]
            theirs = {name: min(t[name] for t, _ in rounds) for name in rounds[0][0]}
            ours = {name: (max if "difference" in name else min)(o[name] for _, o in rounds) for name in rounds[0][1]}
            fastest = min(theirs, key=theirs.get)
            listed = ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in theirs.items())
            print(f"width {width}: neural-tangents {listed}")
            print(f"{'':11}project generic K2 {ours['project'] * 1e3:.2f} ms: {ours['project'] / theirs[fastest]:.2f}× "
                  f"neural-tangents' fastest ({fastest}); max|ΔK2| = {ours['difference']:.1e} "
                  f"(of max|K2| {ours['scale']:.2f})")
            print(f"{'':11}project FFNet (the same function, structured path) K2 {ours['structured'] * 1e3:.2f} ms: "
                  f"{ours['structured'] / theirs['structured_derivatives']:.2f}× neural-tangents' structured_derivatives; "
                  f"max|ΔK2| = {ours['structured_difference']:.1e}")
            print(f"{'':11}the plain Gram of per-point gradients as a bare jax.jit in this venv: "
                  f"{ours['bare'] * 1e3:.2f} ms (project / bare {ours['project'] / ours['bare']:.2f}; "
                  f"neural-tangents' jacobian_contraction / bare {theirs['jacobian_contraction'] / ours['bare']:.2f})")


if __name__ == "__main__":
    main()
