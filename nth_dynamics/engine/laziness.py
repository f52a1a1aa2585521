"""The laziness scale α (COB; docs/theory.md §9): what training a network
with ``output_scale=α`` means, in one place.

A network with output scale α still computes its own f(x; θ). What is
trained is

    f_α(x; θ) = f(x; θ0) + α (f(x; θ) − f(x; θ0))      on the loss L(f_α) / α²,

so that θ moves by dθ/dt = −(1/(αn)) Σ_b ℓ′_b ∇θ f(x_b) and

    df_α/dt = −(1/n) K2 · ℓ′,   dK(r)/dt = −(1/(αn)) K(r+1) · ℓ′:

the hierarchy of f_α is the tower of f rescaled, K̃(r) = K(r) / α^(r−2)
(:func:`lazy_tower`), and one tower serves every α. α → ∞ is the lazy
(kernel) limit, α ~ m^(−1/2) the mean-field regime.

COB centre the model, α (f − f0), which starts at 0. Here f_α starts at
f0 = f(x; θ0) instead, so that α = 1 is the network as it always was (bit
for bit: every function below returns its input unchanged at α = 1) and f_α
stays finite as α → ∞. The two differ by the constant f0 only: the same
gradients, the same rescaled tower, the same hierarchy; only the initial
value of the outputs differs (f0 here, 0 for COB), and with it the residual
training starts from.

α is a static Python float (a field of the network, part of the compiled
program), so ``α == 1`` is decided while tracing, never on device.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from jaxtyping import Array


def check_output_scale(value) -> float:
    """α as a float; ValueError for anything but a finite real number > 0
    (bools and strings are refused, not coerced)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not value > 0:
        raise ValueError(f"output_scale must be a finite number > 0, got {value!r}")
    return float(value)


def output_scale(model) -> float:
    """α of a model: its ``output_scale`` field (the project's networks), 1
    for any other model (trained as it is)."""
    from .networks import AbstractNetwork  # networks imports this module

    # only the project's networks: a user's module may have a field of that name (a trained scale, say)
    return model.output_scale if isinstance(model, AbstractNetwork) else 1.0


def lazy_tower(tower: Sequence[Array], alpha: float) -> tuple[Array, ...]:
    """The tower of the hierarchy of f_α in the time of L/α²:
    K̃(r) = K(r) / α^(r−2), from the tower ``(K2, …, Kp)`` of f (full or
    projected on a basis: the projection is linear in every trailing index,
    so it rescales the same way). K̃2 = K2: the NTK of f, not of f_α (which
    is α² K2), because the loss is divided by α². At α = 1 the tower itself."""
    tower = tuple(tower)
    if alpha == 1.0:
        return tower
    return tuple(kernel / alpha ** (r - 2) if r > 2 else kernel for r, kernel in enumerate(tower, start=2))


def lazy_outputs(f: Array, f0: Array | None, alpha: float) -> Array:
    """f_α = f0 + α (f − f0) from the outputs f of the network and f0 of its
    initialisation, on the same points. At α = 1, ``f`` itself (``f0`` may then be None)."""
    if alpha == 1.0:
        return f
    return f0 + alpha * (f - f0)


def lazy_loss_factor(alpha: float) -> float:
    """The 1/α² the loss of f_α is divided by, so that df_α/dt = −(1/n) K2 · ℓ′
    at every α (the time of the hierarchy does not depend on α)."""
    return 1.0 / alpha**2


__all__ = ["check_output_scale", "lazy_loss_factor", "lazy_outputs", "lazy_tower", "output_scale"]
