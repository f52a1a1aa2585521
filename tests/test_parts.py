"""A sweep run in parts (issue 11): nd.analysis.combine of the parts' results is
the result of the union grid run at once, value for value; parts that are not
of one sweep, or that disagree on a cell, are refused with one line; report
reads several parts."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import nth_dynamics as nd
from nth_dynamics._files import read_dataset, write_dataset
from nth_dynamics.cli import main
from nth_dynamics.pipeline.scenario import ScenarioError

# n_train and width swept, with a test point: the parts' point slots differ
SWEEP = """\
name: parts
seed: [0, 1]
data: {kind: sphere, n_train: [3, 5], n_test: 1}
network: {width: [4, 6], depth: 1}
hierarchy: {orders: [2, 3]}
reference: {method: gradient_descent, lr: 0.125}
time: {t1: 0.5, n_saves: 3}
"""

PARTS = {  # part → its --set: together they cover the grid n_train × width
    "a": ["network.width=[4]", "data.n_train=[3]"],
    "b": ["network.width=[6]"],
    "c": ["network.width=[4]", "data.n_train=[5]"],
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The parts run through the CLI into one cells directory, then the whole
    scenario with it (which only combines): (directory, part paths, whole)."""
    directory = tmp_path_factory.mktemp("parts")
    scenario = directory / "parts.yaml"
    scenario.write_text(SWEEP)
    cells = directory / "sweep.cells"
    paths = {}
    for name, overrides in PARTS.items():
        paths[name] = directory / f"part_{name}.nc"
        sets = [argument for override in overrides for argument in ("--set", override)]
        assert main(["simulate", str(scenario), *sets, "--cells", str(cells), "-o", str(paths[name]), "--quiet"]) == 0
    whole = directory / "whole.nc"
    assert main(["simulate", str(scenario), "--cells", str(cells), "-o", str(whole), "--quiet"]) == 0
    return directory, paths, whole


@pytest.mark.slow  # four tiny cells through the CLI, ~40 s
def test_the_combined_parts_are_the_whole_sweep_value_for_value(sweep):
    _, paths, whole = sweep
    combined = nd.analysis.combine(list(paths.values()))
    expected = read_dataset(whole)
    # a: n_train one value (a scalar coordinate), 3 training slots of 5; the union lays them out again
    assert read_dataset(paths["a"])["n_train"].dims == ()
    xr.testing.assert_identical(combined.drop_attrs(), expected.drop_attrs())
    assert combined.nth_num_steps.dtype == expected.nth_num_steps.dtype


@pytest.mark.slow
def test_a_cell_no_part_ran_is_nan_and_the_provenance_lists_the_parts(sweep):
    _, paths, whole = sweep
    combined = nd.analysis.combine([paths["a"], paths["b"]])
    expected = read_dataset(whole)
    missing = {"n_train": 5, "width": 4}
    assert bool(combined.truncation_error.sel(missing).isnull().all())
    assert bool(combined.f_nth.sel(missing).isnull().all())
    assert bool(combined.point_valid.sel(n_train=5).isel(point=slice(0, 5)).all())  # b ran n = 5: its labels
    for cell in ({"n_train": 3, "width": 4}, {"n_train": 3, "width": 6}, {"n_train": 5, "width": 6}):
        xr.testing.assert_identical(combined.truncation_error.sel(cell), expected.truncation_error.sel(cell))
        xr.testing.assert_identical(combined.f_nth.sel(cell), expected.f_nth.sel(cell))
    parts = json.loads(combined.attrs["parts"])
    assert [part["file"] for part in parts] == [str(paths["a"]), str(paths["b"])]
    assert parts[0]["scenario_overrides"][:2] == PARTS["a"]  # then -o, as output.path
    assert all(len(part["scenario_sha256"]) == 12 and part["git_commit"] for part in parts)
    assert len(json.loads(combined.attrs["cells"])) == 3
    scenario = json.loads(combined.attrs["scenario"])
    assert scenario["network"]["width"] == [4, 6] and scenario["data"]["n_train"] == [3, 5]
    assert nd.analysis.error_floor(combined) == nd.analysis.error_floor(expected)


@pytest.mark.slow
def test_parts_of_different_scenarios_are_refused_naming_the_file_and_the_field(sweep, tmp_path):
    _, paths, _ = sweep
    other = read_dataset(paths["b"])
    scenario = json.loads(other.attrs["scenario"])
    scenario["hierarchy"]["rtol"] = 1e-6
    other.attrs["scenario"] = json.dumps(scenario)
    changed = write_dataset(other, tmp_path / "other_rtol.nc")
    with pytest.raises(ScenarioError) as error:
        nd.analysis.combine([paths["a"], changed])
    message = str(error.value)
    assert message.startswith(f"{changed}: hierarchy.rtol is 1e-06, but {paths['a']} has 1e-09") and "\n" not in message
    # names, paths and memory budgets do not change a cell's numbers
    scenario = json.loads(read_dataset(paths["b"]).attrs["scenario"])
    scenario.update(name="renamed", memory_budget_gb=3.0)
    other.attrs["scenario"] = json.dumps(scenario)
    assert nd.analysis.combine([paths["a"], other]).sizes["width"] == 2


@pytest.mark.slow
def test_parts_that_disagree_on_a_shared_cell_are_refused_unless_within_the_tolerance(sweep, tmp_path):
    _, paths, _ = sweep
    original = read_dataset(paths["b"])
    other = original.copy(deep=True)
    other["f_ref"].loc[{"n_train": 5, "seed": 1}] *= 1 + 1e-7
    shifted = write_dataset(other, tmp_path / "shifted.nc")
    with pytest.raises(ScenarioError) as error:
        nd.analysis.combine([paths["b"], shifted])
    message = str(error.value)
    assert message.startswith(f"{shifted}: f_ref at n_train=5, width=6, seed=1") and "\n" not in message
    assert f"but {paths['b']} has" in message
    combined = nd.analysis.combine([paths["b"], shifted], tolerance=1e-6)  # the first part's values are kept
    xr.testing.assert_equal(combined.f_ref, original.f_ref)


