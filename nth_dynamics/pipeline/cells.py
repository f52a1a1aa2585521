"""The cells of a sweep: what one grid point computes (:class:`CellSpec`), as
a frozen typed object the sweep reads by attribute, and its stable id.

A cell runs every seed of one grid point (docs/theory.md §1–§3: the kernel
tower, the truncated NTH for each order, the reference training). Its id is
a hash of :meth:`CellSpec.id_payload`, the one place that decides what enters
the id, so that two grid points computing the same thing share a cell, the
same cell has the same id on every machine, and results written before a
field existed keep their ids.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from .._schema import Activation, Group, Section
from ..engine.networks import BRANCHES, PARAMETERIZATIONS, READOUTS
from .schema import DataSpec, FileData, Hierarchy, Loss, Reference, Time

LEFT_OUT_AT_DEFAULT: dict[tuple[str, str], Any] = {
    ("hierarchy", "on_failure"): "stop",
    ("time", "unit"): "t",
    ("hierarchy", "basis"): "full",
    ("hierarchy", "basis_tol"): 1e-12,
    ("reference", "optimizer"): None,
    ("reference", "optimizer_options"): {},
    ("", "loss"): "mse",
    ("network", "W_std"): 1.0,
    ("network", "b_std"): 0.0,
    ("network", "parameterization"): "ntk",
    ("network", "output_scale"): 1.0,
}
"""(section, field) → the default that is left out of the id payload: fields
added after results were written enter the id only when they change what a
cell computes. A new field with a default is one line here (section ``""``:
a top-level field of the cell)."""


class NetworkSpec(Section):
    """The network of one cell (docs/theory.md §5): every grid field resolved
    to one value, the ResNet scale to α (``alpha`` and ``branch`` only for a resnet)."""

    architecture: Literal["ffnet", "resnet"]
    width: PositiveInt
    depth: NonNegativeInt
    activation: Activation
    readout: Literal[READOUTS]  # type: ignore[valid-type]
    trained: tuple[Group, ...]
    alpha: PositiveFloat | None = None
    """ResNet block scale α (resolved from the scenario's alpha or γ); None for an FFNet."""
    branch: Literal[BRANCHES] | None = None  # type: ignore[valid-type]
    W_std: PositiveFloat = 1.0
    b_std: NonNegativeFloat = 0.0
    """0: no biases."""
    parameterization: Literal[PARAMETERIZATIONS] = "ntk"  # type: ignore[valid-type]
    output_scale: PositiveFloat = 1.0
    """The laziness scale α (docs/theory.md §9); 1: the network as it is."""

    def options(self) -> dict[str, Any]:
        """Keyword options of :func:`~nth_dynamics.engine.networks.make_network`
        (and of :func:`~nth_dynamics.engine.networks.parameter_counts`); the
        dense-layer options only when they differ from the defaults, so that a
        default network is built from exactly the options it always was."""
        options: dict[str, Any] = {"activation": self.activation, "readout": self.readout, "trained": list(self.trained)}
        if self.architecture == "resnet":
            options.update(alpha=self.alpha, branch=self.branch)
        for field in ("W_std", "b_std", "parameterization", "output_scale"):
            if getattr(self, field) != LEFT_OUT_AT_DEFAULT["network", field]:
                options[field] = getattr(self, field)
        return options


class CellSpec(Section):
    """Everything one cell computes from.

    ``data`` is the scenario's data section with ``n_train`` narrowed to the
    cell's one value (a one-element tuple, :attr:`n_train`); a file's path is
    absolute and ``data_sha256`` holds the hash of its contents. ``hierarchy``
    holds every truncation order of the cell (all solved from one tower).
    """

    precision: Literal["float64", "float32"]
    seeds: tuple[NonNegativeInt, ...]
    """Network seeds, run as one vmapped batch (or in equal batches, see the estimate)."""
    data: DataSpec
    network: NetworkSpec
    hierarchy: Hierarchy
    reference: Reference
    time: Time
    save_kernels: bool
    loss: Loss = "mse"
    """The training loss of the NTH and of the reference (docs/theory.md §9)."""
    memory_budget_gb: PositiveFloat
    """Picks the tower's direction chunk and the seed batch only: the same numbers either way."""
    data_sha256: str | None = None
    """sha256 of the data file (``data.kind: file``), which enters the id instead of its path."""

    @property
    def n_train(self) -> int:
        return self.data.n_train[0]

    @property
    def n_eval(self) -> int:
        """Evaluation points: training then test points."""
        return self.n_train + self.data.n_test

    def data_mapping(self) -> dict[str, Any]:
        """The data section as :func:`nth_dynamics.data.make_data` reads it (one n_train)."""
        return {**self.data.model_dump(mode="json"), "n_train": self.n_train}

    def id_payload(self) -> dict[str, Any]:
        """What the cell id hashes, as plain JSON: every field, except

        * ``memory_budget_gb`` (it changes how a cell is chunked, not its numbers);
        * a data file's ``path``, replaced by the file's ``sha256`` (ids agree across machines);
        * the fields of :data:`LEFT_OUT_AT_DEFAULT` when at their default;
        * an FFNet's ``network.alpha`` and ``network.branch`` (unset).
        """
        payload = self.model_dump(mode="json", exclude={"memory_budget_gb", "data_sha256"})
        payload["network"] = self.network.model_dump(mode="json", exclude_none=True)
        payload["data"] = {key: value for key, value in self.data_mapping().items() if key != "path"}
        if isinstance(self.data, FileData):
            payload["data"]["sha256"] = self.data_sha256
        for (section, field), default in LEFT_OUT_AT_DEFAULT.items():
            fields = payload[section] if section else payload
            if fields[field] == default:
                del fields[field]
        return payload

    def id(self, model: ModelFactory | None = None) -> str:
        """A stable 12-hex-digit id: the sha256 of :meth:`id_payload`, its
        network replaced by the user's model (:meth:`ModelFactory.id_payload`)
        when the cell's network comes from ``nd.simulate(..., model=factory)``."""
        payload = self.id_payload()
        if model is not None:
            payload["network"] = model.id_payload(self)
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def tower_id(self, model: ModelFactory | None = None) -> str:
        """The id of the cell at output scale 1: cells with one ``tower_id``
        differ at most in ``network.output_scale``, and so start from the same
        tower of f (the hierarchy of each rescales it, docs/theory.md §9)."""
        return self.model_copy(update={"network": self.network.model_copy(update={"output_scale": 1.0})}).id(model)


def data_key(seed: int) -> jax.Array:
    """PRNG key of a cell's data (``data.seed``): independent of the network keys of the same seed."""
    return jax.random.fold_in(jax.random.key(seed), 0xDA7A)


def network_keys(seeds: Sequence[int]) -> jax.Array:
    """One PRNG key per network seed, stacked (the ensemble axis)."""
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 1))(jnp.asarray(seeds))


