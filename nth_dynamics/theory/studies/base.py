"""The infinite-width study as a type (docs/theory.md §6).

A study is a frozen pydantic model whose fields are its parameters, written
once with their defaults: the ``infinite_width`` section of a scenario of
``kind: infinite_width`` validates into one, and the functions of
:mod:`nth_dynamics.theory.depth_study` build one from their keyword
arguments. It knows how to run itself (:meth:`AbstractStudy.run`), what it
costs (:meth:`~AbstractStudy.estimate`), which field to lower when it does not
fit (:attr:`~AbstractStudy.lower`), how to draw and summarise its result, and
its cross-field constraints (:meth:`~AbstractStudy.check`).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import xarray as xr

from ..._cost import COMPILE_SECONDS, FLOPS_PER_SECOND
from ..._schema import Section

COMPILED_SHAPES = 4
"""Kernel shapes whose compilation the estimate counts (later ones hit the cache or overlap)."""


class Estimate(NamedTuple):
    """Rough peak memory and run time of a study, good to an order of magnitude."""

    bytes: int
    seconds: float

    @classmethod
    def of(cls, memory: float, flops: float, compiles: int) -> Estimate:
        """``flops`` at :data:`nth_dynamics._cost.FLOPS_PER_SECOND` plus the
        compilation of up to :data:`COMPILED_SHAPES` kernel shapes."""
        return cls(int(memory), flops / FLOPS_PER_SECOND + COMPILE_SECONDS * min(compiles, COMPILED_SHAPES))


class StudyError(ValueError):
    """A study's fields that do not fit together: ``field`` (the study's own
    field name) and ``problem`` (what was given, what is allowed)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def flops_per_pair_layer(activation: str) -> float:
    """Cost of one kernel entry through one layer: the ReLU arc-cosine closed
    form, or a 2-D Gauss–Hermite quadrature (64² nodes) for a smooth activation."""
    return 500.0 if activation == "relu" else 200.0 * 64**2


class AbstractStudy(Section, abc.ABC):
    """One study of ``kind: infinite_width``. A concrete study declares
    ``study: Literal["<tag>"]`` first, then its parameters with defaults, and
    implements the abstract methods; registering it in
    :data:`nth_dynamics.theory.studies.STUDIES` makes it a scenario section."""

    study: str
    """Which study (the tag of the ``infinite_width`` section)."""

    lower: ClassVar[str]
    """What to lower when the memory estimate exceeds ``memory_budget_gb``."""

    @classmethod
    def tag(cls) -> str:
        """The ``study`` value of this class (its Literal)."""
        return cls.model_fields["study"].annotation.__args__[0]

    def arguments(self) -> dict[str, Any]:
        """The parameters as plain JSON-able values (``study`` left out): the
        cell id hashes them and ``study_arguments`` records them."""
        return self.model_dump(mode="json", exclude={"study"})

    def check(self) -> None:
        """Raise :class:`StudyError` if fields contradict each other (each
        field alone is validated by its type). Nothing to check by default."""

    @abc.abstractmethod
    def run(self) -> xr.Dataset:
        """Compute the study: a Dataset with CF attributes on every variable."""

    @abc.abstractmethod
    def estimate(self) -> Estimate:
        """Rough peak memory and time of :meth:`run`, before running it."""

    @abc.abstractmethod
    def draw(self, ds: xr.Dataset, out_dir: Path) -> list[Path]:
        """The figures of a result of :meth:`run` in ``out_dir`` (PNG + SVG)."""

    @abc.abstractmethod
    def summarise(self, ds: xr.Dataset) -> str:
        """The body of ``report.md``: the result's key numbers as Markdown."""


__all__ = ["AbstractStudy", "Estimate", "StudyError", "flops_per_pair_layer"]
