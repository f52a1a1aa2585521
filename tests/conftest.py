"""Shared fixtures: small float64 problems on the unit sphere."""

import jax
import jax.numpy as jnp
import jaxtyping
import pytest

import nth_dynamics  # noqa: F401  (switches on float64)


def sphere_points(key, count: int, d: int):
    x = jax.random.normal(key, (count, d))
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def small_problem():
    """n = 5 training and 3 test points on S², smooth labels."""
    key_train, key_test = jax.random.split(jax.random.key(20260))
    x_train = sphere_points(key_train, 5, 3)
    x_test = sphere_points(key_test, 3, 3)
    y_train = jnp.sin(2 * x_train[:, 0]) + x_train[:, 1]
    return x_train, y_train, jnp.concatenate([x_train, x_test])


@pytest.fixture
def without_shape_checks():
    """The package as users call it outside pytest: jaxtyping's import hook
    (pyproject addopts) off, so that a test sees the package's own error
    messages for bad input rather than the hook's."""
    previous = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", previous)
