"""Scenario files: the Scenario model, its sweep grid and cells, and loading
(docs/architecture.md, "The one path data takes").

A scenario is a YAML mapping validated by frozen pydantic models (the sections
of :mod:`nth_dynamics.pipeline.schema`), strictly: no value is coerced from
another type (``"64"`` is not a width, ``1.0`` not an integer, ``true`` not a
number) except an integer where a float is meant, no number is nan or
infinite, no key is repeated. Any of ``seed``, ``network.{architecture, width,
depth, activation, gamma, alpha, W_std, b_std, output_scale}``, ``data.n_train``
and ``hierarchy.orders`` may be a list:

* ``seed`` is a *batch* axis: the seeds of one cell run as one vmapped
  computation;
* ``hierarchy.orders`` are all solved from the one kernel tower of a cell;
* every other list is a *grid* axis: the scenario expands into independent
  cells (:mod:`nth_dynamics.pipeline.cells`), one per combination, each with a
  stable id (a hash of what the cell computes).

A scenario of ``kind: infinite_width`` has instead one ``infinite_width``
section: a study of :mod:`nth_dynamics.theory.depth_study` and its keyword
arguments (run by :mod:`nth_dynamics.pipeline.infinite_width`; no grid).

Every invalid input ends in a :class:`ScenarioError` whose message is one line
naming the file, the field path and what is allowed.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import numpy as np
import yaml
from pydantic import (
    BaseModel,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PrivateAttr,
    ValidationError,
)

from .._schema import ScenarioError, Section, Sweep
from .._schema import fail as _fail
from ..engine.losses import resolve_loss
from ..engine.networks import residual_scale
from ..engine.optimizers import OPTIMIZERS, option_problem
from ..theory.studies import STUDIES, StudyError, StudySpec
from .cells import Cell, CellSpec, NetworkSpec
from .data_checks import check_digits as _check_digits
from .data_checks import check_labels as _check_labels
from .data_checks import file_digest, resolve_file_data
from .loading import apply_override, as_tuples, describe, read_yaml
from .schema import (
    DATA_KINDS,
    DESCENT_METHODS,
    FINITE_WIDTH_FIELDS,
    DataSpec,
    DigitsData,
    FileData,
    Hierarchy,
    Loss,
    Network,
    Output,
    Reference,
    SphereData,
    TeacherData,
    Time,
    save_times,
)

SWEEP_DIMS: dict[str, str] = {
    "architecture": "network.architecture",
    "activation": "network.activation",
    "depth": "network.depth",
    "gamma": "network.gamma",
    "alpha": "network.alpha",
    "W_std": "network.W_std",
    "b_std": "network.b_std",
    "output_scale": "network.output_scale",
    "n_train": "data.n_train",
    "width": "network.width",
}
"""Grid dimensions of the output, outermost first → the scenario field of each.
``width`` is always a dimension; the others only when given more than one value."""




class Scenario(Section):
    """A validated, resolved scenario (frozen and hashable)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = "scenario"
    description: str = ""
    kind: Literal["finite_width", "infinite_width"] = "finite_width"
    """finite_width: the NTH against the trained networks (data, network, hierarchy,
    reference, time); infinite_width: one study of the limit kernels (the infinite_width section)."""
    seed: Sweep(NonNegativeInt) = (0,)
    """Network seeds: one vmapped batch per cell."""
    precision: Literal["float64", "float32"] = "float64"
    memory_budget_gb: PositiveFloat = 8.0
    """Refuse any cell whose memory estimate exceeds this."""
    data: DataSpec = SphereData()
    network: Network = Network()
    hierarchy: Hierarchy = Hierarchy()
    reference: Reference = Reference()
    loss: Loss = "mse"
    """The training loss of the NTH and of the reference (docs/theory.md §9):
    ``mse`` (1/2n) Σ (f − y)², or ``logistic`` (1/n) Σ log(1 + e^(−y f)) for
    labels ±1 (digits, or a file of ±1 labels), which adds the accuracies."""
    time: Time = Time()
    output: Output = Output()
    infinite_width: StudySpec | None = None
    """kind infinite_width: the study and its parameters."""

    _source: str = PrivateAttr(default="<scenario>")
    _yaml: str = PrivateAttr(default="")
    _overrides: tuple[str, ...] = PrivateAttr(default=())

    @property
    def source(self) -> str:
        """The file this scenario was read from (for messages)."""
        return self._source

    @property
    def yaml_text(self) -> str:
        """The YAML text as read, before overrides."""
        return self._yaml

    @property
    def overrides(self) -> tuple[str, ...]:
        return self._overrides

    def output_path(self) -> Path:
        return Path(self.output.path or f"results/{self.name}.nc")

    def to_json(self) -> str:
        return json.dumps(self._dump(), sort_keys=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self._dump(), sort_keys=False)

    def _dump(self) -> dict[str, Any]:
        """The fields this kind reads (an infinite-width scenario has no network section)."""
        if self.kind == "infinite_width":
            return self.model_dump(mode="json", exclude={**dict.fromkeys(FINITE_WIDTH_FIELDS, True), "output": {"save_kernels"}})
        return self.model_dump(mode="json", exclude={"infinite_width"})

    def save_times(self) -> np.ndarray:
        """The save times (the ``time`` coordinate of the output)."""
        return save_times(self.time, self.reference)

    def grid(self) -> dict[str, tuple]:
        """Grid dimension → values: width always, the others when swept."""
        grid = {}
        for dim, field in SWEEP_DIMS.items():
            values = self.field(field)
            if values is not None and (len(values) > 1 or dim == "width"):
                grid[dim] = values
        return grid

    def field(self, path: str) -> Any:
        """The value at a dotted field path, e.g. ``"network.width"``."""
        value: Any = self
        for key in path.split("."):
            value = getattr(value, key)
        return value

    def cells(self) -> list[Cell]:
        """The cells of the sweep, outermost grid dimension first."""
        grid = self.grid()
        digest = file_digest(self.data.path) if isinstance(self.data, FileData) else None
        return [
            Cell.of(coords, self.cell_spec(coords, data_sha256=digest))
            for coords in (dict(zip(grid, combination)) for combination in itertools.product(*grid.values()))
        ]

    def cell_spec(self, coords: Mapping[str, Any], data_sha256: str | None = None) -> CellSpec:
        """What the cell at grid point ``coords`` computes (unswept fields at their one value)."""

        def pick(dim: str) -> Any:
            values = self.field(SWEEP_DIMS[dim])
            return coords.get(dim, values[0] if values is not None else None)

        architecture, depth = pick("architecture"), pick("depth")
        resnet = architecture == "resnet"
        network = NetworkSpec(
            architecture=architecture,
            width=pick("width"),
            depth=depth,
            activation=pick("activation"),
            readout=self.network.readout,
            trained=self.network.trained,
            alpha=residual_scale(depth, alpha=pick("alpha"), gamma=pick("gamma")) if resnet else None,
            branch=self.network.branch if resnet else None,
            W_std=pick("W_std"),
            b_std=pick("b_std"),
            parameterization=self.network.parameterization,
            output_scale=pick("output_scale"),
        )
        return CellSpec(
            precision=self.precision,
            seeds=self.seed,
            data=self.data.model_copy(update={"n_train": (pick("n_train"),)}),
            network=network,
            hierarchy=self.hierarchy,
            reference=self.reference,
            time=self.time,
            save_kernels=self.output.save_kernels,
            memory_budget_gb=self.memory_budget_gb,
            data_sha256=data_sha256,
            loss=self.loss,
        )


