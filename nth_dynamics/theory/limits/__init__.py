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

**Dense-layer options** (docs/theory.md §10; the same options of the finite
networks, :mod:`nth_dynamics.engine.networks`, converge to these kernels as
the width grows). ``W_std``, ``b_std`` and
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

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .duals import (  # noqa: F401  (the public names of nd.limits)
    ACTIVATION_DERIVATIVES,
    DEFAULT_QUADRATURE_NODES,
    AbstractDual,
    ErfDual,
    QuadratureDual,
    ReLUDual,
    arccos,
    dual,
)
from .options import (  # noqa: F401
    ARCHITECTURE_OPTIONS,
    DENSE_OPTIONS,
    PARAMETERIZATIONS,
    _kernel_inputs,
    _rescaled,
    resolve_architecture,
)
from .recursion import Affine, Architecture, Gram, _Limit, _limit, _propagate  # noqa: F401


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
            (≥ 0 or None, default 0; 0 and None: no biases), ``parameterization`` (``"ntk"`` or
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
    "DENSE_OPTIONS",
    "PARAMETERIZATIONS",
    "AbstractDual",
    "Affine",
    "Architecture",
    "ErfDual",
    "Kernels",
    "QuadratureDual",
    "ReLUDual",
    "arccos",
    "dual",
    "kernels",
    "nngp",
    "nngp_profile",
    "normalized_ntk",
    "ntk",
    "ntk_profile",
    "ntk_shape",
    "resolve_architecture",
]
