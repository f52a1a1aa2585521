"""Figures and a Markdown summary from a saved result (``python -m nth_dynamics
report RESULT [RESULT …] [-o DIR]``; docs/architecture.md: the report reads only
the saved Dataset). Several results are the parts of one sweep, combined
first (:func:`nth_dynamics.analysis.combine`).

:func:`write_report` draws, as PNG and SVG, every figure the Dataset has data
for (:data:`nth_dynamics.report.figures.FIGURES`), and writes ``report.md``
(:func:`nth_dynamics.report.markdown.markdown_report`: the fitted slopes with
bootstrap intervals next to the predictions of docs/theory.md §4) and
``analysis.nc`` (:func:`nth_dynamics.analysis.analyse`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from .._files import save_figure, write_dataset, write_text
from ..pipeline.scenario import ScenarioError
from . import analysis
from .figures import FIGURES
from .markdown import markdown_report
from .parts import combine, read_result

FORMATS = ("png", "svg")


def write_report(
    result_path: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    *,
    tolerance: float = 0.0,
) -> list[Path]:
    """Write the figures, ``report.md`` and ``analysis.nc`` of a saved result.

    Args:
        result_path: a ``.nc`` or ``.zarr`` file written by ``simulate``, or
            several: the parts of one sweep, combined into one result
            (:func:`nth_dynamics.analysis.combine`).
        out_dir: where to write; default ``<result stem>_report/`` next to the
            result (required with several results). Created if needed.
        tolerance: several results: how far two values of one cell may
            differ (:func:`nth_dynamics.analysis.combine`).

    Returns:
        The paths written, ``report.md`` first.

    Raises:
        ScenarioError: a result is missing, unreadable or not a result of
            ``simulate``, several results cannot be combined or have no
            ``out_dir``, or ``out_dir`` is not a directory (the CLI: exit 2).
    """
    paths = [Path(result_path)] if isinstance(result_path, (str, os.PathLike)) else [Path(p) for p in result_path]
    if not paths:
        raise ScenarioError("report: no result given; allowed: one or more result files of simulate")
    if len(paths) > 1 and out_dir is None:
        raise ScenarioError(f"{paths[0]}: {len(paths)} results need an output directory; allowed: -o DIR "
                            "(out_dir=) for the report of their combination")
    ds = read_result(paths[0]) if len(paths) == 1 else combine(paths, tolerance=tolerance)
    if out_dir is None:
        out_dir = paths[0].with_name(paths[0].name.rsplit(".", 1)[0] + "_report")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ScenarioError(f"{out_dir}: exists and is not a directory; allowed: a directory for the report")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ScenarioError(f"{out_dir}: cannot create the report directory ({error.strerror}); "
                            "allowed: a writable directory") from None

    fits = analysis.analyse(ds)
    wide = _wide_fits(ds)
    written: list[Path] = []
    for name, draw in FIGURES.items():
        figure = draw(ds, fits)
        if figure is not None:
            written += _save(figure, out_dir / name)
    written.append(write_dataset(fits, out_dir / "analysis.nc"))
    label = ", ".join(str(path) for path in paths)
    report = write_text(markdown_report(ds, fits, wide, label, [p.name for p in written if p.suffix == ".png"]),
                        out_dir / "report.md")
    return [report, *written]


def _wide_fits(ds: xr.Dataset) -> xr.Dataset | None:
    """Fits from m = WIDE_FROM on (docs/theory.md §7), when that range holds two
    widths or more and is not the whole sweep."""
    widths = ds["width"].values
    if (widths >= analysis.WIDE_FROM).sum() >= 2 and widths.min() < analysis.WIDE_FROM:
        return analysis.analyse(ds, min_width=analysis.WIDE_FROM)
    return None


def _save(figure, stem: Path) -> list[Path]:
    return save_figure(figure, stem, FORMATS, dpi=120)


__all__ = ["FIGURES", "markdown_report", "write_report"]
