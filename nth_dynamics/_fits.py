"""The one least-squares line fit of the project: every power law (a
fitted slope of log y against log x — width exponents, spectral decay,
bootstrap intervals) goes through :func:`fit_line`."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jaxtyping import ArrayLike, Bool, Float


class Line(NamedTuple):
    """``y ≈ slope · x + intercept``; arrays of the series' shape (floats for one series)."""

    slope: np.ndarray
    intercept: np.ndarray


def fit_line(
    x: Float[ArrayLike, "*#series point"],
    y: Float[ArrayLike, "*#series point"],
    valid: Bool[ArrayLike, "*#series point"] | None = None,
) -> Line:
    """Ordinary least squares of ``y`` against ``x`` over the last axis,
    vectorised over the leading ones (e.g. bootstrap resamples):

        slope = Σ w (x − x̄)(y − ȳ) / Σ w (x − x̄)²,  intercept = ȳ − slope · x̄

    with weights ``w = valid`` (every point by default; ``x``, ``y`` and
    ``valid`` broadcast). Invalid points may hold any value, NaN included.
    A series with fewer than two points or no spread in x gives NaN.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    valid = np.ones(np.broadcast_shapes(x.shape, y.shape), bool) if valid is None else np.asarray(valid)
    weight = np.broadcast_to(valid, np.broadcast_shapes(valid.shape, x.shape, y.shape)).astype(float)
    x, y = np.where(weight > 0, x, 0.0), np.where(weight > 0, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        count = weight.sum(axis=-1)
        x_mean = (weight * x).sum(axis=-1) / count
        y_mean = (weight * y).sum(axis=-1) / count
        dx = weight * (x - x_mean[..., None])
        sxx = (dx**2).sum(axis=-1)
        slope = (dx * (y - y_mean[..., None])).sum(axis=-1) / sxx
        intercept = y_mean - slope * x_mean
    bad = (count < 2) | ~(sxx > 1e-12)
    return Line(np.where(bad, np.nan, slope), np.where(bad, np.nan, intercept))


__all__ = ["Line", "fit_line"]
