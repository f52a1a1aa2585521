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

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from .._schema import Activation, Group, Section
from ..engine.networks import BRANCHES, PARAMETERIZATIONS, READOUTS
from .schema import DataSpec, FileData, Hierarchy, Reference, Time

LEFT_OUT_AT_DEFAULT: dict[tuple[str, str], Any] = {
    ("hierarchy", "on_failure"): "stop",
    ("time", "unit"): "t",
    ("hierarchy", "basis"): "full",
    ("hierarchy", "basis_tol"): 1e-12,
    ("network", "W_std"): 1.0,
    ("network", "b_std"): 0.0,
    ("network", "parameterization"): "ntk",
}
"""(section, field) → the default that is left out of the id payload: fields
added after results were written enter the id only when they change what a
cell computes. A new field with a default is one line here."""


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

    def options(self) -> dict[str, Any]:
        """Keyword options of :func:`~nth_dynamics.engine.networks.make_network`
        (and of :func:`~nth_dynamics.engine.networks.parameter_counts`); the
        dense-layer options only when they differ from the defaults, so that a
        default network is built from exactly the options it always was."""
        options: dict[str, Any] = {"activation": self.activation, "readout": self.readout, "trained": list(self.trained)}
        if self.architecture == "resnet":
            options.update(alpha=self.alpha, branch=self.branch)
        for field in ("W_std", "b_std", "parameterization"):
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
            if payload[section][field] == default:
                del payload[section][field]
        return payload

    def id(self) -> str:
        """A stable 12-hex-digit id: the sha256 of :meth:`id_payload`."""
        text = json.dumps(self.id_payload(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Cell:
    """One independent computation of a sweep: every seed of one grid point.

    ``coords``: grid dimension → value (every swept dimension, and width).
    ``spec``: what the cell computes (a :class:`CellSpec`; the one cell of an
    infinite-width study holds its study and arguments as a mapping). ``id``:
    ``spec.id()``, shared by grid points that compute the same thing (an FFNet
    at two values of the ResNet γ), which are then run once.
    """

    id: str
    coords: dict[str, Any]
    spec: CellSpec | Mapping[str, Any]

    @classmethod
    def of(cls, coords: Mapping[str, Any], spec: CellSpec) -> Cell:
        return cls(id=spec.id(), coords=dict(coords), spec=spec)

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.coords.items())


__all__ = ["LEFT_OUT_AT_DEFAULT", "Cell", "CellSpec", "NetworkSpec"]
