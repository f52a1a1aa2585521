"""Running a scenario: the cells of its sweep grid, each a pure function of
its spec, then one combined Dataset (docs/architecture.md, "The one path data takes").

A cell runs every seed of one grid point as one vmapped computation, stage by
stage (tower → NTH for each order → reference), each stage one
``eqx.filter_jit`` that compiles once per cell shape, never per seed.
Finished cells can be cached on disk (``cache_dir``): an interrupted sweep
resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from .._cost import COMPILE_SECONDS, FLOPS_PER_SECOND
from .._progress import Progress
from ..data import make_data
from ..engine.hierarchy import SUCCESSFUL, SolverError, check_solution, solve_nth
from ..engine.kernels import compile_bytes, kernel_tower, lambda_min, tower_bytes
from ..engine.networks import make_ensemble, parameter_counts
from ..engine.reference import gradient_descent, gradient_flow
from .infinite_width import simulate_study
from .results import (
    annotate,
    cell_dataset,
    combine,
    provenance,
    read_dataset,
    write_dataset,
)
from .scenario import SWEEP_DIMS, Cell, Scenario, ScenarioError, save_times

DTYPES = {"float64": jnp.float64, "float32": jnp.float32}

SOLVER_STAGES = {"tsit5": 7, "dopri5": 7, "dopri8": 13, "heun": 2, "bosh3": 4, "kvaerno5": 7}
"""Vector-field evaluations kept per step (the memory of a Runge–Kutta step)."""
IMPLICIT_SOLVERS = {"kvaerno5"}

class WorkerLost(RuntimeError):
    """A cluster worker died while running a cell (out of memory, killed)."""


def simulate(
    scenario: Scenario,
    *,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    command: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
) -> xr.Dataset:
    """Run every cell of ``scenario`` and combine them into one Dataset.

    A scenario of ``kind: infinite_width`` runs its one study instead
    (:func:`nth_dynamics.infinite_width.simulate_study`; nothing to cache).

    Args:
        scenario: from :func:`~nth_dynamics.load_scenario`.
        cache_dir: if given, each finished cell is written there as
            ``<cell id>.nc`` (atomically) and cells already there are read
            instead of run, so an interrupted sweep resumes.
        progress: a :class:`Progress` display (default: none).
        command: how the run was started, for the ``history`` attribute.
        workers: cells run at once, each in its own process of a local
            ``dask.distributed`` cluster (needs the ``dask`` extra); each
            cell is then held to ``memory_budget_gb / workers``.
        scheduler: address of a running ``dask.distributed`` scheduler to run
            the cells on instead (its workers must see ``cache_dir``); each
            cell is held to ``memory_budget_gb``, the memory of one worker.

    Raises:
        ScenarioError: a cell's memory estimate exceeds its budget (checked
            for every cell before any runs).
        SolverError: an ODE solve failed.
    """
    if scenario.kind == "infinite_width":

        return simulate_study(scenario, progress=progress, command=command)
    progress = progress or Progress()
    cells = scenario.cells()
    unique = list({cell.id: cell for cell in cells}.values())
    sharing = workers if scheduler is None else 1  # cells that share this machine's memory_budget_gb
    if sharing > 1:  # the budget is not in the cell id: the same cells, planned for less memory
        budget_gb = scenario.memory_budget_gb / sharing
        unique = [dataclasses.replace(cell, spec={**cell.spec, "memory_budget_gb": budget_gb}) for cell in unique]
    estimates = {cell.id: estimate_cell(cell) for cell in unique}
    check_budget(scenario, unique, estimates, workers=sharing)
    parallel = workers > 1 or scheduler is not None
    with contextlib.ExitStack() as stack:
        if cache_dir is None and parallel:  # the workers hand their cells over on disk
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="nth_dynamics_cells_"))
        cache = Path(cache_dir) if cache_dir is not None else None
        progress.start(len(unique))
        try:
            if parallel:
                datasets = _run_on_cluster(unique, cache, progress, workers, scheduler)
            else:
                datasets = _run_in_turn(unique, cache, progress)
        finally:
            progress.finish()
    ds = combine(scenario.grid(), cells, datasets)
    stage_times = _stage_times(datasets)
    summaries = [
        {"cell_id": cell.id, **cell.coords, "memory_bytes": estimates[cell.id]["bytes"],
         "stage_wall_times": json.loads(datasets[cell.id].attrs["stage_wall_times"])}
        for cell in unique
    ]
    ds.attrs.update(provenance(scenario, stage_times=stage_times, cells=summaries, command=command))
    _add_scalar_coordinates(ds, scenario)
    return ds


def _run_in_turn(cells: Sequence[Cell], cache: Path | None, progress: Progress) -> dict[str, xr.Dataset]:
    datasets: dict[str, xr.Dataset] = {}
    for index, cell in enumerate(cells, start=1):
        cached = _cell_path(cache, cell) if cache else None
        progress.cell(index, cell, cached is not None and cached.exists())
        if cached is not None and cached.exists():
            datasets[cell.id] = read_dataset(cached)
            continue
        started = time.perf_counter()
        datasets[cell.id] = run_cell(cell, on_stage=progress.stage)
        progress.cell_done(cell, time.perf_counter() - started)
        if cached is not None:
            write_dataset(datasets[cell.id], cached)
    return datasets


def _run_on_cluster(
    cells: Sequence[Cell], cache: Path, progress: Progress, workers: int, scheduler: str | None
) -> dict[str, xr.Dataset]:
    """Cells not in ``cache`` run as ``dask.distributed`` tasks, each writing
    its own cell file, so whatever finishes is kept if the sweep stops."""
    try:
        import dask
        from distributed import Client, KilledWorker, LocalCluster, as_completed
    except ImportError:
        raise ScenarioError(
            "workers: running cells in parallel needs dask.distributed; allowed: pip install 'nth_dynamics[dask]' "
            "(dask[distributed]), or one worker"
        ) from None
    cache.mkdir(parents=True, exist_ok=True)
    paths = {cell.id: _cell_path(cache, cell) for cell in cells}
    done = [cell for cell in cells if paths[cell.id].exists()]
    for index, cell in enumerate(done, start=1):
        progress.cell(index, cell, True)
    pending = [cell for cell in cells if not paths[cell.id].exists()]
    if pending:
        with contextlib.ExitStack() as stack:
            if scheduler is None:
                # processes, one thread each: XLA already uses every core of a
                # process; no nanny memory limit: the cells' own budget rules;
                # a cell that killed its worker would most likely kill the next
                stack.enter_context(dask.config.set({"distributed.scheduler.allowed-failures": 0}))
                cluster = stack.enter_context(LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                    dashboard_address=":0", silence_logs=logging.ERROR,
                ))
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(scheduler))
            futures = {
                client.submit(_run_and_keep, cell, paths[cell.id], key=f"cell-{cell.id}", pure=False): cell
                for cell in pending
            }
            try:
                for future in as_completed(futures):
                    cell = futures[future]
                    try:
                        seconds = future.result()
                    except KilledWorker:
                        raise WorkerLost(
                            f"cell {cell.id} ({cell.label()}): its worker process died, most likely out of memory; "
                            "lower memory_budget_gb (it is planned per cell) or use fewer workers"
                        ) from None
                    progress.cell(len(done) + 1, cell, False)
                    progress.cell_done(cell, seconds)
                    done.append(cell)
            finally:
                client.cancel(list(futures))
    return {cell.id: read_dataset(paths[cell.id]) for cell in cells}


def _cell_path(cache: Path, cell: Cell) -> Path:
    """Where a finished cell is kept: one file per cell id, shared by every process of a sweep."""
    return cache / f"{cell.id}.nc"


def _run_and_keep(cell: Cell, path: Path) -> float:
    """A cluster task: run one cell, write it (atomically) to ``path``; its wall time."""
    started = time.perf_counter()
    write_dataset(run_cell(cell), path)
    return time.perf_counter() - started


def _stage_times(datasets: Mapping[str, xr.Dataset]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for ds in datasets.values():
        for stage, seconds in json.loads(ds.attrs["stage_wall_times"]).items():
            key = "nth" if stage.startswith("NTH") else stage
            totals[key] = round(totals.get(key, 0.0) + seconds, 3)
    return totals


def _add_scalar_coordinates(ds: xr.Dataset, scenario: Scenario) -> None:
    """Unswept grid fields as scalar coordinates: ``ds.depth`` always answers."""
    for dim, field in SWEEP_DIMS.items():
        values = scenario.field(field)
        if dim not in ds.dims and values is not None:
            ds.coords[dim] = values[0]
    annotate(ds)


# ----------------------------------------------------------------------------- one cell


def run_cell(cell: Cell, *, on_stage: Callable[[str], None] = lambda name: None) -> xr.Dataset:
    """Run one cell: every seed of one grid point (a pure function of ``cell.spec``)."""
    spec = cell.spec
    dtype = DTYPES[spec["precision"]]
    hierarchy, reference = spec["hierarchy"], spec["reference"]
    wall: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        on_stage(name)
        started = time.perf_counter()
        yield
        wall[name] = round(wall.get(name, 0.0) + time.perf_counter() - started, 3)

    with stage("data"):
        data = make_data(spec["data"], data_key(spec["data"]["seed"]), dtype)
        ts = jnp.asarray(save_times(spec["time"], reference), dtype)
    estimate = estimate_cell(cell)
    seeds = list(spec["seeds"])
    batches = [seeds[i : i + estimate["seed_batch"]] for i in range(0, len(seeds), estimate["seed_batch"])]
    results = [
        _run_seed_batch(cell, data, batch, ts, estimate["batch_size"], stage, dtype) for batch in batches
    ]
    tower, nth, ref, time_scale = (
        jax.tree.map(lambda *parts: np.concatenate(parts), *[result[i] for result in results])
        for i in range(4)
    )
    orders = hierarchy["orders"]

    def stack(name: str, key: str | None = None) -> np.ndarray:
        parts = [t.stats[key] if key else getattr(t, name) for t in nth]
        return np.stack([np.asarray(part) for part in parts], axis=1)

    return cell_dataset(
        seeds=spec["seeds"],
        orders=orders,
        ts=np.asarray(ts),
        y_train=np.asarray(data.y_train),
        y_test=np.asarray(data.y_test),
        tower0=[np.asarray(k) for k in tower],
        f_nth=stack("f"),
        ntk_nth=stack("ntk"),
        nth_stats={key: stack("", key) for key in ("num_steps", "num_rejected_steps")},
        nth_failed=stack("", "result") != SUCCESSFUL if _records_failures(hierarchy) else None,
        f_ref=np.asarray(ref.f),
        ntk_ref=np.asarray(ref.ntk),
        ref_stats={key: np.asarray(ref.stats[key]) for key in ("num_steps", "num_rejected_steps")},
        time_scale=time_scale if spec["time"].get("unit", "t") != "t" else None,
        save_kernels=spec["save_kernels"],
        attrs={"cell_id": cell.id, "cell_spec": json.dumps(spec, sort_keys=True), "stage_wall_times": json.dumps(wall)},
    )


def _run_seed_batch(cell: Cell, data, seeds: list[int], ts, batch_size: int, stage, dtype):
    """Tower, NTH solves and reference of one batch of seeds, vmapped as one
    computation; returns (tower, [trajectory per order], reference, time
    scale per seed) as numpy. The save times ``ts`` are multiplied by each
    seed's time scale (1, or n/λ_min(K2₀) for ``time.unit: n_over_lambda_min``)."""
    spec = cell.spec
    network, hierarchy, reference = spec["network"], spec["hierarchy"], spec["reference"]
    with stage("data"):
        ensemble = make_ensemble(
            network["architecture"], spec["data"]["d"], network["width"], network["depth"],
            network_keys(seeds), **network_options(network), dtype=dtype,
        )
    x_eval = data.x_eval
    with stage("tower"):
        tower, f0 = jax.block_until_ready(
            _initial_tower(ensemble, data.x_train, x_eval, max(hierarchy["orders"]), batch_size)
        )
    time_scale = _time_scale(tower[0], spec["time"].get("unit", "t"), cell, seeds)
    ts = jnp.asarray(time_scale, dtype)[:, None] * ts[None, :]  # (seed, time): physical save times per seed
    nth = []
    for p in hierarchy["orders"]:
        with stage(f"NTH p={p}"):
            trajectory = jax.block_until_ready(
                _solve_nth_batch(
                    tower[: p - 1], f0, data.y_train, ts,
                    hierarchy["solver"], hierarchy["rtol"], hierarchy["atol"], hierarchy["max_steps"],
                )
            )
            if not _records_failures(hierarchy):
                _check(trajectory, f"NTH p={p}", cell)
            nth.append(trajectory)
    with stage("reference"):
        if reference["method"] == "gradient_descent":
            steps = round(spec["time"]["t1"] / reference["lr"])
            save_every = steps // (spec["time"]["n_saves"] - 1)
            ref = _gradient_descent_batch(ensemble, data.x_train, data.y_train, reference["lr"], steps, save_every, x_eval)
        else:
            ref = _gradient_flow_batch(
                ensemble, data.x_train, data.y_train, ts, x_eval,
                reference["solver"], reference["rtol"], reference["atol"], reference["max_steps"],
            )
        ref = jax.block_until_ready(ref)
        _check(ref, "reference", cell)
    return jax.tree.map(np.asarray, (tower, nth, ref, time_scale))


