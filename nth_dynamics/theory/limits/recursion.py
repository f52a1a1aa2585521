"""The layer recursions of the limit kernels (docs/theory.md §6, §10): the
2×2 covariances of each pair of inputs carried through the FFNet and ResNet
layers (both branches, every readout and trained set), with neural-tangents'
dense-layer options (`Affine`), and the kernels of whole point sets."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .duals import _BLOCK_ELEMENTS, AbstractDual, _correlation

_PAIR_CHUNK = 512  # pairs per chunk in correlation form: the layer loop then runs in L1 cache


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
