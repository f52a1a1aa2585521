"""The text of ``report.md``: the fitted slopes with their bootstrap intervals
next to the predictions of docs/theory.md §4, the small-t exponents, the NTH
solves that stopped early, the widths a tolerance needs, λ_min and the list of
figures; one table row per series (:mod:`nth_dynamics.report.series`).

Cells computed in the reduced basis (docs/theory.md §8) are an approximation:
the report lists them with their error estimates, and every crossing and
exponent that rests on them says so, so that a reader never takes one for
the exact hierarchy's."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import analysis
from .parts import cell_basis
from .required_width import TARGET_DECADES, TARGET_HALF_WIDTH
from .series import (
    FACET_DIMS,
    any_finite,
    format_value,
    geometric_mean,
    select,
    selections,
    series_label,
    time_symbol,
)


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
        (f"- widths: {', '.join(str(w) for w in ds['width'].values.tolist())}; seeds: {seeds}; "
        f"orders p: {', '.join(str(p) for p in ds['order'].values.tolist())}; save times: {ds.sizes['time']} "
        f"up to {time_symbol(ds)}1 = {t1:g}"),
        *([(f"- times τ in units of n/λ_min(K2₀) of each seed (τ = t·λ_min/n, `time.unit: n_over_lambda_min`): "
           f"n/λ_min from {float(ds['time_scale'].min()):.3g} to {float(ds['time_scale'].max()):.3g}")]
          if "time_scale" in ds else []),
        *(f"- {dim}: {', '.join(format_value(v) for v in np.atleast_1d(ds[dim].values).tolist())}"
          for dim in FACET_DIMS if dim in ds.coords),
        (f"- reference: {scenario.get('reference', {}).get('method', '?')}; solver floor (left out of the fits): "
        f"{float(fits.attrs.get('error_floor', 0)):.1e}"),
        (f"- fits: least squares of the seed mean of log E against log m; {level} percentile bootstrap over "
        f"seeds ({fits.attrs.get('resamples')} resamples, NumPy seed {fits.attrs.get('bootstrap_seed')}); "
        f"'agrees': within ±{analysis.SLOPE_TOLERANCE} of the prediction and the interval covers it"),
        "",
    ]
    lines += _parts_lines(ds)
    if seeds < 5:
        lines += [(f"**Only {seeds} seed{'s' * (seeds != 1)}**: E_p varies 2–5× between seeds; fit over 5–8 "
                  "(docs/theory.md §7)."), ""]
    span = np.log10(ds["width"].values.max() / ds["width"].values.min())
    if span < 1.5:
        lines += [f"**The widths span {span:.2f} decades**: fit over ≥ 1.5 decades (docs/theory.md §4, §7).", ""]

    lines += _basis_section(ds)
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
    lines += _depth_over_width_section(fits)
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
    series = selections(fit_all, [d for d in FACET_DIMS if d in fit_all.dims])
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
            fit = select(fit_all, {**selection, **({index_dim: index} if index_dim else {})})
            slope, interval = _format_slope(fit)
            predicted = float(fit["predicted_slope"])
            points = int(fit["fit_points"])
            widths = (f"{float(fit['fit_min_width']):g}–{float(fit['fit_max_width']):g} ({points})"
                      if points else "none")
            span = f"{float(analysis.decades(fit)):.2f}" if points else "—"
            verdict = "yes" if bool(fit["agrees"]) else "**no**"
            verdict = "—" if not np.isfinite(predicted) or slope == "—" else verdict
            rows.append([series_label(selection), *([str(index)] if index_label else []), slope, interval,
                         "—" if not np.isfinite(predicted) else f"{predicted:g}", widths, span, verdict])
            if dropped is not None:
                rank = index + 1
                value = float(select(dropped, {**selection, "rank": rank})) if rank in dropped["rank"] else np.nan
                rows[-1].append("—" if not np.isfinite(value) else f"{value:.2f}")
    lines = [f"## {title}", ""]
    if prediction:
        lines += [f"Predicted (docs/theory.md §4): {prediction}.", ""]
    if dropped is not None:
        lines += [("Last column: the width slope of max|K(p+1)₀|, the first kernel the truncation leaves out "
                  "(E_p starts as t^p/p! times it), where the tower reaches it."), ""]
    return lines + _table(header, rows) + [""]


def _time_section(ds, fits) -> list[str]:
    name = "truncation_error_time_exponent"
    if name not in fits or not any_finite(fits[name]):
        return []
    widths = fits["width"].values.tolist()
    series = selections(fits[name], [d for d in FACET_DIMS if d in fits[name].dims])
    header = ["series", "p", "predicted", *(f"m = {w}" for w in widths)]
    rows = []
    for selection in series:
        for order in fits["order"].values.tolist():
            fit = select(fits, {**selection, "order": order})
            cells = []
            for width in widths:
                one = fit.sel(width=width)
                value = float(one[name])
                cells.append("—" if not np.isfinite(value) else
                             f"{value:.2f} ({float(one['truncation_error_fit_min_time']):.2g}–"
                             f"{float(one['truncation_error_fit_max_time']):.2g})")
            rows.append([series_label(selection), str(order), str(order), *cells])
    small = float(fits.attrs.get("small_time", analysis.SMALL_TIME))
    return [
        "## Growth of E_p at small t",
        "",
        (f"Slope of log E_p against log t over 0 < t ≤ {small:g} (the times used in brackets; errors below the "
        "solver floor are left out). Predicted: E_p ∝ t^p at small t (docs/theory.md §4)."),
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
    for selection in selections(failed, [d for d in FACET_DIMS if d in failed.dims]):
        for order in ds["order"].values.tolist():
            part = select(failed, {**selection, "order": order})
            if not bool(part.any()):
                continue
            by_width = part.sum("seed") if "seed" in part.dims else part.astype(int)
            widths = [f"{int(w)} ({int(k)})" for w, k in zip(np.atleast_1d(by_width["width"].values),
                                                            np.atleast_1d(by_width.values)) if k]
            rows.append([series_label(selection), str(order), ", ".join(widths)])
    total = int(failed.sum())
    return [
        "## NTH solves that stopped early",
        "",
        (f"{total} of {failed.size} truncated solves stopped before the last save time (out of steps, or the step "
        "size collapsed, as when the truncated dynamics blow up): `hierarchy.on_failure: record` kept them, "
        "with E_p = inf from there on. "
        "Fits leave those points out; a tolerance width whose bracket starts at one is —."),
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
                 ("Where the fitted power law of the seed-mean max_t E_p against width reaches the tolerance: "
                 "defined for every series, extrapolated beyond the swept widths.")),
    }
    for suffix, (title, how) in ways.items():
        name = f"width_at_tolerance{suffix}"
        if name not in fits:
            continue
        width = fits[name]
        n_values = fits["n_train"].values.tolist() if "n_train" in width.dims else []
        series = selections(width, [d for d in FACET_DIMS if d in width.dims and d != "n_train"])
        ranged = f"n_exponent{suffix}_decades" in fits  # the interpolated widths: fit range and targets
        reduced = "required_width_reduced" in fits
        header = ["series", "p", "tolerance", *(f"n = {n}" for n in n_values), "exponent in n", "interval",
                  *(["n fitted (decades)", "target met"] if ranged else []), *([_REDUCED_HEADER] if reduced else [])]
        rows = []
        for selection in series:
            for order in fits["order"].values.tolist():
                at = {**selection, "order": order}
                values = np.atleast_1d(select(width, at).values)
                cells = ["—" if not np.isfinite(v) else f"{v:.3g}" for v in values]
                exponent, interval = "—", "—"
                if f"n_exponent{suffix}" in fits:
                    exponent, interval = _exponent_cells(fits, f"n_exponent{suffix}", at)
                    exponent += _dagger(fits, width, at, exponent)
                tolerance = float(select(fits["tolerance"], at))
                rows.append([series_label(selection), str(order), f"{tolerance:.0e}", *cells, exponent, interval])
                if ranged:
                    rows[-1] += _range_cells(fits, "n_exponent", at, order)
                if reduced:
                    rows[-1].append(_reduced_cells(fits, at, "n_train"))
        lines += [
            f"## {title}",
            "",
            f"{how} {_BOUNDS}",
            *(["", (f"Target met: fitted over ≥ {TARGET_DECADES[2]:g} decades of n for p = 2 (≥ "
               f"{TARGET_DECADES[0]:g} for p ≥ 3), interval half-width ≤ {TARGET_HALF_WIDTH:g} (issue 11).")]
              if ranged else []),
            *(["", _REDUCED_NOTE] if reduced else []),
            "",
            *_table(header, rows),
            "",
        ]
        if not suffix and "depth_exponent" in fits:
            lines += _depth_exponent_section(fits)
    if "time_scale" in ds and "n_train" in ds.dims:
        lines += _time_scale_section(ds)
    return lines


_BOUNDS = ("The theory gives sufficient widths, not rates: m ≳ (n/λ)³ to train to zero loss (HY Cor. 2.5; cubic "
           "for ResNets, LLY), quartic in earlier fully connected bounds (docs/theory.md §4). These are upper "
           "bounds: a measured exponent below one does not contradict it; what the measurement tests is the "
           "ordering of the architectures and how each depends on depth.")


def _exponent_cells(fits, name: str, at) -> list[str]:
    """The fitted exponent and its interval, formatted (— where NaN)."""
    value = float(select(fits[name], at))
    low, high = float(select(fits[f"{name}_low"], at)), float(select(fits[f"{name}_high"], at))
    exponent = "—" if not np.isfinite(value) else f"{value:.2f}"
    interval = "—" if not np.isfinite(value * low) else f"[{low:.2f}, {high:.2f}]"
    return [exponent, interval]


def _range_cells(fits, prefix: str, at, order: int) -> list[str]:
    """The range an exponent was fitted over, its decades, and whether the
    issue's targets are met (decades and interval half-width)."""
    decades = float(select(fits[f"{prefix}_decades"], at))
    if not np.isfinite(decades * float(select(fits[prefix], at))):  # no fit: fewer than two values
        return ["—", "—"]
    lo, hi = float(select(fits[f"{prefix}_range_min"], at)), float(select(fits[f"{prefix}_range_max"], at))
    half = 0.5 * (float(select(fits[f"{prefix}_high"], at)) - float(select(fits[f"{prefix}_low"], at)))
    needed = TARGET_DECADES.get(order, TARGET_DECADES[0])
    met = decades >= needed - 1e-9 and np.isfinite(half) and half <= TARGET_HALF_WIDTH
    return [f"{lo:g}–{hi:g} ({decades:.2f})", "yes" if met else "no"]


