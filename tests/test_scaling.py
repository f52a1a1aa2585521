"""Width scalings of docs/theory.md §4, small and fast (the full study is a scenario)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nth_dynamics as nd

WIDTHS = (128, 256, 512, 1024)
ORDERS = (2, 3, 4)


@pytest.fixture(scope="module")
def errors_by_width():
    """E_p(t = 0.5) = ‖f_GF − f̃_p‖₂/√n for 3 seeds of an FFNet per width."""
    d, n = 7, 6
    x = jax.random.normal(jax.random.key(0), (n, d))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jnp.sin(2 * x[:, 0]) + x[:, 1]
    ts = jnp.array([0.0, 0.5])

    @eqx.filter_jit
    def truncation_errors(ensemble):
        def one_seed(model):
            tower = nd.kernel_tower(model, x, max(ORDERS))
            f0 = jax.vmap(model)(x)
            flow = nd.gradient_flow(model, x, y, ts)
            return jnp.stack([
                jnp.sqrt(jnp.mean((nd.solve_nth(tower[: p - 1], f0, y, ts).f[-1] - flow.f[-1]) ** 2))
                for p in ORDERS
            ])

        return eqx.filter_vmap(one_seed)(ensemble)

    errors = []
    for width in WIDTHS:
        ensemble = nd.make_ensemble("ffnet", d, width, 1, jax.random.split(jax.random.key(width), 3))
        errors.append(np.asarray(truncation_errors(ensemble)))
    return np.stack(errors)  # (width, seed, order)


@pytest.mark.slow  # the width sweep behind both tests takes ~70 s
def test_higher_truncation_orders_track_gradient_flow_better(errors_by_width):
    geometric_mean = np.exp(np.log(errors_by_width).mean(axis=1))
    assert np.all(geometric_mean[:, 1] < geometric_mean[:, 0])
    assert np.all(geometric_mean[:, 2] < geometric_mean[:, 1])
    assert geometric_mean[-1, 2] < 1e-6  # p = 4 at width 1024 tracks the real network closely


@pytest.mark.slow
def test_truncation_error_falls_with_width_at_the_predicted_rates(errors_by_width):
    """Slopes of log E_p against log width: −1, −1, −2 for p = 2, 3, 4 (docs/theory.md
    §4, bounds of HY Thm 2.6). With 3 seeds over under a decade the fit is
    rough and small widths bend it steeper (measured here: about −1.5, −1.7,
    −3.2), so this fast check asks that each error falls at least at the
    predicted rate (with 0.3 to spare) and not absurdly faster; the full
    study fits 6 seeds over 1.8 decades (results/README.md). Fewer widths
    (128–512) give −1.85, −1.95, −3.85 for these seeds: the steepening is
    real at small m, not a tolerance to tighten."""
    log_error = np.log(errors_by_width).mean(axis=1)
    slopes = np.polyfit(np.log(WIDTHS), log_error, 1)[0]
    for slope, predicted in zip(slopes, (-1.0, -1.0, -2.0)):
        assert predicted - 1.4 < slope < predicted + 0.3, (slopes, predicted)
