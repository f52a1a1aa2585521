"""Gegenbauer spectra of dot-product kernels (docs/theory.md §6, BGGB): exact
expansions, Funk–Hecke against a Monte-Carlo Gram matrix, the k^(−d) law."""

import math

import numpy as np
import pytest
from scipy import special

from nth_dynamics.theory import limits, spectrum


def test_harmonic_dimensions():
    assert [spectrum.harmonic_dimension(2, k) for k in range(4)] == [1, 2, 2, 2]
    assert [spectrum.harmonic_dimension(3, k) for k in range(4)] == [1, 3, 5, 7]
    assert [spectrum.harmonic_dimension(4, k) for k in range(4)] == [1, 4, 9, 16]
    # harmonics of degree ≤ k in d dims = polynomials of degree k and k−1 restricted to the sphere
    assert sum(spectrum.harmonic_dimension(5, j) for j in range(4)) == math.comb(3 + 4, 4) + math.comb(2 + 4, 4)


@pytest.mark.parametrize("d", [2, 3, 4, 7])
def test_polynomials_match_scipy_and_their_coefficients_are_diagonal(d):
    t = np.linspace(-1, 1, 9)
    P = spectrum.gegenbauer_polynomials(t, d, 6)
    if d == 2:
        reference = np.array([special.eval_chebyt(k, t) for k in range(7)])
    else:
        lam = (d - 2) / 2
        reference = np.array([special.eval_gegenbauer(k, lam, t) / special.eval_gegenbauer(k, lam, 1.0) for k in range(7)])
    assert np.allclose(P, reference, atol=1e-13)
    # k(ρ) = P_j(ρ) has μ_k = δ_jk / N(d, j)
    mu = spectrum.gegenbauer_coefficients(lambda rho: spectrum.gegenbauer_polynomials(rho, d, 3)[3], d, 6)
    expected = np.zeros(7)
    expected[3] = 1 / spectrum.harmonic_dimension(d, 3)
    assert np.allclose(mu, expected, atol=1e-14)


@pytest.mark.parametrize("d", [2, 3, 4, 6])
def test_generating_function_kernels_have_their_exact_coefficients(d):
    """Σ_k r^k C_k^λ(ρ) = (1 − 2ρr + r²)^(−λ), λ = (d−2)/2 (the Poisson kernel for d = 2)."""
    r = 0.6
    k = np.arange(31)
    if d == 2:
        kernel = lambda rho: (1 - r**2) / (1 - 2 * r * rho + r**2)  # noqa: E731
        expected = r**k
    else:
        lam = (d - 2) / 2
        kernel = lambda rho: (1 - 2 * r * rho + r**2) ** (-lam)  # noqa: E731
        dims = np.array([spectrum.harmonic_dimension(d, int(j)) for j in k])
        expected = r**k * special.binom(k + 2 * lam - 1, k) / dims
    assert np.allclose(spectrum.gegenbauer_coefficients(kernel, d, 30), expected, rtol=1e-10, atol=1e-15)


def test_a_kernel_singular_at_rho_one_is_resolved_far_down_its_tail():
    """1/√(2 − 2ρ) = Σ_k P_k(ρ) on S²: μ_k = 1/(2k + 1), decay exponent −1."""
    mu = spectrum.gegenbauer_coefficients(lambda rho: 1 / np.sqrt(2 - 2 * rho), 3, 300)
    k = np.arange(301)
    assert np.allclose(mu, 1 / (2 * k + 1), rtol=1e-8)
    assert spectrum.decay_exponent(mu, 100, 300).exponent == pytest.approx(-1.0, abs=0.01)


def test_coefficients_are_the_eigenvalues_of_the_gram_matrix_of_uniform_points():
    """Funk–Hecke: the Gram matrix / n of n uniform points on S² has clusters of
    2k + 1 eigenvalues around μ_k (ReLU FFNet NTK, depth 2). Single eigenvalues
    scatter by ~10 % at n = 600; the cluster means by ~1 %."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    gram = np.asarray(limits.ntk(x, None, "ffnet", 2, activation="relu"))
    eigenvalues = np.sort(np.linalg.eigvalsh(gram / len(x)))[::-1][:16]
    mu = spectrum.gegenbauer_coefficients(lambda rho: limits.ntk_profile(rho, "ffnet", 2, activation="relu"), 3, 3)
    assert np.all(np.diff(mu) < 0)
    clusters = np.split(eigenvalues, [1, 4, 9])
    assert np.allclose([c.mean() for c in clusters], mu, rtol=0.03)


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize(
    "architecture, depth, options",
    [
        ("ffnet", 2, dict(activation="relu")),
        ("resnet", 4, dict(activation="relu", gamma=0.5, trained="hidden", readout="linear")),
    ],
)
def test_relu_ntk_spectra_decay_like_k_to_the_minus_d(d, architecture, depth, options):
    mu = spectrum.gegenbauer_coefficients(lambda rho: limits.ntk_profile(rho, architecture, depth, **options), d, 128)
    for parity in ("even", "odd"):
        assert spectrum.decay_exponent(mu, 32, 128, parity=parity).exponent == pytest.approx(-d, abs=0.15)


def test_two_layer_relu_ntk_has_no_odd_coefficients_beyond_one():
    mu = spectrum.gegenbauer_coefficients(lambda rho: limits.ntk_profile(rho, "ffnet", 0, activation="relu"), 3, 40)
    assert np.all(np.abs(mu[3::2]) < 1e-14) and np.all(mu[0::2] > 0) and mu[1] > 0
    with pytest.raises(ValueError, match="not positive"):
        spectrum.decay_exponent(mu, 10, 40)


def test_smooth_activation_spectra_fall_faster_than_any_power():
    """tanh is odd: its kernel is odd in ρ; the odd μ_k fall geometrically."""
    mu = spectrum.gegenbauer_coefficients(lambda rho: limits.ntk_profile(rho, "ffnet", 2, activation="tanh"), 3, 21)
    odd = mu[1::2]
    assert np.all(np.abs(mu[0::2]) < 1e-12)
    assert np.all(odd[1:] / odd[:-1] < 0.2)  # geometric, not k^(−d)
    slopes = [spectrum.decay_exponent(mu, lo, 2 * lo, parity="odd").exponent for lo in (3, 7)]
    assert slopes[1] < slopes[0] - 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: spectrum.gegenbauer_coefficients(np.cos, 1, 5), "dimension"),
        (lambda: spectrum.gegenbauer_coefficients(lambda rho: rho[:3], 3, 5), "same shape"),
        (lambda: spectrum.decay_exponent(np.ones(10), 5, 20), "k_min"),
        (lambda: spectrum.decay_exponent(np.ones(10), 2, 8, parity="prime"), "parity"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