def _records_failures(hierarchy: Mapping[str, Any]) -> bool:
    """``hierarchy.on_failure: record`` (the default, stop, is left out of cell specs)."""
    return hierarchy.get("on_failure", "stop") == "record"


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


def data_key(seed: int) -> jax.Array:
    """PRNG key of the data: independent of the network keys of the same seed."""
    return jax.random.fold_in(jax.random.key(seed), 0xDA7A)


def network_keys(seeds: Sequence[int]) -> jax.Array:
    """One PRNG key per network seed, stacked (the ensemble axis)."""
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 1))(jnp.asarray(seeds))


def network_options(network: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword options of :func:`~nth_dynamics.networks.make_network` from a cell's network spec."""
    options = {key: network[key] for key in ("activation", "readout") if key in network}
    options["trained"] = list(network["trained"])
    if network["architecture"] == "resnet":
        options.update(alpha=network["alpha"], branch=network["branch"])
    return options


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
def _solve_nth_batch(tower, f0, y_train, ts, solver: str, rtol: float, atol: float, max_steps: int):
    def one(kernels, f, ts):
        return solve_nth(kernels, f, y_train, ts, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)

    return eqx.filter_vmap(one)(tower, f0, ts)


@eqx.filter_jit
def _gradient_flow_batch(ensemble, x_train, y_train, ts, x_eval, solver: str, rtol: float, atol: float, max_steps: int):
    def one(model, ts):
        return gradient_flow(
            model, x_train, y_train, ts, x_eval, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps
        )

    return eqx.filter_vmap(one)(ensemble, ts)


@eqx.filter_jit
def _gradient_descent_batch(ensemble, x_train, y_train, lr: float, steps: int, save_every: int, x_eval):
    return eqx.filter_vmap(lambda model: gradient_descent(model, x_train, y_train, lr, steps, save_every, x_eval))(
        ensemble
    )


# ----------------------------------------------------------------------------- estimates


def estimate_cell(cell: Cell) -> dict[str, Any]:
    """Rough peak memory (bytes) and run time (seconds) of a cell, before
    allocating anything, and the direction chunk (``batch_size``) of its
    kernel tower.

    Memory: the solver state ((stages + 3) copies of the NTH state, or of
    the trained parameters for the reference), the saved trajectories and the
    parameters, plus the kernel tower (:func:`~nth_dynamics.kernels.tower_bytes`)
    with the largest direction chunk that fits what the rest leaves of
    ``memory_budget_gb``; all × the seeds that run together as one vmapped
    batch (``seed_batch``: all of them when they fit, else fewer at a time);
    plus, once, the process itself: the JAX runtime and the compilation of
    the tower (:func:`~nth_dynamics.kernels.compile_bytes`).
    """
    spec = cell.spec
    network, hierarchy, reference = spec["network"], spec["hierarchy"], spec["reference"]
    itemsize = 8 if spec["precision"] == "float64" else 4
    seeds = len(spec["seeds"])
    n, n_eval = spec["data"]["n_train"], spec["data"]["n_train"] + spec["data"]["n_test"]
    p_max, orders = max(hierarchy["orders"]), hierarchy["orders"]
    n_saves = spec["time"]["n_saves"]
    n_params, n_trained = parameter_counts(
        network["architecture"], spec["data"]["d"], network["width"], network["depth"], **network_options(network)
    )
    activations = 2 * network["width"] * (network["depth"] + 1)

    state = n_eval * sum(n ** (r - 1) for r in range(1, p_max))  # f, K2, …, K(p−1)
    nth_solver = _solver_copies(hierarchy["solver"], state) * itemsize
    if reference["method"] == "gradient_descent":
        ref_solver = 2 * n_trained * itemsize
    else:
        # Runge–Kutta stages plus ~8 more parameter-sized buffers (the
        # controller's previous state and error estimate, the loss gradient and
        # XLA temporaries): measured ~22 copies per seed for an FFNet of width
        # 4096, where stages alone counted 10
        ref_solver = (_solver_copies(reference["solver"], n_trained) + 8 * n_trained) * itemsize
    ref_ntk = tower_bytes(n_eval, n, 2, n_trained, activations=activations, itemsize=itemsize)
    saved = (len(orders) + 1) * n_saves * n_eval * (1 + n) * itemsize
    per_seed = {  # one network's share of each part
        "nth_solver": nth_solver,
        "reference": ref_solver + ref_ntk,
        "saved": saved,
        "parameters": 3 * n_params * itemsize,
    }
    rest = max(per_seed["nth_solver"], per_seed["reference"]) + per_seed["saved"] + per_seed["parameters"]

    def tower(batch: int) -> int:
        return tower_bytes(n_eval, n, p_max, n_trained, activations=activations, batch_size=batch, itemsize=itemsize)

    # Seeds run as one vmapped batch when they fit, else in equal batches (a
    # divisor of the seed count, so one compilation serves them all); within
    # a batch, the largest direction chunk that fits what the rest leaves.
    # The process itself (JAX, compiling the tower) is planned at its largest,
    # a chunked tower's compilation.
    budget = spec["memory_budget_gb"] * 1e9 - compile_bytes(p_max, chunked=True)
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
        "seconds": _seconds(spec, n, n_eval, n_trained),
        "batch_size": batch,
        "seed_batch": seed_batch,
    }


