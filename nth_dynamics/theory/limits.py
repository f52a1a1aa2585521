"""Infinite-width kernels of the project's networks: NNGP and NTK (docs/theory.md §6).

As the width m → ∞ the networks of :mod:`nth_dynamics.networks` (NTK
parametrization, N(0, 1) weights, plain activations) become Gaussian processes
whose covariance is the **NNGP** kernel, and gradient flow on them becomes kernel
regression with the deterministic **NTK** Θ∞. Both kernels follow a recursion
over layers on the 2×2 covariances of each pair of inputs (x, x′):

FFNet of ``depth = L`` (``h0 = W0 x``, ``h_l = W_l σ(h_{l−1})/√m``,
``f = a·σ(h_L)/√m``)::

    Σ0 = x·x′,  Θ0 = [input] Σ0
    Σ_l = E[σ(u)σ(v)],  Σ̇_l = E[σ′(u)σ′(v)],   (u, v) ~ N(0, Σ_{l−1} on {x, x′})
    Θ_l = Θ_{l−1} Σ̇_l + [hidden] Σ_l                         l = 1..L
    readout "activation":  NNGP = Σ_{L+1},  Θ = Θ_L Σ̇_{L+1} + [readout] Σ_{L+1}
    readout "linear":      NNGP = Σ_L,      Θ = Θ_L + [readout] Σ_L

so ``depth = L`` is docs/theory.md §6's recursion taken to Θ_{L+1}, the readout a
playing the last layer (``depth = 0`` is the two-layer network). [g] is 1 when
the parameter group g is trained, else 0.

ResNet of ``depth = L`` blocks with scale α (``α = L^(−γ)`` or given)::

    K0 = x·x′,  Θ0 = [input] K0
    two-matrix branch  h_l = h_{l−1} + α V_l σ(W_l h_{l−1}/√m)/√m:
        K_l = K_{l−1} + α² Σ_l
        Θ_l = Θ_{l−1} (1 + α² Σ̇_l) + [hidden] α² (Σ_l + K_{l−1} Σ̇_l)
    one-matrix branch  h_l = h_{l−1} + α σ(W_l h_{l−1}/√m):
        K_l = K_{l−1} + α² (Σ_l + μ_l M′_{l−1} + M_{l−1} μ′_l),  M_l = M_{l−1} + μ_l
        Θ_l = Θ_{l−1} (1 + α² Σ̇_l) + [hidden] α² K_{l−1} Σ̇_l
    readout as for the FFNet, with K_L in place of Σ_L.

with Σ_l, Σ̇_l the Gaussian expectations under K_{l−1} and μ_l(x) = E[σ(u)],
u ~ N(0, K_{l−1}(x, x)). The one-matrix branch has no fresh matrix after σ, so
its hidden units carry a mean (the M terms) and are not Gaussian:
``readout="activation"`` would need the law of σ(h_L) beyond its covariance and
is refused. The branch is σ(W_l h_{l−1}/√m) with O(1) pre-activations, as in
``networks.ResNet`` (Du et al. in this parametrization; for ReLU the same
function as docs/theory.md §5's σ(W_l h_{l−1})/√m).
Unrolling the two-matrix recursion gives docs/theory.md §6's form with
``B_l = Π_{k>l} (1 + α² Σ̇_k)``; with ReLU, plain ``max(0, u)`` here and the
σ_w² = 2 convention there differ only by α² → 2α²: docs/theory.md §6's ResNet is
``alpha = √2 · L^(−γ)`` here.

**Dense-layer options** (docs/theory.md §10; the limit kernels only — the
finite networks have no ``W_std``/``b_std`` yet). ``W_std``, ``b_std`` and
``parameterization`` act as in neural-tangents' ``stax.Dense`` on every matrix
of the network (input, hidden, both matrices of a two-matrix branch, readout),
and α multiplies the branch. Each matrix is one :class:`Affine` step::

    K ↦ W_std² K + b_std²
    Θ ↦ W_std² Θ + [g] (W_std² K + b_std²)      parameterization="ntk"
    Θ ↦ W_std² Θ + [g] (N K + [b_std > 0])       parameterization="standard"

with N the layer's fan-in: ``width`` (required, the hidden width m) for every
layer after the first, the input dimension d for the first (taken from the
inputs; the profile functions need ``input_dim``). The standard
parameterization's NTK therefore grows with m, as neural-tangents' analytic
standard kernel does with the ``out_dim`` it is given. ``b_std = 0`` means no
biases (neural-tangents' ``b_std=None``; its ``b_std=0`` would add 1 per layer
in the standard parameterization). With these options ``kernels(x, …)`` is
neural-tangents' ``kernel_fn(√d·x)`` of the ``stax.serial`` (d = x.shape[1];
neural-tangents divides the first layer by √d, the project's ``W0 x`` does not)::

    FFNet:   Dense, [σ, Dense]×depth, σ, Dense(1)        (readout="linear": no last σ)
    ResNet:  Dense, [FanOut(2), parallel(serial(Dense, σ, Dense, ×α), Identity), FanInSum]×depth, σ, Dense(1)

(tests/test_limits.py checks 74 such cases, ReLU and erf, to 1e−7; ×α is
``Dense(α W_std, α b_std)`` in the NTK parameterization). The defaults
(``W_std=1``, ``b_std=0``, ``"ntk"``) run the recursions above bit for bit;
other options run the same layers as Affine steps, still in correlation form
for ReLU without biases (b_std² breaks the homogeneity: with biases ReLU takes
the general path, which does not rescale, so mind overflow at large depth).

The Gaussian expectations (the activation's *dual*): ReLU by the arc-cosine
closed forms ``E[σσ] = ½ √(s1 s2) κ1(ρ)``, ``E[σ′σ′] = ½ κ0(ρ)``; erf by
Williams' closed forms; tanh, softplus and GELU by Gauss–Hermite quadrature of
the 2-D Gaussian (``quadrature_nodes`` per axis, default 64). With 64 nodes
the quadrature reproduces erf's closed form to ~1e-11 and tanh to ~1e-8 at
variances ≤ 1 (the project's unit-sphere inputs); it loses accuracy as the
variance grows (σ(√s z) steepens: ~1e-4 at s = 3), so mind deep γ = 0 ResNets
with tanh, and it costs q² activation calls per pair and layer (~µs), against
~10 ns for the closed forms.

ReLU is positively homogeneous, so every ReLU kernel is
``|x| |x′| k_L(ρ)`` with ρ = x·x′/(|x||x′|): it is computed in correlation form,
rescaled every layer (no overflow at any depth, even when a γ = 0 ResNet grows
like (1 + α²/2)^L), in cache-sized chunks of pairs so that 1000 × 1000 points
at depth 1000 take a few seconds. Depth is a traced loop bound: one compilation
serves every depth.

**docs/theory.md §6's FFNet table** (HWTZ, c_σ = 2, unit inputs,
``Θ_L(x, x) = L + 1``) is a rescaling of the plain-ReLU network: the ratio
``Θ(ρ)/Θ(1)`` is scale-invariant, so ``Θ_L(ρ)/(L + 1) ==
ntk_shape(ρ, "ffnet", L − 1, activation="relu")`` (§6's L counts the readout
as a layer; ``depth = L − 1`` here). At ρ = 0.5 and L = 1, 10, 100, 1000 it
gives 0.47117, 0.37349, 0.27767, 0.25380 (§6's table: 0.471, 0.374, 0.278,
0.2538; its 0.374 is 0.37349 rounded twice).
"""

