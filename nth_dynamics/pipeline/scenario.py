"""Scenario files: the YAML schema, ``--set`` overrides, the sweep grid and its
cells (docs/architecture.md, "The one path data takes").

A scenario is a YAML mapping validated by the frozen pydantic models below.
Any of ``seed``, ``network.{architecture, width, depth, activation, gamma,
alpha}``, ``data.n_train`` and ``hierarchy.orders`` may be a list:

* ``seed`` is a *batch* axis: the seeds of one cell run as one vmapped
  computation;
* ``hierarchy.orders`` are all solved from the one kernel tower of a cell;
* every other list is a *grid* axis: the scenario expands into independent
  cells, one per combination, each with a stable id (a hash of what the cell
  computes).

A scenario of ``kind: infinite_width`` has instead one ``infinite_width``
section: a study of :mod:`nth_dynamics.depth_study` and its keyword arguments
(run by :mod:`nth_dynamics.infinite_width`; it has no cells or grid).

Every invalid input ends in a :class:`ScenarioError` whose message is one line
naming the file, the field path and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import jax
import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
)

from .._schema import (
    Activation,
    Group,
    ScenarioError,
    Section,
    Sweep,
    _distinct,
    _sorted,
    _trained_groups,
)
from ..data import digits_class_sizes, read_file_arrays
from ..engine.hierarchy import SOLVERS
from ..engine.kernels import MAX_ORDER
from ..engine.networks import (
    BRANCHES,
    PARAMETER_GROUPS,
    READOUTS,
    residual_scale,
)
from .study_specs import (
    STUDIES,
    DepthGeneralizationStudy,
    SpectralDecayStudy,
    StudySpec,
    WidthConvergenceStudy,
)


def _order_in_range(order: int) -> int:
    if not 2 <= order <= MAX_ORDER:
        raise ValueError(f"allowed: truncation orders p from 2 to {MAX_ORDER}")
    return order


Order = Annotated[int, AfterValidator(_order_in_range)]
Solver = Literal[tuple(SOLVERS)]  # type: ignore[valid-type]


# ----------------------------------------------------------------------------- data


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
DataSpec = Annotated[Union[SphereData, TeacherData, DigitsData, FileData], Field(discriminator="kind")]


# ----------------------------------------------------------------------------- the other sections


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
    ] = PARAMETER_GROUPS


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


class Reference(Section):
    """Training of the real network the NTH is compared with (docs/theory.md §1)."""

    method: Literal["gradient_flow", "gradient_descent"] = "gradient_flow"
    lr: PositiveFloat | None = None
    """Learning rate, gradient_descent only; t1/lr steps."""
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


FINITE_WIDTH_FIELDS = ("seed", "precision", "data", "network", "hierarchy", "reference", "time")
"""Top-level fields that only ``kind: finite_width`` reads."""


SWEEP_DIMS: dict[str, str] = {
    "architecture": "network.architecture",
    "activation": "network.activation",
    "depth": "network.depth",
    "gamma": "network.gamma",
    "alpha": "network.alpha",
    "n_train": "data.n_train",
    "width": "network.width",
}
"""Grid dimensions of the output, outermost first → the scenario field of each.
``width`` is always a dimension; the others only when given more than one value."""


@dataclass(frozen=True)
class Cell:
    """One independent computation of a sweep: every seed of one grid point.

    ``coords``: grid dimension → value (every dim of :data:`SWEEP_DIMS` the
    scenario sweeps, and width). ``spec``: everything the cell computes from,
    as plain JSON-able data; ``id`` is a hash of ``spec``, so two grid points
    that compute the same thing (an FFNet at two values of the ResNet γ) share
    an id and are run once.
    """

    id: str
    coords: dict[str, Any]
    spec: dict[str, Any]

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.coords.items())


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
        cells = []
        for combination in itertools.product(*grid.values()):
            coords = dict(zip(grid, combination))
            spec = self._cell_spec(coords)
            cells.append(Cell(id=cell_id(spec), coords=coords, spec=spec))
        return cells

    def _cell_spec(self, coords: Mapping[str, Any]) -> dict:
        def pick(dim: str) -> Any:
            values = self.field(SWEEP_DIMS[dim])
            return coords.get(dim, values[0] if values is not None else None)

        architecture, depth = pick("architecture"), pick("depth")
        network = {
            "architecture": architecture,
            "width": pick("width"),
            "depth": depth,
            "activation": pick("activation"),
            "readout": self.network.readout,
            "trained": list(self.network.trained),
        }
        if architecture == "resnet":
            network["alpha"] = residual_scale(depth, alpha=pick("alpha"), gamma=pick("gamma"))
            network["branch"] = self.network.branch
        data = self.data.model_dump(mode="json")
        data["n_train"] = pick("n_train")
        if isinstance(self.data, FileData):
            data["sha256"] = _file_digest(self.data.path)
        return {
            "precision": self.precision,
            "seeds": list(self.seed),
            "data": data,
            "network": network,
            # defaults left out so that the ids of cells made before the field existed still hold
            "hierarchy": self.hierarchy.model_dump(
                mode="json", exclude={"on_failure"} if self.hierarchy.on_failure == "stop" else None
            ),
            "reference": self.reference.model_dump(mode="json"),
            "time": self.time.model_dump(mode="json", exclude={"unit"} if self.time.unit == "t" else None),
            "save_kernels": self.output.save_kernels,
            "memory_budget_gb": self.memory_budget_gb,
        }


def cell_id(spec: Mapping[str, Any]) -> str:
    """A stable 12-hex-digit id of a cell spec. A data file enters through the
    hash of its contents, not its path, so ids agree across machines; the
    memory budget does not enter."""
    data = {key: value for key, value in spec["data"].items() if key != "path"}
    # the budget only picks the tower's direction chunk: the same numbers either way
    spec = {key: value for key, value in spec.items() if key != "memory_budget_gb"}
    return hashlib.sha256(json.dumps({**spec, "data": data}, sort_keys=True).encode()).hexdigest()[:12]


def save_times(time: Time | Mapping, reference: Reference | Mapping) -> np.ndarray:
    """Save times from 0 to t1: linear, log (0 then a geometric grid from
    t_min), or the gradient-descent times k·lr·save_every."""
    time = time if isinstance(time, Time) else Time(**time)
    reference = reference if isinstance(reference, Reference) else Reference(**reference)
    if reference.method == "gradient_descent":
        steps, save_every = descent_steps(time, reference)
        return reference.lr * save_every * np.arange(time.n_saves, dtype=np.float64)
    if time.spacing == "log":
        t_min = time.t_min or time.t1 / 1000
        return np.concatenate([[0.0], np.geomspace(t_min, time.t1, time.n_saves - 1)])
    return np.linspace(0.0, time.t1, time.n_saves)


def descent_steps(time: Time, reference: Reference) -> tuple[int, int]:
    """(steps, save_every) of the gradient-descent reference."""
    steps = round(time.t1 / reference.lr)
    return steps, steps // (time.n_saves - 1)


# ----------------------------------------------------------------------------- loading


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
    return parse_scenario(text, source=str(path), overrides=overrides, base_dir=path.parent)


def parse_scenario(
    text: str,
    *,
    source: str = "<scenario>",
    overrides: Sequence[str] = (),
    base_dir: str | os.PathLike = ".",
) -> Scenario:
    """Validate and resolve a scenario given as YAML text (see :func:`load_scenario`)."""
    raw = _parse_yaml(text, source)
    for override in overrides:
        _apply_override(raw, override, source)
    raw.setdefault("name", _default_name(source))
    if isinstance(raw.get("data"), dict):
        raw["data"] = {"kind": "sphere", **raw["data"]}
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as error:
        raise ScenarioError(_describe(error, raw, source)) from None
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


def _parse_yaml(text: str, source: str) -> dict:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ScenarioError(
            f"{source}: {where}: YAML syntax error ({problem}); allowed: a YAML mapping of "
            "scenario fields, as in scenarios/quickstart.yaml"
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ScenarioError(
            f"{source}: (top level): got a {type(raw).__name__}; allowed: a mapping with the keys "
            f"{_keys(Scenario)}"
        )
    return raw


def _apply_override(raw: dict, override: str, source: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ScenarioError(
            f"{source}: --set {override!r}: not of the form key=value; allowed: e.g. network.width=[64,128]"
        )
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ScenarioError(
            f"{source}: --set {key}: the value {text!r} is not valid YAML; allowed: e.g. 64, [64, 128], tanh"
        ) from None
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            path = ".".join(parts[: depth + 1])
            raise ScenarioError(f"{source}: --set {key}: {path} is not a section; allowed: a field inside a section")
        node = child
    node[parts[-1]] = value


# ----------------------------------------------------------------------------- error messages


def _keys(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _section_model(path: Sequence[str], raw: Mapping) -> type[BaseModel] | None:
    """The model class of the section at ``path`` (for key suggestions)."""
    sections = {
        "network": Network,
        "hierarchy": Hierarchy,
        "reference": Reference,
        "time": Time,
        "output": Output,
    }
    if not path:
        return Scenario
    if len(path) == 1 and path[0] == "data":
        kind = raw.get("data", {}).get("kind", "sphere") if isinstance(raw.get("data"), dict) else "sphere"
        return DATA_KINDS.get(kind)
    if len(path) == 1 and path[0] == "infinite_width":
        study = raw.get("infinite_width", {}).get("study") if isinstance(raw.get("infinite_width"), dict) else None
        return STUDIES.get(study)
    if len(path) == 1:
        return sections.get(path[0])
    return None


def _display_path(loc: Sequence[Any], raw: Any) -> tuple[list[str], str]:
    """Field path of a pydantic error location, without pydantic's internal
    labels (the discriminator tag of ``data`` and ``infinite_width``; a list
    index when the user wrote a single value)."""
    keys: list[str] = []
    text = ""
    node = raw
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part not in node and not last and part in (node.get("kind"), node.get("study")):
            continue  # the discriminated-union tag
        if isinstance(part, int):
            if isinstance(node, (list, tuple)):
                text += f"[{part}]"
                node = node[part] if part < len(node) else None
            continue  # a single value was given: no index to show
        keys.append(str(part))
        text += ("." if text else "") + str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return keys, text or "(top level)"


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: ValidationError, raw: Mapping, source: str) -> str:
    errors = error.errors()
    first = errors[0]
    keys, path = _display_path(first["loc"], raw)
    kind = first["type"]
    ctx = first.get("ctx") or {}
    got = first.get("input")
    if kind == "extra_forbidden":
        model = _section_model(keys[:-1], raw)
        allowed = list(model.model_fields) if model else []
        hint = difflib.get_close_matches(keys[-1], allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        variants = {"data": ("data kind", DATA_KINDS), "infinite_width": ("study", STUDIES)}.get(".".join(keys[:-1]))
        if variants and not hint:
            label, models = variants
            others = [name for name, variant in models.items() if keys[-1] in variant.model_fields]
            suggestion = f"; it belongs to {label} {' and '.join(others)}" if others else ""
        problem = f"unknown key{suggestion} (allowed keys: {', '.join(allowed)})"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tag_name = str(ctx.get("discriminator", "kind")).strip("'")
        tags = list(STUDIES if tag_name == "study" else DATA_KINDS)
        path = f"{path}.{tag_name}"
        if kind == "union_tag_not_found":
            problem = f"required field is missing; allowed: {', '.join(tags)}"
        else:
            hint = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            problem = f"got {ctx.get('tag')!r}, allowed: {', '.join(tags)}{suggestion}"
    elif kind == "literal_error":
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
        hint = difflib.get_close_matches(str(got), options, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        problem = f"got {_brief(got)}, allowed: {expected}{suggestion}"
    elif kind == "missing":
        problem = "required field is missing"
        model = _section_model(keys[:-1], raw)
        if model is not None and keys[-1] in model.model_fields:
            doc = (model.model_fields[keys[-1]].description or "").strip().rstrip(".")
            problem += f" ({doc})" if doc else ""
    else:
        message = first["msg"].removeprefix("Value error, ")
        message = message.replace("Input should be", "allowed:", 1)
        problem = f"got {_brief(got)}, {message}" if message.startswith("allowed") else f"got {_brief(got)}: {message}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{source}: {path}: {problem}{more}"


# ----------------------------------------------------------------------------- cross-field checks


def _fail(scenario_source: str, path: str, problem: str) -> None:
    raise ScenarioError(f"{scenario_source}: {path}: {problem}")


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
    if ref.method == "gradient_descent":
        if ref.lr is None:
            _fail(source, "reference.lr", "required field is missing; allowed: a learning rate > 0 for gradient_descent")
        if time.spacing != "linear":
            _fail(source, "time.spacing", "got 'log', allowed: 'linear' with reference.method gradient_descent")
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
        _fail(source, "reference.lr", "applies only to method gradient_descent; allowed: remove it (null)")
    if time.unit == "n_over_lambda_min" and ref.method == "gradient_descent":
        _fail(
            source,
            "time.unit",
            "n_over_lambda_min gives every seed its own gradient-flow time, which fixed descent steps cannot follow; "
            "allowed: 't' with gradient_descent, or reference.method gradient_flow",
        )
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
        data = _resolve_file_data(data, source, base_dir)
    elif isinstance(data, DigitsData):
        _check_digits(data, source)
    elif isinstance(data, TeacherData) and data.teacher == "harmonic" and data.d < 2:
        _fail(source, "data.d", f"got {data.d}, allowed: d ≥ 2 for a spherical-harmonic teacher")
    return scn.model_copy(update={"data": data})


def _check_digits(data: DigitsData | DepthGeneralizationStudy, source: str, section: str = "data") -> None:
    """The digits task (``data`` or a depth_generalization study): d, classes and sizes."""

    if data.d > 64:
        _fail(source, f"{section}.d", f"got {data.d}, allowed: 1 to 64 (the digits are 8×8 images)")
    if data.classes[0] == data.classes[1]:
        _fail(source, f"{section}.classes", f"got {list(data.classes)}, allowed: two different digits 0–9")
    available = sum(digits_class_sizes()[c] for c in data.classes)
    n_train = data.n_train if isinstance(data.n_train, int) else max(data.n_train)
    if n_train + data.n_test > available:
        _fail(
            source,
            f"{section}.n_train",
            f"n_train + n_test = {n_train + data.n_test} but the digits {list(data.classes)} "
            f"have {available} images; allowed: n_train + n_test ≤ {available}",
        )


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
    if isinstance(study, DepthGeneralizationStudy) and study.task == "digits":
        _check_digits(study, source, "infinite_width")
    elif isinstance(study, SpectralDecayStudy):
        low, high = study.fit_range
        if not (low + 3 <= high <= study.k_max):
            _fail(source, "infinite_width.fit_range", f"got {list(study.fit_range)}, allowed: [k_min, k_max] with "
                  f"k_min + 3 ≤ k_max ≤ infinite_width.k_max = {study.k_max} (two degrees of each parity)")
    elif isinstance(study, WidthConvergenceStudy):
        resnet = study.architecture == "resnet"
        if len(study.widths) < 2:
            _fail(source, "infinite_width.widths", f"got {list(study.widths)}, allowed: at least two widths (for the slope)")
        if study.alpha is not None and study.gamma is not None:
            _fail(source, "infinite_width.alpha", "give either alpha or gamma for the residual scale, not both")
        for name in ("alpha", "gamma"):
            if getattr(study, name) is not None and not resnet:
                _fail(source, f"infinite_width.{name}", "applies only to architecture resnet; allowed: remove it")
        if resnet and study.depth == 0:
            _fail(source, "infinite_width.depth", "got 0, allowed: depth ≥ 1 for resnet (ffnet allows 0)")
        if resnet and study.branch == "one" and study.readout == "activation":
            _fail(source, "infinite_width.readout", "got 'activation' with branch one (no covariance recursion); "
                  "allowed: 'linear', or branch two")
    return scn


def _resolve_file_data(data: FileData, source: str, base_dir: Path) -> FileData:

    path = Path(data.path).expanduser()
    path = path if path.is_absolute() else (base_dir / path)
    if path.suffix not in (".npz", ".csv"):
        _fail(source, "data.path", f"got {data.path!r}, allowed: a .npz or .csv file")
    if not path.is_file():
        _fail(
            source,
            "data.path",
            f"{str(path)!r}: no such file; allowed: an existing .npz or .csv file (relative to the scenario file)",
        )
    try:
        x_train, _, x_test, _ = read_file_arrays(path)
    except ValueError as error:
        _fail(source, "data.path", f"{path.name}: {error}")
    updates: dict[str, Any] = {"path": str(path.resolve())}
    d = x_train.shape[1]
    if data.d is not None and data.d != d:
        _fail(source, "data.d", f"got {data.d} but the file's inputs have {d} columns; allowed: {d} (or omit d)")
    updates["d"] = d
    n_file, n_test_file = x_train.shape[0], x_test.shape[0]
    n_train = data.n_train or (n_file,)
    if max(n_train) > n_file:
        _fail(source, "data.n_train", f"got {max(n_train)}, allowed: at most the file's {n_file} training rows")
    updates["n_train"] = n_train
    n_test = n_test_file if data.n_test is None else data.n_test
    if n_test > n_test_file:
        _fail(source, "data.n_test", f"got {n_test}, allowed: at most the file's {n_test_file} test rows")
    updates["n_test"] = n_test
    return data.model_copy(update=updates)


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
    "Cell",
    "DATA_KINDS",
    "STUDIES",
    "SWEEP_DIMS",
    "Scenario",
    "ScenarioError",
    "cell_id",
    "load_scenario",
    "parse_scenario",
    "save_times",
]
