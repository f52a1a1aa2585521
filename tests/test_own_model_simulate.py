"""A user's own model through the whole pipeline: nd.simulate(scenario,
model=factory) — the ensemble built by the factory per seed key, cell ids
that never meet a built-in network's, estimates from the factory's shapes,
a resumed cache, one-line errors."""

import functools
import json
import math
import pickle

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nth_dynamics as nd
from nth_dynamics.data import make_data
from nth_dynamics.pipeline import execution
from nth_dynamics.pipeline.cells import data_key, network_keys
from nth_dynamics.pipeline.cells import Cell, ModelFactory
from nth_dynamics.pipeline.estimates import estimate_spec, network_counts
from nth_dynamics.pipeline.scenario import parse_scenario

SMALL = """\
name: own_model
seed: [0, 1]
data: {kind: sphere, n_train: 4, n_test: 2, d: 3}
network: {width: 8, depth: 1}
hierarchy: {orders: [2, 3]}
reference: {method: gradient_descent, lr: 0.125}
time: {t1: 0.5, n_saves: 3}
"""
"""Gradient descent: its program compiles in a fraction of the gradient flow's."""


def tanh_ffnet(key, *, d, width, depth, activation):
    """The project's FFNet written as a function (a new closure per call, as factories make them)."""
    assert activation == "tanh"
    net = nd.make_network("ffnet", d, width, depth, key=key)

    def apply(params, x):
        scale = 1 / math.sqrt(width)
        h = params["W0"] @ x
        for W in params["W"]:
            h = scale * W @ jnp.tanh(h)
        return scale * params["a"] @ jnp.tanh(h)

    return nd.FunctionModel(apply, {"W0": net.W0, "W": net.W, "a": net.a})


def mlp(key, *, d, width, depth, activation):
    return eqx.nn.MLP(d, "scalar", width, depth + 1, activation=jnp.tanh, key=key)


def builtin_ffnet(key, *, d, width, depth, activation):
    return nd.make_network("ffnet", d, width, depth, key=key, activation=activation)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cells")
    return nd.simulate(parse_scenario(SMALL), model=tanh_ffnet, cache_dir=cache), cache


def test_a_factory_model_runs_every_seed_from_its_key(simulated):
    """The factory is called with each seed's network key: at t = 0 both the
    NTH and the reference are the outputs of the FFNet of that key, computed
    here directly."""
    ds, _ = simulated
    scenario = parse_scenario(SMALL)
    spec = scenario.cells()[0].spec
    data = make_data(spec.data_mapping(), data_key(spec.data.seed))
    for i, key in enumerate(network_keys([0, 1])):
        f0 = jax.vmap(nd.make_network("ffnet", 3, 8, 1, key=key))(data.x_eval)
        np.testing.assert_allclose(ds.f_ref.isel(width=0, seed=i, time=0), f0, rtol=0, atol=1e-14)
        np.testing.assert_allclose(ds.f_nth.isel(width=0, seed=i, time=0), np.stack([f0, f0]), rtol=0, atol=1e-14)
    assert np.all(np.isfinite(ds.truncation_error.values))
    assert float(ds.truncation_error.isel(time=-1).max()) > 0


def test_the_output_names_the_factory(simulated):
    ds, _ = simulated
    name = f"{__name__}.tanh_ffnet"
    assert ds.attrs["model_factory"] == name
    assert ds.architecture.item() == name
    cells = json.loads(ds.attrs["cells"])
    assert len(cells) == 1 and cells[0]["memory_bytes"] > 0


def test_a_resumed_cache_reads_the_cells_without_running_them(simulated, monkeypatch):
    ds, cache = simulated
    files = sorted(cache.iterdir())
    assert [path.stem for path in files] == [Cell.of({}, parse_scenario(SMALL).cells()[0].spec, ModelFactory(tanh_ffnet)).id]

    def refuse(*args, **kwargs):
        raise AssertionError("a cached cell was run again")

    monkeypatch.setattr(execution, "run_cell", refuse)
    resumed = nd.simulate(parse_scenario(SMALL), model=tanh_ffnet, cache_dir=cache)
    np.testing.assert_array_equal(resumed.f_nth, ds.f_nth)
    np.testing.assert_array_equal(resumed.f_ref, ds.f_ref)
    cell = execution.read_dataset(files[0])
    assert cell.attrs["model_factory"] == f"{__name__}.tanh_ffnet"
    network = json.loads(cell.attrs["cell_spec"])["network"]
    assert network["factory"] == f"{__name__}.tanh_ffnet" and network["width"] == 8
    assert network["parameters"] == [
        [".params['W']", [1, 8, 8], "float64"], [".params['W0']", [8, 3], "float64"], [".params['a']", [8], "float64"]
    ]