@pytest.mark.slow
def test_an_ffnet_part_stands_at_every_residual_scale_of_the_resnet_parts(sweep):
    """Parts narrowed to one architecture (``--set network.architecture=[…]``):
    the FFNet's has no γ and is the same at every γ of the ResNets' parts.
    (The ResNet parts here are relabelled FFNet values: only the layout is tested.)"""
    _, paths, _ = sweep
    ffnet = read_dataset(paths["b"])

    def relabelled(gamma):
        ds = ffnet.copy(deep=True).assign_coords(architecture="resnet", gamma=gamma)
        ds.attrs = dict(ffnet.attrs)
        scenario = json.loads(ds.attrs["scenario"])
        scenario["network"].update(architecture=["resnet"], gamma=[gamma])
        ds.attrs["scenario"] = json.dumps(scenario)
        return ds

    one = nd.analysis.combine([ffnet, relabelled(0.5)])
    assert one.truncation_error.dims[:3] == ("architecture", "n_train", "width")
    assert float(one.gamma) == 0.5
    two = nd.analysis.combine([ffnet, relabelled(0.5), relabelled(1.0)])
    assert list(two.gamma.values) == [0.5, 1.0] and two.truncation_error.dims[:2] == ("architecture", "gamma")
    at_ffnet = two.truncation_error.sel(architecture="ffnet")
    xr.testing.assert_identical(at_ffnet.sel(gamma=1.0, drop=True), at_ffnet.sel(gamma=0.5, drop=True))
    xr.testing.assert_equal(at_ffnet.sel(gamma=0.5, drop=True).drop_vars("architecture"),
                            ffnet.truncation_error.drop_vars("architecture"))
    # a part over both architectures at γ = 1/2 beside a ResNet part at γ = 1: its FFNets stand at both
    both = nd.analysis.combine([one, relabelled(1.0)])
    xr.testing.assert_identical(both.truncation_error.sel(architecture="ffnet", gamma=1.0, drop=True),
                                both.truncation_error.sel(architecture="ffnet", gamma=0.5, drop=True))
    assert not bool(both.truncation_error.sel(architecture="ffnet").isnull().any())
    assert bool(both.truncation_error.sel(architecture="resnet", gamma=1.0).notnull().all())
    lacking = ffnet.drop_vars("depth")
    with pytest.raises(ScenarioError, match="part 2: has no depth coordinate, which other parts have"):
        nd.analysis.combine([ffnet, lacking])


@pytest.mark.slow
def test_report_combines_several_parts_and_needs_an_output_directory(sweep, capsys):
    directory, paths, _ = sweep
    out = directory / "combined_report"
    assert main(["report", str(paths["a"]), str(paths["b"]), "-o", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "Combined from 2 parts" in report and f"`{paths['a']}`" in report
    slope = read_dataset(out / "analysis.nc").truncation_error_slope.isel(time=-1)
    assert np.isnan(slope.sel(n_train=5)).all() and np.isfinite(slope.sel(n_train=3)).all()  # n = 5: one width
    capsys.readouterr()
    assert main(["report", str(paths["a"]), str(paths["b"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {paths['a']}: 2 results need an output directory; allowed: -o DIR for the report of their combination"
    assert main(["report", str(paths["a"]), str(directory / "absent.nc"), "-o", str(out)]) == 2
    assert main(["report", str(paths["a"]), str(paths["b"]), "-o", str(out), "--tolerance", "1e-12"]) == 0


@pytest.mark.slow
def test_a_part_run_with_on_failure_record_combines_with_one_run_with_stop(sweep):
    """``on_failure: stop`` leaves only solves that reached the end: its cells
    are unfailed in the combination, and a flag stays a flag."""
    _, paths, _ = sweep
    recorded = read_dataset(paths["b"])
    recorded["nth_failed"] = xr.zeros_like(recorded.nth_num_steps, dtype=bool)
    recorded["nth_failed"].loc[{"n_train": 5, "seed": 0, "order": 3}] = True
    scenario = json.loads(recorded.attrs["scenario"])
    scenario["hierarchy"]["on_failure"] = "record"
    recorded.attrs["scenario"] = json.dumps(scenario)
    combined = nd.analysis.combine([paths["a"], recorded])
    assert combined.nth_failed.dtype == bool and int(combined.nth_failed.sum()) == 1
    assert not bool(combined.nth_failed.sel(width=4).any())  # a: run with stop; (n = 5, m = 4): run by no part


def test_overlapping_pieces_of_a_committed_result_combine_back_into_it():
    """Pieces of results/resnet_vs_ffnet.nc (architecture × depth × n × width),
    overlapping at n = 16 and leaving no cell out: the combination is the file."""
    path = Path(__file__).resolve().parent.parent / "results" / "resnet_vs_ffnet.nc"
    whole = read_dataset(path)
    pieces = [whole.sel(n_train=[4, 8, 16], width=[32, 64, 128]), whole.sel(n_train=[16, 32]),
              whole.sel(n_train=[4, 8], width=[256, 512])]
    xr.testing.assert_identical(nd.analysis.combine(pieces).drop_attrs(), whole.drop_attrs())
    with pytest.raises(ScenarioError, match="^part 2: truncation_error at architecture=ffnet, depth=2, n_train=16"):
        nd.analysis.combine([pieces[0], pieces[1].assign(truncation_error=pieces[1].truncation_error * 1.01)])
