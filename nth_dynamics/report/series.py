"""How a result's swept dimensions become the series of the report: every
combination of their values, its label, its slice of a Dataset, and the seed
geometric mean plotted and tabulated for it (figures and report.md alike)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..pipeline.scenario import SWEEP_DIMS

FACET_DIMS = tuple(dim for dim in SWEEP_DIMS if dim != "width")
"""Swept dimensions besides width: separate series in every figure and table."""


RESIDUAL_SCALES = ("alpha", "gamma")
"""The ResNet's residual scale. An FFNet has none: a result over both
architectures and several scales holds each FFNet cell at every scale (a
sweep over γ runs it once and broadcasts it; combining parts does the same),
so the report shows it once, at the first scale, and unlabelled by it."""


def selections(obj: xr.DataArray | xr.Dataset, dims: Sequence[str]) -> list[dict[str, Any]]:
    """Every combination of the values of those ``dims`` that ``obj`` has,
    an FFNet once (:func:`repeats_ffnet`)."""
    present = [d for d in dims if d in obj.dims]
    combinations = (dict(zip(present, values)) for values in itertools.product(*(obj[d].values.tolist() for d in present)))
    return [selection for selection in combinations if not repeats_ffnet(obj, selection)]


def repeats_ffnet(obj: xr.DataArray | xr.Dataset, selection: Mapping[str, Any]) -> bool:
    """Whether ``selection`` picks an FFNet at a residual scale other than
    the first of ``obj``: the same cells as at the first (:data:`RESIDUAL_SCALES`)."""
    if selection.get("architecture") != "ffnet":
        return False
    return any(dim in selection and dim in obj.dims and selection[dim] != obj[dim].values.tolist()[0]
               for dim in RESIDUAL_SCALES)


def series_label(selection: Mapping[str, Any]) -> str:
    """``key=value, …``; an FFNet's without the residual scale it does not have."""
    ffnet = selection.get("architecture") == "ffnet"
    return ", ".join(f"{key}={format_value(value)}" for key, value in selection.items()
                     if not (ffnet and key in RESIDUAL_SCALES)) or "all"


def format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def select(obj, selection: Mapping[str, Any]):
    """``obj`` at those coordinates of the selection that are its dims."""
    return obj.sel({k: v for k, v in selection.items() if k in obj.dims})


def geometric_mean(values: xr.DataArray) -> xr.DataArray:
    if "seed" not in values.dims:
        return values
    return np.exp(np.log(values.where(values > 0)).mean("seed"))


def any_finite(values) -> bool:
    return bool(np.isfinite(np.asarray(values, dtype=float)).any())


def time_symbol(ds: xr.Dataset) -> str:
    """The symbol of the time coordinate: t, or τ = t·λ_min/n (``time.unit: n_over_lambda_min``)."""
    return "τ" if "time_scale" in ds else "t"
