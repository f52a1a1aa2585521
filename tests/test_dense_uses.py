"""The generic K2 with dense leaves as outer products (engine/structure.py):
the same kernel as the plain Gram of per-point gradients and as an
independent ``jax.jacobian``, to 1e-12 in float64, for models whose leaves
match the rules, partly match them, or match none (weight sharing, a scaled
weight, a trained scalar, a program inside ``jit``); and the record of which
leaves were taken as outer products, so that a silent fallback is seen."""

import importlib.util
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nth_dynamics as nd
from nth_dynamics.engine import kernels, structure

D, WIDTH = 3, 6


def keys(count, seed=0):
    return jax.random.split(jax.random.key(seed), count)


class MatrixVector(eqx.Module):
    """A tanh MLP written W @ x, with a bias on every layer (a scalar one last)."""

    W0: jax.Array
    b0: jax.Array
    W1: jax.Array
    b1: jax.Array
    a: jax.Array
    b_a: jax.Array

    def __init__(self, seed=0):
        k = keys(6, seed)
        self.W0 = jax.random.normal(k[0], (WIDTH, D))
        self.b0 = jax.random.normal(k[1], (WIDTH,))
        self.W1 = jax.random.normal(k[2], (WIDTH, WIDTH))
        self.b1 = jax.random.normal(k[3], (WIDTH,))
        self.a = jax.random.normal(k[4], (WIDTH,))
        self.b_a = jax.random.normal(k[5], ())

    def __call__(self, x):
        h = jnp.tanh(self.W0 @ x + self.b0)
        h = jnp.tanh(self.W1 @ h / math.sqrt(WIDTH) + self.b1)
        return self.a @ h / math.sqrt(WIDTH) + self.b_a


class VectorMatrix(eqx.Module):
    """The same without biases, written x @ W with (fan_in, out) matrices and a (m, 1) readout."""

    W0: jax.Array
    W1: jax.Array
    a: jax.Array

    def __init__(self, seed=0):
        k = keys(3, seed)
        self.W0 = jax.random.normal(k[0], (D, WIDTH))
        self.W1 = jax.random.normal(k[1], (WIDTH, WIDTH))
        self.a = jax.random.normal(k[2], (WIDTH, 1))

    def __call__(self, x):
        h = jax.scipy.special.erf(x @ self.W0)
        h = jax.scipy.special.erf(h @ self.W1 / math.sqrt(WIDTH))
        return (h @ self.a)[0] / math.sqrt(WIDTH)


class Shared(eqx.Module):
    """W used twice (weight sharing): its gradient is a sum of two outer products."""

    V: jax.Array
    W: jax.Array
    a: jax.Array

    def __init__(self, seed=0):
        k = keys(3, seed)
        self.V = jax.random.normal(k[0], (WIDTH, D))
        self.W = jax.random.normal(k[1], (WIDTH, WIDTH)) / math.sqrt(WIDTH)
        self.a = jax.random.normal(k[2], (WIDTH,))

    def __call__(self, x):
        h = jnp.tanh(self.V @ x)
        h = jnp.tanh(self.W @ jnp.tanh(self.W @ h))
        return self.a @ h


class Scaled(eqx.Module):
    """W0 scaled before its contraction, and a trained scalar scale of the output."""

    W0: jax.Array
    a: jax.Array
    s: jax.Array

    def __init__(self, seed=0):
        k = keys(3, seed)
        self.W0 = jax.random.normal(k[0], (WIDTH, D))
        self.a = jax.random.normal(k[1], (WIDTH,))
        self.s = jnp.asarray(1.3)

    def __call__(self, x):
        return self.s * (self.a @ jnp.sin((0.7 * self.W0) @ x))


def stax_like(params, x):
    """A stax-style apply function on a batch of one point, x[None] @ W, biases scaled by b_std."""
    h = x[None]
    for W, b in params[:-1]:
        h = jnp.tanh(h @ W / math.sqrt(W.shape[0]) + 0.1 * b)
    W, b = params[-1]
    return (h @ W / math.sqrt(W.shape[0]) + b)[0, 0]


