"""The empirical kernel tower K2, K3, …, Kp of a network at one parameter point
(MATH.md §2).

    K2(a, b)          = <∇θ f(x_a), ∇θ f(x_b)>
    K(r+1)(a1..ar, b) = <∇θ K(r)(a1..ar), ∇θ f(x_b)>      (new index appended last)

K(r+1)(…, b) is the directional derivative of the map θ ↦ K(r)(θ) along the
tangent g_b = ∇θ f(x_b), so every order is one more forward-mode JVP, batched
over the training directions b, around the previous one. No Hessian and no
Jacobian of all parameters for all points is ever formed: the only
parameter-sized objects alive at once are the tangents of the directions in
flight, so memory is governed by the output and by ``batch_size``.

Note that g_b is itself a function of θ inside the nesting: K4 = D²K2[g3, g4] +
DK2[∇²f(x3) g4], not the symmetric derivative of K2.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .networks import trained_filter

MAX_ORDER = 6
DEFAULT_MEMORY_BUDGET = 4 * 2**30

Tower = tuple[Array, ...]
"""(K2, …, Kp) with ``K_r.shape == (N_eval,) + (n,) * (r − 1)``."""


def kernel_tower(
    model: eqx.Module,
    x_train: Float[Array, "n d"],
    order: int,
    x_eval: Float[Array, "n_eval d"] | None = None,
    *,
    filter_spec: PyTree | None = None,
    batch_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Tower:
    """The kernel tower ``(K2, …, K_order)`` of a scalar-valued model at its
    current parameters (MATH.md §2).

    Args:
        model: any Equinox module mapping one input of shape ``(d,)`` to a
            scalar. It is differentiated with respect to its trained
            parameters: ``filter_spec`` if given, else the model's own
            ``trained_filter()`` (networks of this project), else every
            inexact-array leaf.
        x_train: the training inputs, whose gradients are the directions
            g_b = ∇θ f(x_b) of every trailing index.
        order: the highest kernel order p, 2 ≤ p ≤ 6.
        x_eval: points of the **first** index (train ∪ test, first rows =
            x_train by the project's convention); defaults to ``x_train``.
        batch_size: how many directions b each nesting level processes at
            once. ``n`` vectorises every level (fastest while it fits);
            smaller values loop over chunks with ``lax.map`` and bound the
            parameter-sized tangents alive at once. Default: the largest
            chunk whose :func:`tower_bytes` estimate fits ``memory_budget``.
        memory_budget: bytes the default ``batch_size`` may plan for (one
            model; divide by the ensemble size when vmapping over seeds).

    Returns:
        ``(K2, …, K_order)``; ``K_r.shape == (N_eval,) + (n,) * (r − 1)``.
    """
    x_train = jnp.asarray(x_train)
    x_eval = x_train if x_eval is None else jnp.asarray(x_eval)
    _check_inputs(x_train, x_eval, order)
    if filter_spec is None:
        filter_spec = trained_filter(model)
    params, static = eqx.partition(model, filter_spec)
    n = x_train.shape[0]
    if batch_size is None:
        batch_size = default_batch_size(model, filter_spec, x_eval.shape[0], n, order, memory_budget)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return _tower(params, static, x_train, x_eval, order, min(batch_size, n))


@eqx.filter_jit
def _tower(params, static, x_train, x_eval, order: int, batch_size: int) -> Tower:
    def f(p, x):
        return eqx.combine(p, static)(x)

    def f_eval(p):
        return jax.vmap(f, in_axes=(None, 0))(p, x_eval)

    tangent = jax.grad(f)  # g_b(θ) = ∇θ f(x_b), recomputed at the θ of each level
    vectorised = batch_size >= x_train.shape[0]

    def next_order(kernel: Callable) -> Callable:
        """θ ↦ K(r+1)(θ) from θ ↦ K(r)(θ): one JVP per direction b, b last."""

        def along(p, x_b):
            return jax.jvp(kernel, (p,), (tangent(p, x_b),))[1]

        def kernel_up(p):
            if vectorised:
                stacked = jax.vmap(along, in_axes=(None, 0))(p, x_train)
            else:
                stacked = jax.lax.map(lambda x_b: along(p, x_b), x_train, batch_size=batch_size)
            return jnp.moveaxis(stacked, 0, -1)

        return kernel_up

    kernels = [f_eval]
    for _ in range(2, order + 1):
        kernels.append(next_order(kernels[-1]))
    return tuple(kernel(params) for kernel in kernels[1:])


def parameter_count(model: eqx.Module, filter_spec: PyTree | None = None) -> int:
    """Number of trained scalars of ``model`` (a single model, not an ensemble)."""
    if filter_spec is None:
        filter_spec = trained_filter(model)
    params, _ = eqx.partition(model, filter_spec)
    return sum(leaf.size for leaf in jax.tree.leaves(params) if eqx.is_array(leaf))


def tower_bytes(
    n_eval: int,
    n: int,
    order: int,
    n_params: int,
    *,
    activations: int = 0,
    batch_size: int | None = None,
    itemsize: int = 8,
) -> int:
    """Estimated peak bytes of :func:`kernel_tower` for one model.

    Three terms: the outputs K2…Kp (twice: the direction axis is moved last);
    the parameter-sized tangents alive at once, about ``2 P (B^(p−1) +
    2^(p−1) B)`` for chunks of B directions at each of the p − 1 nesting
    levels; and the forward activations of the points in flight
    (``activations`` numbers stored per input and direction). Calibrated on
    CPU against measured peaks of FFNet and ResNet towers (p = 3, 4): it errs
    on the high side by up to ~3×.
    """
    batch = n if batch_size is None else max(1, min(batch_size, n))
    outputs = sum(n_eval * n ** (r - 1) for r in range(2, order + 1))
    in_flight = batch ** (order - 1) + 2 ** (order - 1) * batch
    tangents = 2 * n_params * in_flight
    forward = 2 ** (order - 1) * batch ** (order - 1) * n_eval * activations
    return itemsize * (2 * outputs + tangents + forward)


def default_batch_size(
    model, filter_spec, n_eval: int, n: int, order: int, budget: int = DEFAULT_MEMORY_BUDGET
) -> int:
    """Largest direction chunk whose :func:`tower_bytes` fits ``budget``; at least 1."""
    n_params = parameter_count(model, filter_spec)
    activations = _activation_count(model)
    for batch in range(n, 0, -1):
        if tower_bytes(n_eval, n, order, n_params, activations=activations, batch_size=batch) <= budget:
            return batch
    return 1


def _activation_count(model) -> int:
    width, depth = getattr(model, "width", 0), getattr(model, "depth", 0)
    return int(width) * (int(depth) + 1) * 2  # pre- and post-activation per layer


def _check_inputs(x_train: Array, x_eval: Array, order: int) -> None:
    if not isinstance(order, int) or isinstance(order, bool) or not 2 <= order <= MAX_ORDER:
        raise ValueError(f"order must be an integer from 2 to {MAX_ORDER}, got {order!r}")
    if x_train.ndim != 2 or x_train.shape[0] == 0:
        raise ValueError(f"x_train must have shape (n, d) with n ≥ 1, got {x_train.shape}")
    if x_eval.ndim != 2 or x_eval.shape[1] != x_train.shape[1]:
        raise ValueError(
            f"x_eval must have shape (N_eval, {x_train.shape[1]}) like x_train, got {x_eval.shape}"
        )


def kernel_magnitudes(tower: Tower) -> Float[Array, " rank"]:
    """max|K(r)| for each kernel of a tower, r = 2…p (MATH.md §4)."""
    return jnp.stack([jnp.max(jnp.abs(kernel)) for kernel in tower])


def lambda_min(ntk: Float[Array, "n_eval n"]) -> Float[Array, ""]:
    """Smallest eigenvalue of the train block of K2 (its first n rows)."""
    n = ntk.shape[-1]
    train_block = ntk[..., :n, :]
    return jnp.linalg.eigvalsh(0.5 * (train_block + jnp.swapaxes(train_block, -1, -2)))[..., 0]

