"""Figures and a Markdown summary from a saved result (``python -m nth_dynamics
report RESULT [-o DIR]``; docs/architecture.md: the report reads only the saved Dataset).

:func:`write_report` draws, as PNG and SVG, every figure the Dataset has data
for (:data:`nth_dynamics.report.figures.FIGURES`), and writes ``report.md``
(:func:`nth_dynamics.report.markdown.markdown_report`: the fitted slopes with
bootstrap intervals next to the predictions of docs/theory.md §4) and
``analysis.nc`` (:func:`nth_dynamics.analysis.analyse`).
"""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from .._files import read_dataset, save_figure, write_dataset, write_text
from ..pipeline.scenario import ScenarioError
from . import analysis
from .figures import FIGURES
from .markdown import markdown_report

FORMATS = ("png", "svg")


def write_report(result_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write the figures, ``report.md`` and ``analysis.nc`` of a saved result.

    Args:
        result_path: a ``.nc`` or ``.zarr`` file written by ``simulate``.
        out_dir: where to write; default ``<result stem>_report/`` next to the
            result. Created if needed.

    Returns:
        The paths written, ``report.md`` first.

    Raises:
        ScenarioError: the result is missing, unreadable or not a result of
            ``simulate``, or ``out_dir`` is not a directory (the CLI: exit 2).
    """
    result_path = Path(result_path)
    ds = _read_result(result_path)
    if out_dir is None:
        out_dir = result_path.with_name(result_path.name.rsplit(".", 1)[0] + "_report")
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
    report = write_text(markdown_report(ds, fits, wide, result_path, [p.name for p in written if p.suffix == ".png"]), out_dir / "report.md")
    return [report, *written]


def _read_result(path: Path) -> xr.Dataset:
    allowed = "allowed: a .nc or .zarr file written by simulate"
    if not path.exists():
        raise ScenarioError(f"{path}: no such result file; {allowed}")
    try:
        ds = read_dataset(path)
    except Exception as error:  # noqa: BLE001 (h5py, zarr and xarray raise many kinds)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ScenarioError(f"{path}: cannot be read as a result ({reason}); {allowed}") from None
    needed = {"truncation_error", "kernel_magnitude"}
    if "width" not in ds.dims or not needed & set(ds.data_vars):
        raise ScenarioError(f"{path}: not a result of simulate (no width dimension, or none of "
                            f"{', '.join(sorted(needed))}); {allowed}")
    return ds


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
