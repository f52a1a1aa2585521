"""The width an error tolerance needs: where the seed-mean error first falls to
it (interpolated between the swept widths, or on the fitted power law), with
bootstrap intervals over seeds, and its growth with n (docs/theory.md §4)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import xarray as xr

from .power_law import (
    BOOTSTRAP_SEED,
    CONFIDENCE,
    RESAMPLES,
    _interval,
    _least_squares,
    resample_counts,
)


def width_at_tolerance(error: xr.DataArray, tolerance, dim: str = "width") -> xr.DataArray:
    """The width at which ``error`` (no sample dim: e.g. a seed mean) first falls
    to ``tolerance``, interpolated linearly in log error against log width
    between the last width above it and the first at or below it. NaN when
    the error is already below the tolerance at the smallest width or never
    reaches it (the crossing is outside the swept widths)."""
    error = error.transpose(..., dim)
    tolerance = xr.DataArray(tolerance).broadcast_like(error.isel({dim: 0}, drop=True))
    tolerance = tolerance.transpose(*error.isel({dim: 0}, drop=True).dims)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = _crossing(np.log(error[dim].values.astype(float)), np.log(error.values), np.log(tolerance.values))
    return error.isel({dim: 0}, drop=True).copy(data=crossing).assign_attrs(
        long_name="width at which the error first falls to the tolerance", units="1"
    )


def _crossing(log_width: np.ndarray, log_error: np.ndarray, log_tolerance: np.ndarray | np.number) -> np.ndarray:
    """Width of the first crossing of log_tolerance (…) by log_error (…, width)."""
    below = log_error <= log_tolerance[..., None]
    first = np.argmax(below, axis=-1)
    found = below.any(axis=-1) & (first > 0)
    after = np.maximum(first, 1)
    e0 = np.take_along_axis(log_error, (after - 1)[..., None], axis=-1)[..., 0]
    e1 = np.take_along_axis(log_error, after[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = (log_tolerance - e0) / (e1 - e0)
    log_m = log_width[after - 1] + fraction * (log_width[after] - log_width[after - 1])
    return np.where(found & np.isfinite(e0), np.exp(log_m), np.nan)


def default_tolerance(error: xr.DataArray, keep: tuple[str, ...] = ("order",)) -> xr.DataArray:
    """A tolerance per ``keep`` coordinate (e.g. per order) that as many series
    as possible cross inside the swept widths: each series (every other
    combination of dims, seed-mean error against width) crosses the levels
    between its error at the smallest width and its lowest error at a larger
    one; the tolerance is the middle of the levels most series cross, rounded
    to one significant digit. One tolerance is shared by all series, so that
    their widths compare."""
    log_error = np.log(error.where(error > 0))
    if "seed" in log_error.dims:
        log_error = log_error.mean("seed")
    others = [d for d in log_error.dims if d not in keep and d != "width"]
    start = log_error.isel(width=0, drop=True)
    lowest = log_error.isel(width=slice(1, None)).min("width")
    if not others:
        start, lowest = start.expand_dims("series"), lowest.expand_dims("series")
        others = ["series"]
    elif len(others) > 1:
        start, lowest = start.stack(series=others), lowest.stack(series=others)
        others = ["series"]
    best = xr.apply_ufunc(_most_crossed, start, lowest, input_core_dims=[others, others], vectorize=True)
    rounded = xr.apply_ufunc(_one_digit, best)
    return rounded.assign_attrs(long_name="error tolerance of width_at_tolerance", units="1")


def _most_crossed(start: np.ndarray, lowest: np.ndarray) -> float:
    """The level (exp) crossed by most of the ranges lowest ≤ level < start."""
    usable = np.isfinite(start) & np.isfinite(lowest) & (lowest < start)
    if not usable.any():
        return np.nan
    start, lowest = start[usable], lowest[usable]
    levels = np.linspace(lowest.min(), start.max(), 401)
    crossed = ((lowest[:, None] <= levels) & (levels < start[:, None])).sum(axis=0)
    return float(np.exp(np.median(levels[crossed == crossed.max()])))


def _one_digit(value):
    value = np.asarray(value, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log10(value))
        return np.round(value / 10**exponent) * 10**exponent


def tolerance_widths(
    error: xr.DataArray,
    tolerance,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> xr.Dataset:
    """The width an error tolerance needs, and its growth with n.

    Args:
        error: one error per network, dims (…, width, seed), e.g. the largest
            E_p over time; with an ``n_train`` dim the exponent in n is fitted.
        tolerance: a number or a DataArray over some of the other dims (order).
            An error of +inf (an NTH solve that did not reach the end,
            ``nth_failed``) is above every tolerance: the interpolated width
            is NaN when its bracket starts at such a width, and the fitted
            law leaves those widths out.

    Returns:
        ``width_at_tolerance`` (…) of the seed geometric mean (see
        :func:`width_at_tolerance`) with ``width_at_tolerance_low`` /
        ``_high`` (bootstrap over seeds), ``tolerance``; with ``n_train``:
        ``n_exponent`` (slope of log m* against log n over the n where m* is
        bracketed), ``n_exponent_low`` / ``_high``, ``n_exponent_points``.
        The same with the suffix ``_fit`` for the width at which the power
        law fitted to the seed-mean error over all widths reaches the
        tolerance: defined for every series, also where the crossing lies
        outside the swept widths (the width a tolerance needs can grow like
        n³, faster than any sweep's range), at the price of extrapolating.
    """
    if "seed" not in error.dims:
        error = error.expand_dims("seed")
    error = error.transpose(..., "width", "seed")
    samples = error.sizes["seed"]
    series = error.isel(width=0, seed=0, drop=True)
    tolerance = xr.DataArray(tolerance)
    log_width = np.log(error["width"].values.astype(float))
    log_tolerance = np.log(tolerance.broadcast_like(series).transpose(*series.dims).values)
    mean, boot = seed_mean_log_error(error.values, resamples, seed)
    level = f"{100 * confidence:g} %"

    def variable(array, long_name, template=series):
        return template.copy(data=array).assign_attrs(long_name=long_name, units="1")

    out = xr.Dataset({"tolerance": tolerance.assign_attrs(long_name="error tolerance", units="1")})
    how = {
        "": ("first falls to the tolerance (interpolated between the swept widths)", _crossing),
        "_fit": ("reaches the tolerance on the power law fitted over all widths (extrapolated beyond them)",
                 _fitted_crossing),
    }
    for suffix, (meaning, crossing) in how.items():
        width = crossing(log_width, mean, log_tolerance)
        boot_width = crossing(log_width, boot, log_tolerance)
        low, high = _interval(boot_width, confidence) if samples > 1 else (np.full_like(width, np.nan),) * 2
        name = f"width_at_tolerance{suffix}"
        out[name] = variable(width, f"width at which the seed-mean error {meaning}")
        out[f"{name}_low"] = variable(low, f"lower end of its {level} bootstrap interval")
        out[f"{name}_high"] = variable(high, f"upper end of its {level} bootstrap interval")
        if "n_train" in series.dims and series.sizes["n_train"] > 1:
            axis = series.dims.index("n_train")
            log_n = np.log(series["n_train"].values.astype(float))
            fit = fit_exponent(log_n, np.moveaxis(width, axis, -1), np.moveaxis(boot_width, axis + 1, -1),
                               confidence if samples > 1 else None)
            reduced = series.isel(n_train=0, drop=True)
            out[f"n_exponent{suffix}"] = variable(fit.exponent, f"fitted exponent in n of {name}", reduced)
            out[f"n_exponent{suffix}_low"] = variable(fit.low, f"lower end of its {level} bootstrap interval",
                                                      reduced)
            out[f"n_exponent{suffix}_high"] = variable(fit.high, f"upper end of its {level} bootstrap interval",
                                                       reduced)
            out[f"n_exponent{suffix}_points"] = variable(fit.valid.sum(axis=-1), "values of n in the fit", reduced)
    return out


def seed_mean_log_error(error: np.ndarray, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED):
    """The seed mean of log ``error`` (…, width, seed) and its bootstrap
    resamples (resample, …, width): whole seeds drawn with replacement, the
    same draw at every width and series (:func:`resample_counts`). A width
    where some seed is NaN or ≤ 0 is NaN; +inf (an NTH solve that did not
    reach the end, ``hierarchy.on_failure: record``) makes the mean of every
    sample holding it +inf, above every tolerance."""
    samples = error.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_error = np.log(np.where(error > 0, error, np.nan))
    point_valid = ~np.any(np.isnan(log_error), axis=-1)
    failed = np.isposinf(log_error)
    finite = np.where(point_valid[..., None] & ~failed, log_error, 0.0)
    mean = np.where(point_valid, np.where(failed.any(axis=-1), np.inf, finite.mean(axis=-1)), np.nan)
    counts = resample_counts(samples, resamples, seed)
    boot_failed = np.moveaxis(failed.astype(float) @ counts.T, -1, 0) > 0
    boot = np.where(boot_failed, np.inf, np.moveaxis(finite @ counts.T / samples, -1, 0))
    return mean, np.where(point_valid, boot, np.nan)


class ExponentFit(NamedTuple):
    """The exponent of a width in a coordinate (:func:`fit_exponent`); arrays of the series' shape."""

    exponent: np.ndarray
    intercept: np.ndarray
    low: np.ndarray
    high: np.ndarray
    valid: np.ndarray


def fit_exponent(log_x: np.ndarray, width: np.ndarray, boot_width: np.ndarray, confidence: float | None) -> ExponentFit:
    """The least-squares slope of log ``width`` (…, x) against ``log_x`` over
    the x where it is finite (NaN: not bracketed), with the percentile
    interval of the same fit of each bootstrap resample ``boot_width``
    (resample, …, x). A resample missing one of those points (it does not
    cross there) would be a fit over other x: it is left out. ``confidence``
    None (one seed): no interval."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_m, log_boot = np.log(width), np.log(boot_width)
    valid = np.isfinite(log_m)
    line = _least_squares(log_x, np.where(valid, log_m, 0.0), valid)
    valid_boot = valid & np.isfinite(log_boot)
    boot = _least_squares(log_x, np.where(valid_boot, log_boot, 0.0), valid_boot).slope
    boot = np.where(valid_boot.sum(axis=-1) == valid.sum(axis=-1), boot, np.nan)
    if confidence is None:
        low = high = np.full_like(line.slope, np.nan)
    else:
        low, high = _interval(boot, confidence)
    return ExponentFit(line.slope, line.intercept, low, high, valid)


def _fitted_crossing(
    log_width: np.ndarray, log_error: np.ndarray, log_tolerance: np.ndarray | np.number
) -> np.ndarray:
    """Width at which the power law fitted to log_error (…, width) against
    log_width reaches log_tolerance (…); NaN unless the law falls."""
    valid = np.isfinite(log_error)
    slope, intercept = _least_squares(log_width, np.where(valid, log_error, 0.0), valid)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.where(slope < 0, np.exp((log_tolerance - intercept) / slope), np.nan)
