"""The command line and the simulate pipeline, end to end on a tiny scenario
with the real kernel tower, hierarchy and reference."""

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import nth_dynamics as nd
from nth_dynamics.cli import main
from nth_dynamics.pipeline import execution, sweep
from nth_dynamics.pipeline.scenario import parse_scenario

TINY = """\
name: tiny
seed: [0, 1]
data: {kind: sphere, n_train: 3, n_test: 1}
network: {width: [4, 6], depth: 1}
hierarchy: {orders: [2, 3]}
reference: {method: gradient_descent, lr: 0.125}
time: {t1: 0.5, n_saves: 3}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny scenario simulated once through the CLI: (scenario path, result path)."""
    directory = tmp_path_factory.mktemp("tiny")
    scenario = directory / "tiny.yaml"
    scenario.write_text(TINY)
    result = directory / "out" / "tiny.nc"
    assert main(["simulate", str(scenario), "-o", str(result), "--quiet"]) == 0
    return scenario, result


def test_simulate_writes_the_dataset_of_the_design(tiny):
    _, result = tiny
    assert result.exists() and not Path(str(result) + ".cells").exists()
    with xr.open_dataset(result) as ds:
        assert ds.f_nth.dims == ("width", "seed", "order", "time", "point")
        assert ds.f_ref.dims == ("width", "seed", "time", "point")
        assert ds.truncation_error.dims == ("width", "seed", "order", "time")
        assert ds.kernel_magnitude.dims == ("width", "seed", "rank")
        assert ds.lambda_min.dims == ("width", "seed")
        assert list(ds.width.values) == [4, 6] and list(ds.order.values) == [2, 3]
        assert list(ds.split.values) == ["train"] * 3 + ["test"]
        assert np.allclose(ds.time, [0, 0.25, 0.5])
        assert json.loads(ds.attrs["scenario"])["network"]["width"] == [4, 6]
        assert ds.attrs["scenario_yaml"] == TINY
        assert ds.attrs["Conventions"] == "CF-1.10" and ds.attrs["jax_enable_x64"] == 1
        assert set(json.loads(ds.attrs["stage_wall_times"])) >= {"tower", "nth", "reference"}
        assert "simulate" in ds.attrs["history"]
        for name, variable in ds.variables.items():
            assert "long_name" in variable.attrs and "units" in variable.attrs, name


def test_the_nth_and_the_network_start_together_and_stay_close(tiny):
    _, result = tiny
    with xr.open_dataset(result) as ds:
        assert float(abs(ds.f_nth.isel(time=0) - ds.f_ref.isel(time=0)).max()) < 1e-12
        assert float(ds.truncation_error.isel(time=0).max()) < 1e-12
        assert bool(ds.truncation_error.notnull().all())
        assert float(ds.truncation_error.max()) < 0.5
        assert bool((ds.lambda_min > -1e-10).all())


def test_the_gradient_flow_reference_runs_through_the_pipeline(tiny):
    scenario = nd.load_scenario(tiny[0], ["reference={method: gradient_flow}", "network.width=4"])
    ds = nd.simulate(scenario)
    assert json.loads(ds.attrs["scenario"])["reference"]["method"] == "gradient_flow"
    assert float(abs(ds.f_nth.isel(time=0) - ds.f_ref.isel(time=0)).max()) < 1e-12
    assert 0 < float(ds.truncation_error.isel(time=-1).max()) < 0.5
    assert bool((ds.ref_num_steps > 0).all())