def stax_params(seed=0):
    k = keys(6, seed)
    shapes = [(D, WIDTH), (WIDTH, WIDTH), (WIDTH, 1)]
    return [(jax.random.normal(k[2 * i], s), jax.random.normal(k[2 * i + 1], s[1:])) for i, s in enumerate(shapes)]


def jitted_apply(params, x):
    return _jitted(params, x)


@jax.jit
def _jitted(params, x):
    return params["a"] @ jnp.tanh(params["W"] @ x)


def linen_ffnet():
    import flax.linen as nn

    class FFNet(nn.Module):  # tests/test_function_model.py's, with biases on the hidden layers
        width: int

        @nn.compact
        def __call__(self, x):
            scale = 1 / math.sqrt(self.width)
            h = nn.Dense(self.width, name="W0")(x)
            h = scale * nn.Dense(self.width, name="W1")(jnp.tanh(h))
            return scale * nn.Dense(1, use_bias=False, name="a")(jnp.tanh(h))[0]

    module = FFNet(WIDTH)
    return nd.FunctionModel.from_linen(module, module.init(jax.random.key(3), jnp.ones(D)))


def nnx_ffnet():
    from flax import nnx

    class FFNet(nnx.Module):
        def __init__(self, rngs):
            self.W0 = nnx.Linear(D, WIDTH, rngs=rngs, param_dtype=jnp.float64)
            self.a = nnx.Linear(WIDTH, 1, use_bias=False, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.a(jnp.tanh(self.W0(x)))[0]

    return nd.FunctionModel.from_nnx(FFNet(nnx.Rngs(5)))


def models():
    """(name, model, filter_spec, the leaves expected as outer products)."""
    mlp = eqx.nn.MLP(D, "scalar", WIDTH, 2, activation=jax.nn.relu, key=jax.random.key(4))
    frozen = jax.tree_util.tree_map(lambda _: True, MatrixVector())
    frozen = eqx.tree_at(lambda m: m.W1, frozen, False)
    return [
        ("W @ x with biases", MatrixVector(), None, {".W0", ".b0", ".W1", ".b1", ".a", ".b_a"}),
        ("x @ W", VectorMatrix(), None, {".W0", ".W1", ".a"}),
        ("W1 frozen", MatrixVector(), frozen, {".W0", ".b0", ".b1", ".a", ".b_a"}),
        # eqx.nn.MLP on the generic path (a filter_spec; unfiltered it takes the structured one)
        ("eqx.nn.MLP", mlp, eqx.is_inexact_array,
         {f".layers[{i}].{name}" for i in range(3) for name in ("weight", "bias")}),
        ("stax-like FunctionModel", nd.FunctionModel(stax_like, stax_params()), None,
         {".params[0][0]", ".params[1][0]", ".params[2][0]"}),  # scaled biases; the last one broadcast to (1, 1)
        ("weight sharing", Shared(), None, {".V", ".a"}),
        ("scaled weight, trained scalar", Scaled(), None, {".a"}),
        ("inside jit", nd.FunctionModel(jitted_apply, {"a": jnp.ones(WIDTH), "W": jnp.ones((WIDTH, D))}), None,
         set()),
    ] + ([
        ("Flax linen", linen_ffnet(), None,
         {".params['W0']['kernel']", ".params['W0']['bias']",
          ".params['W1']['kernel']", ".params['W1']['bias']",
          ".params['a']['kernel']"}),
        ("Flax nnx", nnx_ffnet(), None,
         {".params[0]['W0']['kernel'].value", ".params[0]['W0']['bias'].value", ".params[0]['a']['kernel'].value"}),
    ] if importlib.util.find_spec("flax") else [])  # the flax extra


MODELS = models()


def points():
    x = jax.random.normal(jax.random.key(11), (7, D))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    return x[:5], x


def jacobian_gram(model, filter_spec, x_eval, x_train):
    """K2 as the product of two independent full Jacobians."""
    params, static = eqx.partition(model, eqx.is_inexact_array if filter_spec is None else filter_spec)

    def outputs(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    first, second = jax.jacobian(outputs)(params, x_eval), jax.jacobian(outputs)(params, x_train)
    return sum(u.reshape(len(x_eval), -1) @ v.reshape(len(x_train), -1).T
               for u, v in zip(jax.tree.leaves(first), jax.tree.leaves(second)))


def plain_tower(model, x_train, order, x_eval, filter_spec, monkeypatch):
    """The generic tower with no leaf read as an outer product."""
    with monkeypatch.context() as patch:
        patch.setattr(structure, "find", lambda *args, **kwargs: None)
        kernels._compiled.clear_cache()
        tower = nd.kernel_tower(model, x_train, order, x_eval, filter_spec=filter_spec)
    kernels._compiled.clear_cache()
    return tower


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, float(jnp.abs(want).max())))


