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
from nth_dynamics.report.series import selections, series_label

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
    # the report shows each FFNet once, without the γ it does not have; each ResNet at its γ
    listed = selections(both.truncation_error, ["architecture", "gamma", "n_train"])
    assert [(s["architecture"], s["gamma"]) for s in listed] == [("ffnet", 0.5)] * 2 + [("resnet", 0.5)] * 2 + [("resnet", 1.0)] * 2
    assert [series_label(s) for s in listed[::2]] == ["architecture=ffnet, n_train=3", "architecture=resnet, gamma=0.5, n_train=3",
                                                      "architecture=resnet, gamma=1, n_train=3"]
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


# --- parts in the full and in the reduced basis (the p = 4 parts of issue 11 at large n)

E4 = Path(__file__).resolve().parent.parent / "results" / "resnet_vs_ffnet_e4.nc"


def as_reduced(ds: xr.Dataset, basis_tol: float = 1e-8, ratio: float = 2e-4) -> xr.Dataset:
    """A full-basis result relabelled as a reduced one, with made-up basis
    outputs: only the layout, labels and messages are tested with it (the
    slow tests below run a reduced part for real)."""
    out = ds.copy(deep=True)
    out.attrs = dict(ds.attrs)
    scenario = json.loads(out.attrs["scenario"])
    scenario["hierarchy"].update(basis="reduced", basis_tol=basis_tol, on_failure="stop")
    out.attrs["scenario"] = json.dumps(scenario)
    cell = out.truncation_error.isel(order=0, time=0, drop=True)
    rng = np.random.default_rng(0)
    out["basis_rank"] = xr.full_like(cell, 7, dtype=np.int64)
    out["basis_error_ratio"] = out.truncation_error.isel(time=0, drop=True).copy(
        data=ratio * rng.uniform(0.1, 1.0, out.truncation_error.isel(time=0).shape))
    out["basis_error"] = out.basis_error_ratio * out.truncation_error.max("time")
    return out


def test_a_relabelled_reduced_piece_is_labelled_per_cell_and_flagged_in_the_required_widths():
    """Pieces of a committed result (n = 4, 8 full; n = 16 as if reduced, as
    parts E and H of issue 11): every cell says its basis, values are the
    pieces', the basis outputs are NaN at the full cells, and the required
    widths, the report and the figure say which crossings rest on reduced cells."""
    whole = read_dataset(E4)
    full, reduced = whole.sel(n_train=[4, 8]), as_reduced(whole.sel(n_train=[16]))
    combined = nd.analysis.combine([full, reduced])
    label = combined.hierarchy_basis
    assert label.dims == ("architecture", "depth", "n_train", "width")
    assert (label.sel(n_train=16) == "reduced").all() and (label.sel(n_train=[4, 8]) == "full").all()
    for name in ("basis_rank", "basis_error", "basis_error_ratio"):  # not measured at the full cells: NaN, not 0
        assert combined[name].sel(n_train=[4, 8]).isnull().all(), name
        xr.testing.assert_identical(combined[name].sel(n_train=[16]).drop_attrs(), reduced[name].drop_attrs())
    xr.testing.assert_identical(combined.drop_vars(["hierarchy_basis", "basis_rank", "basis_error",
                                                    "basis_error_ratio"]).drop_attrs(), whole.drop_attrs())
    assert json.loads(combined.attrs["scenario"])["hierarchy"]["basis"] == "mixed"
    assert [part["basis"] for part in json.loads(combined.attrs["parts"])] == ["full", "reduced"]
    # a combination is a part like any other: its label is kept
    xr.testing.assert_identical(nd.analysis.combine([combined]).hierarchy_basis, label)

    widths = nd.analysis.required_width(combined, {2: 2e-2, 4: 1e-3}, resamples=20)
    flag = widths.required_width_reduced
    assert flag.sel(n_train=16).all() and not flag.sel(n_train=[4, 8]).any()
    largest = widths.required_width_basis_error_ratio
    assert largest.sel(n_train=[4, 8]).isnull().all()
    np.testing.assert_allclose(largest.sel(n_train=16, order=4, architecture="resnet", depth=2),
                               reduced.basis_error_ratio.sel(order=4, architecture="resnet", depth=2).max())
    exponents = nd.analysis.width_exponent(widths)
    rests = np.isfinite(widths.required_width.sel(n_train=16)) & np.isfinite(exponents.exponent)
    assert rests.any() and ((exponents.reduced_points == 1) == rests).all()
    assert nd.analysis.required_width(full, {2: 2e-2, 4: 1e-3}, resamples=20).data_vars.keys().isdisjoint(
        ["required_width_reduced", "required_width_basis_error_ratio"])  # full cells alone: nothing to flag


