"""Zonal spherical harmonics: the Gegenbauer polynomials of S^(d−1)
(docs/theory.md §6), shared by the harmonic teacher of :mod:`nth_dynamics.data`
and the kernel spectra of :mod:`nth_dynamics.theory.spectrum`.

P_k is the Gegenbauer polynomial of index λ = (d − 2)/2 normalised to
P_k(1) = 1 (Chebyshev T_k in d = 2, Legendre in d = 3), from the stable
three-term recurrence of the normalised polynomials

    (k + d − 2) P_{k+1}(t) = (2k + d − 2) t P_k(t) − k P_{k−1}(t),  P_0 = 1, P_1 = t.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from jaxtyping import ArrayLike, Float


def gegenbauer_polynomials(t: Float[ArrayLike, "..."], d: int, k_max: int) -> Float[np.ndarray, "k ..."]:
    """P_0 … P_{k_max} at ``t`` (a NumPy array with a leading degree axis)."""
    return np.stack(list(_recurrence(np.asarray(t, dtype=np.float64), d, k_max)))


def gegenbauer(degree: int, d: int, t: Float[ArrayLike, "*shape"]) -> Float[ArrayLike, "*shape"]:
    """P_degree at ``t``; arithmetic only, so NumPy and JAX arrays alike."""
    for value in _recurrence(t, d, degree):
        pass
    return value


def _recurrence(t, d: int, k_max: int) -> Iterator:
    check_dimension(d)
    previous, current = t * 0 + 1, t
    yield previous
    if k_max >= 1:
        yield current
    for k in range(1, k_max):
        previous, current = current, ((2 * k + d - 2) * t * current - k * previous) / (k + d - 2)
        yield current


def check_dimension(d: int) -> None:
    """The sphere S^(d−1) needs an integer d ≥ 2."""
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 2:
        raise ValueError(f"the dimension d must be an integer ≥ 2 (sphere S^(d−1)), got {d!r}")


__all__ = ["check_dimension", "gegenbauer", "gegenbauer_polynomials"]
