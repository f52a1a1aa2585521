"""Infinite-width kernels (docs/theory.md §6): closed forms against quadrature and
Monte Carlo, the recursions against independent transcriptions of §6, the
depth statements, and the finite networks of the project."""

import dataclasses
import json
import math
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from nth_dynamics.engine import networks
from nth_dynamics.theory import limits
from nth_dynamics.theory.limits import recursion


def kappa0(rho):
    return 1 - np.arccos(rho) / np.pi


def kappa1(rho):
    return (np.sqrt(1 - rho**2) + (np.pi - np.arccos(rho)) * rho) / np.pi


def ffnet_section6(rho, L):
    """docs/theory.md §6 verbatim (HWTZ, c_σ = 2, unit inputs): Θ_L(ρ)."""
    sigma = theta = rho
    for _ in range(L):
        theta = theta * kappa0(sigma) + kappa1(sigma)
        sigma = kappa1(sigma)
    return theta


def resnet_section6(rho, L, gamma, *, readout_trained=False, input_trained=False):
    """docs/theory.md §6's unrolled ResNet formula (σ_w² = 2, unit inputs), with the
    backward products B_l: an independent code path from limits' forward recursion."""
    alpha2 = float(L) ** (-2 * gamma)
    K, Kd = [rho], [1.0]
    sig, sigdot = [None], [None]
    for _ in range(L):
        r = K[-1] / Kd[-1]
        sig.append(Kd[-1] * kappa1(r))
        sigdot.append(kappa0(r))
        K.append(K[-1] + alpha2 * sig[-1])
        Kd.append(Kd[-1] * (1 + alpha2))
    B = [None] * (L + 1)
    B[L] = 1.0
    for l in range(L, 0, -1):
        B[l - 1] = B[l] * (1 + alpha2 * sigdot[l])
    theta = sum(alpha2 * B[l] * (sig[l] + K[l - 1] * sigdot[l]) for l in range(1, L + 1))
    if readout_trained:
        theta = theta + K[L]
    if input_trained:
        theta = theta + B[0] * K[0]
    return theta


RHO = np.array([-0.95, -0.5, 0.0, 0.3, 0.5, 0.9, 0.999])


# --- duals -----------------------------------------------------------------

def test_arccos_is_accurate_to_a_few_ulp():
    x = np.concatenate([np.linspace(-1, 1, 200001), [-1.0, 1.0, 1 - 1e-15, -1 + 1e-15, 0.5, -0.5]])
    assert np.max(np.abs(np.asarray(limits.arccos(jnp.asarray(x))) - np.arccos(x))) < 1e-15


@pytest.mark.parametrize("activation", sorted(networks.ACTIVATIONS))
def test_derivative_registry_matches_autodiff(activation):
    u = jnp.linspace(-3, 3, 41) + 0.01  # avoid relu's kink
    auto = jax.vmap(jax.grad(networks.ACTIVATIONS[activation]))(u)
    assert np.allclose(limits.ACTIVATION_DERIVATIVES[activation](u), auto, atol=1e-14)


def test_relu_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 2_000_000))
    for s1, s2, c in [(0.7, 1.3, 0.3), (2.0, 0.5, -0.8), (1.0, 1.0, 0.999)]:
        chol = np.linalg.cholesky(np.array([[s1, c], [c, s2]]))
        u, v = chol @ z
        second, derivative = limits.ReLUDual().moments(jnp.array(s1), jnp.array(s2), jnp.array(c))
        mc_second = np.mean(np.maximum(u, 0) * np.maximum(v, 0))
        mc_derivative = np.mean((u > 0) & (v > 0))
        assert abs(float(second) - mc_second) < 5e-3 * math.sqrt(s1 * s2)
        assert abs(float(derivative) - mc_derivative) < 2e-3
        assert float(limits.ReLUDual().mean(jnp.array(s1))) == pytest.approx(np.mean(np.maximum(u, 0)), abs=3e-3)


