"""Scaling-law fits: ``log E = intercept + slope · log m`` with a bootstrap
interval over seeds (docs/theory.md §7), and whether a slope agrees with its
prediction.

For each series (every combination of the dimensions other than the fitted
one and ``seed``: order, time, architecture, depth, n_train, …), the line is
fitted by least squares through the seed means of ``log E`` (geometric means:
E varies 2–5× between seeds, docs/theory.md §7). The confidence interval is a
percentile bootstrap over seeds: the seeds are drawn with replacement (the
same draw at every width), the fit repeated, 1000 times by default, from a
NumPy generator with a fixed seed (reproducible). A point (one width) enters a
fit only if every seed's value there is finite and above the *floor* (values
at or below it are solver noise, see :func:`nth_dynamics.analysis.error_floor`);
the widths actually used are reported with each fit (``fit_min_width``,
``fit_max_width``, ``fit_points``), so a fit range shortened by the floor shows.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from .._fits import fit_line as _least_squares

RESAMPLES = 1000
"""Bootstrap resamples of the seeds per fit."""
CONFIDENCE = 0.95
"""Coverage of the bootstrap percentile intervals."""
BOOTSTRAP_SEED = 0
"""Seed of the NumPy generator that draws the resamples."""
SLOPE_TOLERANCE = 0.2
"""A fitted slope agrees with its prediction when within this of it and its
interval covers it (the targets of the width study)."""


def fit_power_law(
    values: xr.DataArray,
    dim: str = "width",
    *,
    sample_dim: str = "seed",
    lower: float | None = None,
    upper: float | None = None,
    floor: float = 0.0,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> xr.Dataset:
    """Fit ``log values = intercept + slope · log dim`` for every series, with a
    bootstrap interval over ``sample_dim`` (see the module docstring).

    Args:
        values: positive data with dims ``dim`` and (usually) ``sample_dim``;
            every other dim is a separate series.
        dim: the coordinate fitted against (``width``, ``time``, ``n_train``).
        lower, upper: the fit range of ``dim`` (inclusive); None: unbounded.
            Coordinates ≤ 0 are always left out (log).
        floor: values ≤ floor count as missing; a point is used only if all
            its samples are finite and above the floor.
        resamples, confidence, seed: the bootstrap.

    Returns:
        A Dataset over the series dims with ``slope``, ``intercept`` (natural
        log of the fitted value at ``dim`` = 1), ``slope_low``, ``slope_high``
        (NaN with fewer than two samples), ``fit_min_<dim>``, ``fit_max_<dim>``
        and ``fit_points`` (the points actually used). Fits with fewer than two
        points are NaN.
    """
    if sample_dim not in values.dims:
        values = values.expand_dims(sample_dim)
    values = values.transpose(..., dim, sample_dim)
    coordinate = values[dim].values.astype(float)
    data = values.values.astype(float)
    samples = data.shape[-1]
    inside = (coordinate > 0) & (coordinate >= (-np.inf if lower is None else lower)) & (
        coordinate <= (np.inf if upper is None else upper)
    )
    with np.errstate(invalid="ignore"):
        valid = inside & np.all(np.isfinite(data) & (data > floor), axis=-1)
    log_values = np.log(np.where(valid[..., None], data, 1.0))
    log_coordinate = np.log(np.where(inside, coordinate, 1.0))
    slope, intercept = _least_squares(log_coordinate, log_values.mean(axis=-1), valid)

    counts = resample_counts(samples, resamples, seed)
    boot = np.moveaxis(log_values @ counts.T / samples, -1, 0)  # (resample, …, point)
    boot_slope, _ = _least_squares(log_coordinate, boot, valid)
    low, high = _interval(boot_slope, confidence) if samples > 1 else (np.full_like(slope, np.nan),) * 2

    used = np.where(valid, coordinate, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series
        fit_min, fit_max = np.nanmin(used, axis=-1), np.nanmax(used, axis=-1)
    template = values.isel({dim: 0, sample_dim: 0}, drop=True)

    def variable(array: np.ndarray | np.number, long_name: str, units: str = "1") -> xr.DataArray:
        return template.copy(data=array).assign_attrs({"long_name": long_name, "units": units})

    level = f"{100 * confidence:g} %"
    return xr.Dataset(
        {
            "slope": variable(slope, f"fitted slope of log {values.name or 'value'} against log {dim}"),
            "intercept": variable(intercept, f"fitted log {values.name or 'value'} at {dim} = 1"),
            "slope_low": variable(low, f"lower end of the {level} bootstrap interval of the slope"),
            "slope_high": variable(high, f"upper end of the {level} bootstrap interval of the slope"),
            f"fit_min_{dim}": variable(fit_min, f"smallest {dim} in the fit"),
            f"fit_max_{dim}": variable(fit_max, f"largest {dim} in the fit"),
            "fit_points": variable(valid.sum(axis=-1), f"number of {dim} values in the fit"),
        },
        attrs={"resamples": resamples, "confidence": confidence, "bootstrap_seed": seed, "floor": floor},
    )


def resample_counts(samples: int, resamples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """How often each sample is drawn in each bootstrap resample: (resamples, samples)."""
    draws = np.random.default_rng(seed).integers(0, samples, size=(resamples, samples))
    counts = np.zeros((resamples, samples))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts


def _interval(boot: np.ndarray, confidence: float) -> tuple[np.ndarray | np.number, np.ndarray | np.number]:
    """Percentile interval over the first axis (NaN draws left out)."""
    tail = 50 * (1 - confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series
        low, high = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    return low, high


def agrees(fit: xr.Dataset, predicted, tolerance: float = SLOPE_TOLERANCE) -> xr.DataArray:
    """Whether a fitted slope matches its prediction: within ``tolerance`` of it,
    and its bootstrap interval covers it. False where either is NaN."""
    close = abs(fit["slope"] - predicted) <= tolerance
    covered = (fit["slope_low"] <= predicted) & (predicted <= fit["slope_high"])
    return (close & covered).assign_attrs(
        long_name=f"fitted slope within {tolerance} of the prediction and its interval covers it", units="1"
    )


def decades(fit: xr.Dataset) -> xr.DataArray:
    """Decades of width a fit spans (docs/theory.md §4, §7 ask for ≥ 1.5)."""
    return np.log10(fit["fit_max_width"] / fit["fit_min_width"])