from __future__ import annotations

import abc
import math
import numbers
import warnings
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..engine.networks import (
    ACTIVATIONS,
    BRANCHES,
    READOUTS,
    residual_scale,
    resolve_trained,
)

DENSE_OPTIONS = ("W_std", "b_std", "parameterization", "width")
"""Options of every dense layer, as in neural-tangents' ``stax.Dense`` (docs/theory.md §10)."""

ARCHITECTURE_OPTIONS: dict[str, tuple[str, ...]] = {
    "ffnet": ("activation", "readout", "trained", "quadrature_nodes", *DENSE_OPTIONS),
    "resnet": ("activation", "readout", "trained", "quadrature_nodes", "alpha", "gamma", "branch", *DENSE_OPTIONS),
}
"""Options each architecture accepts: the networks' own, ``quadrature_nodes`` and
the dense-layer options of :data:`DENSE_OPTIONS` (limit kernels only)."""

PARAMETERIZATIONS = ("ntk", "standard")

DEFAULT_QUADRATURE_NODES = 64
_PAIR_CHUNK = 512  # pairs per chunk in correlation form: the layer loop then runs in L1 cache
_BLOCK_ELEMENTS = 16384  # pairs per row block for quadrature duals (bounds the q-fold temporaries)


# ---------------------------------------------------------------------------
# Activation derivatives and a vectorisable arccos
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Duals: Gaussian expectations of one activation
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# The layer recursions
# ---------------------------------------------------------------------------

class Gram(NamedTuple):
    """One kernel on the pairs (x, x′): ``cross`` for x from the first set and
    x′ from the second, ``left``/``right`` the diagonal k(x, x), k(x′, x′),
    each broadcastable against ``cross`` (shapes (N1, 1) and (1, N2), or scalars)."""

    cross: Array
    left: Array
    right: Array

    def map(self, fn: Callable[..., Array], *others: Gram) -> Gram:
        return Gram(*(fn(*parts) for parts in zip(self, *others)))