def test_relu_closed_form_matches_quadrature():
    s1, s2, c = jnp.array([0.7, 2.0, 1.0]), jnp.array([1.3, 0.5, 1.0]), jnp.array([0.3, -0.8, 0.999])
    exact = limits.ReLUDual().moments(s1, s2, c)
    # relu's kink limits Gauss–Hermite to slow algebraic convergence
    quad = limits.QuadratureDual("relu", 256).moments(s1, s2, c)
    assert np.allclose(quad[0], exact[0], atol=5e-4)
    assert np.allclose(quad[1], exact[1], atol=1e-2)


def test_erf_closed_form_matches_quadrature():
    s1, s2, c = jnp.array([0.7, 1.0, 0.2]), jnp.array([0.4, 1.0, 0.9]), jnp.array([0.3, 0.99, -0.4])
    exact = limits.ErfDual().moments(s1, s2, c)
    quad = limits.QuadratureDual("erf", 64).moments(s1, s2, c)
    assert np.allclose(quad[0], exact[0], atol=1e-10)
    assert np.allclose(quad[1], exact[1], atol=1e-9)
    assert np.allclose(limits.QuadratureDual("erf", 64).mean(s1), 0.0, atol=1e-15)


def test_two_layer_tanh_ntk_matches_adaptive_quadrature_at_general_norms():
    x = np.array([[0.9, 0.3, 0.0], [-0.2, 0.5, 0.7]])
    theta = np.asarray(limits.ntk(x, None, "ffnet", 0, activation="tanh"))

    def expectation(f, s1, s2, c):
        chol = np.linalg.cholesky(np.array([[s1, c], [c, s2]]))

        def integrand(z2, z1):
            u, v = chol @ np.array([z1, z2])
            return f(u, v) * np.exp(-(z1**2 + z2**2) / 2) / (2 * np.pi)

        return integrate.dblquad(integrand, -9, 9, -9, 9, epsabs=1e-12)[0]

    g = x @ x.T
    sech2 = lambda u: 1 / np.cosh(u) ** 2  # noqa: E731
    s1, s2, c = g[0, 0], g[1, 1], g[0, 1]
    expected = c * expectation(lambda u, v: sech2(u) * sech2(v), s1, s2, c) + expectation(
        lambda u, v: np.tanh(u) * np.tanh(v), s1, s2, c
    )
    assert theta[0, 1] == pytest.approx(expected, abs=1e-7)


# --- docs/theory.md §6 ------------------------------------------------------------

@pytest.mark.parametrize("L, table", [(1, 0.471), (10, 0.374), (100, 0.278), (1000, 0.2538)])
def test_ffnet_reproduces_the_section6_table(L, table):
    """Θ_L(0.5)/(L+1) of docs/theory.md §6 is ntk_shape at depth L − 1. The table's
    0.374 is 0.37349 rounded up (via 0.3735); 6e-4 covers that rounding."""
    value = float(limits.ntk_shape(0.5, "ffnet", L - 1, activation="relu")[0])
    assert value == pytest.approx(table, abs=6e-4)
    assert value == pytest.approx(ffnet_section6(0.5, L) / (L + 1), rel=1e-10)  # 1000 layers of rounding


@pytest.mark.parametrize("L", [1, 2, 7, 40])
def test_plain_relu_ffnet_is_the_section6_recursion_scaled_by_two_to_the_minus_L(L):
    plain = np.asarray(limits.ntk_profile(RHO, "ffnet", L - 1, activation="relu"))
    assert np.allclose(plain * 2.0**L, ffnet_section6(RHO, L), rtol=1e-12, atol=1e-12)
    assert float(limits.ntk_profile(1.0, "ffnet", L - 1, activation="relu")[0]) == pytest.approx((L + 1) / 2.0**L)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("L", [1, 3, 25])
@pytest.mark.parametrize("trained", ["hidden", "all"])
def test_resnet_matches_the_unrolled_section6_formula(gamma, L, trained):
    """Plain ReLU with α = √2 L^(−γ) is §6's σ_w² = 2 ResNet exactly."""
    ours = limits.ntk_profile(
        RHO, "resnet", L, activation="relu", alpha=math.sqrt(2) * L ** (-gamma), trained=trained, readout="linear"
    )
    full = trained == "all"
    expected = resnet_section6(RHO, L, gamma, readout_trained=full, input_trained=full)
    assert np.allclose(ours, expected, rtol=1e-12)


