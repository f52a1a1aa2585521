"""The infinite-width scenario kind: schema, dispatch to the depth studies,
provenance of the written Dataset, validate/report, and the bad-input messages."""

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import nth_dynamics as nd
from nth_dynamics.cli import main
from nth_dynamics.pipeline.infinite_width import study_arguments
from nth_dynamics.pipeline.scenario import STUDIES, parse_scenario
from nth_dynamics.theory import depth_study

ROOT = Path(__file__).resolve().parent.parent
INFINITE_SCENARIOS = [
    path for path in sorted((ROOT / "scenarios").glob("*.yaml")) if "kind: infinite_width" in path.read_text()
]

TINY_SHAPES = """\
name: tiny_shapes
description: two depths of the FFNet and one ResNet
kind: infinite_width
infinite_width:
  study: kernel_shapes
  depths: [2, 1]
  gammas: [1]
  angles: 9
"""


def scenario(text: str, overrides=()):
    return parse_scenario(text, source="test.yaml", overrides=overrides)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """TINY_SHAPES simulated once through the CLI: (scenario path, result path)."""
    directory = tmp_path_factory.mktemp("tiny_shapes")
    path = directory / "tiny_shapes.yaml"
    path.write_text(TINY_SHAPES)
    result = directory / "out" / "tiny_shapes.nc"
    assert main(["simulate", str(path), "-o", str(result), "--quiet"]) == 0
    return path, result


def test_the_default_kind_is_finite_width_and_its_output_is_unchanged():
    scn = scenario("network: {width: 8}")
    assert scn.kind == "finite_width" and scn.infinite_width is None
    assert "infinite_width" not in json.loads(scn.to_json())
    assert len(scn.cells()) == 1


def test_the_bundled_infinite_width_scenarios_include_depth_degeneracy():
    names = {path.stem for path in INFINITE_SCENARIOS}
    assert "depth_degeneracy" in names
    studies = {nd.load_scenario(path).infinite_width.study for path in INFINITE_SCENARIOS}
    assert studies == set(STUDIES)


@pytest.mark.parametrize("path", INFINITE_SCENARIOS, ids=[p.stem for p in INFINITE_SCENARIOS])
def test_every_field_of_a_study_is_a_keyword_argument_of_its_function(path):
    scn = nd.load_scenario(path)
    function = getattr(depth_study, scn.infinite_width.study)
    inspect.signature(function).bind(**study_arguments(scn))  # raises TypeError on a stray argument


def test_depth_degeneracy_is_the_digits_task_for_ffnet_and_three_resnets_to_depth_1000():
    scn = nd.load_scenario(ROOT / "scenarios" / "depth_degeneracy.yaml")
    study = scn.infinite_width
    assert study.study == "depth_generalization" and study.task == "digits"
    assert study.gammas == (0.0, 0.5, 1.0) and study.depths[0] == 1 and study.depths[-1] == 1000


def test_a_resolved_infinite_width_scenario_shows_only_what_it_reads():
    scn = scenario(TINY_SHAPES)
    resolved = json.loads(scn.to_json())
    assert resolved["kind"] == "infinite_width"
    assert not {"network", "data", "hierarchy", "reference", "time", "seed"} & set(resolved)
    assert resolved["infinite_width"] == {"study": "kernel_shapes", "depths": [1, 2], "gammas": [1.0], "angles": 9,
                                          "activation": "relu"}


def test_overrides_reach_the_study():
    scn = scenario(TINY_SHAPES, ["infinite_width.depths=[3, 1]", "infinite_width.activation=erf"])
    assert scn.infinite_width.depths == (1, 3) and study_arguments(scn)["activation"] == "erf"


def test_width_convergence_passes_resnet_options_only_to_a_resnet():
    base = "kind: infinite_width\ninfinite_width: {study: width_convergence, widths: [8, 16]"
    ffnet = study_arguments(scenario(base + "}"))
    assert not {"gamma", "alpha", "branch"} & set(ffnet) and ffnet["activation"] == "tanh"
    resnet = study_arguments(scenario(base + ", architecture: resnet, depth: 2, alpha: 0.5}"))
    assert resnet["alpha"] == 0.5 and resnet["branch"] == "two" and "gamma" not in resnet


