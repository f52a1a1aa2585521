"""Fully connected and residual networks in the NTK parametrization (docs/theory.md §5).

By default all weights are N(0, 1) at initialisation, there are no biases and
the 1/√width factors live in the forward pass, so the infinite-width limit has
an O(1) kernel. Each network maps one input of shape ``(d,)`` to a scalar. An
ensemble over seeds is one model whose leaves carry a leading seed axis
(:func:`make_ensemble`), to be used with ``eqx.filter_vmap``.

**Dense-layer options** (docs/theory.md §5, docs/neural_tangents.md), those of
neural-tangents' ``stax.Dense`` and of :mod:`nth_dynamics.limits`, on every
dense layer (input, hidden, both matrices of a two-matrix branch, readout),
with fan-in N (d for the first layer, m after it)::

    "ntk":       z = W_std · M v / √N + b_std · b,   M, b ~ N(0, 1)
    "standard":  z = M v + b,   M ~ N(0, W_std²/N),  b ~ N(0, b_std²)

where the first layer's v is √d·x: the project's inputs lie on the unit
sphere and ``h0 = W0 x`` has unit variance, as neural-tangents' first layer
has on inputs of norm √d. The residual scale α multiplies the whole branch.
``b_std`` None or 0 means no bias parameters at all (neural-tangents'
``b_std=None``; the limits' ``b_std=0``); with ``b_std > 0`` every dense
layer has a bias. The defaults ``W_std=1``, no biases, ``"ntk"`` are the
networks of docs/theory.md §5, bit for bit. In the standard parameterization
the trained parameters are the scaled M and b, so the NTK carries the fan-ins
and grows with the width (``nd.limits.ntk(…, width=m)``).

**The laziness scale** ``output_scale`` α (COB; docs/theory.md §9,
:mod:`nth_dynamics.engine.laziness`; not the ResNet's block scale ``alpha``):
the network's ``f(x)`` is the same at every α, and what the references train
is ``f_α = f(x; θ0) + α (f(x; θ) − f(x; θ0))`` on the loss divided by α²; its
:func:`~nth_dynamics.kernel_tower` is the hierarchy's, K(r) / α^(r−2). The
default α = 1 is the network as it always was.

Parameter groups (the ``trained`` option names them):

* ``input``   — ``W0`` (and its bias ``b_W0``), the first layer ``h0 = W0 x``;
* ``hidden``  — the hidden-to-hidden matrices (``W_l``; and ``V_l`` for the
  two-matrix residual branch) and their biases ``b_W``, ``b_V``;
* ``readout`` — ``a`` (and the output bias ``b_a``, shape ``(1,)``), the
  output layer ``f = a · σ(h_L) / √m``.

``trained="all"`` trains every group, ``"hidden"`` only the hidden matrices (the
convention of HWTZ/BGGB for the ResNet kernel), or give a list of groups.
Which parameters are trained changes every kernel: it is part of the model.
"""

from __future__ import annotations

import abc
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Key, PRNGKeyArray, UInt32

from .laziness import check_output_scale

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
PARAMETERIZATIONS = ("ntk", "standard")
"""neural-tangents' two parameterizations of a dense layer (module docstring)."""

_BIAS_OF = {"b_W0": "W0", "b_W": "W", "b_V": "V"}
"""Bias field → the matrix of its layer: ∂f/∂b is the backpropagated signal
at that layer's output (times the bias scale), the u of the matrix's u vᵀ."""

_BIAS_STREAM = 0x62696173  # "bias": the biases' keys are folded off the network key, so
# that W0, W, V, a draw the same numbers with and without biases


def resolve_dense_options(
    W_std: float = 1.0, b_std: float | None = None, parameterization: str = "ntk"
) -> tuple[float, float, str]:
    """Checked ``(W_std, b_std, parameterization)`` of the dense layers, with
    ``b_std`` None turned into 0.0 (no biases). Shared with :mod:`nth_dynamics.limits`.

    Raises ValueError naming the option and what is allowed.
    """
    W_std = _check_real("W_std", W_std, positive=True)
    b_std = 0.0 if b_std is None else _check_real("b_std", b_std, positive=False)
    _check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    return W_std, b_std, parameterization


