"""The infinite-width studies of docs/theory.md §6, one class per file, and
their registry.

:data:`STUDIES` maps the ``infinite_width.study`` tag of a scenario to its
class; :data:`StudySpec` is the type of the ``infinite_width`` section (the
study named by its tag, validated when the scenario is read). Adding a study
is one file with an :class:`~.base.AbstractStudy` subclass and one line in
:func:`registry`'s call below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import SerializeAsAny, WrapValidator
from pydantic_core import PydanticCustomError

from .base import AbstractStudy, Estimate, StudyError
from .depth_generalization import DepthGeneralizationStudy
from .kernel_shapes import KernelShapesStudy
from .spectral_decay import SpectralDecayStudy
from .width_convergence import WidthConvergenceStudy


def registry(*studies: type[AbstractStudy]) -> dict[str, type[AbstractStudy]]:
    """Tag → class, in the order given (the order error messages list them)."""
    return {study.tag(): study for study in studies}


STUDIES: dict[str, type[AbstractStudy]] = registry(
    KernelShapesStudy,
    DepthGeneralizationStudy,
    SpectralDecayStudy,
    WidthConvergenceStudy,
)
"""The studies of ``kind: infinite_width`` (the ``infinite_width.study`` tag)."""


def _by_tag(value: Any, handler: Callable[[Any], AbstractStudy]) -> AbstractStudy:
    # (pydantic's ValidatorFunctionWrapHandler is a protocol no runtime check can test)
    """Validate a section as the study its ``study`` names, looked up in
    :data:`STUDIES` when the scenario is read (so a study registered later
    counts); the errors are pydantic's discriminated-union errors."""
    if isinstance(value, AbstractStudy):
        return value
    if not isinstance(value, Mapping):
        raise PydanticCustomError("model_attributes_type",
                                  "Input should be a valid dictionary or object to extract fields from")
    if "study" not in value:
        raise PydanticCustomError("union_tag_not_found", "Unable to extract tag using discriminator {discriminator}",
                                  {"discriminator": "'study'"})
    tag = value["study"]
    if not isinstance(tag, str) or tag not in STUDIES:
        raise PydanticCustomError(
            "union_tag_invalid",
            "Input tag {tag} found using {discriminator} does not match any of the expected tags: {expected_tags}",
            {"discriminator": "'study'", "tag": str(tag), "expected_tags": ", ".join(repr(t) for t in STUDIES)},
        )
    return STUDIES[tag].model_validate(value)


StudySpec = Annotated[SerializeAsAny[AbstractStudy], WrapValidator(_by_tag)]
"""The ``infinite_width`` section: one registered study, chosen by its ``study`` tag."""

__all__ = [
    "STUDIES",
    "AbstractStudy",
    "DepthGeneralizationStudy",
    "Estimate",
    "KernelShapesStudy",
    "SpectralDecayStudy",
    "StudyError",
    "StudySpec",
    "WidthConvergenceStudy",
    "registry",
]
