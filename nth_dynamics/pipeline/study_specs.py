"""The ``infinite_width`` section of a scenario: one study of
:mod:`nth_dynamics.depth_study` and its keyword arguments."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)

from .._schema import (
    Activation,
    Digit,
    Group,
    Section,
    Values,
    _distinct,
    _sorted,
    _trained_groups,
)
from ..engine.networks import BRANCHES, PARAMETER_GROUPS, READOUTS
from ..theory.depth_study import DEFAULT_DEPTHS, DEFAULT_GAMMAS


class _StudyBase(Section):
    """A study of ``kind: infinite_width``: the keyword arguments of one
    :mod:`nth_dynamics.depth_study` function; ``activation`` is that of every
    kernel (relu: closed-form arc-cosine maps; the others by quadrature)."""


class KernelShapesStudy(_StudyBase):
    """Depth degeneracy (HWTZ): Θ_L(ρ)/Θ_L(1) against depth for the FFNet and
    one ResNet per γ (:func:`nth_dynamics.depth_study.kernel_shapes`)."""

    study: Literal["kernel_shapes"]
    depths: Values(PositiveInt) = DEFAULT_DEPTHS
    """Network depths L (FFNet hidden-to-hidden layers, ResNet blocks)."""
    gammas: Values(NonNegativeFloat, allow_empty=True) = DEFAULT_GAMMAS
    """One ResNet per γ, α = L^(−γ) ([] for the FFNet alone)."""
    angles: Annotated[int, Field(ge=3)] = 401
    """Points ρ = cos θ, θ equally spaced in [0, π]."""
    activation: Activation = "relu"


class DepthGeneralizationStudy(_StudyBase):
    """Test error against depth of kernel regression and the NTK gradient flow
    (:func:`nth_dynamics.depth_study.depth_generalization`)."""

    study: Literal["depth_generalization"]
    task: Literal["digits", "teacher"] = "digits"
    """digits (two classes of the bundled digits) or teacher (a random wide tanh network on the sphere)."""
    depths: Values(PositiveInt) = DEFAULT_DEPTHS
    gammas: Values(NonNegativeFloat, allow_empty=True) = DEFAULT_GAMMAS
    n_train: PositiveInt = 150
    n_test: PositiveInt = 200
    d: PositiveInt = 8
    """Input dimension (digits: principal components)."""
    seed: NonNegativeInt = 0
    """Seed of the data."""
    times: Values(PositiveFloat) = (10.0, 100.0, 1000.0)
    """Gradient-flow times besides t = ∞ (kernel regression)."""
    classes: tuple[Digit, Digit] = (3, 8)
    """digits: the two digits, labelled +1 and −1."""
    activation: Activation = "relu"


class SpectralDecayStudy(_StudyBase):
    """Gegenbauer spectra on S^(d−1) and their k^(−d) decay (BGGB)
    (:func:`nth_dynamics.depth_study.spectral_decay`)."""

    study: Literal["spectral_decay"]
    dims: Values(Annotated[int, Field(ge=2)]) = (2, 3, 4)
    """Input dimensions d (the sphere S^(d−1))."""
    depths: Values(PositiveInt) = (2, 4, 8)
    gammas: Values(NonNegativeFloat, allow_empty=True) = (0.5, 1.0)
    k_max: PositiveInt = 256
    """Highest degree k of the spectrum."""
    fit_range: tuple[PositiveInt, PositiveInt] = (32, 128)
    """Degrees [k_min, k_max] of the power-law fit."""
    activation: Activation = "relu"


class WidthConvergenceStudy(_StudyBase):
    """Seed ensembles of the project's networks against the limit NTK, deviation
    ~ width^(−1/2) (:func:`nth_dynamics.depth_study.width_convergence`)."""

    study: Literal["width_convergence"]
    architecture: Literal["ffnet", "resnet"] = "ffnet"
    depth: NonNegativeInt = 1
    widths: Values(PositiveInt) = (64, 128, 256, 512, 1024, 2048)
    """Network widths m (at least two, for the fitted slope)."""
    seeds: PositiveInt = 8
    """Networks per width."""
    n: PositiveInt = 8
    """Points on the sphere."""
    d: PositiveInt = 3
    seed: NonNegativeInt = 0
    """Seed of the points, the networks and the bootstrap."""
    bootstrap: PositiveInt = 1000
    """Bootstrap resamples of the seeds for the slope's interval."""
    activation: Activation = "tanh"
    readout: Literal[READOUTS] = "activation"  # type: ignore[valid-type]
    trained: Annotated[
        tuple[Group, ...], BeforeValidator(_trained_groups), AfterValidator(_distinct), AfterValidator(_sorted)
    ] = PARAMETER_GROUPS
    alpha: PositiveFloat | None = None
    """resnet: block scale α (give alpha or gamma)."""
    gamma: NonNegativeFloat | None = None
    """resnet: α = depth^(−γ); default γ = 1/2."""
    branch: Literal[BRANCHES] = "two"  # type: ignore[valid-type]


STUDIES: dict[str, type[_StudyBase]] = {
    "kernel_shapes": KernelShapesStudy,
    "depth_generalization": DepthGeneralizationStudy,
    "spectral_decay": SpectralDecayStudy,
    "width_convergence": WidthConvergenceStudy,
}
"""The studies of ``kind: infinite_width`` (the ``infinite_width.study`` tag)."""
StudySpec = Annotated[
    Union[KernelShapesStudy, DepthGeneralizationStudy, SpectralDecayStudy, WidthConvergenceStudy],
    Field(discriminator="study"),
]
