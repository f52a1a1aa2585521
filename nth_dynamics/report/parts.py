"""A sweep run in parts, read as one result (issue 11): each part narrows one
scenario with ``--set`` (``network.depth=[8]``, ``network.architecture=[ffnet]``,
other widths or n, …), runs as its own process and writes its own file; they
share a cells directory, so a part that stops resumes where it stopped.
:func:`combine` puts the parts back into the one Dataset the union grid
would have given (:func:`nth_dynamics.pipeline.results.combine` puts cells
on a grid; this puts whole results together), with NaN where an
(architecture, depth, n, width, …) was run by no part.

Combining is refused, with a one-line error naming the file, when

* the parts' resolved scenarios differ in a field other than the swept ones
  (:data:`UNION_FIELDS`) and the ones that do not change a cell's numbers
  (:data:`NOT_COMPUTED`): different tolerances, time unit, seeds, data, …;
* two parts hold the same cell with different values (beyond ``tolerance``);
* a full-basis and a reduced-basis part hold the same cell.

Parts may differ in ``hierarchy.basis`` (docs/theory.md §8): the p = 4 parts
of issue 11 at large n run the reduced-basis hierarchy, those at small n the
full one. A reduced E_p is an approximation and must not stand under the
exact one's name unlabelled, so the combination labels every cell with the
basis it was computed in (:data:`BASIS_LABEL`, read back by
:func:`cell_basis`), and the basis outputs (:data:`BASIS_VARIABLES`) are NaN
at the full-basis cells: the full hierarchy has no basis error, and 0 would
claim a measurement that was never made. ``hierarchy.basis_tol`` applies to
the reduced parts only; they must agree on it (it changes their numbers).
A cell held by both a full and a reduced part is refused rather than one
of them kept: the two are different computations under different cell ids,
and a researcher who ran both meant to compare them, not to have one
silently dropped (narrow one part with ``--set``).

The combined Dataset keeps where it came from: ``parts`` (a JSON list of
each part's file, scenario name, scenario sha256, overrides, git commit and
history), ``git_commit`` (the parts' commits) and ``scenario`` (the
resolved scenario of the union grid).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._files import read_dataset
from .._provenance import base_attributes
from ..pipeline.cells import LEFT_OUT_AT_DEFAULT
from ..pipeline.results import annotate
from ..pipeline.scenario import SWEEP_DIMS, ScenarioError
from .series import RESIDUAL_SCALES  # grid fields a part may lack because it has no ResNet (FFNets only)

UNION_FIELDS: dict[str, str | None] = {**{field: dim for dim, field in SWEEP_DIMS.items()}, "hierarchy.orders": None}
"""Scenario field → its grid dimension: the fields whose values the combined
result takes the union of. ``hierarchy.orders`` too: every order is solved
from the one tower of a cell, so a cell's p = 2 does not depend on whether
p = 4 was solved beside it (dimension ``order``)."""

NOT_COMPUTED = ("name", "description", "output.path", "memory_budget_gb", "hierarchy.on_failure")
"""Fields that may differ between parts: they name or place a result, or
change how a cell is run, not its numbers. ``memory_budget_gb`` picks the
chunks (as in the cell id); ``hierarchy.on_failure``: a part run with
``stop`` holds only solves that reached the end, which ``record`` keeps as
they are (its ``nth_failed`` is then false there)."""

SOLVER_STATISTICS = ("nth_num_steps", "nth_num_rejected_steps", "ref_num_steps", "ref_num_rejected_steps")
"""How a solve got there, not what it found: two solves of one cell that
agree within a tolerance > 0 may count other steps (the first part's kept)."""

BASIS_FIELDS = ("hierarchy.basis", "hierarchy.basis_tol")
"""Fields in which parts may differ because the cells carry them
(:data:`BASIS_LABEL`): the basis, and its tolerance among reduced parts."""

BASIS_LABEL = "hierarchy_basis"
"""The per-cell label of a combined result (over the swept dims, width
included): ``"full"`` or ``"reduced"``, ``""`` where no part ran the cell."""

BASIS_VARIABLES = ("basis_rank", "basis_error", "basis_error_ratio", "projected_kernel_magnitude")
"""The outputs of a reduced cell alone: NaN at the full-basis cells of a combination."""

_PART_ATTRS = ("scenario_yaml", "scenario_source", "scenario_overrides", "stage_wall_times")
"""Attributes of one part that say nothing of the union (kept in ``parts``)."""


def read_result(path: str | os.PathLike) -> xr.Dataset:
    """A result file of ``simulate``, loaded; :class:`ScenarioError` (one line
    naming the file) when it is missing, unreadable or not such a result."""
    path = Path(path)
    allowed = "allowed: a .nc or .zarr file written by simulate"
    if not path.exists():
        raise ScenarioError(f"{path}: no such result file; {allowed}")
    try:
        ds = read_dataset(path)
    except Exception as error:  # noqa: BLE001 (h5py, zarr and xarray raise many kinds)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ScenarioError(f"{path}: cannot be read as a result ({reason}); {allowed}") from None
    return _checked(ds, str(path))


def _checked(ds: xr.Dataset, name: str) -> xr.Dataset:
    needed = {"truncation_error", "kernel_magnitude"}
    if "width" not in ds.dims or not needed & set(ds.data_vars):
        raise ScenarioError(f"{name}: not a result of simulate (no width dimension, or none of "
                            f"{', '.join(sorted(needed))}); allowed: a .nc or .zarr file written by simulate")
    return ds


def combine(
    parts: Sequence[str | os.PathLike | xr.Dataset],
    *,
    tolerance: float = 0.0,
) -> xr.Dataset:
    """One result from results of parts of a sweep (see the module docstring).

    Args:
        parts: result files of ``simulate`` (or their Datasets, named
            ``part 1``, ``part 2``, … in messages).
        tolerance: two values of one cell held by two parts agree when
            ``|a − b| ≤ tolerance · max(1, |a|, |b|)``; 0 (default): exactly
            (NaN equal to NaN), as when the parts read the cell from one
            cells directory. A cell computed twice (e.g. with different
            orders beside it, so under another cell id) can differ in the
            last bits; its first part's values are kept (its solver
            statistics too, which are then not compared).

    Returns:
        The Dataset over the union of the parts' grids, dims in the order
        :func:`nth_dynamics.simulate` writes them (each grid coordinate
        sorted), NaN (``False`` for ``nth_failed`` and ``point_valid``) where
        no part ran a cell; a grid field that is one value in every part
        stays a scalar coordinate. The point slots are re-laid for the
        largest n of the union (training points first, then test points).

    Raises:
        ScenarioError: a part cannot be read or is not a result; two parts'
            scenarios differ in a field that is not swept; two parts
            disagree on a shared cell; a part lacks a grid field others have;
            a full-basis and a reduced-basis part hold the same cell.

    With a reduced-basis part among them, the result has :data:`BASIS_LABEL`
    (the basis of every cell) and the :data:`BASIS_VARIABLES` of the reduced
    parts, NaN at the full-basis cells (``basis_rank`` then a float).
    """
    if isinstance(parts, (str, os.PathLike, xr.Dataset)):
        parts = [parts]
    if not parts:
        raise ScenarioError("combine: no parts given; allowed: one or more result files of simulate")
    names, datasets = [], []
    for index, part in enumerate(parts):
        if isinstance(part, xr.Dataset):
            names.append(f"part {index + 1}")
            datasets.append(_checked(part, names[-1]))
        else:
            names.append(str(part))
            datasets.append(read_result(part))
    scenarios = [_scenario(ds, name) for ds, name in zip(datasets, names)]
    _check_scenarios(scenarios, names)
    grid = _union_grid(datasets)
    n_max = max(ds.sizes.get("train_point", 0) for ds in datasets)
    bases = [_basis(scenario) for scenario in scenarios]
    pieces = [(piece, name, basis) for ds, name, basis in zip(datasets, names, bases)
              for piece in _by_residual_scale(ds, grid)]
    normalised = [_normalise(piece, name, grid, n_max) for piece, name, _ in pieces]
    label = _basis_label([(ds, name, basis) for ds, (_, name, basis) in zip(normalised, pieces)], grid)
    normalised = [ds.drop_vars(BASIS_LABEL, errors="ignore") for ds in normalised]  # the union's is built above
    _check_shared_cells(normalised, [name for _, name, _ in pieces], tolerance)
    dtypes = {key: variable.dtype for ds in normalised for key, variable in ds.data_vars.items()}
    flags = [key for key, dtype in dtypes.items() if dtype == bool]
    # a flag as a float for the merge: NaN, not False, is what no part holds (no_conflicts skips it)
    normalised = [ds.assign({key: ds[key].astype(float) for key in flags if key in ds}) for ds in normalised]
    try:
        merged = xr.merge(normalised, join="outer", compat="no_conflicts", combine_attrs="drop_conflicts")
    except (xr.MergeError, ValueError) as error:  # what the checks above do not name
        raise ScenarioError(f"{', '.join(names)}: cannot be combined ({str(error).splitlines()[0]})") from None
    for key, dtype in dtypes.items():
        if dtype == bool:  # no part ran it: no point there, no failed solve
            merged[key] = merged[key].fillna(0.0).astype(bool)
        elif dtype.kind in "iu" and merged[key].dtype != dtype and not bool(merged[key].isnull().any()):
            # the outer join masks every part before merging: counts the union covers are whole numbers again
            merged[key] = merged[key].astype(dtype)
        if merged[key].dtype != merged[key].encoding.get("dtype", merged[key].dtype):
            # a count NaN at some cells (basis_rank at the full-basis ones) is written as the float it now is
            merged[key].encoding.pop("dtype")
    merged = merged.sortby([dim for dim, values in grid.items() if isinstance(values, list)])
    if set(bases) != {"full"}:  # a result of full-basis parts alone stays as simulate writes it
        merged[BASIS_LABEL] = label
    merged = _canonical(merged)
    merged.attrs = _attributes(datasets, names, scenarios, grid, bases)
    return annotate(merged)


def _scenario(ds: xr.Dataset, name: str) -> dict[str, Any]:
    try:
        scenario = json.loads(ds.attrs["scenario"])
    except (KeyError, TypeError, ValueError):
        raise ScenarioError(f"{name}: has no resolved scenario (attribute 'scenario'); allowed: results of simulate, "
                            "which record it") from None
    if "model_factory" in ds.attrs:  # a user's model: which one is part of what a cell computes
        scenario["model_factory"] = ds.attrs["model_factory"]
    return scenario


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_scenarios(scenarios: Sequence[Mapping[str, Any]], names: Sequence[str]) -> None:
    """Every field other than the union, the uncomputed and the basis ones is
    the same in every part; ``basis_tol`` the same in every part that has a
    reduced basis (the full one does not read it)."""
    skipped = set(UNION_FIELDS) | set(NOT_COMPUTED) | set(BASIS_FIELDS)
    allowed = (f"allowed: parts of one sweep, whose scenarios differ only in the swept fields "
               f"({', '.join(UNION_FIELDS)}) and hierarchy.basis")
    first = _flatten(scenarios[0])
    for scenario, name in zip(scenarios[1:], names[1:]):
        flat = _flatten(scenario)
        for field in sorted((set(first) | set(flat)) - skipped):
            mine, theirs = flat.get(field, "(unset)"), first.get(field, "(unset)")
            if mine != theirs:
                raise ScenarioError(f"{name}: {field} is {json.dumps(mine)}, but {names[0]} has {json.dumps(theirs)}; "
                                    f"{allowed}")
    reduced = [(scenario, name) for scenario, name in zip(scenarios, names) if _basis(scenario) != "full"]
    for scenario, name in reduced[1:]:
        mine, theirs = scenario["hierarchy"].get("basis_tol"), reduced[0][0]["hierarchy"].get("basis_tol")
        if mine != theirs:
            raise ScenarioError(f"{name}: hierarchy.basis_tol is {json.dumps(mine)}, but {reduced[0][1]} has "
                                f"{json.dumps(theirs)}; allowed: reduced-basis parts with one basis_tol (it changes "
                                "their numbers; the full-basis parts do not read it)")


def _basis(scenario: Mapping[str, Any]) -> str:
    """A part's ``hierarchy.basis``: "full" (also for results from before the
    field existed), "reduced", or "mixed" (a combination of both)."""
    return scenario.get("hierarchy", {}).get("basis", "full")


def _basis_label(pieces: Sequence[tuple[xr.Dataset, str, str]], grid: Mapping[str, list | Any]) -> xr.DataArray:
    """:data:`BASIS_LABEL` of the union: each piece's basis at every cell of its
    grid (a combined part: its own label); :class:`ScenarioError` where a
    full and a reduced piece hold the same cell."""
    swept = [dim for dim, values in grid.items() if isinstance(values, list)]
    label = xr.DataArray(np.full([len(grid[dim]) for dim in swept], "", dtype="<U7"),
                         coords={dim: grid[dim] for dim in swept}, dims=swept)
    holder = np.full(label.shape, "", dtype=object)  # which part put the label there, for the message
    for ds, name, basis in pieces:
        coords = {dim: ds[dim].values for dim in swept}
        if BASIS_LABEL in ds:
            own = ds[BASIS_LABEL].transpose(*swept).values.astype(str)
        else:
            own = np.full([len(values) for values in coords.values()], basis, dtype="<U7")
        index = np.ix_(*(np.searchsorted(np.asarray(grid[dim]), coords[dim]) for dim in swept))
        there = label.values[index]
        clash = (there != "") & (own != "") & (there != own)
        if clash.any():
            at = np.unravel_index(np.argmax(clash), clash.shape)
            where = ", ".join(f"{dim}={coords[dim][k]}" for dim, k in zip(swept, at))
            raise ScenarioError(
                f"{name}: holds the cell {where} in the {own[at]} basis, which {holder[index][at]} holds in the "
                f"{there[at]} basis; allowed: parts in which every cell has one basis (narrow one with --set)")
        label.values[index] = np.where(own != "", own, there)
        holder[index] = np.where(own != "", name, holder[index])
    return label.assign_attrs(long_name="basis the cell's hierarchy was solved in (hierarchy.basis): full or reduced; "
                                        "empty where no part ran the cell", units="1")


def cell_basis(ds: xr.Dataset) -> xr.DataArray:
    """The basis of every cell of a result, over its swept dims: its
    :data:`BASIS_LABEL` (a combination of parts), else its scenario's
    ``hierarchy.basis`` at every cell ("full" without a scenario)."""
    if BASIS_LABEL in ds:
        return ds[BASIS_LABEL].astype(str)
    try:
        basis = _basis(json.loads(ds.attrs.get("scenario", "{}")))
    except (TypeError, ValueError):
        basis = "full"
    dims = [dim for dim in SWEEP_DIMS if dim in ds.dims]
    return xr.DataArray(np.full([ds.sizes[dim] for dim in dims], basis, dtype="<U7"),
                        coords={dim: ds[dim] for dim in dims}, dims=dims)


def _grid_value(ds: xr.Dataset, dim: str) -> list | None:
    """A part's values of a grid dimension: its coordinate (a dim or a
    scalar), the default the pipeline leaves out, or None (absent)."""
    if dim in ds.coords:
        return np.atleast_1d(ds[dim].values).tolist()
    default = LEFT_OUT_AT_DEFAULT.get(tuple(SWEEP_DIMS[dim].split(".")), None)
    return None if default is None else [default]


def _union_grid(datasets: Sequence[xr.Dataset]) -> dict[str, list | Any]:
    """Grid dimension → the sorted union of its values (a list: a dimension of
    the result), or the one value every part has (a scalar coordinate)."""
    grid: dict[str, list | Any] = {}
    for dim in SWEEP_DIMS:
        if not any(dim in ds.coords for ds in datasets):  # at its default everywhere: left out, as simulate does
            continue
        values = [_grid_value(ds, dim) for ds in datasets]
        present = sorted({value for part in values if part is not None for value in part})
        if not present:
            continue
        if dim == "width" or len(present) > 1 or any(dim in ds.dims for ds in datasets):
            grid[dim] = present
        else:
            grid[dim] = present[0]
    return grid


def _by_residual_scale(ds: xr.Dataset, grid: Mapping[str, list | Any]) -> list[xr.Dataset]:
    """A part over both architectures, where the union sweeps a residual
    scale, as its FFNets (without alpha, gamma: they stand at every value,
    as in a sweep over γ) and its ResNets (at their own)."""
    scales = [dim for dim in RESIDUAL_SCALES if isinstance(grid.get(dim), list) and dim in ds.coords]
    if not scales or "architecture" not in ds.dims or "ffnet" not in ds["architecture"].values.tolist():
        return [ds]
    ffnet = ds["architecture"] == "ffnet"
    return [ds.sel(architecture=ffnet).drop_vars(scales), ds.sel(architecture=~ffnet)]


def _normalise(ds: xr.Dataset, name: str, grid: Mapping[str, list | Any], n_max: int) -> xr.Dataset:
    """A part on the layout of the union: every grid dim of the union on every
    per-cell variable (the labels over n_train only, as simulate writes them),
    point slots for ``n_max`` training points."""
    ds = _relaid_points(ds, n_max)
    architectures = set(np.atleast_1d(ds["architecture"].values).tolist()) if "architecture" in ds.coords else set()
    values: dict[str, list] = {}
    for dim, union in grid.items():
        own = _grid_value(ds, dim)
        if own is None:
            if dim in RESIDUAL_SCALES and architectures == {"ffnet"}:
                own = union if isinstance(union, list) else [union]
            else:
                raise ScenarioError(f"{name}: has no {dim} coordinate, which other parts have "
                                    f"({', '.join(str(v) for v in np.atleast_1d(union))}); allowed: parts that "
                                    "set the same grid fields (an FFNet-only part may leave alpha, gamma unset)")
        values[dim] = own
    scalar = [dim for dim in grid if dim in ds.coords and dim not in ds.dims]
    ds = ds.drop_vars(scalar)
    swept = [dim for dim, union in grid.items() if isinstance(union, list)]
    variables = {}
    for key, variable in ds.data_vars.items():
        for dim in swept:
            if dim not in variable.dims and ("width" in variable.dims or dim == "n_train"):
                variable = variable.expand_dims({dim: values[dim]})
        variables[key] = variable
    out = xr.Dataset(variables, coords={k: v for k, v in ds.coords.items() if k not in variables}, attrs=ds.attrs)
    out = out.assign_coords({dim: union for dim, union in grid.items() if not isinstance(union, list)})
    # expand_dims broadcasts (a read-only view): a copy that the shared-cell check may write into
    return _canonical(out).copy(deep=True)


def _relaid_points(ds: xr.Dataset, n_max: int) -> xr.Dataset:
    """Training point slots 0…n_max−1, test points after them (as
    :func:`nth_dynamics.pipeline.results.combine` lays a sweep over n)."""
    if "point" not in ds.dims or "train_point" not in ds.dims:
        return ds
    n = ds.sizes["train_point"]
    n_test = ds.sizes["point"] - n
    if n == n_max:
        return ds
    slots = np.concatenate([np.arange(n), n_max + np.arange(n_test)])
    fill = {name: False for name, variable in ds.data_vars.items() if variable.dtype == bool}
    ds = ds.drop_vars("split").assign_coords(point=slots)
    ds = ds.reindex(point=np.arange(n_max + n_test), train_point=np.arange(n_max), fill_value=fill)
    return ds.assign_coords(split=("point", np.array(["train"] * n_max + ["test"] * n_test, dtype="<U5")))


def _canonical(ds: xr.Dataset) -> xr.Dataset:
    """Every variable with its grid dims first, outermost first
    (:data:`SWEEP_DIMS`), then its own dims in their order: as simulate writes it."""
    def order(variable):
        grid = [dim for dim in SWEEP_DIMS if dim in variable.dims]
        return [*grid, *(dim for dim in variable.dims if dim not in grid)]

    variables = {key: variable.transpose(*order(variable)) for key, variable in ds.data_vars.items()}
    return ds.assign(variables)


def _check_shared_cells(parts: list[xr.Dataset], names: Sequence[str], tolerance: float) -> None:
    """Two parts holding one cell hold the same numbers; within ``tolerance``
    the later part takes the earlier one's, so that the merge keeps one."""
    for (i, first), (j, second) in itertools.combinations(enumerate(parts), 2):
        a, b = xr.align(first, second, join="inner")
        if any(a.sizes[dim] == 0 for dim in a.dims):
            continue  # no shared cell
        for key in sorted(set(a.data_vars) & set(b.data_vars)):
            mine, theirs = a[key], b[key].transpose(*a[key].dims)
            same = _same(mine.values, theirs.values, 0.0)
            if same.all():
                continue
            close = _same(mine.values, theirs.values, tolerance)
            if tolerance > 0 and key in SOLVER_STATISTICS:
                close = np.ones_like(same)
            if not close.all():
                at = np.unravel_index(np.argmin(close), close.shape)
                cell = {dim: mine[dim].values[k].item() for dim, k in zip(mine.dims, at)
                        if dim in SWEEP_DIMS or dim in ("seed", "order", "time")}
                where = ", ".join(f"{dim}={value}" for dim, value in cell.items())
                raise ScenarioError(
                    f"{names[j]}: {key} at {where} is {theirs.values[at].item()!r}, but {names[i]} has "
                    f"{mine.values[at].item()!r} for the same cell; allowed: parts that agree on every cell they share "
                    f"(tolerance {tolerance:g}): the same cells directory, or a scenario difference to remove"
                )
            parts[j][key].loc[{dim: a[dim].values for dim in mine.dims}] = mine.values


def _same(a: np.ndarray, b: np.ndarray, tolerance: float) -> np.ndarray:
    if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":
        return np.asarray(a == b)
    with np.errstate(invalid="ignore"):
        equal = (a == b) | (np.isnan(a) & np.isnan(b))
        if tolerance > 0:
            scale = np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
            equal |= np.abs(a - b) <= tolerance * scale
    return equal


def _attributes(datasets, names, scenarios, grid, bases) -> dict[str, Any]:
    """The union's scenario and title, and each part's provenance. The
    union's ``hierarchy.basis`` is the parts' when they agree, else "mixed"
    (the cells say which: :data:`BASIS_LABEL`); its ``basis_tol`` the reduced parts'."""
    union = json.loads(json.dumps(scenarios[0]))
    if "hierarchy" in union and "basis" in union["hierarchy"] or set(bases) != {"full"}:
        union.setdefault("hierarchy", {})["basis"] = bases[0] if len(set(bases)) == 1 else "mixed"
    reduced = [scenario for scenario, basis in zip(scenarios, bases) if basis != "full"]
    if reduced and "basis_tol" in reduced[0].get("hierarchy", {}):
        union["hierarchy"]["basis_tol"] = reduced[0]["hierarchy"]["basis_tol"]
    for field, dim in UNION_FIELDS.items():
        section, key = field.split(".") if "." in field else ("", field)
        target = union.setdefault(section, {}) if section else union
        if dim is None:  # hierarchy.orders
            target[key] = sorted({order for scenario in scenarios for order in scenario["hierarchy"]["orders"]})
        elif dim in grid:
            target[key] = grid[dim] if isinstance(grid[dim], list) else [grid[dim]]
    unique_names = list(dict.fromkeys(scenario.get("name", "scenario") for scenario in scenarios))
    union["name"] = "+".join(unique_names)
    union.pop("model_factory", None)
    parts = []
    for ds, name, scenario, basis in zip(datasets, names, scenarios, bases):
        parts.append({
            "file": name,
            "scenario_name": scenario.get("name"),
            "basis": basis,
            "scenario_sha256": hashlib.sha256(ds.attrs["scenario"].encode()).hexdigest()[:12],
            "scenario_overrides": json.loads(ds.attrs.get("scenario_overrides", "[]")),
            "git_commit": ds.attrs.get("git_commit", "unknown"),
            "history": ds.attrs.get("history", ""),
            "cells": len(json.loads(ds.attrs.get("cells", "[]"))),
        })
    cells = {cell["cell_id"]: cell for ds in datasets for cell in json.loads(ds.attrs.get("cells", "[]"))}
    attributes = base_attributes(f"nth_dynamics.analysis.combine of {', '.join(names)}")
    titles = list(dict.fromkeys(ds.attrs.get("title", "") for ds in datasets))
    attributes.update(
        title=titles[0] if len(titles) == 1 else "combined parts: " + " | ".join(titles),
        history="\n".join([*(part["history"] for part in parts), attributes["history"]]),
        scenario=json.dumps(union, sort_keys=True),
        parts=json.dumps(parts),
        git_commit=", ".join(dict.fromkeys(part["git_commit"] for part in parts)),
        combined_by_git_commit=attributes["git_commit"],
        cells=json.dumps(list(cells.values())),
    )
    for key in ("model_factory",):
        if key in datasets[0].attrs:
            attributes[key] = datasets[0].attrs[key]
    return {key: value for key, value in attributes.items() if key not in _PART_ATTRS}


__all__ = ["BASIS_FIELDS", "BASIS_LABEL", "BASIS_VARIABLES", "NOT_COMPUTED", "RESIDUAL_SCALES", "SOLVER_STATISTICS",
           "UNION_FIELDS", "cell_basis", "combine", "read_result"]
