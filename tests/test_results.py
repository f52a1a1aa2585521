"""Output Datasets: metrics, combination over the grid, CF attributes,
provenance, and atomic netCDF/zarr writing that round-trips unchanged."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from nth_dynamics.pipeline.results import (
    VARIABLES,
    cell_dataset,
    combine,
    read_dataset,
    write_dataset,
)
from nth_dynamics.pipeline.scenario import parse_scenario

SEEDS, ORDERS, TIMES = [0, 1], [2, 3], np.linspace(0, 1, 4)


def synthetic_cell(n: int, n_test: int, save_kernels: bool = False, offset: float = 0.0) -> xr.Dataset:
    """A cell dataset from random arrays of the right shapes."""
    rng = np.random.default_rng(n + int(10 * offset))
    s, o, t, e = len(SEEDS), len(ORDERS), len(TIMES), n + n_test
    return cell_dataset(
        seeds=SEEDS,
        orders=ORDERS,
        ts=TIMES,
        y_train=rng.normal(size=n),
        y_test=rng.normal(size=n_test),
        tower0=[rng.normal(size=(s, e) + (n,) * (r - 1)) for r in (2, 3)],
        f_nth=rng.normal(size=(s, o, t, e)) + offset,
        ntk_nth=rng.normal(size=(s, o, t, e, n)),
        nth_stats={"num_steps": np.full((s, o), 7), "num_rejected_steps": np.zeros((s, o), int)},
        f_ref=rng.normal(size=(s, t, e)),
        ntk_ref=rng.normal(size=(s, t, e, n)),
        ref_stats={"num_steps": np.full(s, 9), "num_rejected_steps": np.zeros(s, int)},
        save_kernels=save_kernels,
        attrs={"cell_id": "x", "stage_wall_times": "{}"},
    )


def test_truncation_error_is_the_rms_over_training_points_and_test_error_over_test_points():
    ds = synthetic_cell(5, 3)
    train, test = ds.split == "train", ds.split == "test"
    difference = ds.f_ref - ds.f_nth

    def same(a, b):
        xr.testing.assert_allclose(a.reset_coords(drop=True), b.transpose(*a.dims).reset_coords(drop=True))

    same(ds.truncation_error, np.sqrt((difference.where(train) ** 2).mean("point")))
    same(ds.test_error, np.sqrt((difference.where(test) ** 2).mean("point")))
    same(ds.loss_ref, 0.5 * ((ds.f_ref - ds.y).where(train) ** 2).mean("point"))
    assert np.all(ds.ntk_drift_ref.isel(time=0) == 0)


def test_without_test_points_the_test_error_is_nan():
    ds = synthetic_cell(4, 0)
    assert ds.test_error.isnull().all()


def test_lambda_min_is_the_smallest_eigenvalue_of_the_training_block():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 4, 4))
    k2 = a @ np.swapaxes(a, -1, -2)
    tower0 = [np.concatenate([k2, rng.normal(size=(2, 1, 4))], axis=1)]
    ds = cell_dataset(
        seeds=SEEDS, orders=[2], ts=TIMES, y_train=np.zeros(4), y_test=np.zeros(1), tower0=tower0,
        f_nth=np.zeros((2, 1, 4, 5)), ntk_nth=np.zeros((2, 1, 4, 5, 4)),
        nth_stats={"num_steps": np.zeros((2, 1)), "num_rejected_steps": np.zeros((2, 1))},
        f_ref=np.zeros((2, 4, 5)), ntk_ref=np.zeros((2, 4, 5, 4)),
        ref_stats={"num_steps": np.zeros(2), "num_rejected_steps": np.zeros(2)},
        save_kernels=False, attrs={},
    )
    assert np.allclose(ds.lambda_min, np.linalg.eigvalsh(k2)[:, 0])


def test_combine_pads_smaller_training_sets_with_nan_and_keeps_every_value():
    scn = parse_scenario("network: {width: [8, 16]}\ndata: {n_train: [3, 5], n_test: 2}", source="t.yaml")
    cells = scn.cells()
    datasets = {cell.id: synthetic_cell(cell.coords["n_train"], 2, offset=cell.coords["width"]) for cell in cells}
    ds = combine(scn.grid(), cells, datasets)
    assert ds.f_nth.dims == ("n_train", "width", "seed", "order", "time", "point")
    assert ds.sizes["point"] == 7 and ds.sizes["train_point"] == 5
    assert list(ds.split.values) == ["train"] * 5 + ["test"] * 2
    small = ds.sel(n_train=3, width=16)
    source = datasets[cells[1].id]
    assert np.array_equal(small.f_nth.isel(point=[0, 1, 2, 5, 6]), source.f_nth)
    assert small.f_nth.isel(point=[3, 4]).isnull().all()
    assert list(ds.point_valid.sel(n_train=3).values) == [True] * 3 + [False] * 2 + [True] * 2
    assert ds.point_valid.sel(n_train=5).all()
    assert np.array_equal(ds.truncation_error.sel(n_train=3, width=16), source.truncation_error)
    assert ds.nth_num_steps.dtype.kind == "i"


def every_variable_has_cf_attributes(ds):
    for name, variable in ds.variables.items():
        assert variable.attrs.get("long_name"), name
        assert "units" in variable.attrs, name


def test_every_variable_and_coordinate_has_a_long_name_and_units():
    scn = parse_scenario("network: {width: [8, 16]}", source="t.yaml")
    cells = scn.cells()
    ds = combine(scn.grid(), cells, {c.id: synthetic_cell(4, 1, save_kernels=True) for c in cells})
    every_variable_has_cf_attributes(ds)
    optional = {"time_scale", "nth_failed", "basis_rank", "basis_error", "basis_error_ratio", "projected_kernel_magnitude"}
    optional |= {"accuracy_nth", "accuracy_ref", "test_accuracy_nth", "test_accuracy_ref"}  # loss: logistic only
    assert set(VARIABLES) - {"y", "point_valid"} - optional <= set(ds.data_vars)  # y, point_valid: test_sweep.py


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_written_results_open_unchanged(tmp_path, suffix):
    scn = parse_scenario("network: {width: [8, 16]}\ndata: {n_train: [3, 4], n_test: 1}", source="t.yaml")
    cells = scn.cells()
    ds = combine(scn.grid(), cells, {c.id: synthetic_cell(c.coords["n_train"], 1) for c in cells})
    ds.attrs.update(scenario=scn.to_json(), jax_enable_x64=1, title="t")
    path = write_dataset(ds, tmp_path / f"result{suffix}")
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back, ds)
        assert json.loads(back.attrs["scenario"])["network"]["width"] == [8, 16]
    assert [p.name for p in tmp_path.iterdir()] == [f"result{suffix}"]  # no temporary left behind
    assert path.stat().st_mode & 0o044 == 0o044 or os.umask(os.umask(0)) & 0o044  # readable by others
    xr.testing.assert_identical(read_dataset(path), ds)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_a_crash_while_writing_leaves_no_partial_file_and_the_old_result_intact(tmp_path, suffix, monkeypatch):
    ds = synthetic_cell(3, 1)
    path = tmp_path / f"result{suffix}"
    write_dataset(ds, path)
    method = "to_zarr" if suffix == ".zarr" else "to_netcdf"
    original = getattr(xr.Dataset, method)

    def crash_halfway(self, target, *args, **kwargs):
        original(self.isel(point=[0]), target, *args, **kwargs)  # something is on disk …
        raise RuntimeError("crash")  # … and then the process dies

    monkeypatch.setattr(xr.Dataset, method, crash_halfway)
    with pytest.raises(RuntimeError, match="crash"):
        write_dataset(ds.assign(f_nth=ds.f_nth + 1), path)
    assert sorted(os.listdir(tmp_path)) == [path.name]
    xr.testing.assert_identical(read_dataset(path), ds)


def test_the_committed_quickstart_result_has_the_design_layout():
    path = Path(__file__).resolve().parent.parent / "results" / "quickstart.nc"
    if not path.exists():
        pytest.skip("results/quickstart.nc is generated by the README's first command")
    with xr.open_dataset(path) as ds:
        assert ds.f_nth.dims == ("width", "seed", "order", "time", "point")
        assert ds.f_ref.dims == ("width", "seed", "time", "point")
        assert ds.truncation_error.dims == ("width", "seed", "order", "time")
        assert json.loads(ds.attrs["scenario"])["name"] == "quickstart"
        assert bool(ds.truncation_error.notnull().all())
        every_variable_has_cf_attributes(ds)


@pytest.mark.slow
def test_simulating_the_quickstart_reproduces_the_committed_result_bit_for_bit(tmp_path):
    """``simulate scenarios/quickstart.yaml`` gives results/quickstart.nc again:
    every data variable and coordinate identical (values, dtypes, CF
    attributes) and the same cells; only the provenance attributes differ.
    (A change of the engine's floating-point order, e.g. the tower's direction
    chunks, fails this at 1 ulp: then regenerate the committed result with the
    README's first command.)"""
    from nth_dynamics.cli import main

    root = Path(__file__).resolve().parent.parent
    committed = root / "results" / "quickstart.nc"
    fresh = tmp_path / "q.nc"
    assert main(["simulate", str(root / "scenarios" / "quickstart.yaml"), "-o", str(fresh), "--quiet"]) == 0
    old, new = read_dataset(committed), read_dataset(fresh)
    xr.testing.assert_identical(new.drop_attrs(deep=False), old.drop_attrs(deep=False))
    grid = [[{k: v for k, v in cell.items() if k not in ("memory_bytes", "stage_wall_times")}
             for cell in json.loads(ds.attrs["cells"])] for ds in (old, new)]
    assert grid[0] == grid[1]
