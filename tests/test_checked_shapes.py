"""The jaxtyping import hook is on under pytest (``--jaxtyping-packages`` in
pyproject's addopts): every annotated function of the package checks its
arguments and shapes with beartype. Outside pytest the hook is off."""

import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

import nth_dynamics as nd
from nth_dynamics.engine.kernels import lambda_min


def test_an_array_with_too_few_dims_is_refused_by_the_hook():
    # without the hook this is an IndexError from inside the function
    with pytest.raises(TypeCheckError, match="ntk"):
        lambda_min(np.ones(3))


def test_a_dimension_named_in_two_arguments_must_agree():
    ntk, y_train, ts = jnp.eye(4)[:, :3], jnp.zeros(3), jnp.linspace(0.0, 1.0, 2)
    assert nd.closed_form_p2(ntk, jnp.zeros(4), y_train, ts).shape == (2, 4)
    with pytest.raises(TypeCheckError, match="n_eval"):
        nd.closed_form_p2(ntk, jnp.zeros(5), y_train, ts)  # f0 has 5 rows, ntk 4
