"""The outer-product (structured) kernel tower for Equinox dense models
(docs/theory.md §2): ``eqx.nn.MLP`` read as its ``eqx.nn.Linear`` layers.

The gradient of a scalar output with respect to the weight of a dense layer
``z = W h + b`` is an outer product, ∂f/∂W = δ hᵀ with δ = ∂f/∂z, and with
respect to its bias it is δ itself. So the directions g_b = ∇θ f(x_b) of the
tower are kept as factors (δ, h) per layer, exactly like the project's own
networks (:class:`~nth_dynamics.networks.Perturbation`,
:func:`~nth_dynamics.engine.kernels.factor_gram`), and the structured path of
:func:`~nth_dynamics.kernel_tower` serves these models too.

Which models qualify is decided by :func:`dense_stack`, conservatively: an
``eqx.nn.MLP`` (exact type) of exact ``eqx.nn.Linear`` layers with a vector
input and a scalar output whose activations carry no arrays (a learnt
activation would be a trained parameter outside the layers). Anything else
takes the generic path; a structure that does not reproduce the model's own
output is refused by :func:`reproduces` before the fast path is used.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .networks import Perturbation


class DenseStack(eqx.Module):
    """Dense layers applied in sequence, ``z_l = W_l h_{l−1} + b_l``,
    ``h_l = σ(z_l)`` elementwise for the hidden layers, and
    ``f = final(z_L)`` for the last one, whose output is a scalar.

    The trained fields are ``weight{l}`` and, where the layer has one,
    ``bias{l}`` (l = 0…L): the names of the outer-product factors of
    :meth:`gradient_factors` and of a :class:`Perturbation`.
    """

    layers: tuple[eqx.nn.Linear, ...]
    activation: Callable
    final_activation: Callable | None
    """None: the last layer's output is returned as it is (``eqx.nn.MLP`` of depth 0)."""

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        return self.forward(x)[0]

    def forward(
        self, x: Float[Array, " d"], perturbation: Perturbation | None = None, probes: list | None = None
    ) -> tuple[Float[Array, ""], dict[str, Array]]:
        """f(x) at the parameters moved by ``perturbation``, and the input of
        every layer (``weight{l}`` → h_{l−1}, so that ∂f/∂W_l = δ_l h_{l−1}ᵀ
        with δ_l the gradient at the layer's output, where ``probes`` are added)."""
        inputs = {}
        h = x
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            inputs[f"weight{index}"] = h
            z = _moved_dense(layer, index, h, perturbation)
            if probes is not None:
                z = z + probes[index]
            # the activation is applied to each unit alone, as eqx.nn.MLP does (vmap over units)
            h = jax.vmap(self.activation)(z) if index < last else z
        f = h[0]
        if self.final_activation is not None:
            f = self.final_activation(f)
        return f, inputs

    def gradient_factors(
        self, x: Float[Array, " d"], perturbation: Perturbation | None = None
    ) -> dict[str, tuple[Array, Array | None]]:
        """∇θ f(x) in outer-product form: ``weight{l}`` → (δ_l, h_{l−1}) and
        ``bias{l}`` → (δ_l, None)."""
        dtype = self.layers[0].weight.dtype
        probes = [jnp.zeros(layer.weight.shape[0], dtype) for layer in self.layers]
        signals, inputs = jax.grad(lambda p: self.forward(x, perturbation, p), has_aux=True)(probes)
        factors = {}
        for index, layer in enumerate(self.layers):
            factors[f"weight{index}"] = (signals[index], inputs[f"weight{index}"])
            if layer.bias is not None:
                factors[f"bias{index}"] = (signals[index], None)
        return factors

    @property
    def width(self) -> int:
        return max(layer.weight.shape[0] for layer in self.layers)

    @property
    def trained_size(self) -> int:
        """Number of trained parameters: every weight and bias."""
        return sum(leaf.size for leaf in jax.tree.leaves(self.layers) if eqx.is_array(leaf))

    @property
    def activation_count(self) -> int:
        """Numbers a forward pass stores per point: pre- and post-activation of every unit."""
        return 2 * sum(layer.weight.shape[0] for layer in self.layers)


def _moved_dense(layer: eqx.nn.Linear, index: int, h: Array, perturbation: Perturbation | None) -> Array:
    """(W + Σ_k eps_k U_k V_kᵀ) h + b + Σ_k eps_k u_k, never forming U_k V_kᵀ
    (the dense step of networks.FFNet, plus the bias)."""
    z = layer.weight @ h
    if layer.bias is not None:
        z = z + layer.bias
    if perturbation is None:
        return z
    eps = perturbation.eps
    if f"weight{index}" in perturbation.factors:
        U, V = perturbation.factors[f"weight{index}"]
        z = z + U.T @ (eps * (V @ h))
    if f"bias{index}" in perturbation.factors:
        z = z + eps @ perturbation.factors[f"bias{index}"][0]
    return z