def _depth_exponent_section(fits) -> list[str]:
    """The exponent of the interpolated required width in depth, per series and n."""
    exponent = fits["depth_exponent"]
    series = selections(exponent, [d for d in FACET_DIMS if d in exponent.dims])
    rows = []
    for selection in series:
        for order in fits["order"].values.tolist():
            at = {**selection, "order": order}
            decades = float(select(fits["depth_exponent_decades"], at))
            fitted = "—" if not np.isfinite(decades * float(select(exponent, at))) else (
                f"{float(select(fits['depth_exponent_range_min'], at)):g}–"
                f"{float(select(fits['depth_exponent_range_max'], at)):g} ({decades:.2f})")
            value, interval = _exponent_cells(fits, "depth_exponent", at)
            value += _dagger(fits, fits["width_at_tolerance"], at, value)
            rows.append([series_label(selection), str(order), value, interval, fitted,
                         *([_reduced_cells(fits, at, "depth")] if "required_width_reduced" in fits else [])])
    return [
        "## Exponent of the required width in depth",
        "",
        ("Least-squares slope of log m* (interpolated, above) against log L over the depths where m* is "
        "bracketed, bootstrap interval over seeds. A power law in L is an approximation (Hanin & Nica: "
        "finite-width corrections of fully connected ReLU networks grow like exp(5L/m))."),
        "",
        *([_REDUCED_NOTE, ""] if "required_width_reduced" in fits else []),
        *_table(["series", "p", "exponent in depth", "interval", "depths fitted (decades)",
                 *([_REDUCED_HEADER] if "required_width_reduced" in fits else [])], rows),
        "",
    ]


