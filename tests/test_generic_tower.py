"""The generic tower (K2 as a Gram of per-point gradients, JVPs over it) against
the nested-JVP tower it replaced, and the structured path of Equinox dense
models (``eqx.nn.MLP``) against the generic tower (docs/theory.md §2, §8)."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import nth_dynamics as nd
from nth_dynamics.engine.basis import residual_basis
from nth_dynamics.engine.dense import DenseStack, dense_stack, reproduces
from nth_dynamics.engine.kernels import _plan, _tower, structured_path, tower_bytes
from nth_dynamics.engine.networks import trained_filter


def nested_jvp_tower(model, x_train, order, x_eval, basis=None):
    """The generic tower as it was before the Gram K2 (kept here as the
    independent reference): K2 = one JVP of f(x_eval) along each g_b, every
    higher order one more JVP level; with a basis, the combined directions
    G_j pulled back through one VJP of f on the training points."""
    params, static = eqx.partition(model, trained_filter(model))

    def f(p, x):
        return eqx.combine(p, static)(x)

    def f_eval(p):
        return jax.vmap(f, in_axes=(None, 0))(p, x_eval)

    def f_train(p):
        return jax.vmap(f, in_axes=(None, 0))(p, x_train)

    tangent = jax.grad(f)

    def next_order(kernel):
        def kernel_up(p):
            stacked = jax.vmap(lambda x_b: jax.jvp(kernel, (p,), (tangent(p, x_b),))[1])(x_train)
            return jnp.moveaxis(stacked, 0, -1)

        return kernel_up

    def next_projected_order(kernel):
        def kernel_up(p):
            _, pullback = jax.vjp(f_train, p)
            stacked = jax.vmap(lambda w: jax.jvp(kernel, (p,), pullback(w))[1])(basis.T)
            return jnp.moveaxis(stacked, 0, -1)

        return kernel_up

    kernels = [f_eval]
    for r in range(2, order + 1):
        kernels.append(next_order(kernels[-1]) if basis is None or r == 2 else next_projected_order(kernels[-1]))
    return jax.jit(lambda p: tuple(kernel(p) for kernel in kernels[1:]))(params)


def relative_error(a, b):
    scale = float(jnp.max(jnp.abs(b)))
    return float(jnp.max(jnp.abs(a - b))) / (scale if scale > 0 else 1.0)  # K3 of a linear model is 0


class TwoLayer(eqx.Module):
    """A hand-written module (not a dense stack): the generic path."""

    W: jax.Array
    c: jax.Array
    a: jax.Array

    def __init__(self, d, width, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.W = jax.random.normal(k1, (width, d))
        self.c = jax.random.normal(k2, (width,))
        self.a = jax.random.normal(k3, (width,))

    def __call__(self, x):
        return jnp.dot(self.a, jnp.tanh(self.W @ x + self.c)) / jnp.sqrt(self.a.shape[0])


@pytest.fixture(scope="module")
def basis(small_problem):
    x_train = small_problem[0]
    residuals = jax.random.normal(jax.random.key(5), (4, len(x_train)))
    return residual_basis(residuals, rank=2)


@pytest.mark.parametrize("projected", [False, True])
def test_gram_tower_equals_the_nested_jvp_tower(projected, small_problem, basis):
    """Orders 2–4 with x_eval ≠ x_train, full and projected."""
    x_train, _, x_eval = small_problem
    model = TwoLayer(3, 12, jax.random.key(2))
    V = basis if projected else None
    tower = nd.kernel_tower(model, x_train, 4, x_eval, basis=V)
    reference = nested_jvp_tower(model, x_train, 4, x_eval, V)
    for kernel, expected in zip(tower, reference, strict=True):
        assert kernel.shape == expected.shape
        assert relative_error(kernel, expected) <= 1e-12


def test_gram_tower_of_a_network_as_a_plain_module(small_problem):
    """A FFNet's own trained set, passed as a filter, forces the generic path;
    x_eval defaults to the training points (their gradients are shared)."""
    x_train = small_problem[0]
    model = nd.FFNet(3, 10, 1, key=jax.random.key(2), activation="softplus", trained=["hidden", "readout"])
    spec = trained_filter(model)
    assert not structured_path(model, spec)
    tower = nd.kernel_tower(model, x_train, 3, filter_spec=spec)
    reference = nested_jvp_tower(model, x_train, 3, x_train)
    for kernel, expected in zip(tower, reference, strict=True):
        assert relative_error(kernel, expected) <= 1e-12


class Labelled(eqx.Module):
    """TwoLayer with an integer array leaf (frozen, not differentiated) and
    a non-array leaf (part of the compilation key)."""

    inner: TwoLayer
    steps: jax.Array
    notes: object

    def __call__(self, x):
        return self.inner(x) + 0.0 * jnp.sum(self.steps)


class Unhashable:
    __hash__ = None


def test_the_compiled_tower_keys_on_structure_not_values(small_problem):
    """Same structure, other weights: no new compilation and the new weights'
    tower (the key must hold no array values); frozen integer leaves stay
    out of the gradients; an unhashable leaf is refused in one line."""
    from nth_dynamics.engine.kernels import _compiled

    x_train, _, x_eval = small_problem
    first, second = TwoLayer(3, 12, jax.random.key(2)), TwoLayer(3, 12, jax.random.key(3))
    nd.kernel_tower(first, x_train, 3, x_eval)
    compiled = _compiled._cache_size()
    tower = nd.kernel_tower(second, x_train, 3, x_eval)
    assert _compiled._cache_size() == compiled
    for kernel, expected in zip(tower, nested_jvp_tower(second, x_train, 3, x_eval), strict=True):
        assert relative_error(kernel, expected) <= 1e-12
    labelled = Labelled(second, jnp.arange(3), "a hashable note")
    for kernel, expected in zip(nd.kernel_tower(labelled, x_train, 3, x_eval), tower, strict=True):
        assert relative_error(kernel, expected) <= 1e-12
    with pytest.raises(ValueError, match="Labelled has a non-array leaf of type Unhashable"):
        nd.kernel_tower(Labelled(second, jnp.arange(3), Unhashable()), x_train, 3, x_eval)


def test_chunked_points_and_directions_do_not_change_the_generic_tower(small_problem):
    x_train, _, x_eval = small_problem
    model = TwoLayer(3, 12, jax.random.key(4))
    params, static = eqx.partition(model, trained_filter(model))
    whole = _tower(params, static, x_train, x_eval, 3, (len(x_train), None, len(x_eval)), None)
    chunked = _tower(params, static, x_train, x_eval, 3, (1, None, 2), None)  # 2 divides N_eval = 8
    for kernel, expected in zip(chunked, whole):
        assert relative_error(kernel, expected) <= 1e-12


def test_a_tight_budget_chunks_the_evaluation_points():
    """When no direction chunk fits with every evaluation point's gradient,
    the plan chunks the evaluation points (a divisor of N_eval)."""
    model = TwoLayer(3, 200, jax.random.key(0))
    n_params = 200 * 5
    spec = trained_filter(model)
    whole = tower_bytes(64, 4, 3, n_params, batch_size=1, structured=False)
    budget = tower_bytes(64, 4, 3, n_params, batch_size=1, structured=False, point_chunk=16)
    assert budget < whole
    assert _plan(model, spec, 64, 4, 3, budget, rank=None, structured=False) == (1, 16)
    assert _plan(model, spec, 64, 4, 3, 10 * whole, rank=None, structured=False) == (4, 64)


MLPS = {
    "depth 2 tanh, biases": {"width_size": 9, "depth": 2, "activation": jnp.tanh},
    "depth 3 softplus, no biases": {"width_size": 7, "depth": 3, "activation": jax.nn.softplus, "use_bias": False,
                                        "use_final_bias": False},
    "depth 1 gelu, hidden biases only, tanh final": {"width_size": 8, "depth": 1, "activation": jax.nn.gelu,
                                                         "use_final_bias": False, "final_activation": jnp.tanh},
    "depth 3 scanned": {"width_size": 6, "depth": 3, "activation": jnp.tanh, "scan": True},
    "depth 0": {"width_size": 5, "depth": 0, "final_activation": jnp.tanh},
}


def make_mlp(name, key=None):
    key = jax.random.key(11) if key is None else key
    return eqx.nn.MLP(3, "scalar", key=key, **MLPS[name])


@pytest.mark.parametrize("name", list(MLPS))
def test_an_mlp_is_read_as_its_dense_stack(name, small_problem):
    x_train = small_problem[0]
    mlp = make_mlp(name)
    stack = dense_stack(mlp)
    assert isinstance(stack, DenseStack) and structured_path(mlp, None)
    assert len(stack.layers) == mlp.depth + 1
    assert reproduces(stack, mlp, x_train)
    assert relative_error(jax.vmap(stack)(x_train), jax.vmap(mlp)(x_train)) <= 1e-14


@pytest.mark.parametrize(
    "name, order, projected",
    [
        ("depth 2 tanh, biases", 4, False),
        ("depth 1 gelu, hidden biases only, tanh final", 4, True),
        ("depth 3 softplus, no biases", 3, False),
        ("depth 3 scanned", 3, False),
        ("depth 0", 3, False),
        pytest.param("depth 3 softplus, no biases", 4, True, marks=pytest.mark.slow),
        pytest.param("depth 2 tanh, biases", 4, True, marks=pytest.mark.slow),
    ],
)
def test_structured_mlp_tower_equals_its_generic_tower(name, order, projected, small_problem, basis):
    """Orders 2 to ``order``, x_eval ≠ x_train, with and without biases,
    full and projected; the generic path forced by the model's own filter."""
    x_train, _, x_eval = small_problem
    mlp = make_mlp(name)
    V = basis if projected else None
    spec = trained_filter(mlp)  # every inexact leaf: the same trained set, the generic path
    structured = nd.kernel_tower(mlp, x_train, order, x_eval, basis=V)
    generic = nd.kernel_tower(mlp, x_train, order, x_eval, basis=V, filter_spec=spec)
    for fast, plain in zip(structured, generic, strict=True):
        assert fast.shape == plain.shape
        assert relative_error(fast, plain) <= 1e-12


