"""FunctionModel: a model given as apply_fn(params, x) → scalar goes through
the engine exactly as the equivalent Equinox module does.

Every model here is the project's tanh/erf FFNet (depth 1) written another
way — by hand, as a neural-tangents-style stax pair, as Flax linen and nnx
modules — with the FFNet's own weights, so each tower is compared with the
FFNet's (outer-product path, an independent computation) to 1e-12.
"""

import functools
import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nth_dynamics as nd
from nth_dynamics.engine.function_model import activation_count, cast_floating
from nth_dynamics.engine.kernels import default_batch_size, parameter_count
from nth_dynamics.engine.networks import stack_ensemble

D, WIDTH = 3, 8
ORDERS = [3, pytest.param(4, marks=pytest.mark.slow)]
"""Towers to K3 by default; to K4 under -m slow (compiling K4 takes 15–40 s on two shared cores)."""


def ffnet(activation="tanh", seed=1):
    return nd.make_network("ffnet", D, WIDTH, 1, key=jax.random.key(seed), activation=activation)


def ffnet_apply(params, x):
    """The FFNet of depth 1 by hand: h0 = W0 x, h1 = W1 σ(h0)/√m, f = a·σ(h1)/√m."""
    scale = 1 / math.sqrt(params["a"].shape[0])
    h = params["W0"] @ x
    for W in params["W"]:
        h = scale * W @ jnp.tanh(h)
    return scale * params["a"] @ jnp.tanh(h)


def handwritten(net):
    return nd.FunctionModel(ffnet_apply, {"W0": net.W0, "W": net.W, "a": net.a})


def assert_towers_equal(tower, expected):
    assert len(tower) == len(expected)
    for r, (got, want) in enumerate(zip(tower, expected), start=2):
        assert got.shape == want.shape, r
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, float(jnp.abs(want).max())))


def sphere_points():
    x = jax.random.normal(jax.random.key(7), (6, D))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    x_train, x_eval = x[:4], x
    return x_train, jnp.sin(2 * x_train[:, 0]) + x_train[:, 1], x_eval


@pytest.fixture(scope="module")
def points():
    return sphere_points()


@functools.cache
def ffnet_tower(order, activation="tanh"):
    """The FFNet's own tower (outer-product path) on the test points, computed once per order."""
    x_train, _, x_eval = sphere_points()
    return nd.kernel_tower(ffnet(activation), x_train, order, x_eval)


@pytest.mark.parametrize("order", ORDERS)
def test_handwritten_tower_equals_ffnet(points, order):
    x_train, _, x_eval = points
    model = handwritten(ffnet())
    assert float(model(x_train[0])) == pytest.approx(float(ffnet()(x_train[0])), abs=1e-15)
    assert_towers_equal(nd.kernel_tower(model, x_train, order, x_eval), ffnet_tower(order))


@pytest.mark.parametrize("order", ORDERS)
def test_projected_tower_equals_ffnet(points, order):
    x_train, _, x_eval = points
    basis = jnp.linalg.qr(jax.random.normal(jax.random.key(3), (4, 2)))[0]
    expected = nd.kernel_tower(ffnet(), x_train, order, x_eval, basis=basis)
    assert_towers_equal(nd.kernel_tower(handwritten(ffnet()), x_train, order, x_eval, basis=basis), expected)


def stax_dense(out_dim, W_std=1.0):
    """neural-tangents' stax.Dense in the NTK parametrisation, no bias:
    y = W_std / √fan_in · x W, W of shape (fan_in, out), entries N(0, 1)."""

    def init_fn(key, input_shape):
        return input_shape[:-1] + (out_dim,), jax.random.normal(key, (input_shape[-1], out_dim))

    def apply_fn(W, x):
        return W_std / math.sqrt(x.shape[-1]) * x @ W

    return init_fn, apply_fn


def stax_elementwise(fn):
    return (lambda key, input_shape: (input_shape, ())), (lambda params, x: fn(x))