_REDUCED_HEADER = "reduced basis (largest basis_error_ratio)"
_REDUCED_NOTE = ("†: fitted over crossings that rest on reduced-basis cells (`hierarchy.basis: reduced`, docs/theory.md "
                 "§8: an approximation, not the exact hierarchy); last column: the values whose cells were reduced, "
                 "and the largest basis error estimate among them over widths and seeds (basis_error / max_t E_p).")


def _reduced_cells(fits, at, dim: str) -> str:
    """The values of ``dim`` whose crossing rests on reduced-basis cells, and
    the largest basis_error_ratio among them; — where none."""
    flag = select(fits["required_width_reduced"], {k: v for k, v in at.items() if k != dim})
    ratio = select(fits["required_width_basis_error_ratio"], {k: v for k, v in at.items() if k != dim})
    if not bool(flag.any()):
        return "—"
    values = flag[dim].values[np.atleast_1d(flag.values)].tolist() if dim in flag.dims else []
    largest = float(ratio.where(flag).max()) if bool(ratio.where(flag).notnull().any()) else np.nan
    symbol = {"n_train": "n", "depth": "L"}.get(dim, dim)
    listed = f"{symbol} = {', '.join(format_value(v) for v in values)}" if values else "all"
    return f"{listed} ({largest:.1e})" if np.isfinite(largest) else f"{listed} (no estimate)"