class _Means(NamedTuple):
    left: Array
    right: Array


def _moments(dual_: AbstractDual, k: Gram) -> tuple[Gram, Gram]:
    """(Σ, Σ̇) = (E[σσ], E[σ′σ′]) under the covariances ``k``, for every pair."""
    cross = dual_.moments(k.left, k.right, k.cross)
    left = dual_.moments(k.left, k.left, k.left)
    right = dual_.moments(k.right, k.right, k.right)
    return Gram(cross[0], left[0], right[0]), Gram(cross[1], left[1], right[1])


class Affine(eqx.Module):
    """``W_std``, ``b_std`` and the parameterization shared by every dense layer
    (docs/theory.md §10). Every field is a traced array, so one compilation
    serves every value and both parameterizations.

    A dense layer maps the per-unit covariance ``K`` and NTK ``Θ`` of its input,
    with fan-in N, to those of its output::

        K_out = W_std² K + b_std²
        Θ_out = W_std² Θ + [trained] (W_std² K + b_std²)   "ntk"
        Θ_out = W_std² Θ + [trained] (N K + [bias] 1)       "standard"

    as neural-tangents' ``Dense.kernel_fn``: in the standard parameterization
    the weights are N(0, W_std²/N) and enter undivided, so their gradient
    carries the fan-in N; a bias of any initial scale has gradient 1.
    """

    W_std: Array
    b_std: Array
    standard: Array  # 1.0 for parameterization="standard", else 0.0
    bias: Array  # 1.0 when the layers have biases (b_std > 0), else 0.0
    width: Array  # fan-in of every layer after the first (standard only)
    input_dim: Array  # fan-in of the first layer (standard only)

    def dense(self, k: Gram, theta: Gram, fan_in: Array, trained: bool) -> tuple[Gram, Gram]:
        w2, b2 = self.W_std * self.W_std, self.b_std * self.b_std
        out = k.map(lambda c: w2 * c + b2)
        if not trained:
            return out, theta.map(lambda t: w2 * t)
        own = Gram(*(jnp.where(self.standard > 0, fan_in * c + self.bias, o) for c, o in zip(k, out)))
        return out, theta.map(lambda t, o: w2 * t + o, own)


class Architecture(eqx.Module):
    """The static description of a network's kernel recursion (validated
    options of :func:`ntk`; most users will not need this). ``affine`` is None
    for the default dense layers (W_std = 1, no biases, NTK parameterization),
    which keep the original recursions bit for bit."""

    kind: str = eqx.field(static=True)
    dual: AbstractDual
    readout: str = eqx.field(static=True)
    trained: frozenset[str] = eqx.field(static=True)
    branch: str = eqx.field(static=True, default="two")
    affine: Affine | None = None
    homogeneous: bool = eqx.field(static=True, default=False)
    """Positively homogeneous maps — a homogeneous σ and no biases (b_std² is
    not homogeneous) — so that the correlation form applies."""


class _State(NamedTuple):
    K: Gram  # covariance of the hidden units h_l
    theta: Gram  # NTK of the hidden units w.r.t. the trained parameters so far
    means: _Means  # one-matrix branch: E[h_l]/α per input (zero otherwise)
    log_scale: Array  # homogeneous duals: the kernels carry a factor exp(log_scale)


def _renormalise(state: _State, arch: Architecture) -> _State:
    """Homogeneous duals: divide every kernel by the (common) diagonal so that
    it stays 1 — the maps are 1-homogeneous in the covariance, so this is exact
    and keeps 10^4 layers inside float64."""
    if not arch.homogeneous:
        return state
    scale = state.K.left
    inverse = 1 / scale  # one scalar division, then products over the chunk
    one = jnp.ones_like(scale)
    K = Gram(state.K.cross * inverse, one, one)
    theta = state.theta.map(lambda a: a * inverse)
    root = jnp.sqrt(inverse)
    means = _Means(state.means.left * root, state.means.right * root)
    return _State(K, theta, means, state.log_scale + jnp.log(scale))


def _unit_diagonal(state: _State, arch: Architecture) -> _State:
    """Homogeneous duals: the renormalised diagonal is exactly 1; saying so
    with a literal lets XLA drop ρ = c/√(s1 s2) from every layer."""
    if not arch.homogeneous:
        return state
    one = jnp.ones((), state.K.cross.dtype)
    return state._replace(K=Gram(state.K.cross, one, one))


