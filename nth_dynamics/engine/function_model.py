"""Any JAX model as a model of the engine: :class:`FunctionModel` wraps a pure
function ``apply_fn(params, x) → scalar`` of one input and its parameters
into an Equinox module, so that everything that takes a model
(:func:`~nth_dynamics.kernel_tower`, :func:`~nth_dynamics.gradient_flow`,
:func:`~nth_dynamics.gradient_descent`, :func:`~nth_dynamics.reduced_hierarchy`,
ensembles under ``eqx.filter_vmap``) takes it too.

The trained parameters are every floating-point array leaf of ``params``
(the generic path's rule for any module, :func:`~nth_dynamics.engine.networks.trained_filter`);
integer arrays (step counters, PRNG keys) and non-array leaves are carried
along untrained. A wrapped model takes the generic nested-JVP path of the
tower (only the project's own networks and ``eqx.nn.MLP`` have the
outer-product path), whose K2 still reads the dense layers of ``apply_fn``
off its jaxpr as outer products (:mod:`.structure`).

Flax models enter through :meth:`FunctionModel.from_linen` and
:meth:`FunctionModel.from_nnx` (Flax is imported only there: the ``flax``
extra); a neural-tangents ``stax`` pair is already in this form,
``FunctionModel(apply_fn, init_fn(key, (d,))[1])`` with a scalar readout.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree


class FunctionModel(eqx.Module):
    """A model given as a pure function ``apply_fn(params, x)`` of its
    parameters and **one** input, returning a scalar.

    ``FunctionModel(apply_fn, params)(x) == apply_fn(params, x)``. The module's
    parameters are ``params``: a pytree (nested dicts, tuples, Flax states, …)
    whose floating-point array leaves are the trained parameters, every one
    of them (choose fewer with ``filter_spec``, as for any module); integer
    arrays and non-array leaves stay fixed. ``apply_fn`` is static (part of
    the compiled program, compared by ``==``/hash): give the same function
    object to every model that should share compilations, e.g. the members of
    an ensemble.

    Args:
        apply_fn: ``apply_fn(params, x) → scalar`` for one input ``x`` (shape
            ``(d,)`` for the project's data). Use ``jax.vmap`` outside it for
            batches: the engine does.
        params: the parameters at which the model is evaluated, in the
            precision the kernels should have (float64 by default: a float32
            leaf while JAX runs in float64 is warned about).

    Raises:
        TypeError: ``apply_fn`` is not callable, or not hashable.
        ValueError: ``params`` has no floating-point array leaf (nothing to
            train); calling the model, an ``apply_fn`` whose output for one
            input is not a scalar.
    """

    apply_fn: Callable[[PyTree, Array], Array] = eqx.field(static=True)
    params: PyTree

    def __init__(self, apply_fn: Callable[[PyTree, Array], Array], params: PyTree):
        if not callable(apply_fn):
            raise TypeError(f"apply_fn must be a callable apply_fn(params, x) → scalar, got {type(apply_fn).__name__}")
        try:
            hash(apply_fn)
        except TypeError:
            raise TypeError(
                f"apply_fn must be hashable (it is static: part of the compiled program), got an unhashable "
                f"{type(apply_fn).__name__}; allowed: a function, or a frozen dataclass with __call__"
            ) from None
        leaves = jax.tree.leaves(params)
        if not any(eqx.is_inexact_array(leaf) for leaf in leaves):
            kinds = sorted({type(leaf).__name__ for leaf in leaves}) or ["nothing"]
            raise ValueError(
                "params must hold at least one floating-point array (the trained parameters), "
                f"got leaves of type {', '.join(kinds)}"
            )
        _warn_low_precision(params)
        self.apply_fn = apply_fn
        self.params = params

    def __call__(self, x: Array) -> Array:
        out = self.apply_fn(self.params, x)
        if jnp.shape(out) != ():
            raise ValueError(
                f"apply_fn must map one input to a scalar, got an output of shape {jnp.shape(out)} for an input of "
                f"shape {jnp.shape(x)}; index or reshape a single output (e.g. out[0]), and vmap outside for batches"
            )
        return jnp.asarray(out)

    @classmethod
    def from_linen(cls, module: Any, variables: Mapping[str, Any], *, dtype: Any = None) -> FunctionModel:
        """A Flax linen module with its variables (``module.init(key, x)``):
        ``f(x) = module.apply(variables, x)``, trained on ``variables["params"]``.

        Only the ``params`` collection is supported: any other collection
        (``batch_stats``, …) is state the engine would not know to keep fixed,
        and is refused. An output of shape ``(1,)`` (a final ``Dense(1)``) is
        taken as the scalar. Flax creates float32 parameters whatever JAX's
        precision: the floating leaves are cast to ``dtype`` (default JAX's
        default float, float64 under nth_dynamics).

        Raises:
            ValueError: ``variables`` has no ``params`` or has other collections.
        """
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise ValueError(
                "variables must be the mapping module.init(key, x) returns, with a 'params' collection; "
                f"got {type(variables).__name__}" + (f" with keys {sorted(variables)}" if isinstance(variables, Mapping) else "")
            )
        others = sorted(name for name in variables if name != "params")
        if others:
            raise ValueError(
                f"variables has the collections {others} besides 'params'; allowed: only 'params' (state such as "
                "batch statistics would be trained or lost: write apply_fn by hand to close over it)"
            )
        return cls(_LinenApply(module), cast_floating(variables["params"], dtype))

    @classmethod
    def from_nnx(cls, module: Any, *, dtype: Any = None) -> FunctionModel:
        """A Flax nnx module: split into its graph definition (static) and
        its state; trained on its ``nnx.Param`` variables. Other state may
        only be integer (RNG keys and counts), carried along untrained; it is
        ``params[1]``, the ``nnx.Param`` state ``params[0]``. Output shape
        ``(1,)`` is taken as the scalar; floating leaves are cast to ``dtype``
        (default JAX's default float) as in :meth:`from_linen`.

        Raises:
            ValueError: the module has floating-point state besides ``nnx.Param``.
        """
        from flax import nnx

        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        floating = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_leaves_with_path(rest)
                    if eqx.is_inexact_array(leaf)]
        if floating:
            raise ValueError(
                f"the nnx module has floating-point state besides nnx.Param ({', '.join(floating[:3])}); allowed: "
                "only nnx.Param floats (other state would be trained: write apply_fn by hand around nnx.merge)"
            )
        return cls(_NNXApply(graphdef), (cast_floating(params, dtype), rest))


@dataclasses.dataclass(frozen=True)
class _LinenApply:
    """``apply_fn`` of a linen module: hashable and equal by the module, so
    that models of one module share their compilations."""

    module: Hashable

    def __call__(self, params, x):
        return _single_output(self.module.apply({"params": params}, x))


@dataclasses.dataclass(frozen=True)
class _NNXApply:
    """``apply_fn`` of an nnx module, from its graph definition."""

    graphdef: Hashable

    def __call__(self, params, x):
        from flax import nnx

        return _single_output(nnx.merge(self.graphdef, *params)(x))


def _single_output(out):
    """A single output of shape (1,) (a final Dense(1)) as the scalar; any
    other shape is left for :meth:`FunctionModel.__call__` to refuse."""
    return jnp.reshape(out, ()) if jnp.shape(out) == (1,) else out


def cast_floating(params: PyTree, dtype: Any = None) -> PyTree:
    """Every floating-point array leaf of a pytree (or module) cast to
    ``dtype`` (default JAX's default float); other leaves unchanged."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return jax.tree.map(lambda leaf: leaf.astype(dtype) if eqx.is_inexact_array(leaf) else leaf, params)


def _warn_low_precision(params: PyTree) -> None:
    default = jnp.dtype(jnp.result_type(float))
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if eqx.is_inexact_array(leaf) and jnp.dtype(leaf.dtype).itemsize < default.itemsize:
            warnings.warn(
                f"params{jax.tree_util.keystr(path)} is {leaf.dtype} while JAX runs in {default}: the kernels "
                f"will have {leaf.dtype} precision; cast with jax.tree.map(lambda a: a.astype({default.name}), params)",
                stacklevel=3,
            )
            return


def activation_count(model: eqx.Module, x: jax.ShapeDtypeStruct | Array) -> int:
    """Numbers one forward pass of ``model`` computes **per input** for one
    input ``x`` (or its shape): the size of every intermediate of its jaxpr
    that depends on ``x`` (what depends on the parameters only is computed
    once for a batch of points, not per point), a loop's body counted once per
    iteration (a ``while_loop``'s once: its trip count is not known). Traced
    only (``model`` may itself be ``jax.eval_shape`` output): nothing is allocated.

    It bounds from above what reverse-mode differentiation stores per point
    (the residuals are among these intermediates), the ``activations`` of
    :func:`~nth_dynamics.tower_bytes`, for a model whose activation count is
    not known in advance (a :class:`FunctionModel`, any module). It errs on
    the high side: for the project's tanh FFNet of width m and depth L it is
    4m(L + 1) + 1, where the project's own rule for it is 2m(L + 1).
    """
    x = x if isinstance(x, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    params, static = eqx.partition(model, lambda leaf: eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct))
    jaxpr = jax.make_jaxpr(lambda p, x: eqx.combine(p, static)(x))(params, x).jaxpr
    dependent = [False] * (len(jaxpr.invars) - 1) + [True]  # x is the last input
    return _size(jaxpr, dependent)[0]


def _size(jaxpr, dependent_in: list[bool]) -> tuple[int, list[bool]]:
    """(numbers computed that depend on the marked inputs, which outputs depend on them)."""
    dependent = {var for var, flag in zip(jaxpr.invars, dependent_in) if flag}

    def depends(var) -> bool:
        return var in dependent if hasattr(var, "aval") and not hasattr(var, "val") else False

    total = 0
    for eqn in jaxpr.eqns:
        flags = [depends(var) for var in eqn.invars]
        if not any(flags):
            continue
        size, out_flags = _equation_size(eqn, flags)
        total += size
        dependent.update(var for var, flag in zip(eqn.outvars, out_flags) if flag)
    return total, [depends(var) for var in jaxpr.outvars]


def _equation_size(eqn, flags: list[bool]) -> tuple[int, list[bool]]:
    name, params = eqn.primitive.name, eqn.params
    inner = [sub for value in params.values() for sub in _sub_jaxprs(value)]
    if not inner:
        return sum(math.prod(getattr(var.aval, "shape", ())) for var in eqn.outvars), [True] * len(eqn.outvars)
    if name == "cond":  # one branch runs, on the operands after the index
        results = [_size(branch, flags[1:]) for branch in inner]
        outs = [flags[0] or any(column) for column in zip(*(result[1] for result in results))]
        return max(result[0] for result in results), outs
    if name in ("scan", "while"):
        # the carry may come to depend on x inside the loop: iterate to a fixed point
        if name == "scan":
            body, start, n_carry, length = inner[0], params["num_consts"], params["num_carry"], params["length"]
            body_flags = list(flags)
        else:
            body = params["body_jaxpr"].jaxpr
            start, n_carry, length = params["body_nconsts"], len(eqn.outvars), 1
            body_flags = flags[params["cond_nconsts"]:]
        while True:
            size, outs = _size(body, body_flags)
            carry = [a or b for a, b in zip(body_flags[start:start + n_carry], outs[:n_carry])]
            if carry == body_flags[start:start + n_carry]:
                break
            body_flags[start:start + n_carry] = carry
        return int(length) * size, outs if name == "scan" else carry
    if len(inner) == 1 and len(inner[0].invars) == len(eqn.invars):  # calls, custom derivative rules, remat
        return _size(inner[0], flags)
    # anything else: every intermediate, every output dependent (conservative)
    return sum(_size(sub, [True] * len(sub.invars))[0] for sub in inner), [True] * len(eqn.outvars)


def _sub_jaxprs(value) -> list:
    if isinstance(value, (tuple, list)):
        return [sub for item in value for sub in _sub_jaxprs(item)]
    if hasattr(value, "jaxpr") and hasattr(value, "consts"):  # a ClosedJaxpr
        return [value.jaxpr]
    if hasattr(value, "eqns") and hasattr(value, "outvars"):  # a Jaxpr
        return [value]
    return []


__all__ = ["FunctionModel", "activation_count", "cast_floating"]