def stax_serial(*layers):
    """stax.serial: (init_fn, apply_fn) of the layers in turn, params a list."""
    inits, applies = zip(*layers)

    def init_fn(key, input_shape):
        params = []
        for init, layer_key in zip(inits, jax.random.split(key, len(inits))):
            input_shape, layer_params = init(layer_key, input_shape)
            params.append(layer_params)
        return input_shape, params

    def apply_fn(params, x):
        for apply, layer_params in zip(applies, params):
            x = apply(layer_params, x)
        return x

    return init_fn, apply_fn


@pytest.mark.parametrize("order", ORDERS)
def test_stax_pair_tower_equals_ffnet(points, order):
    """A stax Dense–Erf network on batches (N, d) → (N, 1), wrapped for one
    input; W_std = √d on the first layer matches the FFNet's W0 x (no 1/√d)."""
    x_train, _, x_eval = points
    erf = jax.scipy.special.erf
    init_fn, apply_fn = stax_serial(
        stax_dense(WIDTH, W_std=math.sqrt(D)), stax_elementwise(erf), stax_dense(WIDTH), stax_elementwise(erf),
        stax_dense(1),
    )
    out_shape, params = init_fn(jax.random.key(0), (-1, D))
    assert out_shape == (-1, 1)
    net = ffnet("erf")
    params = [net.W0.T, (), net.W[0].T, (), net.a[:, None]]  # the FFNet's weights, stax's (fan_in, out) layout
    model = nd.FunctionModel(lambda p, x: apply_fn(p, x[None])[0, 0], params)
    assert_towers_equal(nd.kernel_tower(model, x_train, order, x_eval), ffnet_tower(order, "erf"))


@pytest.mark.parametrize("order", ORDERS)
def test_flax_linen_tower_equals_ffnet(points, order):
    nn = pytest.importorskip("flax.linen")
    x_train, _, x_eval = points

    class FFNet(nn.Module):
        width: int

        @nn.compact
        def __call__(self, x):
            scale = 1 / math.sqrt(self.width)
            h = nn.Dense(self.width, use_bias=False, name="W0")(x)
            h = scale * nn.Dense(self.width, use_bias=False, name="W1")(jnp.tanh(h))
            return scale * nn.Dense(1, use_bias=False, name="a")(jnp.tanh(h))

    module = FFNet(WIDTH)
    variables = module.init(jax.random.key(0), x_train[0])
    assert jax.tree.leaves(variables)[0].dtype == jnp.float32  # Flax's default, cast by from_linen
    net = ffnet()
    variables = {"params": {"W0": {"kernel": net.W0.T}, "W1": {"kernel": net.W[0].T}, "a": {"kernel": net.a[:, None]}}}
    model = nd.FunctionModel.from_linen(module, variables)
    assert model.params["a"]["kernel"].dtype == jnp.float64
    assert_towers_equal(nd.kernel_tower(model, x_train, order, x_eval), ffnet_tower(order))
    # models of one module share compilations: their apply_fn are equal
    assert nd.FunctionModel.from_linen(FFNet(WIDTH), variables).apply_fn == model.apply_fn


@pytest.mark.parametrize("order", ORDERS)
def test_flax_nnx_tower_equals_ffnet(points, order):
    nnx = pytest.importorskip("flax.nnx")
    x_train, _, x_eval = points

    class FFNet(nnx.Module):
        def __init__(self, width, rngs, dtype):
            self.W0 = nnx.Linear(D, width, use_bias=False, rngs=rngs, param_dtype=dtype)
            self.W1 = nnx.Linear(width, width, use_bias=False, rngs=rngs, param_dtype=dtype)
            self.a = nnx.Linear(width, 1, use_bias=False, rngs=rngs, param_dtype=dtype)
            self.scale = 1 / math.sqrt(width)

        def __call__(self, x):
            h = self.scale * self.W1(jnp.tanh(self.W0(x)))
            return self.scale * self.a(jnp.tanh(h))

    # Flax's float32 default is cast to float64
    assert nd.FunctionModel.from_nnx(FFNet(WIDTH, nnx.Rngs(0), jnp.float32)).params[0]["a"]["kernel"].dtype == jnp.float64
    module = FFNet(WIDTH, nnx.Rngs(0), jnp.float64)  # float64 variables, to hold the FFNet's weights exactly
    net = ffnet()
    module.W0.kernel[...], module.W1.kernel[...], module.a.kernel[...] = net.W0.T, net.W[0].T, net.a[:, None]
    model = nd.FunctionModel.from_nnx(module)
    assert_towers_equal(nd.kernel_tower(model, x_train, order, x_eval), ffnet_tower(order))


