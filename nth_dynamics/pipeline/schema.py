"""The sections of a ``kind: finite_width`` scenario (``data``, ``network``,
``hierarchy``, ``reference``, ``time``, ``output``) as frozen pydantic models,
and the save times they define.

Every section is a :class:`~nth_dynamics._schema.Section`: unknown keys are
errors, values are frozen, floats are finite. Fields marked ``Sweep`` take one
value or a list (a grid or batch axis of the scenario, see
:mod:`nth_dynamics.pipeline.scenario`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from jaxtyping import Float
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PlainSerializer,
    PositiveFloat,
    PositiveInt,
)

from .._schema import (
    ALL_GROUPS,
    Activation,
    Group,
    Section,
    Sweep,
    _distinct,
    _sorted,
    _trained_groups,
)
from ..engine.hierarchy import SOLVERS
from ..engine.kernels import MAX_ORDER
from ..engine.losses import LOSSES
from ..engine.networks import BRANCHES, PARAMETERIZATIONS, READOUTS
from ..engine.optimizers import OPTIMIZERS


def _order_in_range(order: int) -> int:
    if not 2 <= order <= MAX_ORDER:
        raise ValueError(f"allowed: truncation orders p from 2 to {MAX_ORDER}")
    return order


Order = Annotated[int, AfterValidator(_order_in_range)]
Solver = Literal[tuple(SOLVERS)]  # type: ignore[valid-type]
Loss = Literal[tuple(LOSSES)]  # type: ignore[valid-type]
"""The scenario's ``loss``: a name of :data:`nth_dynamics.engine.losses.LOSSES`."""


