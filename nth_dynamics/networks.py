"""Fully connected and residual networks in the NTK parametrization (MATH.md §5).

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

import math
import warnings
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

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
            "autodiff, so the kernels K(r≥3) lose their curvature terms (MATH.md §5)",
            stacklevel=3,
        )


class AbstractNetwork(eqx.Module):
    """What every network of the project provides: a scalar ``f(x)`` for one
    input ``x`` of shape ``(d,)``, and the filter of its trained parameters."""

    activation: eqx.AbstractVar[str]
    readout: eqx.AbstractVar[str]
    trained: eqx.AbstractVar[frozenset[str]]
    groups: ClassVar[dict[str, tuple[str, ...]]]
    """Parameter group → names of the fields that belong to it."""

    def sigma(self, u: Array) -> Array:
        return ACTIVATIONS[self.activation](u)

    def output(self, h_last: Float[Array, " width"]) -> Float[Array, ""]:
        feature = self.sigma(h_last) if self.readout == "activation" else h_last
        return jnp.dot(self.a, feature) / math.sqrt(h_last.shape[-1])

    def trained_filter(self) -> AbstractNetwork:
        """A pytree of booleans shaped like the model: True on trained leaves."""
        mask = jax.tree.map(lambda _: False, self)
        for group in self.trained:
            for field in self.groups[group]:
                if getattr(self, field) is not None:  # the one-matrix branch has no V
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
    """Fully connected network with ``depth`` hidden-to-hidden layers (MATH.md §5):

    ``h0 = W0 x``, ``h_l = W_l σ(h_{l−1}) / √m`` for l = 1..L, ``f = a · σ(h_L) / √m``.

    ``depth = 0`` is the two-layer network ``f = a · σ(W0 x) / √m``. Its
    infinite-width NTK is the recursion of MATH.md §6 taken to ``Θ_{L+1}``.
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

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        _check_input(x, self.input_dim)
        sqrt_m = math.sqrt(self.width)

        def layer(h, W_l):
            return W_l @ self.sigma(h) / sqrt_m, None

        h, _ = jax.lax.scan(layer, self.W0 @ x, self.W)
        return self.output(h)


class ResNet(AbstractNetwork):
    """Residual network of ``depth`` blocks with scale α (MATH.md §5):

    ``h0 = W0 x``, then for l = 1..L either the two-matrix branch (HWTZ/BGGB)
    ``h_l = h_{l−1} + α V_l σ(W_l h_{l−1} / √m) / √m`` or the one-matrix branch
    (Du et al./LLY) ``h_l = h_{l−1} + α σ(W_l h_{l−1}) / √m``, and
    ``f = a · σ(h_L) / √m`` (or ``a · h_L / √m`` with ``readout="linear"``).

    Give ``alpha`` directly or ``gamma`` for ``α = depth^(−γ)`` (default γ = 1/2).
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

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        _check_input(x, self.input_dim)
        sqrt_m = math.sqrt(self.width)

        if self.V is None:

            def block(h, W_l):
                return h + self.alpha * self.sigma(W_l @ h) / sqrt_m, None

            h, _ = jax.lax.scan(block, self.W0 @ x, self.W)
        else:

            def block(h, WV_l):
                W_l, V_l = WV_l
                return h + self.alpha * (V_l @ self.sigma(W_l @ h / sqrt_m)) / sqrt_m, None

            h, _ = jax.lax.scan(block, self.W0 @ x, (self.W, self.V))
        return self.output(h)


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
    architecture: str, d: int, width: int, depth: int, keys: PRNGKeyArray, **options
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
        return eqx.filter_vmap(
            lambda key: make_network(architecture, d, width, depth, key=key, **options)
        )(keys)


def trained_filter(model: eqx.Module):
    """The trained-parameter filter of ``model``: its own ``trained_filter()``
    when it has one, otherwise every inexact (floating) array leaf."""
    if isinstance(model, AbstractNetwork):
        return model.trained_filter()
    return jax.tree.map(eqx.is_inexact_array, model)


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