def test_gradient_flow_equals_ffnet(points):
    x_train, y_train, x_eval = points
    net, model = ffnet(), handwritten(ffnet())
    ts = jnp.linspace(0.0, 0.5, 3)
    expected, got = (nd.gradient_flow(m, x_train, y_train, ts, x_eval, rtol=1e-12, atol=1e-12) for m in (net, model))
    np.testing.assert_allclose(got.f, expected.f, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.ntk, expected.ntk, rtol=0, atol=1e-11)
    assert float(jnp.abs(got.f[-1] - got.f[0]).max()) > 1e-2  # it trained


def test_gradient_descent_equals_ffnet(points):
    x_train, y_train, x_eval = points
    net, model = ffnet(), handwritten(ffnet())
    expected, got = (nd.gradient_descent(m, x_train, y_train, 0.1, 4, 2, x_eval) for m in (net, model))
    np.testing.assert_allclose(got.f, expected.f, rtol=0, atol=1e-13)
    np.testing.assert_allclose(got.ntk, expected.ntk, rtol=0, atol=1e-12)


def test_ensemble_under_filter_vmap(points):
    """An ensemble of FunctionModels (one closure per member, as a factory
    makes them) is one model with a leading seed axis, like make_ensemble's."""
    x_train, _, _ = points

    def member(seed):
        net = ffnet(seed=seed)
        return nd.FunctionModel(lambda p, x: ffnet_apply(p, x), {"W0": net.W0, "W": net.W, "a": net.a})

    ensemble = stack_ensemble([member(s) for s in (1, 2, 3)])
    assert ensemble.params["W"].shape == (3, 1, WIDTH, WIDTH)
    towers = eqx.filter_vmap(lambda m: nd.kernel_tower(m, x_train, 3))(ensemble)
    for i, seed in enumerate((1, 2, 3)):
        for got, want in zip(towers, nd.kernel_tower(ffnet(seed=seed), x_train, 3)):
            np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_reduced_hierarchy_equals_ffnet(points):
    x_train, y_train, x_eval = points
    ts = jnp.linspace(0.0, 1.0, 3)
    kwargs = {"orders": (2, 3), "x_eval": x_eval, "tol": 1e-10, "rtol": 1e-10, "atol": 1e-10}
    expected = nd.reduced_hierarchy(ffnet(), x_train, y_train, ts, **kwargs)
    got = nd.reduced_hierarchy(handwritten(ffnet()), x_train, y_train, ts, **kwargs)
    assert got.rank == expected.rank
    for a, b in zip(got.trajectories, expected.trajectories):
        np.testing.assert_allclose(a.f, b.f, rtol=0, atol=1e-10)


def test_integer_and_python_leaves_are_not_trained(points):
    """Only floating-point arrays are trained: an integer array and a Python
    float in params stay fixed and change no kernel."""
    x_train, y_train, _ = points
    net = ffnet()

    def apply(p, x):
        return ffnet_apply(p, x) * p["scale"] + 0 * p["steps"].sum()

    params = {"W0": net.W0, "W": net.W, "a": net.a, "steps": jnp.arange(3), "scale": 1.0}
    model = nd.FunctionModel(apply, params)
    assert parameter_count(model) == parameter_count(handwritten(net)) == WIDTH * D + WIDTH**2 + WIDTH
    (k2,) = nd.kernel_tower(model, x_train, 2)
    (expected,) = nd.kernel_tower(net, x_train, 2)
    np.testing.assert_allclose(k2, expected, rtol=0, atol=1e-12)
    trained = nd.gradient_descent(model, x_train, y_train, 0.1, 2, 1)
    np.testing.assert_allclose(trained.f, nd.gradient_descent(net, x_train, y_train, 0.1, 2, 1).f, rtol=0, atol=1e-13)


