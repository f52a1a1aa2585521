"""Running one cell: every seed of one grid point as one compiled computation,
stage by stage (data → kernel tower → the truncated NTH for each order →
reference training; docs/theory.md §1–§3), each stage one ``eqx.filter_jit``
that compiles once per cell shape, never per seed. A cell is a pure function
of its :class:`~nth_dynamics.pipeline.cells.CellSpec`.

Cells that differ only in the laziness scale ``network.output_scale`` start
from one tower of f, which each rescales to its own hierarchy
(:func:`~nth_dynamics.engine.laziness.lazy_tower`, docs/theory.md §9): run in
turn with a :class:`SharedTowers`, the tower is computed once for all of them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from ..data import make_data
from ..engine.function_model import cast_floating
from ..engine.hierarchy import SUCCESSFUL, SolverError, check_solution, solve_nth
from ..engine.kernels import kernel_tower, lambda_min
from ..engine.laziness import lazy_tower
from ..engine.losses import resolve_loss
from ..engine.networks import make_ensemble, stack_ensemble
from ..engine.optimizers import make_optimizer
from ..engine.reduced import BasisError, reduced_hierarchy
from ..engine.reference import gradient_descent, gradient_flow, optax_reference
from .cells import Cell, CellSpec, data_key, network_keys
from .estimates import estimate_cell
from .results import cell_dataset
from .schema import descent_steps, save_times

DTYPES = {"float64": jnp.float64, "float32": jnp.float32}


class SharedTowers:
    """The tower of f of the last cell run, kept for the next cell if that
    differs only in ``network.output_scale`` (the same
    :meth:`~nth_dynamics.pipeline.cells.CellSpec.tower_id`, seeds and
    direction chunk): the hierarchies at every α are rescalings of it, so it
    is computed once. One tower is held at a time; a cell with another
    ``tower_id`` drops it before computing its own."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value = None
        self.reused = 0
        """Towers taken from here instead of computed (for tests and messages)."""

    def get(self, key: tuple, compute: Callable[[], tuple]):
        if key != self._key:
            self._key, self._value = None, None  # freed before the next tower is computed
            self._value, self._key = compute(), key
        else:
            self.reused += 1
        return self._value


def run_cell(
    cell: Cell, *, on_stage: Callable[[str], None] = lambda name: None, towers: SharedTowers | None = None
) -> xr.Dataset:
    """Run one cell: every seed of one grid point (a pure function of ``cell.spec``).
    ``towers``: share the tower of f with the cells run before and after
    that differ only in ``network.output_scale`` (:class:`SharedTowers`)."""
    spec: CellSpec = cell.spec
    dtype = DTYPES[spec.precision]
    wall: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        on_stage(name)
        started = time.perf_counter()
        yield
        wall[name] = round(wall.get(name, 0.0) + time.perf_counter() - started, 3)

    with stage("data"):
        data = make_data(spec.data_mapping(), data_key(spec.data.seed), dtype)
        ts = jnp.asarray(save_times(spec.time, spec.reference), dtype)
    estimate = estimate_cell(cell)
    seeds = list(spec.seeds)
    batches = [seeds[i : i + estimate["seed_batch"]] for i in range(0, len(seeds), estimate["seed_batch"])]
    run_batch = _run_seed_batch if spec.hierarchy.basis == "full" else _run_seed_batch_reduced
    towers = SharedTowers() if towers is None else towers
    results = [run_batch(cell, data, batch, ts, estimate["batch_size"], stage, dtype, towers) for batch in batches]
    tower, nth, ref, time_scale, reduced = (
        jax.tree.map(lambda *parts: np.concatenate(parts), *[result[i] for result in results])
        for i in range(5)
    )
    def stack(name: str, key: str | None = None) -> np.ndarray:
        parts = [t.stats[key] if key else getattr(t, name) for t in nth]
        return np.stack([np.asarray(part) for part in parts], axis=1)

    return cell_dataset(
        seeds=spec.seeds,
        orders=spec.hierarchy.orders,
        ts=np.asarray(ts),
        y_train=np.asarray(data.y_train),
        y_test=np.asarray(data.y_test),
        tower0=[np.asarray(k) for k in tower],
        f_nth=stack("f"),
        ntk_nth=stack("ntk"),
        nth_stats={key: stack("", key) for key in ("num_steps", "num_rejected_steps")},
        nth_failed=stack("", "result") != SUCCESSFUL if spec.hierarchy.on_failure == "record" else None,
        f_ref=np.asarray(ref.f),
        ntk_ref=np.asarray(ref.ntk),
        ref_stats={key: np.asarray(ref.stats[key]) for key in ("num_steps", "num_rejected_steps")},
        time_scale=time_scale if spec.time.unit != "t" else None,
        reduced=reduced,
        save_kernels=spec.save_kernels,
        loss=spec.loss,
        attrs={
            "cell_id": cell.id,
            "cell_spec": json.dumps(_spec_record(cell), sort_keys=True),
            "stage_wall_times": json.dumps(wall),
            **({} if cell.model is None else {"model_factory": cell.model.name}),
        },
    )


