"""Running a scenario: the cells of its sweep grid, each a pure function of
its spec (:mod:`~nth_dynamics.pipeline.cell_run`), run in turn or in parallel
(:mod:`~nth_dynamics.pipeline.execution`) within the memory budget
(:mod:`~nth_dynamics.pipeline.estimates`), then one combined Dataset
(docs/architecture.md, "The one path data takes").

Finished cells can be cached on disk (``cache_dir``): an interrupted sweep
resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from .._progress import Progress
from .._schema import ScenarioError
from .cell_run import run_cell
from .cells import FACTORY_KEYWORDS, LEFT_OUT_AT_DEFAULT, Cell, ModelFactory
from .estimates import check_budget, estimate_cell
from .execution import WorkerLost, run_in_turn, run_on_cluster
from .infinite_width import simulate_study
from .._provenance import git_commit
from .results import annotate, combine, provenance
from .scenario import SWEEP_DIMS, Scenario


def simulate(
    scenario: Scenario,
    *,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    command: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    model: Callable[..., Any] | None = None,
) -> xr.Dataset:
    """Run every cell of ``scenario`` and combine them into one Dataset.

    A scenario of ``kind: infinite_width`` runs its one study instead
    (:func:`nth_dynamics.pipeline.infinite_width.simulate_study`; nothing to cache).

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
        model: a factory of the user's own network, run in place of the
            built-in ones: ``model(key, *, d, width, depth, activation)`` →
            an Equinox module mapping one input of shape ``(d,)`` to a
            scalar (e.g. a :class:`~nth_dynamics.FunctionModel`), called once
            per seed with that seed's key and the cell's values of
            ``data.d``, ``network.width``, ``network.depth`` and
            ``network.activation`` (any of the last three may be swept). The
            scenario must then leave the built-in networks' fields
            (``network.architecture``, ``alpha``, ``gamma``, ``branch``,
            ``readout``, ``trained``) unset. Every floating-point leaf is
            trained and cast to the scenario's precision. The cell ids hash
            the factory's qualified name and source and the shapes of the
            parameters it builds; the output's ``architecture`` coordinate
            and ``model_factory`` attribute name the factory. A scenario file
            never names code: this is the Python API only.

    Raises:
        ScenarioError: a cell's memory estimate exceeds its budget (checked
            for every cell before any runs); with ``model``, a built-in
            network field is set or the scenario is of kind infinite_width.
        SolverError: an ODE solve failed.
        TypeError: ``model`` is not callable, cannot take the keywords, or
            does not return an Equinox module.
    """
    factory = None if model is None else _model_factory(scenario, model)
    if scenario.kind == "infinite_width":
        return simulate_study(scenario, progress=progress, command=command)
    progress = progress or Progress()
    git_commit()  # the commit of the code this process imported, before hours of computing
    cells = scenario.cells()
    if factory is not None:
        cells = [Cell.of(cell.coords, cell.spec, model=factory) for cell in cells]
    unique = _by_tower(list({cell.id: cell for cell in cells}.values()))
    sharing = workers if scheduler is None else 1  # cells that share this machine's memory_budget_gb
    if sharing > 1:  # the budget is not in the cell id: the same cells, planned for less memory
        budget_gb = scenario.memory_budget_gb / sharing
        unique = [
            dataclasses.replace(cell, spec=cell.spec.model_copy(update={"memory_budget_gb": budget_gb}))
            for cell in unique
        ]
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
                datasets = run_on_cluster(unique, cache, progress, workers, scheduler)
            else:
                datasets = run_in_turn(unique, cache, progress)
        finally:
            progress.finish()
    ds = combine(scenario.grid(), cells, datasets)
    stage_times = _stage_times(datasets)
    summaries = [  # in grid order, not the order they ran in (_by_tower), as the scenario lists them
        {"cell_id": cell.id, **cell.coords, "memory_bytes": estimates[cell.id]["bytes"],
         "stage_wall_times": json.loads(datasets[cell.id].attrs["stage_wall_times"])}
        for cell in {cell.id: cell for cell in cells}.values()
    ]
    ds.attrs.update(provenance(scenario, stage_times=stage_times, cells=summaries, command=command))
    if factory is not None:
        ds.attrs["model_factory"] = factory.name
    _add_scalar_coordinates(ds, scenario, factory)
    return ds


BUILT_IN_NETWORK_FIELDS = (
    "architecture", "alpha", "gamma", "branch", "readout", "trained", "W_std", "b_std", "parameterization",
    "output_scale",
)
"""The ``network`` fields that describe the built-in networks only: unset with a user's model."""


def _model_factory(scenario: Scenario, model: Callable[..., Any]) -> ModelFactory:
    """The user's factory, checked against the scenario (one-line errors)."""
    if not callable(model):
        raise TypeError(
            f"model must be a factory model(key, *, {', '.join(FACTORY_KEYWORDS)}) returning an Equinox module, "
            f"got a {type(model).__name__}"
        )
    if scenario.kind == "infinite_width":
        raise ScenarioError(f"{scenario.source}: kind: infinite_width has no network; allowed: model=None, "
                            "or kind finite_width")
    factory = ModelFactory(model)
    for name in BUILT_IN_NETWORK_FIELDS:
        if name in scenario.network.model_fields_set:
            raise ScenarioError(
                f"{scenario.source}: network.{name}: describes a built-in network, but simulate was given "
                f"model={factory.name}; allowed: remove it (the factory receives {', '.join(FACTORY_KEYWORDS)})"
            )
    return factory


def _by_tower(cells: list[Cell]) -> list[Cell]:
    """The cells in grid order, except that those with one tower (differing
    only in ``network.output_scale``) run one after another, so that they
    share it (:class:`~nth_dynamics.pipeline.cell_run.SharedTowers`)."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.spec.tower_id(cell.model), []).append(cell)
    return [cell for group in groups.values() for cell in group]


def _stage_times(datasets: Mapping[str, xr.Dataset]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for ds in datasets.values():
        for stage, seconds in json.loads(ds.attrs["stage_wall_times"]).items():
            key = "nth" if stage.startswith("NTH") else stage
            totals[key] = round(totals.get(key, 0.0) + seconds, 3)
    return totals


def _add_scalar_coordinates(ds: xr.Dataset, scenario: Scenario, factory: ModelFactory | None = None) -> None:
    """Unswept grid fields as scalar coordinates: ``ds.depth`` always answers;
    with a user's model, ``architecture`` is the factory's name. A field of
    :data:`~nth_dynamics.pipeline.cells.LEFT_OUT_AT_DEFAULT` at its default
    (``W_std = 1``, ``b_std = 0``) is left out, as from the cell id: results
    written before it existed keep their coordinates."""
    for dim, field in SWEEP_DIMS.items():
        values = scenario.field(field)
        default = LEFT_OUT_AT_DEFAULT.get(tuple(field.split(".")), object())
        if dim not in ds.dims and values is not None and values[0] != default:
            ds.coords[dim] = values[0]
    if factory is not None:
        ds.coords["architecture"] = factory.name
    annotate(ds)


__all__ = ["Progress", "WorkerLost", "check_budget", "estimate_cell", "run_cell", "simulate"]
