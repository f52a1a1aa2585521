"""Finite-width corrections against depth over width (issue 11,
``scenarios/depth_over_width.yaml``): at fixed n, per architecture, the
largest truncation errors max_t E_p(t) and the largest relative drift of
the network's NTK, max_t ‖K2_t − K2₀‖∞ / max|K2₀| (the reference training:
the network itself), read against L/m on a depth × width grid.

Two laws are fitted to the seed mean of log E over every (L, m) cell of a
series, each with two parameters:

* (i) ``log E = c + β · L/m``: Hanin & Nica's exp(βL/m), with β ≈ 5 for
  the NTK of fully connected ReLU networks (:data:`HANIN_NICA_BETA`); E a
  function of L/m alone;
* (ii) ``log E = c + slope · log m``: a power law in m alone, the same at
  every depth (what a ResNet with α = L^(−1/2) should show: no growth with
  L at fixed m); its slope is also fitted at each depth apart
  (``width_slope``, :func:`nth_dynamics.report.power_law.fit_power_law`).

Which describes the data: the ratio of their residuals (root mean square
of log E about the fitted line, ``residual_ratio`` = (i)/(ii)), with a
bootstrap interval; (i) is preferred when the interval lies below 1, (ii)
when above (``preferred``: ``L/m``, ``m`` or ``undecided``). The same
question without a model: cells of the grid with the same L/m at different
(L, m) collapse onto one value if E is a function of L/m
(``spread_equal_ratio``: the pooled standard deviation of log E within
groups of equal L/m), and cells with the same m at different L if E is a
function of m (``spread_equal_width``); ``collapse`` is their ratio (≪ 1:
L/m, ≫ 1: m, ≈ 1 with both spreads above ``seed_error``: L and m apart).

Every interval is a percentile bootstrap over seeds: whole seeds drawn with
replacement, the same draw for every cell
(:func:`nth_dynamics.report.tolerance.seed_mean_log_error`). A resample that
repeats seeds scatters more about either law, so the intervals of the
residual ratio and of the collapse lean toward 1 (the fitted value can sit
at their edge): the verdict errs toward ``undecided``. A cell enters
the fits only if every seed's value is finite and above the solver floor
(:func:`nth_dynamics.analysis.error_floor`); a truncation that blew up
(``nth_failed``, E = inf) is counted in ``blown_up_seeds`` and left out.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .._fits import fit_line
from .power_law import BOOTSTRAP_SEED, CONFIDENCE, RESAMPLES, _interval, fit_power_law
from .tolerance import seed_mean_log_error

HANIN_NICA_BETA = 5.0
"""β of exp(βL/m), Hanin & Nica's finite-width correction of the NTK of
fully connected ReLU networks (a guide in the figure, not a fitted value)."""
DRIFT = "ntk_drift"
"""The ``quantity`` label of the relative NTK drift of the reference."""


def applies(ds: xr.Dataset) -> bool:
    """Whether ``ds`` is a depth × width grid at fixed n (two depths and two
    widths or more, n_train not swept): what :func:`depth_over_width` reads."""
    return (ds.sizes.get("depth", 1) > 1 and ds.sizes.get("width", 1) > 1 and ds.sizes.get("n_train", 1) == 1
            and "truncation_error" in ds)


def correction_sizes(ds: xr.DataArray | xr.Dataset, floor: float = 0.0) -> xr.DataArray:
    """Per cell and seed, over the dim ``quantity``: ``E_p`` = max_t E_p(t)
    for each order p, and ``ntk_drift`` = max_t ‖K2_t − K2₀‖∞ / max|K2₀| of
    the reference (when the Dataset has the drift and K2's magnitude).
    Values at or below ``floor`` (solver noise: the absolute error or
    drift) are NaN; inf (a truncation that blew up) stays inf."""
    error = ds["truncation_error"]
    error = error.where(~(error <= floor)).max("time")
    parts = [error.sel(order=p, drop=True) for p in ds["order"].values.tolist()]
    labels = [f"E_{p}" for p in ds["order"].values.tolist()]
    if "ntk_drift_ref" in ds and "kernel_magnitude" in ds and 2 in ds["rank"].values:
        drift = ds["ntk_drift_ref"]
        relative = drift.where(~(drift <= floor)).max("time") / ds["kernel_magnitude"].sel(rank=2, drop=True)
        parts.append(relative)
        labels.append(DRIFT)
    sizes = xr.concat(parts, dim="quantity", coords="minimal", compat="override", join="outer")
    sizes = sizes.assign_coords(quantity=labels)
    return sizes.transpose("quantity", ..., "depth", "width", "seed", missing_dims="ignore").rename("correction_size")


def depth_over_width(
    ds: xr.Dataset,
    *,
    floor: float | None = None,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> xr.Dataset:
    """The sizes of :func:`correction_sizes` against L/m and both fits (see
    the module docstring), per series: ``quantity`` and every dim other
    than depth, width and seed (architecture, activation, …).

    Args:
        ds: a result of ``simulate`` swept over depth and width, n fixed
            (:func:`applies`); another swept n_train is one more series.
        floor: values at or below it are left out; None: the Dataset's
            :func:`nth_dynamics.analysis.error_floor`.
        resamples, confidence, seed: the bootstrap over seeds.

    Returns:
        A Dataset with, per cell (…, depth, width): ``size`` (seed
        geometric mean), ``size_low`` / ``_high`` (its bootstrap
        interval), ``blown_up_seeds``, ``ratio`` (L/m); per
        series and depth: ``width_slope``, ``_low``, ``_high``; per
        series: ``beta``, ``beta_low``, ``beta_high``, ``beta_intercept``,
        ``beta_residual`` (law i), ``ratio_exponent`` with ``_low``,
        ``_high``, ``_intercept``, ``_residual`` (law iii, a power law in
        L/m), ``pooled_width_slope``, ``_low``,
        ``_high``, ``pooled_width_intercept``, ``pooled_width_residual``
        (law ii), ``residual_ratio`` with ``_low`` / ``_high``,
        ``preferred``, ``spread_equal_ratio``, ``spread_equal_width``,
        ``collapse`` with ``_low`` / ``_high``, ``seed_error``, ``cells``
        (cells in the fits).

    Raises:
        ValueError: no depth or width sweep of two values or more.
    """
    if ds.sizes.get("depth", 1) < 2 or ds.sizes.get("width", 1) < 2 or "truncation_error" not in ds:
        raise ValueError("depth_over_width: needs truncation_error swept over two depths and two widths or more")
    if floor is None:
        from .analysis import error_floor  # analysis re-exports this module

        floor = error_floor(ds)
    sizes = correction_sizes(ds, floor)
    if "seed" not in sizes.dims:
        sizes = sizes.expand_dims("seed", axis=-1)
    stacked = sizes.stack(cell=("depth", "width")).transpose(..., "cell", "seed")
    data = stacked.values.astype(float)
    samples = data.shape[-1]
    depth = stacked["depth"].values.astype(float)
    width = stacked["width"].values.astype(float)
    ratio, log_width = depth / width, np.log(width)
    valid = np.all(np.isfinite(data) & (data > 0), axis=-1)
    mean, boot = seed_mean_log_error(np.where(valid[..., None], data, np.nan), resamples, seed)
    with_interval = samples > 1

    def interval(draws):
        if not with_interval:
            nan = np.full(draws.shape[1:], np.nan)
            return nan, nan
        return _interval(draws, confidence)

    law_ratio, boot_ratio = fit_line(ratio, mean, valid), fit_line(ratio, boot, valid)
    law_width, boot_width = fit_line(log_width, mean, valid), fit_line(log_width, boot, valid)
    # law (iii): a power law in L/m, what Hanin & Nica's exp(βL/m) − 1 is while βL/m ≪ 1
    log_ratio = np.log(ratio)
    law_power, boot_power = fit_line(log_ratio, mean, valid), fit_line(log_ratio, boot, valid)
    power_low, power_high = interval(boot_power.slope)
    residual_power = _residual(log_ratio, mean, law_power, valid)
    beta_low, beta_high = interval(boot_ratio.slope)
    slope_low, slope_high = interval(boot_width.slope)
    residual_ratio = _residual(ratio, mean, law_ratio, valid)
    residual_width = _residual(log_width, mean, law_width, valid)
    boot_residuals = _residual(ratio, boot, boot_ratio, valid) / _residual(log_width, boot, boot_width, valid)
    ratio_low, ratio_high = interval(boot_residuals)
    with np.errstate(invalid="ignore", divide="ignore"):
        residual_quotient = residual_ratio / residual_width
    preferred = np.where(ratio_high < 1, "L/m", np.where(ratio_low > 1, "m", "undecided")).astype("<U9")

    ratio_groups = np.unique(np.round(np.log2(ratio), 9), return_inverse=True)[1]
    width_groups = np.unique(width, return_inverse=True)[1]
    spread_ratio, spread_width = _pooled_spread(mean, valid, ratio_groups), _pooled_spread(mean, valid, width_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        collapse = spread_ratio / spread_width
        boot_collapse = _pooled_spread(boot, valid, ratio_groups) / _pooled_spread(boot, valid, width_groups)
    collapse_low, collapse_high = interval(boot_collapse)
    seed_error = _seed_error(data, valid)

    series = stacked.isel(cell=0, seed=0, drop=True)
    level = f"{100 * confidence:g} %"

    def per_series(array, long_name):
        return series.copy(data=np.asarray(array)).assign_attrs(long_name=long_name, units="1")

    def per_cell(array, long_name):
        cells = stacked.isel(seed=0, drop=True).copy(data=np.asarray(array))
        return cells.unstack("cell").transpose(..., "depth", "width").assign_attrs(long_name=long_name, units="1")

    size_low, size_high = interval(np.exp(boot))
    blown_up = np.isposinf(data).sum(axis=-1)
    by_depth = fit_power_law(sizes.where(np.isfinite(sizes)), "width", resamples=resamples, confidence=confidence,
                             seed=seed)
    out = xr.Dataset(
        {
            "size": per_cell(np.exp(mean), "seed geometric mean of the correction size (max over t)"),
            "size_low": per_cell(size_low, f"lower end of its {level} bootstrap interval over seeds"),
            "size_high": per_cell(size_high, f"upper end of its {level} bootstrap interval over seeds"),
            "blown_up_seeds": per_cell(blown_up, "seeds whose truncated solve blew up (E = inf; left out)"),
            "ratio": per_cell(np.broadcast_to(ratio, mean.shape), "depth over width L/m"),
            "width_slope": by_depth["slope"].assign_attrs(long_name="slope of log size against log m at this depth"),
            "width_slope_low": by_depth["slope_low"],
            "width_slope_high": by_depth["slope_high"],
            "beta": per_series(law_ratio.slope, "fitted beta of log size = c + beta L/m (Hanin & Nica's exp(beta L/m))"),
            "beta_low": per_series(beta_low, f"lower end of its {level} bootstrap interval"),
            "beta_high": per_series(beta_high, f"upper end of its {level} bootstrap interval"),
            "beta_intercept": per_series(law_ratio.intercept, "fitted c of log size = c + beta L/m"),
            "beta_residual": per_series(residual_ratio, "rms of log size about c + beta L/m"),
            "ratio_exponent": per_series(law_power.slope, "fitted s of log size = c + s log(L/m) (law iii: a power "
                                                          "law in L/m)"),
            "ratio_exponent_low": per_series(power_low, f"lower end of its {level} bootstrap interval"),
            "ratio_exponent_high": per_series(power_high, f"upper end of its {level} bootstrap interval"),
            "ratio_exponent_intercept": per_series(law_power.intercept, "fitted c of log size = c + s log(L/m)"),
            "ratio_exponent_residual": per_series(residual_power, "rms of log size about c + s log(L/m)"),
            "pooled_width_slope": per_series(law_width.slope, "fitted slope of log size = c + slope log m, every "
                                                              "depth together (a power law in m alone)"),
            "pooled_width_slope_low": per_series(slope_low, f"lower end of its {level} bootstrap interval"),
            "pooled_width_slope_high": per_series(slope_high, f"upper end of its {level} bootstrap interval"),
            "pooled_width_intercept": per_series(law_width.intercept, "fitted c of log size = c + slope log m"),
            "pooled_width_residual": per_series(residual_width, "rms of log size about c + slope log m"),
            "residual_ratio": per_series(residual_quotient, "beta_residual / pooled_width_residual (< 1: the law "
                                                            "in L/m fits better)"),
            "residual_ratio_low": per_series(ratio_low, f"lower end of its {level} bootstrap interval"),
            "residual_ratio_high": per_series(ratio_high, f"upper end of its {level} bootstrap interval"),
            "preferred": per_series(preferred, "the law the residual ratio's interval prefers: L/m (exp(beta L/m)), "
                                               "m (power law in m alone) or undecided"),
            "spread_equal_ratio": per_series(spread_ratio, "pooled standard deviation of log size among cells of "
                                                           "equal L/m"),
            "spread_equal_width": per_series(spread_width, "pooled standard deviation of log size among cells of "
                                                           "equal m"),
            "collapse": per_series(collapse, "spread_equal_ratio / spread_equal_width (< 1: a function of L/m)"),
            "collapse_low": per_series(collapse_low, f"lower end of its {level} bootstrap interval"),
            "collapse_high": per_series(collapse_high, f"upper end of its {level} bootstrap interval"),
            "seed_error": per_series(seed_error, "pooled standard error over seeds of the seed-mean log size"),
            "cells": per_series(valid.sum(axis=-1), "cells (depth, width) in the fits"),
        },
        attrs={"resamples": resamples, "confidence": confidence, "bootstrap_seed": seed, "floor": floor,
               "hanin_nica_beta": HANIN_NICA_BETA},
    )
    return out


def _residual(x: np.ndarray, y: np.ndarray, line, valid: np.ndarray) -> np.ndarray:
    """Root mean square of y about the fitted line over the valid points, with
    the two fitted parameters taken off the degrees of freedom."""
    predicted = line.intercept[..., None] + line.slope[..., None] * x
    squared = np.where(valid, (y - predicted) ** 2, 0.0)
    count = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 2, np.sqrt(squared.sum(axis=-1) / (count - 2)), np.nan)


def _pooled_spread(y: np.ndarray, valid: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The pooled standard deviation of y (…, cell) within groups of cells
    (``groups``: the group of each cell), over the groups with two valid
    cells or more: sqrt(Σ_g Σ_i (y_gi − ȳ_g)² / Σ_g (n_g − 1)); NaN if none."""
    one_hot = (groups[:, None] == np.arange(groups.max() + 1)).astype(float)
    weight = valid.astype(float)
    y = np.where(valid, y, 0.0)
    count = weight @ one_hot
    total = (weight * y) @ one_hot
    with np.errstate(invalid="ignore", divide="ignore"):
        group_mean = np.where(count > 0, total / count, 0.0)
        deviation = np.where(valid, y - np.take(group_mean, groups, axis=-1), 0.0)
        squares = (deviation**2) @ one_hot
        used = count >= 2
        dof = np.where(used, count - 1, 0.0).sum(axis=-1)
        return np.where(dof > 0, np.sqrt(np.where(used, squares, 0.0).sum(axis=-1) / dof), np.nan)


def _seed_error(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """sqrt of the mean over valid cells of var_seed(log size) / seeds: the
    scatter a seed-mean log size has from the seeds alone."""
    samples = data.shape[-1]
    if samples < 2:
        return np.full(data.shape[:-2], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        log = np.log(np.where(valid[..., None], data, 1.0))
        variance = np.where(valid, log.var(axis=-1, ddof=1) / samples, 0.0)
        count = valid.sum(axis=-1)
        return np.where(count > 0, np.sqrt(variance.sum(axis=-1) / count), np.nan)


__all__ = ["DRIFT", "HANIN_NICA_BETA", "applies", "correction_sizes", "depth_over_width"]