def _check_real(name: str, value, *, positive: bool) -> float:
    bound = "> 0" if positive else "≥ 0 (or None)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not (
        value > 0 if positive else value >= 0
    ):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


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
    g_k = U_k V_kᵀ (and by U_k alone for the vectors: the readout ``a`` and
    the biases).

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
    W_std: eqx.AbstractVar[float]
    b_std: eqx.AbstractVar[float]
    parameterization: eqx.AbstractVar[str]
    output_scale: eqx.AbstractVar[float]
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

    def weight_scale(self, fan_in: int, *, first: bool = False) -> float:
        """The factor c of a dense layer ``z = c · M v (+ bias)`` (module docstring):
        W_std/√N in the NTK parameterization (W_std for the first layer, whose
        unit-sphere input already gives unit variance), 1 in the standard one
        (its M carries W_std/√N; its first layer takes √d·x, so c = √d)."""
        if self.parameterization == "standard":
            return math.sqrt(fan_in) if first else 1.0
        # W_std · (1/√N), not W_std/√N: with W_std = 1 this is bit for bit the 1/√m of the defaults
        return self.W_std if first else self.W_std * (1 / math.sqrt(fan_in))

    @property
    def bias_scale(self) -> float:
        """∂z/∂b of every bias: b_std (NTK parameterization) or 1 (standard)."""
        return 1.0 if self.parameterization == "standard" else self.b_std

    def output(
        self, h_last: Float[Array, " width"], perturbation: Perturbation | None
    ) -> tuple[Float[Array, ""], Float[Array, " width"]]:
        """f = a · σ(h_L) / √m (or a · h_L / √m) with the dense-layer options
        (times W_std, plus b_std · b_a), and the feature ∂f/∂a."""
        feature = self.sigma(h_last) if self.readout == "activation" else h_last
        if self.parameterization == "ntk":
            # the division as before the options existed, then W_std (× 1.0 is exact)
            feature = self.W_std * (feature / math.sqrt(h_last.shape[-1]))
        a = _moved(self.a, "a", perturbation)
        f = jnp.dot(a, feature)
        b_a = getattr(self, "b_a", None)
        if b_a is not None:
            f = f + self.bias_scale * _moved(b_a, "b_a", perturbation)[0]
        return f, feature

    def gradient_factors(
        self, x: Float[Array, " d"], perturbation: Perturbation | None = None
    ) -> dict[str, tuple[Array, Array | None]]:
        """∇θ f(x) over the trained fields in outer-product form: field →
        (u, v) with ∂f/∂M = u vᵀ for a matrix (stacked over layers for
        ``W``, ``V``) and (∂f/∂b, None) for the vectors (the readout ``a``
        and the biases, stacked over layers for ``b_W``, ``b_V``)."""
        probes = {field: jnp.zeros(getattr(self, field).shape[:-1], self.a.dtype)
                  for field in ("W0", "W", "V") if getattr(self, field, None) is not None}
        signals, inputs = jax.grad(lambda p: self.forward(x, perturbation, p), has_aux=True)(probes)

        def factors(field):
            if field == "a":
                return inputs["a"], None
            if field == "b_a":
                return jnp.full((1,), self.bias_scale, self.a.dtype), None
            if field in _BIAS_OF:
                return self.bias_scale * signals[_BIAS_OF[field]], None
            return signals[field], inputs[field]

        return {field: factors(field) for field in self.trained_fields()}

    def trained_fields(self) -> tuple[str, ...]:
        return _trained_fields(self)

    @property
    def trained_size(self) -> int:
        """Number of trained parameters."""
        return sum(getattr(self, field).size for field in _trained_fields(self))

    def trained_filter(self) -> AbstractNetwork:
        """A pytree of booleans shaped like the model: True on trained leaves."""
        # one traversal keyed on each leaf's field name: a tree_at per field
        # took 0.3 ms, most of a 0.6 ms K2 (FFNet, width 2048, n = 8, CPU)
        fields = frozenset(_trained_fields(self))
        return jax.tree_util.tree_map_with_path(lambda path, _: path[0].name in fields, self)

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

    ``W_std``, ``b_std`` and ``parameterization`` are neural-tangents' dense-layer
    options on every layer (module docstring): in the NTK parameterization
    ``h0 = W_std W0 x + b_std b_W0``, ``h_l = W_std W_l σ(h_{l−1}) / √m + b_std b_W[l]``,
    ``f = W_std a · σ(h_L) / √m + b_std b_a``.
    """

    W0: Float[Array, "width d"]
    W: Float[Array, "depth width width"]
    a: Float[Array, " width"]
    b_W0: Float[Array, " width"] | None
    b_W: Float[Array, "depth width"] | None
    b_a: Float[Array, " 1"] | None
    activation: str = eqx.field(static=True)
    readout: str = eqx.field(static=True)
    trained: frozenset[str] = eqx.field(static=True)
    W_std: float = eqx.field(static=True)
    b_std: float = eqx.field(static=True)
    parameterization: str = eqx.field(static=True)
    output_scale: float = eqx.field(static=True)
    """The laziness scale α (COB; :mod:`nth_dynamics.engine.laziness`): the network
    still computes f, and what is trained is f0 + α (f − f0) on the loss / α²."""
    groups: ClassVar[dict[str, tuple[str, ...]]] = {
        "input": ("W0", "b_W0"),
        "hidden": ("W", "b_W"),
        "readout": ("a", "b_a"),
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
        W_std: float = 1.0,
        b_std: float | None = None,
        parameterization: Literal["ntk", "standard"] = "ntk",
        output_scale: float = 1.0,
        dtype=None,
    ):
        _check_sizes(d, width, depth, min_depth=0)
        _check_activation(activation)
        _check_choice("readout", readout, READOUTS)
        self.W_std, self.b_std, self.parameterization = resolve_dense_options(W_std, b_std, parameterization)
        self.output_scale = check_output_scale(output_scale)
        dtype = dtype or jnp.result_type(float)
        k0, kw, ka = jax.random.split(key, 3)
        self.W0 = jax.random.normal(k0, (width, d), dtype)
        self.W = jax.random.normal(kw, (depth, width, width), dtype)
        self.a = jax.random.normal(ka, (width,), dtype)
        if self.parameterization == "standard":
            self.W0, self.W, self.a = _standard_weights(self.W_std, (self.W0, d), (self.W, width), (self.a, width))
        self.b_W0, self.b_W, self.b_a = _biases(
            key, self.b_std, self.parameterization, ((width,), (depth, width), (1,)), dtype
        )
        self.activation = activation
        self.readout = readout
        self.trained = resolve_trained(trained)

    def forward(self, x, perturbation=None, probes=None):
        scale, bias_scale = self.weight_scale(self.width), self.bias_scale
        term, probe = _layer_terms(perturbation), (probes or {}).get

        def layer(h, per_layer):
            W_l, b_l, factors_l, bias_factors_l, probe_l = per_layer
            phi = self.sigma(h)
            z = _dense(W_l, phi, scale, term.eps, factors_l, probe_l, b_l, bias_scale, bias_factors_l)
            return z, phi * scale

        h0 = _dense(self.W0, x, self.weight_scale(self.input_dim, first=True), term.eps, term("W0"), probe("W0"),
                    self.b_W0, bias_scale, term("b_W0"))
        per_layer = (self.W, self.b_W, term("W", stacked=True), term("b_W", stacked=True), probe("W"))
        h, inputs_W = jax.lax.scan(layer, h0, per_layer)
        f, feature = self.output(h, perturbation)
        return f, {"W0": x * self.weight_scale(self.input_dim, first=True), "W": inputs_W, "a": feature}


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

    ``W_std``, ``b_std`` and ``parameterization`` act on every dense layer
    (module docstring) — ``W0``, both matrices of the branch, the readout —
    and α multiplies the whole branch, its last bias included: in the NTK
    parameterization the two-matrix block is
    ``h + α (W_std V_l σ(W_std W_l h / √m + b_std b_W[l]) / √m + b_std b_V[l])``,
    neural-tangents' ``Dense, σ, Dense`` branch times α.
    """

    W0: Float[Array, "width d"]
    W: Float[Array, "depth width width"]
    V: Float[Array, "depth width width"] | None
    a: Float[Array, " width"]
    b_W0: Float[Array, " width"] | None
    b_W: Float[Array, "depth width"] | None
    b_V: Float[Array, "depth width"] | None
    b_a: Float[Array, " 1"] | None
    alpha: float = eqx.field(static=True)
    branch: str = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    readout: str = eqx.field(static=True)
    trained: frozenset[str] = eqx.field(static=True)
    W_std: float = eqx.field(static=True)
    b_std: float = eqx.field(static=True)
    parameterization: str = eqx.field(static=True)
    output_scale: float = eqx.field(static=True)
    """The laziness scale α (COB; :mod:`nth_dynamics.engine.laziness`): the network
    still computes f, and what is trained is f0 + α (f − f0) on the loss / α²."""
    groups: ClassVar[dict[str, tuple[str, ...]]] = {
        "input": ("W0", "b_W0"),
        "hidden": ("W", "b_W", "V", "b_V"),
        "readout": ("a", "b_a"),
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
        W_std: float = 1.0,
        b_std: float | None = None,
        parameterization: Literal["ntk", "standard"] = "ntk",
        output_scale: float = 1.0,
        dtype=None,
    ):
        _check_sizes(d, width, depth, min_depth=1)
        _check_activation(activation)
        _check_choice("branch", branch, BRANCHES)
        _check_choice("readout", readout, READOUTS)
        self.alpha = residual_scale(depth, alpha=alpha, gamma=gamma)
        self.W_std, self.b_std, self.parameterization = resolve_dense_options(W_std, b_std, parameterization)
        self.output_scale = check_output_scale(output_scale)
        dtype = dtype or jnp.result_type(float)
        k0, kw, kv, ka = jax.random.split(key, 4)
        self.W0 = jax.random.normal(k0, (width, d), dtype)
        self.W = jax.random.normal(kw, (depth, width, width), dtype)
        self.V = jax.random.normal(kv, (depth, width, width), dtype) if branch == "two" else None
        self.a = jax.random.normal(ka, (width,), dtype)
        if self.parameterization == "standard":
            self.W0, self.W, self.a = _standard_weights(self.W_std, (self.W0, d), (self.W, width), (self.a, width))
            if self.V is not None:
                (self.V,) = _standard_weights(self.W_std, (self.V, width))
        self.b_W0, self.b_W, self.b_V, self.b_a = _biases(
            key, self.b_std, self.parameterization,
            ((width,), (depth, width), (depth, width) if branch == "two" else None, (1,)), dtype,
        )
        self.branch = branch
        self.activation = activation
        self.readout = readout
        self.trained = resolve_trained(trained)

    def forward(self, x, perturbation=None, probes=None):
        scale, bias_scale = self.weight_scale(self.width), self.bias_scale
        term, probe = _layer_terms(perturbation), (probes or {}).get

        if self.V is None:

            def block(h, per_layer):
                W_l, b_l, factors_W, bias_factors_W, probe_W = per_layer
                z = _dense(W_l, h, scale, term.eps, factors_W, probe_W, b_l, bias_scale, bias_factors_W)
                return h + self.alpha * self.sigma(z), {"W": h * scale}

            per_layer = (self.W, self.b_W, term("W", stacked=True), term("b_W", stacked=True), probe("W"))
        else:

            def block(h, per_layer):
                W_l, V_l, b_W_l, b_V_l, factors_W, factors_V, bias_factors_W, bias_factors_V, probe_W, probe_V = per_layer
                phi = self.sigma(_dense(W_l, h, scale, term.eps, factors_W, probe_W, b_W_l, bias_scale, bias_factors_W))
                z = _dense(V_l, phi, scale, term.eps, factors_V, probe_V, b_V_l, bias_scale, bias_factors_V)
                return h + self.alpha * z, {"W": h * scale, "V": phi * scale}

            per_layer = (self.W, self.V, self.b_W, self.b_V, term("W", stacked=True), term("V", stacked=True),
                         term("b_W", stacked=True), term("b_V", stacked=True), probe("W"), probe("V"))
        first = self.weight_scale(self.input_dim, first=True)
        h0 = _dense(self.W0, x, first, term.eps, term("W0"), probe("W0"), self.b_W0, bias_scale, term("b_W0"))
        h, inputs = jax.lax.scan(block, h0, per_layer)
        f, feature = self.output(h, perturbation)
        return f, {"W0": x * first, **inputs, "a": feature}


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


