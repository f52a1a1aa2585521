"""Other losses (docs/theory.md §9): ℓ′ takes the place of the residual in the
hierarchy and in the reference training; p = 2 with the logistic loss is the
linearised network trained by gradient flow, checked against independent
integrations (SciPy's DOP853 on the parameters, not Diffrax)."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.integrate import solve_ivp

import nth_dynamics as nd
from nth_dynamics.engine.losses import LOSSES, resolve_loss
from nth_dynamics.engine.reference import loss as training_loss

TS = jnp.array([0.0, 0.5, 1.5, 3.0])


@pytest.fixture(scope="module")
def classification(small_problem):
    """The small problem with labels ±1, and a width-16 erf FFNet."""
    x_train, _, x_eval = small_problem
    y_train = jnp.array([1.0, -1.0, -1.0, 1.0, 1.0])
    network = nd.FFNet(3, 16, 1, key=jax.random.key(11), activation="erf")
    return network, x_train, y_train, x_eval


def _parameter_flow(params0, velocity, ts):
    """Integrate dθ/dt = velocity(θ) with SciPy (DOP853, rtol = atol = 1e-12):
    θ at each of ts, as pytrees like params0."""
    flat0, unravel = ravel_pytree(params0)
    rhs = jax.jit(lambda theta: ravel_pytree(velocity(unravel(theta)))[0])
    solution = solve_ivp(lambda t, theta: np.asarray(rhs(jnp.asarray(theta))), (0.0, float(ts[-1])), np.asarray(flat0),
                         method="DOP853", t_eval=np.asarray(ts), rtol=1e-12, atol=1e-12)
    assert solution.success
    return [unravel(jnp.asarray(theta)) for theta in solution.y.T]


def _logistic_loss(f, y):
    # written out independently of nth_dynamics.Logistic
    return jnp.mean(jnp.log1p(jnp.exp(-y * f)))


@pytest.mark.parametrize("name", list(LOSSES))
def test_the_derivative_is_the_gradient_of_the_loss(name):
    loss = resolve_loss(name)
    f = jnp.array([-3.0, -0.5, 0.0, 0.7, 2.5, 40.0])
    y = jnp.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    by_autodiff = jax.vmap(jax.grad(lambda fa, ya: loss.value(fa, ya)))(f, y)
    assert jnp.allclose(loss.derivative(f, y), by_autodiff, rtol=1e-14, atol=1e-16)
    assert jnp.allclose(loss.mean(f, y), jnp.mean(loss.value(f, y)), rtol=1e-15)
    assert np.allclose(loss.mean(np.asarray(f), np.asarray(y), np), loss.mean(f, y), rtol=1e-15)


def test_the_logistic_loss_is_stable_where_the_naive_formula_overflows():
    loss = nd.Logistic()
    f = jnp.array([-800.0, 800.0])
    y = jnp.array([1.0, 1.0])
    assert jnp.allclose(loss.value(f, y), jnp.array([800.0, 0.0]))
    assert jnp.allclose(loss.derivative(f, y), jnp.array([-1.0, 0.0]))
    assert bool(jnp.all(jnp.isfinite(jax.grad(lambda g: loss.mean(g, y))(f))))


def test_the_squared_loss_is_the_residual_and_the_old_formulas_bit_for_bit():
    """ℓ′ = f − y and L = mean((f − y)²)/2 exactly as the project computed
    them before losses existed (engine in JAX, Datasets in NumPy)."""
    rng = np.random.default_rng(0)
    f, y = rng.normal(size=(3, 4, 17)), rng.normal(size=17)
    loss = nd.Squared()
    assert np.array_equal(np.asarray(loss.derivative(jnp.asarray(f), y)), np.asarray(jnp.asarray(f) - y))
    assert np.array_equal(loss.mean(f, y, np), 0.5 * np.mean((f - y) ** 2, axis=-1))
    assert np.array_equal(np.asarray(loss.mean(jnp.asarray(f[0, 0]), y)), np.asarray(jnp.mean((f[0, 0] - y) ** 2) / 2))


def test_the_default_loss_is_the_squared_loss_bit_for_bit(classification, small_problem):
    network, x_train, _, x_eval = classification
    _, y_train, _ = small_problem
    tower = nd.kernel_tower(network, x_train, 3, x_eval)
    f0 = jax.vmap(network)(x_eval)
    for default, explicit in [
        (nd.solve_nth(tower, f0, y_train, TS), nd.solve_nth(tower, f0, y_train, TS, loss=nd.Squared())),
        (nd.gradient_descent(network, x_train, y_train, 0.1, 6, 3, x_eval),
         nd.gradient_descent(network, x_train, y_train, 0.1, 6, 3, x_eval, loss="mse")),
    ]:
        assert np.array_equal(np.asarray(default.f), np.asarray(explicit.f))


def test_logistic_p2_is_the_linearised_network_under_gradient_flow(classification):
    """NTH p = 2 with ℓ′ of the logistic loss (Diffrax) against gradient flow of
    the linearisation f(θ0) + J(θ − θ0) (jax.linearize), integrated by SciPy."""
    network, x_train, y_train, x_eval = classification
    n = x_train.shape[0]
    params0, static = eqx.partition(network, network.trained_filter())

    def outputs(params):
        return jax.vmap(eqx.combine(params, static))(x_eval)

    f0, jvp = jax.linearize(outputs, params0)

    def linearised(params):
        return f0 + jvp(jax.tree.map(jnp.subtract, params, params0))

    def velocity(params):
        return jax.tree.map(jnp.negative, jax.grad(lambda p: _logistic_loss(linearised(p)[:n], y_train))(params))

    thetas = _parameter_flow(params0, velocity, TS)
    linear = np.stack([np.asarray(linearised(theta)) for theta in thetas])
    (k2,) = nd.kernel_tower(network, x_train, 2, x_eval)
    nth = nd.solve_nth((k2,), f0, y_train, TS, loss="logistic", rtol=1e-12, atol=1e-12)
    assert float(np.max(np.abs(np.asarray(nth.f) - linear))) <= 1e-8
    # the real network at the same θ(t) is not linear: the comparison could fail
    real = np.stack([np.asarray(outputs(theta)) for theta in thetas])
    assert float(np.max(np.abs(real - linear))) > 1e-6
    losses = [float(nd.Logistic().mean(f[:n], y_train)) for f in nth.f]
    assert all(b < a for a, b in itertools.pairwise(losses))  # training works


def test_logistic_gradient_flow_is_the_flow_of_the_logistic_loss(classification):
    network, x_train, y_train, x_eval = classification
    n = x_train.shape[0]
    params0, static = eqx.partition(network, network.trained_filter())

    def velocity(params):
        def loss_of(p):
            return _logistic_loss(jax.vmap(eqx.combine(p, static))(x_train), y_train)

        return jax.tree.map(jnp.negative, jax.grad(loss_of)(params))

    thetas = _parameter_flow(params0, velocity, TS)
    expected = np.stack([np.asarray(jax.vmap(eqx.combine(theta, static))(x_eval)) for theta in thetas])
    flow = nd.gradient_flow(network, x_train, y_train, TS, x_eval, loss="logistic", rtol=1e-11, atol=1e-11)
    assert float(np.max(np.abs(np.asarray(flow.f) - expected))) <= 1e-8
    assert float(np.max(np.abs(expected[-1] - expected[0]))) > 1e-2  # the network moved: the comparison could fail
    assert jnp.allclose(training_loss(network, x_train, y_train, "logistic"), _logistic_loss(flow.f[0, :n], y_train))


def test_logistic_gradient_descent_steps_on_the_logistic_loss(classification):
    network, x_train, y_train, _ = classification
    descent = nd.gradient_descent(network, x_train, y_train, 0.2, 3, 3, loss="logistic")
    params, static = eqx.partition(network, network.trained_filter())
    for _ in range(3):
        grads = jax.grad(lambda p: _logistic_loss(jax.vmap(eqx.combine(p, static))(x_train), y_train))(params)
        params = jax.tree.map(lambda p, g: p - 0.2 * g, params, grads)
    assert jnp.allclose(descent.f[-1], jax.vmap(eqx.combine(params, static))(x_train), rtol=0, atol=1e-13)


def test_accuracy_counts_the_signs():
    loss = nd.Logistic()
    f = np.array([[0.3, -0.2, 0.0, -1.0]])
    y = np.array([1.0, 1.0, 1.0, -1.0])
    assert np.array_equal(loss.accuracy(f, y), [0.5])
    assert np.isnan(loss.accuracy(np.zeros((2, 0)), np.zeros(0))).all()


def test_bad_losses_and_labels_are_refused(classification, small_problem, without_shape_checks):
    network, x_train, y_labels, x_eval = classification
    _, y_real, _ = small_problem
    (k2,) = nd.kernel_tower(network, x_train, 2, x_eval)
    f0 = jax.vmap(network)(x_eval)
    with pytest.raises(ValueError, match="labels \\+1 and −1"):
        nd.solve_nth((k2,), f0, y_real, TS, loss="logistic")
    with pytest.raises(ValueError, match="labels \\+1 and −1"):
        nd.gradient_flow(network, x_train, y_real, TS, loss="logistic")
    with pytest.raises(ValueError, match="labels \\+1 and −1"):
        nd.gradient_descent(network, x_train, y_real, 0.1, 2, 1, loss="logistic")
    with pytest.raises(ValueError, match="loss must be one of 'mse', 'logistic'"):
        nd.solve_nth((k2,), f0, y_labels, TS, loss="hinge")
    with pytest.raises(ValueError, match="no closed form at p = 2"):
        nd.closed_form_p2(k2, f0, y_labels, TS, loss="logistic")
    assert nd.closed_form_p2(k2, f0, y_labels, TS, loss="mse").shape == (len(TS), x_eval.shape[0])