def test_an_interrupted_sweep_resumes_from_its_finished_cells(tiny, tmp_path, monkeypatch):
    scenario_path, result = tiny
    scenario = nd.load_scenario(scenario_path)
    cache = tmp_path / "tiny.nc.cells"

    class InterruptSecondCell(sweep.Progress):
        def cell(self, index, cell, cached):
            if index == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nd.simulate(scenario, cache_dir=cache, progress=InterruptSecondCell())
    assert len(list(cache.glob("*.nc"))) == 1

    ran = []
    real_run_cell = sweep.run_cell
    monkeypatch.setattr(execution, "run_cell", lambda cell, **kw: ran.append(cell.id) or real_run_cell(cell, **kw))
    resumed = nd.simulate(scenario, cache_dir=cache)
    assert ran == [scenario.cells()[1].id]
    with xr.open_dataset(result) as complete:
        xr.testing.assert_allclose(resumed.drop_attrs(), complete.drop_attrs(), rtol=1e-12, atol=1e-14)


def test_parts_of_a_sweep_share_a_cells_directory_and_the_whole_only_combines(tiny, tmp_path, monkeypatch):
    scenario_path, result = tiny
    cells = tmp_path / "shared.cells"
    for width in (4, 6):  # e.g. two processes, one per width
        part = ["simulate", str(scenario_path), "--set", f"network.width=[{width}]", "--cells", str(cells), "--quiet"]
        assert main([*part, "-o", str(tmp_path / f"part{width}.nc")]) == 0
    assert len(list(cells.glob("*.nc"))) == 2  # kept after success
    monkeypatch.setattr(execution, "run_cell", lambda *a, **k: pytest.fail("a cell ran again"))
    whole = tmp_path / "whole.nc"
    assert main(["simulate", str(scenario_path), "--cells", str(cells), "-o", str(whole), "--quiet"]) == 0
    with xr.open_dataset(result) as complete, xr.open_dataset(whole) as combined:
        xr.testing.assert_allclose(combined.drop_attrs(), complete.drop_attrs(), rtol=1e-12, atol=1e-14)