FAKE_DATASET = xr.Dataset({"value": (("depth",), np.ones(2), {"long_name": "a value", "units": "1"})},
                          coords={"depth": [1, 2]}, attrs={"title": "the study's own title"})


@pytest.mark.parametrize("study", list(STUDIES))
def test_simulate_calls_the_study_with_the_scenario_fields_and_adds_provenance(study, monkeypatch):
    calls = []
    monkeypatch.setattr(STUDIES[study], "run", lambda self: calls.append(self.arguments()) or FAKE_DATASET.copy())
    extra = {"width_convergence": ", widths: [8, 16], seeds: 2", "spectral_decay": ", k_max: 16, fit_range: [4, 12]"}
    text = f"kind: infinite_width\ninfinite_width: {{study: {study}{extra.get(study, '')}}}\n"
    scn = scenario(text)
    ds = nd.simulate(scn, command="nth-dynamics simulate test.yaml")
    assert calls == [study_arguments(scn)]
    assert ds.attrs["study"] == study and json.loads(ds.attrs["study_arguments"]) == calls[0]
    assert json.loads(ds.attrs["scenario"])["infinite_width"]["study"] == study
    assert ds.attrs["scenario_yaml"] == text and ds.attrs["title"] == "the study's own title"
    assert ds.attrs["Conventions"] == "CF-1.10" and "git_commit" in ds.attrs and "package_versions" in ds.attrs
    assert "simulate test.yaml" in ds.attrs["history"] and len(json.loads(ds.attrs["cells"])) == 1


def test_simulate_writes_the_study_with_provenance(tiny):
    path, result = tiny
    assert not list(result.parent.glob(".*.tmp")) and not Path(str(result) + ".cells").exists()
    with xr.open_dataset(result) as ds:
        assert ds.ntk_shape.dims == ("model", "depth", "rho")
        assert list(ds.model.values) == ["ffnet", "resnet_g1"] and list(ds.depth.values) == [1, 2]
        assert ds.attrs["scenario_yaml"] == TINY_SHAPES and ds.attrs["study"] == "kernel_shapes"
        assert ds.attrs["title"] == "two depths of the FFNet and one ResNet"
        assert json.loads(ds.attrs["scenario"])["kind"] == "infinite_width"
        assert ds.attrs["jax_enable_x64"] == 1 and "kernel_shapes" in json.loads(ds.attrs["stage_wall_times"])
        assert np.allclose(ds.ntk_shape.sel(rho=1.0, method="nearest"), 1.0)
        for name, variable in ds.variables.items():
            assert "long_name" in variable.attrs and "units" in variable.attrs, name


