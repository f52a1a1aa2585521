"""Analysis of a result Dataset: the sizes docs/theory.md §4 predicts, their
scaling-law fits against width with bootstrap confidence intervals over seeds,
the t^p growth of the truncation error at small t, and the width an error
tolerance needs (docs/architecture.md, ``analysis.py``).

Most per-run metrics are already variables of the Dataset that
:func:`nth_dynamics.simulate` writes (``truncation_error``, ``test_error``,
``kernel_magnitude``, ``lambda_min``, ``ntk_drift_ref``, ``ntk_drift_nth``);
:func:`truncation_error` and :func:`ntk_drift` recompute them from the
trajectories. Everything here is a pure function of xarray objects with named
dimensions; nothing touches files. One call computes every fit a Dataset
supports::

    fits = analyse(ds)                       # or analyse(ds, min_width=256)
    fits.truncation_error_slope.sel(order=4).isel(time=-1)   # slope of log E_4 in log m at t1
    fits.kernel_magnitude_slope                              # per rank r

**Fits.** For each series (every combination of the dimensions other than the
fitted one and ``seed``: order, time, architecture, depth, n_train, …),
``log E = intercept + slope · log m`` by least squares through the seed means
of ``log E`` (geometric means: E varies 2–5× between seeds, docs/theory.md §7). The
confidence interval is a percentile bootstrap over seeds: the seeds are drawn
with replacement (the same draw at every width), the fit repeated, 1000 times
by default, from a NumPy generator with a fixed seed (reproducible). A point
(one width) enters a fit only if every seed's value there is finite and above
the *floor* (values at or below it are solver noise, see :func:`error_floor`);
the widths actually used are reported with each fit (``fit_min_width``,
``fit_max_width``, ``fit_points``), so a fit range shortened by the floor shows.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
WIDE_FROM = 256
"""p = 4 reaches its slope −2 only from m ≈ 256 on (docs/theory.md §7): the report
also fits from this width on."""
SMALL_TIME = 0.5
"""Upper end of the small-t window where E_p ∝ t^p is fitted (gradient-flow time)."""
FLOOR_FACTOR = 10.0
"""Errors below this many solver tolerances are solver noise (:func:`error_floor`)."""


# ----------------------------------------------------------------------------- predictions (docs/theory.md §4)


def predicted_error_slope(order):
    """Slope of log E_p in log m: −p/2 for even p, −(p−1)/2 for odd p (HY Thm 2.6;
    freezing K(p) errs by t·K(p+1), an even order), i.e. −⌊p/2⌋."""
    return -(order // 2) * 1.0


def predicted_kernel_slope(rank):
    """Slope of log max|K(r)₀| in log m: −⌊(r−1)/2⌋, i.e. 0, −1, −1, −2, −2 for
    r = 2…6 (HY eq. 2.3)."""
    return -((rank - 1) // 2) * 1.0


def predicted_drift_slope(order=None):
    """Slope of log ‖K2_t − K2₀‖∞ in log m: −1 (HY Cor. 2.4). The NTH truncated at
    p = 2 freezes K2 (no drift at all): NaN there."""
    if order is None:
        return -1.0
    return xr.where(order > 2, -1.0, np.nan)


@dataclass(frozen=True)
class Quantity:
    """A variable of the result Dataset with its predicted scalings.

    ``width_slope(ds)`` and ``time_exponent(ds)`` give the predicted slopes of
    its log against log m and (at small t) log t, broadcastable against the
    variable; ``time_exponent`` is None when the variable has no time.
    ``floored``: subject to the solver floor (it comes out of an ODE solve).
    """

    name: str
    label: str
    width_slope: Callable[[xr.Dataset], object]
    time_exponent: Callable[[xr.Dataset], object] | None
    floored: bool
    reference: str


QUANTITIES: tuple[Quantity, ...] = (
    Quantity("truncation_error", "E_p, training points", lambda ds: predicted_error_slope(ds["order"]),
             lambda ds: ds["order"] * 1.0, True, "HY Thm 2.6; E_p ∝ t^p at small t"),
    Quantity("test_error", "E_p, test points", lambda ds: predicted_error_slope(ds["order"]),
             lambda ds: ds["order"] * 1.0, True, "as E_p (the eval rows follow the same hierarchy)"),
    Quantity("kernel_magnitude", "max|K(r)₀|", lambda ds: predicted_kernel_slope(ds["rank"]), None, False,
             "HY eq. 2.3"),
    Quantity("ntk_drift_ref", "‖K2_t − K2₀‖∞, reference", lambda ds: predicted_drift_slope(),
             lambda ds: 1.0, True, "HY Cor. 2.4: t(1+t)/m"),
    Quantity("ntk_drift_nth", "‖K2_t − K2₀‖∞, truncated NTH", lambda ds: predicted_drift_slope(ds["order"]),
             lambda ds: xr.where(ds["order"] > 2, 1.0, np.nan), True, "HY Cor. 2.4 (none for p = 2)"),
)
"""Every quantity :func:`analyse` fits, in the order of the report."""


# ----------------------------------------------------------------------------- per-run metrics


def truncation_error(ds: xr.Dataset, split: str = "train") -> xr.DataArray:
    """E_p(t) = ‖f_ref(t) − f̃_p(t)‖₂ / √n over the points of ``split`` ("train"
    or "test"), recomputed from ``f_ref`` and ``f_nth`` (docs/theory.md §4); padded
    point slots (``point_valid`` false) are left out. NaN where the split has
    no points. Equals the Dataset's ``truncation_error`` / ``test_error``."""
    mask = ds["split"] == split
    if "point_valid" in ds:
        mask = mask & ds["point_valid"]
    squared = ((ds["f_ref"] - ds["f_nth"]) ** 2).where(mask)
    count = mask.sum("point")
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.sqrt(squared.sum("point") / count)
    error = error.where(count > 0).transpose(*(d for d in ds["f_nth"].dims if d != "point"))
    return error.rename(f"{'truncation' if split == 'train' else split}_error")