def _ffnet_layer(state: _State, arch: Architecture, alpha: Array) -> _State:
    sigma, sigma_dot = _moments(arch.dual, state.K)
    hidden = "hidden" in arch.trained
    theta = state.theta.map(lambda t, sd, s: t * sd + s if hidden else t * sd, sigma_dot, sigma)
    return _State(sigma, theta, state.means, state.log_scale)


def _resnet_two_layer(state: _State, arch: Architecture, alpha: Array) -> _State:
    sigma, sigma_dot = _moments(arch.dual, state.K)
    a2 = alpha * alpha
    hidden = "hidden" in arch.trained

    def theta_update(t, sd, s, k):
        propagated = t * (1 + a2 * sd)
        return propagated + a2 * (s + k * sd) if hidden else propagated

    theta = state.theta.map(theta_update, sigma_dot, sigma, state.K)
    K = state.K.map(lambda k, s: k + a2 * s, sigma)
    return _State(K, theta, state.means, state.log_scale)


def _resnet_one_layer(state: _State, arch: Architecture, alpha: Array) -> _State:
    sigma, sigma_dot = _moments(arch.dual, state.K)
    mu = _Means(arch.dual.mean(state.K.left), arch.dual.mean(state.K.right))
    M = state.means
    a2 = alpha * alpha
    hidden = "hidden" in arch.trained

    def theta_update(t, sd, k):
        propagated = t * (1 + a2 * sd)
        return propagated + a2 * k * sd if hidden else propagated

    theta = state.theta.map(theta_update, sigma_dot, state.K)
    # E[h h′] gains the branch's second moment and the cross terms of its mean
    # with the mean the earlier blocks left in h (no zero-mean matrix after σ)
    K = Gram(
        state.K.cross + a2 * (sigma.cross + mu.left * M.right + M.left * mu.right),
        state.K.left + a2 * (sigma.left + 2 * mu.left * M.left),
        state.K.right + a2 * (sigma.right + 2 * mu.right * M.right),
    )
    means = _Means(M.left + mu.left, M.right + mu.right)
    return _State(K, theta, means, state.log_scale)


# The same layers with W_std, b_std and a parameterization (docs/theory.md §10):
# every matrix of the network is an Affine.dense step; α multiplies the branch.

def _ffnet_layer_affine(state: _State, arch: Architecture, alpha: Array) -> _State:
    sigma, sigma_dot = _moments(arch.dual, state.K)
    affine = arch.affine
    K, theta = affine.dense(sigma, state.theta.map(jnp.multiply, sigma_dot), affine.width, "hidden" in arch.trained)
    return _State(K, theta, state.means, state.log_scale)


def _resnet_two_layer_affine(state: _State, arch: Architecture, alpha: Array) -> _State:
    affine, hidden, a2 = arch.affine, "hidden" in arch.trained, alpha * alpha
    k_pre, theta_pre = affine.dense(state.K, state.theta, affine.width, hidden)
    sigma, sigma_dot = _moments(arch.dual, k_pre)
    k_branch, theta_branch = affine.dense(sigma, theta_pre.map(jnp.multiply, sigma_dot), affine.width, hidden)
    K = state.K.map(lambda k, b: k + a2 * b, k_branch)
    theta = state.theta.map(lambda t, b: t + a2 * b, theta_branch)
    return _State(K, theta, state.means, state.log_scale)


def _resnet_one_layer_affine(state: _State, arch: Architecture, alpha: Array) -> _State:
    affine, hidden, a2 = arch.affine, "hidden" in arch.trained, alpha * alpha
    k_pre, theta_pre = affine.dense(state.K, state.theta, affine.width, hidden)
    sigma, sigma_dot = _moments(arch.dual, k_pre)
    mu = _Means(arch.dual.mean(k_pre.left), arch.dual.mean(k_pre.right))
    M = state.means
    theta = state.theta.map(lambda t, tp, sd: t + a2 * tp * sd, theta_pre, sigma_dot)
    K = Gram(
        state.K.cross + a2 * (sigma.cross + mu.left * M.right + M.left * mu.right),
        state.K.left + a2 * (sigma.left + 2 * mu.left * M.left),
        state.K.right + a2 * (sigma.right + 2 * mu.right * M.right),
    )
    return _State(K, theta, _Means(M.left + mu.left, M.right + mu.right), state.log_scale)


