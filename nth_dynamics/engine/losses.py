"""Training losses L = (1/n) Σ_a ℓ(f(x_a), y_a) (docs/theory.md §1 and §9).

Gradient flow on any such loss gives the hierarchy of docs/theory.md §3 with
the residual r replaced by ℓ′ = ∂ℓ/∂f (HY Thm 2.3 holds for any smooth ℓ):

    df/dt = −(1/n) K2 · ℓ′(f),     dK(r)/dt = −(1/n) K(r+1) · ℓ′(f).

A loss is one small class holding ℓ and ℓ′; everything else (the NTH vector
field, the reference training, the reported loss and accuracy) reads them
from it, so a new loss is one subclass of :class:`AbstractLoss` and one entry
in :data:`LOSSES`. The squared loss ℓ = ½(f − y)² has ℓ′ = r and the p = 2
closed form of docs/theory.md §3; no other loss has one.

The values (``value``, ``mean``, ``accuracy``) take an array namespace
``xp`` (``jax.numpy`` by default, ``numpy`` for the Datasets of the
pipeline), so the one formula serves training and reporting.
"""

from __future__ import annotations

import abc
from types import ModuleType
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


class AbstractLoss(eqx.Module):
    """A pointwise loss ℓ(f, y) of a scalar output f and its label y.

    Subclasses set ``name`` (the scenario's ``loss`` value), ``formula``
    (L in plain text, for the output's ``long_name``), ``closed_form``
    (whether p = 2 has the closed form :func:`~nth_dynamics.closed_form_p2`),
    ``classification`` (whether ``accuracy`` is reported), and implement
    :meth:`value` and :meth:`derivative`; :meth:`label_problem` refuses
    labels the loss is not defined for.
    """

    name: ClassVar[str]
    formula: ClassVar[str]
    closed_form: ClassVar[bool] = False
    classification: ClassVar[bool] = False

    @abc.abstractmethod
    def value(self, f, y, xp: ModuleType = jnp):
        """ℓ(f_a, y_a) per point (broadcasting)."""

    @abc.abstractmethod
    def derivative(self, f: Float[Array, "*shape"], y: Float[ArrayLike, "*labels"]) -> Float[Array, "*shape"]:
        """ℓ′ = ∂ℓ/∂f per point (broadcasting): what replaces the residual in the hierarchy."""

    def mean(self, f, y, xp: ModuleType = jnp):
        """The training loss L = (1/n) Σ_a ℓ(f_a, y_a), over the last axis."""
        return xp.mean(self.value(f, y, xp), axis=-1)

    def accuracy(self, f, y, xp: ModuleType = np):
        """Fraction of points with sign(f_a) = y_a over the last axis (labels ±1;
        f = 0 counts as wrong); NaN for no points."""
        if f.shape[-1] == 0:
            return xp.full(f.shape[:-1], xp.nan)
        return xp.mean(y * f > 0, axis=-1)

    def label_problem(self, y: ArrayLike) -> str | None:
        """What is wrong with labels ``y`` for this loss (one line), or None."""
        return None


class Squared(AbstractLoss):
    """ℓ = ½(f − y)², ℓ′ = f − y = r: the loss of docs/theory.md §1 (``"mse"``)."""

    name: ClassVar[str] = "mse"
    formula: ClassVar[str] = "(1/2n) sum_a (f_a - y_a)^2"
    closed_form: ClassVar[bool] = True

    def value(self, f, y, xp: ModuleType = jnp):
        return (f - y) ** 2 / 2

    def derivative(self, f: Float[Array, "*shape"], y: Float[ArrayLike, "*labels"]) -> Float[Array, "*shape"]:
        return f - y

    def mean(self, f, y, xp: ModuleType = jnp):
        # the expression the project has always trained and reported with
        # (mean of squares, then halved), so results keep their last bits
        return xp.mean((f - y) ** 2, axis=-1) / 2


class Logistic(AbstractLoss):
    """ℓ = log(1 + e^(−y f)) for labels y = ±1, ℓ′ = −y / (1 + e^(y f)) (``"logistic"``).

    Both are written without overflow: ℓ = softplus(−y f) (``logaddexp(0, −y f)``)
    and ℓ′ = −y σ(−y f)."""

    name: ClassVar[str] = "logistic"
    formula: ClassVar[str] = "(1/n) sum_a log(1 + exp(-y_a f_a))"
    classification: ClassVar[bool] = True

    def value(self, f, y, xp: ModuleType = jnp):
        return xp.logaddexp(0.0, -y * f)

    def derivative(self, f: Float[Array, "*shape"], y: Float[ArrayLike, "*labels"]) -> Float[Array, "*shape"]:
        return -y * jax.nn.sigmoid(-y * f)

    def label_problem(self, y: ArrayLike) -> str | None:
        labels = np.asarray(y)
        other = labels[np.abs(labels) != 1]
        if other.size:
            return f"the logistic loss needs labels +1 and −1 exactly, got {other.flat[0]:g}"
        return None


LOSSES: dict[str, type[AbstractLoss]] = {"mse": Squared, "logistic": Logistic}
"""Loss names accepted by ``loss=`` and the scenario's ``loss`` → classes."""


def resolve_loss(loss: str | AbstractLoss) -> AbstractLoss:
    """The loss named ``loss`` (a key of :data:`LOSSES`), or ``loss`` itself."""
    if isinstance(loss, AbstractLoss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))} or an AbstractLoss, got {loss!r}")


def check_labels(loss: AbstractLoss, y: ArrayLike) -> None:
    """Raise ValueError when ``y`` are not labels of ``loss`` (nothing while being traced)."""
    if isinstance(y, jax.core.Tracer):
        return
    problem = loss.label_problem(y)
    if problem is not None:
        raise ValueError(f"y_train: {problem}")


__all__ = ["LOSSES", "AbstractLoss", "Logistic", "Squared", "check_labels", "resolve_loss"]