def _trained_fields(network: AbstractNetwork) -> tuple[str, ...]:
    """The trained fields of a network, present (not None) and in group order.
    A function, not only the method: Equinox wraps every bound method of a
    module in a module of its own, 0.13 ms per access outside tracing, a
    third of a small K2 (FFNet, width 2048, n = 8, CPU)."""
    return tuple(
        field for group in PARAMETER_GROUPS if group in network.trained
        for field in network.groups[group] if getattr(network, field) is not None
    )


def trained_filter(model: eqx.Module):
    """The trained-parameter filter of ``model``: its own ``trained_filter()``
    when it has one, otherwise every inexact (floating) array leaf."""
    if isinstance(model, AbstractNetwork):
        return type(model).trained_filter(model)  # not the bound method: see _trained_fields
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
        if not stacked:
            return u, v
        # (k, layer, …) → (layer, k, …) so that lax.scan hands each layer its factors
        return jnp.moveaxis(u, 0, 1), None if v is None else jnp.moveaxis(v, 0, 1)


_layer_terms = _LayerTerms


def _dense(
    M: Array, h: Array, scale: float, eps: Array | None, factors, probe: Array | None,
    bias: Array | None = None, bias_scale: float = 1.0, bias_factors=None,
) -> Array:
    """z = scale · (M + Σ_k eps_k U_k V_kᵀ) h + bias_scale · (b + Σ_k eps_k B_k)
    (+ probe), never forming U_k V_kᵀ; no bias term when ``bias`` is None."""
    z = scale * (M @ h)
    if factors is not None:
        U, V = factors
        z = z + scale * (U.T @ (eps * (V @ h)))
    if bias is not None:
        if bias_factors is not None:
            bias = bias + eps @ bias_factors[0]
        z = z + bias_scale * bias
    if probe is not None:
        z = z + probe
    return z


