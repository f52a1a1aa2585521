"""The truncated NTH (docs/theory.md §3) and its agreement with the real network."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import nth_dynamics as nd
from nth_dynamics.engine.reference import loss


def relative_error(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.fixture(scope="module")
def network():
    # the hierarchy's relations do not depend on the architecture (the tower's
    # tests cover both); a small FFNet keeps compilation short
    return nd.FFNet(3, 32, 1, key=jax.random.key(11), activation="softplus")


@pytest.fixture(scope="module")
def tower(network, small_problem):
    x_train, _, x_eval = small_problem
    return nd.kernel_tower(network, x_train, 4, x_eval)


@pytest.fixture(scope="module")
def f0(network, small_problem):
    return jax.vmap(network)(small_problem[2])


def test_p2_matches_its_closed_form_on_train_and_test_rows(tower, f0, small_problem):
    x_train, y_train, _ = small_problem
    ts = jnp.linspace(0.0, 20.0, 9)
    solution = nd.solve_nth(tower[:1], f0, y_train, ts, rtol=1e-12, atol=1e-12)
    closed_form = nd.closed_form_p2(tower[0], f0, y_train, ts)
    n = len(x_train)
    assert relative_error(solution.f[:, :n], closed_form[:, :n]) <= 1e-8
    assert relative_error(solution.f[:, n:], closed_form[:, n:]) <= 1e-8
    # the frozen kernel is saved unchanged
    assert jnp.array_equal(solution.ntk[-1], tower[0])


def test_closed_form_is_finite_for_a_singular_kernel():
    ntk = jnp.array([[1.0, 1.0], [1.0, 1.0], [0.5, 0.5]])  # rank-one train block
    f = nd.closed_form_p2(ntk, jnp.zeros(3), jnp.array([1.0, -1.0]), jnp.array([0.0, 1.0, 1e6]))
    assert bool(jnp.all(jnp.isfinite(f)))
    assert jnp.allclose(f[0], 0.0)


def test_state_starts_at_the_tower_and_only_lower_orders_move(tower, f0, small_problem):
    _, y_train, _ = small_problem
    ts = jnp.array([0.0, 0.5])
    solution = nd.solve_nth(tower, f0, y_train, ts, save_state=True)
    f, k2, k3 = solution.kernels
    assert jnp.allclose(k2[0], tower[0]) and jnp.allclose(k3[0], tower[1])
    assert not jnp.allclose(k3[1], tower[1])  # K3 evolves at p = 4; K4 is frozen


def test_kernel_derivative_along_gradient_flow_is_the_next_order(network, tower, small_problem):
    """The hierarchy identity dK(r)/dt = −(1/n) K(r+1)·r on the real network,
    for r = 2 and 3: the time derivative is the directional derivative of
    θ ↦ K(r)(θ) along the gradient-flow velocity −∇L(θ)."""
    x_train, y_train, x_eval = small_problem
    n = len(x_train)
    params, static = eqx.partition(network, network.trained_filter())
    velocity = jax.tree.map(
        jnp.negative, jax.grad(lambda p: loss(eqx.combine(p, static), x_train, y_train))(params)
    )
    residual = jax.vmap(network)(x_train) - y_train
    for r in (2, 3):
        kernel = lambda p: nd.kernel_tower(eqx.combine(p, static), x_train, r, x_eval, batch_size=n)[-1]
        _, derivative = jax.jvp(kernel, (params,), (velocity,))
        predicted = -(tower[r - 1] @ residual) / n
        assert relative_error(derivative, predicted) <= 1e-10


def test_ntk_of_the_trained_network_moves_as_the_hierarchy_says(network, tower, small_problem):
    """The same identity against an actual gradient-flow trajectory: a
    second-order one-sided difference of the saved K2(t) at t = 0."""
    x_train, y_train, x_eval = small_problem
    n = len(x_train)
    h = 1e-3
    reference = nd.gradient_flow(network, x_train, y_train, jnp.array([0.0, h, 2 * h]), x_eval, rtol=1e-12, atol=1e-12)
    k2 = reference.ntk
    derivative = (-3 * k2[0] + 4 * k2[1] - k2[2]) / (2 * h)
    residual = reference.f[0, :n] - y_train
    predicted = -(tower[1] @ residual) / n
    assert relative_error(derivative, predicted) <= 1e-4


def test_solver_running_out_of_steps_is_a_clear_error(tower, f0, small_problem):
    _, y_train, _ = small_problem
    with pytest.raises(nd.SolverError, match="max_steps"):
        nd.solve_nth(tower, f0, y_train, jnp.array([0.0, 100.0]), max_steps=3)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t, f, y, ts: (t[:0], f, y, ts), "tower"),
        (lambda t, f, y, ts: ((t[0][:, :-1],), f, y, ts), "K2 must have shape"),
        (lambda t, f, y, ts: (t, f[:2], y, ts), "N_eval"),
        (lambda t, f, y, ts: (t, f, y, ts[::-1]), "non-decreasing"),
    ],
)
def test_bad_nth_inputs_are_named(change, message, tower, f0, small_problem):
    _, y_train, _ = small_problem
    args = change(tower, f0, y_train, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=message):
        nd.solve_nth(*args)