@pytest.mark.parametrize(("name", "model", "filter_spec", "expected"), MODELS, ids=[m[0] for m in MODELS])
def test_k2_equals_the_plain_gram_and_the_jacobian(name, model, filter_spec, expected, monkeypatch):
    x_train, x_eval = points()
    assert set(kernels.dense_leaves(model, x_train, filter_spec)) == expected
    (k2,) = nd.kernel_tower(model, x_train, 2, x_eval, filter_spec=filter_spec)
    close(k2, jacobian_gram(model, filter_spec, x_eval, x_train))
    (plain,) = plain_tower(model, x_train, 2, x_eval, filter_spec, monkeypatch)
    close(k2, plain)
    (on_train,) = nd.kernel_tower(model, x_train, 2, filter_spec=filter_spec)
    close(on_train, k2[: len(x_train)])


def test_the_compiled_tower_takes_the_outer_products(monkeypatch):
    """Not only dense_leaves: the compiled K2 is made of DenseUses.gram, and
    with chunked evaluation points and higher orders the tower is unchanged."""
    x_train, x_eval = points()
    model = MatrixVector(seed=5)
    grams = []
    original = structure.DenseUses.gram

    def spied(self, first, second):
        grams.append(self.structured)
        return original(self, first, second)

    with monkeypatch.context() as patch:
        patch.setattr(structure.DenseUses, "gram", spied)
        kernels._compiled.clear_cache()
        tower = nd.kernel_tower(model, x_train, 3, x_eval)
        chunked = nd.kernel_tower(model, x_train, 3, x_eval, memory_budget=1)  # one evaluation point at a time
    kernels._compiled.clear_cache()
    assert grams and all(len(leaves) == 6 for leaves in grams)
    plain = plain_tower(model, x_train, 3, x_eval, None, monkeypatch)
    for got, chunk, want in zip(tower, chunked, plain):
        close(got, want)
        close(chunk, want)


def test_a_model_read_as_no_dense_structure_compiles_the_plain_gram():
    x_train, _ = points()
    assert structure.find(lambda leaves, x: jnp.sum(leaves[0] * x), [jnp.ones(D)], x_train[0]) is None
    assert structure.find(lambda leaves, x: leaves[0] @ x, [jnp.ones(D)], x_train[0]).structured == {0}
    # a non-scalar output is not read at all
    assert structure.find(lambda leaves, x: leaves[0] @ jnp.outer(x, x), [jnp.ones(D)], x_train[0]) is None


def test_an_ensemble_under_filter_vmap():
    x_train, _ = points()
    ensemble = eqx.filter_vmap(lambda seed: VectorMatrix(seed))(jnp.arange(2))
    towers = eqx.filter_vmap(lambda m: nd.kernel_tower(m, x_train, 2)[0])(ensemble)
    for seed in range(2):
        close(towers[seed], jacobian_gram(VectorMatrix(seed), None, x_train, x_train))
