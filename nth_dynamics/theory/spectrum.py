"""Spectra of dot-product kernels on the sphere S^(d−1) (docs/theory.md §6, BGGB).

A kernel k(x, x′) = k(x·x′) on the unit sphere is diagonalised by the
spherical harmonics (Funk–Hecke): for x uniform on S^(d−1), the integral
operator ``(T g)(x) = E_x′[k(x·x′) g(x′)]`` has eigenvalue

    μ_k = (|S^(d−2)| / |S^(d−1)|) ∫_{−1}^{1} k(ρ) P_k(ρ) (1 − ρ²)^((d−3)/2) dρ

on the N(d, k) harmonics of degree k, with P_k the Gegenbauer (Legendre in
d = 3, Chebyshev in d = 2) polynomial normalised to P_k(1) = 1. Equivalently
``k(ρ) = Σ_k μ_k N(d, k) P_k(ρ)``. BGGB show μ_k ~ k^(−d) for the ReLU NTK of
FFNets and ResNets alike (depth ≥ 2); smooth activations give analytic
kernels whose μ_k fall faster than any power.

The integral is computed after ρ = cos θ, where the weight becomes
``sin^(d−2) θ dθ`` and the kernels' square-root singularity at ρ = 1 (the
source of the k^(−d) law) becomes smooth in θ: composite Gauss–Legendre in θ
then converges fast even for coefficients far down the tail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from jaxtyping import ArrayLike, Float
from scipy import special

from .._fits import fit_line
from ..data.harmonics import check_dimension, gegenbauer_polynomials


def sphere_area_ratio(d: int) -> float:
    """``|S^(d−2)| / |S^(d−1)| = Γ(d/2) / (√π Γ((d−1)/2))``."""
    check_dimension(d)
    return math.exp(special.gammaln(d / 2) - special.gammaln((d - 1) / 2)) / math.sqrt(math.pi)


def harmonic_dimension(d: int, k: int) -> int:
    """N(d, k): the number of linearly independent spherical harmonics of degree k on S^(d−1)."""
    check_dimension(d)
    if k == 0:
        return 1
    return round((2 * k + d - 2) / k * special.comb(k + d - 3, k - 1, exact=True))


def gegenbauer_coefficients(
    kernel: Callable[[np.ndarray], ArrayLike], d: int, k_max: int, *, panels: int | None = None
) -> Float[np.ndarray, " k"]:
    """Eigenvalues μ_0 … μ_{k_max} of the dot-product kernel ``kernel(ρ)`` on S^(d−1).

    Args:
        kernel: k(ρ) for a 1-D array of correlations ρ ∈ [−1, 1], e.g.
            ``lambda rho: limits.ntk_profile(rho, "ffnet", 4, activation="relu")``.
        d: the ambient dimension (the sphere is S^(d−1)), d ≥ 2.
        k_max: the highest degree.
        panels: uniform panels of 32-point Gauss–Legendre in θ ∈ [0, π];
            default ``max(16, ⌈π k_max / 16⌉)``, about 5 nodes per oscillation of
            P_k. The first panel is refined geometrically towards θ = 0, where
            deep kernels have a boundary layer of width ~1/depth. (A single
            high-order rule would do, but its weights lose digits beyond ~500
            nodes: 1e-13 errors where the tail needs 1e-16.)

    Returns:
        μ_k for k = 0 … k_max (the multiplicity of μ_k is N(d, k)).
    """
    check_dimension(d)
    if not isinstance(k_max, (int, np.integer)) or k_max < 0:
        raise ValueError(f"k_max must be a non-negative integer, got {k_max!r}")
    panels = max(16, math.ceil(math.pi * k_max / 16)) if panels is None else panels
    theta, weight = _composite_gauss_legendre(panels)
    weight = weight * np.sin(theta) ** (d - 2)
    rho = np.cos(theta)
    values = np.asarray(kernel(rho), dtype=np.float64)
    if values.shape != rho.shape:
        raise ValueError(f"kernel must map ρ of shape {rho.shape} to values of the same shape, got {values.shape}")
    P = gegenbauer_polynomials(rho, d, k_max)
    return sphere_area_ratio(d) * (P @ (weight * values))


def _composite_gauss_legendre(panels: int, order: int = 32, refinements: int = 10):
    """Nodes and weights on [0, π]: ``panels`` equal panels, the first split
    geometrically ``refinements`` times towards 0."""
    edges = np.linspace(0.0, math.pi, panels + 1)
    edges = np.unique(np.concatenate([edges, edges[1] * 2.0 ** -np.arange(1, refinements + 1)]))
    x, w = np.polynomial.legendre.leggauss(order)
    a, b = edges[:-1, None], edges[1:, None]
    return (0.5 * (b - a) * (x + 1) + a).ravel(), (0.5 * (b - a) * w).ravel()


class DecayFit(NamedTuple):
    """Least-squares fit ``log μ_k = exponent · log k + intercept`` over ``degrees``."""

    exponent: float
    intercept: float
    degrees: np.ndarray


def decay_exponent(
    coefficients: Float[ArrayLike, " k"], k_min: int, k_max: int, *, parity: str | None = None
) -> DecayFit:
    """Fitted power-law decay of Gegenbauer coefficients over ``k_min ≤ k ≤ k_max``.

    ``parity="even"``/``"odd"`` fits one parity only: ReLU kernels have
    different constants for even and odd k (their singularities at ρ = +1
    and ρ = −1 add for one parity and subtract for the other; for the
    two-layer NTK the odd k ≥ 3 vanish altogether). Non-positive coefficients
    in the range (zeros up to rounding) raise a ValueError: fit the other parity.
    """
    mu = np.asarray(coefficients, dtype=np.float64)
    if parity not in (None, "even", "odd"):
        raise ValueError(f"parity must be None, 'even' or 'odd', got {parity!r}")
    if not 1 <= k_min < k_max < mu.size:
        raise ValueError(f"need 1 ≤ k_min < k_max < {mu.size}, got k_min={k_min}, k_max={k_max}")
    k = np.arange(k_min, k_max + 1)
    if parity is not None:
        k = k[k % 2 == (0 if parity == "even" else 1)]
    if k.size < 2:
        raise ValueError("fewer than two degrees in the fit range")
    if np.any(mu[k] <= 0):
        raise ValueError(
            f"coefficients at k = {k[mu[k] <= 0].tolist()[:5]}… are not positive; "
            "fit one parity (parity='even' or 'odd') or another range"
        )
    line = fit_line(np.log(k), np.log(mu[k]))
    return DecayFit(float(line.slope), float(line.intercept), k)


__all__ = [
    "DecayFit",
    "decay_exponent",
    "gegenbauer_coefficients",
    "gegenbauer_polynomials",
    "harmonic_dimension",
    "sphere_area_ratio",
]