def ntk_drift(ntk: xr.DataArray) -> xr.DataArray:
    """‖K2(t) − K2(0)‖∞ over the training block of a saved NTK trajectory
    (``ds.ntk_ref`` or ``ds.ntk_nth``, saved with ``output.save_kernels``);
    equals the Dataset's ``ntk_drift_ref`` / ``ntk_drift_nth``."""
    change = abs(ntk - ntk.isel(time=0)).where(ntk["split"] == "train")
    return change.max(("point", "train_point"))


def error_floor(ds: xr.Dataset) -> float:
    """The size below which a solved error or drift is solver noise:
    :data:`FLOOR_FACTOR` × the largest rtol/atol of the scenario's ODE solves
    (the NTH, and the reference when it is gradient flow). 0 if the Dataset
    carries no scenario. (With gradient descent as reference, E_p also stops
    falling at the O(η) gap between descent and flow, docs/theory.md §4; that floor
    is not a tolerance and is not removed.)"""
    try:
        scenario = json.loads(ds.attrs.get("scenario", "{}"))
    except (TypeError, ValueError):
        return 0.0
    sections = [scenario.get("hierarchy", {})]
    if scenario.get("reference", {}).get("method", "gradient_flow") == "gradient_flow":
        sections.append(scenario.get("reference", {}))
    tolerances = [section[key] for section in sections for key in ("rtol", "atol") if section.get(key)]
    return FLOOR_FACTOR * max(tolerances) if tolerances else 0.0


# ----------------------------------------------------------------------------- power-law fits


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

    def variable(array: np.ndarray, long_name: str, units: str = "1") -> xr.DataArray:
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


