"""Reference training of the real network (docs/theory.md §1, §7)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import nth_dynamics as nd
from nth_dynamics.engine.reference import l2_norm, loss


@pytest.fixture(scope="module")
def network():
    return nd.FFNet(3, 48, 1, key=jax.random.key(5), activation="erf")


def test_gradient_flow_decreases_the_loss_and_starts_at_the_network(network, small_problem):
    x_train, y_train, x_eval = small_problem
    ts = jnp.linspace(0.0, 5.0, 6)
    flow = nd.gradient_flow(network, x_train, y_train, ts, x_eval)
    assert jnp.allclose(flow.f[0], jax.vmap(network)(x_eval), rtol=0, atol=1e-14)
    (k2,) = nd.kernel_tower(network, x_train, 2, x_eval)
    assert jnp.allclose(flow.ntk[0], k2, rtol=0, atol=1e-13)
    n = len(x_train)
    losses = jnp.mean((flow.f[:, :n] - y_train) ** 2, axis=1) / 2
    assert bool(jnp.all(jnp.diff(losses) < 0))


def test_gradient_flow_is_converged_in_its_tolerance(network, small_problem):
    x_train, y_train, x_eval = small_problem
    ts = jnp.array([0.0, 3.0])
    loose = nd.gradient_flow(network, x_train, y_train, ts, x_eval, rtol=1e-6, atol=1e-6)
    tight = nd.gradient_flow(network, x_train, y_train, ts, x_eval, rtol=1e-11, atol=1e-11)
    tighter = nd.gradient_flow(network, x_train, y_train, ts, x_eval, rtol=1e-12, atol=1e-12)
    assert float(jnp.max(jnp.abs(tight.f - tighter.f))) < 1e-10
    assert float(jnp.max(jnp.abs(loose.f - tighter.f))) > float(jnp.max(jnp.abs(tight.f - tighter.f)))


def test_gradient_descent_approaches_gradient_flow_linearly_in_the_step(network, small_problem):
    """GD is gradient flow sampled at t = kη with an O(η) gap (docs/theory.md §1)."""
    x_train, y_train, x_eval = small_problem
    t1 = 2.0
    flow = nd.gradient_flow(network, x_train, y_train, jnp.array([0.0, t1]), x_eval, rtol=1e-11, atol=1e-11)
    gaps = []
    for lr in (0.1, 0.05):
        steps = int(round(t1 / lr))
        descent = nd.gradient_descent(network, x_train, y_train, lr, steps, steps // 2, x_eval)
        assert jnp.allclose(descent.ts, jnp.array([0.0, t1 / 2, t1]))
        gaps.append(float(jnp.max(jnp.abs(descent.f[-1] - flow.f[-1]))))
    assert 1.6 < gaps[0] / gaps[1] < 2.4


def test_only_trained_parameters_move(small_problem):
    x_train, y_train, _ = small_problem
    frozen_readout = nd.FFNet(3, 16, 1, key=jax.random.key(2), trained=["input", "hidden"])
    descent = nd.gradient_descent(frozen_readout, x_train, y_train, 0.1, 4, 4)
    manual = frozen_readout
    params, static = eqx.partition(manual, manual.trained_filter())
    for _ in range(4):
        grads = jax.grad(lambda p: loss(eqx.combine(p, static), x_train, y_train))(params)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    final = eqx.combine(params, static)
    assert jnp.allclose(descent.f[-1], jax.vmap(final)(x_train), atol=1e-13)


def test_a_seed_ensemble_trains_as_one_vmapped_computation(small_problem):
    x_train, y_train, _ = small_problem
    keys = jax.random.split(jax.random.key(9), 2)
    ensemble = nd.make_ensemble("resnet", 3, 16, 2, keys)
    ts = jnp.array([0.0, 1.0])
    flows = eqx.filter_vmap(lambda m: nd.gradient_flow(m, x_train, y_train, ts))(ensemble)
    single = nd.gradient_flow(nd.ResNet(3, 16, 2, key=keys[1]), x_train, y_train, ts)
    assert flows.f.shape == (2, 2, len(x_train))
    assert float(jnp.max(jnp.abs(flows.f[1] - single.f))) < 1e-8


def test_error_norm_is_the_l2_norm_of_the_whole_parameter_vector():
    tree = {"a": jnp.full((10,), 3.0), "b": jnp.full((6,), 4.0)}
    assert jnp.isclose(l2_norm(tree), jnp.sqrt(10 * 9.0 + 6 * 16.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"lr": 0.0}, "lr"), ({"steps": 5, "save_every": 2}, "multiple"), ({"save_every": 0}, "save_every")],
)
def test_bad_descent_arguments_are_named(kwargs, message, network, small_problem):
    x_train, y_train, _ = small_problem
    args = {"lr": 0.1, "steps": 4, "save_every": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        nd.gradient_descent(network, x_train, y_train, **args)