def test_ffnet_degenerates_to_one_quarter_and_depth_ten_thousand_is_finite():
    shape = np.asarray(limits.ntk_shape(RHO[:-1], "ffnet", 9999, activation="relu"))
    assert np.all(np.isfinite(shape))
    assert np.allclose(shape, 0.25, atol=3e-3)
    shallow = np.asarray(limits.ntk_shape(RHO[:-1], "ffnet", 9, activation="relu"))
    assert np.max(np.abs(shallow - 0.25)) > 0.1


def test_resnet_shapes_with_depth_follow_section6():
    options = dict(activation="relu", trained="hidden", readout="linear")
    shape = lambda L, gamma: np.asarray(limits.ntk_shape(RHO, "resnet", L, gamma=gamma, **options))  # noqa: E731
    two_layer = (kappa1(RHO) + RHO * kappa0(RHO)) / 2
    # γ = 1 keeps the two-layer shape for every L
    assert np.allclose(shape(1000, 1.0), two_layer, atol=1e-3)
    # γ = 1/2 converges to a different, non-degenerate shape
    assert np.allclose(shape(1000, 0.5), shape(4000, 0.5), atol=1e-4)
    assert np.max(np.abs(shape(4000, 0.5) - two_layer)) > 0.01
    assert np.ptp(shape(4000, 0.5)) > 0.9
    # γ = 0 degenerates like the FFNet (and its scale explodes, handled by the rescaling)
    assert np.allclose(shape(9999, 0.0)[:-1], 0.25, atol=5e-3)


def test_gamma_zero_resnet_scale_overflows_with_a_warning_but_its_shape_does_not():
    x = np.eye(3)
    with pytest.warns(UserWarning, match="outside float64"):
        limits.ntk(x, None, "resnet", 5000, activation="relu", gamma=0.0)
    normalised = np.asarray(limits.normalized_ntk(x, None, "resnet", 5000, activation="relu", gamma=0.0))
    assert np.allclose(np.diag(normalised), 1.0) and np.all(np.isfinite(normalised))


# --- structure ---------------------------------------------------------------

@pytest.mark.parametrize(
    "architecture, depth, options",
    [
        ("ffnet", 2, dict(activation="tanh")),
        ("ffnet", 3, dict(activation="relu", readout="linear")),
        ("resnet", 3, dict(activation="softplus", gamma=1.0)),
        ("resnet", 2, dict(activation="relu", branch="one", readout="linear")),
    ],
)
def test_readout_only_ntk_is_the_nngp(architecture, depth, options):
    x = np.random.default_rng(1).normal(size=(4, 3))
    assert np.allclose(
        limits.ntk(x, None, architecture, depth, trained="readout", **options),
        limits.nngp(x, None, architecture, depth, **options),
        rtol=1e-12,
    )


def test_ntk_is_the_sum_of_its_parameter_groups():
    x = np.random.default_rng(2).normal(size=(4, 3))
    total = limits.ntk(x, None, "resnet", 3, activation="erf")
    parts = sum(limits.ntk(x, None, "resnet", 3, activation="erf", trained=g) for g in networks.PARAMETER_GROUPS)
    assert np.allclose(total, parts, rtol=1e-12)


def test_relu_kernels_are_homogeneous_in_the_input_norms():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 4))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1)
    for architecture, options in [("ffnet", {}), ("resnet", dict(gamma=0.5))]:
        k = np.asarray(limits.ntk(x, None, architecture, 4, activation="relu", **options))
        k_unit = np.asarray(limits.ntk(unit, None, architecture, 4, activation="relu", **options))
        assert np.allclose(k, k_unit * np.outer(norms, norms), rtol=1e-12)