def _solver_copies(solver: str, state: int) -> int:
    copies = (SOLVER_STAGES.get(solver, 7) + 3) * state
    return copies + state**2 if solver in IMPLICIT_SOLVERS else copies


def _seconds(spec: Mapping[str, Any], n: int, n_eval: int, n_trained: int) -> float:
    """Very rough: K2 costs a forward and backward pass per point, each
    further level ~2 JVPs per direction of the one below; the solves assume ~100 steps; plus compilation per stage."""
    seeds = len(spec["seeds"])
    orders = spec["hierarchy"]["orders"]
    k2 = 6.0 * (n_eval + n) * n_trained  # one forward and backward pass per point
    tower = sum(k2 * (2 * n) ** (r - 2) for r in range(2, max(orders) + 1))
    state = n_eval * sum(n ** (r - 1) for r in range(1, max(orders) + 1))
    nth = len(orders) * 100 * 7 * 2 * state * n
    reference = 100 * 7 * 6 * n * n_trained + spec["time"]["n_saves"] * k2
    flops = seeds * (tower + nth + reference)
    return flops / FLOPS_PER_SECOND + COMPILE_SECONDS * (len(orders) + 2)


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
            raise ScenarioError(
                f"{scenario.source}: memory_budget_gb: cell {cell.id} ({cell.label()}, {len(cell.spec['seeds'])} seeds) "
                f"needs ≈ {estimate['bytes'] / 1e9:.3g} GB (mostly {largest}), above {share}; "
                f"allowed: lower {lower}, or raise memory_budget_gb" + (", or use fewer workers" if workers > 1 else "")
            )


__all__ = ["Progress", "estimate_cell", "run_cell", "simulate"]
