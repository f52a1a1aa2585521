"""The width a network needs (issue 11; docs/theory.md §4): per architecture,
depth and n, the width at which the largest truncation error over time
max_t E_p(t) falls to a tolerance, with a bootstrap interval over seeds; the
exponents of that width in n and in depth; and the law fitted to them, which
answers "what width do I need for E_p ≤ ε at n points and depth L" inside the
range it was fitted on.

Sufficient widths from the theorems (m ≳ (n/λ)³ for ResNets, LLY; quartic in
earlier fully connected bounds) are upper bounds: a measured exponent below
them does not contradict them. What the measurement can test is the ordering
(ResNet against FFNet, their dependence on depth) and whether the required
width grows at all as fast as the bounds allow.

The crossing width is interpolated in log–log between the swept widths
(:func:`nth_dynamics.report.tolerance.width_at_tolerance`), never
extrapolated: NaN where the crossing lies outside the swept widths. The
bootstrap draws whole seeds with replacement, the same draw for every series
(:func:`nth_dynamics.report.power_law.resample_counts`), so the exponents'
intervals see the seeds' correlated errors; the draws are kept (dim
``resample``) and every exponent and prediction is recomputed on each.

A crossing computed from reduced-basis cells (``hierarchy.basis: reduced``,
docs/theory.md §8; a combination of full and reduced parts labels its cells,
:func:`nth_dynamics.report.parts.cell_basis`) rests on an approximation:
each such crossing, and each exponent fitted over one, says so
(:data:`BASIS_OF_CROSSINGS`) with the largest basis error ratio behind it,
so that a law fitted partly on reduced cells never passes as an exact one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from .._fits import fit_line
from .parts import cell_basis
from .power_law import BOOTSTRAP_SEED, CONFIDENCE, RESAMPLES, _interval
from .tolerance import _crossing, default_tolerance, fit_exponent, seed_mean_log_error

TARGET_DECADES = {2: 1.5, 0: 1.0}
"""Issue 11's targets: the exponent in n fitted over ≥ 1.5 decades of n for
p = 2, ≥ 1 decade for higher orders (key 0)…"""
TARGET_HALF_WIDTH = 0.15
"""… with a 95 % interval of half-width ≤ 0.15."""

BASIS_OF_CROSSINGS = ("required_width_reduced", "required_width_basis_error_ratio")
"""The variables of :func:`required_width` that say which crossings rest on
reduced-basis cells (present only when the result has such cells)."""


def required_width(
    ds: xr.Dataset,
    tolerance: float | Mapping[int, float] | xr.DataArray | None = None,
    order: int | list[int] | None = None,
    *,
    variable: str = "truncation_error",
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> xr.Dataset:
    """The width at which max over time of E_p falls to ``tolerance``, per series.

    Args:
        ds: a result of ``simulate`` with ``width`` and ``seed`` dims and
            ``variable`` (…, width, seed, order, time).
        tolerance: one number for every order, a mapping order → tolerance,
            a DataArray over ``order``, or None: :func:`default_tolerance`
            (per order, the level most series cross inside the widths).
        order: the order(s) p to keep; None: all.
        variable: ``truncation_error`` (training points) or ``test_error``.
        resamples, confidence, seed: the bootstrap over seeds.

    Returns:
        A Dataset over the series dims (architecture, depth, n_train, order,
        … as present) with ``required_width`` (the crossing of the seed
        geometric mean, interpolated in log–log between the swept widths;
        NaN where it lies outside them), ``required_width_low`` / ``_high``
        (percentile bootstrap interval over seeds), ``required_width_resamples``
        (the bootstrap draws, dim ``resample``; NaN where a draw does not
        cross inside the widths), ``required_width_bracketed`` (the crossing lies inside
        the swept widths), ``tolerance``. Attributes: the widths swept, the
        bootstrap settings. When some cells were computed in the reduced
        basis: ``required_width_reduced`` (a cell of the series at some width
        is reduced, so its crossing may rest on it) and
        ``required_width_basis_error_ratio`` (the largest ``basis_error_ratio``
        of those cells over widths and seeds; NaN where none is reduced).

    Raises:
        ValueError: the Dataset lacks ``variable`` or two widths, or an order
            has no tolerance.
    """
    if variable not in ds or "width" not in ds.dims or ds.sizes["width"] < 2:
        raise ValueError(f"required_width: needs {variable} over two widths or more")
    error = ds[variable]
    if order is not None:
        error = error.sel(order=np.atleast_1d(order))
    worst = error.max("time") if "time" in error.dims else error
    tolerance = _tolerance(worst, tolerance)
    if "seed" not in worst.dims:
        worst = worst.expand_dims("seed")
    worst = worst.transpose(..., "width", "seed")
    series = worst.isel(width=0, seed=0, drop=True)
    log_width = np.log(worst["width"].values.astype(float))
    log_tolerance = np.log(tolerance.broadcast_like(series).transpose(*series.dims).values)
    mean, boot = seed_mean_log_error(worst.values, resamples, seed)
    width = _crossing(log_width, mean, log_tolerance)
    draws = _crossing(log_width, boot, log_tolerance)
    samples = worst.sizes["seed"]
    low, high = _interval(draws, confidence) if samples > 1 else (np.full_like(width, np.nan),) * 2
    level = f"{100 * confidence:g} %"

    def variable_of(array, long_name, template=series):
        return template.copy(data=array).assign_attrs(long_name=long_name, units="1")

    resampled = series.expand_dims(resample=resamples).copy(data=draws)
    out = xr.Dataset(
        {
            "required_width": variable_of(width, "width at which the seed-mean max_t E_p first falls to the "
                                                 "tolerance (interpolated in log-log between the swept widths)"),
            "required_width_low": variable_of(low, f"lower end of its {level} bootstrap interval over seeds"),
            "required_width_high": variable_of(high, f"upper end of its {level} bootstrap interval over seeds"),
            "required_width_resamples": resampled.assign_attrs(long_name="required width of each bootstrap "
                                                                         "resample of the seeds", units="1"),
            "required_width_bracketed": variable_of(np.isfinite(width), "the crossing lies inside the swept widths"),
            "tolerance": tolerance.assign_attrs(long_name="error tolerance on max_t E_p", units="1"),
        },
        attrs={"min_width": float(np.exp(log_width.min())), "max_width": float(np.exp(log_width.max())),
               "variable": variable, "seeds": samples, "resamples": resamples, "confidence": confidence,
               "bootstrap_seed": seed},
    )
    return out.assign(_basis_of_crossings(ds, worst, series))


def _basis_of_crossings(ds: xr.Dataset, worst: xr.DataArray, series: xr.DataArray) -> dict[str, xr.DataArray]:
    """:data:`BASIS_OF_CROSSINGS` of the series of ``worst``: none when no cell is reduced."""
    reduced = cell_basis(ds) == "reduced"
    if not bool(reduced.any()):
        return {}
    on_reduced = reduced.any("width") if "width" in reduced.dims else reduced
    on_reduced = on_reduced.broadcast_like(series).transpose(*series.dims)
    ratio = ds["basis_error_ratio"] if "basis_error_ratio" in ds else xr.full_like(worst, np.nan)
    if "order" in ratio.dims and "order" in worst.dims:
        ratio = ratio.sel(order=worst["order"].values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: a series without reduced cells
        ratio = ratio.where(reduced).max([dim for dim in ("width", "seed") if dim in ratio.dims])
    ratio = ratio.broadcast_like(series).transpose(*series.dims)
    return {
        "required_width_reduced": on_reduced.copy(data=on_reduced.values.astype(bool)).assign_attrs(
            long_name="the series has reduced-basis cells (hierarchy.basis: reduced): its crossing may rest on "
                      "an approximation", units="1"),
        "required_width_basis_error_ratio": ratio.assign_attrs(
            long_name="largest basis_error_ratio of the series' reduced-basis cells (NaN: none)", units="1"),
    }


def _tolerance(worst: xr.DataArray, tolerance) -> xr.DataArray:
    """The tolerance as a DataArray over ``order`` (or scalar)."""
    if tolerance is None:
        return default_tolerance(worst)
    if isinstance(tolerance, Mapping):
        missing = sorted({int(p) for p in worst["order"].values} - {int(p) for p in tolerance})
        if missing:
            raise ValueError(f"required_width: no tolerance for order(s) {missing}")
        return xr.DataArray([float(tolerance[int(p)]) for p in worst["order"].values],
                            coords={"order": worst["order"]})
    return xr.DataArray(tolerance).astype(float)


def width_exponent(
    widths: xr.Dataset,
    dim: str = "n_train",
    *,
    confidence: float | None = None,
) -> xr.Dataset:
    """The exponent of the required width in ``dim`` (``n_train`` or ``depth``):
    the least-squares slope of log m* against log ``dim`` over the values where
    m* is bracketed, per series (every other series dim), with a percentile
    bootstrap interval over the resamples of :func:`required_width` (each
    resample fitted over the values where both it and the central estimate
    are finite).

    Returns:
        A Dataset with ``exponent``, ``intercept`` (log m* at ``dim`` = 1),
        ``exponent_low`` / ``_high``, ``points`` (values of ``dim`` in the
        fit), ``range_min`` / ``range_max`` (their range) and ``decades``
        (log10 of range_max/range_min). Fewer than two points: NaN.

    Raises:
        ValueError: ``dim`` is not a dim of ``widths``.
    """
    if dim not in widths["required_width"].dims:
        raise ValueError(f"width_exponent: {dim} is not swept (dims: {', '.join(widths['required_width'].dims)})")
    confidence = widths.attrs.get("confidence", CONFIDENCE) if confidence is None else confidence
    central = widths["required_width"].transpose(..., dim)
    draws = widths["required_width_resamples"].transpose("resample", *central.dims)
    fit = fit_exponent(np.log(central[dim].values.astype(float)), central.values, draws.values,
                       confidence if widths.attrs.get("seeds", 2) > 1 else None)
    valid = fit.valid
    used = np.where(valid, central[dim].values.astype(float), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # series without a crossing
        fit_min, fit_max = np.nanmin(used, axis=-1), np.nanmax(used, axis=-1)
    template = central.isel({dim: 0}, drop=True)
    level = f"{100 * confidence:g} %"

    def variable(array, long_name):
        return template.copy(data=np.asarray(array, dtype=float)).assign_attrs(long_name=long_name, units="1")

    basis = {}
    if "required_width_reduced" in widths:
        on_reduced = valid & widths["required_width_reduced"].broadcast_like(central).transpose(*central.dims).values
        ratio = widths["required_width_basis_error_ratio"].broadcast_like(central).transpose(*central.dims).values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no reduced value in the fit
            largest = np.nanmax(np.where(on_reduced, ratio, np.nan), axis=-1)
        basis = {
            "reduced_points": variable(on_reduced.sum(axis=-1), f"values of {dim} in the fit whose crossing rests "
                                                                 "on reduced-basis cells"),
            "basis_error_ratio": variable(largest, "largest basis_error_ratio behind those crossings (NaN: none)"),
        }
    return xr.Dataset(
        {
            "exponent": variable(fit.exponent, f"fitted exponent of the required width in {dim}"),
            "intercept": variable(fit.intercept, f"fitted log required width at {dim} = 1"),
            "exponent_low": variable(fit.low, f"lower end of its {level} bootstrap interval over seeds"),
            "exponent_high": variable(fit.high, f"upper end of its {level} bootstrap interval over seeds"),
            "points": variable(valid.sum(axis=-1), f"values of {dim} in the fit"),
            "range_min": variable(fit_min, f"smallest {dim} in the fit"),
            "range_max": variable(fit_max, f"largest {dim} in the fit"),
            "decades": variable(np.log10(fit_max / fit_min), f"decades of {dim} fitted over"),
            **basis,
        },
        attrs={"dim": dim, "confidence": confidence},
    )


class Prediction(NamedTuple):
    """A required width from :class:`WidthLaw` with its bootstrap interval."""

    width: float
    low: float
    high: float


@dataclass(frozen=True)
class WidthLaw:
    """The fitted law of the required width: at each swept depth L, the power
    law m*(n) = exp(intercept) · n^exponent fitted over the n where m* is
    bracketed (:func:`width_exponent`); between two depths that have a law,
    log m* is interpolated linearly in log L between their laws (an
    approximation: it assumes no structure in depth finer than the sweep;
    a depth without a law — fewer than two bracketed n — is skipped). Build it with
    :meth:`fit`; :meth:`predict` refuses (n, L) outside the fitted range.

    ``laws`` holds, per series (architecture, order, …) and depth,
    ``exponent``, ``intercept``, ``range_min``, ``range_max`` and the bootstrap
    draws ``boot_exponent``, ``boot_intercept`` (dim ``resample``).
    """

    laws: xr.Dataset
    tolerance: xr.DataArray

    @classmethod
    def fit(cls, widths: xr.Dataset) -> WidthLaw:
        """The law of a :func:`required_width` Dataset (with ``n_train`` swept)."""
        fit = width_exponent(widths, "n_train")
        central = widths["required_width"].transpose(..., "n_train")
        draws = widths["required_width_resamples"].transpose("resample", *central.dims)
        x = np.log(central["n_train"].values.astype(float))
        valid = np.isfinite(central.values) & np.isfinite(np.log(draws.values))
        log_draws = np.where(valid, np.log(draws.values), 0.0)
        boot = fit_line(x, log_draws, valid)
        complete = valid.sum(axis=-1) == np.isfinite(central.values).sum(axis=-1)
        complete = complete & (widths.attrs.get("seeds", 2) > 1)  # one seed: no interval
        template = draws.isel(n_train=0, drop=True)
        laws = fit[["exponent", "intercept", "range_min", "range_max"]].assign(
            boot_exponent=template.copy(data=np.where(complete, boot.slope, np.nan)),
            boot_intercept=template.copy(data=np.where(complete, boot.intercept, np.nan)),
        )
        laws.attrs = {**fit.attrs, "confidence": fit.attrs["confidence"]}
        return cls(laws, widths["tolerance"])

    def predict(
        self, n: float, depth: float | None = None, *, tolerance: float | None = None, **selection: Any
    ) -> Prediction:
        """The width the law needs for max_t E_p ≤ its tolerance at ``n``
        training points and ``depth``, with its bootstrap interval (NaN with
        one seed). ``selection``: the other series coordinates
        (``architecture="resnet"``, ``order=2``) where they are swept;
        ``tolerance``: checked against the one the law was fitted at.

        Raises:
            ValueError: a swept coordinate is missing or unknown, ``tolerance``
                is not the law's, or (n, depth) lies outside the range the law
                was fitted on.
        """
        laws = self.laws
        if tolerance is not None:
            fitted = self.tolerance.sel({k: v for k, v in selection.items() if k in self.tolerance.dims})
            if fitted.size != 1 or not np.isclose(float(fitted), tolerance, rtol=1e-9, atol=0.0):
                values = ", ".join(f"{v:g}" for v in np.unique(fitted.values))
                raise ValueError(f"WidthLaw.predict: fitted at tolerance {values}, not {tolerance:g}; "
                                 "refit on required_width(ds, tolerance=…)")
        for dim in [d for d in laws["exponent"].dims if d != "depth"]:
            if dim not in selection:
                values = ", ".join(str(v) for v in laws[dim].values.tolist())
                raise ValueError(f"WidthLaw.predict: give {dim}= (one of {values})")
        unknown = sorted(set(selection) - set(laws["exponent"].dims))
        if unknown:
            raise ValueError(f"WidthLaw.predict: {', '.join(unknown)} is not a dim of the law")
        try:
            laws = laws.sel(selection)
        except KeyError as error:
            raise ValueError(f"WidthLaw.predict: no law at {selection} ({error})") from None
        if "depth" in laws.dims:
            if depth is None:
                raise ValueError("WidthLaw.predict: give depth=")
            fitted = laws["depth"].values[np.isfinite(laws["exponent"].values)]
            if not fitted.size or not fitted.min() <= depth <= fitted.max():
                span = f"{fitted.min():g}…{fitted.max():g}" if fitted.size else "none"
                raise ValueError(f"WidthLaw.predict: depth {depth:g} outside the fitted depths {span}")
            laws = laws.sel(depth=fitted)
            if depth in fitted:
                ends, weight = [laws.sel(depth=depth)] * 2, 0.0
            else:  # between two fitted depths: interpolated in log depth
                upper = int(np.searchsorted(fitted, depth))
                ends = [laws.isel(depth=upper - 1), laws.isel(depth=upper)]
                weight = float(np.log(depth / fitted[upper - 1]) / np.log(fitted[upper] / fitted[upper - 1]))
        else:
            if depth is not None and "depth" in laws.coords and float(laws["depth"]) != depth:
                raise ValueError(f"WidthLaw.predict: fitted at depth {float(laws['depth']):g} only, not {depth:g}")
            if not np.isfinite(float(laws["exponent"])):
                raise ValueError(f"WidthLaw.predict: no law at {selection} (fewer than two bracketed n)")
            ends, weight = [laws, laws], 0.0
        for end in ends:
            n_min, n_max = float(end["range_min"]), float(end["range_max"])
            if not n_min <= n <= n_max:
                where = f" at depth {float(end['depth']):g}" if "depth" in end.coords else ""
                raise ValueError(f"WidthLaw.predict: n = {n:g} outside the fitted n {n_min:g}…{n_max:g}{where}")
        log_n = np.log(n)

        def log_width(prefix):
            values = [end[f"{prefix}intercept"].values + end[f"{prefix}exponent"].values * log_n for end in ends]
            return (1 - weight) * values[0] + weight * values[1]

        central = float(np.exp(log_width("")))
        low, high = _interval(np.exp(log_width("boot_")), float(self.laws.attrs.get("confidence", CONFIDENCE)))
        return Prediction(central, float(low), float(high))


def width_law(widths: xr.Dataset) -> WidthLaw:
    """:meth:`WidthLaw.fit` of a :func:`required_width` Dataset."""
    return WidthLaw.fit(widths)


def required_width_fits(ds: xr.Dataset, widths: xr.Dataset) -> xr.Dataset:
    """The required widths of ``ds`` and, where swept, their exponents in n and
    in depth, as one Dataset for ``analysis.nc`` and the report:
    ``required_width…``, ``n_exponent…`` / ``depth_exponent…`` (the
    variables of :func:`width_exponent` prefixed, ``exponent`` itself as
    ``n_exponent``), without the bootstrap draws."""
    out = widths.drop_vars("required_width_resamples")
    for dim, prefix in (("n_train", "n_exponent"), ("depth", "depth_exponent")):
        if dim in widths["required_width"].dims and widths.sizes[dim] > 1:
            fit = width_exponent(widths, dim)
            names = {name: prefix + name.removeprefix("exponent") if name.startswith("exponent")
                     else f"{prefix}_{name}" for name in fit.data_vars}
            out = out.merge(fit.rename(names), compat="override", combine_attrs="drop_conflicts")
    out.attrs = widths.attrs
    return out


__all__ = ["BASIS_OF_CROSSINGS", "Prediction", "WidthLaw", "required_width", "required_width_fits", "width_exponent", "width_law"]
