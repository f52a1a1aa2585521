"""Dense-layer structure found in any model's jaxpr: the outer-product K2 of
the generic path (docs/theory.md §2, issue 13).

The generic path forms every per-point gradient ∇θ f(x) in full and takes
their Gram. But a trained leaf W that enters f(θ, x) only through one
contraction with a vector, z = W · a (one axis of W against the only axis of
a), has the per-point gradient

    ∂f/∂W = δ ⊗ a,        δ = ∂f/∂z,

(a's axis at the place of W's contracted one), and a leaf b that enters only
through one sum z = b ± c of its own shape (a bias) has ∂f/∂b = ±δ. Their
contributions to K2 are then products of small Gram matrices,

    <∂f(x_i)/∂W, ∂f(x_j)/∂W> = (δ_i · δ_j)(a_i · a_j),    <∂f(x_i)/∂b, ∂f(x_j)/∂b> = δ_i · δ_j,

and no W-sized array per point is formed: the same idea as the project's own
networks (:mod:`.dense`), but read off the traced program of any model, so
it serves hand-written Equinox modules, :class:`~nth_dynamics.FunctionModel`
(stax, Flax) alike. neural-tangents' ``structured_derivatives`` does this,
with many more rules; these two are the ones dense networks need.

The δ are the gradients of f with respect to zero *probes* added to those
z, all taken in the same backward pass as the full gradients of the leaves
that match no rule; the a are recorded on the way forward. Only what is
certain is matched (:func:`find`): a leaf used more than once (weight
sharing), inside a sub-program (``jit``, ``custom_jvp``, ``scan``), through
any other operation (a scaling, a transpose, a cast) or against a
non-vector keeps its full per-point gradient; a program that is not plainly
a scalar function of its inputs is not read at all. Only K2 is computed this
way: the higher orders differentiate the generic K2 (:mod:`.kernels`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array

try:  # jax.extend.core is the public home of the jaxpr types from jax 0.4.3x on
    from jax.extend.core import Literal
except ImportError:  # pragma: no cover - older jax
    from jax.core import Literal


@dataclasses.dataclass(frozen=True, eq=False)
class DenseUses:
    """The dense uses of the trained leaves in ``jaxpr``, a program of
    ``(*leaves, x)`` with one scalar output.

    ``weights``: (leaf, equation, operand) for each leaf W entering only the
    contraction ``jaxpr.eqns[equation]`` with the vector a = its
    ``operand``-th input; ``biases``: (leaf, equation) for each leaf entering
    only the sum ``jaxpr.eqns[equation]``. Leaf indices count the trained
    leaves in the order given to :func:`find`."""

    jaxpr: object  # a ClosedJaxpr
    leaf_count: int
    weights: tuple[tuple[int, int, int], ...]
    biases: tuple[tuple[int, int], ...]

    @property
    def structured(self) -> frozenset[int]:
        """The leaves whose K2 term is a product of small Grams."""
        return frozenset(leaf for leaf, *_ in self.weights) | frozenset(leaf for leaf, _ in self.biases)

    @property
    def rest(self) -> tuple[int, ...]:
        """The leaves that keep their full per-point gradient."""
        structured = self.structured  # a property: built once here, not once per leaf
        return tuple(i for i in range(self.leaf_count) if i not in structured)

    def gradients(self, leaves: Sequence[Array], points: Array) -> tuple[dict, dict, list]:
        """Per point (leading axis), in one forward and backward pass: the δ
        of every probed equation, the recorded vectors a, and the full
        gradients of the :attr:`rest` leaves (in their order)."""
        eqns = self.jaxpr.jaxpr.eqns
        probed = sorted({eq for _, eq, _ in self.weights} | {eq for _, eq in self.biases})
        probes = {eq: jnp.zeros(eqns[eq].outvars[0].aval.shape, eqns[eq].outvars[0].aval.dtype) for eq in probed}
        recorded = {(eq, operand) for _, eq, operand in self.weights}
        rest = self.rest

        def value(probes, rest_leaves, x):
            args = list(leaves)
            for i, leaf in zip(rest, rest_leaves, strict=True):
                args[i] = leaf
            return _evaluate(self.jaxpr, [*args, x], probes, recorded)

        gradient = jax.grad(value, argnums=(0, 1), has_aux=True)
        (deltas, rest_gradients), operands = jax.vmap(gradient, in_axes=(None, None, 0))(
            probes, [leaves[i] for i in rest], points
        )
        return deltas, operands, rest_gradients

    def gram(self, first: tuple, second: tuple) -> Array:
        """Σ over the structured leaves of <∂f(x_i)/∂θ_l, ∂f(x_j)/∂θ_l>, from
        the δ and a of :meth:`gradients` at two sets of points."""
        (d1, a1, _), (d2, a2, _) = first, second
        deltas = {eq: _gram(d1[eq], d2[eq]) for eq in d1}
        total = 0.0
        for _, eq, operand in self.weights:
            total = total + deltas[eq] * _gram(a1[(eq, operand)], a2[(eq, operand)])
        for _, eq in self.biases:
            total = total + deltas[eq]
        return total


def _gram(u: Array, v: Array) -> Array:
    return jnp.reshape(u, (u.shape[0], -1)) @ jnp.reshape(v, (v.shape[0], -1)).T


def find(fun: Callable, leaves: Sequence[Array], x: jax.ShapeDtypeStruct | Array) -> DenseUses | None:
    """The dense uses of ``leaves`` in ``fun(leaves, x)`` (a scalar), or None
    when its program cannot be read with certainty or no leaf matches (then
    the generic Gram serves every leaf).

    ``leaves`` may be tracers (inside the compiled tower): only their shapes
    enter the trace, and what ``fun`` closes over (frozen leaves) becomes the
    program's constants."""
    try:
        closed = jax.make_jaxpr(fun)(list(leaves), x)
    except Exception:  # noqa: BLE001 - the generic path then traces fun itself and reports its error
        return None
    jaxpr = closed.jaxpr
    if (len(jaxpr.invars) != len(leaves) + 1 or len(jaxpr.outvars) != 1 or jaxpr.outvars[0].aval.shape != ()
            or jaxpr.effects):
        return None
    uses = Counter(v for eqn in jaxpr.eqns for v in eqn.invars if not isinstance(v, Literal))
    uses.update(v for v in jaxpr.outvars if not isinstance(v, Literal))
    user = {}
    for index, eqn in enumerate(jaxpr.eqns):
        for position, v in enumerate(eqn.invars):
            if not isinstance(v, Literal):
                user.setdefault(v, (index, position))
    weights, biases = [], []
    for leaf, v in enumerate(jaxpr.invars[: len(leaves)]):
        if uses[v] != 1 or v not in user:  # shared, unused, or the output itself
            continue
        index, position = user[v]
        eqn = jaxpr.eqns[index]
        if _is_contraction_with_a_vector(eqn, position):
            weights.append((leaf, index, 1 - position))
        elif _is_bias(eqn, position):
            biases.append((leaf, index))
    if not weights and not biases:
        return None
    return DenseUses(closed, len(leaves), tuple(weights), tuple(biases))


