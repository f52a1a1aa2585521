"""References the hierarchy does not describe: optax optimizers on the
project's normalised loss, saved like gradient descent at t = k·η
(docs/theory.md §9)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nth_dynamics as nd
from nth_dynamics.engine.optimizers import OPTIMIZERS, option_problem


@pytest.fixture(scope="module")
def network():
    return nd.FFNet(3, 12, 1, key=jax.random.key(4), activation="tanh")


def test_optax_sgd_is_gradient_descent(network, small_problem):
    x_train, y_train, x_eval = small_problem
    descent = nd.gradient_descent(network, x_train, y_train, 0.25, 8, 4, x_eval)
    sgd = nd.optax_reference(network, x_train, y_train, optax.sgd(0.25), 8, 4, x_eval, lr=0.25)
    assert np.array_equal(np.asarray(sgd.ts), np.asarray(descent.ts))
    assert float(jnp.max(jnp.abs(sgd.f - descent.f))) <= 1e-12
    assert float(jnp.max(jnp.abs(sgd.ntk - descent.ntk))) <= 1e-12
    assert float(jnp.max(jnp.abs(sgd.f[-1] - sgd.f[0]))) > 1e-2  # it trained: the comparison could fail
    assert int(sgd.stats["num_steps"]) == 8


def test_optax_sgd_is_gradient_descent_on_the_logistic_loss(network, small_problem):
    x_train, _, x_eval = small_problem
    labels = jnp.array([1.0, -1.0, 1.0, 1.0, -1.0])
    descent = nd.gradient_descent(network, x_train, labels, 0.5, 4, 2, x_eval, loss="logistic")
    sgd = nd.optax_reference(network, x_train, labels, nd.make_optimizer("sgd", 0.5), 4, 2, x_eval, lr=0.5,
                             loss="logistic")
    assert float(jnp.max(jnp.abs(sgd.f - descent.f))) <= 1e-12


def test_momentum_nesterov_and_adam_run_and_differ_from_sgd(network, small_problem):
    x_train, y_train, _ = small_problem
    runs = {
        name: nd.optax_reference(network, x_train, y_train, nd.make_optimizer(optimizer, 0.05, options), 20, 10,
                                 lr=0.05)
        for name, optimizer, options in [
            ("sgd", "sgd", {}),
            ("momentum", "sgd", {"momentum": 0.9}),
            ("nesterov", "sgd", {"momentum": 0.9, "nesterov": True}),
            ("adam", "adam", {"b1": 0.8}),
        ]
    }
    n = x_train.shape[0]
    first = {name: float(nd.Squared().mean(run.f[0, :n], y_train)) for name, run in runs.items()}
    last = {name: float(nd.Squared().mean(run.f[-1, :n], y_train)) for name, run in runs.items()}
    assert len(set(first.values())) == 1
    for name, run in runs.items():
        assert bool(jnp.all(jnp.isfinite(run.f))) and last[name] < first[name], name
        if name != "sgd":
            assert float(jnp.max(jnp.abs(run.f[-1] - runs["sgd"].f[-1]))) > 1e-4, name
    assert float(jnp.max(jnp.abs(runs["nesterov"].f[-1] - runs["momentum"].f[-1]))) > 1e-6


@pytest.mark.parametrize(
    "name, options, bad",
    [("sgd", {"momentm": 0.9}, "momentm"), ("sgd", {"nesterov": 1}, "nesterov"), ("adam", {"b1": True}, "b1"),
     ("adam", {"mu_dtype": None}, "mu_dtype"), ("rmsprop", {"momentum": "high"}, "momentum")],
)
def test_bad_optimizer_options_are_named(name, options, bad):
    key, problem = option_problem(name, options)
    assert key == bad and "\n" not in problem
    with pytest.raises(ValueError, match=bad):
        nd.make_optimizer(name, 0.1, options)


def test_every_listed_optimizer_builds_with_its_defaults():
    for name in OPTIMIZERS:
        assert isinstance(nd.make_optimizer(name, 0.1), optax.GradientTransformation)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        nd.make_optimizer("lbfgs", 0.1)
    assert "did you mean 'momentum'" in option_problem("sgd", {"momentun": 0.9})[1]
