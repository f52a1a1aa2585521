"""The optax optimizers a reference may train with (docs/theory.md §9): the
hierarchy describes gradient flow only, so these references show where that
description stops holding (momentum, Adam, …).

An optimizer is named (a key of :data:`OPTIMIZERS`) and built with its step
η (``learning_rate``) and keyword options, checked against the optax
function's own signature so that a misspelt option is named rather than
ignored; :func:`~nth_dynamics.optax_reference` runs it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import optax

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "adam": optax.adam,
    "adamw": optax.adamw,
    "rmsprop": optax.rmsprop,
}
"""Optimizer names accepted by scenarios (``reference.optimizer``) → optax
functions. sgd takes ``momentum`` and ``nesterov``."""

_NOT_OPTIONS = ("learning_rate", "mask", "mu_dtype", "accumulator_dtype")
"""Parameters that are not numeric options: the step is ``lr``; masks and
dtypes have no place in a scenario (the precision is the scenario's)."""


def optimizer_options(name: str) -> dict[str, Any]:
    """Option name → default of optax optimizer ``name`` (its keyword
    parameters other than the learning rate, masks and dtypes)."""
    parameters = inspect.signature(OPTIMIZERS[name]).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in _NOT_OPTIONS and p.default is not p.empty}


def option_problem(name: str, options: Mapping[str, Any]) -> tuple[str, str] | None:
    """(option, what is wrong) for the first bad option of optimizer ``name``, or None.

    An option must be a parameter of the optax function; a boolean default
    takes a boolean, any other a number (or null where the default is None)."""
    if name not in OPTIMIZERS:
        return "", f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}"
    allowed = optimizer_options(name)
    for key, value in options.items():
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), list(allowed), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            return key, f"not an option of optax.{name}{suggestion} (allowed: {', '.join(allowed)})"
        default = allowed[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                return key, f"got {value!r}, allowed: true or false"
        elif not (isinstance(value, (int, float)) and not isinstance(value, bool)) and not (
            value is None and default is None
        ):
            return key, f"got {value!r}, allowed: a number" + (" or null" if default is None else "")
    return None


def make_optimizer(name: str, lr: float, options: Mapping[str, Any] | None = None) -> optax.GradientTransformation:
    """``optax.<name>(learning_rate=lr, **options)``, its options checked
    (:func:`option_problem`); ValueError names the bad one."""
    options = dict(options or {})
    problem = option_problem(name, options)
    if problem is not None:
        key, message = problem
        raise ValueError(f"optimizer {name!r}: {key + ': ' if key else ''}{message}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    return OPTIMIZERS[name](learning_rate=lr, **options)


__all__ = ["OPTIMIZERS", "make_optimizer", "optimizer_options", "option_problem"]
