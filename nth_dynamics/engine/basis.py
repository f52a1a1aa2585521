"""Reduced bases for the trailing kernel indices: the proper orthogonal
decomposition (POD) of a residual trajectory (docs/theory.md §8).

Every trailing index of K(r), from the third on, is only ever contracted
with residuals r(t) = f_train(t) − y; when r(t) stays in the span of the
orthonormal columns of V ∈ R^(n×k), the hierarchy projected on V is exact.
The residual trajectory of training is smooth and spans few dimensions: its
singular values fall by orders of magnitude per mode, so k ≪ n suffices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

ORTHONORMALITY_TOLERANCE = 1e-8
"""max|VᵀV − I| accepted from a basis given by the user (float64 QR gives ~1e−15)."""


def singular_values(residuals: Float[Array, "time n"]) -> Float[Array, " modes"]:
    """The POD spectrum of a trajectory: singular values of its (time, n)
    snapshot matrix, largest first."""
    return jnp.linalg.svd(jnp.asarray(residuals), compute_uv=False)


def basis_rank(residuals: Float[Array, "time n"], tol: float) -> int:
    """The smallest k whose discarded singular values all fall below ``tol``
    times the largest (at least 1). Concrete arrays only: it sets a shape."""
    values = np.asarray(singular_values(residuals))
    if values.size == 0 or not values[0] > 0:
        return 1
    return max(1, int(np.sum(values >= tol * values[0])))


def residual_basis(
    residuals: Float[Array, "time n"], tol: float = 1e-12, *, rank: int | None = None
) -> Float[Array, "n k"]:
    """The POD basis of a residual trajectory (docs/theory.md §8).

    Args:
        residuals: snapshots r(t_i) = f_train(t_i) − y as rows, shape
            (time, n); stack several trajectories along the first axis to
            span them all.
        tol: keep the smallest k whose discarded singular values are below
            ``tol`` times the largest (:func:`basis_rank`).
        rank: take exactly this many leading singular vectors instead (e.g.
            a common k for every seed of a vmapped ensemble); directions
            beyond the trajectory's own rank are completed orthonormally.

    Returns:
        V of shape (n, k) with orthonormal columns, the leading right
        singular vectors of the snapshot matrix: the k-dimensional subspace
        closest to every snapshot in the least-squares sense.
    """
    residuals = jnp.asarray(residuals)
    n = residuals.shape[-1]
    k = basis_rank(residuals, tol) if rank is None else rank
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"rank must be an integer from 1 to n = {n}, got {k!r}")
    _, _, right = jnp.linalg.svd(residuals, full_matrices=True)
    return right[:k].T


def enlarge_basis(
    basis: Float[Array, "n k"], residuals: Float[Array, "time n"], tol: float = 1e-12, *, extra: int | None = None
) -> Float[Array, "n k2"]:
    """V enlarged by the POD of the part of ``residuals`` outside its span,
    new columns after the old (so that the old basis is the leading block).

    The new directions are the leading singular vectors of (I − VVᵀ) R; by
    default as many as have singular values ≥ ``tol`` times the largest
    singular value of R itself, and at least one (while k < n), so that a
    re-solve always tests the basis; ``extra`` fixes their number instead.
    """
    basis, residuals = jnp.asarray(basis), jnp.asarray(residuals)
    n, k = basis.shape
    outside = residuals - (residuals @ basis) @ basis.T
    if extra is None:
        largest = float(jnp.max(singular_values(residuals)))
        values = np.asarray(singular_values(outside))
        extra = max(1, int(np.sum(values >= tol * largest))) if largest > 0 else 1
    extra = min(extra, n - k)
    if extra <= 0:
        return basis
    _, _, right = jnp.linalg.svd(outside, full_matrices=True)
    new = right[:extra].T
    new = new - basis @ (basis.T @ new)  # re-orthogonalise: the SVD of a tiny remainder is only ~1e−16 · |R| / |remainder| exact
    new, _ = jnp.linalg.qr(new)
    return jnp.concatenate([basis, new], axis=1)


def check_basis(basis: Array, n: int) -> Array:
    """``basis`` as an array, after checking that it is (n, k), 1 ≤ k ≤ n,
    with orthonormal columns (the values only outside tracing)."""
    basis = jnp.asarray(basis)
    if basis.ndim != 2 or basis.shape[0] != n or not 1 <= basis.shape[1] <= n:
        raise ValueError(f"basis must have shape (n, k) = ({n}, k) with 1 ≤ k ≤ {n}, got {basis.shape}")
    if not jnp.issubdtype(basis.dtype, jnp.floating):
        raise ValueError(f"basis must be a floating-point array, got dtype {basis.dtype}")
    if isinstance(basis, jax.core.Tracer):
        return basis
    deviation = float(jnp.max(jnp.abs(basis.T @ basis - jnp.eye(basis.shape[1], dtype=basis.dtype))))
    if not deviation <= ORTHONORMALITY_TOLERANCE:
        raise ValueError(
            f"basis must have orthonormal columns (max |VᵀV − I| = {deviation:.2g} > {ORTHONORMALITY_TOLERANCE:g}); "
            "build it with residual_basis"
        )
    return basis