def _run_seed_batch(cell: Cell, data, seeds: list[int], ts, batch_size: int, stage, dtype, towers: SharedTowers):
    """Tower, NTH solves and reference of one batch of seeds, each stage one
    computation over the seeds (the solves in turn on the CPU, :func:`_over_seeds`); returns (tower, [trajectory per order], reference, time
    scale per seed) as numpy. The save times ``ts`` are multiplied by each
    seed's time scale (1, or n/λ_min(K2₀) for ``time.unit: n_over_lambda_min``).
    The tower is that of f (the network at output scale 1, perhaps shared
    with the cell before), rescaled to this cell's α."""
    spec: CellSpec = cell.spec
    hierarchy = spec.hierarchy
    alpha = spec.network.output_scale
    with stage("data"):
        ensemble = _ensemble(cell, seeds, dtype)
    x_eval = data.x_eval

    def tower_of_f():
        unscaled = ensemble if alpha == 1.0 else _ensemble(cell, seeds, dtype, output_scale=1.0)
        return jax.block_until_ready(
            _initial_tower(unscaled, data.x_train, x_eval, max(hierarchy.orders), batch_size)
        )

    with stage("tower"):
        tower, f0 = towers.get((cell.spec.tower_id(cell.model), tuple(seeds), batch_size), tower_of_f)
        tower = lazy_tower(tower, alpha)
    time_scale = _time_scale(tower[0], spec.time.unit, cell, seeds)
    ts = jnp.asarray(time_scale, dtype)[:, None] * ts[None, :]  # (seed, time): physical save times per seed
    nth = []
    for p in hierarchy.orders:
        with stage(f"NTH p={p}"):
            trajectory = jax.block_until_ready(
                _solve_nth_batch(
                    tower[: p - 1], f0, data.y_train, ts,
                    hierarchy.solver, hierarchy.rtol, hierarchy.atol, hierarchy.max_steps, spec.loss,
                )
            )
            if hierarchy.on_failure == "stop":
                _check(trajectory, f"NTH p={p}", cell)
            nth.append(trajectory)
    with stage("reference"):
        ref = _reference(cell, ensemble, data, ts)
    return jax.tree.map(np.asarray, (tower, nth, ref, time_scale)) + (None,)