def _option_pairs(value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError("allowed: a mapping of the optax optimizer's keyword arguments, e.g. {momentum: 0.9}")  # noqa: TRY004 (pydantic reports ValueError)
    return tuple(sorted(value.items()))


OptimizerOptions = Annotated[
    tuple[tuple[str, Any], ...],  # the values are checked against the optax function (scenario._check_optimizer)
    BeforeValidator(_option_pairs),
    PlainSerializer(dict, return_type=dict),
]
"""Keyword arguments of an optax optimizer: a YAML mapping, stored as sorted
(name, value) pairs so that a scenario stays hashable, written back as a mapping."""

DESCENT_METHODS = ("gradient_descent", "optax")
"""Reference methods that take ``lr`` steps, saved at t = k·lr."""


class _DataBase(Section):
    n_train: Sweep(PositiveInt) = (8,)
    """Training points n (a list sweeps it)."""
    n_test: NonNegativeInt = 0
    """Test points, evaluated but not trained on."""
    d: PositiveInt = 3
    """Input dimension: inputs lie on the unit sphere S^(d−1)."""
    label_noise: NonNegativeFloat = 0.0
    """Standard deviation of Gaussian noise added to the training labels."""
    seed: NonNegativeInt = 0
    """Seed of the data (shared by every network seed and cell)."""


class SphereData(_DataBase):
    """x uniform on S^(d−1); y = sin(π · frequency · ⟨u, x⟩) for a fixed random unit u."""

    kind: Literal["sphere"] = "sphere"
    frequency: PositiveFloat = 1.0


class TeacherData(_DataBase):
    """x uniform on S^(d−1); y from a random wide network of the project
    (``teacher: network``) or a zonal spherical harmonic of ``degree`` k,
    y = P_k(⟨u, x⟩) with P_k the Gegenbauer polynomial normalised to P_k(1) = 1
    (``teacher: harmonic``)."""

    kind: Literal["teacher"]
    teacher: Literal["network", "harmonic"] = "network"
    teacher_architecture: Literal["ffnet", "resnet"] = "ffnet"
    teacher_width: PositiveInt = 512
    teacher_depth: PositiveInt = 1
    teacher_activation: Activation = "tanh"
    degree: PositiveInt = 2


class DigitsData(_DataBase):
    """scikit-learn's bundled 8×8 digits (no download): two classes, labels
    +1 / −1, projected onto their first d principal components, on the sphere."""

    kind: Literal["digits"]
    classes: tuple[Annotated[int, Field(ge=0, le=9)], Annotated[int, Field(ge=0, le=9)]] = (0, 1)
    d: PositiveInt = 8


class FileData(_DataBase):
    """A user file: ``.npz`` with arrays x_train, y_train[, x_test, y_test], or
    ``.csv`` with a header, a ``y`` column, an optional ``split`` column
    (train|test) and the inputs in every other column. A relative ``path`` is
    relative to the scenario file. n_train, n_test and d default to the file's."""

    kind: Literal["file"]
    path: str
    """The .npz or .csv file (relative paths are relative to the scenario file)."""
    normalize: bool = True
    """Project the inputs onto the unit sphere (docs/theory.md §1)."""
    n_train: Sweep(PositiveInt) | None = None
    n_test: NonNegativeInt | None = None
    d: PositiveInt | None = None


DATA_KINDS: dict[str, type[_DataBase]] = {
    "sphere": SphereData,
    "teacher": TeacherData,
    "digits": DigitsData,
    "file": FileData,
}
DataSpec = Annotated[SphereData | TeacherData | DigitsData | FileData, Field(discriminator="kind")]



class Network(Section):
    """The network of docs/theory.md §5 (see :mod:`nth_dynamics.networks`)."""

    architecture: Sweep(Literal["ffnet", "resnet"]) = ("ffnet",)
    width: Sweep(PositiveInt) = (64,)
    depth: Sweep(NonNegativeInt) = (1,)
    activation: Sweep(Activation) = ("tanh",)
    alpha: Sweep(PositiveFloat) | None = None
    """ResNet block scale α (give alpha or gamma)."""
    gamma: Sweep(NonNegativeFloat) | None = None
    """ResNet block scale α = depth^(−γ); default γ = 1/2."""
    branch: Literal[BRANCHES] = "two"  # type: ignore[valid-type]
    readout: Literal[READOUTS] = "activation"  # type: ignore[valid-type]
    trained: Annotated[
        tuple[Group, ...], BeforeValidator(_trained_groups), AfterValidator(_distinct), AfterValidator(_sorted)
    ] = ALL_GROUPS
    W_std: Sweep(PositiveFloat) = (1.0,)
    """neural-tangents' ``W_std`` of every dense layer (docs/neural_tangents.md)."""
    b_std: Sweep(NonNegativeFloat) = (0.0,)
    """neural-tangents' ``b_std`` of every dense layer; 0: no biases (its ``b_std=None``)."""
    parameterization: Literal[PARAMETERIZATIONS] = "ntk"  # type: ignore[valid-type]
    """``ntk`` (weights N(0, 1), W_std/√fan_in in the forward pass) or ``standard``
    (weights N(0, W_std²/fan_in)): neural-tangents' two parameterizations."""
    output_scale: Sweep(PositiveFloat) = (1.0,)
    """The laziness scale α (COB; docs/theory.md §9): train f0 + α (f − f0) on the
    loss / α², whose hierarchy is the tower of f with K(r) / α^(r−2). 1: the
    network as it is; large α: lazy; α ~ m^(−1/2): mean-field. Cells that
    differ only in α share one tower when they run in turn."""


class Hierarchy(Section):
    """The truncated NTH (docs/theory.md §3), integrated with Diffrax."""

    orders: Annotated[Sweep(Order), AfterValidator(_sorted)] = (2, 3, 4)
    solver: Solver = "tsit5"
    rtol: PositiveFloat = 1e-9
    atol: PositiveFloat = 1e-9
    max_steps: PositiveInt = 100_000
    on_failure: Literal["stop", "record"] = "stop"
    """What an NTH solve that does not reach the last save time does (step
    budget exhausted, or step size driven to zero: the truncated dynamics blew
    up). ``stop``: the sweep stops with a one-line error. ``record``: the
    cell is kept: ``nth_failed`` flags the (seed, order), its outputs are
    inf from the first save time the solver did not reach (so is E_p: the
    truncated dynamics stopped following training), and the reference and
    the other orders are unaffected. For sweeps into widths where a
    truncation is expected to break down."""
    basis: Literal["full", "reduced"] = "full"
    """``full``: the exact tower, K(r) of N_eval·n^(r−1) numbers. ``reduced``:
    every kernel index from the third on projected on a basis V (n × k) of the
    training residual's trajectory, K̂(r) of N_eval·n·k^(r−2) numbers
    (docs/theory.md §8): the reference runs first and seeds V, which is then
    enlarged by the NTH's own residuals; the change of f between the last two
    bases is stored as ``basis_error``, and a cell whose estimate exceeds
    1e−3 of E_p is refused rather than kept (exit 1). For large n."""
    basis_tol: PositiveFloat = 1e-12
    """``basis: reduced``: the POD keeps the directions whose singular values
    exceed ``basis_tol`` × the largest."""


class Reference(Section):
    """Training of the real network the NTH is compared with (docs/theory.md §1)."""

    method: Literal["gradient_flow", "gradient_descent", "optax"] = "gradient_flow"
    """``optax``: an optimizer of optax (``optimizer``), which the hierarchy does
    not describe (docs/theory.md §9), stepped like gradient descent."""
    lr: PositiveFloat | None = None
    """Learning rate, gradient_descent and optax only; t1/lr steps."""
    optimizer: Literal[tuple(OPTIMIZERS)] | None = None  # type: ignore[valid-type]
    """method optax: the optax optimizer (sgd takes momentum and nesterov)."""
    optimizer_options: OptimizerOptions = ()
    """method optax: keyword arguments of the optimizer other than its learning rate."""
    solver: Solver = "tsit5"
    rtol: PositiveFloat = 1e-9
    atol: PositiveFloat = 1e-9
    max_steps: PositiveInt = 100_000


class Time(Section):
    """Save times: ``n_saves`` times from 0 to ``t1`` (gradient-flow time of the 1/(2n) loss)."""

    t1: PositiveFloat = 1.0
    n_saves: Annotated[int, Field(ge=2)] = 21
    spacing: Literal["linear", "log"] = "linear"
    t_min: PositiveFloat | None = None
    """First nonzero save time of a log grid (default t1/1000); 0 is always saved."""
    unit: Literal["t", "n_over_lambda_min"] = "t"
    """What the save times count. ``t``: gradient-flow time of the 1/(2n) loss.
    ``n_over_lambda_min``: multiples of n/λ_min(K2₀) of each seed's network, the
    time scale on which training converges (HY Cor. 2.5): every seed then runs
    to its own gradient-flow time, kept as the output's ``time_scale``. For
    comparing n or architectures at equal progress of training."""


def _output_suffix(path: str | None) -> str | None:
    if path is not None and Path(path).suffix not in (".nc", ".zarr"):
        raise ValueError("allowed: a path ending in .nc (netCDF) or .zarr (zarr)")
    return path


class Output(Section):
    path: Annotated[str | None, AfterValidator(_output_suffix)] = None
    """Result file, format from the suffix (.nc or .zarr); default results/<name>.nc.
    A relative path is relative to the working directory."""
    save_kernels: bool = False
    """Also save the NTK trajectories ntk_nth and ntk_ref (N_eval × n per save)."""


FINITE_WIDTH_FIELDS = ("seed", "precision", "data", "network", "hierarchy", "reference", "loss", "time")
"""Top-level fields that only ``kind: finite_width`` reads."""


def save_times(time: Time, reference: Reference) -> Float[np.ndarray, " n_saves"]:
    """Save times from 0 to t1: linear, log (0 then a geometric grid from
    t_min), or the gradient-descent (and optax) times k·lr·save_every."""
    if reference.method in DESCENT_METHODS:
        _, save_every = descent_steps(time, reference)
        return reference.lr * save_every * np.arange(time.n_saves, dtype=np.float64)
    if time.spacing == "log":
        t_min = time.t_min or time.t1 / 1000
        return np.concatenate([[0.0], np.geomspace(t_min, time.t1, time.n_saves - 1)])
    return np.linspace(0.0, time.t1, time.n_saves)


def descent_steps(time: Time, reference: Reference) -> tuple[int, int]:
    """(steps, save_every) of the gradient-descent or optax reference."""
    steps = round(time.t1 / reference.lr)
    return steps, steps // (time.n_saves - 1)