FACTORY_KEYWORDS = ("d", "width", "depth", "activation")
"""What a user's model factory receives besides the key: ``factory(key, d=…,
width=…, depth=…, activation=…)``, the input dimension and the cell's
network fields (each may be swept)."""


@dataclass(frozen=True)
class ModelFactory:
    """A user's model, ``nd.simulate(scenario, model=factory)``: the network
    of every cell is ``factory(key, d=…, width=…, depth=…, activation=…)``
    (:data:`FACTORY_KEYWORDS`, from the cell) for each seed's key, an
    Equinox module mapping one input to a scalar (e.g. a
    :class:`~nth_dynamics.FunctionModel`).

    Its cells' ids hash :meth:`id_payload` in place of the built-in network
    fields, so that they are never those of a built-in network's cell."""

    factory: Callable[..., eqx.Module]

    @property
    def name(self) -> str:
        """The factory's qualified name, ``module.qualname`` (a partial's with its arguments)."""
        return _qualified_name(self.factory)

    def keywords(self, spec: CellSpec) -> dict[str, Any]:
        network = spec.network
        return {"d": spec.data.d, "width": network.width, "depth": network.depth, "activation": network.activation}

    def build(self, key: jax.Array, spec: CellSpec) -> eqx.Module:
        """The model of one seed's key (a typed PRNG key)."""
        return _checked(self._call(key, spec), self)

    def shapes(self, spec: CellSpec) -> eqx.Module:
        """The cell's model with ``jax.ShapeDtypeStruct`` leaves: nothing allocated."""
        return _checked(eqx.filter_eval_shape(lambda key: self._call(key, spec), jax.random.key(0)), self)

    def id_payload(self, spec: CellSpec) -> dict[str, Any]:
        """What the id hashes of the network: the factory's name, the hash of
        its source when Python can read it, the keywords it receives and the
        path, shape and dtype of every parameter it builds. The id cannot see
        into the code the factory calls: after changing it, use a new cache."""
        leaves = jax.tree_util.tree_leaves_with_path(self.shapes(spec))
        return {
            "factory": self.name,
            "factory_source_sha256": _source_digest(self.factory),
            **self.keywords(spec),
            "parameters": [
                [jax.tree_util.keystr(path), list(leaf.shape), str(leaf.dtype)]
                for path, leaf in leaves if isinstance(leaf, jax.ShapeDtypeStruct)
            ],
        }

    def _call(self, key, spec: CellSpec):
        keywords = self.keywords(spec)
        try:
            signature = inspect.signature(self.factory)
        except (TypeError, ValueError):  # no signature to check (some builtins)
            signature = None
        if signature is not None:
            try:
                signature.bind(key, **keywords)
            except TypeError as error:
                call = ", ".join(f"{name}={value!r}" for name, value in keywords.items())
                raise TypeError(
                    f"model: {self.name}(key, {call}) cannot be called ({error}); allowed: a factory "
                    f"factory(key, *, {', '.join(FACTORY_KEYWORDS)}) (accept **options to ignore some)"
                ) from None
        return self.factory(key, **keywords)