def test_the_report_and_the_figure_mark_what_rests_on_reduced_cells():
    from nth_dynamics.report import figures, markdown

    whole = read_dataset(E4)
    combined = nd.analysis.combine([whole.sel(n_train=[4, 8]), as_reduced(whole.sel(n_train=[16]))])
    fits = nd.analysis.analyse(combined, tolerances={2: 2e-2, 4: 1e-3}, resamples=20)
    assert bool(fits.required_width_reduced.sel(n_train=16).all())
    assert int(fits.n_exponent_reduced_points.max()) == 1
    report = markdown.markdown_report(combined, fits, None, "combined.nc")
    assert "## Reduced-basis cells" in report and "20 of 60 cells were computed in the reduced basis" in report
    table = report.split("## Width at which max_t E_p falls to a tolerance, interpolated")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| architecture=")]
    assert rows and all(line.rstrip(" |").split("| ")[-1].startswith("n = 16 (") for line in rows)
    assert any("†" in line for line in rows)  # an exponent fitted over the crossing at n = 16
    figure = figures.required_width_vs_n(combined, fits)
    labels = [line.get_label() for ax in figure.axes for line in ax.get_lines()]
    assert labels.count(figures.REDUCED_LABEL) == 2  # one entry per panel (p = 2, 4)
    # a result of full cells only says nothing of bases
    plain = markdown.markdown_report(whole, nd.analysis.analyse(whole, resamples=20), None, "whole.nc")
    assert "reduced" not in plain.lower() and "†" not in plain


def test_a_cell_in_both_bases_or_two_basis_tolerances_are_refused_in_one_line():
    whole = read_dataset(E4)
    full, reduced = whole.sel(n_train=[4, 8]), as_reduced(whole.sel(n_train=[8, 16]))
    with pytest.raises(ScenarioError) as error:
        nd.analysis.combine([full, reduced])
    message = str(error.value)
    assert message.startswith("part 2: holds the cell architecture=ffnet, depth=2, n_train=8, width=32 in the reduced "
                              "basis, which part 1 holds in the full basis; allowed:") and "\n" not in message
    other = as_reduced(whole.sel(n_train=[4]), basis_tol=1e-6)
    with pytest.raises(ScenarioError) as error:
        nd.analysis.combine([whole.sel(n_train=[8]), as_reduced(whole.sel(n_train=[16])), other])
    assert str(error.value).startswith("part 3: hierarchy.basis_tol is 1e-06, but part 2 has 1e-08")
    # the full part's basis_tol (the default it does not read) is not compared
    assert nd.analysis.combine([full, as_reduced(whole.sel(n_train=[16]), basis_tol=1e-6)]).sizes["n_train"] == 3
    # every other refusal holds between bases as well
    changed = as_reduced(whole.sel(n_train=[16]))
    scenario = json.loads(changed.attrs["scenario"])
    scenario["hierarchy"]["rtol"] = 1e-6
    changed.attrs["scenario"] = json.dumps(scenario)
    with pytest.raises(ScenarioError, match="^part 2: hierarchy.rtol is 1e-06, but part 1 has 1e-09"):
        nd.analysis.combine([full, changed])


@pytest.fixture(scope="module")
def bases(sweep):
    """Part E's and H's shape in miniature: n = 3 in the full basis (its cells
    already in the sweep's cells directory) and n = 5 in the reduced basis,
    both through the CLI: (full part, reduced part, the whole full sweep)."""
    directory, _, whole = sweep
    scenario, cells = directory / "parts.yaml", directory / "sweep.cells"
    full, reduced = directory / "part_full_n3.nc", directory / "part_reduced_n5.nc"
    for path, sets in ((full, ["data.n_train=[3]"]),
                       (reduced, ["data.n_train=[5]", "hierarchy.basis=reduced", "hierarchy.basis_tol=1e-8"])):
        arguments = [argument for override in sets for argument in ("--set", override)]
        assert main(["simulate", str(scenario), *arguments, "--cells", str(cells), "-o", str(path), "--quiet"]) == 0
    return full, reduced, whole


