"""Estimates of a cell before it runs: peak memory (bytes), a rough run time,
and the chunking that fits the memory budget (the tower's direction chunk,
the seeds run together); the budget check of a whole sweep."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._cost import BYTES_PER_SECOND, COMPILE_SECONDS, FLOPS_PER_SECOND, SOLVER_PARAMETER_PASSES
from .._schema import ScenarioError
from ..data import make_data
from ..engine.function_model import activation_count
from ..engine.hierarchy import SOLVERS
from ..engine.kernels import compile_bytes, tower_bytes
from ..engine.networks import AbstractNetwork, parameter_counts
from ..theory import limits
from .cells import Cell, CellSpec, ModelFactory, data_key, parameter_sizes
from .scenario import Scenario
from .schema import DESCENT_METHODS, descent_steps

SOLVER_STAGES = {"tsit5": 7, "dopri5": 7, "dopri8": 13, "heun": 2, "bosh3": 4, "kvaerno5": 7}
"""Vector-field evaluations kept per step (the memory of a Runge–Kutta step)."""
IMPLICIT_SOLVERS = {"kvaerno5"}

ASSUMED_STEPS = 100
"""Steps of an adaptive solve whose kernel cannot be planned (a user's model)."""
STEPS_PER_ROOT_STIFFNESS = 18.0
"""Adaptive Tsit5 steps at rtol 1e−9 per √(1 + t1·λ_max/n) of the infinite-width
NTK (:func:`planned_steps`), fitted to the reference solves of the committed
cells of results/n_scaling.cells at widths m ≥ 8n (benchmarks/estimates.py)."""
NARROW_WIDTH_RATE = 0.45
"""Growth of the step count with n/m, as exp(0.45·n/m): a narrow network's
λ_min(K2₀) falls below the infinite-width one's, and at time.unit
n_over_lambda_min its t1 grows with it (measured ×1.5, 2.2–3.1, 3.2–7.8 and
15–36 at n/m = 1, 2, 4, 8, the same cells; the n = 256, width-16 cells hit
max_steps = 100000)."""

PLANNED_RANK = 16
"""The basis rank k that ``hierarchy.basis: reduced`` is planned for before
the POD has chosen it: the enlarged ranks measured at basis_tol 1e−12 were
12–21 (tanh FFNet, n = 24, t1 = 10) and 13–15 (ResNet, n = 64–256, t1 = 4),
not growing with n (benchmarks/reduced.py), and 16 once rounded up to whole
direction chunks (n = 128, both seeds of benchmarks/reduced_cell.yaml). A
cell records the k it used (``basis_rank``); the memory plan has room for
more (it errs high, :func:`~nth_dynamics.engine.kernels.tower_bytes`).
Not at ``time.unit: n_over_lambda_min``: see :func:`planned_rank`."""
REDUCED_TOWERS = 2
"""Projected towers a reduced cell computes per seed: on the seed basis and on
the enlarged one (a second enlargement is rare)."""
REDUCED_SOLVES = 3
"""Solves of each order a reduced cell makes: on the seed basis, on the
enlarged one, and (rarely) on a second enlargement."""


def estimate_cell(cell: Cell) -> dict[str, Any]:
    """:func:`estimate_spec` of the cell's spec (and its user's model)."""
    return estimate_spec(cell.spec, cell.model)


def estimate_spec(spec: CellSpec, model: ModelFactory | None = None) -> dict[str, Any]:
    """Rough peak memory (bytes) of a cell, before allocating anything, and
    the direction chunk (``batch_size``) of its kernel tower (its run time:
    :func:`estimate_seconds`).

    Memory: the solver state ((stages + 3) copies of the NTH state, or of
    the trained parameters for the reference), the saved trajectories and the
    parameters, plus the kernel tower (:func:`~nth_dynamics.engine.kernels.tower_bytes`)
    with the largest direction chunk that fits what the rest leaves of
    ``memory_budget_gb``; all × the seeds that run together as one vmapped
    batch (``seed_batch``: all of them when they fit, else fewer at a time);
    plus, once, the process itself: the JAX runtime and the compilation of
    the tower (:func:`~nth_dynamics.engine.kernels.compile_bytes`).

    A user's ``model`` (:class:`~nth_dynamics.pipeline.cells.ModelFactory`)
    is planned from its parameter shapes (:func:`network_counts`).
    """
    hierarchy, reference = spec.hierarchy, spec.reference
    itemsize = 8 if spec.precision == "float64" else 4
    seeds = len(spec.seeds)
    n, n_eval = spec.n_train, spec.n_eval
    p_max, orders = max(hierarchy.orders), hierarchy.orders
    n_saves = spec.time.n_saves
    n_params, n_trained, activations, structured = network_counts(spec, model)

    k = planned_rank(spec)
    state = n_eval * (1 + sum(n * k ** (r - 2) for r in range(2, p_max)))  # f, K2, …, K(p−1) (K̂ when reduced)
    nth_solver = _solver_copies(hierarchy.solver, state) * itemsize
    if reference.method == "gradient_descent":
        ref_solver = 2 * n_trained * itemsize
    elif reference.method == "optax":
        ref_solver = 4 * n_trained * itemsize  # descent's two copies and up to two moments (adam, rmsprop)
    else:
        # Runge–Kutta stages plus ~8 more parameter-sized buffers (the
        # controller's previous state and error estimate, the loss gradient and
        # XLA temporaries): measured ~22 copies per seed for an FFNet of width
        # 4096, where stages alone counted 10
        ref_solver = (_solver_copies(reference.solver, n_trained) + 8 * n_trained) * itemsize
    ref_ntk = tower_bytes(n_eval, n, 2, n_trained, activations=activations, itemsize=itemsize, structured=structured)
    saved = (len(orders) + 1) * n_saves * n_eval * (1 + n) * itemsize
    per_seed = {  # one network's share of each part
        "nth_solver": nth_solver,
        "reference": ref_solver + ref_ntk,
        "saved": saved,
        "parameters": 3 * n_params * itemsize,
    }
    rest = max(per_seed["nth_solver"], per_seed["reference"]) + per_seed["saved"] + per_seed["parameters"]

    def tower(batch: int) -> int:
        return tower_bytes(
            n_eval, n, p_max, n_trained, activations=activations, batch_size=batch, itemsize=itemsize,
            structured=structured, rank=None if hierarchy.basis == "full" else k,
        )

    # Seeds run as one vmapped batch when they fit, else in equal batches (a
    # divisor of the seed count, so one compilation serves them all); within
    # a batch, the largest direction chunk that fits what the rest leaves.
    # The process itself (JAX, compiling the tower) is planned at its largest,
    # a chunked tower's compilation.
    budget = spec.memory_budget_gb * 1e9 - compile_bytes(p_max, chunked=True)
    seed_batch = next(
        (b for b in range(seeds, 0, -1) if seeds % b == 0 and b * (rest + tower(1)) <= budget), 1
    )
    share = budget / seed_batch - rest
    batch = next((b for b in range(n, 0, -1) if n % b == 0 and tower(b) <= share), 1)  # divisors: direction_chunk
    parts = {name: seed_batch * value for name, value in per_seed.items()}
    parts["tower"] = seed_batch * tower(batch)
    parts["compilation"] = compile_bytes(p_max, chunked=batch < n)
    total = (parts["tower"] + max(parts["nth_solver"], parts["reference"]) + parts["saved"] + parts["parameters"]
             + parts["compilation"])
    return {
        "bytes": int(total),
        "parts": parts,
        "batch_size": batch,
        "seed_batch": seed_batch,
    }


def network_counts(spec: CellSpec, model: ModelFactory | None = None) -> tuple[int, int, int, bool]:
    """(parameters, trained parameters, activations per point, whether the
    tower takes the structured path) of a cell's network, from shapes only.

    The built-in networks: their parameter counts and 2 × width × (depth + 1)
    activations (pre- and post-activation per layer). A user's model: the
    factory's output traced with ``jax.eval_shape`` (nothing allocated); every
    floating-point leaf is trained (a project network's own trained set);
    the activations are :func:`~nth_dynamics.engine.function_model.activation_count`,
    every per-point intermediate of the forward pass (an upper bound, since
    which of them autodiff keeps is not known in advance); the generic tower
    path unless the model is one of the project's networks.
    """
    network = spec.network
    if model is None:
        n_params, n_trained = parameter_counts(
            network.architecture, spec.data.d, network.width, network.depth, **network.options()
        )
        return n_params, n_trained, 2 * network.width * (network.depth + 1), True
    shapes = model.shapes(spec)
    if isinstance(shapes, AbstractNetwork):
        n_params, n_trained = parameter_counts_of(shapes)
        return n_params, n_trained, 2 * shapes.width * (shapes.depth + 1), True
    n_params, n_trained = parameter_sizes(shapes)
    dtype = jax.numpy.float64 if spec.precision == "float64" else jax.numpy.float32
    return n_params, n_trained, activation_count(shapes, jax.ShapeDtypeStruct((spec.data.d,), dtype)), False


def parameter_counts_of(shapes: AbstractNetwork) -> tuple[int, int]:
    """(all, trained) parameter counts of a project network given as shapes."""
    sizes = [leaf.size for leaf in jax.tree.leaves(shapes)]
    flags = jax.tree.leaves(shapes.trained_filter())
    return sum(sizes), sum(size for size, flag in zip(sizes, flags) if flag)


def planned_rank(spec: CellSpec) -> int:
    """The trailing size of the tower a cell plans for: n (full), or the
    planned basis rank (reduced; at most n).

    A reduced cell at ``time.unit: n_over_lambda_min`` is planned at rank n:
    by t1 = 1 (n/λ_min) even the slowest mode of K2 has decayed by e⁻¹, so the
    residual's modes are far apart in time and none falls below basis_tol
    (measured: rank n at n = 32 for every seed of the five reduced cells of
    results/n_scaling_H32*.nc), and then solved once, as the full hierarchy
    (:func:`full_rank_note`)."""
    if spec.hierarchy.basis == "full" or spec.time.unit == "n_over_lambda_min":
        return spec.n_train
    return min(spec.n_train, PLANNED_RANK)


def full_rank_note(specs: list[CellSpec]) -> str | None:
    """What ``validate`` says when reduced cells are planned at rank n."""
    full_rank = [spec for spec in specs if spec.hierarchy.basis == "reduced" and planned_rank(spec) == spec.n_train]
    if not full_rank:
        return None
    return (f"note: {len(full_rank)} reduced cell{'s' * (len(full_rank) != 1)} planned at rank n: at time.unit "
            "n_over_lambda_min every mode of the residual stays above basis_tol up to t1, so the reduced basis is the "
            "full one (basis error 0) and saves nothing over hierarchy.basis: full")


def _solver_copies(solver: str, state: int) -> int:
    copies = (SOLVER_STAGES.get(solver, 7) + 3) * state
    return copies + state**2 if solver in IMPLICIT_SOLVERS else copies


def planned_steps(spec: CellSpec, model: ModelFactory | None = None) -> float:
    """Rough number of steps of the cell's adaptive solves (the reference's
    gradient flow and the NTH: both follow the kernel K2 of one network).

    Gradient flow on the 1/(2n) loss moves the residual's modes at rates
    λ_i/n of K2, up to ``t1``, so the step count grows with the stiffness
    t1·λ_max/n: measured, like its square root (the solves are bound by
    accuracy at rtol 1e−9, not by stability), ``STEPS_PER_ROOT_STIFFNESS`` ×
    √(1 + t1·λ_max/n) with λ_max of the infinite-width NTK
    (:func:`nth_dynamics.limits.ntk`) on the cell's own training points and
    t1 = τ1·n/λ_min at ``time.unit: n_over_lambda_min``; × exp(0.45·n/m) for
    narrow networks (:data:`NARROW_WIDTH_RATE`), × (rtol/1e−9)^(−1/order).
    ``ASSUMED_STEPS`` for a user's model, whose limit kernel is not known.
    """
    if model is not None:
        return float(ASSUMED_STEPS)
    network = spec.network
    options = {key: value for key, value in network.options().items() if key != "output_scale"}
    if network.parameterization == "standard":
        options["width"] = network.width  # the standard parameterization's kernel grows with it
    try:
        lam_min, lam_max = _ntk_extremes(  # JSON: hashable, for the cache
            json.dumps(spec.data_mapping(), sort_keys=True), network.architecture, network.depth,
            json.dumps(options, sort_keys=True),
        )
    except ValueError:  # a network the limit kernels do not cover (the one-matrix branch with an activation readout)
        return float(ASSUMED_STEPS)
    scale = network.output_scale ** 2  # f_α = α·f: its kernel is α²K
    n = spec.n_train
    t1 = spec.time.t1 * (n / lam_min if spec.time.unit == "n_over_lambda_min" else scale)
    stiffness = t1 * lam_max / n
    # an accuracy-bound step count grows like rtol^(−1/order), the order as Diffrax's solver states it
    accuracy = (spec.reference.rtol / 1e-9) ** (-1 / SOLVERS[spec.reference.solver]().order(None))
    narrow = math.exp(NARROW_WIDTH_RATE * n / network.width)
    return STEPS_PER_ROOT_STIFFNESS * math.sqrt(1 + stiffness) * accuracy * narrow


@functools.lru_cache(maxsize=256)
def _ntk_extremes(data: str, architecture: str, depth: int, options: str) -> tuple[float, float]:
    """(λ_min, λ_max) of the infinite-width NTK on a cell's training points
    (cached: every width of a sweep shares them)."""
    mapping = json.loads(data)
    x_train = make_data(mapping, data_key(mapping["seed"]), jnp.float64).x_train
    # 16 Gauss–Hermite nodes: the extremes to ~5 %, 10× faster than the default (a plan, not a result)
    kernel = limits.ntk(x_train, None, architecture, depth, quadrature_nodes=16, **json.loads(options))
    eigenvalues = np.linalg.eigvalsh(np.asarray(kernel, dtype=np.float64))
    return float(max(eigenvalues[0], 1e-12 * eigenvalues[-1])), float(eigenvalues[-1])


def estimate_seconds(spec: CellSpec, model: ModelFactory | None = None) -> float:
    """Rough run time of a cell (``validate``'s "time (rough)"): K2 costs a
    forward and backward pass per point, each further level ~2 JVPs per
    direction of the one below; the solves take :func:`planned_steps` steps
    (a descent reference t1/lr, one gradient each), and an adaptive
    reference also moves its parameters ``SOLVER_PARAMETER_PASSES`` times a
    step through memory; plus compilation per stage. Measured against the
    committed cells: benchmarks/estimates.py."""
    n, n_eval = spec.n_train, spec.n_eval
    n_trained = network_counts(spec, model)[1]
    seeds = len(spec.seeds)
    orders = spec.hierarchy.orders
    k2 = 6.0 * (n_eval + n) * n_trained  # one forward and backward pass per point
    k = planned_rank(spec)
    once = spec.hierarchy.basis == "full" or k == n  # a reduced seed of rank n is not enlarged (engine.reduced)
    solves = 1 if once else REDUCED_SOLVES
    towers = 1 if once else REDUCED_TOWERS
    steps = planned_steps(spec, model)
    tower = towers * sum(k2 * (2 * k) ** (r - 2) for r in range(2, max(orders) + 1))
    state = n_eval * (1 + sum(n * k ** (r - 2) for r in range(2, max(orders) + 1)))
    nth = solves * len(orders) * steps * SOLVER_STAGES.get(spec.hierarchy.solver, 7) * 2 * state * k
    itemsize = 8 if spec.precision == "float64" else 4
    if spec.reference.method in DESCENT_METHODS:
        reference_evaluations = descent_steps(spec.time, spec.reference)[0]  # one gradient a step
        traffic = 0.0  # an update is a few passes over the parameters, next to its gradient's many
    else:
        reference_evaluations = steps * SOLVER_STAGES.get(spec.reference.solver, 7)
        traffic = steps * SOLVER_PARAMETER_PASSES * n_trained * itemsize
    reference = reference_evaluations * 6 * n * n_trained + spec.time.n_saves * k2
    flops = seeds * (tower + nth + reference)
    # a reduced cell compiles its tower and solves anew for each basis rank, seed by seed
    compiles = len(orders) + 2 if once else 2 + seeds * solves * (len(orders) + 1)
    return flops / FLOPS_PER_SECOND + seeds * traffic / BYTES_PER_SECOND + COMPILE_SECONDS * compiles


def check_budget(
    scenario: Scenario, cells: Sequence[Cell], estimates: Mapping[str, Mapping[str, Any]], workers: int = 1
) -> None:
    """Refuse the scenario if a cell's memory estimate exceeds its budget
    (``memory_budget_gb``, shared by ``workers`` cells running at once)."""
    budget = scenario.memory_budget_gb / workers * 1e9
    share = f"the budget of {scenario.memory_budget_gb:g} GB" + (f" / {workers} workers" if workers > 1 else "")
    for cell in cells:
        estimate = estimates[cell.id]
        if estimate["bytes"] > budget:
            largest = max(estimate["parts"], key=estimate["parts"].get)
            lower = {
                "tower": "data.n_train, hierarchy.orders or the number of seeds",
                "nth_solver": "hierarchy.orders, data.n_train or the number of seeds",
                "reference": "network.width, data.n_train or the number of seeds",
                "saved": "time.n_saves, data.n_test or the number of seeds",
                "parameters": "network.width, network.depth or the number of seeds",
                "compilation": "hierarchy.orders (the tower to the largest order is compiled in the process)",
            }[largest]
            reduced = _reduced_hint(cell.spec, budget, cell.model)
            raise ScenarioError(
                f"{scenario.source}: memory_budget_gb: cell {cell.id} ({cell.label()}, {len(cell.spec.seeds)} seeds) "
                f"needs ≈ {estimate['bytes'] / 1e9:.3g} GB (mostly {largest}), above {share}; "
                f"allowed: lower {lower}, or raise memory_budget_gb" + (", or use fewer workers" if workers > 1 else "")
                + reduced
            )


def _reduced_hint(spec: CellSpec, budget: float, model: ModelFactory | None = None) -> str:
    """", or hierarchy.basis: reduced (≈ X GB)" when the reduced basis would make a refused full cell fit."""
    if spec.hierarchy.basis == "reduced":
        return ""
    reduced = spec.model_copy(update={"hierarchy": spec.hierarchy.model_copy(update={"basis": "reduced"})})
    need = estimate_spec(reduced, model)["bytes"]
    return f", or hierarchy.basis: reduced (≈ {need / 1e9:.3g} GB at rank {planned_rank(reduced)})" if need <= budget else ""


__all__ = [
    "PLANNED_RANK", "check_budget", "estimate_cell", "estimate_seconds", "estimate_spec", "full_rank_note",
    "network_counts", "planned_rank", "planned_steps",
]