def test_activation_count_counts_per_point_intermediates():
    """Every intermediate that depends on x, none that depends on the
    parameters alone: sum(tanh((2p) @ x)) computes m + m + 1 per point."""
    m = 5
    model = nd.FunctionModel(lambda p, x: jnp.sum(jnp.tanh((2 * p) @ x)), jnp.ones((m, D)))
    assert activation_count(model, jnp.ones(D)) == 2 * m + 1
    # a scan body counts once per step: each hidden layer of the project's FFNet adds its
    # pre-activation, activation and their two scaled copies, 4m, above the FFNet's own rule 2m
    counts = {}
    for depth in (0, 1, 3):
        shapes = jax.eval_shape(lambda key, depth=depth: nd.make_network("ffnet", D, WIDTH, depth, key=key),
                                jax.random.key(0))
        counts[depth] = activation_count(shapes, jax.ShapeDtypeStruct((D,), jnp.float64))
    assert counts[0] >= 4 * WIDTH + 1
    assert counts[1] - counts[0] == 4 * WIDTH and counts[3] - counts[0] == 3 * 4 * WIDTH
    resnet = nd.make_network("resnet", D, WIDTH, 2, key=jax.random.key(0))
    assert activation_count(resnet, jnp.ones(D)) >= 2 * WIDTH * 3


def test_memory_estimate_counts_the_params(points):
    _, _, x_eval = points
    model = handwritten(ffnet())
    n_params = WIDTH * D + WIDTH**2 + WIDTH
    assert parameter_count(model) == n_params
    batch = default_batch_size(model, None, x_eval.shape[0], 4, 4, budget=10**12)
    assert batch == 4
    # a budget below the generic estimate of every chunk gives chunks of one direction
    assert default_batch_size(model, None, x_eval.shape[0], 4, 4, budget=1) == 1
    assert nd.tower_bytes(6, 4, 4, n_params, structured=False, batch_size=1) < nd.tower_bytes(
        6, 4, 4, n_params, structured=False, batch_size=4
    )


def test_low_precision_params_are_warned_about_and_cast():
    params = {"w": jnp.ones(3, jnp.float32)}
    with pytest.warns(UserWarning, match=r"params\['w'\] is float32 while JAX runs in float64"):
        nd.FunctionModel(lambda p, x: p["w"] @ x, params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = nd.FunctionModel(lambda p, x: p["w"] @ x, cast_floating(params))
    assert model.params["w"].dtype == jnp.float64


def test_bad_models_are_refused(without_shape_checks):
    with pytest.raises(TypeError, match="apply_fn must be a callable"):
        nd.FunctionModel("not a function", {"w": jnp.ones(3)})
    class Unhashable:
        __hash__ = None

        def __call__(self, params, x):
            return params @ x

    with pytest.raises(TypeError, match="apply_fn must be hashable"):
        nd.FunctionModel(Unhashable(), jnp.ones(3))
    with pytest.raises(ValueError, match="params must hold at least one floating-point array"):
        nd.FunctionModel(lambda p, x: x.sum(), {"steps": jnp.arange(3)})
    vector = nd.FunctionModel(lambda p, x: p * x, jnp.ones(3))
    with pytest.raises(ValueError, match=r"apply_fn must map one input to a scalar, got an output of shape \(3,\)"):
        vector(jnp.ones(3))
    with pytest.raises(ValueError, match="apply_fn must map one input to a scalar"):
        nd.kernel_tower(vector, jnp.ones((2, 3)), 2)


def test_flax_state_besides_params_is_refused():
    nn = pytest.importorskip("flax.linen")
    nnx = pytest.importorskip("flax.nnx")

    class Normed(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.BatchNorm(use_running_average=True)(x))

    variables = Normed().init(jax.random.key(0), jnp.ones(D))
    with pytest.raises(ValueError, match=r"collections \['batch_stats'\] besides 'params'"):
        nd.FunctionModel.from_linen(Normed(), variables)
    with pytest.raises(ValueError, match="with a 'params' collection"):
        nd.FunctionModel.from_linen(Normed(), {"batch_stats": variables["batch_stats"]})
    with pytest.raises(ValueError, match="floating-point state besides nnx.Param"):
        nd.FunctionModel.from_nnx(nnx.BatchNorm(D, rngs=nnx.Rngs(0)))