def _run_seed_batch_reduced(cell: Cell, data, seeds: list[int], ts, batch_size: int, stage, dtype, towers: SharedTowers):
    """``hierarchy.basis: reduced`` (docs/theory.md §8): K2 of the batch, the
    reference (whose residual seeds the basis), then each seed's reduced-basis
    hierarchy (:func:`~nth_dynamics.engine.reduced.reduced_hierarchy`: the
    basis is enlarged by the NTH's own residuals and its error estimated). The
    seeds' bases differ in rank, so their hierarchies run one after another.
    Returns what :func:`_run_seed_batch` does, with only K2 as the tower, and
    the basis outputs of :func:`~nth_dynamics.pipeline.results.cell_dataset`.
    Nothing is shared (``towers`` is unused): the projected towers depend on
    each cell's own reference, and :func:`~nth_dynamics.kernel_tower`
    rescales them to the network's output scale itself."""
    spec: CellSpec = cell.spec
    hierarchy = spec.hierarchy
    with stage("data"):
        ensemble = _ensemble(cell, seeds, dtype)
    with stage("tower"):
        tower, _ = jax.block_until_ready(_initial_tower(ensemble, data.x_train, data.x_eval, 2, batch_size))
    time_scale = _time_scale(tower[0], spec.time.unit, cell, seeds)
    ts = jnp.asarray(time_scale, dtype)[:, None] * ts[None, :]
    with stage("reference"):
        ref = _reference(cell, ensemble, data, ts)
    n = data.x_train.shape[0]
    loss = resolve_loss(spec.loss)
    solves = []
    with stage("NTH reduced"):
        for i in range(len(seeds)):
            model = jax.tree.map(lambda leaf: leaf[i] if eqx.is_array(leaf) else leaf, ensemble)
            try:
                solve = reduced_hierarchy(
                    model, data.x_train, data.y_train, ts[i], hierarchy.orders, data.x_eval,
                    reference=loss.derivative(ref.f[i][:, :n], data.y_train), reference_f=ref.f[i],
                    tol=hierarchy.basis_tol, batch_size=batch_size, solver=hierarchy.solver, rtol=hierarchy.rtol,
                    atol=hierarchy.atol, max_steps=hierarchy.max_steps, loss=loss, throw=False,
                )
            except BasisError as error:
                raise SolverError(f"cell {cell.id} ({cell.label()}), seed {seeds[i]}: {error}") from None
            if hierarchy.on_failure == "stop":
                for p, trajectory in zip(solve.orders, solve.trajectories):
                    _check(trajectory, f"NTH p={p} (reduced basis, seed {seeds[i]})", cell)
            solves.append(solve)
    nth = [jax.tree.map(lambda *parts: np.stack(parts), *[s.trajectories[j] for s in solves])
           for j in range(len(hierarchy.orders))]
    reduced = {
        "basis_rank": np.array([s.rank for s in solves]),
        "basis_error": np.stack([np.asarray(s.basis_error) for s in solves]),
        "basis_error_ratio": np.stack([np.asarray(s.basis_error_ratio) for s in solves]),
        "projected_kernel_magnitude": np.stack(
            [[float(np.abs(np.asarray(k)[:n]).max()) for k in s.tower] for s in solves]
        ),
    }
    return jax.tree.map(np.asarray, (tower, nth, ref, time_scale)) + (reduced,)


def _ensemble(cell: Cell, seeds: list[int], dtype, output_scale: float | None = None):
    """The cell's network, one per seed, stacked on a leading axis: the
    built-in network of ``spec.network`` (at ``output_scale`` if given: the
    same weights, trained at another α), or the user's factory called with
    each seed's key (its floating-point leaves cast to the cell's precision)."""
    spec: CellSpec = cell.spec
    if cell.model is not None:
        members = [cast_floating(cell.model.build(key, spec), dtype) for key in network_keys(seeds)]
        return stack_ensemble(members)
    network = spec.network
    if output_scale is not None:
        network = network.model_copy(update={"output_scale": output_scale})
    return make_ensemble(
        network.architecture, spec.data.d, network.width, network.depth, network_keys(seeds), **network.options(),
        dtype=dtype,
    )


def _spec_record(cell: Cell) -> dict:
    """The cell's spec as its Dataset records it: with a user's model, its
    network is the model's (:meth:`~nth_dynamics.pipeline.cells.ModelFactory.id_payload`)."""
    record = cell.spec.model_dump(mode="json")
    if cell.model is not None:
        record["network"] = cell.model.id_payload(cell.spec)
    return record


def _reference(cell: Cell, ensemble, data, ts):
    """The reference training of the batch (gradient flow at the per-seed save
    times ``ts``, gradient descent or an optax optimizer), on the cell's loss,
    checked to have reached the last save."""
    spec: CellSpec = cell.spec
    reference = spec.reference
    if reference.method == "gradient_descent":
        steps, save_every = descent_steps(spec.time, reference)
        ref = _gradient_descent_batch(
            ensemble, data.x_train, data.y_train, reference.lr, steps, save_every, data.x_eval, spec.loss
        )
    elif reference.method == "optax":
        steps, save_every = descent_steps(spec.time, reference)
        optimizer = make_optimizer(reference.optimizer, reference.lr, dict(reference.optimizer_options))
        ref = _optax_batch(
            ensemble, data.x_train, data.y_train, optimizer, reference.lr, steps, save_every, data.x_eval, spec.loss
        )
    else:
        ref = _gradient_flow_batch(
            ensemble, data.x_train, data.y_train, ts, data.x_eval,
            reference.solver, reference.rtol, reference.atol, reference.max_steps, spec.loss,
        )
    ref = jax.block_until_ready(ref)
    _check(ref, "reference", cell)
    return ref


