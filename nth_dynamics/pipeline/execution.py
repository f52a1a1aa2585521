"""How the cells of a sweep run: in turn in this process, or as
``dask.distributed`` tasks (a local cluster of worker processes, or a running
scheduler). Either way a finished cell can be kept on disk, one file per cell
id, so an interrupted sweep resumes and processes running parts of one sweep
share their cells."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from .._files import read_dataset, write_dataset
from .._progress import Progress
from .._schema import ScenarioError
from .cell_run import SharedTowers, run_cell
from .cells import Cell


class WorkerLost(RuntimeError):
    """A cluster worker died while running a cell (out of memory, killed)."""


def run_in_turn(cells: Sequence[Cell], cache: Path | None, progress: Progress) -> dict[str, xr.Dataset]:
    """Run ``cells`` one after the other (reading those already in ``cache``,
    writing each finished one there); cell id → its Dataset. Consecutive
    cells that differ only in ``network.output_scale`` share one tower
    (:class:`~nth_dynamics.pipeline.cell_run.SharedTowers`); cells run on a
    cluster each compute their own."""
    datasets: dict[str, xr.Dataset] = {}
    towers = SharedTowers()
    for index, cell in enumerate(cells, start=1):
        cached = cell_path(cache, cell) if cache else None
        progress.cell(index, cell, cached is not None and cached.exists())
        if cached is not None and cached.exists():
            datasets[cell.id] = read_dataset(cached)
            continue
        started = time.perf_counter()
        datasets[cell.id] = run_cell(cell, on_stage=progress.stage, towers=towers)
        progress.cell_done(cell, time.perf_counter() - started)
        if cached is not None:
            write_dataset(datasets[cell.id], cached)
    return datasets


def run_on_cluster(
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
    paths = {cell.id: cell_path(cache, cell) for cell in cells}
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


def cell_path(cache: Path, cell: Cell) -> Path:
    """Where a finished cell is kept: one file per cell id, shared by every process of a sweep."""
    return cache / f"{cell.id}.nc"


def _run_and_keep(cell: Cell, path: Path) -> float:
    """A cluster task: run one cell, write it (atomically) to ``path``; its wall time."""
    started = time.perf_counter()
    write_dataset(run_cell(cell), path)
    return time.perf_counter() - started

__all__ = ["WorkerLost", "cell_path", "run_in_turn", "run_on_cluster"]
