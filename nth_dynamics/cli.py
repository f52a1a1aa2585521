"""Command line: ``python -m nth_dynamics {simulate, validate, report}`` (also
installed as ``nth-dynamics``).

Exit status: 0 success; 2 invalid input (a one-line message naming the file,
the field and what is allowed — never a traceback); 1 a failed run (an ODE
solver, a file that cannot be written); 130 interrupted (finished cells are
kept, and the same command resumes).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ._files import write_dataset
from ._progress import Progress as SweepProgress
from ._version import __version__
from .engine.hierarchy import SolverError
from .pipeline.destinations import check_destination
from .pipeline.estimates import estimate_seconds, full_rank_note
from .pipeline.infinite_width import (
    check_study_budget,
    is_study_result,
    study_cell,
    write_study_report,
)
from .pipeline.scenario import Cell, ScenarioError, load_scenario
from .pipeline.sweep import WorkerLost, check_budget, estimate_cell, simulate

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class RichProgress(SweepProgress):
    """A live line on stderr: cell i/N, its grid point, the stage, elapsed time."""

    def __init__(self, console: Console):
        self.console = console
        self.display = Progress(
            TextColumn("[bold]cell"),
            MofNCompleteColumn(),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[label]}"),
            TextColumn("[cyan]{task.fields[stage]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = None

    def start(self, total: int) -> None:
        self.display.start()
        self.task = self.display.add_task("cells", total=total, label="", stage="")

    def cell(self, index: int, cell: Cell, cached: bool) -> None:
        stage = "cached: skipped" if cached else "starting"
        self.display.update(self.task, completed=index - 1, label=cell.label(), stage=stage)
        if cached:
            self.display.update(self.task, completed=index)

    def stage(self, name: str) -> None:
        self.display.update(self.task, stage=name)

    def cell_done(self, cell: Cell, seconds: float) -> None:
        self.display.advance(self.task)
        self.display.update(self.task, stage=f"done in {seconds:.1f} s")

    def finish(self) -> None:
        self.display.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nth_dynamics`` and ``nth-dynamics``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return args.run(args, err, argv)
    except ScenarioError as error:
        err.print(f"error: {error}", markup=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err.print("interrupted: finished cells are kept; the same command resumes", markup=False)
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(
        prog="nth-dynamics",
        description="Finite-width training dynamics through the Neural Tangent Hierarchy.",
        epilog="Run 'nth-dynamics COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"nth_dynamics {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    simulate = commands.add_parser(
        "simulate",
        help="run a scenario and write its Dataset",
        description="Run every cell of a scenario (kernel tower, truncated NTH for each order, reference "
        "training) and write one xarray Dataset, atomically: netCDF, or zarr for a .zarr path. "
        "Finished cells are kept in OUT.cells/ until the end, so an interrupted run resumes.",
    )
    simulate.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file")
    simulate.add_argument("-o", "--output", metavar="OUT", help="result path (.nc or .zarr); default output.path, "
                          "else results/<name>.nc")
    simulate.add_argument(
        "--cells", metavar="DIR",
        help="keep finished cells in DIR, also after success (default: OUT.cells/, removed at the end); "
        "processes running parts of one sweep (e.g. --set network.architecture=[ffnet]) can share DIR, "
        "and a run of the whole scenario with the same DIR then only combines them",
    )
    simulate.add_argument(
        "--workers", metavar="N", type=_positive_int, default=1,
        help="run N cells at once, each in its own process (dask.distributed, the 'dask' extra); "
        "each cell then gets memory_budget_gb / N",
    )
    simulate.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="run the cells on a running dask.distributed scheduler (e.g. tcp://host:8786) whose workers "
        "see the cells directory; each cell gets memory_budget_gb (set it to one worker's memory)",
    )
    _add_set(simulate)
    simulate.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    simulate.set_defaults(run=_simulate)

    validate = commands.add_parser(
        "validate",
        help="check a scenario; show it resolved, with memory and time estimates per cell",
        description="Validate a scenario and print it with every default filled in, then each cell of its "
        "sweep with a memory estimate and a (rough) time estimate. Exit status 2 if anything is invalid "
        "or a cell exceeds memory_budget_gb.",
    )
    validate.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file")
    _add_set(validate)
    validate.set_defaults(run=_validate)

    report = commands.add_parser(
        "report",
        help="figures and a summary from a result file (or the parts of one sweep)",
        description="Write the figures and summary of a saved result (nth_dynamics.plots.write_report; for a "
        "result of kind infinite_width, the depth study's figures and report.md). Several results are the "
        "parts of one sweep (e.g. run with --set and one --cells directory): they are combined into one "
        "(nth_dynamics.analysis.combine), which is refused if their scenarios differ in a field that is "
        "not swept or they disagree on a shared cell.",
    )
    report.add_argument("result", metavar="RESULT", nargs="+",
                        help="a result file written by simulate (.nc or .zarr), or several parts of one sweep")
    report.add_argument("-o", "--output", metavar="DIR", help="output directory; default RESULT without suffix + "
                        "'_report' (required with several results)")
    report.add_argument("--tolerance", metavar="T", type=float, default=0.0,
                        help="several results: values of one cell held by two of them must agree to within "
                        "T·max(1, |value|) (default 0: exactly, as when they share a cells directory)")
    report.set_defaults(run=_report)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}, allowed: a whole number ≥ 1")
    return value


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, value in YAML syntax, e.g. --set network.width=[64,128] (repeatable)",
    )


def _simulate(args: argparse.Namespace, err: Console, argv: Sequence[str]) -> int:
    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"output.path={json.dumps(args.output)}")
    scenario = load_scenario(args.scenario, overrides)
    output = scenario.output_path()
    cache = Path(args.cells) if args.cells else output.with_name(output.name + ".cells")
    check_destination(output, source=scenario.source, field="output.path")  # before hours of computing
    if scenario.kind == "finite_width":
        field = "--cells" if args.cells else "--cells (default OUT.cells/)"
        check_destination(cache, source=scenario.source, field=field, directory=True)
    progress = SweepProgress() if args.quiet else RichProgress(err)
    started = time.perf_counter()
    command = "nth-dynamics " + " ".join(shlex.quote(a) for a in argv)
    try:
        ds = simulate(scenario, cache_dir=cache, progress=progress, command=command, workers=args.workers,
                      scheduler=args.scheduler)
        write_dataset(ds, output)
    except Exception as error:
        if isinstance(error, (SolverError, WorkerLost, OSError)):
            kept = f" (finished cells are kept in {cache})" if cache.exists() else ""
            err.print(f"error: {scenario.source}: {error}{kept}", markup=False)
            return EXIT_FAILED
        raise
    if not args.cells:
        shutil.rmtree(cache, ignore_errors=True)
    if "nth_failed" in ds and bool(ds["nth_failed"].any()):
        failed = ds["nth_failed"]
        orders = ", ".join(f"p={int(p)}" for p in failed["order"].values if bool(failed.sel(order=p).any()))
        err.print(f"note: {int(failed.sum())} of {failed.size} NTH solves ({orders}) stopped before the last save "
                  "time and are recorded as inf (hierarchy.on_failure: record; see nth_failed)", markup=False)
    if not args.quiet:
        cells = len(json.loads(ds.attrs["cells"]))
        err.print(f"wrote {output} ({cells} cell{'s' * (cells != 1)}, {time.perf_counter() - started:.1f} s)", markup=False)
    return EXIT_OK


def _validate(args: argparse.Namespace, err: Console, argv: Sequence[str]) -> int:
    scenario = load_scenario(args.scenario, args.overrides)
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"# {scenario.source}: valid; resolved scenario (every default filled in):", markup=False)
    out.print(scenario.to_yaml(), markup=False)
    if scenario.kind == "infinite_width":
        return _validate_study(scenario, out)
    cells = scenario.cells()
    unique = list({cell.id: cell for cell in cells}.values())
    estimates = {cell.id: estimate_cell(cell) for cell in unique}
    seconds = {cell.id: estimate_seconds(cell.spec, cell.model) for cell in unique}
    table = Table(title=f"{len(unique)} cell{'s' * (len(unique) != 1)} × {len(scenario.seed)} seeds "
                  f"→ {scenario.output_path()}")
    for column in ("cell id", *scenario.grid(), "tower chunk", "memory", "time (rough)"):
        table.add_column(column, justify="right" if column != "cell id" else "left")
    budget = scenario.memory_budget_gb * 1e9
    for cell in unique:
        estimate = estimates[cell.id]
        memory = _bytes(estimate["bytes"])
        if estimate["bytes"] > budget:
            memory = f"[red]{memory} > budget[/red]"
        table.add_row(
            cell.id, *(str(v) for v in cell.coords.values()), str(estimate["batch_size"]), memory,
            _seconds(seconds[cell.id]),
        )
    out.print(table)
    out.print(f"memory budget {scenario.memory_budget_gb:g} GB; total time ≈ {_seconds(sum(seconds.values()))} "
              "(rough: compilation dominates small cells)",
              markup=False)
    if note := full_rank_note([cell.spec for cell in unique]):
        err.print(note, markup=False)
    check_budget(scenario, unique, estimates)
    return EXIT_OK


def _validate_study(scenario, out: Console) -> int:
    """The one cell of an infinite-width scenario, with rough estimates."""
    cell, estimate = study_cell(scenario), scenario.infinite_width.estimate()
    table = Table(title=f"1 cell (infinite width) → {scenario.output_path()}")
    for column in ("cell id", "study", "memory", "time (rough)"):
        table.add_column(column, justify="left" if column in ("cell id", "study") else "right")
    table.add_row(cell.id, cell.spec["study"], _bytes(estimate.bytes), _seconds(estimate.seconds))
    out.print(table)
    out.print(f"depth_study.{cell.spec['study']}(**{json.dumps(cell.spec['arguments'])})", markup=False)
    out.print(f"memory budget {scenario.memory_budget_gb:g} GB", markup=False)
    check_study_budget(scenario, estimate)
    return EXIT_OK


def _report(args: argparse.Namespace, err: Console, argv: Sequence[str]) -> int:
    results = [Path(result) for result in args.result]
    for result in results:
        if not result.exists():
            err.print(f"error: {result}: no such result file; allowed: a .nc or .zarr file written by simulate",
                      markup=False)
            return EXIT_BAD_INPUT
    result = results[0]
    studies = [path for path in results if is_study_result(path)]
    if studies and len(results) > 1:
        err.print(f"error: {studies[0]}: a result of kind infinite_width has no parts to combine; allowed: one such "
                  "result, or several results of kind finite_width", markup=False)
        return EXIT_BAD_INPUT
    if len(results) > 1 and not args.output:
        err.print(f"error: {result}: {len(results)} results need an output directory; allowed: -o DIR for the "
                  "report of their combination", markup=False)
        return EXIT_BAD_INPUT
    out_dir = Path(args.output) if args.output else result.with_name(result.name.rsplit(".", 1)[0] + "_report")
    if studies:  # kind infinite_width: the depth study's own figures
        write_study_report(result, out_dir)
        err.print(f"wrote the report of {result} to {out_dir}", markup=False)
        return EXIT_OK
    try:
        from .report.plots import write_report
    except ImportError as error:
        err.print(f"error: the report command needs nth_dynamics.report.plots.write_report, not available here ({error})",
                  markup=False)
        return EXIT_BAD_INPUT
    if len(results) == 1:
        write_report(results[0], out_dir)
    else:
        write_report(results, out_dir, tolerance=args.tolerance)
    which = result if len(results) == 1 else f"the combination of {', '.join(str(path) for path in results)}"
    err.print(f"wrote the report of {which} to {out_dir}", markup=False)
    return EXIT_OK


def _bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.3g} {unit}"
        count /= 1000
    return f"{count:.3g} TB"


def _seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    sys.exit(main())