def _dagger(fits, width: xr.DataArray, at, exponent: str) -> str:
    """"†" when the exponent of this row was fitted over a crossing (a finite
    width) at a value whose cells were reduced."""
    if exponent == "—" or "required_width_reduced" not in fits:
        return ""
    flag = select(fits["required_width_reduced"], at)
    finite = np.isfinite(select(width, at))
    return "†" if bool((flag & finite).any()) else ""


def _parts_lines(ds) -> list[str]:
    """The parts a combined result was made of (``analysis.combine``)."""
    try:
        parts = json.loads(ds.attrs.get("parts", "[]"))
    except (TypeError, ValueError):
        return []
    if not parts:
        return []
    rows = [[f"`{part['file']}`", str(part.get("scenario_name")), f"`{part.get('scenario_sha256')}`",
             " ".join(f"`--set {override}`" for override in part.get("scenario_overrides", [])) or "—",
             str(part.get("basis", "full")), str(part.get("cells")), f"`{part.get('git_commit')}`"] for part in parts]
    return [f"Combined from {len(parts)} parts (`nd.analysis.combine`; NaN where no part ran a cell):", "",
            *_table(["part", "scenario", "scenario sha256", "overrides", "basis", "cells", "git commit"], rows), ""]


def _basis_section(ds) -> list[str]:
    """Which cells were computed in the reduced basis, with their ranks and
    error estimates (every cell of a reduced run; those of its parts in a combination)."""
    label = cell_basis(ds)
    reduced = label == "reduced"
    if not bool(reduced.any()):
        return []
    orders = ds["order"].values.tolist()
    rows = []
    for selection in selections(label, [d for d in FACET_DIMS if d in label.dims]) or [{}]:
        here = select(reduced, selection)
        if not bool(here.any()):
            continue
        widths = here["width"].values[np.atleast_1d(here.values)].tolist() if "width" in here.dims else []
        rank = select(ds["basis_rank"], selection).where(here) if "basis_rank" in ds else None
        low, high = (None, None) if rank is None or not any_finite(rank) else (int(rank.min()), int(rank.max()))
        ranks = "—" if low is None else str(low) if low == high else f"{low}–{high}"
        ratios = []
        for order in orders:
            ratio = select(ds["basis_error_ratio"], {**selection, "order": order}).where(here) \
                if "basis_error_ratio" in ds else None
            ratios.append("—" if ratio is None or not any_finite(ratio) else f"{float(ratio.max()):.1e}")
        rows.append([series_label(selection), ", ".join(str(w) for w in widths) or "all", ranks, *ratios])
    cells = int((label != "").sum())
    return [
        "## Reduced-basis cells",
        "",
        (f"{int(reduced.sum())} of {cells} cells were computed in the reduced basis (`hierarchy.basis: reduced`, "
         "docs/theory.md §8): the hierarchy projected on a basis of rank k ≤ n of the training residual, an "
         "approximation whose own error estimate is stored per cell (`basis_error`; basis_error_ratio = "
         "basis_error / max_t E_p, a cell above 1e-3 is refused when run). max|K(r)₀| for r ≥ 3 is not formed "
         "there (NaN; `projected_kernel_magnitude` holds the projected magnitudes). Every other cell is the full "
         "hierarchy. Crossings and exponents below that rest on reduced cells are marked †."),
        "",
        *_table(["series", "widths", "basis rank k", *(f"largest basis_error_ratio, p = {p}" for p in orders)], rows),
        "",
    ]


def _interval_cell(fit, name: str, digits: int = 2) -> str:
    value = float(fit[name])
    if not np.isfinite(value):
        return "—"
    low, high = float(fit[f"{name}_low"]), float(fit[f"{name}_high"])
    return f"{value:.{digits}f}" + (f" [{low:.{digits}f}, {high:.{digits}f}]" if np.isfinite(low) else "")


def _number(value, digits: int = 3) -> str:
    value = float(value)
    return f"{value:.{digits}f}" if np.isfinite(value) else "—"