def _propagate(k0: Gram, arch: Architecture, depth: Array, alpha: Array) -> tuple[Gram, Gram, Array]:
    """(NNGP, NTK, log_scale) of the network from the input Gram ``k0``."""
    zeros_like = lambda g: g.map(jnp.zeros_like)  # noqa: E731
    affine = arch.affine
    if affine is None:
        theta0 = k0 if "input" in arch.trained else zeros_like(k0)
    else:
        k0, theta0 = affine.dense(k0, zeros_like(k0), affine.input_dim, "input" in arch.trained)
    means0 = _Means(jnp.zeros_like(k0.left), jnp.zeros_like(k0.right))
    state = _renormalise(_State(k0, theta0, means0, jnp.zeros(())), arch)
    if affine is None:
        layers = {"ffnet": _ffnet_layer, "two": _resnet_two_layer, "one": _resnet_one_layer}
    else:
        layers = {"ffnet": _ffnet_layer_affine, "two": _resnet_two_layer_affine, "one": _resnet_one_layer_affine}
    layer = layers["ffnet" if arch.kind == "ffnet" else arch.branch]

    def body(_, state):
        return _renormalise(layer(_unit_diagonal(state, arch), arch, alpha), arch)

    state = jax.lax.fori_loop(0, depth, body, state)
    readout_trained = "readout" in arch.trained
    if affine is not None:
        K, theta = state.K, state.theta
        if arch.readout == "activation":
            K, sigma_dot = _moments(arch.dual, state.K)
            theta = theta.map(jnp.multiply, sigma_dot)
        nngp, theta = affine.dense(K, theta, affine.width, readout_trained)
    elif arch.readout == "activation":
        sigma, sigma_dot = _moments(arch.dual, state.K)
        nngp = sigma
        theta = state.theta.map(lambda t, sd, s: t * sd + s if readout_trained else t * sd, sigma_dot, sigma)
    else:
        nngp = state.K
        theta = state.theta.map(lambda t, k: t + k if readout_trained else t, state.K)
    return nngp, theta, state.log_scale


class _Limit(NamedTuple):
    """Kernels as mantissa × exp(log_scale); diagonals for normalisation."""

    nngp: Gram
    ntk: Gram
    log_scale: Array