def _time_scale(ntk0, unit: str, cell: Cell, seeds: Sequence[int]) -> np.ndarray:
    """Gradient-flow time per unit of the save times, per seed: 1, or
    n/λ_min of the training block of K2₀ (``ntk0``: seed, point, train_point)."""
    if unit == "t":
        return np.ones(len(seeds))
    lam = np.asarray(lambda_min(ntk0))
    if not np.all(lam > 0):
        seed = seeds[int(np.argmin(lam))]
        raise SolverError(
            f"cell {cell.id} ({cell.label()}): time.unit n_over_lambda_min needs a positive definite K2₀, "
            f"but seed {seed} has λ_min = {lam.min():.3g} (repeated or degenerate training points?); "
            "use time.unit 't'"
        )
    return ntk0.shape[-1] / lam


def _check(trajectory, what: str, cell: Cell) -> None:
    try:
        check_solution(trajectory, what)
    except SolverError as error:
        raise SolverError(f"cell {cell.id} ({cell.label()}): {error}") from None


@eqx.filter_jit
def _initial_tower(ensemble, x_train, x_eval, order: int, batch_size: int):
    def one(model):
        return kernel_tower(model, x_train, order, x_eval, batch_size=batch_size), jax.vmap(model)(x_eval)

    return eqx.filter_vmap(one)(ensemble)


@eqx.filter_jit
def _solve_nth_batch(tower, f0, y_train, ts, solver: str, rtol: float, atol: float, max_steps: int, loss: str):
    def one(kernels, f, ts):
        return solve_nth(kernels, f, y_train, ts, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps, loss=loss)

    return _over_seeds(one, tower, f0, ts)


@eqx.filter_jit
def _gradient_flow_batch(
    ensemble, x_train, y_train, ts, x_eval, solver: str, rtol: float, atol: float, max_steps: int, loss: str
):
    def one(model, ts):
        return gradient_flow(
            model, x_train, y_train, ts, x_eval, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps, loss=loss
        )

    return _over_seeds(one, ensemble, ts)


@eqx.filter_jit
def _gradient_descent_batch(ensemble, x_train, y_train, lr: float, steps: int, save_every: int, x_eval, loss: str):
    return _over_seeds(
        lambda model: gradient_descent(model, x_train, y_train, lr, steps, save_every, x_eval, loss=loss), ensemble
    )


@eqx.filter_jit
def _optax_batch(ensemble, x_train, y_train, optimizer, lr: float, steps: int, save_every: int, x_eval, loss: str):
    return _over_seeds(
        lambda model: optax_reference(model, x_train, y_train, optimizer, steps, save_every, x_eval, lr=lr, loss=loss),
        ensemble,
    )


def _over_seeds(one: Callable, *batched):
    """``one`` on every seed of ``batched`` (pytrees whose array leaves carry
    the seed axis first), results stacked along it: vmapped on an
    accelerator, one seed after another on the CPU.

    The solves are adaptive while loops: vmapped, every seed steps until the
    slowest is done (masked) and the network's matmuls become batched matmuls,
    which the CPU runs about 2× slower than the seeds in turn (measured: 6
    seeds of a depth-8, width-256 ResNet's gradient flow, 89 s vmapped
    against 44 s in turn). ``lax.map`` keeps one compilation for all seeds."""
    if jax.default_backend() != "cpu":
        return eqx.filter_vmap(one)(*batched)
    arrays, static = eqx.partition(batched, eqx.is_array)

    def each(arrays):
        return eqx.partition(one(*eqx.combine(arrays, static)), eqx.is_array)

    # The results' non-array parts (e.g. a Trajectory's Python fields) are the
    # same for every seed: traced once, outside the map, from the first seed.
    _, out_static = eqx.filter_eval_shape(each, jax.tree.map(lambda a: a[0], arrays))
    out_arrays = jax.lax.map(lambda a: each(a)[0], arrays)
    return eqx.combine(out_arrays, out_static)



__all__ = ["SharedTowers", "run_cell"]