def _moved(vector: Array, field: str, perturbation: Perturbation | None) -> Array:
    """A vector parameter moved by the perturbation: v + Σ_k eps_k U_k."""
    if perturbation is None or field not in perturbation.factors:
        return vector
    return vector + perturbation.eps @ perturbation.factors[field][0]


def _standard_weights(W_std: float, *weights: tuple[Array, int]) -> tuple[Array, ...]:
    """The standard parameterization's weights: the N(0, 1) draws times
    W_std/√fan_in, each given with its fan-in (the same draws as "ntk")."""
    return tuple(M * (W_std / math.sqrt(fan_in)) for M, fan_in in weights)


def _biases(key, b_std: float, parameterization: str, shapes, dtype) -> tuple[Array | None, ...]:
    """One bias per dense layer (shape None: that layer is absent), or all None
    when ``b_std`` is 0. N(0, 1) in the NTK parameterization (b_std is in the
    forward pass), N(0, b_std²) in the standard one. Their keys are folded off
    the network key, so the weights draw the same numbers as without biases."""
    if b_std == 0.0:
        return (None,) * len(shapes)
    keys = jax.random.split(jax.random.fold_in(key, _BIAS_STREAM), len(shapes))
    scale = b_std if parameterization == "standard" else 1.0
    return tuple(
        None if shape is None else scale * jax.random.normal(k, shape, dtype) for k, shape in zip(keys, shapes)
    )


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
