"""The report's figures: each a function of the result Dataset and its fits
(:func:`nth_dynamics.analysis.analyse`) that returns a matplotlib Figure on the
Agg canvas (no pyplot), or None when the Dataset has no data for it;
:data:`FIGURES` maps the file stem to the function:

- ``error_vs_width``: E_p at the last save time against width, log-log, with
  the fitted and the predicted slopes (``test_error_vs_width`` for test points);
- ``width_slope_vs_time``: the fitted slope of E_p in log m at every save time,
  with its interval (where the prediction holds in t);
- ``error_vs_time``: E_p against t, log-log, with the t^p growth at small t;
- ``kernel_magnitude_vs_width``: max|K(r)₀| per rank r;
- ``ntk_drift_vs_width``: ‖K2_t − K2₀‖∞ at the last save time, reference and NTH;
- ``resnet_vs_ffnet`` (architecture swept, n_train not): the FFNet/ResNet
  error ratio against width;
- ``required_width_vs_n``, ``required_width_vs_depth`` (n_train, depth
  swept): the width a tolerance of max_t E_p needs, with bootstrap intervals
  and the fitted exponents (:mod:`nth_dynamics.report.required_width`);
  crossings that rest on reduced-basis cells are ringed (an approximation,
  never drawn as an exact point);
- ``depth_over_width`` (depth and width swept, n fixed): max_t E_p and the
  relative NTK drift against L/m, points coloured by depth, with the fitted
  exp(βL/m) (:mod:`nth_dynamics.report.depth_over_width`);
- ``error_vs_output_scale`` (``network.output_scale`` swept): max_t E_p
  against the laziness scale α, lines per width, with the fitted slopes and
  the lazy regime's −(p − 1) (:func:`nth_dynamics.analysis.laziness_fits`).

Every other swept dimension (depth, n_train, …) becomes rows of panels or
separate lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from . import analysis
from .series import (
    FACET_DIMS,
    any_finite,
    geometric_mean,
    repeats_ffnet,
    select,
    selections,
    series_label,
    time_symbol,
)

MAX_ROWS = 12
"""At most this many rows of panels per figure (the rest is in the tables)."""
ARCHITECTURE_COLORS = {"ffnet": "C0", "resnet": "C3"}


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
    rows = selections(ds, _row_dims(ds))
    note = f" (first {MAX_ROWS} of {len(rows)} rows)" if len(rows) > MAX_ROWS else ""
    return rows[:MAX_ROWS], note


def _draw_series(ax, values: xr.DataArray, fit: xr.Dataset, color: str, name: str, dim: str = "width") -> None:
    """Seed geometric means against ``dim`` (width) with a bar over the seed
    range, the fitted line over its fit range (solid) and the predicted slope
    through the middle of it (dashed); the legend entry gives the slope, its
    interval and the prediction."""
    mean = geometric_mean(values)
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
    ax.errorbar(values[dim].values, mean.values, yerr=error, fmt="o", ms=4, color=color, capsize=2, label=label)
    if not np.isfinite(slope):
        return
    lo, hi = float(fit[f"fit_min_{dim}"]), float(fit[f"fit_max_{dim}"])
    m = np.geomspace(lo, hi, 20)
    ax.plot(m, np.exp(intercept + slope * np.log(m)), "-", color=color, lw=1.2)
    if np.isfinite(predicted):
        centre = 0.5 * (np.log(lo) + np.log(hi))
        level = intercept + slope * centre
        ax.plot(m, np.exp(level + predicted * (np.log(m) - centre)), "--", color=color, lw=1.0, alpha=0.7)


SLOPES_LEGEND = "slope [interval], predicted\n(solid: fit, dashed: prediction)"


def _log_axes(
    ax, xlabel: str, ylabel: str, floor: float = 0.0, ticks: Sequence[float] | np.ndarray = (), columns: int = 1,
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


def error_vs_width(ds: xr.Dataset, fits: xr.Dataset, variable: str = "truncation_error"):
    """E_p(t1) against width, one panel per order (columns) and per value of
    the swept dims (rows), lines per architecture; fitted and predicted slopes."""
    if variable not in ds or not any_finite(ds[variable]) or ds.sizes["width"] < 2:
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
            for k, line in enumerate(selections(ds, _line_dims(ds))):
                selection = {**row, **line, "order": order}
                color = _color(line, k)
                name = line.get("architecture", "seed mean (bars: range)")
                _draw_series(ax, select(values, selection), select(fit_all, selection), color, name)
            _log_axes(ax, "width m", f"E_{order}({time_symbol(ds)} = {float(ds.time[-1]):g})", floor, ds["width"].values,
                      legend_title=SLOPES_LEGEND)
            ax.set_title(f"p = {order}" + (f"; {series_label(row)}" if row else ""), fontsize=9)
    which = "training" if variable == "truncation_error" else "test"
    figure.suptitle(f"Truncation error on the {which} points against width{note}", fontsize=10)
    return figure


def error_vs_width_test_points(ds: xr.Dataset, fits: xr.Dataset):
    """:func:`error_vs_width` of the test-point error (None without test points)."""
    return error_vs_width(ds, fits, "test_error")


def width_slope_vs_time(ds: xr.Dataset, fits: xr.Dataset):
    """The fitted slope of log E_p in log m at every save time, with its interval."""
    if "truncation_error_slope" not in fits or not any_finite(fits["truncation_error_slope"]):
        return None
    fit_all = analysis.quantity_fits(fits, "truncation_error")
    rows, note = _rows(ds)
    orders = ds["order"].values.tolist()
    figure, axes = _panels(len(rows), len(orders))
    times = fit_all["time"].values
    for i, row in enumerate(rows):
        for j, order in enumerate(orders):
            ax = axes[i, j]
            for k, line in enumerate(selections(ds, _line_dims(ds))):
                fit = select(fit_all, {**row, **line, "order": order})
                color = _color(line, k)
                ax.plot(times, fit["slope"], "o-", ms=3, color=color, label=line.get("architecture", "fitted slope"))
                ax.fill_between(times, fit["slope_low"], fit["slope_high"], color=color, alpha=0.2, lw=0)
            ax.axhline(analysis.predicted_error_slope(order), color="k", ls="--", lw=1, label="predicted")
            if (times > 0).sum() > 2 and times[times > 0].max() / times[times > 0].min() > 50:
                ax.set_xscale("log")
                ax.set_xlim(0.8 * times[times > 0].min(), 1.25 * times.max())  # every panel spans the decades
            ax.set_xlabel(f"time {time_symbol(ds)}")
            ax.set_ylabel(f"slope of log E_{order} in log m")
            ax.set_title(f"p = {order}" + (f"; {series_label(row)}" if row else ""), fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
    figure.suptitle(f"Fitted width slope of E_p against time (band: bootstrap interval){note}", fontsize=10)
    return figure


def error_vs_time(ds: xr.Dataset, fits: xr.Dataset):
    """E_p against t (log-log), lines per width, with a t^p reference line."""
    if "truncation_error" not in ds or (ds["time"] > 0).sum() < 2 or not any_finite(ds["truncation_error"]):
        return None
    positive = ds["truncation_error"].sel(time=ds["time"] > 0)
    mean = geometric_mean(positive)
    rows = selections(ds, [d for d in FACET_DIMS if d in ds.dims])
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
                ax.plot(t, select(mean, {**row, "order": order, "width": width}), "o-", ms=2.5, lw=1, color=color,
                        label=f"m = {width}")
            reference = select(mean, {**row, "order": order}).max("width").values
            usable = np.flatnonzero(np.isfinite(reference) & (reference > floor) & (t <= analysis.SMALL_TIME))
            if usable.size:
                anchor = usable[0]
                small = t[t <= max(analysis.SMALL_TIME, t[anchor])]
                ax.plot(small, reference[anchor] * (small / t[anchor]) ** order, "k--", lw=1, label=f"∝ t^{order}")
            finite = mean.values[np.isfinite(mean.values) & (mean.values > 0)]
            if _log_axes(ax, f"time {time_symbol(ds)}", f"E_{order}({time_symbol(ds)})", floor, columns=2) and floor > 0 and finite.size:
                ax.set_ylim(bottom=max(floor / 10, finite.min() / 2))
            ax.set_title(f"p = {order}" + (f"; {series_label(row)}" if row else ""), fontsize=9)
    figure.suptitle(f"Truncation error against time (seed geometric mean){note}", fontsize=10)
    return figure


def kernel_magnitude_vs_width(ds: xr.Dataset, fits: xr.Dataset):
    """max|K(r)₀| against width, lines per rank r, fitted and predicted slopes."""
    if "kernel_magnitude" not in ds or ds.sizes["width"] < 2:
        return None
    fit_all = analysis.quantity_fits(fits, "kernel_magnitude")
    rows, note = _rows(ds)
    columns = selections(ds, _line_dims(ds)) or [{}]
    figure, axes = _panels(len(rows), len(columns))
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            for k, rank in enumerate(ds["rank"].values.tolist()):
                selection = {**row, **column, "rank": rank}
                color = f"C{k}"
                _draw_series(ax, select(ds["kernel_magnitude"], selection), select(fit_all, selection), color,
                             f"r = {rank}")
            _log_axes(ax, "width m", "max |K(r)₀|", ticks=ds["width"].values, legend_title=SLOPES_LEGEND)
            ax.set_title(series_label({**row, **column}) if row or column else "", fontsize=9)
    figure.suptitle(f"Kernel magnitudes at initialisation against width{note}", fontsize=10)
    return figure


def ntk_drift_vs_width(ds: xr.Dataset, fits: xr.Dataset):
    """‖K2_t − K2₀‖∞ at the last save time against width: reference and NTH (p ≥ 3)."""
    if "ntk_drift_ref" not in ds or ds.sizes["width"] < 2:
        return None
    rows, note = _rows(ds)
    columns = selections(ds, _line_dims(ds)) or [{}]
    reference = analysis.quantity_fits(fits, "ntk_drift_ref").isel(time=-1)
    nth = analysis.quantity_fits(fits, "ntk_drift_nth").isel(time=-1) if "ntk_drift_nth_slope" in fits else None
    floor = float(fits.attrs.get("error_floor", 0.0))
    figure, axes = _panels(len(rows), len(columns))
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            selection = {**row, **column}
            _draw_series(ax, select(ds["ntk_drift_ref"].isel(time=-1), selection), select(reference, selection), "k",
                         "reference")
            if nth is not None:
                for k, order in enumerate(o for o in ds["order"].values.tolist() if o > 2):
                    values = select(ds["ntk_drift_nth"].isel(time=-1), {**selection, "order": order})
                    fit = select(nth, {**selection, "order": order})
                    _draw_series(ax, values, fit, f"C{k + 1}", f"NTH p = {order}")
            ylabel = f"‖K2(t) − K2(0)‖∞ at {time_symbol(ds)} = {float(ds.time[-1]):g}"
            _log_axes(ax, "width m", ylabel, floor, ds["width"].values, legend_title=SLOPES_LEGEND)
            ax.set_title(series_label(selection) if selection else "", fontsize=9)
    figure.suptitle(f"NTK drift against width{note}", fontsize=10)
    return figure


def resnet_vs_ffnet(ds: xr.Dataset, fits: xr.Dataset):
    """The ratio E_p(FFNet)/E_p(ResNet) at t1 against width, per the other
    swept dims. With n_train swept the comparison is the width needed
    against n instead (:func:`required_width_vs_n`): None."""
    if "architecture" not in ds.dims or ds.sizes["architecture"] < 2 or ds.sizes.get("n_train", 1) > 1:
        return None
    orders = ds["order"].values.tolist()
    others = [d for d in FACET_DIMS if d in ds.dims and d not in ("architecture", "n_train")]
    figure, axes = _panels(1, len(orders))
    mean = geometric_mean(ds["truncation_error"].isel(time=-1))
    if not {"ffnet", "resnet"} <= set(ds["architecture"].values.tolist()):
        return None
    ratio = mean.sel(architecture="ffnet") / mean.sel(architecture="resnet")
    for j, order in enumerate(orders):
        ax = axes[0, j]
        for k, line in enumerate(selections(ds, others) or [{}]):
            ax.plot(ds["width"], select(ratio, {**line, "order": order}), "o-", ms=4, color=f"C{k % 10}",
                    label=series_label(line) if line else "FFNet / ResNet")
        ax.axhline(1.0, color="k", lw=0.8)
        _log_axes(ax, "width m", f"E_{order} FFNet / E_{order} ResNet at {time_symbol(ds)} = {float(ds.time[-1]):g}",
                  ticks=ds["width"].values)
        ax.set_title(f"p = {order}", fontsize=9)
    figure.suptitle("FFNet over ResNet truncation error (seed geometric means)", fontsize=10)
    return figure


def _required_width_panels(ds: xr.Dataset, fits: xr.Dataset, dim: str, lines_over: Sequence[str], title: str):
    """Required width (``width_at_tolerance``, markers with the bootstrap
    interval) against ``dim`` (log-log), one panel per order, one line per
    combination of ``lines_over`` (colour) and architecture (solid ResNet,
    dashed FFNet), with the fitted power law over the values it was fitted
    on (``<prefix>_exponent…`` of :func:`nth_dynamics.analysis.required_width_fits`)
    and n³, n⁴ guides for n. A crossing whose cells were computed in the
    reduced basis (``required_width_reduced``) is ringed black
    (:data:`REDUCED_LABEL`)."""
    prefix = {"n_train": "n_exponent", "depth": "depth_exponent"}[dim]
    if (ds.sizes.get(dim, 1) < 2 or "width_at_tolerance" not in fits or f"{prefix}_intercept" not in fits
            or not any_finite(fits["width_at_tolerance"])):
        return None
    orders = ds["order"].values.tolist()
    x = fits[dim].values.astype(float)
    figure, axes = _panels(1, len(orders))
    colored = selections(ds, [d for d in lines_over if d != dim])
    architectures = selections(ds, _line_dims(ds)) or [{}]
    from matplotlib import colormaps

    palette = colormaps["viridis"](np.linspace(0, 0.85, max(len(colored), 1)))
    for j, order in enumerate(orders):
        ax = axes[0, j]
        reduced_points: list[np.ndarray] = []  # one legend entry per panel
        for k, group in enumerate(colored or [{}]):
            for architecture in architectures:
                if repeats_ffnet(ds, {**group, **architecture}):
                    continue
                selection = {**group, **architecture, "order": order}
                if "truncation_error" in ds and not any_finite(select(ds["truncation_error"], selection)):
                    continue  # no part of a combination ran this series: nothing to draw or list
                width = select(fits["width_at_tolerance"], selection)
                low = select(fits["width_at_tolerance_low"], selection).values
                high = select(fits["width_at_tolerance_high"], selection).values
                with np.errstate(invalid="ignore"):
                    bars = np.array([width.values - low, high - width.values])
                bars = np.where(np.isfinite(bars) & (bars >= 0), bars, 0.0)
                style = "--" if architecture.get("architecture") == "ffnet" else "-"
                marker = "s" if architecture.get("architecture") == "ffnet" else "o"
                color = palette[k] if colored else _color(architecture, 0)
                exponent = float(select(fits[prefix], selection))
                label = series_label({**architecture, **group}) or "required width"
                if not any_finite(width):
                    label += ": not crossed within the swept widths"
                elif np.isfinite(exponent):
                    e_low, e_high = (float(select(fits[f"{prefix}_{end}"], selection)) for end in ("low", "high"))
                    label += f": {exponent:.2f}" + (f" [{e_low:.2f}, {e_high:.2f}]" if np.isfinite(e_low) else "")
                ax.errorbar(x, width.values, yerr=bars, fmt=marker, ms=4, capsize=2, color=color, label=label,
                            mfc="none" if marker == "s" else color)
                if "required_width_reduced" in fits:
                    on_reduced = np.asarray(select(fits["required_width_reduced"], selection).values, dtype=bool)
                    on_reduced = on_reduced & np.isfinite(width.values)
                    if on_reduced.any():
                        reduced_points.append(on_reduced)
                        ax.plot(x[on_reduced], width.values[on_reduced], "D", ms=9, mfc="none", mec="k", mew=0.8,
                                zorder=3, label=None if len(reduced_points) > 1 else REDUCED_LABEL)
                if np.isfinite(exponent):
                    lo = float(select(fits[f"{prefix}_range_min"], selection))
                    hi = float(select(fits[f"{prefix}_range_max"], selection))
                    grid = np.geomspace(lo, hi, 20)
                    intercept = float(select(fits[f"{prefix}_intercept"], selection))
                    ax.plot(grid, np.exp(intercept + exponent * np.log(grid)), style, color=color, lw=1.2)
        finite = select(fits["width_at_tolerance"], {"order": order}).values
        finite = finite[np.isfinite(finite)]
        if dim == "n_train" and finite.size:
            # slope guides through the middle of the data, clipped to its range: the bounds are sufficient
            # widths of their own (upper bounds), so only their slopes are comparable with the data
            anchor, centre = np.exp(np.log(finite).mean()), np.exp(np.log(x).mean())
            for power, ls in ((3, ":"), (4, "-.")):
                bound = "LLY's ResNet bound" if power == 3 else "earlier FFNet bounds"
                ax.plot(x, anchor * (x / centre) ** power, color="0.5", ls=ls, lw=1, label=f"slope n^{power} ({bound})")
            ax.set_ylim(finite.min() / 3, finite.max() * 3)
        tolerance = float(select(fits["tolerance"], {"order": order}).max())
        xlabel = "training points n" if dim == "n_train" else "depth L"
        if _log_axes(ax, xlabel, f"width at max_t E_{order} = {tolerance:.0e}", ticks=x):
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        ax.set_title(f"p = {order}", fontsize=9)
    # room on the right for the legends: one per panel, beside it
    width, height = figure.get_size_inches()
    figure.set_size_inches(width * 1.8, height + 0.3)  # and on top for the three lines of the title
    figure.subplots_adjust(left=1.0 / (1.8 * width), right=1 - 2.9 / (1.8 * width), wspace=1.4,
                           top=1 - 1.0 / (height + 0.3))
    figure.suptitle(title, fontsize=9)
    return figure


REDUCED_LABEL = "reduced basis (hierarchy.basis: reduced): an approximation"
"""The legend entry of the ring around a crossing that rests on reduced-basis cells."""


def required_width_vs_n(ds: xr.Dataset, fits: xr.Dataset):
    """With n_train swept: the width at which max_t E_p falls to the
    tolerance against n, every architecture and depth, with the bootstrap
    intervals and the fitted exponent in n."""
    return _required_width_panels(
        ds, fits, "n_train", [d for d in FACET_DIMS if d in ds.dims and d != "architecture"],
        "Width needed for a tolerance of max_t E_p against n\n(interpolated between the swept widths; "
        "bars: bootstrap interval over seeds)\nResNet: circles, solid fit; FFNet: squares, dashed fit; "
        "legend: exponent in n [interval]",
    )


def required_width_vs_depth(ds: xr.Dataset, fits: xr.Dataset):
    """With depth swept: the width at which max_t E_p falls to the tolerance
    against depth, every architecture and n, with the fitted exponent in depth
    (a power law in L: an approximation, see ``report.required_width``)."""
    return _required_width_panels(
        ds, fits, "depth", [d for d in FACET_DIMS if d in ds.dims and d != "architecture"],
        "Width needed for a tolerance of max_t E_p against depth\n(interpolated; bars: bootstrap interval over "
        "seeds)\nResNet: circles, solid fit; FFNet: squares, dashed fit; legend: exponent in depth [interval]",
    )


def _size_label(quantity: str, ds: xr.Dataset) -> str:
    if quantity.startswith("E_"):
        return f"max_{time_symbol(ds)} E_{quantity[2:]}"
    return f"max_{time_symbol(ds)} ‖K2 − K2₀‖∞ / max|K2₀|"


def depth_over_width(ds: xr.Dataset, fits: xr.Dataset):
    """With depth and width swept at fixed n: max_t E_p and the relative NTK
    drift of the reference (columns) against L/m, log–log, one row per series
    (architecture, activation, …): seed geometric means with their bootstrap
    interval, coloured by depth; the fitted exp(c + βL/m) (solid) and, through
    its value at the smallest L/m, Hanin & Nica's β = 5 (dashed)."""
    fit_all = analysis.depth_over_width_fits(fits)
    if fit_all is None or not any_finite(fit_all["size"]):
        return None
    quantities = fit_all["quantity"].values.tolist()
    rows = selections(fit_all["size"], [d for d in fit_all["size"].dims if d not in ("quantity", "depth", "width")])
    note = f" (first {MAX_ROWS} of {len(rows)} rows)" if len(rows) > MAX_ROWS else ""
    rows = rows[:MAX_ROWS] or [{}]
    depths = fit_all["depth"].values.tolist()
    from matplotlib import colormaps

    colors = colormaps["viridis"](np.linspace(0, 0.9, len(depths)))
    figure, axes = _panels(len(rows), len(quantities))
    for i, row in enumerate(rows):
        for j, quantity in enumerate(quantities):
            ax = axes[i, j]
            fit = select(fit_all, {**row, "quantity": quantity})
            for depth, color in zip(depths, colors):
                one = fit.sel(depth=depth)
                size = one["size"].values
                with np.errstate(invalid="ignore"):
                    bars = np.array([size - one["size_low"].values, one["size_high"].values - size])
                bars = np.where(np.isfinite(bars) & (bars >= 0), bars, 0.0)
                ax.errorbar(one["ratio"].values, size, yerr=bars, fmt="o", ms=4, capsize=2, color=color,
                            label=f"L = {depth}")
            beta, intercept = float(fit["beta"]), float(fit["beta_intercept"])
            fitted = fit["ratio"].values[np.isfinite(fit["size"].values)]
            if np.isfinite(beta) and fitted.size:
                x = np.geomspace(fitted.min(), fitted.max(), 50)
                low, high = float(fit["beta_low"]), float(fit["beta_high"])
                interval = f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) else ""
                ax.plot(x, np.exp(intercept + beta * x), "k-", lw=1.2, label=f"exp(βL/m), β = {beta:.2f}{interval}")
                start = intercept + beta * x[0]
                guide = analysis.HANIN_NICA_BETA
                ax.plot(x, np.exp(start + guide * (x - x[0])), "--", color="0.5", lw=1,
                        label=f"β = {guide:g} (Hanin & Nica, ReLU FFNet)")
            _log_axes(ax, "depth / width L/m", _size_label(quantity, ds))
            verdict = str(fit["preferred"].values)
            ratio = float(fit["residual_ratio"])
            blown = int((fit["blown_up_seeds"] > 0).sum())
            title = f"{series_label(row)}; {quantity}" if row else quantity
            title += f"\nbetter law: {verdict} (residual ratio {ratio:.2f})" if np.isfinite(ratio) else ""
            title += f"; {blown} cells blew up" if blown else ""
            ax.set_title(title, fontsize=8)
    figure.suptitle("Finite-width corrections against depth/width (seed geometric means, bars: bootstrap interval; "
                    f"solid: fitted exp(βL/m)){note}", fontsize=9)
    return figure


