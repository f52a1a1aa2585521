"""The scenario's ``loss`` and ``reference.method: optax`` end to end through
the command line: the two example scenarios (made cheap with ``--set``), their
outputs, and the one-line refusals (exit 2) of bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import nth_dynamics as nd
from nth_dynamics.cli import main
from nth_dynamics.pipeline.scenario import parse_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


@pytest.fixture(scope="module")
def logistic_result(tmp_path_factory):
    result = tmp_path_factory.mktemp("logistic") / "logistic.nc"
    cheap = ["--set", "network.width=16", "--set", "time.n_saves=5", "--set", "data.n_test=4"]
    assert main(["simulate", str(SCENARIOS / "logistic_digits.yaml"), "-o", str(result), "--quiet", *cheap]) == 0
    with xr.open_dataset(result) as ds:
        yield ds.load()


def test_the_logistic_example_reports_its_loss_and_accuracies(logistic_result):
    ds = logistic_result
    assert json.loads(ds.attrs["scenario"])["loss"] == "logistic"
    train = ds.split.values == "train"
    y = ds.y.values
    assert set(np.unique(y)) <= {-1.0, 1.0}
    f_ref = ds.f_ref.values
    expected_loss = np.mean(np.log1p(np.exp(-y[train] * f_ref[..., train])), axis=-1)
    assert np.allclose(ds.loss_ref.values, expected_loss, rtol=1e-13)
    assert "log(1 + exp(-y_a f_a))" in ds.loss_ref.attrs["long_name"]  # the loss's, not mse's
    assert bool((ds.loss_ref.diff("time") < 0).all()) and bool((ds.loss_nth.diff("time") < 0).all())
    expected_accuracy = np.mean(np.sign(f_ref[..., ~train]) == y[~train], axis=-1)
    assert np.array_equal(ds.test_accuracy_ref.values, expected_accuracy)
    for name in ("accuracy_nth", "accuracy_ref", "test_accuracy_nth", "test_accuracy_ref"):
        assert ds[name].attrs["long_name"] and bool(((ds[name] >= 0) & (ds[name] <= 1)).all()), name
    assert ds.accuracy_nth.dims == ("width", "seed", "order", "time")
    assert float(ds.truncation_error.isel(time=0).max()) < 1e-12
    assert 0 < float(ds.truncation_error.isel(time=-1).max()) < 0.1


@pytest.mark.slow
def test_the_adam_example_runs_its_steps_and_records_the_optimizer(tmp_path):
    result = tmp_path / "adam.nc"
    cheap = ["--set", "network.width=8", "--set", "time.t1=0.2", "--set", "time.n_saves=3", "--set", "hierarchy.orders=2"]
    assert main(["simulate", str(SCENARIOS / "adam_reference.yaml"), "-o", str(result), "--quiet", *cheap]) == 0
    with xr.open_dataset(result) as ds:
        reference = json.loads(ds.attrs["scenario"])["reference"]
        assert reference["optimizer"] == "adam" and reference["optimizer_options"] == {"b1": 0.9, "b2": 0.999}
        assert np.allclose(ds.time, [0.0, 0.1, 0.2]) and bool((ds.ref_num_steps == 20).all())
        assert "accuracy_ref" not in ds  # a squared loss: no accuracies
        assert float(ds.truncation_error.isel(time=-1).min()) > 1e-3  # Adam is not gradient flow


@pytest.mark.slow
def test_optax_sgd_is_the_gradient_descent_reference_through_the_pipeline():
    base = "data: {kind: sphere, n_train: 3}\nnetwork: {width: 4}\nhierarchy: {orders: [2]}\ntime: {t1: 0.5, n_saves: 3}\n"
    descent = nd.simulate(parse_scenario(base + "reference: {method: gradient_descent, lr: 0.125}"))
    sgd = nd.simulate(parse_scenario(base + "reference: {method: optax, optimizer: sgd, lr: 0.125}"))
    assert float(abs(descent.f_ref - sgd.f_ref).max()) <= 1e-12
    assert np.array_equal(descent.f_nth.values, sgd.f_nth.values)


def test_the_new_fields_at_their_defaults_leave_the_cell_ids_alone():
    quickstart = nd.load_scenario(SCENARIOS / "quickstart.yaml")
    assert [cell.id for cell in quickstart.cells()] == ["c13314e4bcc7", "4c71e89f77c9"]  # docs/scenarios.md
    explicit = nd.load_scenario(SCENARIOS / "quickstart.yaml", ["loss=mse"])
    assert [cell.id for cell in explicit.cells()] == ["c13314e4bcc7", "4c71e89f77c9"]
    logistic = nd.load_scenario(SCENARIOS / "logistic_digits.yaml")
    mse = nd.load_scenario(SCENARIOS / "logistic_digits.yaml", ["loss=mse"])
    assert {c.id for c in logistic.cells()}.isdisjoint(c.id for c in mse.cells())
    hash(nd.load_scenario(SCENARIOS / "adam_reference.yaml"))  # options stored as pairs: still hashable


@pytest.mark.parametrize(
    "override, field, says",
    [
        ("data={kind: sphere}", "data.kind", "labels are real numbers"),
        ("data.label_noise=0.1", "data.label_noise", "allowed: 0 with loss logistic"),
        ("loss=hinge", "loss", "allowed: 'mse' or 'logistic'"),
        ("reference={method: optax, lr: 0.4}", "reference.optimizer", "required field is missing"),
        ("reference={method: optax, lr: 0.4, optimizer: lbfgs}", "reference.optimizer", "allowed: 'sgd'"),
        ("reference={method: optax, lr: 0.4, optimizer: sgd, optimizer_options: {momentm: 0.9}}",
         "reference.optimizer_options.momentm", "did you mean 'momentum'"),
        ("reference={method: optax, lr: 0.4, optimizer: adam, optimizer_options: {b1: high}}",
         "reference.optimizer_options.b1", "allowed: a number"),
        ("reference={method: optax, optimizer: sgd}", "reference.lr", "required field is missing"),
        ("reference={method: gradient_flow, optimizer: sgd}", "reference.optimizer", "applies only to method optax"),
        ("reference={method: optax, lr: 0.4, optimizer: sgd, optimizer_options: [0.9]}",
         "reference.optimizer_options", "allowed: a mapping"),
    ],
)
def test_bad_loss_and_optimizer_input_is_one_line_and_exit_2(override, field, says, capsys):
    assert main(["validate", str(SCENARIOS / "logistic_digits.yaml"), "--set", override]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and f": {field}: " in message and says in message, message


def test_logistic_labels_of_a_file_are_checked(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    np.savez(tmp_path / "real.npz", x_train=x, y_train=np.array([1.0, -1.0, 0.5, 1.0, 1.0, -1.0]))
    np.savez(tmp_path / "signs.npz", x_train=x, y_train=np.array([1.0, -1.0, -1.0, 1.0, 1.0, -1.0]))
    base = "loss: logistic\ndata: {kind: file, path: %s}\n"
    parse_scenario(base % "signs.npz", base_dir=tmp_path)
    path = tmp_path / "real.yaml"
    path.write_text(base % "real.npz")
    assert main(["validate", str(path)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and ": data.path: real.npz: y_train: " in message and "got 0.5" in message
