"""The laziness scale α (issue 14; docs/theory.md §9): a network with
``output_scale`` α trains f_α = f0 + α (f − f0) on the loss / α², whose
hierarchy is the tower of f with K(r) / α^(r−2).

Every check here builds f_α a second way, as an independent model (a
:class:`~nth_dynamics.FunctionModel` of θ ↦ f0 + α (f(θ) − f(θ0)) with θ0
frozen), and compares."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import nth_dynamics as nd
from nth_dynamics.cli import main
from nth_dynamics.engine.laziness import lazy_outputs, lazy_tower
from nth_dynamics.pipeline import cell_run
from nth_dynamics.pipeline.scenario import parse_scenario
from nth_dynamics.report import figures
from tests.conftest import sphere_points

ALPHAS = (0.3, 1.0, 5.0)
NETWORKS = {
    "ffnet": lambda alpha: nd.FFNet(3, 16, 2, key=jax.random.key(3), output_scale=alpha),
    "resnet": lambda alpha: nd.ResNet(3, 16, 2, key=jax.random.key(3), b_std=0.3, output_scale=alpha),
}


def scaled_model(network) -> nd.FunctionModel:
    """f_α as a model of its own: θ ↦ f(x; θ0) + α (f(x; θ) − f(x; θ0)), on
    the network's trained parameters, with θ0 (and the network's α) frozen in
    the closure. Its tower is the tower of f_α, taken on the generic path."""
    alpha = network.output_scale
    params, static = eqx.partition(network, network.trained_filter())
    start = network

    def apply_fn(p, x):
        f0 = start(x)
        return f0 + alpha * (eqx.combine(p, static)(x) - f0)

    return nd.FunctionModel(apply_fn, params)


class Divided(nd.AbstractLoss):
    """The squared loss divided by a constant: L(f_α)/α² for the scaled model."""

    name: ClassVar[str] = "divided"
    formula: ClassVar[str] = "(1/2n) sum (f - y)^2 / c"
    factor: float

    def value(self, f, y, xp=jnp):
        return (f - y) ** 2 / 2 / self.factor

    def derivative(self, f, y):
        return (f - y) / self.factor


@pytest.fixture(scope="module")
def points():
    key_train, key_test = jax.random.split(jax.random.key(11))
    x_train = sphere_points(key_train, 4, 3)
    x_eval = jnp.concatenate([x_train, sphere_points(key_test, 2, 3)])
    y_train = jnp.sin(2 * x_train[:, 0]) + x_train[:, 1]
    return x_train, y_train, x_eval


# ------------------------------------------------------------------ the tower


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("architecture", NETWORKS)
def test_the_rescaled_tower_is_the_tower_of_the_scaled_model(architecture, alpha, points):
    """K̃(r) = K(r)[f] / α^(r−2) (kernel_tower of the network with α) equals
    K(r)[f_α] · α^(−2(r−1)), the tower of f_α computed directly and taken to
    the time of L/α² (each of the r − 1 levels of the hierarchy carries the 1/α²)."""
    x_train, _, x_eval = points
    network = NETWORKS[architecture](alpha)
    rescaled = nd.kernel_tower(network, x_train, 4, x_eval)
    direct = nd.kernel_tower(scaled_model(network), x_train, 4, x_eval)
    for r, (ours, theirs) in enumerate(zip(rescaled, direct), start=2):
        theirs = theirs * alpha ** (-2 * (r - 1))
        scale = float(jnp.max(jnp.abs(theirs)))
        assert float(jnp.max(jnp.abs(ours - theirs))) <= 1e-12 * scale, (r, scale)
    # and it is the tower of f rescaled: the unscaled network's, divided by α^(r−2)
    of_f = nd.kernel_tower(NETWORKS[architecture](1.0), x_train, 4, x_eval)
    for r, (ours, kernel) in enumerate(zip(rescaled, of_f), start=2):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(kernel / alpha ** (r - 2) if r > 2 else kernel))


def test_the_projected_tower_is_rescaled_too(points):
    x_train, _, x_eval = points
    basis = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (4, 2)))[0]
    scaled = nd.kernel_tower(NETWORKS["ffnet"](5.0), x_train, 4, x_eval, basis=basis)
    plain = nd.kernel_tower(NETWORKS["ffnet"](1.0), x_train, 4, x_eval, basis=basis)
    for r, (ours, kernel) in enumerate(zip(scaled, plain), start=2):
        np.testing.assert_allclose(ours, kernel / 5.0 ** (r - 2), rtol=1e-14, atol=0)


def test_at_output_scale_one_everything_is_the_network_itself():
    tower = (jnp.ones((2, 2)), jnp.full((2, 2, 2), 3.0))
    assert all(a is b for a, b in zip(lazy_tower(tower, 1.0), tower))
    f = jnp.arange(3.0)
    assert lazy_outputs(f, jnp.zeros(3), 1.0) is f
    assert nd.FFNet(3, 4, 1, key=jax.random.key(0)).output_scale == 1.0


# ------------------------------------------------------------- the references


@pytest.mark.parametrize("architecture, alpha", [
    ("ffnet", 5.0),
    pytest.param("ffnet", 0.3, marks=pytest.mark.slow),  # 20–60 s each on two loaded cores
    pytest.param("resnet", 5.0, marks=pytest.mark.slow),
    pytest.param("resnet", 0.3, marks=pytest.mark.slow),
])
def test_gradient_flow_trains_the_scaled_model_on_the_divided_loss(architecture, alpha, points):
    """gradient_flow of the network with α is the gradient flow of the
    independent f_α on L/α²: the same f_α(t), and its NTK is α² times ours
    (ours is K2 of f, the K̃2 of the hierarchy)."""
    x_train, y_train, x_eval = points
    network = NETWORKS[architecture](alpha)
    ts = jnp.linspace(0.0, 2.0, 5)
    ours = nd.gradient_flow(network, x_train, y_train, ts, x_eval, rtol=1e-11, atol=1e-11)
    theirs = nd.gradient_flow(scaled_model(network), x_train, y_train, ts, x_eval, rtol=1e-11, atol=1e-11,
                              loss=Divided(alpha**2))
    np.testing.assert_allclose(ours.f, theirs.f, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.ntk, theirs.ntk / alpha**2, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.f[0], jax.vmap(network)(x_eval), rtol=0, atol=1e-15)  # f_α(0) = f0
    # the network trained at α moved: not the α = 1 flow
    plain = nd.gradient_flow(NETWORKS[architecture](1.0), x_train, y_train, ts, x_eval, rtol=1e-11, atol=1e-11)
    assert float(jnp.max(jnp.abs(plain.f[-1] - ours.f[-1]))) > 1e-4


def test_descent_and_optax_train_the_scaled_model_on_the_divided_loss(points):
    x_train, y_train, x_eval = points
    network = NETWORKS["ffnet"](3.0)
    scaled, divided = scaled_model(network), Divided(9.0)
    ours = nd.gradient_descent(network, x_train, y_train, 0.1, 10, 5, x_eval)
    theirs = nd.gradient_descent(scaled, x_train, y_train, 0.1, 10, 5, x_eval, loss=divided)
    np.testing.assert_allclose(ours.f, theirs.f, rtol=0, atol=1e-12)
    optimizer = nd.make_optimizer("sgd", 0.1, {"momentum": 0.9})
    ours = nd.optax_reference(network, x_train, y_train, optimizer, 10, 5, x_eval, lr=0.1)
    theirs = nd.optax_reference(scaled, x_train, y_train, optimizer, 10, 5, x_eval, lr=0.1, loss=divided)
    np.testing.assert_allclose(ours.f, theirs.f, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.ntk, theirs.ntk / 9.0, rtol=0, atol=1e-12)


# ------------------------------------------------- the hierarchy against α


SWEEP = """\
seed: [0, 1]
data: {kind: sphere, n_train: 4, d: 5}
network: {width: 64, depth: 2, output_scale: [2, 8, 32]}
hierarchy: {orders: [2, 3], rtol: 1.0e-12, atol: 1.0e-12}
reference: {rtol: 1.0e-12, atol: 1.0e-12}
time: {t1: 2.0, n_saves: 9}
"""


@pytest.mark.slow  # 60–160 s on two loaded cores: three reference compilations (α is static)
def test_the_truncation_error_falls_with_the_output_scale_at_the_derived_rate():
    """In the lazy regime E_p follows the first kernel it leaves out:
    E_2 ~ K̃3 ~ 1/(α m), E_3 ~ K̃4 ~ 1/(α² m) (docs/theory.md §9): max_t E_p
    fitted over α = 2, 8, 32 at m = 64 through the seed means of log E (the
    fast version of scenarios/laziness_scale.yaml). Without the rescaling
    (K̃3 = K3) E_3 would stay near K3 ~ 1/m; with a reference that trained
    f on L, E_2 would not fall at all."""
    ds = nd.simulate(parse_scenario(SWEEP))
    fits = nd.analysis.laziness_fits(ds).isel(width=0)
    np.testing.assert_array_equal(fits["predicted_slope"].values, [-1.0, -2.0])
    assert int(fits["fit_points"].min()) == 3
    slopes = fits["slope"].values
    print("fitted slopes of max_t E_2, E_3 in log α:", slopes)
    assert abs(slopes[0] - (-1.0)) < 0.2, slopes
    assert abs(slopes[1] - (-2.0)) < 0.25, slopes
    worst = ds["truncation_error"].max("time").isel(width=0)
    assert bool((worst.sel(order=3) < worst.sel(order=2)).all()), worst.values  # p = 3 improves on p = 2 at every α
    assert figures.error_vs_output_scale(ds, xr.Dataset()) is not None


# ------------------------------------------------------------------ scenarios


SCENARIO = """\
seed: [0, 1]
data: {kind: sphere, n_train: 3, n_test: 1}
network: {width: 6, depth: 1, output_scale: [1, 4.0]}
hierarchy: {orders: [2, 3]}
time: {t1: 0.5, n_saves: 3}
"""


def test_a_swept_output_scale_shares_one_tower_and_matches_the_engine(monkeypatch):
    calls = []
    initial_tower = cell_run._initial_tower
    monkeypatch.setattr(cell_run, "_initial_tower", lambda *a: calls.append(1) or initial_tower(*a))
    scenario = parse_scenario(SCENARIO)
    assert scenario.grid() == {"output_scale": (1.0, 4.0), "width": (6,)}
    ds = nd.simulate(scenario)
    assert len(calls) == 1  # one tower of f for both α
    assert ds["output_scale"].values.tolist() == [1.0, 4.0] and "laziness" in ds["output_scale"].attrs["long_name"]
    # the cell at α = 4 run on its own (its own tower) gives the same numbers
    cell = scenario.cells()[1]
    alone = cell_run.run_cell(cell)
    assert len(calls) == 2
    np.testing.assert_array_equal(ds["f_nth"].sel(output_scale=4.0).isel(width=0).values, alone["f_nth"].values)
    np.testing.assert_array_equal(ds["f_ref"].sel(output_scale=4.0).isel(width=0).values, alone["f_ref"].values)
    # K̃3 = K3 / α
    magnitudes = ds["kernel_magnitude"].isel(width=0)
    np.testing.assert_allclose(magnitudes.sel(output_scale=4.0, rank=3), magnitudes.sel(output_scale=1.0, rank=3) / 4,
                               rtol=1e-14)
    np.testing.assert_array_equal(magnitudes.sel(output_scale=4.0, rank=2), magnitudes.sel(output_scale=1.0, rank=2))


def test_output_scale_one_keeps_the_cell_ids_and_options():
    plain, given = parse_scenario("network: {width: 6}"), parse_scenario("network: {width: 6, output_scale: 1}")
    assert [c.id for c in plain.cells()] == [c.id for c in given.cells()]
    assert "output_scale" not in plain.cells()[0].spec.network.options()
    lazy = parse_scenario("network: {width: 6, output_scale: 2.5}").cells()[0]
    assert lazy.id != plain.cells()[0].id and lazy.spec.tower_id() == plain.cells()[0].spec.tower_id()
    assert lazy.spec.network.options()["output_scale"] == 2.5


# ---------------------------------------------------------------- bad input


BAD_SCALES = [
    ("0", "network.output_scale", "got 0, allowed: greater than 0"),
    ("-1.5", "network.output_scale", "got -1.5, allowed: greater than 0"),
    (".nan", "network.output_scale", "got nan, allowed: a finite number"),
    (".inf", "network.output_scale", "got inf, allowed: a finite number"),
    ("'2'", "network.output_scale", "got '2', allowed: a valid number"),
    ("true", "network.output_scale", "got True, allowed: a valid number"),
    ("[1, 0]", "network.output_scale[1]", "got 0, allowed: greater than 0"),
    ("[2, 2.0]", "network.output_scale", "2.0 is repeated"),
]


@pytest.mark.parametrize("value, field, message", BAD_SCALES, ids=[b[0] for b in BAD_SCALES])
def test_a_bad_output_scale_exits_2_with_one_line(tmp_path, capsys, value, field, message):
    path = tmp_path / "scenario.yaml"
    path.write_text(f"network: {{width: 8, output_scale: {value}}}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"error: {path}: {field}: ") and message in err, err


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf, True, "2", None])
@pytest.mark.parametrize("architecture", ["ffnet", "resnet"])
def test_a_network_refuses_a_bad_output_scale(architecture, value, without_shape_checks):
    """As users call it, outside pytest's jaxtyping hook: the network's own message."""
    with pytest.raises(ValueError, match=r"^output_scale must be a finite number > 0, got "):
        nd.make_network(architecture, 3, 4, 1, key=jax.random.key(0), output_scale=value)


def test_a_users_model_refuses_the_output_scale():
    scenario = parse_scenario("network: {width: 4, output_scale: 2.0}")
    with pytest.raises(nd.ScenarioError, match=r"network\.output_scale: describes a built-in network"):
        nd.simulate(scenario, model=lambda key, **options: scaled_model(nd.FFNet(3, 4, 1, key=key)))


class Scaled(eqx.Module):
    """A user's module with a trained field named output_scale: not the laziness scale."""

    W: jax.Array
    output_scale: jax.Array

    def __call__(self, x):
        return self.output_scale * jnp.sum(jnp.tanh(self.W @ x)) / jnp.sqrt(self.W.shape[0])


def test_a_users_field_named_output_scale_is_not_the_laziness_scale(points):
    """Only the project's networks carry α: a user's module is its own f, whatever its fields are called."""
    x_train = points[0]
    model = Scaled(jax.random.normal(jax.random.key(3), (16, x_train.shape[1])), jnp.asarray(2.5))
    plain = nd.FunctionModel(lambda p, x: model.__class__(*p)(x), (model.W, model.output_scale))
    for kernel, expected in zip(nd.kernel_tower(model, x_train, 3), nd.kernel_tower(plain, x_train, 3), strict=True):
        np.testing.assert_allclose(kernel, expected, rtol=1e-12, atol=0)