def test_structured_mlp_tower_on_the_training_points(small_problem):
    x_train = small_problem[0]
    mlp = make_mlp("depth 2 tanh, biases")
    structured = nd.kernel_tower(mlp, x_train, 3)
    generic = nested_jvp_tower(mlp, x_train, 3, x_train)
    for fast, plain in zip(structured, generic, strict=True):
        assert relative_error(fast, plain) <= 1e-12


def test_structured_mlp_tower_with_chunked_directions(small_problem):
    x_train, _, x_eval = small_problem
    mlp = make_mlp("depth 2 tanh, biases")
    whole = nd.kernel_tower(mlp, x_train, 3, x_eval)
    chunked = nd.kernel_tower(mlp, x_train, 3, x_eval, batch_size=1)
    for kernel, expected in zip(chunked, whole):
        assert relative_error(kernel, expected) <= 1e-12


def test_an_ensemble_of_mlps_takes_the_structured_path(small_problem):
    x_train = small_problem[0]
    keys = jax.random.split(jax.random.key(8), 2)
    ensemble = eqx.filter_vmap(lambda k: make_mlp("depth 2 tanh, biases", k))(keys)
    towers = eqx.filter_vmap(lambda m: nd.kernel_tower(m, x_train, 3))(ensemble)
    single = make_mlp("depth 2 tanh, biases", keys[1])
    generic = nd.kernel_tower(single, x_train, 3, filter_spec=trained_filter(single))
    for batched, plain in zip(towers, generic):
        assert relative_error(batched[1], plain) <= 1e-12