def load_scenario(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Scenario:
    """Read, override, validate and resolve a scenario YAML file.

    ``overrides`` are ``"dotted.key=value"`` strings, the value in YAML syntax
    (``"network.width=[64,128]"``). Raises :class:`ScenarioError` on any
    invalid input, with a one-line message.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file; allowed: a path to a YAML file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{path}: cannot read the scenario file ({error}); allowed: a readable YAML file") from None
    if read_yaml(text, str(path)) is None:
        raise ScenarioError(f"{path}: (top level): the file is empty; allowed: a YAML mapping of scenario fields, "
                            "as in scenarios/quickstart.yaml")
    return parse_scenario(text, source=str(path), overrides=overrides, base_dir=path.parent)


def parse_scenario(
    text: str,
    *,
    source: str = "<scenario>",
    overrides: Sequence[str] = (),
    base_dir: str | os.PathLike = ".",
) -> Scenario:
    """Validate and resolve a scenario given as YAML text (see :func:`load_scenario`;
    here an empty text is the scenario of every default)."""
    raw = read_yaml(text, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ScenarioError(
            f"{source}: (top level): got a {type(raw).__name__}; allowed: a mapping with the keys "
            f"{', '.join(Scenario.model_fields)}"
        )
    for override in overrides:
        apply_override(raw, override, source)
    raw.setdefault("name", _default_name(source))
    if isinstance(raw.get("data"), dict):
        raw["data"] = {"kind": "sphere", **raw["data"]}
    try:
        scenario = Scenario.model_validate(as_tuples(raw), strict=True)
    except ValidationError as error:
        raise ScenarioError(describe(error, raw, source, Scenario)) from None
    if any(override.split("=", 1)[0].strip() == "network.architecture" for override in overrides):
        scenario = _narrowed_to_ffnet(scenario)
    scenario = _resolve(scenario, source, Path(base_dir))
    scenario._source = source
    scenario._yaml = text
    scenario._overrides = tuple(overrides)
    return scenario


def _default_name(source: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(source).stem)
    return stem if stem[:1].isalnum() else "scenario"


def _narrowed_to_ffnet(scn: Scenario) -> Scenario:
    """A sweep over both architectures narrowed by ``--set`` to FFNets only
    (e.g. one process per architecture): the file's residual scale no longer
    applies, and is dropped rather than refused."""
    if scn.kind == "infinite_width" or "resnet" in scn.network.architecture:
        return scn
    return scn.model_copy(update={"network": scn.network.model_copy(update={"alpha": None, "gamma": None})})


def _resolve(scn: Scenario, source: str, base_dir: Path) -> Scenario:
    """Checks that involve several fields, and resolution of file data."""
    if scn.kind == "infinite_width" or scn.infinite_width is not None:
        return _resolve_infinite_width(scn, source)
    net = scn.network
    resnet = "resnet" in net.architecture
    if net.alpha is not None and net.gamma is not None:
        _fail(source, "network.alpha", "give either alpha or gamma for the residual scale, not both")
    for name in ("alpha", "gamma"):
        if getattr(net, name) is not None and not resnet:
            _fail(source, f"network.{name}", "applies only to architecture resnet; allowed: remove it, or add resnet")
    if resnet and 0 in net.depth:
        _fail(source, "network.depth", "got 0, allowed: depth ≥ 1 for resnet (ffnet allows 0)")

    ref, time = scn.reference, scn.time
    if ref.method in DESCENT_METHODS:
        if ref.lr is None:
            _fail(source, "reference.lr", f"required field is missing; allowed: a learning rate > 0 for {ref.method}")
        if time.spacing != "linear":
            _fail(source, "time.spacing", f"got 'log', allowed: 'linear' with reference.method {ref.method}")
        steps = round(time.t1 / ref.lr)
        if steps < 1 or not math.isclose(steps * ref.lr, time.t1, rel_tol=1e-9):
            _fail(source, "reference.lr", f"t1/lr = {time.t1 / ref.lr:g} is not a whole number of steps; allowed: lr dividing time.t1")
        if steps % (time.n_saves - 1):
            _fail(
                source,
                "time.n_saves",
                f"{steps} descent steps cannot be saved evenly {time.n_saves - 1} times; "
                "allowed: n_saves − 1 dividing t1/lr",
            )
    elif ref.lr is not None:
        _fail(source, "reference.lr", "applies only to methods gradient_descent and optax; allowed: remove it (null)")
    _check_optimizer(ref, source)
    if time.unit == "n_over_lambda_min" and ref.method in DESCENT_METHODS:
        _fail(
            source,
            "time.unit",
            "n_over_lambda_min gives every seed its own gradient-flow time, which fixed descent steps cannot follow; "
            f"allowed: 't' with {ref.method}, or reference.method gradient_flow",
        )
    hierarchy = scn.hierarchy
    if hierarchy.basis == "full" and "basis_tol" in hierarchy.model_fields_set:
        _fail(source, "hierarchy.basis_tol", "applies only to basis reduced; allowed: remove it, or basis: reduced")
    if time.t_min is not None:
        if time.spacing != "log":
            _fail(source, "time.t_min", "applies only to spacing log; allowed: remove it")
        if time.t_min >= time.t1:
            _fail(source, "time.t_min", f"got {time.t_min}, allowed: 0 < t_min < t1 = {time.t1}")

    if scn.precision == "float64" and not jax.config.jax_enable_x64:
        _fail(
            source,
            "precision",
            "got float64 but JAX runs in float32 (NTH_DYNAMICS_X64=0); allowed: float32, or unset NTH_DYNAMICS_X64",
        )
    data = scn.data
    if isinstance(data, FileData):
        data = resolve_file_data(data, source, base_dir)
    elif isinstance(data, DigitsData):
        _check_digits(data, source)
    elif isinstance(data, TeacherData) and data.teacher == "harmonic" and data.d < 2:
        _fail(source, "data.d", f"got {data.d}, allowed: d ≥ 2 for a spherical-harmonic teacher")
    _check_labels(data, resolve_loss(scn.loss), source)
    return scn.model_copy(update={"data": data})


def _check_optimizer(ref: Reference, source: str) -> None:
    """``reference.optimizer`` and its options: required with, and only with,
    method optax; each option a keyword of the optax function."""
    if ref.method != "optax":
        for name in ("optimizer", "optimizer_options"):
            if name in ref.model_fields_set:
                _fail(source, f"reference.{name}", "applies only to method optax; allowed: remove it, or method: optax")
        return
    if ref.optimizer is None:
        _fail(source, "reference.optimizer", f"required field is missing for method optax; allowed: {', '.join(OPTIMIZERS)}")
    problem = option_problem(ref.optimizer, dict(ref.optimizer_options))
    if problem is not None:
        _fail(source, f"reference.optimizer_options.{problem[0]}", problem[1])


def _resolve_infinite_width(scn: Scenario, source: str) -> Scenario:
    """Checks of ``kind: infinite_width``: the section is there, no finite-width
    field is set, and the study's own cross-field constraints."""
    study = scn.infinite_width
    if scn.kind == "finite_width":
        _fail(source, "infinite_width", "applies only to kind infinite_width; allowed: add 'kind: infinite_width', "
              "or remove the section")
    if study is None:
        _fail(source, "infinite_width", f"required field is missing for kind infinite_width; allowed: a section "
              f"with study: {', '.join(STUDIES)}")
    for name in FINITE_WIDTH_FIELDS:
        if name in scn.model_fields_set:
            _fail(source, name, "applies only to kind finite_width; allowed: remove it (kind infinite_width reads "
                  "name, description, memory_budget_gb, output.path and infinite_width)")
    if "save_kernels" in scn.output.model_fields_set:
        _fail(source, "output.save_kernels", "applies only to kind finite_width; allowed: remove it")
    if not jax.config.jax_enable_x64:
        _fail(source, "kind", "infinite_width needs float64 but JAX runs in float32 (NTH_DYNAMICS_X64=0); "
              "allowed: unset NTH_DYNAMICS_X64")
    try:
        study.check()
    except StudyError as error:
        _fail(source, f"infinite_width.{error.field}", error.problem)
    return scn


def iter_fields(model: type[BaseModel] = Scenario, prefix: str = "") -> Iterable[str]:
    """Every dotted field path of the schema (documentation and tests)."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if model is Scenario and name == "data":
            yield from dict.fromkeys(f"data.{field}" for kind in DATA_KINDS.values() for field in kind.model_fields)
        elif model is Scenario and name == "infinite_width":
            yield from dict.fromkeys(f"{name}.{field}" for study in STUDIES.values() for field in study.model_fields)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


__all__ = [
    "STUDIES",
    "SWEEP_DIMS",
    "Cell",
    "CellSpec",
    "Scenario",
    "ScenarioError",
    "iter_fields",
    "load_scenario",
    "parse_scenario",
    "save_times",
]
