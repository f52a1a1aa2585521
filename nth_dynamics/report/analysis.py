"""Analysis of a result Dataset: the sizes docs/theory.md §4 predicts, their
scaling-law fits against width with bootstrap confidence intervals over seeds,
the t^p growth of the truncation error at small t, and the width an error
tolerance needs (docs/architecture.md, ``analysis.py``).

Most per-run metrics are already variables of the Dataset that
:func:`nth_dynamics.simulate` writes (``truncation_error``, ``test_error``,
``kernel_magnitude``, ``lambda_min``, ``ntk_drift_ref``, ``ntk_drift_nth``);
:func:`truncation_error` and :func:`ntk_drift` recompute them from the
trajectories. Everything here is a pure function of xarray objects with named
dimensions; nothing touches files but :func:`combine`, which reads the
results of the parts of a sweep it is given as paths. One call computes
every fit a Dataset supports::

    fits = analyse(ds)                       # or analyse(ds, min_width=256)
    fits.truncation_error_slope.sel(order=4).isel(time=-1)   # slope of log E_4 in log m at t1
    fits.kernel_magnitude_slope                              # per rank r

The fits themselves are in :mod:`nth_dynamics.report.power_law` (seed
bootstrap, agreement with a prediction), the tolerance widths in
:mod:`nth_dynamics.report.tolerance`, and the width a network needs against
n and depth, with its fitted law, in :mod:`nth_dynamics.report.required_width`,
the finite-width corrections against depth/width in
:mod:`nth_dynamics.report.depth_over_width`, and the combination of a sweep
run in parts in :mod:`nth_dynamics.report.parts`; their public names are
re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .depth_over_width import HANIN_NICA_BETA, correction_sizes, depth_over_width
from .depth_over_width import applies as depth_over_width_applies
from .parts import combine
from .power_law import (
    BOOTSTRAP_SEED,
    CONFIDENCE,
    RESAMPLES,
    SLOPE_TOLERANCE,
    agrees,
    decades,
    fit_power_law,
    resample_counts,
)
from .required_width import (
    BASIS_OF_CROSSINGS,
    Prediction,
    WidthLaw,
    required_width,
    required_width_fits,
    width_exponent,
    width_law,
)
from .required_width import _tolerance as required_width_tolerance
from .tolerance import default_tolerance, tolerance_widths, width_at_tolerance

WIDE_FROM = 256
"""p = 4 reaches its slope −2 only from m ≈ 256 on (docs/theory.md §7): the report
also fits from this width on."""
SMALL_TIME = 0.5
"""Upper end of the small-t window where E_p ∝ t^p is fitted (gradient-flow time)."""
FLOOR_FACTOR = 10.0
"""Errors below this many solver tolerances are solver noise (:func:`error_floor`)."""


def predicted_error_slope(order):
    """Slope of log E_p in log m: −p/2 for even p, −(p−1)/2 for odd p (HY Thm 2.6;
    freezing K(p) errs by t·K(p+1), an even order), i.e. −⌊p/2⌋."""
    return -(order // 2) * 1.0


def predicted_laziness_slope(order):
    """Slope of log E_p in log α (the output scale) at a fixed width, in the
    lazy regime: −(p − 1). E_p follows the first kernel it leaves out
    (results/README.md), and K̃(p+1) = K(p+1) / α^(p−1) (docs/theory.md §9)."""
    return -(order - 1) * 1.0


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
    ``n_train`` or ``depth`` dim and two widths or more: :func:`tolerance_widths` of
    ``max_t E_p(t)`` with ``tolerances`` (order → tolerance; default
    :func:`default_tolerance`, the level most series cross), and the
    exponents of those widths in n and depth (:func:`required_width_fits`:
    ``n_exponent_decades``, ``depth_exponent``, … ; with reduced-basis cells
    also :data:`~nth_dynamics.report.required_width.BASIS_OF_CROSSINGS` and
    ``n_exponent_reduced_points``, ``n_exponent_basis_error_ratio``). Errors and drifts at or below
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
    swept = [dim for dim in ("n_train", "depth") if ds.sizes.get(dim, 1) > 1]
    if swept and ds.sizes["width"] > 1 and "truncation_error" in ds:
        worst = ds["truncation_error"].max("time").assign_attrs(long_name="max over t of E_p")
        if tolerances is not None and not isinstance(tolerances, Mapping):
            raise ValueError("tolerances: a mapping order → tolerance")
        tolerance = required_width_tolerance(worst, tolerances)
        parts.append(tolerance_widths(worst, tolerance, **options))
        # the exponents of the same widths in n and depth, with the decades
        # fitted over (required_width: the same crossings, the same draws)
        widths = required_width(ds, tolerance, **options)
        exponents = required_width_fits(ds, widths)
        parts.append(exponents[[name for name in exponents.data_vars
                                if ("exponent" in name or name in BASIS_OF_CROSSINGS) and name not in parts[-1]]])
    if depth_over_width_applies(ds):
        fit = depth_over_width(ds, floor=floor, **options)
        parts.append(fit.rename({name: f"{DEPTH_OVER_WIDTH}{name}" for name in fit.data_vars}))
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


DEPTH_OVER_WIDTH = "depth_over_width_"
"""The prefix of the fits of :func:`depth_over_width` among those of :func:`analyse`."""


def depth_over_width_fits(fits: xr.Dataset) -> xr.Dataset | None:
    """The fits of :func:`depth_over_width` from :func:`analyse`, without the
    name prefix; None when the result was not a depth × width grid."""
    names = {name: name.removeprefix(DEPTH_OVER_WIDTH) for name in fits.data_vars
             if name.startswith(DEPTH_OVER_WIDTH)}
    return fits[list(names)].rename(names) if names else None


def laziness_fits(
    ds: xr.Dataset,
    *,
    lower: float | None = None,
    upper: float | None = None,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> xr.Dataset:
    """Fits of log max_t E_p against log α for a Dataset swept over
    ``network.output_scale`` (docs/theory.md §9): :func:`fit_power_law` over
    ``output_scale`` from ``lower`` to ``upper`` for every series (width,
    order, …), seed bootstrap, errors at or below :func:`error_floor` and
    failed solves (inf) left out; with ``predicted_slope``
    (:func:`predicted_laziness_slope`, the lazy regime's) and ``agrees``."""
    if ds.sizes.get("output_scale", 1) < 2:
        raise ValueError("laziness_fits needs a Dataset swept over network.output_scale (two values or more)")
    worst = ds["truncation_error"].max("time").rename("max_t E_p")
    fit = fit_power_law(worst, "output_scale", lower=lower, upper=upper, floor=error_floor(ds),
                        resamples=resamples, confidence=confidence, seed=seed)
    predicted = xr.DataArray(predicted_laziness_slope(ds["order"])).broadcast_like(fit["slope"])
    fit["predicted_slope"] = predicted.assign_attrs(
        long_name="predicted slope in log output_scale: -(p - 1) (E_p ~ K(p+1) / alpha^(p-1))", units="1"
    )
    fit["agrees"] = agrees(fit, fit["predicted_slope"])
    return fit


def quantity_fits(fits: xr.Dataset, name: str) -> xr.Dataset:
    """The width fits of one quantity from :func:`analyse`, without the name
    prefix: ``slope``, ``slope_low``, …, ``predicted_slope``, ``agrees``."""
    prefix = f"{name}_"
    keys = ("slope", "intercept", "slope_low", "slope_high", "fit_min_width", "fit_max_width", "fit_points",
            "predicted_slope", "agrees")
    present = {prefix + key: key for key in keys if prefix + key in fits}
    return fits[list(present)].rename(present)


__all__ = [
    "HANIN_NICA_BETA",
    "QUANTITIES",
    "Prediction",
    "Quantity",
    "WidthLaw",
    "agrees",
    "analyse",
    "combine",
    "correction_sizes",
    "decades",
    "default_tolerance",
    "depth_over_width",
    "depth_over_width_applies",
    "depth_over_width_fits",
    "error_floor",
    "fit_power_law",
    "laziness_fits",
    "ntk_drift",
    "predicted_drift_slope",
    "predicted_error_slope",
    "predicted_kernel_slope",
    "predicted_laziness_slope",
    "quantity_fits",
    "required_width",
    "required_width_fits",
    "resample_counts",
    "tolerance_widths",
    "truncation_error",
    "width_at_tolerance",
    "width_exponent",
    "width_law",
]
