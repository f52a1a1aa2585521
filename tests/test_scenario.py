"""Scenario schema, overrides, sweep grid, cell ids and the bad-input messages."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import nth_dynamics as nd
from nth_dynamics.pipeline.scenario import Scenario, iter_fields, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


def scenario(text: str = "", overrides=(), **kwargs) -> Scenario:
    return parse_scenario(text, source="test.yaml", overrides=overrides, **kwargs)


def test_every_bundled_scenario_validates():
    assert len(SCENARIOS) >= 5
    for path in SCENARIOS:
        nd.load_scenario(path)


def test_the_quickstart_is_small():
    """n = 8, two widths, orders up to 4, two seeds, a test split."""
    quick = nd.load_scenario(ROOT / "scenarios" / "quickstart.yaml")
    assert quick.data.n_train == (8,) and quick.data.n_test > 0
    assert len(quick.network.width) == 2 and max(quick.hierarchy.orders) == 4 and len(quick.seed) == 2


def test_an_empty_scenario_takes_every_default():
    scn = scenario("")
    assert scn.name == "test" and scn.data.kind == "sphere" and scn.precision == "float64"
    assert scn.network.width == (64,) and scn.hierarchy.orders == (2, 3, 4)
    assert scn.output_path() == Path("results/test.nc")


def test_single_values_become_one_element_sweeps_and_orders_are_sorted():
    scn = scenario("network: {width: 16}\nhierarchy: {orders: [4, 2]}\nseed: 3")
    assert scn.network.width == (16,) and scn.seed == (3,)
    assert scn.hierarchy.orders == (2, 4)


def test_overrides_set_nested_fields_in_yaml_syntax():
    scn = scenario("network: {width: 16}", overrides=["network.width=[64, 128]", "time.t1=2.5", "data.kind=teacher"])
    assert scn.network.width == (64, 128) and scn.time.t1 == 2.5 and scn.data.kind == "teacher"
    assert scn.overrides == ("network.width=[64, 128]", "time.t1=2.5", "data.kind=teacher")


def test_the_grid_has_width_always_and_other_fields_only_when_swept():
    assert list(scenario("").grid()) == ["width"]
    scn = scenario("network: {width: [8, 16], depth: [1, 2]}\ndata: {n_train: [4, 6]}\nseed: [0, 1, 2]")
    assert list(scn.grid()) == ["depth", "n_train", "width"]
    cells = scn.cells()
    assert len(cells) == 8
    assert all(cell.spec.seeds == (0, 1, 2) for cell in cells)  # seeds are a batch, not cells


def test_cell_ids_are_stable_and_depend_only_on_what_the_cell_computes():
    text = "network: {width: [8, 16]}"
    ids = [cell.id for cell in scenario(text).cells()]
    assert ids == [cell.id for cell in scenario(text).cells()]
    assert len(set(ids)) == 2
    assert ids == [cell.id for cell in scenario(text + "\ndescription: another").cells()]
    assert ids != [cell.id for cell in scenario(text + "\ntime: {t1: 2.0}").cells()]


def test_the_default_trained_groups_and_an_explicit_all_are_one_cell():
    """pydantic does not validate defaults: the default must already be in the
    stored (sorted) form of ``trained: all``, or a cache misses its own cells."""
    text = "network: {width: 8}"
    default = [cell.id for cell in scenario(text).cells()]
    for trained in ("all", "[input, hidden, readout]", "[readout, input, hidden]"):
        assert [cell.id for cell in scenario(f"network: {{width: 8, trained: {trained}}}").cells()] == default
    assert [cell.id for cell in scenario("network: {width: 8, trained: hidden}").cells()] != default


def test_ffnet_cells_do_not_depend_on_the_resnet_scale():
    scn = scenario("network: {architecture: [ffnet, resnet], gamma: [0.5, 1.0], width: 8, depth: 4}")
    cells = scn.cells()
    assert len(cells) == 4
    ffnet = {c.id for c in cells if c.coords["architecture"] == "ffnet"}
    resnet = {c.id for c in cells if c.coords["architecture"] == "resnet"}
    assert len(ffnet) == 1 and len(resnet) == 2
    alphas = sorted(c.spec.network.alpha for c in cells if c.coords["architecture"] == "resnet")
    assert alphas == [0.25, 0.5]  # α = depth^(−γ)
    # at depth 1 every γ gives α = 1: the ResNet cells coincide too
    assert len({c.id for c in scenario("network: {architecture: resnet, gamma: [0.5, 1.0]}").cells()}) == 1


def test_the_resolved_scenario_round_trips_through_json():
    scn = nd.load_scenario(ROOT / "scenarios" / "teacher_resnet.yaml")
    again = Scenario.model_validate(json.loads(scn.to_json()))
    assert again.model_dump() == scn.model_dump() and hash(again) == hash(scn)


def test_file_data_resolves_path_sizes_and_dimension_from_the_file():
    scn = nd.load_scenario(ROOT / "scenarios" / "file_csv.yaml")
    assert Path(scn.data.path).is_absolute()
    assert scn.data.n_train == (12,) and scn.data.n_test == 4 and scn.data.d == 3


def test_save_times():
    assert np.allclose(scenario("time: {t1: 2, n_saves: 5}").save_times(), [0, 0.5, 1, 1.5, 2])
    log = scenario("time: {t1: 1, n_saves: 4, spacing: log, t_min: 0.01}").save_times()
    assert np.allclose(log, [0, 0.01, 0.1, 1])
    descent = scenario("reference: {method: gradient_descent, lr: 0.1}\ntime: {t1: 1, n_saves: 3}").save_times()
    assert np.allclose(descent, [0, 0.5, 1.0])


def test_every_field_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [field for field in iter_fields() if f"`{field}`" not in readme and f"`{field}," not in readme
               and f", `{field}`" not in readme]
    assert not missing, f"fields missing from the README's scenario table: {missing}"


BAD_SCENARIOS = [
    # (scenario text, field path in the message, a fragment of what is allowed)
    ("name: [unclosed", "line 1", "YAML syntax error"),
    ("- just\n- a list", "(top level)", "a mapping"),
    ("netwrk: {width: 8}", "netwrk", "did you mean 'network'"),
    ("network: {widht: 8}", "network.widht", "did you mean 'width'"),
    ("data: {kind: sphere, n_trian: 8}", "data.n_trian", "did you mean 'n_train'"),
    ("data: {kind: sphere, degree: 3}", "data.degree", "it belongs to data kind teacher"),
    ("network: {width: eight}", "network.width", "valid integer"),
    ("network: {width: 0}", "network.width", "greater than 0"),
    ("network: {width: [8, -8]}", "network.width[1]", "greater than 0"),
    ("network: {width: [8, 8]}", "network.width", "distinct values"),
    ("hierarchy: {orders: [2, 7]}", "hierarchy.orders[1]", "from 2 to 6"),
    ("hierarchy: {orders: 1}", "hierarchy.orders", "from 2 to 6"),
    ("network: {activation: tahn}", "network.activation", "did you mean 'tanh'"),
    ("data: {kind: mnist}", "data.kind", "sphere, teacher, digits, file"),
    ("data: {kind: file}", "data.path", "required field is missing"),
    ("data: {kind: file, path: nowhere.npz}", "data.path", "no such file"),
    ("data: {kind: file, path: table.txt}", "data.path", ".npz or .csv"),
    ("data: {kind: digits, d: 100}", "data.d", "1 to 64"),
    ("data: {kind: digits, n_train: 400}", "data.n_train", "n_train + n_test ≤ 360"),
    ("precision: float16", "precision", "'float64' or 'float32'"),
    ("time: {t1: -1}", "time.t1", "greater than 0"),
    ("time: {n_saves: 1}", "time.n_saves", "greater than or equal to 2"),
    ("time: {t_min: 0.1}", "time.t_min", "spacing log"),
    ("reference: {method: gradient_descent}", "reference.lr", "learning rate"),
    ("reference: {method: gradient_descent, lr: 0.3}", "reference.lr", "whole number of steps"),
    ("reference: {method: gradient_descent, lr: 0.1}\ntime: {t1: 1, n_saves: 4}", "time.n_saves", "dividing"),
    ("network: {gamma: 0.5}", "network.gamma", "resnet"),
    ("network: {architecture: resnet, depth: 0}", "network.depth", "depth ≥ 1"),
    ("network: {architecture: resnet, alpha: 1, gamma: 1}", "network.alpha", "not both"),
    ("network: {trained: [hiden]}", "network.trained[0]", "did you mean 'hidden'"),
    ("hierarchy: {solver: rk4}", "hierarchy.solver", "'tsit5'"),
    ("output: {path: result.h5}", "output.path", ".nc (netCDF) or .zarr"),
    ("seed: 1.5", "seed", "valid integer"),
]


@pytest.mark.parametrize("text, field, allowed", BAD_SCENARIOS, ids=[case[1] for case in BAD_SCENARIOS])
def test_invalid_scenarios_fail_with_one_line_naming_file_field_and_what_is_allowed(text, field, allowed, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(nd.ScenarioError) as caught:
        nd.load_scenario(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}"), message
    assert allowed in message, message


def test_invalid_overrides_are_reported_like_scenario_errors():
    with pytest.raises(nd.ScenarioError, match=r"^test.yaml: --set 'width': not of the form key=value"):
        scenario("", overrides=["width"])
    with pytest.raises(nd.ScenarioError, match=r"^test.yaml: network.widht: unknown key; did you mean 'width'"):
        scenario("", overrides=["network.widht=8"])


def test_a_missing_scenario_file_is_a_scenario_error(tmp_path):
    with pytest.raises(nd.ScenarioError, match="no such scenario file"):
        nd.load_scenario(tmp_path / "absent.yaml")


def test_narrowing_a_two_architecture_sweep_to_ffnet_drops_the_residual_scale():
    both = "network: {architecture: [ffnet, resnet], gamma: 0.5, width: [8]}\n"
    whole = parse_scenario(both)
    ffnet = parse_scenario(both, overrides=["network.architecture=[ffnet]"])
    assert ffnet.network.gamma is None
    assert [c.id for c in ffnet.cells()] == [c.id for c in whole.cells() if c.coords["architecture"] == "ffnet"]
    with pytest.raises(nd.ScenarioError, match="network.gamma: applies only to architecture resnet"):
        parse_scenario("network: {architecture: ffnet, gamma: 0.5}\n")  # written so in the file: a mistake


# ----------------------------------------------------------------------------- committed results keep their cell ids

RESULTS = sorted((ROOT / "results").glob("*.nc"))
STALE = {"resnet_vs_ffnet_fixed_t": "made from resnet_vs_ffnet.yaml before its widths, tolerances and time.unit changed"}
"""Results whose scenario file has moved on since: only their recorded input reproduces them."""


def recorded(result: Path) -> dict:
    """The attributes of a committed result (no data is read)."""
    with xr.open_dataset(result, engine="h5netcdf") as ds:
        return dict(ds.attrs)


def unique_ids(scn: Scenario) -> list[str]:
    return list(dict.fromkeys(cell.id for cell in scn.cells()))


@pytest.mark.parametrize("result", RESULTS, ids=[path.stem for path in RESULTS])
def test_the_committed_scenarios_expand_into_the_cells_of_their_committed_results(result):
    """Each committed result, from its scenario file in scenarios/ and the
    recorded ``--set`` overrides: the same cell ids, in the same order (so
    every cached cell file is found again)."""
    attrs = recorded(result)
    source = ROOT / attrs["scenario_source"]
    assert source.parent == ROOT / "scenarios" and source.exists(), attrs["scenario_source"]
    ids = [cell["cell_id"] for cell in json.loads(attrs["cells"])]
    scn = nd.load_scenario(source, json.loads(attrs["scenario_overrides"]))
    if result.stem in STALE:
        assert unique_ids(scn) != ids, f"{result.stem} is reproduced again: remove it from STALE"
    else:
        assert unique_ids(scn) == ids


@pytest.mark.parametrize("result", RESULTS, ids=[path.stem for path in RESULTS])
def test_the_recorded_input_of_every_committed_result_gives_its_cell_ids(result):
    attrs = recorded(result)
    source = ROOT / attrs["scenario_source"]
    scn = parse_scenario(attrs["scenario_yaml"], source=str(source), base_dir=source.parent,
                         overrides=json.loads(attrs["scenario_overrides"]))
    assert unique_ids(scn) == [cell["cell_id"] for cell in json.loads(attrs["cells"])]


def test_the_results_directory_holds_finite_width_results():
    """(kind infinite_width results live in results/infinite_width/; every grid point has a width)"""
    assert len(RESULTS) >= 10
    assert all("width" in cell for path in RESULTS for cell in json.loads(recorded(path)["cells"]))
