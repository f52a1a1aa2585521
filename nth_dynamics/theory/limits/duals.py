"""The activation duals of the limit recursions (docs/theory.md §6): the
Gaussian expectations E[σ(u)σ(v)] and E[σ′(u)σ′(v)] of one activation, in
closed form (ReLU, erf) or by Gauss–Hermite quadrature (the others), and the
vectorisable arccos they use."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ...engine.networks import (
    ACTIVATIONS,
)

DEFAULT_QUADRATURE_NODES = 64
_BLOCK_ELEMENTS = 16384  # pairs per row block for quadrature duals (bounds the q-fold temporaries)


def _gelu_prime(u):
    return 0.5 * (1 + jax.scipy.special.erf(u / math.sqrt(2))) + u * jnp.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


ACTIVATION_DERIVATIVES: dict[str, Callable[[Array], Array]] = {
    # written in terms of the activation's own value where possible, so that
    # XLA shares one transcendental between σ and σ′ inside the quadrature
    "tanh": lambda u: 1 - jnp.tanh(u) ** 2,
    "softplus": jax.nn.sigmoid,
    "gelu": _gelu_prime,
    "erf": lambda u: 2 / math.sqrt(math.pi) * jnp.exp(-u * u),
    "relu": lambda u: jnp.where(u > 0, 1.0, 0.0),
}
"""σ′ for every activation of :data:`nth_dynamics.networks.ACTIVATIONS`."""

# fdlibm's rational approximation of asin on [0, 1/2] (e_asin.c): XLA's own
# arccos calls scalar libm (~30 ns); this one vectorises (~2 ns) at 1 ulp.
_ASIN_P = (
    1.66666666666666657415e-01,
    -3.25565818622400915405e-01,
    2.01212532134862925881e-01,
    -4.00555345006794114027e-02,
    7.91534994289814532176e-04,
    3.47933107596021167570e-05,
)
_ASIN_Q = (-2.40339491173441421878e00, 2.02094576023350569471e00, -6.88283971605453293030e-01, 7.70381505559019352791e-02)


def _asin_small(s: Array, z: Array) -> Array:
    """asin(s) for |s| ≤ 1/2, given z = s²."""
    p = z * (_ASIN_P[0] + z * (_ASIN_P[1] + z * (_ASIN_P[2] + z * (_ASIN_P[3] + z * (_ASIN_P[4] + z * _ASIN_P[5])))))
    q = 1 + z * (_ASIN_Q[0] + z * (_ASIN_Q[1] + z * (_ASIN_Q[2] + z * _ASIN_Q[3])))
    return s + s * (p / q)


def arccos(x: Array) -> Array:
    """arccos for x ∈ [−1, 1], vectorisable, accurate to a few ulp.

    Near ±1 it uses ``arccos x = 2 asin √((1 − x)/2)``, which keeps the small
    angle accurate where ρ → 1 matters most (the kernels' singular point).
    """
    ax = jnp.abs(x)
    small = ax <= 0.5
    z = jnp.where(small, x * x, 0.5 * (1 - ax))
    s = jnp.where(small, x, jnp.sqrt(z))
    a = _asin_small(s, z)
    return jnp.where(small, 0.5 * math.pi - a, jnp.where(x > 0, 2 * a, math.pi - 2 * a))


def _correlation(s1: Array, s2: Array, c: Array) -> tuple[Array, Array]:
    """√(s1 s2) and the correlation ρ = c/√(s1 s2) clipped to [−1, 1] (0 when a variance is 0)."""
    scale = jnp.sqrt(s1 * s2)
    safe = jnp.where(scale > 0, scale, 1.0)
    rho = jnp.clip(jnp.where(scale > 0, c / safe, 0.0), -1.0, 1.0)
    return scale, rho


class AbstractDual(eqx.Module):
    """The Gaussian expectations of one activation σ that the recursions need.

    For (u, v) ~ N(0, [[s1, c], [c, s2]]), elementwise over broadcastable arrays:
    ``moments(s1, s2, c) = (E[σ(u)σ(v)], E[σ′(u)σ′(v)])`` and
    ``mean(s) = E[σ(u)]``, u ~ N(0, s).
    """

    homogeneous: ClassVar[bool] = False
    """True for positively homogeneous σ (ReLU): the kernels are then |x||x′| k(ρ)."""

    @abc.abstractmethod
    def moments(self, s1: Array, s2: Array, c: Array) -> tuple[Array, Array]: ...

    @abc.abstractmethod
    def mean(self, s: Array) -> Array: ...


class ReLUDual(AbstractDual):
    """Plain ``max(0, u)`` (no √2): the arc-cosine kernels of degree 1 and 0,
    ``E[σσ] = ½ √(s1 s2) κ1(ρ)``, ``E[σ′σ′] = ½ κ0(ρ)``, ``E[σ] = √(s/2π)``,
    with ``κ0(ρ) = 1 − arccos(ρ)/π``, ``κ1(ρ) = (√(1−ρ²) + (π − arccos ρ) ρ)/π``
    (docs/theory.md §6)."""

    homogeneous: ClassVar[bool] = True

    def moments(self, s1, s2, c):
        scale, rho = _correlation(s1, s2, c)
        remaining = math.pi - arccos(rho)
        kappa0 = remaining / math.pi
        kappa1 = (jnp.sqrt((1 - rho) * (1 + rho)) + remaining * rho) / math.pi
        return 0.5 * scale * kappa1, 0.5 * kappa0

    def mean(self, s):
        return jnp.sqrt(s / (2 * math.pi))


class ErfDual(AbstractDual):
    """``erf`` by Williams' closed forms (1997):
    ``E[erf u erf v] = (2/π) asin(2c/√((1+2s1)(1+2s2)))``,
    ``E[erf′u erf′v] = (4/π)/√((1+2s1)(1+2s2) − 4c²)``, mean 0."""

    def moments(self, s1, s2, c):
        product = (1 + 2 * s1) * (1 + 2 * s2)
        second = 2 / math.pi * jnp.arcsin(jnp.clip(2 * c / jnp.sqrt(product), -1.0, 1.0))
        derivative = 4 / math.pi / jnp.sqrt(product - 4 * c * c)
        return second, derivative

    def mean(self, s):
        return jnp.zeros_like(s)


class QuadratureDual(AbstractDual):
    """Any activation of the registry by Gauss–Hermite quadrature of the 2-D
    Gaussian: with ``u = √s1 z1`` and ``v = √s2 (ρ z1 + √(1−ρ²) z2)``,
    ``E[g(u) h(v)] ≈ Σ_ij w_i w_j g(√s1 z_i) h(√s2 (ρ z_i + √(1−ρ²) z_j))``,
    ``nodes`` points per axis (probabilists' Hermite nodes)."""

    activation: str = eqx.field(static=True)
    nodes: int = eqx.field(static=True, default=DEFAULT_QUADRATURE_NODES)

    def _rule(self) -> tuple[np.ndarray, np.ndarray]:
        z, w = np.polynomial.hermite_e.hermegauss(self.nodes)
        return z, w / math.sqrt(2 * math.pi)

    def moments(self, s1, s2, c):
        sigma, sigma_prime = ACTIVATIONS[self.activation], ACTIVATION_DERIVATIVES[self.activation]
        z, w = self._rule()
        s1, s2, c = jnp.broadcast_arrays(s1, s2, c)
        _, rho = _correlation(s1, s2, c)
        r1, r2, co = jnp.sqrt(s1), jnp.sqrt(s2), jnp.sqrt((1 - rho) * (1 + rho))
        z_inner = jnp.asarray(z)

        def outer_node(totals, node):
            z_i, w_i = node
            u = r1 * z_i
            v = r2[..., None] * (rho[..., None] * z_i + co[..., None] * z_inner)  # (..., q)
            inner = jnp.tensordot(sigma(v), w, axes=1), jnp.tensordot(sigma_prime(v), w, axes=1)
            return (totals[0] + w_i * sigma(u) * inner[0], totals[1] + w_i * sigma_prime(u) * inner[1]), None

        zero = jnp.zeros_like(s1)
        (second, derivative), _ = jax.lax.scan(outer_node, (zero, zero), (jnp.asarray(z), jnp.asarray(w)))
        return second, derivative

    def mean(self, s):
        z, w = self._rule()
        return jnp.tensordot(ACTIVATIONS[self.activation](jnp.sqrt(s)[..., None] * z), w, axes=1)


def dual(activation: str, quadrature_nodes: int | None = None) -> AbstractDual:
    """The dual used for ``activation``: closed forms for relu and erf,
    Gauss–Hermite quadrature (``quadrature_nodes`` per axis) for the others."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if activation == "relu":
        return ReLUDual()
    if activation == "erf":
        return ErfDual()
    nodes = DEFAULT_QUADRATURE_NODES if quadrature_nodes is None else quadrature_nodes
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 2:
        raise ValueError(f"quadrature_nodes must be an integer ≥ 2, got {nodes!r}")
    return QuadratureDual(activation, nodes)