def parameter_sizes(shapes: eqx.Module) -> tuple[int, int]:
    """(all, floating-point) array sizes of a model's ``jax.ShapeDtypeStruct`` leaves."""
    leaves = [leaf for leaf in jax.tree.leaves(shapes) if isinstance(leaf, jax.ShapeDtypeStruct)]
    return (sum(math.prod(leaf.shape) for leaf in leaves),
            sum(math.prod(leaf.shape) for leaf in leaves if jax.numpy.issubdtype(leaf.dtype, jax.numpy.inexact)))


def _checked(model, factory: ModelFactory):
    if not isinstance(model, eqx.Module):
        raise TypeError(
            f"model: {factory.name} returned a {type(model).__name__}; allowed: an Equinox module mapping one input "
            "to a scalar (wrap a function with nd.FunctionModel(apply_fn, params))"
        )
    return model


def _qualified_name(factory: Callable) -> str:
    if isinstance(factory, functools.partial):
        arguments = [repr(a) for a in factory.args] + [f"{k}={v!r}" for k, v in sorted(factory.keywords.items())]
        return f"functools.partial({', '.join([_qualified_name(factory.func), *arguments])})"
    named = factory if hasattr(factory, "__qualname__") else type(factory)
    return f"{getattr(named, '__module__', '?')}.{named.__qualname__}"


def _source_digest(factory: Callable) -> str | None:
    target = factory.func if isinstance(factory, functools.partial) else factory
    try:
        source = inspect.getsource(target if hasattr(target, "__qualname__") else type(target))
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()


@dataclass(frozen=True)
class Cell:
    """One independent computation of a sweep: every seed of one grid point.

    ``coords``: grid dimension → value (every swept dimension, and width).
    ``spec``: what the cell computes (a :class:`CellSpec`; the one cell of an
    infinite-width study holds its study and arguments as a mapping). ``id``:
    ``spec.id(model)``, shared by grid points that compute the same thing (an FFNet
    at two values of the ResNet γ), which are then run once.
    """

    id: str
    coords: dict[str, Any]
    spec: CellSpec | Mapping[str, Any]
    model: ModelFactory | None = None
    """The user's model factory whose networks the cell runs instead of
    ``spec.network``'s built-in one (``nd.simulate(..., model=factory)``)."""

    @classmethod
    def of(cls, coords: Mapping[str, Any], spec: CellSpec, model: ModelFactory | None = None) -> Cell:
        return cls(id=spec.id(model), coords=dict(coords), spec=spec, model=model)

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.coords.items())


__all__ = [
    "FACTORY_KEYWORDS", "LEFT_OUT_AT_DEFAULT", "Cell", "CellSpec", "ModelFactory", "NetworkSpec", "data_key", "network_keys",
    "parameter_sizes",
]