def test_user_model_cells_never_share_an_id_with_built_in_ones():
    cell = parse_scenario(SMALL).cells()[0]
    ids = {
        "builtin": cell.id,
        "function": Cell.of(cell.coords, cell.spec, ModelFactory(tanh_ffnet)).id,
        "mlp": Cell.of(cell.coords, cell.spec, ModelFactory(mlp)).id,
        # even a factory of the built-in FFNet itself: its id names the factory
        "factory of the builtin": Cell.of(cell.coords, cell.spec, ModelFactory(builtin_ffnet)).id,
    }
    ids["partial"] = Cell.of(cell.coords, cell.spec, ModelFactory(functools.partial(tanh_ffnet))).id
    assert ModelFactory(functools.partial(mlp)).name == f"functools.partial({__name__}.mlp)"
    assert len(set(ids.values())) == len(ids)
    assert Cell.of(cell.coords, cell.spec, ModelFactory(mlp)).id == ids["mlp"]  # stable
    wider = parse_scenario(SMALL.replace("width: 8", "width: 16")).cells()[0]
    assert Cell.of(wider.coords, wider.spec, ModelFactory(mlp)).id != ids["mlp"]


def test_a_cell_with_a_module_level_factory_travels_to_workers():
    """Cluster workers receive cells pickled: the factory goes with them."""
    cell = parse_scenario(SMALL).cells()[0]
    cell = Cell.of(cell.coords, cell.spec, ModelFactory(tanh_ffnet))
    received = pickle.loads(pickle.dumps(cell))
    assert received.model.factory is tanh_ffnet and received.spec.id(received.model) == cell.id


def test_estimates_come_from_the_factorys_shapes():
    spec = parse_scenario(SMALL.replace("width: 8", "width: 4096")).cells()[0].spec
    n_params, n_trained, activations, structured = network_counts(spec, ModelFactory(tanh_ffnet))
    assert n_params == n_trained == 4096 * 3 + 4096**2 + 4096 and not structured
    assert 2 * 4096 * 2 <= activations <= 5 * 4096 * 2  # the forward pass's per-point intermediates
    # an MLP's parameter count, with its biases, from shapes only (width 4096: nothing allocated)
    n_params, n_trained, _, _ = network_counts(spec, ModelFactory(mlp))
    assert n_params == n_trained == (3 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 + 1)
    # a factory of the project's own network is planned as the built-in one is
    assert network_counts(spec, ModelFactory(builtin_ffnet)) == network_counts(spec)
    assert estimate_spec(spec, ModelFactory(builtin_ffnet))["bytes"] == estimate_spec(spec)["bytes"]
    # the generic path is planned heavier than the outer-product path
    assert estimate_spec(spec, ModelFactory(tanh_ffnet))["parts"]["tower"] > estimate_spec(spec)["parts"]["tower"]


@pytest.mark.parametrize(
    "line, field",
    [("network: {width: 8, depth: 1, architecture: ffnet}", "network.architecture"),
     ("network: {width: 8, depth: 1, trained: hidden}", "network.trained"),
     ("network: {width: 8, depth: 1, readout: linear}", "network.readout")],
)
def test_built_in_network_fields_are_refused_with_a_model(line, field):
    scenario = parse_scenario(SMALL.replace("network: {width: 8, depth: 1}", line), source="own.yaml")
    with pytest.raises(nd.ScenarioError, match=rf"^own.yaml: {field}: describes a built-in network, but simulate "
                                               rf"was given model={__name__}.tanh_ffnet; allowed: remove it"):
        nd.simulate(scenario, model=tanh_ffnet)


def test_bad_factories_are_refused(without_shape_checks):
    scenario = parse_scenario(SMALL)
    with pytest.raises(TypeError, match="model must be a factory model"):
        nd.simulate(scenario, model="ffnet")
    with pytest.raises(TypeError, match=r"model: .*\.<lambda>\(key, d=3, width=8, depth=1, activation='tanh'\) "
                                        r"cannot be called"):
        nd.simulate(scenario, model=lambda key, width: None)
    with pytest.raises(TypeError, match=r"returned a function; allowed: an Equinox module"):
        nd.simulate(scenario, model=lambda key, **options: (lambda x: x.sum()))
    infinite = parse_scenario("kind: infinite_width\ninfinite_width: {study: kernel_shapes}", source="inf.yaml")
    with pytest.raises(nd.ScenarioError, match="inf.yaml: kind: infinite_width has no network"):
        nd.simulate(infinite, model=tanh_ffnet)


@pytest.mark.slow
def test_a_factory_of_the_ffnet_as_a_function_gives_the_built_in_result():
    """The whole Dataset of a FunctionModel factory equals the built-in
    FFNet's (generic path against outer-product path): gradient flow, full and reduced."""
    flow = SMALL.replace("reference: {method: gradient_descent, lr: 0.125}", "reference: {method: gradient_flow}")
    for text in (flow, flow.replace("orders: [2, 3]", "orders: [2, 3], basis: reduced")):
        scenario = parse_scenario(text)
        builtin, own = nd.simulate(scenario), nd.simulate(scenario, model=tanh_ffnet)
        for name in ("f_nth", "f_ref", "truncation_error", "lambda_min", "kernel_magnitude"):
            np.testing.assert_allclose(own[name], builtin[name], rtol=1e-10, atol=1e-12, err_msg=name)