class LearntActivation(eqx.Module):
    slope: jax.Array

    def __call__(self, u):
        return jnp.tanh(self.slope * u)


class ShiftedMLP(eqx.nn.MLP):
    def __call__(self, x, *, key=None):
        return super().__call__(x) + 1.0


def test_what_is_not_certainly_a_dense_stack_takes_the_generic_path(small_problem):
    key = jax.random.key(1)
    learnt = eqx.nn.MLP(3, "scalar", 6, 2, activation=LearntActivation(jnp.array(1.5)), key=key)
    vector_output = eqx.nn.MLP(3, 1, 6, 2, key=key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subclass = ShiftedMLP(3, "scalar", 6, 2, key=key)
    for model in (learnt, vector_output, subclass, TwoLayer(3, 4, key)):
        assert dense_stack(model) is None and not structured_path(model, None)
    # a trained activation parameter is part of the kernel: the generic path counts it
    x_train = small_problem[0]
    (k2,) = nd.kernel_tower(learnt, x_train, 2)
    spec = jax.tree.map(eqx.is_inexact_array, learnt)
    spec = eqx.tree_at(lambda m: m.activation, spec, replace_fn=lambda t: jax.tree.map(lambda _: False, t))
    (without,) = nd.kernel_tower(learnt, x_train, 2, filter_spec=spec)
    assert relative_error(k2, without) > 1e-6


def test_a_stack_that_does_not_reproduce_the_model_falls_back(small_problem, monkeypatch):
    """reproduces() guards the structured path: a stack computing another
    function is refused, with a warning, and the generic tower is returned."""
    x_train = small_problem[0]
    mlp = make_mlp("depth 2 tanh, biases")
    wrong = DenseStack(dense_stack(mlp).layers, jax.nn.softplus, None)
    assert not reproduces(wrong, mlp, x_train)
    monkeypatch.setattr("nth_dynamics.engine.kernels._STACKED", set())  # forget that the true stack reproduced it
    monkeypatch.setattr("nth_dynamics.engine.kernels.dense_stack", lambda model: wrong)
    with pytest.warns(UserWarning, match="generic path"):
        (_k2, k3) = nd.kernel_tower(mlp, x_train, 3)
    monkeypatch.undo()
    generic = nd.kernel_tower(mlp, x_train, 3, filter_spec=trained_filter(mlp))
    assert relative_error(k3, generic[1]) <= 1e-12
