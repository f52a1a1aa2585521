"""neural-tangents' dense-layer conventions in the finite networks (issue 13):
``W_std``, ``b_std`` (biases) and ``parameterization`` on FFNet and ResNet.

Every check is against an independent computation: a forward pass written
out here from the documented formulas (and its autodiff Jacobian), the
generic nested-JVP tower, central finite differences, values saved from the
networks as they were before the options existed, and the limit kernels
``nd.limits.ntk`` with the same options.
"""

import glob
import json
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import nth_dynamics as nd
from nth_dynamics._schema import ScenarioError
from nth_dynamics.data import make_data
from nth_dynamics.engine.kernels import kernel_tower
from nth_dynamics.engine.networks import parameter_counts, resolve_dense_options
from nth_dynamics.pipeline.cells import data_key, network_keys
from nth_dynamics.pipeline.scenario import parse_scenario
from nth_dynamics.pipeline.sweep import _add_scalar_coordinates, run_cell

ROOT = Path(__file__).parents[1]

X = jnp.array([[0.6, 0.0, 0.8], [0.0, 1.0, 0.0], [-0.48, 0.6, 0.64]])

ARCHITECTURES = [
    ("ffnet", {}),
    ("resnet", {"alpha": 0.7}),
    ("resnet", {"alpha": 0.7, "branch": "one", "readout": "linear"}),
]
IDS = ["ffnet", "resnet-two", "resnet-one"]
DENSE = {"W_std": 1.3, "b_std": 0.4}


def independent_forward(model, params: dict, x):
    """f(x) from the module docstring's formulas, layer by layer, with the
    parameters taken from ``params`` (field → array) — nothing of the
    network's own forward pass (scan, _dense, scales) is reused."""
    m, d = params["W0"].shape
    W_std, standard = model.W_std, model.parameterization == "standard"
    # dense layer with fan-in N: W_std M v/√N + b_std b ("ntk"), or M v + b ("standard")
    c_first, c, c_bias = (math.sqrt(d), 1.0, 1.0) if standard else (W_std, W_std / math.sqrt(m), model.b_std)

    def bias(name, layer=None):
        b = params.get(name)
        if b is None:
            return 0.0
        return c_bias * (b if layer is None else b[layer])

    sigma = nd.engine.networks.ACTIVATIONS[model.activation]
    h = c_first * (params["W0"] @ x) + bias("b_W0")
    for l in range(params["W"].shape[0]):
        if isinstance(model, nd.FFNet):
            h = c * (params["W"][l] @ sigma(h)) + bias("b_W", l)
        elif model.branch == "two":
            phi = sigma(c * (params["W"][l] @ h) + bias("b_W", l))
            h = h + model.alpha * (c * (params["V"][l] @ phi) + bias("b_V", l))
        else:
            h = h + model.alpha * sigma(c * (params["W"][l] @ h) + bias("b_W", l))
    feature = sigma(h) if model.readout == "activation" else h
    c_out = 1.0 if standard else W_std / math.sqrt(m)
    f = c_out * (params["a"] @ feature)
    return f + bias("b_a")[0] if "b_a" in params else f


def leaves(model) -> dict:
    fields = ("W0", "W", "V", "a", "b_W0", "b_W", "b_V", "b_a")
    return {f: getattr(model, f) for f in fields if getattr(model, f, None) is not None}


def build(architecture, options, parameterization="ntk", width=8, depth=2, seed=5, **extra):
    return nd.make_network(
        architecture, 3, width, depth, key=jax.random.key(seed),
        parameterization=parameterization, **{**DENSE, **options, **extra},
    )


# ---------------------------------------------------------------- defaults


SAVED = {
    # f(X), K2[0, :], K3[0, 1, :] of make_network(arch, 3, 8, 2, key=jax.random.key(5), …),
    # computed with the networks as they were before W_std/b_std/parameterization
    "ffnet": (
        [0.1226547561646146, -0.18528775489824717, -0.0845046667148269],
        [0.2238201320047151, -0.14681748118286417, 0.1018303528985258],
        [-0.0302421783968235, 0.02447067306779556, -0.004421251135469098],
    ),
    "resnet-two": (
        [-0.9452633865290118, 0.9075411361547999, -0.1440384291145993],
        [1.7599864581569955, -0.5131091323853566, 0.47463983658325837],
        [0.07027065444375885, -0.15776303396211877, -0.041361552160727025],
    ),
    "resnet-one": (
        [-2.7250280454793905, 1.6673769208003386, -1.2893359325155442],
        [5.582606393789354, -1.6641752928928524, 1.4228467063005528],
        [0.1660568804806925, -0.5694175876944506, -0.6347525823576178],
    ),
}


