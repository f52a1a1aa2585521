"""The empirical kernel tower K2, K3, …, Kp of a network at one parameter point
(docs/theory.md §2).

    K2(a, b)          = <∇θ f(x_a), ∇θ f(x_b)>
    K(r+1)(a1..ar, b) = <∇θ K(r)(a1..ar), ∇θ f(x_b)>      (new index appended last)

K(r+1)(…, b) is the directional derivative of the map θ ↦ K(r)(θ) along the
tangent g_b = ∇θ f(x_b), so every order is one more forward-mode JVP, batched
over the training directions b, around the previous one. No Hessian is ever
formed.

Two paths (docs/theory.md §2): the generic one, for any Equinox module,
computes K2(θ) = J_eval(θ) J_train(θ)ᵀ from the per-point gradients (chunked
over evaluation points when they do not fit ``memory_budget``) and every
higher order as JVPs of that map (forward-over-reverse); the structured one,
for the project's networks and ``eqx.nn.MLP`` (:mod:`.dense`), keeps every
gradient as per-layer outer-product factors and forms no parameter-sized
array. The generic K2 also takes, leaf by leaf, the dense layers it can
read off any model's jaxpr as outer products (:mod:`.structure`,
:func:`dense_leaves`), the same kernel for less work. Memory is planned
from :func:`tower_bytes` before anything is allocated.

Note that g_b is itself a function of θ inside the nesting: K4 = D²K2[g3, g4] +
DK2[∇²f(x3) g4], not the symmetric derivative of K2.

The projected tower (docs/theory.md §8) keeps K2 whole and replaces every
trailing index from the third on by a reduced-basis index j: the same JVPs,
taken along the k combined directions G_j(θ) = Σ_b V[b, j] g_b(θ) =
∇θ(v_jᵀ f(X; θ)) instead of the n directions g_b, so that

    K̂(r)(a1, a2, j3..jr) = Σ K(r)(a1, a2, b3..br) V[b3, j3] … V[br, jr]

costs N_eval·n·k^(r−2) instead of N_eval·n^(r−1) and the full K(r) is never formed.
"""

from __future__ import annotations

import enum
import functools
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PyTree

from . import structure
from .basis import check_basis
from .dense import DenseStack, concrete, dense_stack, flat_key, reproduces
from .laziness import lazy_tower, output_scale
from .networks import AbstractNetwork, Perturbation, trained_filter

MAX_ORDER = 6
DEFAULT_MEMORY_BUDGET = 4 * 2**30

Tower = tuple[Array, ...]
"""(K2, …, Kp) with ``K_r.shape == (N_eval,) + (n,) * (r − 1)``; projected on a
basis of rank k, ``K̂_r.shape == (N_eval, n) + (k,) * (r − 2)`` for r ≥ 3."""


