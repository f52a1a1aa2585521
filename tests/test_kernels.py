"""The kernel tower against independent computations (docs/theory.md §2)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from jax.flatten_util import ravel_pytree

import nth_dynamics as nd
from nth_dynamics.engine.kernels import kernel_magnitudes, tower_bytes

MODELS = {
    "resnet two-matrix tanh": lambda key: nd.ResNet(3, 24, 2, key=key),
    "resnet one-matrix gelu, hidden only": lambda key: nd.ResNet(
        3, 24, 2, key=key, branch="one", activation="gelu", trained="hidden"
    ),
    "ffnet softplus linear readout": lambda key: nd.FFNet(
        3, 24, 2, key=key, activation="softplus", readout="linear"
    ),
}


def flat_parameters(model):
    params, static = eqx.partition(model, model.trained_filter())
    flat, unravel = ravel_pytree(params)
    return flat, lambda flat: eqx.combine(unravel(flat), static)


def relative_error(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return MODELS[request.param](jax.random.key(7))


@pytest.fixture(scope="module")
def tower(model, small_problem):
    x_train, _, x_eval = small_problem
    return nd.kernel_tower(model, x_train, 4, x_eval)


def test_shapes_follow_the_convention(tower, small_problem):
    x_train, _, x_eval = small_problem
    n, n_eval = len(x_train), len(x_eval)
    assert [k.shape for k in tower] == [(n_eval,) + (n,) * (r - 1) for r in (2, 3, 4)]
    assert all(k.dtype == jnp.float64 for k in tower)


def test_k2_equals_the_product_of_an_independent_jacobian(model, tower, small_problem):
    x_train, _, x_eval = small_problem
    flat, rebuild = flat_parameters(model)
    jacobian = jax.jacrev(lambda p: jax.vmap(rebuild(p))(x_eval))(flat)  # (N_eval, P)
    k2 = jacobian @ jacobian[: len(x_train)].T
    assert relative_error(tower[0], k2) <= 1e-10


@pytest.mark.parametrize("r", [3, 4])
def test_higher_orders_are_finite_differences_along_the_gradients(r, model, tower, small_problem):
    """K(r)(…, b) = d/dε K(r−1)(θ + ε g_b), g_b = ∇θ f(x_b) held at θ."""
    x_train, _, x_eval = small_problem
    flat, rebuild = flat_parameters(model)
    gradients = jax.vmap(jax.grad(lambda p, x: rebuild(p)(x)), in_axes=(None, 0))(flat, x_train)
    step = 1e-4 / float(jnp.max(jnp.linalg.norm(gradients, axis=1)))
    for b in (0, len(x_train) - 1):
        # the order-4 tower at the shifted parameters reuses the fixture's compilation
        shifted = [
            nd.kernel_tower(rebuild(flat + sign * step * gradients[b]), x_train, 4, x_eval)[r - 3]
            for sign in (1, -1)
        ]
        central_difference = (shifted[0] - shifted[1]) / (2 * step)
        assert relative_error(central_difference, tower[r - 2][..., b]) <= 1e-6


def test_kernels_are_symmetric_in_their_first_two_indices(tower, small_problem):
    n = len(small_problem[0])
    for kernel in tower:
        train_block = kernel[:n]
        assert relative_error(jnp.swapaxes(train_block, 0, 1), train_block) <= 1e-12


def test_k4_is_not_symmetric_in_its_last_two_indices(tower, small_problem):
    """K4 = D²K2[g3, g4] + DK2[∇²f(x3) g4]: the second term breaks that symmetry."""
    k4 = tower[2]
    assert relative_error(jnp.swapaxes(k4, 2, 3), k4) > 1e-6


def test_eval_rows_equal_the_tower_on_the_union(model, tower, small_problem):
    x_train, _, x_eval = small_problem
    n = len(x_train)
    union = nd.kernel_tower(model, x_eval, 3)  # every point a training direction
    for r, (kernel, full) in enumerate(zip(tower[:2], union), start=2):
        trailing = (slice(None),) + (slice(0, n),) * (r - 1)
        assert relative_error(kernel, full[trailing]) <= 1e-12


def test_direction_chunking_does_not_change_the_tower(small_problem):
    x_train, _, x_eval = small_problem
    model = MODELS["resnet two-matrix tanh"](jax.random.key(7))
    tower = nd.kernel_tower(model, x_train, 3, x_eval)
    chunked = nd.kernel_tower(model, x_train, 3, x_eval, batch_size=2)
    for kernel, reference in zip(chunked, tower):
        assert relative_error(kernel, reference) <= 1e-12


def test_direction_chunks_divide_n():
    """A remainder chunk multiplies the tower's memory at high order (see
    direction_chunk): chunks round down to divisors of n."""
    from nth_dynamics.engine.kernels import direction_chunk

    assert [direction_chunk(4, b) for b in (1, 2, 3, 4, 9)] == [1, 2, 2, 4, 4]
    assert [direction_chunk(7, b) for b in (6, 7)] == [1, 7]
    assert direction_chunk(12, 5) == 4


def test_a_plain_equinox_module_uses_all_inexact_leaves(small_problem):
    x_train, _, _ = small_problem
    mlp = eqx.nn.MLP(3, "scalar", 16, 2, activation=jnp.tanh, key=jax.random.key(3))
    (k2,) = nd.kernel_tower(mlp, x_train, 2)
    flat, unravel = ravel_pytree(eqx.filter(mlp, eqx.is_inexact_array))
    static = eqx.filter(mlp, eqx.is_inexact_array, inverse=True)
    jacobian = jax.jacrev(lambda p: jax.vmap(eqx.combine(unravel(p), static))(x_train))(flat)
    assert relative_error(k2, jacobian @ jacobian.T) <= 1e-10


def test_an_ensemble_is_one_vmapped_tower(small_problem):
    x_train, _, _ = small_problem
    keys = jax.random.split(jax.random.key(1), 3)
    ensemble = nd.make_ensemble("resnet", 3, 16, 2, keys)
    towers = eqx.filter_vmap(lambda m: nd.kernel_tower(m, x_train, 3))(ensemble)
    single = nd.kernel_tower(nd.ResNet(3, 16, 2, key=keys[1]), x_train, 3)
    for batched, one in zip(towers, single):
        assert relative_error(batched[1], one) <= 1e-12


@pytest.mark.parametrize(
    "order, x_eval_shape, message",
    [(1, None, "order"), (7, None, "order"), (3, (4, 2), "x_eval")],
)
def test_bad_arguments_are_named(order, x_eval_shape, message, small_problem, without_shape_checks):
    x_train = small_problem[0]
    x_eval = None if x_eval_shape is None else jnp.ones(x_eval_shape)
    model = nd.FFNet(3, 8, 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=message):
        nd.kernel_tower(model, x_train, order, x_eval)


def test_odd_orders_shrink_like_one_over_width(small_problem):
    """max|K3₀| ~ m^(−1) (docs/theory.md §4: odd orders are √m smaller than naive)."""
    x_train = small_problem[0]
    widths = jnp.array([64, 256, 1024])
    magnitudes = []
    for width in widths:
        keys = jax.random.split(jax.random.key(int(width)), 4)
        ensemble = nd.make_ensemble("resnet", 3, int(width), 2, keys)
        towers = eqx.filter_vmap(lambda m: nd.kernel_tower(m, x_train, 3))(ensemble)
        magnitudes.append(jnp.mean(jax.vmap(kernel_magnitudes)(towers), axis=0))
    magnitudes = jnp.stack(magnitudes)  # (width, rank)
    slopes = jnp.polyfit(jnp.log(widths), jnp.log(magnitudes), 1)[0]
    assert abs(float(slopes[0])) < 0.15  # K2 is O(1)
    assert -1.3 < float(slopes[1]) < -0.7


def test_memory_estimate_grows_with_order_width_and_chunk():
    for structured in (True, False):
        small = tower_bytes(16, 16, 3, 10_000, activations=1_000, structured=structured)
        assert tower_bytes(16, 16, 4, 10_000, activations=1_000, structured=structured) > 8 * small
        assert tower_bytes(16, 16, 3, 10_000, activations=1_000, batch_size=2, structured=structured) < small
        assert tower_bytes(16, 16, 4, 0, structured=structured) >= 2 * 8 * 16**4  # K4 and its transpose
    assert tower_bytes(16, 16, 3, 10**6, structured=False) > tower_bytes(16, 16, 3, 10**4, structured=False)


def test_structured_and_generic_paths_agree(small_problem):
    """The outer-product path of the project's networks against plain nested
    JVPs on the parameter pytree (forced by passing the filter explicitly)."""
    x_train, _, x_eval = small_problem
    model = MODELS["resnet one-matrix gelu, hidden only"](jax.random.key(3))
    structured = nd.kernel_tower(model, x_train, 4, x_eval)
    generic = nd.kernel_tower(model, x_train, 4, x_eval, filter_spec=model.trained_filter())
    for fast, plain in zip(structured, generic):
        assert relative_error(fast, plain) <= 1e-12
