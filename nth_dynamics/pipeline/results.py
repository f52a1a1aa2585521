"""The output Dataset of a scenario: per-cell datasets, their combination over
the sweep grid, CF attributes, provenance and atomic netCDF/zarr writing
(docs/architecture.md, "Output Dataset").

Layout of the combined Dataset::

    (swept dims…, width, seed, order, time, point)     f_nth
    (swept dims…, width, seed, time, point)            f_ref
    ([n_train,] point)                                 y, point_valid

``point`` runs over the evaluation points, training points first then test
points, with the coordinate ``split`` ∈ {train, test}. When ``n_train`` is
swept, the training slots run to the largest n_train and the smaller cells are
padded with NaN there; ``point_valid`` says which slots hold a point.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .._files import output_format, read_dataset, write_dataset
from .._provenance import base_attributes
from ..engine.kernels import lambda_min
from ..engine.losses import Squared, resolve_loss

CELL_DIMS = ("seed", "order", "time", "point", "train_point", "rank")

LOSS_VARIABLES: dict[str, str] = {
    "loss_nth": "training loss {} of the truncated NTH",
    "loss_ref": "training loss {} of the reference",
}
"""The loss variables → their long_name, a template filled with the formula
of the scenario's loss (:attr:`~nth_dynamics.AbstractLoss.formula`)."""

VARIABLES: dict[str, tuple[str, str]] = {
    "f_nth": ("network output predicted by the NTH truncated at order p", "1"),
    "f_ref": ("network output under the reference training", "1"),
    "y": ("label (training labels include the label noise)", "1"),
    "point_valid": ("the point slot holds a point of this n_train (else padding)", "1"),
    **{name: (template.format(Squared.formula), "1") for name, template in LOSS_VARIABLES.items()},
    "accuracy_nth": ("fraction of training points with sign(f_nth) = y (loss logistic)", "1"),
    "accuracy_ref": ("fraction of training points with sign(f_ref) = y (loss logistic)", "1"),
    "test_accuracy_nth": ("fraction of test points with sign(f_nth) = y (loss logistic)", "1"),
    "test_accuracy_ref": ("fraction of test points with sign(f_ref) = y (loss logistic)", "1"),
    "truncation_error": ("truncation error E_p = ||f_ref - f_nth||_2 / sqrt(n) over the training points", "1"),
    "test_error": ("truncation error ||f_ref - f_nth||_2 / sqrt(n_test) over the test points", "1"),
    "kernel_magnitude": (
        "max |K(r)| at initialisation over the training rows (the hierarchy's: K(r) / output_scale^(r-2))", "1"
    ),
    "lambda_min": ("smallest eigenvalue of the training block of K2 at initialisation", "1"),
    "ntk_drift_nth": ("max |K2(t) - K2(0)| over the training block, truncated NTH", "1"),
    "ntk_drift_ref": ("max |K2(t) - K2(0)| over the training block, reference", "1"),
    "ntk_nth": ("NTK K2(t) of the truncated NTH (eval point, train point)", "1"),
    "ntk_ref": ("NTK K2(t) of the reference (eval point, train point)", "1"),
    "nth_num_steps": ("solver steps of the NTH solve", "1"),
    "nth_num_rejected_steps": ("rejected solver steps of the NTH solve", "1"),
    "ref_num_steps": ("steps of the reference (solver steps or descent steps)", "1"),
    "ref_num_rejected_steps": ("rejected solver steps of the reference", "1"),
    "nth_failed": ("the NTH solve stopped before the last save time (outputs inf from there on)", "1"),
    "time_scale": ("gradient-flow time per unit of the time coordinate: n / lambda_min", "1"),
    "basis_rank": ("rank k of the reduced basis V of the training residual (hierarchy.basis: reduced)", "1"),
    "basis_error": (
        "estimated error of the reduced basis: max |change of f_nth| when the basis is enlarged by the NTH's own residuals",
        "1",
    ),
    "basis_error_ratio": ("basis_error / max over time of the truncation error E_p", "1"),
    "projected_kernel_magnitude": (
        "max |K(r)| at initialisation over the training rows, trailing indices from the third projected on the reduced basis",
        "1",
    ),
}
"""Variable name → (CF long_name, CF units); "1" is dimensionless."""

SCALED_TIME = "gradient-flow time in units of n / lambda_min(K2 at t = 0) of each seed (times time_scale: the time t)"