def kernel_tower(
    model: eqx.Module,
    x_train: Float[Array, "n d"],
    order: int,
    x_eval: Float[Array, "n_eval d"] | None = None,
    *,
    basis: Float[Array, "n k"] | None = None,
    filter_spec: PyTree | None = None,
    batch_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Tower:
    """The kernel tower ``(K2, …, K_order)`` of a scalar-valued model at its
    current parameters (docs/theory.md §2).

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
        basis: V of shape (n, k) with orthonormal columns
            (:func:`~nth_dynamics.residual_basis`): return the projected tower
            of docs/theory.md §8, K2 whole and every index from the third on
            along the combined directions G_j = ∇θ(v_jᵀ f(X; θ)). None (the
            default) gives the full tower.
        batch_size: how many directions b each nesting level processes at
            once. ``n`` vectorises every level;
            smaller values loop over chunks with ``lax.map`` and bound the
            parameter-sized tangents alive at once; rounded down to a
            divisor of n (:func:`direction_chunk`) for the directions g_b;
            the k combined directions of a projected level run in chunks
            of min(batch_size, k), the last one padded. Default: the largest
            such chunk whose :func:`tower_bytes` estimate fits ``memory_budget``
            and whose buffers in flight stay within :data:`VECTORISED_BYTES`
            (a larger vectorised chunk is slower on CPU). On the generic path,
            when even one direction does not fit, the evaluation points'
            gradients are also taken in chunks.
        memory_budget: bytes the default ``batch_size`` may plan for (one
            model; divide by the ensemble size when vmapping over seeds).

    Returns:
        ``(K2, …, K_order)``; ``K_r.shape == (N_eval,) + (n,) * (r − 1)``, or
        with a basis ``(N_eval, n) + (k,) * (r − 2)`` for r ≥ 3. For a
        network with ``output_scale`` α ≠ 1, the tower of the hierarchy of
        what it trains, f0 + α (f − f0) on the loss / α², in that loss's
        time: K̃(r) = K(r) / α^(r−2) of its f (docs/theory.md §9,
        :func:`~nth_dynamics.engine.laziness.lazy_tower`), the tower
        :func:`~nth_dynamics.solve_nth` takes for it; K2 is the NTK of f.

    Raises:
        ValueError: for a bad order, input shapes or basis (wrong shape, or
            columns not orthonormal).
    """
    x_train = _as_array(x_train)
    x_eval = x_train if x_eval is None else _as_array(x_eval)
    _check_inputs(x_train, x_eval, order)
    basis = None if basis is None else check_basis(basis, x_train.shape[0])
    rank = None if basis is None else basis.shape[1]
    flat = jax.tree_util.tree_flatten(model)  # once: Equinox flattens slowly (~4 µs for two leaves)
    factored, trained, chunks = _planned(model, x_train, x_eval, order, rank, filter_spec, batch_size, memory_budget,
                                         flat=flat)
    x_eval = None if x_eval is x_train else x_eval
    if factored is None:
        tower = _dispatch(_tower, model, trained, (x_train, x_eval, order, chunks, basis), flat=flat)
    else:  # the model itself, read as outer-product factors inside the compiled tower
        path = _structured_tower if isinstance(factored, AbstractNetwork) else _stack_tower
        tower = _dispatch(path, factored, None, (x_train, x_eval, order, chunks, basis), flat=flat)
    # a network trained lazily: the tower of its hierarchy, not of f (docs/theory.md §9)
    return lazy_tower(tower, output_scale(model))


def _planned(model, x_train, x_eval, order: int, rank: int | None, filter_spec, batch_size: int | None,
             memory_budget: int, flat: tuple | None = None) -> tuple:
    """What :func:`kernel_tower` runs, for inputs already checked: the model
    for the structured path (:func:`_factored_model`; None: the generic path), the trained leaves (the
    generic path; else None) and the chunks: of the n directions g_b (a
    divisor of n), of the k combined directions G_j (any size:
    :func:`_chunked` pads them with zero directions; None without a basis)
    and, on the generic path, of the evaluation points. ``flat``: the model
    already flattened."""
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    # a filter_spec may be any pytree of callables: no key
    structure = None if filter_spec is not None else flat_key(flat or jax.tree_util.tree_flatten(model))
    factored = _factored_model(model, filter_spec, x_train, structure)
    key = None
    if structure is not None:
        kind = None if factored is None else type(factored)
        key = (kind, x_train.shape, x_eval.shape, order, rank, batch_size, memory_budget, structure)
        if key in _PLANS:
            return (factored,) + _PLANS[key]
    plan = _plan_anew(model, factored, x_train, x_eval, order, rank, filter_spec, batch_size, memory_budget)
    if key is not None and len(_PLANS) < 1024:
        _PLANS[key] = plan
    return (factored,) + plan


_PLANS: dict = {}
"""Plans of :func:`_planned` (trained leaves, chunks) by the structure of the
model (:func:`~nth_dynamics.engine.dense.structure_key`) and the arguments: they depend on nothing
else, and planning again cost ~30 µs per call, a tenth of a small K2."""


def _plan_anew(model, factored, x_train, x_eval, order: int, rank: int | None, filter_spec, batch_size: int | None,
               memory_budget: int) -> tuple:
    """(trained leaves, chunks) of :func:`_planned`, computed."""
    trained = None if factored is not None else _trained_leaves(model, filter_spec)
    n_eval, n = x_eval.shape[0], x_train.shape[0]
    if factored is not None:
        factored = factored if isinstance(factored, AbstractNetwork) else dense_stack(factored)
        n_params = factored.trained_size  # the structured path needs no partition
    else:
        n_params = sum(leaf.size for leaf, flag in zip(jax.tree.leaves(model), trained) if flag)
    planned, point_chunk = _plan(
        model, filter_spec, n_eval, n, order, memory_budget, rank=rank,
        structured=factored is not None, batch_size=batch_size, speed=True,
        activations=factored.activation_count if isinstance(factored, DenseStack) else None,
        n_params=n_params,
    )
    batch_size = planned if batch_size is None else batch_size
    chunks = (direction_chunk(n, batch_size), None if rank is None else min(batch_size, rank))
    return trained, chunks if factored is not None else chunks + (point_chunk,)


def basis_chunk(
    model: eqx.Module,
    x_train: Float[Array, "n d"],
    order: int,
    rank: int,
    x_eval: Float[Array, "n_eval d"] | None = None,
    *,
    filter_spec: PyTree | None = None,
    batch_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> int:
    """How many of the k = ``rank`` combined directions each projected level of
    ``kernel_tower(model, x_train, order, x_eval, basis=V)`` takes at once,
    with the same options: a rank that is a whole number of chunks wastes no
    padded direction (:func:`~nth_dynamics.reduced_hierarchy` rounds to it)."""
    x_train = _as_array(x_train)
    x_eval = x_train if x_eval is None else _as_array(x_eval)
    _check_inputs(x_train, x_eval, order)
    return _planned(model, x_train, x_eval, order, rank, filter_spec, batch_size, memory_budget)[2][1]


def _as_array(x: ArrayLike) -> Array:
    return x if isinstance(x, jax.Array) else jnp.asarray(x)  # asarray of an Array still costs ~10 µs


class _Leaf(enum.Enum):
    """Placeholders of the array leaves in a compilation key."""

    TRAINED = "trained"
    FROZEN = "frozen"


def _trained_leaves(model: eqx.Module, filter_spec: PyTree | None) -> list[bool]:
    """For each leaf of ``model`` (``jax.tree.leaves`` order), whether it is a
    trained array: ``filter_spec`` if given, else the model's own
    ``trained_filter()`` or every inexact-array leaf (the generic path)."""
    leaves = jax.tree.leaves(model)
    if filter_spec is None and not isinstance(model, AbstractNetwork):
        return [eqx.is_inexact_array(leaf) for leaf in leaves]
    spec = trained_filter(model) if filter_spec is None else filter_spec
    kept = jax.tree.leaves(eqx.filter(model, spec, replace=_Leaf.FROZEN))  # one leaf for each of model's
    return [eqx.is_array(leaf) and flag is not _Leaf.FROZEN for leaf, flag in zip(leaves, kept, strict=True)]


def _dispatch(path: Callable, model: eqx.Module, trained: list[bool] | None, arguments: tuple,
              flat: tuple | None = None) -> Tower:
    """``path(model, *arguments)`` (with ``trained``, one flag per leaf:
    ``path(params, static, *arguments)``, params the trained leaves)
    compiled, at ``jax.jit``'s dispatch cost: the model is flattened once,
    its array leaves traced and the rest (treedef and non-array leaves) the
    compilation key. ``eqx.filter_jit`` and ``eqx.partition`` did the same
    for 0.2–0.3 ms more per call, half of a small K2 (two-layer MLP, width
    2048, n = 8, CPU). ``flat``: the model already flattened."""
    leaves, treedef = flat or jax.tree_util.tree_flatten(model)
    flags = [False] * len(leaves) if trained is None else trained
    arrays = [leaf for leaf in leaves if eqx.is_array(leaf)]
    key = tuple(
        leaf if not eqx.is_array(leaf) else _Leaf.TRAINED if flag else _Leaf.FROZEN
        for leaf, flag in zip(leaves, flags, strict=True)
    )
    try:
        hash(key)
    except TypeError:  # eqx.filter_jit refuses these too
        kind = next(type(leaf).__name__ for leaf in key if not _hashable(leaf))
        raise ValueError(
            f"{type(model).__name__} has a non-array leaf of type {kind} that is not hashable, so it cannot "
            "key the compiled tower: make it an array or a hashable value"
        ) from None
    x_train, x_eval, order, chunks, basis = arguments
    return _compiled(path, arrays, x_train, x_eval, basis, treedef=treedef, key=key, split=trained is not None,
                     order=order, chunks=chunks)


@functools.partial(jax.jit, static_argnames=("path", "treedef", "key", "split", "order", "chunks"))
def _compiled(path, arrays, x_train, x_eval, basis, *, treedef, key, split, order, chunks) -> Tower:
    supply = iter(arrays)
    leaves = [next(supply) if isinstance(leaf, _Leaf) else leaf for leaf in key]
    if split:
        params = treedef.unflatten([v if k is _Leaf.TRAINED else None for v, k in zip(leaves, key)])
        static = treedef.unflatten([None if k is _Leaf.TRAINED else v for v, k in zip(leaves, key)])
        return path(params, static, x_train, x_eval, order, chunks, basis)
    return path(treedef.unflatten(leaves), x_train, x_eval, order, chunks, basis)


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def structured_path(model: eqx.Module, filter_spec: PyTree | None) -> bool:
    """Whether :func:`kernel_tower` takes the outer-product path: the
    project's networks and the Equinox dense models of
    :func:`~nth_dynamics.engine.dense.dense_stack` (``eqx.nn.MLP``), with
    their own trained set (no ``filter_spec``); any other model or filter
    takes the generic path. Memory plans (:func:`default_batch_size`) ask the
    same question here."""
    if filter_spec is not None:
        return False
    return isinstance(model, AbstractNetwork) or dense_stack(model) is not None


def _factored_model(model: eqx.Module, filter_spec: PyTree | None, x_train: Array, structure=None):
    """The model if it takes the structured path (a project network, or an
    Equinox dense model, read as its :class:`~nth_dynamics.engine.dense.DenseStack`
    inside the compiled tower: :func:`_stack_tower`), or None for the generic
    one. A dense stack is used only if it reproduces the model's outputs on
    the training points (:func:`~nth_dynamics.engine.dense.reproduces`): a
    structure that does not falls back to the generic path, never to a wrong
    kernel. ``structure`` (:func:`~nth_dynamics.engine.dense.structure_key`
    of the model, if hashable) remembers the models that passed both checks."""
    if filter_spec is not None:
        return None
    if isinstance(model, AbstractNetwork):
        return model
    if structure is not None and structure in _STACKED:
        return model
    stack = dense_stack(model)
    if stack is None:
        return None
    if not reproduces(stack, model, x_train):
        warnings.warn(
            f"{type(model).__name__}: its dense layers do not reproduce its outputs; "
            "the kernel tower takes the generic path", stacklevel=3,
        )
        return None
    if structure is not None and concrete(model, x_train) and len(_STACKED) < 1024:
        _STACKED.add(structure)  # under a trace reproduces() checks nothing: nothing to remember
    return model


_STACKED: set = set()
"""Structures of Equinox models whose dense stack was accepted and reproduced
them on concrete arrays: both checks depend on the structure alone, and
reading the model again cost ~60 µs a call (Equinox attribute access and a
new module), half of a small K2 of ``eqx.nn.MLP``."""


def _stack_tower(model: eqx.Module, x_train, x_eval, order: int, chunks: tuple, basis) -> Tower:
    """:func:`_structured_tower` of an Equinox dense model's
    :class:`~nth_dynamics.engine.dense.DenseStack`, built while tracing."""
    return _structured_tower(dense_stack(model), x_train, x_eval, order, chunks, basis)


def _chunked(along: Callable, directions, batch_size: int) -> Array:
    """``along`` over the leading axis of ``directions`` (the weights of the
    combined directions G_j), vectorised or in ``lax.map`` chunks, stacked
    with the direction axis moved last.

    ``along`` is linear in its direction, so a zero row gives a zero result:
    the rows are padded with zeros to a multiple of ``batch_size`` and the
    padding is dropped afterwards. Rounding the chunk down to a divisor of k
    instead (as the n directions are, :func:`direction_chunk`) would run a
    prime k one direction at a time: measured at n = 128, k = 13, where the
    memory plan allowed chunks of 4, that was the whole projected tower."""
    k = directions.shape[0]
    if batch_size >= k:
        stacked = jax.vmap(along)(directions)
    else:
        padding = -k % batch_size  # a remainder would be a second, separately vmapped program (direction_chunk)
        padded = jnp.concatenate([directions, jnp.zeros((padding,) + directions.shape[1:], directions.dtype)])
        stacked = _mapped(along, padded, batch_size)[:k]
    return jnp.moveaxis(stacked, 0, -1)


def _mapped(along: Callable, xs, batch_size: int) -> Array:
    """``lax.map`` in chunks of ``batch_size``; a chunk of 1 is a plain scan,
    without the size-1 vmap that ``batch_size=1`` adds: measured 1.6–1.9×
    faster on the tower to K4 (two-layer MLP, width 2048, n = 8, CPU)."""
    return jax.lax.map(along, xs, batch_size=None if batch_size == 1 else batch_size)


def _tower(params, static, x_train, x_eval, order: int, chunks: tuple, basis) -> Tower:
    """The generic path: K2(θ) = J_eval(θ) J_train(θ)ᵀ from the per-point
    gradients of the trained leaves (:func:`leaf_gram`), ``x_eval`` None
    meaning the training points, in chunks of ``point_chunk`` evaluation
    points when their gradients do not fit at once; every higher order one
    JVP of θ ↦ K(r)(θ) per direction (forward-over-reverse from K3 on)."""
    batch_size, basis_chunk, point_chunk = chunks

    def f(p, x):
        return eqx.combine(p, static)(x)

    def f_train(p):
        return jax.vmap(f, in_axes=(None, 0))(p, x_train)

    tangent = jax.grad(f)  # g_b(θ) = ∇θ f(x_b), recomputed at the θ of each level
    vectorised = batch_size >= x_train.shape[0]

    def gradients(p, points):
        return jax.vmap(tangent, in_axes=(None, 0))(p, points)

    def gram_of(per_point: Callable, gram: Callable) -> Callable:
        """θ ↦ K2(θ) from per-point gradients (in some form) and their Gram."""

        def k2(p):
            train = per_point(p, x_train)
            if x_eval is None:
                return gram(train, train)
            n_eval = x_eval.shape[0]
            if point_chunk >= n_eval:
                return gram(per_point(p, x_eval), train)
            # point_chunk divides n_eval (direction_chunk): no remainder program
            blocks = x_eval.reshape((n_eval // point_chunk, point_chunk) + x_eval.shape[1:])
            rows = jax.lax.map(lambda points: gram(per_point(p, points), train), blocks)
            return rows.reshape((n_eval, x_train.shape[0]))

        return k2

    k2 = gram_of(gradients, leaf_gram)
    uses = _dense_uses(params, static, x_train)
    if uses is None or (x_eval is not None and x_eval.dtype != x_train.dtype):  # traced for x_train's dtype
        returned_k2 = k2
    else:  # dense leaves as outer products (structure.py); the higher orders differentiate the plain k2
        returned_k2 = gram_of(
            lambda p, points: uses.gradients(jax.tree.leaves(p), points),
            lambda first, second: uses.gram(first, second) + (leaf_gram(first[2], second[2]) if uses.rest else 0.0),
        )

    def next_order(kernel: Callable) -> Callable:
        """θ ↦ K(r+1)(θ) from θ ↦ K(r)(θ): one JVP per direction b, b last."""

        def along(p, x_b):
            return jax.jvp(kernel, (p,), (tangent(p, x_b),))[1]

        def kernel_up(p):
            if vectorised:
                stacked = jax.vmap(along, in_axes=(None, 0))(p, x_train)
            else:
                stacked = _mapped(lambda x_b: along(p, x_b), x_train, batch_size)
            return jnp.moveaxis(stacked, 0, -1)

        return kernel_up

    def next_projected_order(kernel: Callable) -> Callable:
        """θ ↦ K̂(r+1)(θ): one JVP per combined direction G_j(θ) = ∇θ(v_jᵀ f(X; θ)),
        all k of them pulled back through one VJP of f on the training points."""

        def kernel_up(p):
            _, pullback = jax.vjp(f_train, p)

            def along(weights):
                return jax.jvp(kernel, (p,), pullback(weights))[1]

            return _chunked(along, basis.T, basis_chunk)

        return kernel_up

    kernels = [k2]
    for _ in range(3, order + 1):
        kernels.append(next_order(kernels[-1]) if basis is None else next_projected_order(kernels[-1]))
    return (returned_k2(params),) + tuple(kernel(params) for kernel in kernels[1:])


def _dense_uses(params, static, x_train) -> structure.DenseUses | None:
    """The dense uses of the trained leaves (``params``, in ``jax.tree.leaves``
    order) in the per-point f of ``eqx.combine(params, static)``: what the
    generic K2 takes as outer products (:mod:`.structure`)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def f(leaves, x):
        return eqx.combine(treedef.unflatten(leaves), static)(x)

    return structure.find(f, leaves, jax.ShapeDtypeStruct(x_train.shape[1:], x_train.dtype))


def dense_leaves(model: eqx.Module, x_train: Float[Array, "n d"], filter_spec: PyTree | None = None) -> tuple[str, ...]:
    """The trained leaves (``jax.tree_util.keystr`` paths) whose K2 term the
    generic path computes as outer products of small factors
    (:mod:`.structure`); every other trained leaf keeps its full per-point
    gradient. Empty for a model on the structured path
    (:func:`structured_path`), which factors every layer itself."""
    if _factored_model(model, filter_spec, _as_array(x_train)) is not None:
        return ()
    trained = _trained_leaves(model, filter_spec)
    leaves, treedef = jax.tree_util.tree_flatten(model)
    params = treedef.unflatten([leaf if flag else None for leaf, flag in zip(leaves, trained)])
    static = treedef.unflatten([None if flag else leaf for leaf, flag in zip(leaves, trained)])
    uses = _dense_uses(params, static, _as_array(x_train))
    if uses is None:
        return ()
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return tuple(paths[i] for i in sorted(uses.structured))


def _structured_tower(model: AbstractNetwork | DenseStack, x_train, x_eval, order: int, chunks: tuple, basis) -> Tower:
    """The same tower for the project's networks and for Equinox dense models
    (:class:`~nth_dynamics.engine.dense.DenseStack`), whose gradients are
    outer products per layer (:class:`~nth_dynamics.networks.Perturbation`).

    K2 is a sum over layers of products of Gram matrices of the factors, so
    the innermost level costs one forward and backward pass per point and no
    loop over directions; every outer level moves the parameters along
    g_b = ∇θ f(x_b) by a scalar ε_b and takes d/dε_b (a JVP of one scalar),
    so no parameter-sized tangent is ever formed. Mathematically identical to
    the generic path (tests compare them); several times faster and far
    lighter on memory.

    With a basis, each outer level moves the parameters along the combined
    directions G_j = Σ_b V[b, j] g_b, kept as their n outer products
    (:meth:`Perturbation.combined`): the factors of the n gradients are
    computed once per level and shared by the k directions.
    """
    batch_size, basis_chunk = chunks
    dtype = _parameter_dtype(model)
    zero = jnp.zeros((), dtype)

    def factors(points, perturbation):
        return jax.vmap(lambda x: model.gradient_factors(x, perturbation))(points)

    def k2(perturbation):
        train = factors(x_train, perturbation)
        evaluation = train if x_eval is None else factors(x_eval, perturbation)
        return factor_gram(evaluation, train)

    def next_order(kernel: Callable) -> Callable:
        def kernel_up(perturbation):
            def along(x_b):
                direction = model.gradient_factors(x_b, perturbation)

                def moved(eps):
                    if perturbation is None:
                        return kernel(Perturbation.along(eps, direction))
                    return kernel(perturbation.add(eps, direction))

                zero = jnp.zeros((), dtype)
                return jax.jvp(moved, (zero,), (jnp.ones_like(zero),))[1]

            if batch_size >= x_train.shape[0]:
                stacked = jax.vmap(along)(x_train)
            else:
                stacked = _mapped(along, x_train, batch_size)
            return jnp.moveaxis(stacked, 0, -1)

        return kernel_up

    def next_projected_order(kernel: Callable) -> Callable:
        def kernel_up(perturbation):
            train = factors(x_train, perturbation)  # g_b at this level's θ, for every b

            def along(weights):
                def moved(eps):
                    return kernel(Perturbation.combined(perturbation, eps, weights, train))

                return jax.jvp(moved, (zero,), (jnp.ones_like(zero),))[1]

            return _chunked(along, basis.T, basis_chunk)

        return kernel_up

    kernels = [k2]
    for _ in range(3, order + 1):
        kernels.append(next_order(kernels[-1]) if basis is None else next_projected_order(kernels[-1]))
    return tuple(kernel(None) for kernel in kernels)


def _parameter_dtype(model: eqx.Module):
    return jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))[0].dtype


def leaf_gram(first: PyTree, second: PyTree) -> Array:
    """<∇θ f(x_i), ∇θ f(x_j)> from per-point gradients batched over points
    (pytrees of the trained leaves, leading axis the points): Σ_leaves of
    each leaf's Gram, flattened in place (no concatenated Jacobian)."""
    total = 0.0
    for u1, u2 in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        total = total + jnp.reshape(u1, (u1.shape[0], -1)) @ jnp.reshape(u2, (u2.shape[0], -1)).T
    return total


def factor_gram(first: dict, second: dict) -> Array:
    """<∇θ f(x_i), ∇θ f(x_j)> from outer-product factors batched over points:
    Σ_layers (u_i · u_j)(v_i · v_j) for matrices, u_i · u_j for vectors."""
    total = 0.0
    for field, (u1, v1) in first.items():
        u2, v2 = second[field]
        products = jnp.einsum("i...m,j...m->ij...", u1, u2)
        if v1 is not None:
            products = products * jnp.einsum("i...m,j...m->ij...", v1, v2)
        total = total + products.reshape(products.shape[:2] + (-1,)).sum(-1)
    return total


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
    structured: bool = True,
    rank: int | None = None,
    point_chunk: int | None = None,
) -> int:
    """Estimated peak bytes of :func:`kernel_tower` for one model.

    ``structured`` (the project's networks and Equinox dense models,
    outer-product gradients): the outputs K2…Kp (twice: the direction axis is
    moved last) and the forward and backward activations of the N_eval + n
    points evaluated for each of the B^(p−2) directions in flight, two copies
    per nesting level (``activations`` = numbers a forward pass stores per
    point, e.g. 2 × width × (depth + 1)); no parameter-sized array is formed.

    Generic modules: the outputs; the per-point gradients behind K2 =
    J_eval J_trainᵀ, (n + C) × P numbers for a chunk of C evaluation points
    (``point_chunk``, default all N_eval), (1 + B)^(p−2) times (each level of
    B directions in flight holds the primal once and B tangents); the
    parameter-sized directions g_b of those levels; and the activations of
    the n + C points of each evaluation.

    ``rank`` k: the projected tower on a basis of k columns (docs/theory.md
    §8): K̂(r) holds N_eval·n·k^(r−2) numbers for r ≥ 3, every level beyond
    K2 has k directions (chunks of min(B, k)), and each such level also holds
    the n training gradients its combined directions are made of (their
    factors, or one VJP's residuals on the generic path) per direction in flight.

    Calibrated on CPU against measured peaks of FFNet and ResNet towers
    (structured, p = 3, 4): it errs on the high side, by up to ~3×; and
    against XLA's buffers (``memory_analysis``) of FFNet and ``eqx.nn.MLP``
    towers on the generic path (p = 2…5, chunks 1, 2, n): 1.2–2× high.
    """
    batch = n if batch_size is None else max(1, min(batch_size, n))
    k = n if rank is None else rank
    outer = min(batch, k)  # directions in flight at each level beyond K2
    outputs = sum(n_eval * n * k ** (r - 2) for r in range(2, order + 1))
    combined = 0  # the n gradients behind the combined directions of the innermost outer level
    if rank is not None and order > 2:
        combined = 2 ** (order - 2) * outer ** (order - 3) * n * activations
    if structured:
        in_flight = outer ** (order - 2) * 2 ** (order - 2)
        return itemsize * (2 * outputs + 4 * in_flight * (n_eval + n) * activations + 4 * combined)
    # under a vmap (or a lax.map chunk) of B JVPs the primal is computed once
    # and the tangent B times: 1 + B copies per level, measured
    in_flight = (1 + outer) ** (order - 2)
    points = n + (n_eval if point_chunk is None else max(1, min(point_chunk, n_eval)))
    jacobians = int(GRADIENT_COPIES * in_flight * points * n_params)
    tangents = 2 * n_params * in_flight
    forward = 2 * in_flight * points * activations
    return itemsize * (2 * outputs + jacobians + tangents + forward + 2 * combined)


GRADIENT_COPIES = 1.5
"""Per-point gradients the generic tower holds per K2 evaluation, in units
of one (n + C) × P Jacobian: XLA's buffers measured 0.9–1.1 of it (FFNet
width 256 and ``eqx.nn.MLP`` width 512 on the generic path, p = 2…5),
with room to spare."""


RUNTIME_BYTES = 500_000_000
"""Resident memory of a process once JAX and the project are imported, before
any computation: 340 MB measured on CPU (jaxlib 0.10), with room for other builds."""

TOWER_COMPILE_BYTES = {2: 50e6, 3: 150e6, 4: 300e6, 5: 450e6, 6: 700e6}
"""What XLA holds while compiling the tower to K(p), every direction
vectorised: measured 25, 100, 240, 370, 580 MB for p = 2…6 (FFNets of depth
1, 2 and 8 alike, width 32 or 256), rounded up. Not part of
:func:`tower_bytes`, which counts the program's own buffers (XLA's
``memory_analysis`` temp size: 124 MB for K5 at width 256, estimated 252);
for towers of order ≥ 5 and small n the compilation is the larger of the two."""

CHUNKED_COMPILE_FACTOR = 1.6
"""A chunked tower (``lax.map``) is a larger program: its compilation took
1.25–1.55× the memory of the vectorised one (K4, K5, K6; chunks 1 and 2 of n = 4)."""


def compile_bytes(order: int, chunked: bool = True) -> int:
    """Memory of the process besides the tower's buffers: the JAX runtime and
    the compilation of the tower to K(order), the largest program of a cell
    (the solvers' are smaller)."""
    compiling = TOWER_COMPILE_BYTES[order] * (CHUNKED_COMPILE_FACTOR if chunked else 1.0)
    return int(RUNTIME_BYTES + compiling)


def direction_chunk(n: int, batch_size: int) -> int:
    """The chunk of directions actually used: the largest divisor of n that is
    at most ``batch_size``. A chunk that leaves a remainder makes ``lax.map``
    run the remainder as a second, separately vmapped program at every
    nesting level; measured on the tower to K6 (depth 2, width 256, n = 4),
    a chunk of 3 took > 7 GB where chunks 4 and 2 took 1.7 and 1.1 GB."""
    batch_size = max(1, min(batch_size, n))
    return next(b for b in range(batch_size, 0, -1) if n % b == 0)


def default_batch_size(
    model,
    filter_spec,
    n_eval: int,
    n: int,
    order: int,
    budget: int = DEFAULT_MEMORY_BUDGET,
    *,
    rank: int | None = None,
) -> int:
    """Largest direction chunk whose :func:`tower_bytes` fits ``budget``; at
    least 1. ``filter_spec`` as given to :func:`kernel_tower` (None: the
    model's own), which decides the path planned for (:func:`structured_path`);
    ``rank``: the projected tower's basis size."""
    structured = structured_path(model, filter_spec)
    return _plan(model, filter_spec, n_eval, n, order, budget, rank=rank, structured=structured)[0]


def _plan(
    model, filter_spec, n_eval: int, n: int, order: int, budget: int, *,
    rank: int | None, structured: bool, batch_size: int | None = None, speed: bool = False,
    activations: int | None = None, n_params: int | None = None,
) -> tuple[int, int]:
    """(direction chunk, evaluation-point chunk) for a tower within ``budget``:
    the largest direction chunk (divisor of n) that fits with every
    evaluation point's gradient at once (``batch_size`` if given); on the
    generic path, when even the smallest does not fit, the largest divisor of
    N_eval whose gradients do. At least 1 each. ``speed``: also keep the
    buffers of the vectorised directions within :data:`VECTORISED_BYTES`."""
    n_params = parameter_count(model, filter_spec) if n_params is None else n_params
    activations = _activation_count(model) if activations is None else activations

    def estimate(batch: int, chunk: int) -> int:
        return tower_bytes(
            n_eval, n, order, n_params, activations=activations, batch_size=batch, structured=structured,
            rank=rank, point_chunk=chunk,
        )

    batches = [b for b in range(n, 0, -1) if n % b == 0] if batch_size is None else [batch_size]  # see direction_chunk
    if speed and not structured and batch_size is None:
        # the generic path: every direction vectorised, or one at a time (a
        # plain scan); chunks in between were slower than both (measured, K3 and K4)
        batches = [n, 1] if n > 1 else [1]

    def fast(batch: int) -> bool:
        # the buffers in flight (the estimate without the outputs) within VECTORISED_BYTES
        if batch == 1 or batch_size is not None or not speed:
            return True
        buffers = estimate(batch, n_eval) - tower_bytes(
            n_eval, n, order, 0, batch_size=batch, structured=structured, rank=rank
        )
        return buffers <= VECTORISED_BYTES

    for batch in batches:
        if estimate(batch, n_eval) <= budget and fast(batch):
            return batch, n_eval
    if structured:
        return batches[-1], n_eval
    chunks = [c for c in range(n_eval, 0, -1) if n_eval % c == 0]
    return batches[-1], next((c for c in chunks if estimate(batches[-1], c) <= budget), 1)


VECTORISED_BYTES = 32 * 2**20
"""Largest estimate of the buffers in flight (:func:`tower_bytes` without
its outputs) for which :func:`kernel_tower` vectorises a chunk of directions
by default: beyond it, memory traffic costs more than the loop saves. On CPU
(two-layer tanh MLP, n = 8, widths 256–2048, the tower to K4) the fully
vectorised K4 (estimates of 0.1–1 GB) was 2.5–8× slower than the best chunk:
2 to 4 directions on the structured path, 1 on the generic one, where chunks
of 2 and 4 (a scan of vmaps) were slower than both 1 and n."""


def _activation_count(model) -> int:
    """Numbers a forward pass stores per point, where the model tells: the
    project's networks (width, depth) and dense stacks; 0 otherwise."""
    if isinstance(model, AbstractNetwork):
        return int(model.width) * (int(model.depth) + 1) * 2  # pre- and post-activation per layer
    stack = dense_stack(model)
    return 0 if stack is None else stack.activation_count


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
    """max|K(r)| for each kernel of a tower, r = 2…p (docs/theory.md §4)."""
    return jnp.stack([jnp.max(jnp.abs(kernel)) for kernel in tower])


def lambda_min(ntk: Float[ArrayLike, "*seed n_eval n"]) -> Float[Array, "*seed"]:
    """Smallest eigenvalue of the train block of K2 (its first n rows)."""
    n = ntk.shape[-1]
    train_block = ntk[..., :n, :]
    return jnp.linalg.eigvalsh(0.5 * (train_block + jnp.swapaxes(train_block, -1, -2)))[..., 0]