def _is_contraction_with_a_vector(eqn, position: int) -> bool:
    """z = W · a: a ``dot_general`` without batch axes contracting one axis of
    the leaf (operand ``position``) with the one axis of a vector; other axes
    of size 1 are allowed (a batch of one point, ``x[None] @ W`` in a stax
    apply function), since the sum over them is a single term."""
    if eqn.primitive.name != "dot_general":
        return False
    (contracting, batch) = eqn.params["dimension_numbers"]
    if any(len(axes) for axes in batch):
        return False
    mine, theirs = contracting[position], contracting[1 - position]
    shape = eqn.invars[1 - position].aval.shape
    if len(mine) != 1 or len(theirs) != 1:
        return False
    return all(size == 1 for axis, size in enumerate(shape) if axis != theirs[0])


def _is_bias(eqn, position: int) -> bool:
    """z = b ± c with z of the leaf's own shape and dtype (no broadcasting of b)."""
    if eqn.primitive.name not in ("add", "sub"):
        return False
    leaf, out = eqn.invars[position].aval, eqn.outvars[0].aval
    return leaf.shape == out.shape and leaf.dtype == out.dtype


def _evaluate(closed, args: list, probes: dict, recorded: set) -> tuple[Array, dict]:
    """The program's output with ``probes[eq]`` added to the output of
    equation eq, and the inputs ``recorded`` ((equation, operand) pairs):
    ``jax.core.eval_jaxpr`` with those two additions, every equation bound
    as traced (so that sub-programs and custom derivatives behave as in f)."""
    jaxpr = closed.jaxpr
    env = dict(zip(jaxpr.constvars, closed.consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    seen = {}
    for index, eqn in enumerate(jaxpr.eqns):
        inputs = [read(v) for v in eqn.invars]
        for position in range(len(inputs)):
            if (index, position) in recorded:
                seen[(index, position)] = inputs[position]
        params = eqn.primitive.get_bind_params(eqn.params)
        subfuns, params = params if isinstance(params, tuple) else ((), params)  # jax < 0.5 also returns subfuns
        context = eqn.ctx.manager if hasattr(eqn, "ctx") else contextlib.nullcontext()
        with context:
            outputs = eqn.primitive.bind(*subfuns, *inputs, **params)
        outputs = list(outputs) if eqn.primitive.multiple_results else [outputs]
        if index in probes:
            outputs[0] = outputs[0] + probes[index]
        env.update(zip(eqn.outvars, outputs, strict=True))
    return read(jaxpr.outvars[0]), seen


__all__ = ["DenseUses", "find"]
