"""Fully connected and residual networks in the NTK parametrization (docs/theory.md §5).

All weights are N(0, 1) at initialisation; the 1/√width factors live in the
forward pass, so the infinite-width limit has an O(1) kernel. Each network maps
one input of shape ``(d,)`` to a scalar. An ensemble over seeds is one model
whose leaves carry a leading seed axis (:func:`make_ensemble`), to be used with
``eqx.filter_vmap``.

Parameter groups (the ``trained`` option names them):

* ``input``   — ``W0``, the first layer ``h0 = W0 x``;
* ``hidden``  — the hidden-to-hidden matrices (``W_l``; and ``V_l`` for the
  two-matrix residual branch);
* ``readout`` — ``a``, the output layer ``f = a · σ(h_L) / √m``.

``trained="all"`` trains every group, ``"hidden"`` only the hidden matrices (the
convention of HWTZ/BGGB for the ResNet kernel), or give a list of groups.
Which parameters are trained changes every kernel: it is part of the model.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Key, PRNGKeyArray, UInt32

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "gelu": lambda u: jax.nn.gelu(u, approximate=False),
    "erf": jax.scipy.special.erf,
    "relu": jax.nn.relu,
}
"""Activation registry: name → elementwise function. The NTH needs smooth
activations with bounded derivatives; ``relu`` is accepted with a warning."""

SMOOTH_ACTIVATIONS = ("tanh", "softplus", "gelu", "erf")
PARAMETER_GROUPS = ("input", "hidden", "readout")
READOUTS = ("activation", "linear")
BRANCHES = ("two", "one")


def resolve_trained(trained: str | Sequence[str]) -> frozenset[str]:
    """The set of trained parameter groups named by a ``trained`` option."""
    if isinstance(trained, str):
        if trained == "all":
            return frozenset(PARAMETER_GROUPS)
        trained = (trained,)
    groups = frozenset(trained)
    unknown = groups - set(PARAMETER_GROUPS)
    if unknown or not groups:
        raise ValueError(
            f"trained must be 'all' or a non-empty subset of {list(PARAMETER_GROUPS)}, "
            f"got {sorted(trained)!r}"
        )
    return groups


def _check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    if name not in SMOOTH_ACTIVATIONS:
        warnings.warn(
            f"activation {name!r} is not smooth: its second derivative vanishes under "
            "autodiff, so the kernels K(r≥3) lose their curvature terms (docs/theory.md §5)",
            stacklevel=3,
        )


class Perturbation(NamedTuple):
    """Parameters moved along outer-product directions: θ + Σ_k eps_k g_k,
    each g_k given for every trained matrix by factors (U_k, V_k) with
    g_k = U_k V_kᵀ (and by U_k alone for the readout vector ``a``).

    The gradient of a network output with respect to a weight matrix is an
    outer product (backpropagated signal ⊗ layer input), so the directions
    g_b = ∇θ f(x_b) of the kernel tower never need to be formed as
    parameter-sized arrays: moving ``W`` along ``u vᵀ`` changes ``W h`` by
    ``u (v · h)``. Most users will not need this: :func:`kernel_tower` uses it.
    """

    eps: Float[Array, " k"]
    factors: dict[str, tuple[Array, Array | None]]
    """field → (U, V) with a leading axis k; V is None for vectors."""

    def add(self, eps: Array, factors: dict[str, tuple[Array, Array | None]]) -> Perturbation:
        """One more direction, with its factors as :meth:`AbstractNetwork.gradient_factors` gives them."""
        def stack(old, new):
            return None if new is None else jnp.concatenate([old, new[None]])

        return Perturbation(
            jnp.concatenate([self.eps, jnp.reshape(eps, (1,))]),
            {field: (stack(self.factors[field][0], u), stack(self.factors[field][1], v))
             for field, (u, v) in factors.items()},
        )

    @staticmethod
    def along(eps: Array, factors: dict[str, tuple[Array, Array | None]]) -> Perturbation:
        """The first direction."""
        return Perturbation(
            jnp.reshape(eps, (1,)),
            {field: (u[None], None if v is None else v[None]) for field, (u, v) in factors.items()},
        )

    @staticmethod
    def combined(previous: Perturbation | None, eps: Array, weights: Float[Array, " n"], factors) -> Perturbation:
        """``previous`` (None: θ itself) moved by eps along G = Σ_b weights_b g_b,
        the combined direction of a reduced-basis index (docs/theory.md §8),
        kept as its n outer products: ``factors`` carry a leading axis n."""
        eps = eps * weights
        if previous is None:
            return Perturbation(eps, factors)

        def stack(old, new):
            return None if new is None else jnp.concatenate([old, new])

        return Perturbation(
            jnp.concatenate([previous.eps, eps]),
            {field: (stack(previous.factors[field][0], u), stack(previous.factors[field][1], v))
             for field, (u, v) in factors.items()},
        )


class AbstractNetwork(eqx.Module):
    """What every network of the project provides: a scalar ``f(x)`` for one
    input ``x`` of shape ``(d,)``, the filter of its trained parameters, and
    its gradient in outer-product form (:meth:`gradient_factors`)."""

    activation: eqx.AbstractVar[str]
    readout: eqx.AbstractVar[str]
    trained: eqx.AbstractVar[frozenset[str]]
    groups: ClassVar[dict[str, tuple[str, ...]]]
    """Parameter group → names of the fields that belong to it."""

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        _check_input(x, self.input_dim)
        return self.forward(x)[0]

    @abc.abstractmethod
    def forward(
        self, x: Float[Array, " d"], perturbation: Perturbation | None = None, probes: dict | None = None
    ) -> tuple[Float[Array, ""], dict[str, Array]]:
        """f(x) at the parameters moved by ``perturbation``, and the scaled
        input of every dense layer (field → v, so that ∂f/∂M = u vᵀ with u the
        gradient at that layer's output, where ``probes`` are added)."""

    def sigma(self, u: Array) -> Array:
        return ACTIVATIONS[self.activation](u)

    def output(
        self, h_last: Float[Array, " width"], perturbation: Perturbation | None
    ) -> tuple[Float[Array, ""], Float[Array, " width"]]:
        """f = a · σ(h_L) / √m (or a · h_L / √m), and the feature σ(h_L)/√m = ∂f/∂a."""
        feature = self.sigma(h_last) if self.readout == "activation" else h_last
        feature = feature / math.sqrt(h_last.shape[-1])
        a = self.a
        if perturbation is not None and "a" in perturbation.factors:
            a = a + perturbation.eps @ perturbation.factors["a"][0]
        return jnp.dot(a, feature), feature

    def gradient_factors(
        self, x: Float[Array, " d"], perturbation: Perturbation | None = None
    ) -> dict[str, tuple[Array, Array | None]]:
        """∇θ f(x) over the trained fields in outer-product form: field →
        (u, v) with ∂f/∂M = u vᵀ for a matrix (stacked over layers for
        ``W``, ``V``) and (∂f/∂a, None) for the readout vector."""
        probes = {field: jnp.zeros(getattr(self, field).shape[:-1], self.a.dtype)
                  for field in ("W0", "W", "V") if getattr(self, field, None) is not None}
        signals, inputs = jax.grad(lambda p: self.forward(x, perturbation, p), has_aux=True)(probes)
        return {
            field: (inputs[field], None) if field == "a" else (signals[field], inputs[field])
            for field in self.trained_fields()
        }

    def trained_fields(self) -> tuple[str, ...]:
        return tuple(
            field for group in PARAMETER_GROUPS if group in self.trained
            for field in self.groups[group] if getattr(self, field) is not None
        )

    def trained_filter(self) -> AbstractNetwork:
        """A pytree of booleans shaped like the model: True on trained leaves."""
        mask = jax.tree.map(lambda _: False, self)
        for field in self.trained_fields():
            mask = eqx.tree_at(lambda m, field=field: getattr(m, field), mask, True)
        return mask

    @property
    def width(self) -> int:
        return self.W0.shape[-2]

    @property
    def depth(self) -> int:
        return self.W.shape[-3]

    @property
    def input_dim(self) -> int:
        return self.W0.shape[-1]


class FFNet(AbstractNetwork):
    """Fully connected network with ``depth`` hidden-to-hidden layers (docs/theory.md §5):

    ``h0 = W0 x``, ``h_l = W_l σ(h_{l−1}) / √m`` for l = 1..L, ``f = a · σ(h_L) / √m``.

    ``depth = 0`` is the two-layer network ``f = a · σ(W0 x) / √m``. Its
    infinite-width NTK is the recursion of docs/theory.md §6 taken to ``Θ_{L+1}``.
    """

    W0: Float[Array, "width d"]
    W: Float[Array, "depth width width"]
    a: Float[Array, " width"]
    activation: str = eqx.field(static=True)
    readout: str = eqx.field(static=True)
    trained: frozenset[str] = eqx.field(static=True)
    groups: ClassVar[dict[str, tuple[str, ...]]] = {
        "input": ("W0",),
        "hidden": ("W",),
        "readout": ("a",),
    }

    def __init__(
        self,
        d: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        activation: str = "tanh",
        readout: Literal["activation", "linear"] = "activation",
        trained: str | Sequence[str] = "all",
        dtype=None,
    ):
        _check_sizes(d, width, depth, min_depth=0)
        _check_activation(activation)
        _check_choice("readout", readout, READOUTS)
        dtype = dtype or jnp.result_type(float)
        k0, kw, ka = jax.random.split(key, 3)
        self.W0 = jax.random.normal(k0, (width, d), dtype)
        self.W = jax.random.normal(kw, (depth, width, width), dtype)
        self.a = jax.random.normal(ka, (width,), dtype)
        self.activation = activation
        self.readout = readout
        self.trained = resolve_trained(trained)

    def forward(self, x, perturbation=None, probes=None):
        scale = 1 / math.sqrt(self.width)
        term, probe = _layer_terms(perturbation), (probes or {}).get

        def layer(h, per_layer):
            W_l, factors_l, probe_l = per_layer
            phi = self.sigma(h)
            return _dense(W_l, phi, scale, term.eps, factors_l, probe_l), phi * scale

        h0 = _dense(self.W0, x, 1.0, term.eps, term("W0"), probe("W0"))
        h, inputs_W = jax.lax.scan(layer, h0, (self.W, term("W", stacked=True), probe("W")))
        f, feature = self.output(h, perturbation)
        return f, {"W0": x, "W": inputs_W, "a": feature}


class ResNet(AbstractNetwork):
    """Residual network of ``depth`` blocks with scale α (docs/theory.md §5):

    ``h0 = W0 x``, then for l = 1..L either the two-matrix branch (HWTZ/BGGB)
    ``h_l = h_{l−1} + α V_l σ(W_l h_{l−1} / √m) / √m`` or the one-matrix branch
    (Du et al./LLY) ``h_l = h_{l−1} + α σ(W_l h_{l−1} / √m)``, and
    ``f = a · σ(h_L) / √m`` (or ``a · h_L / √m`` with ``readout="linear"``).

    Give ``alpha`` directly or ``gamma`` for ``α = depth^(−γ)`` (default γ = 1/2).

    The one-matrix branch scales the pre-activation, not the branch: the
    hidden units here are O(1) per entry, so ``W_l h_{l−1}`` is O(√m), and
    docs/theory.md §5's ``σ(W_l h_{l−1}) / √m`` would saturate a smooth σ and make the
    branch vanish at infinite width. For ReLU the two readings are the same
    function (σ is positively homogeneous); in Du et al., whose hidden vectors
    have O(1) norm rather than O(1) entries, this is their network.
    """

    W0: Float[Array, "width d"]
    W: Float[Array, "depth width width"]
    V: Float[Array, "depth width width"] | None
    a: Float[Array, " width"]
    alpha: float = eqx.field(static=True)
    branch: str = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    readout: str = eqx.field(static=True)
    trained: frozenset[str] = eqx.field(static=True)
    groups: ClassVar[dict[str, tuple[str, ...]]] = {
        "input": ("W0",),
        "hidden": ("W", "V"),
        "readout": ("a",),
    }

    def __init__(
        self,
        d: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        activation: str = "tanh",
        alpha: float | None = None,
        gamma: float | None = None,
        branch: Literal["two", "one"] = "two",
        readout: Literal["activation", "linear"] = "activation",
        trained: str | Sequence[str] = "all",
        dtype=None,
    ):
        _check_sizes(d, width, depth, min_depth=1)
        _check_activation(activation)
        _check_choice("branch", branch, BRANCHES)
        _check_choice("readout", readout, READOUTS)
        self.alpha = residual_scale(depth, alpha=alpha, gamma=gamma)
        dtype = dtype or jnp.result_type(float)
        k0, kw, kv, ka = jax.random.split(key, 4)
        self.W0 = jax.random.normal(k0, (width, d), dtype)
        self.W = jax.random.normal(kw, (depth, width, width), dtype)
        self.V = jax.random.normal(kv, (depth, width, width), dtype) if branch == "two" else None
        self.a = jax.random.normal(ka, (width,), dtype)
        self.branch = branch
        self.activation = activation
        self.readout = readout
        self.trained = resolve_trained(trained)

    def forward(self, x, perturbation=None, probes=None):
        scale = 1 / math.sqrt(self.width)
        term, probe = _layer_terms(perturbation), (probes or {}).get

        if self.V is None:

            def block(h, per_layer):
                W_l, factors_W, probe_W = per_layer
                z = _dense(W_l, h, scale, term.eps, factors_W, probe_W)
                return h + self.alpha * self.sigma(z), {"W": h * scale}

            per_layer = (self.W, term("W", stacked=True), probe("W"))
        else:

            def block(h, per_layer):
                W_l, V_l, factors_W, factors_V, probe_W, probe_V = per_layer
                phi = self.sigma(_dense(W_l, h, scale, term.eps, factors_W, probe_W))
                z = _dense(V_l, phi, scale, term.eps, factors_V, probe_V)
                return h + self.alpha * z, {"W": h * scale, "V": phi * scale}

            per_layer = (self.W, self.V, term("W", stacked=True), term("V", stacked=True),
                         probe("W"), probe("V"))
        h0 = _dense(self.W0, x, 1.0, term.eps, term("W0"), probe("W0"))
        h, inputs = jax.lax.scan(block, h0, per_layer)
        f, feature = self.output(h, perturbation)
        return f, {"W0": x, **inputs, "a": feature}


ARCHITECTURES: dict[str, type[AbstractNetwork]] = {"ffnet": FFNet, "resnet": ResNet}


def residual_scale(depth: int, *, alpha: float | None = None, gamma: float | None = None) -> float:
    """The block scale α: given directly, or ``α = depth^(−γ)`` (default γ = 1/2)."""
    if alpha is not None and gamma is not None:
        raise ValueError("give either alpha or gamma for the residual scale, not both")
    if alpha is not None:
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        return float(alpha)
    gamma = 0.5 if gamma is None else gamma
    if not gamma >= 0:
        raise ValueError(f"gamma must be non-negative, got {gamma}")
    return float(depth ** (-gamma))


def make_network(architecture: str, d: int, width: int, depth: int, *, key: PRNGKeyArray, **options):
    """One network of the named architecture (``"ffnet"`` or ``"resnet"``)."""
    _check_choice("architecture", architecture, tuple(ARCHITECTURES))
    return ARCHITECTURES[architecture](d, width, depth, key=key, **options)


def make_ensemble(
    architecture: str, d: int, width: int, depth: int, keys: Key[Array, " seed"] | UInt32[Array, "seed 2"], **options
):
    """An ensemble over seeds as one model whose leaves have a leading seed axis.

    ``keys`` has shape ``(n_seeds,)`` (typed keys) or ``(n_seeds, 2)``. Use the
    result with ``eqx.filter_vmap``: one compilation serves every seed.
    """
    if options.get("activation") == "relu":
        # warn once here, not once per trace inside the vmap
        _check_activation("relu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # one network per seed, then stacked: the same as filter_vmap over the
        # keys, without compiling a batched initialiser for every new width
        members = [make_network(architecture, d, width, depth, key=key, **options) for key in keys]
    return stack_ensemble(members)


def stack_ensemble(members: Sequence[eqx.Module]) -> eqx.Module:
    """Models of one structure (one per seed) as one model whose array leaves
    have a leading seed axis. The static parts (functions, options) are the
    first member's: members built by one factory may hold equal but distinct
    function objects (a closure made per call), so only the arrays are matched."""
    arrays = [jax.tree.leaves(eqx.filter(member, eqx.is_array)) for member in members]
    shapes = [[(leaf.shape, leaf.dtype) for leaf in leaves] for leaves in arrays]
    if any(other != shapes[0] for other in shapes[1:]):
        raise ValueError("the members of an ensemble must have the same array leaves (shapes and dtypes) in the same order")
    treedef = jax.tree.structure(eqx.filter(members[0], eqx.is_array))
    static = eqx.filter(members[0], eqx.is_array, inverse=True)
    return eqx.combine(jax.tree.unflatten(treedef, [jnp.stack(column) for column in zip(*arrays)]), static)


def parameter_counts(architecture: str, d: int, width: int, depth: int, **options) -> tuple[int, int]:
    """(all parameters, trained parameters) of the network :func:`make_network`
    would build, from shapes only (nothing is allocated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the ReLU warning: counting is not training
        shapes = jax.eval_shape(lambda key: make_network(architecture, d, width, depth, key=key, **options), jax.random.key(0))
    sizes = [math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes)]
    flags = jax.tree.leaves(shapes.trained_filter())
    return sum(sizes), sum(size for size, flag in zip(sizes, flags) if flag)


def trained_filter(model: eqx.Module):
    """The trained-parameter filter of ``model``: its own ``trained_filter()``
    when it has one, otherwise every inexact (floating) array leaf."""
    if isinstance(model, AbstractNetwork):
        return model.trained_filter()
    return jax.tree.map(eqx.is_inexact_array, model)


class _LayerTerms:
    """The perturbation's factors of one field, arranged for a layer scan."""

    def __init__(self, perturbation: Perturbation | None):
        self.perturbation = perturbation
        self.eps = None if perturbation is None else perturbation.eps

    def __call__(self, field: str, stacked: bool = False):
        if self.perturbation is None or field not in self.perturbation.factors:
            return None
        u, v = self.perturbation.factors[field]
        # (k, layer, …) → (layer, k, …) so that lax.scan hands each layer its factors
        return (jnp.moveaxis(u, 0, 1), jnp.moveaxis(v, 0, 1)) if stacked else (u, v)


_layer_terms = _LayerTerms


def _dense(M: Array, h: Array, scale: float, eps: Array | None, factors, probe: Array | None) -> Array:
    """z = scale · (M + Σ_k eps_k U_k V_kᵀ) h (+ probe), never forming U_k V_kᵀ."""
    z = scale * (M @ h)
    if factors is not None:
        U, V = factors
        z = z + scale * (U.T @ (eps * (V @ h)))
    if probe is not None:
        z = z + probe
    return z


def _check_sizes(d: int, width: int, depth: int, *, min_depth: int) -> None:
    for name, value, low in (("d", d, 1), ("width", width, 1), ("depth", depth, min_depth)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _check_input(x: Array, d: int) -> None:
    if x.shape != (d,):
        raise ValueError(
            f"a network maps one input of shape ({d},) to a scalar, got shape {x.shape}; "
            "use jax.vmap over a batch"
        )