@pytest.mark.parametrize(
    "name, architecture, options",
    [("ffnet", "ffnet", {}), ("resnet-two", "resnet", {}), ("resnet-one", "resnet", {"branch": "one", "readout": "linear"})],
)
def test_defaults_are_unchanged(name, architecture, options):
    key = jax.random.key(5)
    model = nd.make_network(architecture, 3, 8, 2, key=key, **options)
    assert (model.W_std, model.b_std, model.parameterization) == (1.0, 0.0, "ntk")
    assert all(getattr(model, f) is None for f in ("b_W0", "b_W", "b_a"))
    # the same key splits as before: W0, W, (V,) a are the first draws of split(key)
    keys = jax.random.split(key, 3 if architecture == "ffnet" else 4)
    expected = [jax.random.normal(keys[0], (8, 3)), jax.random.normal(keys[1], (2, 8, 8))]
    if architecture == "resnet" and options.get("branch", "two") == "two":
        expected.append(jax.random.normal(keys[2], (2, 8, 8)))
    expected.append(jax.random.normal(keys[-1], (8,)))
    assert len(jax.tree.leaves(model)) == len(expected)
    for leaf, draw in zip(jax.tree.leaves(model), expected):
        np.testing.assert_array_equal(leaf, draw)
    f, k2, k3 = SAVED[name]
    tower = kernel_tower(model, X, 3)
    np.testing.assert_allclose(jax.vmap(model)(X), f, rtol=1e-13, atol=0)
    np.testing.assert_allclose(tower[0][0], k2, rtol=1e-13, atol=0)
    np.testing.assert_allclose(tower[1][0, 1], k3, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("architecture, options", ARCHITECTURES, ids=IDS)
def test_options_keep_the_weights_draws(architecture, options):
    """Biases take keys folded off the network key: W0, W, V, a are the
    default network's draws (times W_std/√fan_in in the standard parameterization)."""
    plain = nd.make_network(architecture, 3, 8, 2, key=jax.random.key(5), **options)
    for parameterization in ("ntk", "standard"):
        model = build(architecture, options, parameterization)
        for field, fan_in in (("W0", 3), ("W", 8), ("V", 8), ("a", 8)):
            if getattr(plain, field, None) is None:
                continue
            factor = 1.3 / math.sqrt(fan_in) if parameterization == "standard" else 1.0
            np.testing.assert_array_equal(getattr(model, field), factor * getattr(plain, field))
        assert model.b_W0.shape == (8,) and model.b_W.shape == (2, 8) and model.b_a.shape == (1,)
        if options.get("branch", "two") == "two" and architecture == "resnet":
            assert model.b_V.shape == (2, 8)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_bias_draws(parameterization):
    """N(0, 1) biases in the NTK parameterization, N(0, b_std²) in the standard one."""
    model = nd.make_network("ffnet", 3, 4000, 0, key=jax.random.key(0), b_std=0.4, parameterization=parameterization)
    expected = 1.0 if parameterization == "ntk" else 0.4
    assert abs(float(jnp.std(model.b_W0)) - expected) < 0.05 * expected
    if parameterization == "standard":
        assert abs(float(jnp.std(model.W0)) - 1 / math.sqrt(3)) < 0.02  # W_std/√d
        assert abs(float(jnp.std(model.a)) - 1 / math.sqrt(4000)) < 0.02 / math.sqrt(4000) * 40


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_b_std_zero_is_no_bias(parameterization):
    """b_std = 0 and None are the same network: no bias parameters (the limits' b_std = 0)."""
    none = nd.make_network("resnet", 3, 8, 2, key=jax.random.key(1), W_std=1.3, parameterization=parameterization)
    zero = nd.make_network("resnet", 3, 8, 2, key=jax.random.key(1), W_std=1.3, b_std=0.0,
                           parameterization=parameterization)
    assert none.b_std == zero.b_std == 0.0 and zero.b_W0 is None and zero.b_V is None
    assert eqx.tree_equal(none, zero)


# ---------------------------------------------------------------- forward and gradients


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("architecture, options", ARCHITECTURES, ids=IDS)
def test_forward_is_the_documented_network(architecture, options, parameterization):
    model = build(architecture, options, parameterization)
    expected = jax.vmap(lambda x: independent_forward(model, leaves(model), x))(X)
    np.testing.assert_allclose(jax.vmap(model)(X), expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("trained", ["all", "hidden", ["input", "readout"]])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("architecture, options", ARCHITECTURES, ids=IDS)
def test_k2_is_the_gram_of_the_independent_jacobian(architecture, options, parameterization, trained):
    """K2 of the structured path = J Jᵀ, J the Jacobian of the independent
    forward over the trained fields (the biases go with their layer's group)."""
    model = build(architecture, options, parameterization, trained=trained)
    params = leaves(model)
    trained_fields = model.trained_fields()
    groups = {"input": {"W0", "b_W0"}, "hidden": {"W", "b_W", "V", "b_V"}, "readout": {"a", "b_a"}}
    wanted = set().union(*(groups[g] for g in (groups if trained == "all" else [trained] if isinstance(trained, str) else trained)))
    assert set(trained_fields) == wanted & set(params)

    def f(trained_params, x):
        return independent_forward(model, {**params, **trained_params}, x)

    jac = jax.vmap(jax.grad(f), in_axes=(None, 0))({k: params[k] for k in trained_fields}, X)
    flat = jnp.concatenate([v.reshape(X.shape[0], -1) for v in jax.tree.leaves(jac)], axis=1)
    k2 = kernel_tower(model, X, 2)[0]
    np.testing.assert_allclose(k2, flat @ flat.T, rtol=1e-12, atol=1e-14 * float(jnp.max(jnp.abs(k2))))


def _check_structured_tower(architecture, options, parameterization, order):
    """The structured tower (outer-product factors, biases as vectors) against
    the generic nested-JVP tower over the same trained leaves."""
    model = build(architecture, options, parameterization, width=6)
    structured = kernel_tower(model, X, order)
    generic = kernel_tower(model, X, order, filter_spec=model.trained_filter())
    for r, (s, g) in enumerate(zip(structured, generic), start=2):
        scale = float(jnp.max(jnp.abs(g)))
        assert float(jnp.max(jnp.abs(s - g))) <= 1e-12 * scale, f"K{r}"


@pytest.mark.parametrize(
    "architecture, options, parameterization",
    [(*ARCHITECTURES[0], "ntk"), (*ARCHITECTURES[1], "standard"), (*ARCHITECTURES[2], "ntk")],
    ids=["ffnet-ntk", "resnet-two-standard", "resnet-one-ntk"],
)
def test_structured_tower_equals_generic(architecture, options, parameterization):
    """K2, K3 (the slow test below: all six cases to K4)."""
    _check_structured_tower(architecture, options, parameterization, order=3)


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("architecture, options", ARCHITECTURES, ids=IDS)
def test_structured_tower_equals_generic_to_k4(architecture, options, parameterization):
    """K4: the generic tower's compilation takes ~20–30 s per case."""
    _check_structured_tower(architecture, options, parameterization, order=4)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_k2_against_finite_differences(parameterization):
    """K2[i, b] is the derivative of f(x_i) along g_b = ∇θ f(x_b): central
    differences of the network itself, bias leaves only and all leaves."""
    model = build("resnet", {"alpha": 0.7}, parameterization)
    params, static = eqx.partition(model, model.trained_filter())
    k2 = kernel_tower(model, X, 2)[0]

    def f_all(p):
        return jax.vmap(eqx.combine(p, static))(X)

    g1 = jax.grad(lambda p: eqx.combine(p, static)(X[1]))(params)
    step = 1e-5
    moved = lambda s: jax.tree.map(lambda p, g: p + s * g, params, g1)
    fd = (f_all(moved(step)) - f_all(moved(-step))) / (2 * step)
    np.testing.assert_allclose(fd, k2[:, 1], rtol=1e-8)
    # the biases' share of K2, against differences along the bias part of g_b only
    bias_only = jax.tree.map(lambda g: g, g1)
    for field in ("W0", "W", "V", "a"):
        bias_only = eqx.tree_at(lambda p, field=field: getattr(p, field), bias_only, jnp.zeros_like(getattr(g1, field)))
    moved = lambda s: jax.tree.map(lambda p, g: p + s * g, params, bias_only)
    fd_bias = (f_all(moved(step)) - f_all(moved(-step))) / (2 * step)
    grads = jax.vmap(lambda x: model.gradient_factors(x))(X)
    share = sum(grads[f][0].reshape(3, -1) @ grads[f][0][1].reshape(-1) for f in ("b_W0", "b_W", "b_V", "b_a"))
    np.testing.assert_allclose(fd_bias, share, rtol=1e-8)
    assert float(jnp.min(jnp.abs(share))) > 1e-3  # the biases contribute


def test_counts_filter_and_ensemble_with_biases():
    d, m, L = 3, 8, 2
    for parameterization in ("ntk", "standard"):
        total, trained = parameter_counts("resnet", d, m, L, b_std=0.4, parameterization=parameterization, trained="hidden")
        assert total == m * d + 2 * L * m * m + m + (m + 2 * L * m + 1)
        assert trained == 2 * L * m * m + 2 * L * m
    assert parameter_counts("ffnet", d, m, L) == (m * d + L * m * m + m,) * 2
    keys = jax.random.split(jax.random.key(0), 3)
    options = {"b_std": 0.4, "W_std": 1.3, "parameterization": "standard"}
    ensemble = nd.make_ensemble("ffnet", d, m, L, keys, **options)
    assert ensemble.b_W.shape == (3, L, m) and ensemble.b_a.shape == (3, 1)
    k2 = eqx.filter_vmap(lambda net: kernel_tower(net, X, 2)[0])(ensemble)
    member = nd.make_network("ffnet", d, m, L, key=keys[1], **options)
    np.testing.assert_allclose(k2[1], kernel_tower(member, X, 2)[0], rtol=1e-13, atol=1e-15)


def test_bad_options(without_shape_checks):
    for options, message in (
        ({"W_std": 0.0}, r"W_std must be a finite number > 0, got 0.0"),
        ({"W_std": math.inf}, r"W_std must be a finite number > 0"),
        ({"W_std": True}, r"W_std must be a finite number > 0"),
        ({"b_std": -0.1}, r"b_std must be a finite number ≥ 0 \(or None\), got -0.1"),
        ({"b_std": math.nan}, r"b_std must be a finite number ≥ 0"),
        ({"b_std": "0.1"}, r"b_std must be a finite number ≥ 0"),
        ({"parameterization": "NTK"}, r"parameterization must be one of \['ntk', 'standard'\], got 'NTK'"),
    ):
        for architecture in ("ffnet", "resnet"):
            with pytest.raises(ValueError, match=message):
                nd.make_network(architecture, 3, 4, 1, key=jax.random.key(0), **options)
    assert resolve_dense_options() == (1.0, 0.0, "ntk")


def test_limits_take_b_std_none():
    """The limits accept the networks' spelling of no biases."""
    for parameterization, extra in (("ntk", {}), ("standard", {"width": 16})):
        none = nd.limits.ntk(X, None, "ffnet", 1, activation="erf", b_std=None, parameterization=parameterization, **extra)
        zero = nd.limits.ntk(X, None, "ffnet", 1, activation="erf", parameterization=parameterization, **extra)
        np.testing.assert_array_equal(none, zero)


# ---------------------------------------------------------------- empirical → limit


def _deviations(architecture, options, parameterization, widths, n_seeds, depth):
    """Per width: the seed mean of |K2 − Θ∞|_F/|Θ∞|_F, and |mean_s K2 − Θ∞|_F/|Θ∞|_F,
    Θ∞ = nd.limits.ntk with the same options (and width= for "standard")."""
    x = jax.random.normal(jax.random.key(11), (4, 3))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    keys = jax.random.split(jax.random.key(7), n_seeds)
    per_seed, of_mean = [], []
    for width in widths:
        extra = {"width": width} if parameterization == "standard" else {}
        opts = {"activation": "erf", **DENSE, **options, "parameterization": parameterization}
        limit = nd.limits.ntk(x, None, architecture, depth, **opts, **extra)
        ensemble = nd.make_ensemble(architecture, 3, width, depth, keys, **opts)
        k2 = eqx.filter_vmap(lambda net: kernel_tower(net, x, 2)[0])(ensemble)
        norm = float(jnp.linalg.norm(limit))
        per_seed.append(float(jnp.mean(jnp.linalg.norm(k2 - limit, axis=(1, 2)))) / norm)
        of_mean.append(float(jnp.linalg.norm(jnp.mean(k2, axis=0) - limit)) / norm)
    return np.array(per_seed), np.array(of_mean)


def _check_convergence(per_seed, of_mean, widths, n_seeds, slope_range):
    slope = np.polyfit(np.log(widths), np.log(per_seed), 1)[0]
    print(f"deviations {np.round(per_seed, 4)}, of the seed mean {np.round(of_mean, 4)}, slope {slope:.3f}")
    assert slope_range[0] < slope < slope_range[1], (slope, per_seed)
    # no systematic offset: the seed mean is as close as independent O(1/√m)
    # fluctuations allow (a wrong limit leaves a floor the mean cannot average away)
    assert of_mean[-1] < 2 * per_seed[-1] / math.sqrt(n_seeds), (of_mean, per_seed)
    return slope


def test_empirical_ntk_converges_to_the_limit():
    """Two widths, a two-matrix ResNet with biases in the standard
    parameterization (the slow test below: every architecture and both
    parameterizations over five widths 64…1024)."""
    widths, n_seeds = (32, 512), 8
    per_seed, of_mean = _deviations("resnet", {"alpha": 0.7}, "standard", widths, n_seeds, depth=1)
    _check_convergence(per_seed, of_mean, widths, n_seeds, (-0.8, -0.3))


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("architecture, options", ARCHITECTURES, ids=IDS)
def test_empirical_ntk_converges_to_the_limit_slope(architecture, options, parameterization):
    """Deviation slope −1/2 over widths 64…1024."""
    widths, n_seeds = (64, 128, 256, 512, 1024), 12
    per_seed, of_mean = _deviations(architecture, options, parameterization, widths, n_seeds, depth=2)
    # measured: −0.48, −0.58 (ffnet ntk, standard), −0.47, −0.62 (resnet two), −0.60, −0.59 (resnet one)
    _check_convergence(per_seed, of_mean, widths, n_seeds, (-0.7, -0.3))


# ---------------------------------------------------------------- scenarios


def test_scenario_defaults_keep_the_cell_ids():
    """The new fields at their defaults, given or not, leave ids and network options as they were."""
    base = "network: {architecture: [ffnet, resnet], width: [8, 16], depth: 2}"
    explicit = "network: {architecture: [ffnet, resnet], width: [8, 16], depth: 2, W_std: 1, b_std: 0.0, parameterization: ntk}"
    cells, given = parse_scenario(base).cells(), parse_scenario(explicit).cells()
    assert [c.id for c in cells] == [c.id for c in given]
    for cell in cells:
        payload, options = cell.spec.id_payload()["network"], cell.spec.network.options()
        assert not {"W_std", "b_std", "parameterization"} & (set(payload) | set(options))
    assert "W_std" not in parse_scenario(base).grid() and "b_std" not in parse_scenario(base).grid()


def test_committed_results_keep_their_cell_ids():
    checked = 0
    for path in sorted(glob.glob(str(ROOT / "results" / "*.nc"))):
        with xr.open_dataset(path) as ds:
            attrs = dict(ds.attrs)
        scn = parse_scenario(attrs["scenario_yaml"], overrides=json.loads(attrs["scenario_overrides"]))
        if scn.kind != "finite_width":
            continue
        assert sorted({c.id for c in scn.cells()}) == sorted({c["cell_id"] for c in json.loads(attrs["cells"])}), path
        checked += 1
    assert checked > 0


def test_scenario_fields_reach_the_networks():
    scn = parse_scenario(
        "network: {architecture: resnet, width: 8, depth: 2, W_std: 1.5, b_std: [0.0, 0.5], parameterization: standard}"
    )
    assert scn.grid() == {"b_std": (0.0, 0.5), "width": (8,)}
    cells = scn.cells()
    assert len({c.id for c in cells}) == 2
    no_bias, bias = (c.spec.network.options() for c in cells)
    assert no_bias["W_std"] == bias["W_std"] == 1.5 and "b_std" not in no_bias and bias["b_std"] == 0.5
    assert no_bias["parameterization"] == bias["parameterization"] == "standard"
    assert cells[1].spec.id_payload()["network"]["b_std"] == 0.5
    network = nd.make_network("resnet", 3, 8, 2, key=jax.random.key(0), **bias)
    assert network.b_V.shape == (2, 8) and network.parameterization == "standard"


@pytest.mark.parametrize(
    "text, message",
    [
        ("network: {W_std: 0}", "network.W_std: got 0, allowed: greater than 0"),
        ("network: {b_std: -0.5}", "network.b_std: got -0.5, allowed: greater than or equal to 0"),
        ("network: {parameterization: NTK}", "network.parameterization: got 'NTK', allowed: 'ntk' or 'standard'"),
    ],
)
def test_scenario_rejects_bad_dense_options(text, message):
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text)


def test_scalar_coordinates_only_off_the_defaults():
    default, biased = xr.Dataset(), xr.Dataset()
    _add_scalar_coordinates(default, parse_scenario(""))
    _add_scalar_coordinates(biased, parse_scenario("network: {b_std: 0.5}"))
    assert "b_std" not in default.coords and "W_std" not in default.coords and "depth" in default.coords
    assert float(biased.b_std) == 0.5 and "W_std" not in biased.coords


@pytest.mark.slow
def test_a_cell_with_biases_trains_the_network_it_names():
    """One cell end to end, biases and the standard parameterization: K2 at
    t = 0 is the NTK of the network built with the same options and key."""
    scn = parse_scenario(
        "data: {n_train: 3, n_test: 1, d: 3}\n"
        "network: {architecture: resnet, width: 8, depth: 1, W_std: 1.2, b_std: 0.3, parameterization: standard}\n"
        "hierarchy: {orders: [2]}\ntime: {t1: 0.5, n_saves: 3}\noutput: {save_kernels: true}\n"
    )
    cell = scn.cells()[0]
    ds = run_cell(cell)
    data = make_data(cell.spec.data_mapping(), data_key(0))
    network = nd.make_network("resnet", 3, 8, 1, key=network_keys([0])[0], **cell.spec.network.options())
    k2 = kernel_tower(network, data.x_train, 2, data.x_eval)[0]
    np.testing.assert_allclose(ds.ntk_ref.isel(seed=0, time=0).values, k2, rtol=1e-10)
    assert float(ds.loss_ref.isel(seed=0, time=-1)) < float(ds.loss_ref.isel(seed=0, time=0))


def test_width_convergence_study_takes_the_dense_options():
    """The infinite-width study of finite networks against their limit: with
    biases, the deviation falls; unset, the options stay out of its arguments."""
    from nth_dynamics.theory.studies.width_convergence import WidthConvergenceStudy

    assert not {"W_std", "b_std"} & set(WidthConvergenceStudy(study="width_convergence").arguments())
    study = WidthConvergenceStudy(
        study="width_convergence", widths=(16, 256), seeds=4, n=4, activation="erf", W_std=1.3, b_std=0.4, bootstrap=10
    )
    assert study.options()["W_std"] == 1.3 and study.options()["b_std"] == 0.4
    ds = study.run()
    unit = np.full((1, 3), 1 / math.sqrt(3))
    limit = nd.limits.ntk(unit, None, "ffnet", 1, activation="erf", W_std=1.3, b_std=0.4)
    np.testing.assert_allclose(ds.ntk_limit.values[0, 0], limit[0, 0], rtol=1e-12)  # unit points share the diagonal
    assert float(ds.mean_deviation[1]) < 0.5 * float(ds.mean_deviation[0])
