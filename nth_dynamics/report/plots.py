"""Figures and a Markdown summary from a saved result (``python -m nth_dynamics
report RESULT [-o DIR]``; docs/architecture.md: the report reads only the saved Dataset).

:func:`write_report` draws, as PNG and SVG (matplotlib's Agg canvas, no pyplot), every
figure the Dataset has data for, and writes ``report.md`` (the fitted slopes
with bootstrap intervals next to the predictions of docs/theory.md §4) and
``analysis.nc`` (:func:`nth_dynamics.analysis.analyse`):

- ``error_vs_width``: E_p at the last save time against width, log-log, with
  the fitted and the predicted slopes (``test_error_vs_width`` for test points);
- ``width_slope_vs_time``: the fitted slope of E_p in log m at every save time,
  with its interval (where the prediction holds in t);
- ``error_vs_time``: E_p against t, log-log, with the t^p growth at small t;
- ``kernel_magnitude_vs_width``: max|K(r)₀| per rank r;
- ``ntk_drift_vs_width``: ‖K2_t − K2₀‖∞ at the last save time, reference and NTH;
- ``resnet_vs_ffnet`` (architecture swept): the width a tolerance needs
  against n (with n_train swept), else the FFNet/ResNet error ratio.

Every other swept dimension (depth, n_train, …) becomes rows of panels or
separate lines.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._files import read_dataset, save_figure, write_dataset, write_text
from ..pipeline.scenario import SWEEP_DIMS, ScenarioError
from . import analysis

FACET_DIMS = tuple(dim for dim in SWEEP_DIMS if dim != "width")
"""Swept dimensions besides width: separate series in every figure and table."""
MAX_ROWS = 12
"""At most this many rows of panels per figure (the rest is in the tables)."""
FORMATS = ("png", "svg")
ARCHITECTURE_COLORS = {"ffnet": "C0", "resnet": "C3"}


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
    except Exception as error:  # h5py, zarr and xarray raise many kinds
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


# ----------------------------------------------------------------------------- selections


def _selections(obj: xr.DataArray | xr.Dataset, dims: Sequence[str]) -> list[dict[str, Any]]:
    """Every combination of the values of those ``dims`` that ``obj`` has."""
    present = [d for d in dims if d in obj.dims]
    return [dict(zip(present, values)) for values in itertools.product(*(obj[d].values.tolist() for d in present))]


def _label(selection: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={_value(value)}" for key, value in selection.items()) or "all"


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sel(obj, selection: Mapping[str, Any]):
    return obj.sel({k: v for k, v in selection.items() if k in obj.dims})


def _geometric_mean(values: xr.DataArray) -> xr.DataArray:
    if "seed" not in values.dims:
        return values
    return np.exp(np.log(values.where(values > 0)).mean("seed"))


def _color(line: Mapping[str, Any], index: int) -> str:
    return ARCHITECTURE_COLORS.get(line.get("architecture"), f"C{index % 10}")


def _panels(rows: int, cols: int, sharey: bool = False):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # a bare Figure on the Agg canvas: no pyplot state, the user's backend untouched
    width, height = 3.9 * cols, 3.0 * rows + 0.5
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False, sharey=sharey)
    # fixed margins in inches: several times faster to save than a layout engine
    figure.subplots_adjust(left=1.0 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.65 / height,
                           wspace=0.5, hspace=0.55)
    return figure, axes


def _row_dims(ds: xr.Dataset) -> list[str]:
    return [d for d in FACET_DIMS if d != "architecture" and d in ds.dims]


def _line_dims(ds: xr.Dataset) -> list[str]:
    return ["architecture"] if "architecture" in ds.dims else []


def _rows(ds: xr.Dataset) -> tuple[list[dict[str, Any]], str]:
    rows = _selections(ds, _row_dims(ds))
    note = f" (first {MAX_ROWS} of {len(rows)} rows)" if len(rows) > MAX_ROWS else ""
    return rows[:MAX_ROWS], note


def _finite(values) -> bool:
    return bool(np.isfinite(np.asarray(values, dtype=float)).any())


# ----------------------------------------------------------------------------- drawing fits


def _draw_series(ax, values: xr.DataArray, fit: xr.Dataset, color: str, name: str) -> None:
    """Seed geometric means against width with a bar over the seed range, the
    fitted line over its fit range (solid) and the predicted slope through the
    middle of it (dashed); the legend entry gives the slope, its interval and
    the prediction."""
    mean = _geometric_mean(values)
    error = None
    if "seed" in values.dims:
        low, high = values.min("seed").values, values.max("seed").values
        with np.errstate(invalid="ignore"):  # inf - inf where a solve stopped early (nth_failed)
            error = np.array([mean.values - low, high - mean.values])
        error = np.where(np.isfinite(error) & (error >= 0), error, 0.0)
    slope, intercept = float(fit["slope"]), float(fit["intercept"])
    predicted = float(fit["predicted_slope"]) if "predicted_slope" in fit else np.nan
    label = name
    if np.isfinite(slope):
        low, high = float(fit["slope_low"]), float(fit["slope_high"])
        label += f": {slope:.2f}" + (f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) else "")
        label += f", pred. {predicted:g}" if np.isfinite(predicted) else ""
    ax.errorbar(values["width"].values, mean.values, yerr=error, fmt="o", ms=4, color=color, capsize=2, label=label)
    if not np.isfinite(slope):
        return
    lo, hi = float(fit["fit_min_width"]), float(fit["fit_max_width"])
    m = np.geomspace(lo, hi, 20)
    ax.plot(m, np.exp(intercept + slope * np.log(m)), "-", color=color, lw=1.2)
    if np.isfinite(predicted):
        centre = 0.5 * (np.log(lo) + np.log(hi))
        level = intercept + slope * centre
        ax.plot(m, np.exp(level + predicted * (np.log(m) - centre)), "--", color=color, lw=1.0, alpha=0.7)


SLOPES_LEGEND = "slope [interval], predicted\n(solid: fit, dashed: prediction)"


def _log_axes(
    ax, xlabel: str, ylabel: str, floor: float = 0.0, ticks: Sequence[float] = (), columns: int = 1,
    legend_title: str | None = None,
) -> bool:
    """Log-log axes; the solver floor drawn when it is inside the data's range;
    ``ticks``: label these x values plainly (the widths); a legend in
    ``columns``. A panel without positive data says so instead (log axes
    would fail) and gets no legend: returns whether the panel has data."""
    (x0, x1), (y0, y1) = ax.dataLim.intervalx, ax.dataLim.intervaly
    if not (np.isfinite([x0, x1, y0, y1]).all() and x1 > 0 and y1 > 0):
        ax.text(0.5, 0.5, "no data in range", transform=ax.transAxes, ha="center", va="center", color="0.5")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xticks([])
        ax.set_yticks([])
        return False
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if floor > 0 and floor > ax.get_ylim()[0]:
        ax.axhline(floor, color="0.6", lw=0.8, ls=":", label="solver floor")
    if len(ticks):
        ax.set_xticks(list(ticks), [f"{t:g}" for t in ticks], fontsize=7)
        from matplotlib.ticker import NullLocator

        ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6, ncol=columns, title=legend_title, title_fontsize=6)
    return True


# ----------------------------------------------------------------------------- figures


def error_vs_width(ds: xr.Dataset, fits: xr.Dataset, variable: str = "truncation_error"):
    """E_p(t1) against width, one panel per order (columns) and per value of
    the swept dims (rows), lines per architecture; fitted and predicted slopes."""
    if variable not in ds or not _finite(ds[variable]) or ds.sizes["width"] < 2:
        return None
    values = ds[variable].isel(time=-1)
    fit_all = analysis.quantity_fits(fits, variable).isel(time=-1)
    rows, note = _rows(ds)
    orders = ds["order"].values.tolist()
    figure, axes = _panels(len(rows), len(orders))
    floor = float(fits.attrs.get("error_floor", 0.0))
    for i, row in enumerate(rows):
        for j, order in enumerate(orders):
            ax = axes[i, j]
            for k, line in enumerate(_selections(ds, _line_dims(ds))):
                selection = {**row, **line, "order": order}
                color = _color(line, k)
                name = line.get("architecture", "seed mean (bars: range)")
                _draw_series(ax, _sel(values, selection), _sel(fit_all, selection), color, name)
            _log_axes(ax, "width m", f"E_{order}({_t(ds)} = {float(ds.time[-1]):g})", floor, ds["width"].values,
                      legend_title=SLOPES_LEGEND)
            ax.set_title(f"p = {order}" + (f"; {_label(row)}" if row else ""), fontsize=9)
    which = "training" if variable == "truncation_error" else "test"
    figure.suptitle(f"Truncation error on the {which} points against width{note}", fontsize=10)
    return figure


def error_vs_width_test_points(ds: xr.Dataset, fits: xr.Dataset):
    """:func:`error_vs_width` of the test-point error (None without test points)."""
    return error_vs_width(ds, fits, "test_error")


def _t(ds: xr.Dataset) -> str:
    """The symbol of the time coordinate: t, or τ = t·λ_min/n (``time.unit: n_over_lambda_min``)."""
    return "τ" if "time_scale" in ds else "t"


def width_slope_vs_time(ds: xr.Dataset, fits: xr.Dataset):
    """The fitted slope of log E_p in log m at every save time, with its interval."""
    if "truncation_error_slope" not in fits or not _finite(fits["truncation_error_slope"]):
        return None
    fit_all = analysis.quantity_fits(fits, "truncation_error")
    rows, note = _rows(ds)
    orders = ds["order"].values.tolist()
    figure, axes = _panels(len(rows), len(orders))
    times = fit_all["time"].values
    for i, row in enumerate(rows):
        for j, order in enumerate(orders):
            ax = axes[i, j]
            for k, line in enumerate(_selections(ds, _line_dims(ds))):
                fit = _sel(fit_all, {**row, **line, "order": order})
                color = _color(line, k)
                ax.plot(times, fit["slope"], "o-", ms=3, color=color, label=line.get("architecture", "fitted slope"))
                ax.fill_between(times, fit["slope_low"], fit["slope_high"], color=color, alpha=0.2, lw=0)
            ax.axhline(analysis.predicted_error_slope(order), color="k", ls="--", lw=1, label="predicted")
            if (times > 0).sum() > 2 and times[times > 0].max() / times[times > 0].min() > 50:
                ax.set_xscale("log")
                ax.set_xlim(0.8 * times[times > 0].min(), 1.25 * times.max())  # every panel spans the decades
            ax.set_xlabel(f"time {_t(ds)}")
            ax.set_ylabel(f"slope of log E_{order} in log m")
            ax.set_title(f"p = {order}" + (f"; {_label(row)}" if row else ""), fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
    figure.suptitle(f"Fitted width slope of E_p against time (band: bootstrap interval){note}", fontsize=10)
    return figure


def error_vs_time(ds: xr.Dataset, fits: xr.Dataset):
    """E_p against t (log-log), lines per width, with a t^p reference line."""
    if "truncation_error" not in ds or (ds["time"] > 0).sum() < 2 or not _finite(ds["truncation_error"]):
        return None
    positive = ds["truncation_error"].sel(time=ds["time"] > 0)
    mean = _geometric_mean(positive)
    rows = _selections(ds, [d for d in FACET_DIMS if d in ds.dims])
    note = f" (first {MAX_ROWS} of {len(rows)} rows)" if len(rows) > MAX_ROWS else ""
    rows = rows[:MAX_ROWS]
    orders = ds["order"].values.tolist()
    widths = ds["width"].values.tolist()
    from matplotlib import colormaps

    colors = colormaps["viridis"](np.linspace(0, 0.9, len(widths)))
    floor = float(fits.attrs.get("error_floor", 0.0))
    figure, axes = _panels(len(rows), len(orders))
    t = positive["time"].values
    for i, row in enumerate(rows):
        for j, order in enumerate(orders):
            ax = axes[i, j]
            for width, color in zip(widths, colors):
                ax.plot(t, _sel(mean, {**row, "order": order, "width": width}), "o-", ms=2.5, lw=1, color=color,
                        label=f"m = {width}")
            reference = _sel(mean, {**row, "order": order}).max("width").values
            usable = np.flatnonzero(np.isfinite(reference) & (reference > floor) & (t <= analysis.SMALL_TIME))
            if usable.size:
                anchor = usable[0]
                small = t[t <= max(analysis.SMALL_TIME, t[anchor])]
                ax.plot(small, reference[anchor] * (small / t[anchor]) ** order, "k--", lw=1, label=f"∝ t^{order}")
            finite = mean.values[np.isfinite(mean.values) & (mean.values > 0)]
            if _log_axes(ax, f"time {_t(ds)}", f"E_{order}({_t(ds)})", floor, columns=2) and floor > 0 and finite.size:
                ax.set_ylim(bottom=max(floor / 10, finite.min() / 2))
            ax.set_title(f"p = {order}" + (f"; {_label(row)}" if row else ""), fontsize=9)
    figure.suptitle(f"Truncation error against time (seed geometric mean){note}", fontsize=10)
    return figure


def kernel_magnitude_vs_width(ds: xr.Dataset, fits: xr.Dataset):
    """max|K(r)₀| against width, lines per rank r, fitted and predicted slopes."""
    if "kernel_magnitude" not in ds or ds.sizes["width"] < 2:
        return None
    fit_all = analysis.quantity_fits(fits, "kernel_magnitude")
    rows, note = _rows(ds)
    columns = _selections(ds, _line_dims(ds)) or [{}]
    figure, axes = _panels(len(rows), len(columns))
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            for k, rank in enumerate(ds["rank"].values.tolist()):
                selection = {**row, **column, "rank": rank}
                color = f"C{k}"
                _draw_series(ax, _sel(ds["kernel_magnitude"], selection), _sel(fit_all, selection), color,
                             f"r = {rank}")
            _log_axes(ax, "width m", "max |K(r)₀|", ticks=ds["width"].values, legend_title=SLOPES_LEGEND)
            ax.set_title(_label({**row, **column}) if row or column else "", fontsize=9)
    figure.suptitle(f"Kernel magnitudes at initialisation against width{note}", fontsize=10)
    return figure


def ntk_drift_vs_width(ds: xr.Dataset, fits: xr.Dataset):
    """‖K2_t − K2₀‖∞ at the last save time against width: reference and NTH (p ≥ 3)."""
    if "ntk_drift_ref" not in ds or ds.sizes["width"] < 2:
        return None
    rows, note = _rows(ds)
    columns = _selections(ds, _line_dims(ds)) or [{}]
    reference = analysis.quantity_fits(fits, "ntk_drift_ref").isel(time=-1)
    nth = analysis.quantity_fits(fits, "ntk_drift_nth").isel(time=-1) if "ntk_drift_nth_slope" in fits else None
    floor = float(fits.attrs.get("error_floor", 0.0))
    figure, axes = _panels(len(rows), len(columns))
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            selection = {**row, **column}
            _draw_series(ax, _sel(ds["ntk_drift_ref"].isel(time=-1), selection), _sel(reference, selection), "k",
                         "reference")
            if nth is not None:
                for k, order in enumerate(o for o in ds["order"].values.tolist() if o > 2):
                    values = _sel(ds["ntk_drift_nth"].isel(time=-1), {**selection, "order": order})
                    fit = _sel(nth, {**selection, "order": order})
                    _draw_series(ax, values, fit, f"C{k + 1}", f"NTH p = {order}")
            ylabel = f"‖K2(t) − K2(0)‖∞ at {_t(ds)} = {float(ds.time[-1]):g}"
            _log_axes(ax, "width m", ylabel, floor, ds["width"].values, legend_title=SLOPES_LEGEND)
            ax.set_title(_label(selection) if selection else "", fontsize=9)
    figure.suptitle(f"NTK drift against width{note}", fontsize=10)
    return figure


def resnet_vs_ffnet(ds: xr.Dataset, fits: xr.Dataset):
    """With n_train swept: the width at which max_t E_p falls to the tolerance
    against n, per architecture and the other swept dims, with the fitted
    exponents. Otherwise the ratio E_p(FFNet)/E_p(ResNet) at t1 against width."""
    if "architecture" not in ds.dims or ds.sizes["architecture"] < 2:
        return None
    orders = ds["order"].values.tolist()
    others = [d for d in FACET_DIMS if d in ds.dims and d not in ("architecture", "n_train")]
    figure, axes = _panels(1, len(orders))
    if "width_at_tolerance" in fits and "n_train" in fits.dims:
        n = fits["n_train"].values
        for j, order in enumerate(orders):
            ax = axes[0, j]
            lines = _selections(ds, ["architecture", *others])
            for k, line in enumerate(lines):
                selection = {**line, "order": order}
                width = _sel(fits["width_at_tolerance"], selection)
                low = _sel(fits["width_at_tolerance_low"], selection).values
                high = _sel(fits["width_at_tolerance_high"], selection).values
                error = np.array([width.values - low, high - width.values])
                error = np.where(np.isfinite(error) & (error >= 0), error, 0.0)
                fitted = "n_exponent_fit" in fits
                key = "n_exponent_fit" if fitted else "n_exponent"
                exponent = float(_sel(fits[key], selection)) if key in fits else np.nan
                style = "-" if line.get("architecture") == "resnet" else "--"
                label = _label(line) + (f": n^{exponent:.2f}" if np.isfinite(exponent) else "")
                color = f"C{k % 10}"
                # markers: interpolated between swept widths; line: from the fitted power law
                ax.errorbar(n, width.values, yerr=error, fmt="o" + ("" if fitted else style), ms=4, capsize=2,
                            color=color, label=None if fitted else label)
                if fitted:
                    ax.plot(n, _sel(fits["width_at_tolerance_fit"], selection).values, style, color=color,
                            label=label)
            finite = fits["width_at_tolerance_fit" if "width_at_tolerance_fit" in fits
                          else "width_at_tolerance"].sel(order=order).values
            finite = finite[np.isfinite(finite)]
            if finite.size:
                anchor = np.exp(np.log(finite).mean())
                centre = np.exp(np.log(n).mean())
                for power, ls in ((3, ":"), (4, "-.")):
                    ax.plot(n, anchor * (n / centre) ** power, color="0.5", ls=ls, lw=1, label=f"∝ n^{power}")
            tolerance = float(fits["tolerance"].sel(order=order).max())
            if _log_axes(ax, "training points n", f"width at max_t E_{order} = {tolerance:.0e}", ticks=n):
                ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
            ax.set_title(f"p = {order}", fontsize=9)
        # room on the right for the legends: one per panel, beside it
        width, height = figure.get_size_inches()
        figure.set_size_inches(width * 1.6, height)
        figure.subplots_adjust(left=1.0 / (1.6 * width), right=1 - 2.4 / (1.6 * width), wspace=1.2)
        figure.suptitle("Width needed for a tolerance of max_t E_p against n\n(ResNet solid, FFNet dashed; "
                        "lines: fitted power law, markers: interpolated)", fontsize=9)
        return figure
    mean = _geometric_mean(ds["truncation_error"].isel(time=-1))
    if not {"ffnet", "resnet"} <= set(ds["architecture"].values.tolist()):
        return None
    ratio = mean.sel(architecture="ffnet") / mean.sel(architecture="resnet")
    for j, order in enumerate(orders):
        ax = axes[0, j]
        for k, line in enumerate(_selections(ds, others) or [{}]):
            ax.plot(ds["width"], _sel(ratio, {**line, "order": order}), "o-", ms=4, color=f"C{k % 10}",
                    label=_label(line) if line else "FFNet / ResNet")
        ax.axhline(1.0, color="k", lw=0.8)
        _log_axes(ax, "width m", f"E_{order} FFNet / E_{order} ResNet at {_t(ds)} = {float(ds.time[-1]):g}",
                  ticks=ds["width"].values)
        ax.set_title(f"p = {order}", fontsize=9)
    figure.suptitle("FFNet over ResNet truncation error (seed geometric means)", fontsize=10)
    return figure


FIGURES = {
    "error_vs_width": error_vs_width,
    "test_error_vs_width": error_vs_width_test_points,
    "width_slope_vs_time": width_slope_vs_time,
    "error_vs_time": error_vs_time,
    "kernel_magnitude_vs_width": kernel_magnitude_vs_width,
    "ntk_drift_vs_width": ntk_drift_vs_width,
    "resnet_vs_ffnet": resnet_vs_ffnet,
}
"""File stem → figure function (returns None when its data are absent)."""


# ----------------------------------------------------------------------------- the Markdown report


def markdown_report(
    ds: xr.Dataset,
    fits: xr.Dataset,
    wide: xr.Dataset | None,
    result_path: str | os.PathLike,
    figures: Sequence[str] = (),
) -> str:
    """The text of ``report.md``: fitted slopes with intervals next to the
    predictions of docs/theory.md §4, small-t exponents, widths at a tolerance,
    λ_min, and the list of figures."""
    scenario = _scenario(ds)
    t1 = float(ds["time"][-1])
    level = f"{100 * float(fits.attrs.get('confidence', analysis.CONFIDENCE)):g} %"
    seeds = ds.sizes.get("seed", 1)
    lines = [
        f"# Report: {scenario.get('name', Path(result_path).stem)}",
        "",
        f"{ds.attrs.get('title', '')}".strip(),
        "",
        f"- result: `{result_path}` (git commit {ds.attrs.get('git_commit', 'unknown')})",
        f"- widths: {', '.join(str(w) for w in ds['width'].values.tolist())}; seeds: {seeds}; "
        f"orders p: {', '.join(str(p) for p in ds['order'].values.tolist())}; save times: {ds.sizes['time']} "
        f"up to {_t(ds)}1 = {t1:g}",
        *([f"- times τ in units of n/λ_min(K2₀) of each seed (τ = t·λ_min/n, `time.unit: n_over_lambda_min`): "
           f"n/λ_min from {float(ds['time_scale'].min()):.3g} to {float(ds['time_scale'].max()):.3g}"]
          if "time_scale" in ds else []),
        *(f"- {dim}: {', '.join(_value(v) for v in np.atleast_1d(ds[dim].values).tolist())}"
          for dim in FACET_DIMS if dim in ds.coords),
        f"- reference: {scenario.get('reference', {}).get('method', '?')}; solver floor (left out of the fits): "
        f"{float(fits.attrs.get('error_floor', 0)):.1e}",
        f"- fits: least squares of the seed mean of log E against log m; {level} percentile bootstrap over "
        f"seeds ({fits.attrs.get('resamples')} resamples, NumPy seed {fits.attrs.get('bootstrap_seed')}); "
        f"'agrees': within ±{analysis.SLOPE_TOLERANCE} of the prediction and the interval covers it",
        "",
    ]
    if seeds < 5:
        lines += [f"**Only {seeds} seed{'s' * (seeds != 1)}**: E_p varies 2–5× between seeds; fit over 5–8 "
                  "(docs/theory.md §7).", ""]
    span = np.log10(ds["width"].values.max() / ds["width"].values.min())
    if span < 1.5:
        lines += [f"**The widths span {span:.2f} decades**: fit over ≥ 1.5 decades (docs/theory.md §4, §7).", ""]

    lines += _failure_section(ds)
    at = f"t = {t1:g}"
    wide_title = f"The same, fitted from m = {analysis.WIDE_FROM} on"
    error_sections = [
        (fits, "truncation_error", f"Truncation error E_p({at}) against width, training points", "p",
         "−p/2 for even p, −(p−1)/2 for odd p (HY Thm 2.6)"),
        (wide, "truncation_error", f"{wide_title} (docs/theory.md §7: p = 4 reaches −2 only there)", "p", ""),
        (fits, "test_error", f"Truncation error E_p({at}) against width, test points", "p",
         "as on the training points"),
    ]
    kernel_sections = [
        (fits, "kernel_magnitude", "Kernel magnitudes max|K(r)₀| against width", "r",
         "−⌊(r−1)/2⌋: 0, −1, −1, −2, −2 for r = 2…6 (HY eq. 2.3)"),
        (wide, "kernel_magnitude", wide_title, "r", ""),
        (fits, "ntk_drift_ref", f"NTK drift ‖K2_t − K2₀‖∞ ({at}) against width, reference", None,
         "−1 (HY Cor. 2.4: t(1+t)/m)"),
        (fits, "ntk_drift_nth", f"NTK drift ‖K2_t − K2₀‖∞ ({at}) against width, truncated NTH", "p",
         "−1 for p ≥ 3 (p = 2 freezes K2)"),
    ]
    for source, name, title, index, prediction in error_sections:
        lines += _slope_section(source, name, title, index, prediction) if source is not None else []
    lines += _time_section(ds, fits)
    for source, name, title, index, prediction in kernel_sections:
        lines += _slope_section(source, name, title, index, prediction) if source is not None else []
    lines += _tolerance_section(ds, fits)
    lines += _lambda_section(ds)
    if figures:
        lines += ["## Figures", "", *(f"- [{name}]({name}) (and .svg)" for name in figures), ""]
    return "\n".join(lines).rstrip() + "\n"


def _scenario(ds: xr.Dataset) -> dict[str, Any]:
    try:
        return json.loads(ds.attrs.get("scenario", "{}"))
    except (TypeError, ValueError):
        return {}


def _format_slope(fit: xr.Dataset) -> tuple[str, str]:
    slope = float(fit["slope"])
    if not np.isfinite(slope):
        return "—", "—"
    low, high = float(fit["slope_low"]), float(fit["slope_high"])
    return f"{slope:.2f}", (f"[{low:.2f}, {high:.2f}]" if np.isfinite(low) else "—")


def _slope_section(fits: xr.Dataset, name: str, title: str, index_label: str | None, prediction: str) -> list[str]:
    """A table of the width fits of one quantity at the last save time, one row
    per series and order p (or rank r)."""
    if f"{name}_slope" not in fits:
        return []
    index_dim = {"p": "order", "r": "rank", None: None}[index_label]
    fit_all = analysis.quantity_fits(fits, name)
    if "time" in fit_all.dims:
        fit_all = fit_all.isel(time=-1)
    series = _selections(fit_all, [d for d in FACET_DIMS if d in fit_all.dims])
    indices = fit_all[index_dim].values.tolist() if index_dim else [None]
    header = ["series", *([index_label] if index_label else []), "fitted slope", "interval", "predicted",
              "widths in fit", "decades", "agrees"]
    # E_p starts as t^p/p! times the first kernel the truncation leaves out:
    # its width slope, fitted over the same widths, where the tower has it
    dropped = None
    if index_dim == "order" and name in ("truncation_error", "test_error") and "kernel_magnitude_slope" in fits:
        dropped = analysis.quantity_fits(fits, "kernel_magnitude")["slope"]
        header.append("max\\|K(p+1)₀\\| slope")
    rows = []
    for selection in series:
        for index in indices:
            fit = _sel(fit_all, {**selection, **({index_dim: index} if index_dim else {})})
            slope, interval = _format_slope(fit)
            predicted = float(fit["predicted_slope"])
            points = int(fit["fit_points"])
            widths = (f"{float(fit['fit_min_width']):g}–{float(fit['fit_max_width']):g} ({points})"
                      if points else "none")
            span = f"{float(analysis.decades(fit)):.2f}" if points else "—"
            verdict = "yes" if bool(fit["agrees"]) else "**no**"
            verdict = "—" if not np.isfinite(predicted) or slope == "—" else verdict
            rows.append([_label(selection), *([str(index)] if index_label else []), slope, interval,
                         "—" if not np.isfinite(predicted) else f"{predicted:g}", widths, span, verdict])
            if dropped is not None:
                rank = index + 1
                value = float(_sel(dropped, {**selection, "rank": rank})) if rank in dropped["rank"] else np.nan
                rows[-1].append("—" if not np.isfinite(value) else f"{value:.2f}")
    lines = [f"## {title}", ""]
    if prediction:
        lines += [f"Predicted (docs/theory.md §4): {prediction}.", ""]
    if dropped is not None:
        lines += ["Last column: the width slope of max|K(p+1)₀|, the first kernel the truncation leaves out "
                  "(E_p starts as t^p/p! times it), where the tower reaches it.", ""]
    return lines + _table(header, rows) + [""]


def _time_section(ds, fits) -> list[str]:
    name = "truncation_error_time_exponent"
    if name not in fits or not _finite(fits[name]):
        return []
    widths = fits["width"].values.tolist()
    series = _selections(fits[name], [d for d in FACET_DIMS if d in fits[name].dims])
    header = ["series", "p", "predicted", *(f"m = {w}" for w in widths)]
    rows = []
    for selection in series:
        for order in fits["order"].values.tolist():
            fit = _sel(fits, {**selection, "order": order})
            cells = []
            for width in widths:
                one = fit.sel(width=width)
                value = float(one[name])
                cells.append("—" if not np.isfinite(value) else
                             f"{value:.2f} ({float(one['truncation_error_fit_min_time']):.2g}–"
                             f"{float(one['truncation_error_fit_max_time']):.2g})")
            rows.append([_label(selection), str(order), str(order), *cells])
    small = float(fits.attrs.get("small_time", analysis.SMALL_TIME))
    return [
        "## Growth of E_p at small t",
        "",
        f"Slope of log E_p against log t over 0 < t ≤ {small:g} (the times used in brackets; errors below the "
        "solver floor are left out). Predicted: E_p ∝ t^p at small t (docs/theory.md §4).",
        "",
        *_table(header, rows),
        "",
    ]


def _failure_section(ds) -> list[str]:
    """Which truncated dynamics stopped before the last save time (``hierarchy.on_failure: record``)."""
    if "nth_failed" not in ds or not bool(ds["nth_failed"].any()):
        return []
    failed = ds["nth_failed"]
    rows = []
    for selection in _selections(failed, [d for d in FACET_DIMS if d in failed.dims]):
        for order in ds["order"].values.tolist():
            part = _sel(failed, {**selection, "order": order})
            if not bool(part.any()):
                continue
            by_width = part.sum("seed") if "seed" in part.dims else part.astype(int)
            widths = [f"{int(w)} ({int(k)})" for w, k in zip(np.atleast_1d(by_width["width"].values),
                                                            np.atleast_1d(by_width.values)) if k]
            rows.append([_label(selection), str(order), ", ".join(widths)])
    total = int(failed.sum())
    return [
        "## NTH solves that stopped early",
        "",
        f"{total} of {failed.size} truncated solves stopped before the last save time (out of steps, or the step "
        "size collapsed, as when the truncated dynamics blow up): `hierarchy.on_failure: record` kept them, "
        "with E_p = inf from there on. "
        "Fits leave those points out; a tolerance width whose bracket starts at one is —.",
        "",
        *_table(["series", "p", "widths (failed seeds)"], rows),
        "",
    ]


def _tolerance_section(ds, fits) -> list[str]:
    if "width_at_tolerance" not in fits:
        return []
    lines = []
    ways = {
        "": ("Width at which max_t E_p falls to a tolerance, interpolated",
             "Interpolated in log–log between the bracketing widths (— : outside the swept widths)."),
        "_fit": ("Width at which max_t E_p falls to a tolerance, from the fitted power law",
                 "Where the fitted power law of the seed-mean max_t E_p against width reaches the tolerance: "
                 "defined for every series, extrapolated beyond the swept widths."),
    }
    for suffix, (title, how) in ways.items():
        name = f"width_at_tolerance{suffix}"
        if name not in fits:
            continue
        width = fits[name]
        n_values = fits["n_train"].values.tolist() if "n_train" in width.dims else []
        series = _selections(width, [d for d in FACET_DIMS if d in width.dims and d != "n_train"])
        header = ["series", "p", "tolerance", *(f"n = {n}" for n in n_values), "exponent in n", "interval"]
        rows = []
        for selection in series:
            for order in fits["order"].values.tolist():
                at = {**selection, "order": order}
                values = np.atleast_1d(_sel(width, at).values)
                cells = ["—" if not np.isfinite(v) else f"{v:.3g}" for v in values]
                exponent, interval = "—", "—"
                if f"n_exponent{suffix}" in fits:
                    value = float(_sel(fits[f"n_exponent{suffix}"], at))
                    low = float(_sel(fits[f"n_exponent{suffix}_low"], at))
                    high = float(_sel(fits[f"n_exponent{suffix}_high"], at))
                    exponent = "—" if not np.isfinite(value) else f"{value:.2f}"
                    interval = "—" if not np.isfinite(value * low) else f"[{low:.2f}, {high:.2f}]"
                tolerance = float(_sel(fits["tolerance"], at))
                rows.append([_label(selection), str(order), f"{tolerance:.0e}", *cells, exponent, interval])
        lines += [
            f"## {title}",
            "",
            f"{how} The theory gives sufficient widths, not rates: m ≳ (n/λ)³ to train to zero loss (HY Cor. "
            "2.5; cubic for ResNets, LLY), quartic in earlier fully connected bounds (docs/theory.md §4).",
            "",
            *_table(header, rows),
            "",
        ]
    if "time_scale" in ds and "n_train" in ds.dims:
        lines += _time_scale_section(ds)
    return lines


def _time_scale_section(ds) -> list[str]:
    """The time scale n/λ_min (seed geometric mean) per series and n, with its exponent in n."""
    time_scale = ds["time_scale"].isel(width=-1) if "width" in ds["time_scale"].dims else ds["time_scale"]
    scale = _geometric_mean(time_scale)
    slope = analysis.fit_power_law(time_scale, "n_train")["slope"]  # the fit of the seed-mean log
    n = ds["n_train"].values.astype(float)
    series = _selections(scale, [d for d in FACET_DIMS if d in scale.dims and d != "n_train"])
    rows = []
    for selection in series:
        values = np.atleast_1d(_sel(scale, selection).values)
        rows.append([_label(selection), *(f"{v:.3g}" for v in values), f"{float(_sel(slope, selection)):.2f}"])
    return [
        f"## Time scale n/λ_min(K2₀) at width {int(ds['width'][-1])}",
        "",
        "The save times are in units of n/λ_min of each seed (`time.unit: n_over_lambda_min`); seed geometric "
        "means, and the least-squares exponent in n.",
        "",
        *_table(["series", *(f"n = {int(v)}" for v in n), "exponent in n"], rows),
        "",
    ]


def _lambda_section(ds) -> list[str]:
    if "lambda_min" not in ds:
        return []
    mean = _geometric_mean(ds["lambda_min"])
    widths = ds["width"].values.tolist()
    header = ["series", *(f"m = {w}" for w in widths)]
    rows = []
    for selection in _selections(mean, [d for d in FACET_DIMS if d in mean.dims]):
        values = _sel(mean, selection)
        rows.append([_label(selection), *(f"{float(values.sel(width=w)):.3g}" for w in widths)])
    return ["## λ_min(K2₀) (seed geometric mean)", "", *_table(header, rows), ""]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if header[0] == "series" and all(row[0] == "all" for row in rows):  # nothing swept: no series column
        header, rows = header[1:], [row[1:] for row in rows]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


__all__ = ["FIGURES", "markdown_report", "write_report"]