def _interval(boot: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
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


# ----------------------------------------------------------------------------- width at a tolerance


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


def _crossing(log_width: np.ndarray, log_error: np.ndarray, log_tolerance: np.ndarray) -> np.ndarray:
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
    with np.errstate(divide="ignore", invalid="ignore"):
        log_error = np.log(np.where(error.values > 0, error.values, np.nan))
    # +inf: an NTH solve that did not reach the end (hierarchy.on_failure:
    # record): the mean of a sample holding one is above every tolerance
    point_valid = ~np.any(np.isnan(log_error), axis=-1)
    failed = np.isposinf(log_error)
    finite = np.where(point_valid[..., None] & ~failed, log_error, 0.0)
    mean = np.where(point_valid, np.where(failed.any(axis=-1), np.inf, finite.mean(axis=-1)), np.nan)
    counts = resample_counts(samples, resamples, seed)
    boot_failed = np.moveaxis(failed.astype(float) @ counts.T, -1, 0) > 0
    boot = np.where(boot_failed, np.inf, np.moveaxis(finite @ counts.T / samples, -1, 0))
    boot = np.where(point_valid, boot, np.nan)
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
            log_m = np.log(np.moveaxis(width, axis, -1))
            log_m_boot = np.log(np.moveaxis(boot_width, axis + 1, -1))
            exponent, _ = _least_squares(log_n, np.nan_to_num(log_m), np.isfinite(log_m))
            boot_exponent, _ = _least_squares(log_n, np.nan_to_num(log_m_boot), np.isfinite(log_m_boot))
            e_low, e_high = (_interval(boot_exponent, confidence) if samples > 1
                             else (np.full_like(exponent, np.nan),) * 2)
            reduced = series.isel(n_train=0, drop=True)
            out[f"n_exponent{suffix}"] = variable(exponent, f"fitted exponent in n of {name}", reduced)
            out[f"n_exponent{suffix}_low"] = variable(e_low, f"lower end of its {level} bootstrap interval", reduced)
            out[f"n_exponent{suffix}_high"] = variable(e_high, f"upper end of its {level} bootstrap interval", reduced)
            out[f"n_exponent{suffix}_points"] = variable(np.isfinite(log_m).sum(axis=-1), "values of n in the fit",
                                                         reduced)
    return out


def _fitted_crossing(log_width: np.ndarray, log_error: np.ndarray, log_tolerance: np.ndarray) -> np.ndarray:
    """Width at which the power law fitted to log_error (…, width) against
    log_width reaches log_tolerance (…); NaN unless the law falls."""
    valid = np.isfinite(log_error)
    slope, intercept = _least_squares(log_width, np.where(valid, log_error, 0.0), valid)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.where(slope < 0, np.exp((log_tolerance - intercept) / slope), np.nan)


# ----------------------------------------------------------------------------- everything


def analyse(
    ds: xr.Dataset,
    *,
    min_width: float | None = None,
    max_width: float | None = None,
    small_time: float = SMALL_TIME,
    tolerances: Mapping[int, float] | None = None,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> xr.Dataset:
    """Every fit a result Dataset supports, as one Dataset.

    For each :data:`QUANTITIES` variable present (and not all NaN), with two
    widths or more, ``<name>_slope``, ``_intercept``, ``_slope_low``,
    ``_slope_high``, ``_fit_min_width``, ``_fit_max_width``, ``_fit_points``
    (see :func:`fit_power_law`; fit range ``min_width``…``max_width``),
    ``_predicted_slope`` (docs/theory.md §4) and ``_agrees`` (:func:`agrees`), over
    the variable's dims other than width and seed. For those with a time dim,
    the small-t exponent over 0 < t ≤ ``small_time`` at every width:
    ``<name>_time_exponent``, ``_time_exponent_low``, ``_time_exponent_high``,
    ``_fit_min_time``, ``_fit_max_time``, ``_time_fit_points``,
    ``_predicted_time_exponent`` (p for E_p, 1 for drift). With an
    ``n_train`` dim and two widths or more: :func:`tolerance_widths` of
    ``max_t E_p(t)`` with ``tolerances`` (order → tolerance; default
    :func:`default_tolerance`, the level most series cross). Errors and drifts at or below
    :func:`error_floor` are left out of every fit.
    """
    floor = error_floor(ds)
    options = {"resamples": resamples, "confidence": confidence, "seed": seed}
    parts = []
    for quantity in QUANTITIES:
        if quantity.name not in ds or not np.isfinite(ds[quantity.name].values).any():
            continue
        values = ds[quantity.name]
        below = floor if quantity.floored else 0.0
        if ds.sizes.get("width", 1) > 1:
            fit = fit_power_law(values, "width", lower=min_width, upper=max_width, floor=below, **options)
            predicted = xr.DataArray(quantity.width_slope(ds)).broadcast_like(fit["slope"])
            predicted = predicted.assign_attrs(long_name=f"predicted slope ({quantity.reference})", units="1")
            fit["predicted_slope"] = predicted
            fit["agrees"] = agrees(fit, fit["predicted_slope"])
            parts.append(fit.rename({name: f"{quantity.name}_{name}" for name in fit.data_vars}))
        if quantity.time_exponent is not None and "time" in values.dims and (ds["time"] > 0).sum() > 1:
            fit = fit_power_law(values, "time", upper=small_time, floor=below, **options)
            fit = fit.rename(slope="time_exponent", slope_low="time_exponent_low", slope_high="time_exponent_high",
                             fit_points="time_fit_points").drop_vars("intercept")
            predicted = xr.DataArray(quantity.time_exponent(ds)).broadcast_like(fit["time_exponent"])
            fit["predicted_time_exponent"] = predicted.assign_attrs(long_name="predicted exponent of t at small t",
                                                                    units="1")
            parts.append(fit.rename({name: f"{quantity.name}_{name}" for name in fit.data_vars}))
    if "n_train" in ds.dims and ds.sizes["width"] > 1 and "truncation_error" in ds:
        worst = ds["truncation_error"].max("time").assign_attrs(long_name="max over t of E_p")
        if tolerances is None:
            tolerance = default_tolerance(worst)
        else:
            missing = sorted(set(int(p) for p in ds["order"].values) - set(int(p) for p in tolerances))
            if missing:
                raise ValueError(f"tolerances: no tolerance for order(s) {missing}")
            values = [float(tolerances[int(p)]) for p in ds["order"].values]
            tolerance = xr.DataArray(values, coords={"order": ds["order"]})
        parts.append(tolerance_widths(worst, tolerance, **options))
    result = xr.merge(parts, compat="override", combine_attrs="drop") if parts else xr.Dataset()
    result.attrs = {
        "title": f"scaling-law fits of: {ds.attrs.get('title', 'a result')}",
        "fit_min_width": -1 if min_width is None else min_width,
        "fit_max_width": -1 if max_width is None else max_width,
        "small_time": small_time,
        "error_floor": floor,
        "slope_tolerance": SLOPE_TOLERANCE,
        "resamples": resamples,
        "confidence": confidence,
        "bootstrap_seed": seed,
        "scenario": ds.attrs.get("scenario", "{}"),
    }
    return result


def quantity_fits(fits: xr.Dataset, name: str) -> xr.Dataset:
    """The width fits of one quantity from :func:`analyse`, without the name
    prefix: ``slope``, ``slope_low``, …, ``predicted_slope``, ``agrees``."""
    prefix = f"{name}_"
    keys = ("slope", "intercept", "slope_low", "slope_high", "fit_min_width", "fit_max_width", "fit_points",
            "predicted_slope", "agrees")
    present = {prefix + key: key for key in keys if prefix + key in fits}
    return fits[list(present)].rename(present)


def decades(fit: xr.Dataset) -> xr.DataArray:
    """Decades of width a fit spans (docs/theory.md §4, §7 ask for ≥ 1.5)."""
    return np.log10(fit["fit_max_width"] / fit["fit_min_width"])


__all__ = [
    "QUANTITIES",
    "Quantity",
    "agrees",
    "analyse",
    "decades",
    "default_tolerance",
    "error_floor",
    "fit_power_law",
    "ntk_drift",
    "predicted_drift_slope",
    "predicted_error_slope",
    "predicted_kernel_slope",
    "quantity_fits",
    "resample_counts",
    "tolerance_widths",
    "truncation_error",
    "width_at_tolerance",
]