def test_smooth_kernels_are_symmetric_positive_semidefinite_and_match_their_profile():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(12, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k = np.asarray(limits.ntk(x, None, "resnet", 4, activation="tanh"))
    assert np.array_equal(k, k.T)
    assert np.linalg.eigvalsh(k)[0] > -1e-10
    # the same kernel through the row-block path with a single column
    profile = limits.ntk_profile((x @ x.T)[0], "resnet", 4, activation="tanh")
    assert np.allclose(k[0], profile, atol=1e-8)


def test_one_compilation_serves_every_depth(monkeypatch):
    traces = []
    original = recursion._propagate  # where the layer loop lives (limits/recursion.py)
    monkeypatch.setattr(recursion, "_propagate", lambda *args: traces.append(1) or original(*args))
    x = np.random.default_rng(5).normal(size=(7, 2))  # a shape no other test compiles
    limits.ntk(x, None, "ffnet", 2, activation="relu")
    first = len(traces)
    assert first > 0
    for depth in (3, 17, 250):
        limits.ntk(x, None, "ffnet", depth, activation="relu")
    assert len(traces) == first


# --- errors --------------------------------------------------------------------

@pytest.mark.parametrize(
    "architecture, depth, options, match",
    [
        ("mlp", 2, {}, "architecture must be one of"),
        ("ffnet", 2, dict(gamma=0.5), "unknown option"),
        ("ffnet", -1, {}, "depth must be an integer ≥ 0"),
        ("resnet", 0, {}, "depth must be an integer ≥ 1"),
        ("ffnet", 2.0, {}, "depth must be an integer"),
        ("ffnet", 2, dict(activation="sigmoid"), "activation must be one of"),
        ("ffnet", 2, dict(readout="softmax"), "readout must be one of"),
        ("ffnet", 2, dict(trained=["bias"]), "trained must be"),
        ("resnet", 2, dict(branch="three"), "branch must be one of"),
        ("resnet", 2, dict(alpha=0.5, gamma=0.5), "either alpha or gamma"),
        ("resnet", 2, dict(branch="one", activation="relu"), "readout='linear'"),
        ("ffnet", 2, dict(quadrature_nodes=1), "quadrature_nodes"),
        ("ffnet", 2, dict(W_std=0.0), r"W_std must be a finite number > 0"),
        ("ffnet", 2, dict(W_std=-1.5), r"W_std must be a finite number > 0"),
        ("ffnet", 2, dict(W_std=math.inf), r"W_std must be a finite number > 0"),
        ("ffnet", 2, dict(W_std="1.5"), r"W_std must be a finite number > 0"),
        ("resnet", 2, dict(b_std=-0.1), r"b_std must be a finite number ≥ 0"),
        ("resnet", 2, dict(b_std=math.nan), r"b_std must be a finite number ≥ 0"),
        ("ffnet", 2, dict(parameterization="mup"), r"parameterization must be one of \['ntk', 'standard'\]"),
        ("ffnet", 2, dict(parameterization="standard"), "needs width="),
        ("ffnet", 2, dict(parameterization="standard", width=0), "width must be an integer ≥ 1"),
        ("ffnet", 2, dict(width=64), "width only enters parameterization='standard'"),
        ("ffnet", 2, dict(input_dim=2), "input_dim is the inputs' own dimension"),
    ],
)
def test_bad_options_raise_clear_errors(architecture, depth, options, match, without_shape_checks):
    with pytest.raises(ValueError, match=match):
        limits.ntk(np.eye(2), None, architecture, depth, **options)


def test_bad_inputs_raise_clear_errors(without_shape_checks):
    with pytest.raises(ValueError, match="shapes"):
        limits.ntk(np.ones(3), None, "ffnet", 1)
    with pytest.raises(ValueError, match="shapes"):
        limits.ntk(np.ones((2, 3)), np.ones((2, 4)), "ffnet", 1)
    with pytest.raises(ValueError, match="correlations"):
        limits.ntk_shape(1.5, "ffnet", 1)
    with pytest.raises(ValueError, match="needs input_dim="):
        limits.ntk_profile(0.5, "ffnet", 1, parameterization="standard", width=8)
    with pytest.raises(ValueError, match="input_dim only enters parameterization='standard'"):
        limits.ntk_profile(0.5, "ffnet", 1, input_dim=3)


# --- neural-tangents' stax.Dense options (docs/theory.md §10) ----------------------

NEURAL_TANGENTS = json.loads((Path(__file__).parent / "data" / "neural_tangents_reference.json").read_text())


def case_id(case):
    o = case["options"]
    return "-".join([case["architecture"], str(case["depth"]), o["activation"], o["readout"][:3], f"W{o['W_std']}",
                     f"b{o['b_std']}", o["parameterization"], case["alpha_as"]])


def test_the_neural_tangents_cases_cover_every_combination():
    combinations = {
        (c["architecture"], c["options"]["activation"], c["options"]["b_std"] > 0, c["options"]["parameterization"])
        for c in NEURAL_TANGENTS["cases"]
    }
    assert len(combinations) == 16


@pytest.mark.parametrize("case", NEURAL_TANGENTS["cases"], ids=case_id)
def test_kernels_match_neural_tangents(case):
    """scripts/neural_tangents_reference.py: neural-tangents 0.6.5's analytic
    kernel_fn(√d·x) of case["stax"] is kernels(x) with case["options"]. Off the
    diagonal to 1e−12 (measured ≤ 5e−14); on it to 1e−7: for ReLU without
    biases neural-tangents' angle arctan2(√(|x|²|x′|² − (x·x′)²), x·x′) turns
    the Gram's rounding at x = x′ into ~2e−8 (the correlation form here has
    ρ = 1 exactly; every other case agrees to 1e−14)."""
    x = np.array(NEURAL_TANGENTS["x"])
    ours = limits.kernels(x, None, case["architecture"], case["depth"], **case["options"])
    off = ~np.eye(len(x), dtype=bool)
    for name in ("nngp", "ntk"):
        theirs, mine = np.array(case[name]), np.asarray(getattr(ours, name))
        np.testing.assert_allclose(mine, theirs, rtol=1e-7, atol=0)
        np.testing.assert_allclose(mine[off], theirs[off], rtol=1e-12, atol=0)


def test_profile_functions_take_the_dense_options():
    x = np.array(NEURAL_TANGENTS["x"])
    standard_erf_bias = next(c for c in NEURAL_TANGENTS["cases"] if c["options"] == dict(
        activation="erf", readout="activation", W_std=1.5, b_std=0.5, parameterization="standard", alpha=0.5, width=10))
    relu_no_bias = next(c for c in NEURAL_TANGENTS["cases"] if c["options"]["W_std"] == 1.5 and c["options"]["b_std"] == 0)
    for case in (standard_erf_bias, relu_no_bias):
        options = case["options"] | ({"input_dim": x.shape[1]} if case["options"]["parameterization"] == "standard" else {})
        args = ((x @ x.T)[0], case["architecture"], case["depth"])
        np.testing.assert_allclose(limits.ntk_profile(*args, **options), case["ntk"][0], rtol=1e-7)
        np.testing.assert_allclose(limits.nngp_profile(*args, **options), case["nngp"][0], rtol=1e-7)
        shape = np.array(case["ntk"][0]) / case["ntk"][0][0]
        np.testing.assert_allclose(limits.ntk_shape(*args, **options), shape, rtol=1e-7)


DEFAULT_DENSE = dict(W_std=1, b_std=0.0, parameterization="ntk")


@pytest.mark.parametrize(
    "architecture, depth, options",
    [
        ("ffnet", 3, dict(activation="relu")),
        ("resnet", 4, dict(activation="relu", gamma=0.5, trained="hidden")),
        ("resnet", 2, dict(activation="erf", branch="one", readout="linear")),
    ],
)
def test_default_dense_options_are_the_original_kernels_bit_for_bit(architecture, depth, options):
    x = np.random.default_rng(7).normal(size=(4, 3))
    assert limits.resolve_architecture(architecture, depth, 3, **options, **DEFAULT_DENSE)[0].affine is None
    plain = limits.kernels(x, None, architecture, depth, **options)
    explicit = limits.kernels(x, None, architecture, depth, **options, **DEFAULT_DENSE)
    assert np.array_equal(plain.ntk, explicit.ntk) and np.array_equal(plain.nngp, explicit.nngp)
    rho = np.linspace(-1, 1, 5)
    assert np.array_equal(
        limits.ntk_shape(rho, architecture, depth, **options), limits.ntk_shape(rho, architecture, depth, **options, **DEFAULT_DENSE)
    )


def test_relu_correlation_form_with_dense_options_equals_the_general_path():
    """Without biases the Affine steps stay 1-homogeneous, so ReLU keeps its
    rescaled correlation form (the one-matrix branch with its means here; the
    neural-tangents cases cover the two-matrix one); the unrescaled general path
    must agree."""
    x = np.random.default_rng(8).normal(size=(4, 3))
    options = dict(activation="relu", branch="one", readout="linear", alpha=0.7, W_std=1.5,
                   parameterization="standard", width=16)
    arch, alpha = limits.resolve_architecture("resnet", 3, 3, **options)
    assert arch.homogeneous
    general = dataclasses.replace(arch, homogeneous=False)
    gram = jnp.asarray(x @ x.T)
    limit, _, _ = limits._limit(gram, jnp.diag(gram), jnp.diag(gram), general, 3, alpha)
    np.testing.assert_allclose(limits.ntk(x, None, "resnet", 3, **options), limit.ntk.cross, rtol=1e-12)
    np.testing.assert_allclose(limits.nngp(x, None, "resnet", 3, **options), limit.nngp.cross, rtol=1e-12)


def test_readout_only_ntk_is_the_nngp_with_dense_options():
    """NTK parameterization: the readout's own term W_std² K + b_std² is the
    NNGP — also for the one-matrix branch with biases, which neural-tangents lacks."""
    x = np.random.default_rng(9).normal(size=(4, 3))
    options = dict(activation="relu", branch="one", readout="linear", W_std=1.3, b_std=0.4)
    np.testing.assert_allclose(
        limits.ntk(x, None, "resnet", 3, trained="readout", **options), limits.nngp(x, None, "resnet", 3, **options), rtol=1e-12
    )


# --- finite networks -------------------------------------------------------------

def empirical_ntk(model, x):
    params, static = eqx.partition(model, model.trained_filter())
    jac = jax.jacrev(lambda p: jax.vmap(eqx.combine(p, static))(x))(params)
    rows = [leaf.reshape(x.shape[0], -1) for leaf in jax.tree.leaves(jac)]
    return sum(r @ r.T for r in rows)


def seed_mean_error(architecture, depth, options, width, seeds, x):
    """‖mean over seeds of K2₀ − Θ∞‖_F / ‖Θ∞‖_F for networks of the project."""
    limit = np.asarray(limits.ntk(x, None, architecture, depth, **options))
    finite = []
    for batch in range(seeds // 8):
        keys = jax.random.split(jax.random.key(1000 + batch), 8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ensemble = networks.make_ensemble(architecture, x.shape[1], width, depth, keys, **options)
        finite.append(np.asarray(eqx.filter_vmap(lambda m: empirical_ntk(m, jnp.asarray(x)))(ensemble)))
    return np.linalg.norm(np.concatenate(finite).mean(0) - limit) / np.linalg.norm(limit)


CONVENTIONS = [
    # the one-matrix branch at α = 1, where its mean terms are 19 % of the kernel
    ("resnet", 3, dict(activation="relu", branch="one", readout="linear", gamma=0.0)),
    ("resnet", 1, dict(activation="erf", trained="hidden")),
    ("ffnet", 1, dict(activation="gelu", trained=["input", "readout"])),
]


@pytest.mark.parametrize("architecture, depth, options", CONVENTIONS[:1])
def test_seed_mean_of_wide_networks_matches_the_limit(architecture, depth, options):
    """Conventions that the main convergence test (tanh, all trained) does not
    exercise: parameter subsets, the one-matrix branch with its means, erf.
    16 seeds at width 256: per-seed deviations ~15 %, so the mean is within
    ~5 %; a wrong convention (a missing term, α for α²) is ≥ 19 %."""
    x = np.random.default_rng(6).normal(size=(4, 3)) * 0.8
    assert seed_mean_error(architecture, depth, options, 256, 16, x) < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("architecture, depth, options", CONVENTIONS)
def test_seed_mean_of_wide_networks_matches_the_limit_closely(architecture, depth, options):
    x = np.random.default_rng(6).normal(size=(4, 3)) * 0.8
    assert seed_mean_error(architecture, depth, options, 1024, 32, x) < 0.03


def test_one_matrix_branch_with_a_smooth_activation_matches_the_networks():
    x = np.random.default_rng(6).normal(size=(4, 3)) * 0.8
    options = dict(activation="tanh", branch="one", readout="linear", gamma=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert seed_mean_error("resnet", 2, options, 256, 8, x) < 0.1