COORDINATES: dict[str, tuple[str, str]] = {
    "width": ("network width m", "1"),
    "seed": ("network initialisation seed", "1"),
    "order": ("truncation order p of the NTH", "1"),
    "time": ("gradient-flow time of the loss (1/2n) sum_a (f_a - y_a)^2", "1"),
    "point": ("evaluation point: training points first, then test points", "1"),
    "split": ("whether the point is a training or a test point", "1"),
    "train_point": ("training point (second index of the NTK)", "1"),
    "rank": ("order r of the kernel K(r)", "1"),
    "architecture": ("network architecture", "1"),
    "activation": ("activation function", "1"),
    "depth": ("network depth L (hidden layers or residual blocks)", "1"),
    "gamma": ("residual scale exponent: alpha = depth^(-gamma)", "1"),
    "alpha": ("residual block scale alpha", "1"),
    "W_std": ("weight scale W_std of every dense layer (neural-tangents' Dense)", "1"),
    "b_std": ("bias scale b_std of every dense layer; 0: no biases", "1"),
    "output_scale": ("laziness scale alpha: f0 + alpha (f - f0) trained on the loss / alpha^2", "1"),
    "n_train": ("number of training points n", "1"),
}


def cell_dataset(
    *,
    seeds: Sequence[int],
    orders: Sequence[int],
    ts: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    tower0: Sequence[np.ndarray],
    f_nth: np.ndarray,
    ntk_nth: np.ndarray,
    nth_stats: Mapping[str, np.ndarray],
    f_ref: np.ndarray,
    ntk_ref: np.ndarray,
    ref_stats: Mapping[str, np.ndarray],
    save_kernels: bool,
    time_scale: np.ndarray | None = None,
    nth_failed: np.ndarray | None = None,
    reduced: Mapping[str, np.ndarray] | None = None,
    loss: str = "mse",
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """The Dataset of one cell, all seeds (dims seed, order, time, point,
    train_point, rank) with the derived metrics of docs/theory.md §4 and §7.

    Shapes: ``f_nth`` (seed, order, time, point), ``ntk_nth`` (seed, order,
    time, point, train_point), ``f_ref`` (seed, time, point), ``ntk_ref``
    (seed, time, point, train_point), ``tower0[r − 2]`` (seed, point, train_point, …),
    solver statistics (seed, order) and (seed,). ``time_scale`` (seed,): the
    gradient-flow time per unit of ``ts`` when the save times are in units
    of n/λ_min (``time.unit: n_over_lambda_min``), else None. ``nth_failed``
    (seed, order): which NTH solves stopped before the last save time
    (``hierarchy.on_failure: record``; their outputs are inf from there on),
    else None (every solve succeeded). ``reduced``: with ``hierarchy.basis:
    reduced``, ``basis_rank`` (seed,), ``basis_error`` and
    ``basis_error_ratio`` (seed, order) and ``projected_kernel_magnitude``
    (seed, rank: every rank to the largest order); ``tower0`` then holds K2
    alone, and ``kernel_magnitude`` is NaN for r ≥ 3 (the full tensors were
    never formed: the projected magnitudes never stand under their name).
    ``loss``: the training loss (a name of :data:`~nth_dynamics.engine.losses.LOSSES`)
    of ``loss_nth`` and ``loss_ref``; a classification loss adds the
    accuracies on the training and the test points.
    """
    n = y_train.shape[0]
    y = np.concatenate([y_train, y_test])
    train, test = slice(0, n), slice(n, None)
    magnitudes = np.stack([np.abs(k[:, train]).reshape(len(seeds), -1).max(axis=1) for k in tower0], axis=1)
    difference = f_ref[:, None] - f_nth
    objective = resolve_loss(loss)
    data_vars = {
        "f_nth": (("seed", "order", "time", "point"), f_nth),
        "f_ref": (("seed", "time", "point"), f_ref),
        "y": (("point",), y),
        "loss_nth": (("seed", "order", "time"), objective.mean(f_nth[..., train], y_train, np)),
        "loss_ref": (("seed", "time"), objective.mean(f_ref[..., train], y_train, np)),
        "truncation_error": (("seed", "order", "time"), _rms(difference[..., train])),
        "test_error": (("seed", "order", "time"), _rms(difference[..., test])),
        "kernel_magnitude": (("seed", "rank"), magnitudes),
        "lambda_min": (("seed",), np.asarray(lambda_min(tower0[0]))),
        "ntk_drift_nth": (("seed", "order", "time"), _drift(ntk_nth[..., train, :], axis_time=2)),
        "ntk_drift_ref": (("seed", "time"), _drift(ntk_ref[..., train, :], axis_time=1)),
        "nth_num_steps": (("seed", "order"), nth_stats["num_steps"]),
        "nth_num_rejected_steps": (("seed", "order"), nth_stats["num_rejected_steps"]),
        "ref_num_steps": (("seed",), ref_stats["num_steps"]),
        "ref_num_rejected_steps": (("seed",), ref_stats["num_rejected_steps"]),
    }
    if objective.classification:
        for prefix, split, labels in (("", train, y_train), ("test_", test, y_test)):
            data_vars[f"{prefix}accuracy_nth"] = (("seed", "order", "time"), objective.accuracy(f_nth[..., split], labels))
            data_vars[f"{prefix}accuracy_ref"] = (("seed", "time"), objective.accuracy(f_ref[..., split], labels))
    if nth_failed is not None:
        data_vars["nth_failed"] = (("seed", "order"), np.asarray(nth_failed, dtype=bool))
    if reduced is not None:
        projected = np.asarray(reduced["projected_kernel_magnitude"], dtype=np.float64)
        data_vars["projected_kernel_magnitude"] = (("seed", "rank"), projected)
        full = np.full_like(projected, np.nan)
        full[:, : magnitudes.shape[1]] = magnitudes  # the unprojected kernels given: K2
        data_vars["kernel_magnitude"] = (("seed", "rank"), full)
        data_vars["basis_rank"] = (("seed",), np.asarray(reduced["basis_rank"], dtype=np.int64))
        for name in ("basis_error", "basis_error_ratio"):
            data_vars[name] = (("seed", "order"), np.asarray(reduced[name], dtype=np.float64))
    if time_scale is not None:
        data_vars["time_scale"] = (("seed",), np.asarray(time_scale, dtype=np.float64))
    if save_kernels:
        data_vars["ntk_nth"] = (("seed", "order", "time", "point", "train_point"), ntk_nth)
        data_vars["ntk_ref"] = (("seed", "time", "point", "train_point"), ntk_ref)
    coords = {
        "seed": np.asarray(seeds),
        "order": np.asarray(orders),
        "time": np.asarray(ts, dtype=np.float64),
        "point": np.arange(y.shape[0]),
        "split": ("point", np.array(["train"] * n + ["test"] * y_test.shape[0], dtype="<U5")),
        "train_point": np.arange(n),
        "rank": np.arange(2, 2 + (len(tower0) if reduced is None else np.shape(reduced["projected_kernel_magnitude"])[1])),
    }
    ds = annotate(xr.Dataset(data_vars, coords=coords, attrs=dict(attrs)))
    for name, template in LOSS_VARIABLES.items():
        ds[name].attrs["long_name"] = template.format(objective.formula)
    return ds


def _rms(difference: np.ndarray) -> np.ndarray:
    if difference.shape[-1] == 0:
        return np.full(difference.shape[:-1], np.nan)
    return np.sqrt(np.mean(difference**2, axis=-1))


def _drift(ntk: np.ndarray, axis_time: int) -> np.ndarray:
    initial = np.take(ntk, [0], axis=axis_time)
    return np.abs(ntk - initial).max(axis=(-1, -2))


def annotate(ds: xr.Dataset) -> xr.Dataset:
    """Attach CF ``long_name`` and ``units`` to every known variable and
    coordinate (a loss variable keeps the long_name of its loss, if it has one)."""
    for name, (long_name, units) in {**VARIABLES, **COORDINATES}.items():
        if name in ds.variables:
            if name in LOSS_VARIABLES:
                long_name = ds[name].attrs.get("long_name", long_name)
            ds[name].attrs.update(long_name=long_name, units=units)
    if "time_scale" in ds and "time" in ds.coords:  # time.unit: n_over_lambda_min
        ds["time"].attrs.update(long_name=SCALED_TIME)
    return ds


def combine(grid: Mapping[str, Sequence], cells: Sequence, cell_datasets: Mapping[str, xr.Dataset]) -> xr.Dataset:
    """One Dataset over the sweep grid from the datasets of its cells.

    ``grid``: dimension → values, outermost first, width last (from
    :meth:`Scenario.grid`); ``cells``: the :class:`~nth_dynamics.scenario.Cell`
    of every grid point; ``cell_datasets``: cell id → :func:`cell_dataset`.
    Point dimensions are padded with NaN up to the largest n_train.
    """
    grid_dims = tuple(grid)
    grid_shape = tuple(len(v) for v in grid.values())
    first = cell_datasets[cells[0].id]
    n_test = int((first["split"] == "test").sum())
    n_max = max(ds.sizes["train_point"] for ds in cell_datasets.values())

    def slots(ds: xr.Dataset) -> np.ndarray:
        n = ds.sizes["train_point"]
        return np.concatenate([np.arange(n), n_max + np.arange(ds.sizes["point"] - n)])

    def sizes(dims: Sequence[str]) -> tuple[int, ...]:
        full = {"point": n_max + n_test, "train_point": n_max}
        return tuple(full.get(d, first.sizes[d]) for d in dims)

    data_vars = {}
    for name, variable in first.data_vars.items():
        if name == "y":
            continue
        dims = grid_dims + variable.dims
        padded = "point" in variable.dims or "train_point" in variable.dims
        dtype = np.result_type(variable.dtype, np.float32) if padded else variable.dtype  # NaN-able
        values = np.full(grid_shape + sizes(variable.dims), np.nan if padded else 0, dtype=dtype)
        for cell in cells:
            position = tuple(grid[d].index(cell.coords[d]) for d in grid_dims)
            source = cell_datasets[cell.id]
            index = [slots(source) if d == "point" else np.arange(source.sizes[d]) for d in variable.dims]
            values[position][np.ix_(*index)] = source[name].values
        data_vars[name] = (dims, values)

    label_dims = ("n_train",) if "n_train" in grid else ()
    label_shape = (len(grid["n_train"]),) if label_dims else ()
    y = np.full(label_shape + (n_max + n_test,), np.nan)
    valid = np.zeros(label_shape + (n_max + n_test,), dtype=bool)
    for cell in cells:
        ds = cell_datasets[cell.id]
        at = (grid["n_train"].index(cell.coords["n_train"]),) if label_dims else ()
        y[at + (slots(ds),)] = ds.y.values
        valid[at + (slots(ds),)] = True
    data_vars["y"] = (label_dims + ("point",), y)
    data_vars["point_valid"] = (label_dims + ("point",), valid)

    coords = {dim: np.asarray(values) for dim, values in grid.items()}
    coords.update(
        seed=first["seed"].values,
        order=first["order"].values,
        time=first["time"].values,
        point=np.arange(n_max + n_test),
        split=("point", np.array(["train"] * n_max + ["test"] * n_test, dtype="<U5")),
        train_point=np.arange(n_max),
        rank=first["rank"].values,
    )
    ds = annotate(xr.Dataset(data_vars, coords=coords))
    for name in LOSS_VARIABLES:  # the cells' loss, not the default's
        ds[name].attrs["long_name"] = first[name].attrs["long_name"]
    return ds


def provenance(scenario, *, stage_times: Mapping[str, Any], cells: Sequence[Mapping[str, Any]], command: str | None = None) -> dict[str, Any]:
    """Global attributes of a scenario's result (CF-1.10 and the project's
    provenance); everything structured is a JSON string, as netCDF attributes
    cannot hold mappings."""
    attributes = base_attributes(command or f"nth_dynamics.simulate(scenario {scenario.name!r})")
    return {
        "Conventions": attributes.pop("Conventions"),
        "title": scenario.description.strip() or f"nth_dynamics scenario {scenario.name}",
        "source": attributes.pop("source"),
        "history": attributes.pop("history"),
        "scenario": scenario.to_json(),
        "scenario_yaml": scenario.yaml_text,
        "scenario_source": str(scenario.source),
        "scenario_overrides": json.dumps(list(scenario.overrides)),
        **attributes,
        "stage_wall_times": json.dumps(stage_times, sort_keys=True),
        "cells": json.dumps(list(cells)),
    }


__all__ = [
    "COORDINATES",
    "VARIABLES",
    "annotate",
    "cell_dataset",
    "combine",
    "output_format",
    "provenance",
    "read_dataset",
    "write_dataset",
]