@pytest.mark.slow  # one reduced part through the CLI (two cells), ~50 s beside the sweep
def test_a_full_and_a_reduced_part_combine_into_labelled_cells_with_the_parts_values(bases, tmp_path):
    full, reduced, whole = bases
    expected, own = read_dataset(whole), read_dataset(reduced)
    assert (own.basis_rank >= 1).all() and "basis_rank" not in read_dataset(full)
    combined = nd.analysis.combine([full, reduced])
    assert combined.hierarchy_basis.dims == ("n_train", "width")
    assert combined.hierarchy_basis.values.tolist() == [["full", "full"], ["reduced", "reduced"]]
    for name, variable in expected.data_vars.items():  # n = 3: the full cells, as the whole sweep has them
        xr.testing.assert_identical(combined[name].sel(n_train=3), variable.sel(n_train=3))
    for name, variable in own.data_vars.items():  # n = 5 (the largest n: the same point slots): the reduced part's
        xr.testing.assert_identical(combined[name].sel(n_train=5, drop=True).drop_attrs(),
                                    variable.drop_vars("n_train").drop_attrs())
    assert combined.kernel_magnitude.sel(n_train=5, rank=3).isnull().all()  # K3 never formed there
    assert combined.kernel_magnitude.sel(n_train=3).notnull().all()
    for name in ("basis_rank", "basis_error", "basis_error_ratio", "projected_kernel_magnitude"):
        assert combined[name].sel(n_train=3).isnull().all(), name  # not measured, so not 0
    assert json.loads(combined.attrs["scenario"])["hierarchy"]["basis_tol"] == 1e-8
    written = read_dataset(write_dataset(combined, tmp_path / "combined.nc"))  # the label survives netCDF
    assert written.hierarchy_basis.values.tolist() == combined.hierarchy_basis.values.tolist()
    np.testing.assert_array_equal(written.basis_rank, combined.basis_rank)


@pytest.mark.slow  # shares the reduced part above
def test_report_of_full_and_reduced_parts_says_which_cells_were_reduced(bases, sweep):
    full, reduced, _ = bases
    directory, paths, _ = sweep
    out = directory / "bases_report"
    assert main(["report", str(full), str(reduced), "-o", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Reduced-basis cells" in report and "2 of 4 cells were computed in the reduced basis" in report
    assert f"| `{reduced}` | parts |" in report and "| reduced | 2 |" in report
    fits = read_dataset(out / "analysis.nc")
    assert fits.required_width_reduced.sel(n_train=5).all() and not fits.required_width_reduced.sel(n_train=3).any()
    table = report.split("## Width at which max_t E_p falls to a tolerance, interpolated")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| 2 |") or line.startswith("| 3 |")]
    assert len(rows) == 2 and all(line.rstrip(" |").split("| ")[-1].startswith("n = 5 (") for line in rows)
    # a full part holding a cell of the reduced one: refused, naming both
    with pytest.raises(ScenarioError) as error:
        nd.analysis.combine([paths["b"], reduced])
    message = str(error.value)
    assert message.startswith(f"{reduced}: holds the cell n_train=5, width=6 in the reduced basis, which "
                              f"{paths['b']} holds in the full basis") and "\n" not in message


def test_the_required_width_figure_lists_only_the_series_some_part_ran():
    """Parts of FFNets at depth 2 and ResNets at depth 8 combine into a grid
    with both architectures at both depths: the two series no part ran are
    not drawn or listed; the bound guides do not set the axis range."""
    from nth_dynamics.report import figures

    whole = read_dataset(E4)
    combined = nd.analysis.combine([whole.sel(architecture=["ffnet"], depth=[2]),
                                    whole.sel(architecture=["resnet"], depth=[8])])
    fits = nd.analysis.analyse(combined, tolerances={2: 2e-2, 4: 1e-3}, resamples=20)
    figure = figures.required_width_vs_n(combined, fits)
    for ax in figure.axes:
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        series = [label for label in labels if label.startswith("architecture=")]
        assert len(series) == 2, labels
        assert any(label.startswith("architecture=ffnet, depth=2") for label in series)
        assert any(label.startswith("architecture=resnet, depth=8") for label in series)
        crossed = fits.width_at_tolerance.values[np.isfinite(fits.width_at_tolerance.values)]
        low, high = ax.get_ylim()
        assert low >= crossed.min() / 10 and high <= crossed.max() * 10  # n^3, n^4 guides clipped