def dense_stack(model) -> DenseStack | None:
    """``model`` as a :class:`DenseStack` when it is certainly one, else None.

    Accepted: an ``eqx.nn.MLP`` (exact type, scanned or not) with an integer
    ``in_size`` and ``out_size="scalar"``, whose layers are exact
    ``eqx.nn.Linear`` with floating weights and whose ``activation`` and
    ``final_activation`` hold no arrays (so that every trained array is a
    weight or a bias of a layer). Subclasses are refused: they may override
    ``__call__``.
    """
    if type(model) is not eqx.nn.MLP:
        return None
    if not isinstance(model.in_size, int) or isinstance(model.in_size, bool) or model.out_size != "scalar":
        return None
    for function in (model.activation, model.final_activation):
        # the leaves themselves, not eqx.filter's rebuilt tree: this runs at every call of the tower
        if any(eqx.is_array(leaf) for leaf in jax.tree.leaves(function)) or not callable(function):
            return None
    layers = list(model.layers)
    if model.scan and model.depth > 0:
        # (input layer, the hidden layers stacked along a leading axis, output layer)
        if len(layers) != 3 or type(layers[1]) is not eqx.nn.Linear:
            return None
        count = layers[1].weight.shape[0]
        hidden = [jax.tree.map(lambda leaf, i=i: leaf[i] if eqx.is_array(leaf) else leaf, layers[1])
                  for i in range(count)]
        layers = [layers[0], *hidden, layers[2]]
    if len(layers) != model.depth + 1:
        return None
    for index, layer in enumerate(layers):
        if type(layer) is not eqx.nn.Linear or layer.in_features == "scalar":
            return None
        if not jnp.issubdtype(layer.weight.dtype, jnp.floating) or layer.weight.ndim != 2:
            return None
        if (layer.bias is None) == layer.use_bias:
            return None
        if (layer.out_features == "scalar") != (index == len(layers) - 1):
            return None
    final = None if model.depth == 0 else model.final_activation  # eqx.nn.MLP of depth 0 skips it
    return DenseStack(tuple(layers), model.activation, final)


def reproduces(stack: DenseStack, model, x: Float[Array, "n d"]) -> bool:
    """Whether ``stack`` computes ``model``'s outputs on the points ``x``
    (to 1e−10 relative), checked only when the model's arrays are concrete:
    under a trace (``filter_vmap`` over an ensemble, ``jit``) the exact type
    checks of :func:`dense_stack` stand alone.

    The answer depends on the structure only (the functions, static fields
    and array shapes of both), so it is remembered per structure: a tower
    that is called again, e.g. at every save of a training run, checks once."""
    if not concrete(model, x):
        return True
    key = structure_key(stack, model)
    if key is not None and key in _REPRODUCED:
        return True
    ours, theirs = _both_outputs(stack, model, x)
    scale = float(jnp.max(jnp.abs(theirs))) + 1e-300
    same = bool(ours.shape == theirs.shape and float(jnp.max(jnp.abs(ours - theirs))) <= 1e-10 * scale)
    if same and key is not None and len(_REPRODUCED) < 1024:
        _REPRODUCED.add(key)
    return same


def concrete(model, x) -> bool:
    """Whether neither the model's leaves nor ``x`` are traced."""
    return not (isinstance(x, jax.core.Tracer) or any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(model)))


_REPRODUCED: set = set()
"""Structures whose stack has reproduced the model (:func:`reproduces`)."""


def structure_key(*trees):
    """Treedefs, non-array leaves and array shapes and dtypes of ``trees``:
    what a property of their structure (not of their values) can be
    remembered by; None if unhashable (then nothing is remembered)."""
    return flat_key(*(jax.tree.flatten(tree) for tree in trees))


def flat_key(*flattened: tuple[list, object]):
    """:func:`structure_key` of trees already flattened, as ``(leaves, treedef)``."""
    parts = []
    for leaves, treedef in flattened:
        parts.append(treedef)
        parts.extend((leaf.shape, leaf.dtype) if eqx.is_array(leaf) else leaf for leaf in leaves)  # str(dtype): 7 µs
    key = tuple(parts)
    try:
        hash(key)
    except TypeError:
        return None
    return key


@eqx.filter_jit
def _both_outputs(stack, model, x):
    return jax.vmap(stack)(x), jax.vmap(model)(x)
