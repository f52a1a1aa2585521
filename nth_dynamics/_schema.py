"""The building blocks of every schema the project reads: the error a bad
input raises, the frozen section base, and the field types shared by the
scenario sections and the infinite-width studies (one value or a list of
them, the activation and parameter-group names)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from .engine.networks import ACTIVATIONS, PARAMETER_GROUPS


class ScenarioError(ValueError):
    """An invalid scenario. ``str(error)`` is one line naming the file, the
    field path and what is allowed; the CLI prints it and exits with status 2."""


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _distinct(values: tuple) -> tuple:
    if not values:
        raise ValueError("allowed: at least one value (got an empty list)")
    return _unrepeated(values)


def _unrepeated(values: tuple) -> tuple:
    repeated = [v for v in dict.fromkeys(values) if values.count(v) > 1]
    if repeated:
        raise ValueError(f"allowed: distinct values ({repeated[0]!r} is repeated)")
    return values


def Sweep(item: Any) -> Any:  # noqa: N802  (a type constructor)
    """One value or a list of values (stored as a tuple): a sweep axis."""
    return Annotated[tuple[item, ...], BeforeValidator(_as_tuple), AfterValidator(_distinct)]


def _sorted(values: tuple) -> tuple:
    return tuple(sorted(values))


ALL_GROUPS = tuple(sorted(PARAMETER_GROUPS))
"""``trained: all`` as it is stored (groups sorted, like every list of
groups): also the default, which pydantic does not validate, so that the
default and an explicit ``all`` give one cell id."""


def _trained_groups(value: Any) -> Any:
    if value == "all":
        return ALL_GROUPS
    return _as_tuple(value)


Activation = Literal[tuple(ACTIVATIONS)]  # type: ignore[valid-type]
Group = Literal[PARAMETER_GROUPS]  # type: ignore[valid-type]


class Section(BaseModel):
    """A section of a scenario: unknown keys are errors, values are frozen,
    floats finite (nan and ±inf are refused wherever a number is meant)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)


def Values(item: Any, *, allow_empty: bool = False) -> Any:  # noqa: N802  (a type constructor)
    """One value or a list of distinct values, stored sorted (the axis of a study)."""
    check = _unrepeated if allow_empty else _distinct
    return Annotated[tuple[item, ...], BeforeValidator(_as_tuple), AfterValidator(check), AfterValidator(_sorted)]


Digit = Annotated[int, Field(ge=0, le=9)]


def fail(source: str, path: str, problem: str) -> NoReturn:
    """Raise the one-line :class:`ScenarioError` ``<source>: <field path>: <problem>``."""
    raise ScenarioError(f"{source}: {path}: {problem}")