def error_vs_output_scale(ds: xr.Dataset, fits: xr.Dataset):
    """max_t E_p against the output scale α (docs/theory.md §9), one panel
    per order, lines per width, with the fits of
    :func:`~nth_dynamics.analysis.laziness_fits` (over every α; failed
    solves and the floor left out) and the predicted lazy slope −(p − 1);
    the mean-field scale α = m^(−1/2) of each width marked on the axis."""
    if ds.sizes.get("output_scale", 1) < 2 or "truncation_error" not in ds or not any_finite(ds["truncation_error"]):
        return None
    fit_all = analysis.laziness_fits(ds)
    worst = ds["truncation_error"].max("time")
    rows = selections(ds, [d for d in _row_dims(ds) if d != "output_scale"]) or [{}]
    note = f" (first {MAX_ROWS} of {len(rows)} rows)" if len(rows) > MAX_ROWS else ""
    rows = rows[:MAX_ROWS]
    orders = ds["order"].values.tolist()
    floor = analysis.error_floor(ds)
    figure, axes = _panels(len(rows), len(orders))
    for i, row in enumerate(rows):
        for j, order in enumerate(orders):
            ax = axes[i, j]
            for k, width in enumerate(ds["width"].values.tolist()):
                selection = {**row, "order": order, "width": width}
                _draw_series(ax, select(worst, selection), select(fit_all, selection), f"C{k}", f"m = {width}",
                             dim="output_scale")
                ax.axvline(width ** -0.5, color=f"C{k}", ls=":", lw=0.8)
            _log_axes(ax, "output scale α (dotted: α = m^(−1/2))", f"max_t E_{order}", floor,
                      legend_title=SLOPES_LEGEND)
            ax.set_title(f"p = {order}" + (f"; {series_label(row)}" if row else ""), fontsize=9)
    figure.suptitle(f"Truncation error against the laziness scale (seed geometric mean; bars: seed range){note}",
                    fontsize=10)
    return figure


FIGURES = {
    "error_vs_width": error_vs_width,
    "test_error_vs_width": error_vs_width_test_points,
    "width_slope_vs_time": width_slope_vs_time,
    "error_vs_time": error_vs_time,
    "kernel_magnitude_vs_width": kernel_magnitude_vs_width,
    "ntk_drift_vs_width": ntk_drift_vs_width,
    "resnet_vs_ffnet": resnet_vs_ffnet,
    "required_width_vs_n": required_width_vs_n,
    "required_width_vs_depth": required_width_vs_depth,
    "depth_over_width": depth_over_width,
    "error_vs_output_scale": error_vs_output_scale,
}
"""File stem → figure function (returns None when its data are absent)."""