@eqx.filter_jit
def _limit_correlation_form(
    rho0: Float[Array, "n1 n2"], arch: Architecture, depth: Array, alpha: Array
) -> _Limit:
    """Homogeneous duals on unit-diagonal inputs: the diagonal is one scalar
    shared by all points, so each pair runs its own recursion, chunk by chunk
    (all layers of a chunk stay in cache)."""
    shape = rho0.shape
    flat = rho0.reshape(-1)
    chunks = -(-flat.size // _PAIR_CHUNK)
    padded = jnp.pad(flat, (0, chunks * _PAIR_CHUNK - flat.size)).reshape(chunks, _PAIR_CHUNK)
    one = jnp.ones(())

    def run(chunk):
        nngp, ntk, _ = _propagate(Gram(chunk, one, one), arch, depth, alpha)
        return nngp.cross, ntk.cross

    nngp_cross, ntk_cross = jax.lax.map(run, padded)
    # the diagonal: a pair with ρ = 1
    nngp_d, ntk_d, log_scale = _propagate(Gram(one, one, one), arch, depth, alpha)
    unflat = lambda a: a.reshape(-1)[: flat.size].reshape(shape)  # noqa: E731
    return _Limit(
        Gram(unflat(nngp_cross), nngp_d.cross, nngp_d.cross),
        Gram(unflat(ntk_cross), ntk_d.cross, ntk_d.cross),
        log_scale,
    )


@eqx.filter_jit
def _limit_blocks(
    k0: Gram, arch: Architecture, depth: Array, alpha: Array
) -> _Limit:
    """General duals: blocks of rows of the pair matrix, each with its own
    (recomputed) diagonals; bounds the quadrature temporaries."""
    n1, n2 = k0.cross.shape
    rows = max(1, min(n1, _BLOCK_ELEMENTS // max(n2, 1)))
    blocks = -(-n1 // rows)
    pad = blocks * rows - n1
    # pad with copies of the first row: harmless values, discarded below
    pad_rows = lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a  # noqa: E731
    cross = pad_rows(k0.cross).reshape(blocks, rows, n2)
    left = pad_rows(k0.left.reshape(n1, 1)).reshape(blocks, rows, 1)
    right = k0.right.reshape(1, n2)

    def run(block):
        c, l = block
        nngp, ntk, _ = _propagate(Gram(c, l, right), arch, depth, alpha)
        return nngp, ntk

    nngp, ntk = jax.lax.map(run, (cross, left))
    unblock = lambda a: a.reshape(blocks * rows, -1)[:n1]  # noqa: E731
    first = lambda a: a[0]  # noqa: E731
    return _Limit(
        Gram(unblock(nngp.cross), unblock(nngp.left), first(nngp.right)),
        Gram(unblock(ntk.cross), unblock(ntk.left), first(ntk.right)),
        jnp.zeros(()),
    )


def _limit(
    cross0: Float[Array, "n1 n2"], left0: Float[Array, " n1"], right0: Float[Array, " n2"],
    arch: Architecture, depth: int, alpha: float,
) -> tuple[_Limit, Array, Array]:
    """Kernels from the input Gram; returns (limit, row factor, column factor)
    such that kernel = mantissa × row ⊗ column × exp(log_scale)."""
    depth_, alpha_ = jnp.asarray(depth), jnp.asarray(alpha, dtype=cross0.dtype)
    if arch.homogeneous:
        n1, n2 = jnp.sqrt(left0), jnp.sqrt(right0)
        _, rho0 = _correlation(left0[:, None], right0[None, :], cross0)
        return _limit_correlation_form(rho0, arch, depth_, alpha_), n1, n2
    ones1, ones2 = jnp.ones_like(left0), jnp.ones_like(right0)
    return _limit_blocks(Gram(cross0, left0, right0), arch, depth_, alpha_), ones1, ones2


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

def _check_number(name: str, value, *, positive: bool) -> float:
    bound = "> 0" if positive else "≥ 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not (
        value > 0 if positive else value >= 0
    ):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_size(name: str, value, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer ≥ 1 ({why}), got {value!r}")
    return int(value)


def _resolve_affine(options: dict, input_dim: int | None) -> Affine | None:
    """The dense layers' options (docs/theory.md §10); None for the defaults."""
    W_std = _check_number("W_std", options.get("W_std", 1.0), positive=True)
    b_std = _check_number("b_std", options.get("b_std", 0.0), positive=False)
    parameterization = options.get("parameterization", "ntk")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {list(PARAMETERIZATIONS)}, got {parameterization!r}")
    width = options.get("width")
    if parameterization == "standard":
        if width is None:
            raise ValueError("parameterization='standard' needs width= (the hidden width: its NTK grows with it)")
        width = _check_size("width", width, "the hidden width")
        if input_dim is None:
            raise ValueError("parameterization='standard' needs input_dim= here (the first layer's NTK term is input_dim·x·x′)")
        input_dim = _check_size("input_dim", input_dim, "the input dimension d")
    elif width is not None:
        raise ValueError("width only enters parameterization='standard' (the NTK parameterization's kernels do not depend on it)")
    if W_std == 1.0 and b_std == 0.0 and parameterization == "ntk":
        return None
    as_array = lambda v: jnp.asarray(v, dtype=jnp.float64)  # noqa: E731
    return Affine(
        as_array(W_std), as_array(b_std), as_array(parameterization == "standard"), as_array(b_std > 0),
        as_array(width or 1), as_array(input_dim or 1),
    )


def resolve_architecture(
    architecture: str, depth: int, input_dim: int | None = None, **options
) -> tuple[Architecture, float]:
    """Validate the options of :func:`ntk` and return the recursion's static
    description and the residual scale α (1.0 for the FFNet). ``input_dim`` (the
    inputs' dimension d) is needed by ``parameterization="standard"`` only.

    Raises ValueError, naming the allowed values, for an unknown architecture,
    option or value.
    """
    if architecture not in ARCHITECTURE_OPTIONS:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURE_OPTIONS)}, got {architecture!r}")
    allowed = ARCHITECTURE_OPTIONS[architecture]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {architecture!r}; allowed: {list(allowed)}")
    min_depth = 0 if architecture == "ffnet" else 1
    if not isinstance(depth, (int, np.integer)) or isinstance(depth, bool) or depth < min_depth:
        raise ValueError(f"depth must be an integer ≥ {min_depth} for {architecture!r}, got {depth!r}")
    readout = options.get("readout", "activation")
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {list(READOUTS)}, got {readout!r}")
    branch = options.get("branch", "two")
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {list(BRANCHES)}, got {branch!r}")
    trained = resolve_trained(options.get("trained", "all"))
    dual_ = dual(options.get("activation", "tanh"), options.get("quadrature_nodes"))
    affine = _resolve_affine(options, input_dim)
    alpha = 1.0
    if architecture == "resnet":
        alpha = residual_scale(int(depth), alpha=options.get("alpha"), gamma=options.get("gamma"))
        if branch == "one" and readout == "activation":
            raise ValueError(
                "the one-matrix branch leaves non-Gaussian hidden units (no fresh matrix after σ), "
                "so readout='activation' has no covariance recursion; use readout='linear'"
            )
    homogeneous = dual_.homogeneous and options.get("b_std", 0.0) == 0.0
    return Architecture(architecture, dual_, readout, trained, branch, affine, homogeneous), alpha


def _kernel_inputs(
    x1: ArrayLike, x2: ArrayLike | None, architecture: str, depth: int, options: dict
) -> tuple[tuple[Array, Array, Array], Architecture, float]:
    """The input Gram and resolve_architecture, with the input dimension taken from x1."""
    cross0, left0, right0 = _inputs(x1, x2)
    if "input_dim" in options:
        raise ValueError("input_dim is the inputs' own dimension here; it is an option of the profile functions only")
    arch, alpha = resolve_architecture(architecture, depth, jnp.shape(x1)[1], **options)
    if x2 is None and arch.dual.homogeneous and not arch.homogeneous:
        # ReLU with biases, off the correlation form: its angle arccos(ρ) turns
        # an ulp of x·x against |x|² into √ε ~ 1e−8 on the diagonal; make ρ = 1 there
        cross0 = cross0.at[jnp.diag_indices(cross0.shape[0])].set(left0)
    return (cross0, left0, right0), arch, alpha


def _inputs(x1: ArrayLike, x2: ArrayLike | None) -> tuple[Array, Array, Array]:
    x1 = jnp.asarray(x1, dtype=jnp.float64)
    x2 = x1 if x2 is None else jnp.asarray(x2, dtype=jnp.float64)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 must have shapes (N1, d) and (N2, d), got {x1.shape} and {x2.shape}")
    return x1 @ x2.T, jnp.sum(x1 * x1, axis=1), jnp.sum(x2 * x2, axis=1)


def _rescaled(mantissa: Array, row: Array, col: Array, log_scale: Array) -> Array:
    log_scale = float(log_scale)
    if abs(log_scale) > 700:
        warnings.warn(
            f"the kernel's scale e^{log_scale:.0f} is outside float64's range: the values "
            "under/overflow; use normalized_ntk or ntk_shape for the shape",
            stacklevel=3,
        )
    return mantissa * row[:, None] * col[None, :] * jnp.exp(log_scale)


# ---------------------------------------------------------------------------
# Public kernels
# ---------------------------------------------------------------------------

class Kernels(NamedTuple):
    """The two infinite-width kernels of one network on (x1, x2)."""

    nngp: Float[Array, "n1 n2"]
    ntk: Float[Array, "n1 n2"]


def kernels(
    x1: Float[ArrayLike, "n1 d"], x2: Float[ArrayLike, "n2 d"] | None, architecture: str, depth: int, **options
) -> Kernels:
    """NNGP and NTK of the infinite-width ``architecture`` network on all pairs
    of ``x1 × x2`` (``x2=None``: x1 × x1), in one pass (docs/theory.md §6).

    Args:
        x1, x2: inputs of shape (N1, d), (N2, d), any norms.
        architecture: ``"ffnet"`` or ``"resnet"``.
        depth: as the networks count it — FFNet hidden-to-hidden layers (≥ 0),
            ResNet blocks (≥ 1).
        **options: the networks' own — ``activation`` (default ``"tanh"``),
            ``readout`` (``"activation"``/``"linear"``), ``trained``
            (``"all"``, ``"hidden"`` or a list of groups), and for the ResNet
            ``alpha`` or ``gamma`` (α = depth^(−γ), default γ = 1/2) and
            ``branch`` (``"two"``/``"one"``) — plus ``quadrature_nodes`` for
            tanh, softplus and GELU, and the dense-layer options of
            neural-tangents' ``stax.Dense`` (module docstring,
            docs/neural_tangents.md): ``W_std`` (> 0, default 1), ``b_std``
            (≥ 0, default 0: no biases), ``parameterization`` (``"ntk"`` or
            ``"standard"``, which needs ``width``, the hidden width).

    Returns:
        ``Kernels(nngp, ntk)``, float64 arrays of shape (N1, N2): the limits of
        ``E f(x) f(x′)`` and of ``<∇θ f(x), ∇θ f(x′)>`` over the trained θ.
    """
    (cross0, left0, right0), arch, alpha = _kernel_inputs(x1, x2, architecture, depth, options)
    limit, row, col = _limit(cross0, left0, right0, arch, depth, alpha)
    result = Kernels(
        _rescaled(limit.nngp.cross, row, col, limit.log_scale),
        _rescaled(limit.ntk.cross, row, col, limit.log_scale),
    )
    return Kernels(*map(_symmetrised, result)) if x2 is None else result


def _symmetrised(k: Array) -> Array:
    """x1 × x1: the 2-D quadrature treats u and v asymmetrically, so (x, x′) and
    (x′, x) differ at the quadrature error; average them (exact for closed forms)."""
    return 0.5 * (k + k.T)


def ntk(
    x1: Float[ArrayLike, "n1 d"], x2: Float[ArrayLike, "n2 d"] | None, architecture: str, depth: int, **options
) -> Float[Array, "n1 n2"]:
    """The infinite-width NTK Θ∞(x1, x2) of the network (docs/theory.md §6); the
    arguments are those of :func:`kernels`."""
    return kernels(x1, x2, architecture, depth, **options).ntk


def nngp(
    x1: Float[ArrayLike, "n1 d"], x2: Float[ArrayLike, "n2 d"] | None, architecture: str, depth: int, **options
) -> Float[Array, "n1 n2"]:
    """The NNGP kernel lim E[f(x1) f(x2)] of the network at initialisation
    (docs/theory.md §6); the arguments are those of :func:`kernels`."""
    return kernels(x1, x2, architecture, depth, **options).nngp


def normalized_ntk(
    x1: Float[ArrayLike, "n1 d"], x2: Float[ArrayLike, "n2 d"] | None, architecture: str, depth: int, **options
) -> Float[Array, "n1 n2"]:
    """``Θ(x, x′)/√(Θ(x, x) Θ(x′, x′))``: the NTK's shape, free of its overall
    scale, computed without under/overflow at any depth (the scale of a deep
    plain-ReLU FFNet falls like 2^(−L), a γ = 0 ResNet's grows like 1.5^L)."""
    (cross0, left0, right0), arch, alpha = _kernel_inputs(x1, x2, architecture, depth, options)
    limit, _, _ = _limit(cross0, left0, right0, arch, depth, alpha)
    ntk_ = limit.ntk
    diag = jnp.sqrt(jnp.broadcast_to(ntk_.left, (ntk_.cross.shape[0], 1)) * jnp.broadcast_to(ntk_.right, (1, ntk_.cross.shape[1])))
    normalised = jnp.where(diag > 0, ntk_.cross / jnp.where(diag > 0, diag, 1.0), 0.0)
    return _symmetrised(normalised) if x2 is None else normalised



def _profile(rho: ArrayLike, architecture: str, depth: int, options: dict) -> tuple[_Limit, tuple]:
    rho = jnp.atleast_1d(jnp.asarray(rho, dtype=jnp.float64))
    if rho.ndim != 1 or bool(jnp.any(jnp.abs(rho) > 1)):
        raise ValueError("rho must be a scalar or 1-D array of correlations in [−1, 1]")
    options = dict(options)
    input_dim = options.pop("input_dim", None)
    if input_dim is not None and options.get("parameterization", "ntk") != "standard":
        raise ValueError("input_dim only enters parameterization='standard'")
    arch, alpha = resolve_architecture(architecture, depth, input_dim, **options)
    one = jnp.ones(1)
    limit, _, _ = _limit(rho[:, None], jnp.ones(rho.size), one, arch, depth, alpha)
    return limit, rho.shape


def ntk_profile(rho: float | Float[ArrayLike, " r"], architecture: str, depth: int, **options) -> Float[Array, " r"]:
    """The NTK as a dot-product kernel on the unit sphere: ``k(ρ) = Θ(x, x′)``
    for |x| = |x′| = 1 and x·x′ = ρ (any dimension d). Options as in :func:`kernels`,
    plus ``input_dim`` (= d) with ``parameterization="standard"``, whose first
    layer's NTK term is d·ρ."""
    limit, _ = _profile(rho, architecture, depth, options)
    return limit.ntk.cross[:, 0] * jnp.exp(limit.log_scale)


def nngp_profile(rho: float | Float[ArrayLike, " r"], architecture: str, depth: int, **options) -> Float[Array, " r"]:
    """The NNGP kernel as a dot-product kernel on the unit sphere, like :func:`ntk_profile`."""
    limit, _ = _profile(rho, architecture, depth, options)
    return limit.nngp.cross[:, 0] * jnp.exp(limit.log_scale)


def ntk_shape(rho: float | Float[ArrayLike, " r"], architecture: str, depth: int, **options) -> Float[Array, " r"]:
    """``Θ(ρ)/Θ(1)`` on the unit sphere, safe at any depth (the HWTZ depth-degeneracy curve).

    docs/theory.md §6's table ``Θ_L(0.5)/(L + 1)`` is
    ``ntk_shape(0.5, "ffnet", L − 1, activation="relu")``.
    """
    limit, _ = _profile(rho, architecture, depth, options)
    return limit.ntk.cross[:, 0] / jnp.reshape(limit.ntk.right, ())


__all__ = [
    "ACTIVATION_DERIVATIVES",
    "AbstractDual",
    "Affine",
    "Architecture",
    "DENSE_OPTIONS",
    "ErfDual",
    "Kernels",
    "PARAMETERIZATIONS",
    "QuadratureDual",
    "ReLUDual",
    "arccos",
    "resolve_architecture",
    "dual",
    "kernels",
    "nngp",
    "nngp_profile",
    "normalized_ntk",
    "ntk",
    "ntk_profile",
    "ntk_shape",
]