def test_report_writes_the_study_figure_and_summary(tiny, tmp_path, capsys):
    _, result = tiny
    assert main(["report", str(result), "-o", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "kernel_shapes.png").exists()
    summary = (tmp_path / "report" / "report.md").read_text()
    assert "kernel_shapes" in summary and "| resnet_g1 |" in summary


def test_validate_prints_the_resolved_study_and_an_estimate(tmp_path, capsys):
    path = tmp_path / "shapes.yaml"
    path.write_text(TINY_SHAPES)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "study: kernel_shapes" in out and "angles: 9" in out and "network:" not in out
    assert "memory" in out and "time (rough)" in out and "depth_study.kernel_shapes" in out


BAD = [
    # (scenario text, field path in the message, a fragment of what is allowed)
    ("kind: infinite_width", "infinite_width", "study: kernel_shapes, depth_generalization"),
    ("kind: infinte_width", "kind", "did you mean 'infinite_width'"),
    ("infinite_width: {study: kernel_shapes}", "infinite_width", "add 'kind: infinite_width'"),
    ("kind: infinite_width\ninfinite_width: {depths: [1]}", "infinite_width.study", "required field is missing"),
    ("kind: infinite_width\ninfinite_width: {study: kernel_shape}", "infinite_width.study", "did you mean 'kernel_shapes'"),
    ("kind: infinite_width\ninfinite_width: {study: spectra}", "infinite_width.study", "spectral_decay, width_convergence"),
    ("kind: infinite_width\ninfinite_width: {study: kernel_shapes, depht: [1]}", "infinite_width.depht", "did you mean 'depths'"),
    ("kind: infinite_width\ninfinite_width: {study: kernel_shapes, k_max: 8}", "infinite_width.k_max", "belongs to study spectral_decay"),
    ("kind: infinite_width\ninfinite_width: {study: kernel_shapes, depths: [1, 0]}", "infinite_width.depths[1]", "greater than 0"),
    ("kind: infinite_width\ninfinite_width: {study: kernel_shapes, depths: ten}", "infinite_width.depths", "valid integer"),
    ("kind: infinite_width\ninfinite_width: {study: kernel_shapes, depths: [2, 2]}", "infinite_width.depths", "distinct"),
    ("kind: infinite_width\ninfinite_width: {study: kernel_shapes, activation: sigmoid}", "infinite_width.activation", "'relu'"),
    ("kind: infinite_width\ninfinite_width: {study: depth_generalization, task: mnist}", "infinite_width.task", "'digits' or 'teacher'"),
    ("kind: infinite_width\ninfinite_width: {study: depth_generalization, n_train: 400}", "infinite_width.n_train", "n_train + n_test ≤"),
    ("kind: infinite_width\ninfinite_width: {study: depth_generalization, classes: [3, 3]}", "infinite_width.classes", "two different digits"),
    ("kind: infinite_width\ninfinite_width: {study: spectral_decay, k_max: 16}", "infinite_width.fit_range", "k_max = 16"),
    ("kind: infinite_width\ninfinite_width: {study: spectral_decay, dims: [1, 3]}", "infinite_width.dims[0]", "greater than or equal to 2"),
    ("kind: infinite_width\ninfinite_width: {study: width_convergence, widths: 64}", "infinite_width.widths", "at least two widths"),
    ("kind: infinite_width\ninfinite_width: {study: width_convergence, seeds: 2.5}", "infinite_width.seeds", "valid integer"),
    ("kind: infinite_width\ninfinite_width: {study: width_convergence, gamma: 1}", "infinite_width.gamma", "architecture resnet"),
    ("kind: infinite_width\nnetwork: {width: 8}\ninfinite_width: {study: kernel_shapes}", "network", "kind finite_width"),
    ("kind: infinite_width\nseed: [0, 1]\ninfinite_width: {study: kernel_shapes}", "seed", "kind finite_width"),
]


@pytest.mark.parametrize("text, field, allowed", BAD, ids=[f"{case[1]}-{i}" for i, case in enumerate(BAD)])
def test_bad_input_exits_2_with_one_line_naming_file_field_and_what_is_allowed(text, field, allowed, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"error: {path}: {field}: "), err
    assert allowed in err, err


def test_a_study_above_the_memory_budget_is_refused_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(STUDIES["kernel_shapes"], "run", lambda self: pytest.fail("the study ran"))
    path = tmp_path / "shapes.yaml"
    path.write_text(TINY_SHAPES + "memory_budget_gb: 1.0e-9\n")
    for command in (["validate", str(path)], ["simulate", str(path), "-o", str(tmp_path / "out.nc"), "--quiet"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        assert err.startswith(f"error: {path}: memory_budget_gb: the kernel_shapes study needs ≈ "), err
        assert "allowed: lower infinite_width.angles or the number of depths, or raise memory_budget_gb" in err
    assert not (tmp_path / "out.nc").exists()
    path.write_text(TINY_SHAPES + "memory_budget_gb: 1.0\n")  # a budget it fits is accepted
    assert main(["validate", str(path)]) == 0
    assert "memory budget 1 GB" in capsys.readouterr().out


def test_simulate_refuses_bad_input_and_bad_overrides_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(STUDIES["kernel_shapes"], "run", lambda self: pytest.fail("the study ran"))
    path = tmp_path / "shapes.yaml"
    path.write_text(TINY_SHAPES)
    out = tmp_path / "out.nc"
    assert main(["simulate", str(path), "-o", str(out), "--quiet", "--set", "infinite_width.angels=9"]) == 2
    assert "infinite_width.angels: unknown key; did you mean 'angles'?" in capsys.readouterr().err
    assert main(["simulate", str(path), "-o", str(out), "--quiet", "--set", "network.width=8"]) == 2
    assert "network: applies only to kind finite_width" in capsys.readouterr().err
    assert not out.exists()