def _depth_over_width_section(fits) -> list[str]:
    """The laws against L/m and in m alone (``analysis.depth_over_width``), per series and quantity."""
    fit_all = analysis.depth_over_width_fits(fits)
    if fit_all is None:
        return []
    series = selections(fit_all["beta"], [d for d in fit_all["beta"].dims if d != "quantity"])
    depths = fit_all["depth"].values.tolist()
    rows, slopes = [], []
    for selection in series or [{}]:
        for quantity in fit_all["quantity"].values.tolist():
            fit = select(fit_all, {**selection, "quantity": quantity})
            blown = int((fit["blown_up_seeds"] > 0).sum())
            rows.append([series_label(selection), quantity, _interval_cell(fit, "beta"),
                         _interval_cell(fit, "pooled_width_slope"), _interval_cell(fit, "ratio_exponent"),
                         _number(fit["beta_residual"]), _number(fit["pooled_width_residual"]),
                         _number(fit["ratio_exponent_residual"]), _interval_cell(fit, "residual_ratio"),
                         str(fit["preferred"].values), _interval_cell(fit, "collapse"), _number(fit["seed_error"]),
                         f"{int(fit['cells'])}" + (f" ({blown} blew up)" if blown else "")])
            slopes.append([series_label(selection), quantity,
                           *(_interval_cell(fit.sel(depth=depth), "width_slope") for depth in depths)])
    beta = analysis.HANIN_NICA_BETA
    return [
        "## Finite-width corrections against depth/width",
        "",
        ("max_t E_p and the relative NTK drift of the reference max_t ‖K2_t − K2₀‖∞ / max|K2₀| over the depth × "
        "width grid, seed means of log. Law (i): log E = c + β·L/m (Hanin & Nica: exp(βL/m), β ≈ "
        f"{beta:g} for fully connected ReLU networks); law (ii): log E = c + slope·log m at every depth (a power "
        "law in m alone); law (iii): log E = c + s·log(L/m) (a power law in L/m, which exp(βL/m) − 1 is while "
        "βL/m ≪ 1). Residual: rms of log E about each law; the ratio (i)/(ii) with its bootstrap interval "
        "decides the better law (L/m below 1, m above, else undecided). Collapse: the spread of log E among cells "
        "of equal L/m over that among cells of equal m (≪ 1: a function of L/m; ≫ 1: of m; seed error: the "
        "spread the seeds alone give)."),
        "",
        *_table(["series", "quantity", "β [interval]", "slope in log m, all depths", "exponent in L/m",
                 "residual (i)", "residual (ii)", "residual (iii)", "ratio (i)/(ii)", "better law", "collapse", "seed error", "cells"], rows),
        "",
        "Slope of log E in log m at each depth (the power law at fixed L):",
        "",
        *_table(["series", "quantity", *(f"L = {depth}" for depth in depths)], slopes),
        "",
    ]


def _time_scale_section(ds) -> list[str]:
    """The time scale n/λ_min (seed geometric mean) per series and n, with its exponent in n."""
    time_scale = ds["time_scale"].isel(width=-1) if "width" in ds["time_scale"].dims else ds["time_scale"]
    scale = geometric_mean(time_scale)
    slope = analysis.fit_power_law(time_scale, "n_train")["slope"]  # the fit of the seed-mean log
    n = ds["n_train"].values.astype(float)
    series = selections(scale, [d for d in FACET_DIMS if d in scale.dims and d != "n_train"])
    rows = []
    for selection in series:
        values = np.atleast_1d(select(scale, selection).values)
        rows.append([series_label(selection), *(f"{v:.3g}" for v in values), f"{float(select(slope, selection)):.2f}"])
    return [
        f"## Time scale n/λ_min(K2₀) at width {int(ds['width'][-1])}",
        "",
        ("The save times are in units of n/λ_min of each seed (`time.unit: n_over_lambda_min`); seed geometric "
        "means, and the least-squares exponent in n."),
        "",
        *_table(["series", *(f"n = {int(v)}" for v in n), "exponent in n"], rows),
        "",
    ]


def _lambda_section(ds) -> list[str]:
    if "lambda_min" not in ds:
        return []
    mean = geometric_mean(ds["lambda_min"])
    widths = ds["width"].values.tolist()
    header = ["series", *(f"m = {w}" for w in widths)]
    rows = []
    for selection in selections(mean, [d for d in FACET_DIMS if d in mean.dims]):
        values = select(mean, selection)
        rows.append([series_label(selection), *(f"{float(values.sel(width=w)):.3g}" for w in widths)])
    return ["## λ_min(K2₀) (seed geometric mean)", "", *_table(header, rows), ""]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if header[0] == "series" and all(row[0] == "all" for row in rows):  # nothing swept: no series column
        header, rows = header[1:], [row[1:] for row in rows]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