def test_simulate_refuses_a_cell_above_the_memory_budget_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(execution, "run_cell", lambda *a, **k: pytest.fail("a cell ran"))
    path = tmp_path / "big.yaml"
    path.write_text(TINY + "memory_budget_gb: 1.0e-7\n")
    assert main(["simulate", str(path), "-o", str(tmp_path / "big.nc"), "--quiet"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "memory_budget_gb" in message and "lower" in message
    assert not (tmp_path / "big.nc").exists()


@pytest.mark.slow  # starts a local dask cluster, ~35 s
def test_cells_run_by_parallel_workers_give_the_serial_result(tiny, tmp_path):
    """--workers 2: the cells run as dask.distributed tasks in two processes,
    each writes its cell file, and the result equals the serial one."""
    pytest.importorskip("distributed")
    cells = tmp_path / "cells"
    result = tmp_path / "parallel.nc"
    assert main(["simulate", str(tiny[0]), "-o", str(result), "--quiet", "--workers", "2", "--cells", str(cells)]) == 0
    assert len(list(cells.glob("*.nc"))) == 2
    with xr.open_dataset(tiny[1]) as serial, xr.open_dataset(result) as parallel:
        for name in ("f_nth", "f_ref", "ntk_drift_ref", "kernel_magnitude"):
            np.testing.assert_array_equal(parallel[name], serial[name])
        same = [{k: v for k, v in json.loads(ds.attrs["scenario"]).items() if k != "output"} for ds in (parallel, serial)]
        assert same[0] == same[1]


def test_cells_run_on_a_running_scheduler(tiny, tmp_path):
    """--scheduler ADDRESS: the cells go to an existing dask cluster (here one
    in-process worker) and the result equals the serial one."""
    distributed = pytest.importorskip("distributed")
    result = tmp_path / "scheduled.nc"
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
        assert main(["simulate", str(tiny[0]), "-o", str(result), "--quiet", "--scheduler",
                     cluster.scheduler_address]) == 0
    with xr.open_dataset(tiny[1]) as serial, xr.open_dataset(result) as scheduled:
        np.testing.assert_array_equal(scheduled.f_nth, serial.f_nth)
        np.testing.assert_array_equal(scheduled.f_ref, serial.f_ref)


def test_workers_share_the_memory_budget(tmp_path, capsys, monkeypatch):
    """A cell that fits memory_budget_gb alone but not half of it is refused
    with two workers, before anything runs."""
    monkeypatch.setattr(execution, "run_cell", lambda *a, **k: pytest.fail("a cell ran"))
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY + "memory_budget_gb: 1.0e-9\n")  # the least a cell can take: one seed, one direction
    least = max(sweep.estimate_cell(cell)["bytes"] for cell in nd.load_scenario(path).cells())
    path.write_text(TINY + f"memory_budget_gb: {1.5 * least / 1e9!r}\n")  # fits one share, not half of it
    assert main(["validate", str(path)]) == 0
    assert main(["simulate", str(path), "-o", str(tmp_path / "tiny.nc"), "--quiet", "--workers", "2"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "/ 2 workers" in message and "fewer workers" in message


def test_workers_without_dask_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    assert main(["simulate", str(path), "-o", str(tmp_path / "tiny.nc"), "--quiet", "--workers", "2"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "dask" in message and "pip install" in message


CLI_BAD_INPUTS = [
    # (file content or None for a missing file, extra arguments, fragment of the message)
    (None, [], "no such scenario file"),
    ("network: {width: [8, 16}", [], "YAML syntax error"),
    ("network: {widht: 8}", [], "network.widht: unknown key; did you mean 'width'"),
    ("hierarchy: {orders: [2, 3, 8]}", [], "hierarchy.orders[2]: got 8"),
    ("hierarchy: {orders: [1]}", [], "hierarchy.orders[0]: got 1"),
    ("network: {activation: sigmoid}", [], "network.activation: got 'sigmoid', allowed: 'tanh'"),
    ("data: {kind: cifar}", [], "data.kind: got 'cifar', allowed: sphere, teacher, digits, file"),
    ("data: {kind: file, path: missing.npz}", [], "data.path"),
    ("network: {width: 8.5}", [], "network.width: got 8.5"),
    ("time: {spacing: quadratic}", [], "time.spacing: got 'quadratic'"),
    ("reference: {method: gradient_descent, lr: 0.125}\ntime: {t1: 0.5, n_saves: 3, unit: n_over_lambda_min}", [], "time.unit: n_over_lambda_min gives every seed"),
    ("time: {unit: seconds}", [], "time.unit: got 'seconds', allowed: 't' or 'n_over_lambda_min'"),
    ("hierarchy: {rtol: -1.0}", [], "hierarchy.rtol: got -1.0"),
    ("data: {n_test: -2}", [], "data.n_test: got -2"),
    ("seed: 0", ["--set", "network.depth"], "not of the form key=value"),
    ("seed: 0", ["--set", "hierarchy.ordrs=[2]"], "hierarchy.ordrs: unknown key; did you mean 'orders'"),
    ("seed: 0", ["--set", "network.width=[8, 16"], "not valid YAML"),
    ("memory_budget_gb: 1.0e-7", [], "memory_budget_gb: cell"),
]


STRICT_BAD_INPUTS = [
    # (file content, extra arguments, the field, what is allowed): no coercion, nothing finite lost, no key twice
    ("network: {width: '64'}", [], "network.width", "got '64', allowed: a valid integer"),
    ("seed: 1.0", [], "seed", "got 1.0, allowed: a valid integer"),
    ("time: {t1: true}", [], "time.t1", "got True, allowed: a valid number"),
    ("name: 1", [], "name", "got 1, allowed: a valid string"),
    ("output: {save_kernels: 1}", [], "output.save_kernels", "got 1, allowed: a valid boolean"),
    ("data: {label_noise: '0.1'}", [], "data.label_noise", "got '0.1', allowed: a valid number"),
    ("network: {width: [8, '16']}", [], "network.width[1]", "allowed: a valid integer"),
    ("time: {t1: .inf}", [], "time.t1", "got inf, allowed: a finite number"),
    ("hierarchy: {rtol: .nan}", [], "hierarchy.rtol", "got nan, allowed: a finite number"),
    ("network: {architecture: resnet, alpha: -.inf}", [], "network.alpha", "allowed: a finite number"),
    ("seed: 0", ["--set", "time.t1=.inf"], "time.t1", "got inf, allowed: a finite number"),
    ("seed: 0", ["--set", "network.width='64'"], "network.width", "got '64', allowed: a valid integer"),
    ("network:\n  width: 8\n  depth: 1\n  width: 16\n", [], "width: line 4",
     "duplicate key (first given at line 2); allowed: each key once"),
    ("seed: 0\nseed: 1\n", [], "seed: line 2", "duplicate key"),
    ("seed: 0", ["--set", "network={width: 8, width: 16}"], "--set network", "duplicate key 'width'"),
    ("", [], "(top level)", "the file is empty; allowed: a YAML mapping"),
    ("# only a comment\n", [], "(top level)", "the file is empty"),
]


@pytest.mark.parametrize("content, extra, field, allowed", STRICT_BAD_INPUTS, ids=[f"{c[2]}-{c[3][:24]}" for c in STRICT_BAD_INPUTS])
def test_strict_input_exits_2_naming_the_file_the_field_and_what_is_allowed(tmp_path, capsys, content, extra, field, allowed):
    path = tmp_path / "scenario.yaml"
    path.write_text(content)
    assert main(["validate", str(path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"error: {path}: {field}") and allowed in err, err


def test_an_integer_where_a_float_is_meant_is_a_float_and_1e_minus_9_is_a_number(tmp_path):
    """The two coercions strict validation keeps: YAML 1.1 reads 1e-9 as text (YAML 1.2 as a number)."""
    scenario = parse_scenario("time: {t1: 2}\nhierarchy: {rtol: 1e-9}\nmemory_budget_gb: 8")
    assert scenario.time.t1 == 2.0 and isinstance(scenario.time.t1, float)
    assert scenario.hierarchy.rtol == 1e-9 and scenario.memory_budget_gb == 8.0


def _unwritable_outputs(tmp_path):
    """(arguments after the scenario, the field, what the message says): outputs that cannot be written."""
    (tmp_path / "a_file").write_text("")
    (tmp_path / "dir.nc").mkdir()
    (tmp_path / "store.zarr").write_text("")
    (tmp_path / "taken.nc.cells").write_text("")
    return [
        (["-o", str(tmp_path / "dir.nc")], "output.path", "is an existing directory; allowed: a .nc file path"),
        (["-o", str(tmp_path / "a_file" / "sub" / "out.nc")], "output.path", "cannot be created ("),
        (["-o", str(tmp_path / "store.zarr")], "output.path", "is an existing file; allowed: a .zarr directory store"),
        (["-o", str(tmp_path / "ok.nc"), "--cells", str(tmp_path / "a_file")], "--cells", "is an existing file; allowed: a directory"),
        (["-o", str(tmp_path / "ok.nc"), "--cells", str(tmp_path / "a_file" / "cells")], "--cells", "cannot be created"),
        (["-o", str(tmp_path / "taken.nc")], "--cells (default OUT.cells/)", "is an existing file"),
    ]


def test_an_output_that_cannot_be_written_exits_2_before_any_computation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(execution, "run_cell", lambda *a, **k: pytest.fail("a cell ran"))
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    for arguments, field, allowed in _unwritable_outputs(tmp_path):
        assert main(["simulate", str(path), "--quiet", *arguments]) == 2, arguments
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith(f"error: {path}: {field}: '"), err
        assert allowed in err, err
    assert not (tmp_path / "ok.nc").exists()


@pytest.mark.parametrize("content, extra, fragment", CLI_BAD_INPUTS, ids=[c[2][:30] for c in CLI_BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, capsys, content, extra, fragment):
    path = tmp_path / "scenario.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["validate", str(path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"error: {path}: ") and fragment in err, err
    assert "Traceback" not in err


def test_a_failed_solve_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    def fail(cell, **kwargs):
        raise nd.SolverError(f"cell {cell.id}: NTH p=2 solver stopped after 1 steps")

    monkeypatch.setattr(execution, "run_cell", fail)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    assert main(["simulate", str(path), "-o", str(tmp_path / "tiny.nc"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: cell ") and "\n" not in err


def test_recorded_solver_failures_finish_the_sweep_and_are_reported(tmp_path, capsys):
    """``hierarchy.on_failure: record`` with a step budget too small for any
    solve: the sweep still writes its result, says so in one line, and the
    report lists the failed solves."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    result = tmp_path / "tiny.nc"
    budget = ["--set", "hierarchy.max_steps=2", "--set", "hierarchy.on_failure=record"]
    assert main(["simulate", str(path), "-o", str(result), "--quiet", *budget]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("note: 8 of 8 NTH solves (p=2, p=3) stopped before the last save time") and "\n" not in err
    ds = xr.load_dataset(result)
    assert bool(ds.nth_failed.all()) and np.isinf(ds.truncation_error.isel(time=-1)).all()
    assert np.isfinite(ds.f_ref).all()
    assert main(["report", str(result), "-o", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## NTH solves that stopped early" in report and "| 3 | 4 (2), 6 (2) |" in report


def test_an_interrupt_exits_130_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupt(cell, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(execution, "run_cell", interrupt)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    assert main(["simulate", str(path), "-o", str(tmp_path / "tiny.nc"), "--quiet"]) == 130
    assert "resumes" in capsys.readouterr().err


def test_bad_output_suffix_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "scenario.yaml"
    path.write_text(TINY)
    assert main(["simulate", str(path), "-o", str(tmp_path / "out.csv"), "--quiet"]) == 2
    assert "output.path: got" in capsys.readouterr().err


def test_the_module_entry_point_reports_bad_input_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("network:\n  activaton: tanh\n")
    done = subprocess.run(
        [sys.executable, "-m", "nth_dynamics", "validate", str(path)], check=False, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {path}: network.activaton: unknown key; did you mean 'activation'? (allowed keys: architecture, "
        "width, depth, activation, alpha, gamma, branch, readout, trained, W_std, b_std, parameterization, output_scale)"
    )


@pytest.mark.parametrize("command", [[], ["simulate"], ["validate"], ["report"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_validate_prints_the_resolved_scenario_and_estimates(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    assert main(["validate", str(path), "--set", "network.width=[4, 6, 8]"]) == 0
    out = capsys.readouterr().out
    assert "rtol: 1.0e-09" in out  # defaults filled in
    scenario = nd.load_scenario(path, ["network.width=[4, 6, 8]"])
    for cell in scenario.cells():
        assert cell.id in out
    assert "memory" in out and "time" in out


def test_report_needs_an_existing_result(tmp_path, capsys):
    assert main(["report", str(tmp_path / "absent.nc")]) == 2
    assert "no such result file" in capsys.readouterr().err


def test_report_without_the_plots_module_fails_cleanly(tiny, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nth_dynamics.report.plots", None)
    assert main(["report", str(tiny[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the report command needs nth_dynamics.report.plots.write_report") and "\n" not in err


def test_report_calls_write_report(tiny, tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("nth_dynamics.report.plots")
    fake.write_report = lambda result, out_dir: calls.append((Path(result), Path(out_dir)))
    monkeypatch.setitem(sys.modules, "nth_dynamics.report.plots", fake)
    assert main(["report", str(tiny[1]), "-o", str(tmp_path / "figures")]) == 0
    assert calls == [(tiny[1], tmp_path / "figures")]
