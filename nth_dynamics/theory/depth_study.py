"""The infinite-width experiments of docs/theory.md §6, each a function of plain
keyword arguments returning an ``xarray.Dataset``:

* :func:`width_convergence` — the seed ensemble of the project's own networks
  against :func:`nth_dynamics.limits.ntk`: ``‖K2₀ − Θ∞‖ ~ width^(−1/2)`` (docs/theory.md §4).
* :func:`kernel_shapes` — depth degeneracy (HWTZ): ``Θ_L(ρ)/Θ_L(1)`` against
  depth for the FFNet (→ 1/4) and ResNets with γ ∈ {0, 1/2, 1}.
* :func:`depth_generalization` — kernel regression and the NTK gradient-flow
  closed form on the digits two-class task and a sphere teacher, test error
  against depth.
* :func:`spectral_decay` — Gegenbauer spectra and their k^(−d) decay (BGGB).

:func:`run_all` runs them, writes the Datasets (netCDF, atomically), the
figures (PNG + SVG) and a README comparing the numbers with docs/theory.md §6.

The depth-study models follow docs/theory.md §6: the FFNet is HWTZ's (ReLU, every
layer trained, readout on σ(h_L)); the ResNets are the two-matrix branch with
only the hidden matrices trained and a linear readout on h_L, as in §6's
formula. Depth is always the networks' depth (FFNet hidden-to-hidden layers,
ResNet blocks): the FFNet of depth L is §6's Θ_{L+1}.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import Array, ArrayLike, Float

from .._files import save_figure, write_dataset, write_text
from .._provenance import base_attributes
from ..data import make_data
from ..engine.networks import make_ensemble
from . import limits, spectrum

DEFAULT_DEPTHS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
DEFAULT_GAMMAS = (0.0, 0.5, 1.0)
SECTION6_TABLE = {1: 0.471, 10: 0.374, 100: 0.278, 1000: 0.2538}
"""docs/theory.md §6: Θ_L(0.5)/(L + 1) of the HWTZ FFNet, L counting the readout (network depth L − 1)."""


# ---------------------------------------------------------------------------
# Models of the depth studies
# ---------------------------------------------------------------------------

class Model(NamedTuple):
    """One kernel of a depth study: a label, the architecture and its options (all but depth)."""

    label: str
    architecture: str
    options: dict[str, Any]
    gamma: float  # NaN for the FFNet


def depth_models(
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    *,
    activation: str = "relu",
    ffnet_options: Mapping[str, Any] | None = None,
    resnet_options: Mapping[str, Any] | None = None,
) -> list[Model]:
    """The FFNet and one ResNet per γ, with docs/theory.md §6's conventions unless overridden."""
    ffnet = {"activation": activation, "trained": "all", "readout": "activation", **(ffnet_options or {})}
    models = [Model("ffnet", "ffnet", ffnet, math.nan)]
    for gamma in gammas:
        options = {
            "activation": activation,
            "trained": "hidden",
            "readout": "linear",
            "branch": "two",
            **(resnet_options or {}),
            "gamma": float(gamma),
        }
        models.append(Model(f"resnet_g{gamma:g}", "resnet", options, float(gamma)))
    return models


def _model_coords(models: Sequence[Model]) -> dict[str, Any]:
    return {
        "model": [m.label for m in models],
        "architecture": ("model", [m.architecture for m in models]),
        "gamma": ("model", np.array([m.gamma for m in models])),
    }


# ---------------------------------------------------------------------------
# Finite ↔ infinite width
# ---------------------------------------------------------------------------

def empirical_ntk(model: eqx.Module, x: Float[Array, "n d"]) -> Float[Array, "n n"]:
    """``K2₀(a, b) = <∇θ f(x_a), ∇θ f(x_b)>`` over the model's **trained**
    parameters (``model.trained_filter()``), one row at a time: the gradient
    of f(x_a), then its JVP through all outputs. Memory is a few
    parameter-sized vectors, never the (n, P) Jacobian."""
    params, static = eqx.partition(model, model.trained_filter())

    def outputs(p):
        return jax.vmap(eqx.combine(p, static))(x)

    def row(x_a):
        gradient = jax.grad(lambda p: eqx.combine(p, static)(x_a))(params)
        return jax.jvp(outputs, (params,), (gradient,))[1]

    return jax.lax.map(row, x)


@eqx.filter_jit
def _ensemble_ntk(ensemble, x):
    return eqx.filter_vmap(lambda model: empirical_ntk(model, x))(ensemble)


def ensemble_ntk(
    architecture: str,
    x: Float[ArrayLike, "n d"],
    width: int,
    depth: int,
    keys: jax.Array,
    *,
    seed_batch: int | None = None,
    **options,
) -> Float[np.ndarray, "seeds n n"]:
    """K2₀ of a seed ensemble of the project's networks
    (:func:`nth_dynamics.networks.make_ensemble`, ``eqx.filter_vmap`` over
    seeds), ``seed_batch`` seeds at a time (default: as many as fit ~1 GB)."""
    x = jnp.asarray(x, dtype=jnp.float64)
    if seed_batch is None:
        n_params = _parameter_count(architecture, x.shape[1], width, depth, options)
        seed_batch = max(1, min(len(keys), 2**30 // (8 * 6 * n_params)))
    blocks = []
    for start in range(0, len(keys), seed_batch):
        ensemble = make_ensemble(architecture, x.shape[1], width, depth, keys[start : start + seed_batch], **options)
        blocks.append(np.asarray(_ensemble_ntk(ensemble, x)))
    return np.concatenate(blocks)


def _parameter_count(architecture: str, d: int, width: int, depth: int, options: Mapping[str, Any]) -> int:
    matrices = depth * (2 if architecture == "resnet" and options.get("branch", "two") == "two" else 1)
    return width * d + matrices * width * width + width


def width_convergence(
    *,
    architecture: str = "ffnet",
    depth: int = 1,
    widths: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
    seeds: int = 8,
    n: int = 8,
    d: int = 3,
    seed: int = 0,
    bootstrap: int = 1000,
    seed_batch: int | None = None,
    **options,
) -> xr.Dataset:
    """Empirical NTK of seed ensembles against the infinite-width limit (docs/theory.md §4, §6).

    ``n`` points uniform on S^(d−1); for each width, ``seeds`` networks of
    :mod:`nth_dynamics.networks` with ``options`` (activation, trained, …,
    as in :func:`nth_dynamics.limits.ntk`, default tanh).

    Returns a Dataset with
    ``deviation(width, seed) = ‖K2₀ − Θ∞‖_F / ‖Θ∞‖_F`` per seed,
    ``mean_deviation(width)`` (its mean over seeds),
    ``seed_mean_deviation(width) = ‖mean_seeds K2₀ − Θ∞‖_F / ‖Θ∞‖_F`` (the
    seed average converges: its bias is O(1/width)), ``ntk_limit`` and
    ``ntk_seed_mean``; attributes ``slope`` (least-squares slope of
    log mean_deviation against log width; docs/theory.md §4 predicts −1/2),
    ``slope_ci_low``/``slope_ci_high`` (95 % bootstrap over seeds) and
    ``seed_mean_slope``.
    """
    options = {"activation": "tanh", **options}
    if len(widths) < 2 or seeds < 1:
        raise ValueError("need at least two widths and one seed")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    limit = np.asarray(limits.ntk(x, None, architecture, depth, **options))
    keys = jax.random.split(jax.random.key(seed), seeds)
    network_options = {k: v for k, v in options.items() if k != "quadrature_nodes"}  # limits-only
    empirical = np.stack(
        [ensemble_ntk(architecture, x, w, depth, keys, seed_batch=seed_batch, **network_options) for w in widths]
    )  # (width, seed, n, n)
    scale = np.linalg.norm(limit)
    deviation = np.linalg.norm(empirical - limit, axis=(2, 3)) / scale
    seed_mean = empirical.mean(axis=1)
    seed_mean_deviation = np.linalg.norm(seed_mean - limit, axis=(1, 2)) / scale
    log_w = np.log(np.asarray(widths, dtype=float))
    slope = _slope(log_w, deviation.mean(axis=1))
    draws = rng.integers(0, seeds, size=(bootstrap, seeds))
    boot = [_slope(log_w, deviation[:, draw].mean(axis=1)) for draw in draws]
    ds = xr.Dataset(
        {
            "deviation": (("width", "seed"), deviation, _attrs("relative Frobenius deviation of K2_0 from the limit NTK")),
            "mean_deviation": (("width",), deviation.mean(axis=1), _attrs("per-seed deviation averaged over seeds")),
            "seed_mean_deviation": (("width",), seed_mean_deviation, _attrs("deviation of the seed-averaged K2_0")),
            "ntk_limit": (("point", "point_b"), limit, _attrs("infinite-width NTK")),
            "ntk_seed_mean": (("width", "point", "point_b"), seed_mean, _attrs("seed-averaged empirical NTK K2_0")),
            "x": (("point", "input_dim"), x, _attrs("input points on the unit sphere")),
        },
        coords={"width": np.asarray(widths), "seed": np.arange(seeds), "point": np.arange(n), "point_b": np.arange(n)},
        attrs={
            "title": "finite-width NTK against the infinite-width limit",
            "architecture": architecture,
            "depth": depth,
            "options": json.dumps(options, sort_keys=True, default=list),
            "slope": slope,
            "slope_ci_low": float(np.percentile(boot, 2.5)),
            "slope_ci_high": float(np.percentile(boot, 97.5)),
            "seed_mean_slope": _slope(log_w, seed_mean_deviation),
            "lambda_min_limit": float(np.linalg.eigvalsh(limit)[0]),
            "fit_range": json.dumps([int(widths[0]), int(widths[-1])]),
            "d": d,
            "seed_value": seed,
        },
    )
    return ds


def _slope(log_x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(log_x, np.log(y), 1)[0])


# ---------------------------------------------------------------------------
# Depth degeneracy: kernel shapes
# ---------------------------------------------------------------------------

def kernel_shapes(
    *,
    depths: Sequence[int] = DEFAULT_DEPTHS,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    angles: int = 401,
    activation: str = "relu",
    ffnet_options: Mapping[str, Any] | None = None,
    resnet_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """``Θ_L(ρ)/Θ_L(1)`` against depth for the FFNet and ResNets (HWTZ, BGGB).

    ρ = cos θ on ``angles`` equally spaced θ ∈ [0, π] (dense near ρ = 1, where
    the deep kernels' spike lives). Returns ``ntk_shape(model, depth, rho)``,
    ``shape_at_half(model, depth)`` (ρ = 0.5), ``spike_angle(model, depth)``
    (the angle where the shape has fallen half-way from 1 to its value at
    ρ = 0: → 0 with depth for a spiky, degenerate kernel; constant for a stable
    one) and ``section6(table_L)``: the FFNet's Θ_L(0.5)/(L + 1) at docs/theory.md
    §6's L (network depth L − 1) next to ``section6_reference``.
    """
    models = depth_models(gammas, activation=activation, ffnet_options=ffnet_options, resnet_options=resnet_options)
    rho = np.cos(np.linspace(0.0, math.pi, angles))
    shapes = np.array([[np.asarray(limits.ntk_shape(rho, m.architecture, L, **m.options)) for L in depths] for m in models])
    at_half = np.array([[float(limits.ntk_shape(0.5, m.architecture, L, **m.options)[0]) for L in depths] for m in models])
    table_L = np.array(sorted(SECTION6_TABLE))
    ffnet = models[0]
    section6 = np.array([float(limits.ntk_shape(0.5, "ffnet", int(L) - 1, **ffnet.options)[0]) for L in table_L])
    return xr.Dataset(
        {
            "ntk_shape": (("model", "depth", "rho"), shapes, _attrs("normalised NTK Theta(rho)/Theta(1)")),
            "shape_at_half": (("model", "depth"), at_half, _attrs("Theta(0.5)/Theta(1)")),
            "spike_angle": (("model", "depth"), _spike_angle(rho, shapes), _attrs("half-height angle of the spike at rho = 1", "rad")),
            "section6": (("table_L",), section6, _attrs("FFNet Theta_L(0.5)/(L+1), L = network depth + 1")),
            "section6_reference": (("table_L",), np.array([SECTION6_TABLE[L] for L in table_L]), _attrs("docs/theory.md section 6 table")),
        },
        coords={**_model_coords(models), "depth": np.asarray(depths), "rho": rho, "table_L": table_L},
        attrs={
            "title": "depth degeneracy of the infinite-width NTK (HWTZ)",
            "models": json.dumps({m.label: m.options for m in models}, sort_keys=True),
        },
    )


def _spike_angle(rho: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """θ where shape(θ) first crosses (1 + shape(ρ=0))/2, by linear interpolation in θ."""
    theta = np.arccos(np.clip(rho, -1, 1))
    out = np.full(shapes.shape[:-1], np.nan)
    for index in np.ndindex(shapes.shape[:-1]):
        curve = shapes[index]
        level = 0.5 * (1 + np.interp(0.5 * math.pi, theta, curve))
        below = np.nonzero(curve < level)[0]
        if below.size and below[0] > 0:
            i = below[0]
            out[index] = np.interp(level, [curve[i], curve[i - 1]], [theta[i], theta[i - 1]])
    return out


# ---------------------------------------------------------------------------
# Depth degeneracy: learning with the kernels
# ---------------------------------------------------------------------------

def task_data(task: str, *, n_train: int, n_test: int, d: int, seed: int, classes: Sequence[int] = (3, 8)):
    """The two real tasks, through :func:`nth_dynamics.data.make_data`:
    ``"digits"`` (two classes of scikit-learn's bundled digits, labels ±1,
    PCA to d dims, unit sphere) or ``"teacher"`` (x uniform on S^(d−1), labels
    from a random wide tanh network of the project, width 512, depth 1)."""

    specs = {
        "digits": {"kind": "digits", "classes": tuple(classes)},
        "teacher": {"kind": "teacher", "teacher": "network", "teacher_width": 512, "teacher_depth": 1},
    }
    if task not in specs:
        raise ValueError(f"task must be one of {sorted(specs)}, got {task!r}")
    spec = {**specs[task], "d": d, "n_train": n_train, "n_test": n_test}
    return make_data(spec, jax.random.key(seed))


class KernelPredictions(NamedTuple):
    regression: Float[np.ndarray, " n_test"]
    flow: Float[np.ndarray, "time n_test"]
    flow_train: Float[np.ndarray, "time n"]


def kernel_predictions(
    K: Float[np.ndarray, "n_all n_all"], y_train: Float[np.ndarray, " n"], times: Sequence[float]
) -> KernelPredictions:
    """Kernel regression and the NTK gradient flow from f = 0 (docs/theory.md §3, p = 2
    with a frozen limit kernel), on the Gram matrix of train ∪ test (train first):

    ``f_train(t) = (I − exp(−t K_tt/n)) y``,
    ``f_test(t) = K_et K_tt⁻¹ (I − exp(−t K_tt/n)) y`` and, as t → ∞,
    ``f_test = K_et K_tt⁻¹ y``; through the eigendecomposition of K_tt, with
    ``(1 − e^(−tλ/n))/λ`` taken as ``−expm1(−tλ/n)/λ`` so that small λ are exact.
    """
    n = y_train.shape[0]
    K_tt, K_et = 0.5 * (K[:n, :n] + K[:n, :n].T), K[n:, :n]
    eigenvalues, vectors = np.linalg.eigh(K_tt)
    eigenvalues = np.maximum(eigenvalues, 1e-13 * eigenvalues[-1])  # rounding can leave λ_min ≤ 0
    coefficients = vectors.T @ y_train
    regression = K_et @ (vectors @ (coefficients / eigenvalues))
    times = np.asarray(times, dtype=float)
    filtered = -np.expm1(-times[:, None] * eigenvalues[None, :] / n)  # (time, n)
    flow = (K_et @ vectors) @ (filtered * coefficients / eigenvalues).T
    flow_train = (vectors @ (filtered * coefficients).T).T
    return KernelPredictions(regression, flow.T, flow_train)


def depth_generalization(
    *,
    task: str = "digits",
    depths: Sequence[int] = DEFAULT_DEPTHS,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    n_train: int = 150,
    n_test: int = 200,
    d: int = 8,
    seed: int = 0,
    times: Sequence[float] = (10.0, 100.0, 1000.0),
    activation: str = "relu",
    classes: Sequence[int] = (3, 8),
    ffnet_options: Mapping[str, Any] | None = None,
    resnet_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Test error of the infinite-width kernels against depth (HWTZ).

    For each model (FFNet, ResNet per γ) and depth, the NTK normalised to unit
    diagonal (inputs are on the sphere, so this only fixes the kernel's scale,
    which in the plain parametrisation runs from 2^(−L) to 1.5^L with depth:
    gradient-flow time then means the same thing at every depth) gives kernel
    regression (t = ∞) and the gradient-flow closed form at ``times``.

    Returns ``test_mse(model, depth, time)`` (mean squared test error over the
    mean square of the test labels: 1 for the zero predictor),
    ``test_error(model, depth, time)`` (fraction of sign disagreements with the
    labels: the classification error on digits), ``train_mse(model, depth,
    time)`` and ``lambda_min(model, depth)`` of the normalised K_tt. The
    ``time`` coordinate ends with ``inf`` for kernel regression.
    """
    data = task_data(task, n_train=n_train, n_test=n_test, d=d, seed=seed, classes=classes)
    x = np.concatenate([np.asarray(data.x_train), np.asarray(data.x_test)])
    y_train, y_test = np.asarray(data.y_train), np.asarray(data.y_test)
    models = depth_models(gammas, activation=activation, ffnet_options=ffnet_options, resnet_options=resnet_options)
    all_times = np.concatenate([np.asarray(times, dtype=float), [np.inf]])
    shape = (len(models), len(depths), len(all_times))
    test_mse, test_error, train_mse = np.empty(shape), np.empty(shape), np.empty(shape)
    lambda_min = np.empty(shape[:2])
    for i, model in enumerate(models):
        for j, L in enumerate(depths):
            K = np.asarray(limits.normalized_ntk(x, None, model.architecture, int(L), **model.options))
            predictions = kernel_predictions(K, y_train, times)
            test_f = np.vstack([predictions.flow, predictions.regression[None]])
            train_f = np.vstack([predictions.flow_train, y_train[None]])  # regression interpolates
            test_mse[i, j] = np.mean((test_f - y_test) ** 2, axis=1) / np.mean(y_test**2)
            test_error[i, j] = np.mean(np.sign(test_f) != np.sign(y_test), axis=1)
            train_mse[i, j] = np.mean((train_f - y_train) ** 2, axis=1) / np.mean(y_train**2)
            lambda_min[i, j] = np.linalg.eigvalsh(K[:n_train, :n_train])[0]
    constant = np.mean((np.mean(y_train) - y_test) ** 2) / np.mean(y_test**2)
    return xr.Dataset(
        {
            "test_mse": (("model", "depth", "time"), test_mse, _attrs("test mean squared error / mean square of test labels")),
            "test_error": (("model", "depth", "time"), test_error, _attrs("fraction of test points with sign(f) != sign(y)")),
            "train_mse": (("model", "depth", "time"), train_mse, _attrs("train mean squared error / mean square of labels")),
            "lambda_min": (("model", "depth"), lambda_min, _attrs("smallest eigenvalue of the normalised train Gram matrix")),
        },
        coords={**_model_coords(models), "depth": np.asarray(depths), "time": all_times},
        attrs={
            "title": f"test error against depth of infinite-width kernels: {task}",
            "task": task,
            "n_train": n_train,
            "n_test": n_test,
            "d": d,
            "seed_value": seed,
            "classes": json.dumps(list(classes)) if task == "digits" else "",
            "constant_predictor_test_mse": float(constant),
            "majority_class_test_error": float(min(np.mean(y_test > 0), np.mean(y_test < 0))),
            "models": json.dumps({m.label: m.options for m in models}, sort_keys=True),
        },
    )


# ---------------------------------------------------------------------------
# Spectra
# ---------------------------------------------------------------------------

def spectral_decay(
    *,
    dims: Sequence[int] = (2, 3, 4),
    depths: Sequence[int] = (2, 4, 8),
    gammas: Sequence[float] = (0.5, 1.0),
    k_max: int = 256,
    fit_range: tuple[int, int] = (32, 128),
    activation: str = "relu",
    ffnet_options: Mapping[str, Any] | None = None,
    resnet_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Gegenbauer spectra of the NTKs on S^(d−1) and their decay exponents (BGGB).

    Returns ``coefficient(model, depth, d, k)`` (μ_k, see
    :func:`nth_dynamics.spectrum.gegenbauer_coefficients`) and
    ``exponent(model, depth, d, parity)``: the slope of log μ_k against log k
    over ``fit_range``, fitted separately over even and odd k (their constants
    differ; NaN where the coefficients of that parity vanish, as for smooth odd
    activations, or are not all positive). BGGB: −d for ReLU at depth ≥ 2.
    """
    models = depth_models(gammas, activation=activation, ffnet_options=ffnet_options, resnet_options=resnet_options)
    coefficients = np.empty((len(models), len(depths), len(dims), k_max + 1))
    exponents = np.full((len(models), len(depths), len(dims), 2), np.nan)
    for i, model in enumerate(models):
        for j, L in enumerate(depths):
            profile = _cached_profile(model, int(L))
            for l, d in enumerate(dims):
                mu = spectrum.gegenbauer_coefficients(profile, int(d), k_max)
                coefficients[i, j, l] = mu
                for p, parity in enumerate(("even", "odd")):
                    try:
                        exponents[i, j, l, p] = spectrum.decay_exponent(mu, *fit_range, parity=parity).exponent
                    except ValueError:
                        pass  # that parity vanishes: leave NaN
    return xr.Dataset(
        {
            "coefficient": (("model", "depth", "d", "k"), coefficients, _attrs("Gegenbauer coefficient mu_k (eigenvalue)")),
            "exponent": (("model", "depth", "d", "parity"), exponents, _attrs("fitted decay exponent of mu_k in k")),
        },
        coords={**_model_coords(models), "depth": np.asarray(depths), "d": np.asarray(dims), "k": np.arange(k_max + 1), "parity": ["even", "odd"]},
        attrs={
            "title": "Gegenbauer spectra of infinite-width NTKs on the sphere (BGGB)",
            "fit_range": json.dumps(list(fit_range)),
            "activation": activation,
            "models": json.dumps({m.label: m.options for m in models}, sort_keys=True),
        },
    )


def _cached_profile(model: Model, depth: int):
    """k(ρ) of one model; the spectra of several d share the same quadrature nodes."""
    cache: dict[bytes, np.ndarray] = {}

    def profile(rho: np.ndarray) -> np.ndarray:
        key = np.asarray(rho).tobytes()
        if key not in cache:
            cache[key] = np.asarray(limits.ntk_profile(rho, model.architecture, depth, **model.options))
        return cache[key]

    return profile


# ---------------------------------------------------------------------------
# Writing: datasets, figures, README
# ---------------------------------------------------------------------------

def _attrs(long_name: str, units: str = "1") -> dict[str, str]:
    return {"long_name": long_name, "units": units}


def _provenance(ds: xr.Dataset, call: str) -> xr.Dataset:
    attributes = base_attributes(f"nth_dynamics.depth_study.{call}")
    ds.attrs.update(attributes)
    return ds


def _save_figure(fig, stem: Path) -> list[Path]:
    """Lay out and close ``fig`` after writing it as PNG and SVG next to each other."""
    fig.tight_layout()
    paths = save_figure(fig, stem, dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_kernel_shapes(ds: xr.Dataset, stem: Path, show_depths: Iterable[int] = (1, 10, 100, 1000)) -> list[Path]:
    """Shape against ρ for several depths (one panel per model) and Θ(0.5)/Θ(1) against depth."""
    plt = _pyplot()
    show = [L for L in show_depths if L in ds.depth.values]
    models = list(ds.model.values)
    fig, axes = plt.subplots(1, len(models) + 1, figsize=(3.6 * (len(models) + 1), 3.4))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(show)))
    for ax, model in zip(axes, models):
        for colour, L in zip(colours, show):
            ax.plot(ds.rho, ds.ntk_shape.sel(model=model, depth=L), color=colour, label=f"L = {L}")
        ax.axhline(0.25, color="grey", lw=0.7, ls=":")
        ax.set(title=model, xlabel="ρ = x·x′", ylim=(-0.1, 1.02))
    axes[0].set_ylabel("Θ_L(ρ) / Θ_L(1)")
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    for model in models:
        ax.semilogx(ds.depth, ds.shape_at_half.sel(model=model), marker=".", label=model)
    ax.plot(ds.table_L - 1, ds.section6_reference, "kx", label="docs/theory.md §6 (depth = L − 1)")
    ax.axhline(0.25, color="grey", lw=0.7, ls=":")
    ax.set(title="ρ = 0.5", xlabel="depth L", ylabel="Θ_L(0.5) / Θ_L(1)")
    ax.legend(fontsize=7)
    return _save_figure(fig, stem)


def plot_generalization(datasets: Sequence[xr.Dataset], stem: Path, flow_time: float = 100.0) -> list[Path]:
    """Test error (and test MSE) against depth for each task, kernel regression
    solid, gradient flow at ``flow_time`` dashed."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.0 * len(datasets), 7.0), squeeze=False)
    for column, ds in enumerate(datasets):
        for row, (name, label) in enumerate((("test_error", "test error (sign)"), ("test_mse", "relative test MSE"))):
            ax = axes[row, column]
            for colour, model in zip(plt.cm.tab10.colors, ds.model.values):
                ax.semilogx(ds.depth, ds[name].sel(model=model, time=np.inf), color=colour, marker=".", label=f"{model} regression")
                if flow_time in ds.time.values:
                    ax.semilogx(ds.depth, ds[name].sel(model=model, time=flow_time), color=colour, ls="--", lw=0.9)
            if name == "test_mse":
                ax.axhline(ds.attrs["constant_predictor_test_mse"], color="grey", ls=":", lw=0.8)
            else:
                ax.axhline(ds.attrs["majority_class_test_error"], color="grey", ls=":", lw=0.8)
            ax.set(xlabel="depth L", ylabel=label, title=f"{ds.attrs['task']} (dashed: flow t = {flow_time:g})")
        axes[0, column].legend(fontsize=7)
    return _save_figure(fig, stem)


def plot_spectra(ds: xr.Dataset, stem: Path, smooth: xr.Dataset | None = None) -> list[Path]:
    """μ_k against k on log-log axes, one panel per d, with the k^(−d) guide."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, ds.sizes["d"], figsize=(4.6 * ds.sizes["d"], 4.0), squeeze=False)
    k = ds.k.values[1:]
    for ax, d in zip(axes[0], ds.d.values):
        for colour, model in zip(plt.cm.tab10.colors, ds.model.values):
            for style, L in zip(("-", "--", ":"), ds.depth.values):
                mu = ds.coefficient.sel(model=model, depth=L, d=d).values[1:]
                ax.loglog(k, np.where(mu > 0, mu, np.nan), color=colour, ls=style, lw=0.9, label=f"{model} L={L}")
        if smooth is not None and d in smooth.d.values:
            for model in smooth.model.values[:1]:
                mu = smooth.coefficient.sel(model=model, d=d).isel(depth=0).values[1:]
                ax.loglog(k, np.where(mu > 1e-14, mu, np.nan), "k.", ms=3, label=f"{model} {smooth.attrs['activation']}")
        k_anchor = min(32, int(k[-1]))  # the guide passes through μ_32 (or the last μ_k of a short spectrum)
        anchor = ds.coefficient.sel(d=d).isel(model=0, depth=0).values[k_anchor]
        ax.loglog(k, anchor * (k / k_anchor) ** (-float(d)), color="grey", lw=2, alpha=0.4, label=f"k^-{d}")
        ax.set(title=f"S^{d - 1} (d = {d})", xlabel="degree k", ylabel="μ_k", ylim=(1e-14, 1))
    axes[0, 0].legend(fontsize=6, ncol=2)
    return _save_figure(fig, stem)


def plot_width_convergence(datasets: Sequence[xr.Dataset], stem: Path) -> list[Path]:
    """Per-seed deviation, its mean and the seed-mean deviation against width, log-log."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for colour, ds in zip(plt.cm.tab10.colors, datasets):
        label = f"{ds.attrs['architecture']} depth {ds.attrs['depth']}"
        w = ds.width.values
        ax.loglog(np.repeat(w, ds.sizes["seed"]), ds.deviation.values.ravel(), ".", color=colour, alpha=0.3, ms=4)
        ax.loglog(w, ds.mean_deviation, "o-", color=colour, label=f"{label}: slope {ds.attrs['slope']:.2f}")
        ax.loglog(w, ds.seed_mean_deviation, "s--", color=colour, ms=4, lw=0.8, label=f"{label}: seed mean")
    w = datasets[0].width.values
    ax.loglog(w, datasets[0].mean_deviation.values[0] * (w / w[0]) ** -0.5, color="grey", lw=2, alpha=0.4, label="width^-1/2")
    ax.set(xlabel="width m", ylabel="‖K2₀ − Θ∞‖_F / ‖Θ∞‖_F", title="finite networks → infinite-width NTK")
    ax.legend(fontsize=7)
    return _save_figure(fig, stem)


def time_large_kernels(n: int = 1000, depth: int = 1000, d: int = 10) -> dict[str, float]:
    """Wall time of the NNGP and NTK of ``n × n`` points at ``depth``
    (ReLU FFNet and γ = 1/2 ResNet), after compilation."""
    x = np.random.default_rng(0).standard_normal((n, d))
    seconds = {}
    for architecture, options in (("ffnet", {"activation": "relu"}), ("resnet", {"activation": "relu", "gamma": 0.5})):
        limits.kernels(x[:8], x, architecture, 1, **options).ntk.block_until_ready()
        limits.kernels(x, None, architecture, 1, **options).ntk.block_until_ready()
        start = time.perf_counter()
        limits.kernels(x, None, architecture, depth, **options).ntk.block_until_ready()
        seconds[architecture] = time.perf_counter() - start
    return seconds


def run_all(outdir: str | os.PathLike = "results/infinite_width", *, quick: bool = False) -> dict[str, xr.Dataset]:
    """Run every experiment of this module and write the results to ``outdir``:
    ``<name>.nc`` Datasets, ``<name>.png``/``.svg`` figures and ``README.md``.

    ``quick=True`` shrinks every sweep (for a smoke test in seconds to a minute).
    """

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if quick:
        depths, widths, seeds, k_max, fit, n_train, n_test = (1, 10, 100), (64, 128, 256), 2, 64, (16, 64), 40, 60
    else:
        depths, widths, seeds, k_max, fit, n_train, n_test = DEFAULT_DEPTHS, (64, 128, 256, 512, 1024, 2048), 16, 256, (32, 128), 150, 200
    datasets: dict[str, xr.Dataset] = {}
    started = time.perf_counter()
    datasets["kernel_shapes"] = _provenance(kernel_shapes(depths=depths + ((10000,) if not quick else ())), "kernel_shapes()")
    for task in ("digits", "teacher"):
        datasets[f"test_error_{task}"] = _provenance(
            depth_generalization(task=task, depths=depths, n_train=n_train, n_test=n_test), f"depth_generalization(task={task!r})"
        )
    datasets["spectra"] = _provenance(
        spectral_decay(depths=(2, 4, 8), k_max=k_max, fit_range=fit), "spectral_decay()"
    )
    datasets["spectra_tanh"] = _provenance(
        spectral_decay(dims=(3,), depths=(2,), gammas=(), k_max=k_max, fit_range=fit, activation="tanh"),
        "spectral_decay(activation='tanh')",
    )
    for architecture, depth in (("ffnet", 2), ("resnet", 2)):
        datasets[f"width_convergence_{architecture}"] = _provenance(
            width_convergence(architecture=architecture, depth=depth, widths=widths, seeds=seeds, n=8, d=3),
            f"width_convergence(architecture={architecture!r}, depth={depth})",
        )
    timing = {} if quick else time_large_kernels()
    for name, ds in datasets.items():
        write_dataset(ds, outdir / f"{name}.nc")
    plot_kernel_shapes(datasets["kernel_shapes"], outdir / "kernel_shapes")
    plot_generalization([datasets["test_error_digits"], datasets["test_error_teacher"]], outdir / "test_error_vs_depth")
    plot_spectra(datasets["spectra"], outdir / "spectra", smooth=datasets["spectra_tanh"])
    plot_width_convergence(
        [datasets["width_convergence_ffnet"], datasets["width_convergence_resnet"]], outdir / "width_convergence"
    )
    write_report(datasets, outdir / "README.md", timing=timing, wall_time=time.perf_counter() - started)
    return datasets


def write_report(
    datasets: Mapping[str, xr.Dataset], path: Path, *, timing: Mapping[str, float] | None = None, wall_time: float | None = None
) -> Path:
    """README.md of the results: every number of docs/theory.md §6 next to ours."""
    shapes = datasets["kernel_shapes"]
    lines = [
        "# Infinite-width kernels: depth degeneracy, finite-width convergence, spectra",
        "",
        "Generated by `nth_dynamics.depth_study.run_all()` (docs/theory.md §6; HWTZ, BGGB).",
        "Kernels from `nth_dynamics.limits` (plain ReLU, NTK parametrization, N(0,1) weights, "
        "the conventions of `nth_dynamics.networks`). Depth L is the networks' depth: "
        "FFNet hidden-to-hidden layers (docs/theory.md §6's L − 1), ResNet blocks. The FFNet is HWTZ's "
        "(every layer trained, readout on σ(h_L)); the ResNets are §6's (two-matrix branch, "
        "only W_l, V_l trained, linear readout, α = L^(−γ)).",
        "",
        "## docs/theory.md §6 FFNet table: Θ_L(0.5)/(L+1)",
        "",
        "| §6's L | network depth | docs/theory.md §6 | nth_dynamics |",
        "|---:|---:|---:|---:|",
    ]
    for L in shapes.table_L.values:
        lines.append(
            f"| {L} | {L - 1} | {float(shapes.section6_reference.sel(table_L=L)):.4g} | {float(shapes.section6.sel(table_L=L)):.5f} |"
        )
    lines += [
        "",
        "At L = 10 the recursion gives 0.37349, which rounds to 0.373; the table's 0.374 is the "
        "double rounding 0.37349 → 0.3735 → 0.374. The other three agree to the digits given. "
        "`limits.ntk_shape(0.5, \"ffnet\", L - 1, activation=\"relu\")` reproduces the table: "
        "Θ(ρ)/Θ(1) is invariant under the c_σ = 2 rescaling of ReLU.",
        "",
        "## Kernel shape Θ_L(0.5)/Θ_L(1) and spike half-width against depth",
        "",
        "| model | " + " | ".join(f"L={L}" for L in shapes.depth.values) + " |",
        "|---|" + "---:|" * shapes.sizes["depth"],
    ]
    for model in shapes.model.values:
        values = shapes.shape_at_half.sel(model=model).values
        lines.append(f"| {model} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    lines += ["", "Half-height angle θ½ of the spike at ρ = 1 (radians; → 0 = spiky):", ""]
    lines += ["| model | " + " | ".join(f"L={L}" for L in shapes.depth.values) + " |", "|---|" + "---:|" * shapes.sizes["depth"]]
    for model in shapes.model.values:
        values = shapes.spike_angle.sel(model=model).values
        lines.append(f"| {model} | " + " | ".join("—" if np.isnan(v) else f"{v:.3f}" for v in values) + " |")
    deepest = int(shapes.depth.values[-1])
    off = np.abs(shapes.rho.values) <= 0.9
    spread = lambda model, L: float(np.max(np.abs(shapes.ntk_shape.sel(model=model, depth=L).values[off] - 0.25)))  # noqa: E731
    rho = shapes.rho.values
    kappa0 = 1 - np.arccos(rho) / np.pi
    kappa1 = (np.sqrt(1 - rho**2) + (np.pi - np.arccos(rho)) * rho) / np.pi
    two_layer = (kappa1 + rho * kappa0) / 2
    lines += [
        "",
        "docs/theory.md §6 against these curves (`kernel_shapes.nc`, `kernel_shapes.png`):",
        "",
        f"- FFNet → 1/4 for every ρ ≠ 1: max over |ρ| ≤ 0.9 of |shape − 1/4| is "
        f"{spread('ffnet', deepest):.4f} at L = {deepest} (degenerate, spike narrowing).",
    ]
    if "resnet_g1" in shapes.model.values:
        diff = float(np.max(np.abs(shapes.ntk_shape.sel(model="resnet_g1", depth=deepest).values - two_layer)))
        lines.append(
            f"- γ = 1 keeps the two-layer shape (κ1(ρ) + ρ κ0(ρ))/2: max deviation {diff:.2e} at L = {deepest}."
        )
    if "resnet_g0.5" in shapes.model.values:
        depth_values = shapes.depth.values
        a, b = int(depth_values[-2]), deepest
        change = float(np.max(np.abs(shapes.ntk_shape.sel(model="resnet_g0.5", depth=a) - shapes.ntk_shape.sel(model="resnet_g0.5", depth=b))))
        other = float(np.max(np.abs(shapes.ntk_shape.sel(model="resnet_g0.5", depth=b).values - two_layer)))
        lines.append(
            f"- γ = 1/2 converges to a different non-degenerate shape: max change L = {a} → {b} is {change:.1e}; "
            f"it differs from the two-layer shape by up to {other:.3f}, and Θ(0.5)/Θ(1) = "
            f"{float(shapes.shape_at_half.sel(model='resnet_g0.5', depth=b)):.4f}."
        )
    if "resnet_g0" in shapes.model.values:
        lines.append(
            f"- γ = 0 degenerates like the FFNet: max |shape − 1/4| over |ρ| ≤ 0.9 is "
            f"{spread('resnet_g0', deepest):.4f} at L = {deepest} (its scale grows like (1 + 1/2)^L; "
            "`limits` renormalises every layer, so the shape is exact at any depth)."
        )
    for architecture in ("ffnet", "resnet"):
        name = f"width_convergence_{architecture}"
        if name not in datasets:
            continue
        ds = datasets[name]
        if architecture == "ffnet":
            lines += [
                "",
                "## Finite networks → infinite width (`width_convergence_*.nc`, `width_convergence.png`)",
                "",
                "Seed ensembles of `nth_dynamics.networks` (tanh, every group trained, n = 8 points on S², "
                "`eqx.filter_vmap` over seeds); K2₀ over the trained parameters against `limits.ntk`. "
                "docs/theory.md §4: |K2₀ − Θ∞| ~ m^(−1/2); target slope −0.5 ± 0.15.",
                "",
                "| network | widths | seeds | slope (95 % bootstrap) | seed-mean deviation at the widest | per-seed at the widest |",
                "|---|---|---:|---|---:|---:|",
            ]
        lines.append(
            f"| {ds.attrs['architecture']} depth {ds.attrs['depth']} | {int(ds.width[0])}–{int(ds.width[-1])} | "
            f"{ds.sizes['seed']} | {ds.attrs['slope']:.3f} ({ds.attrs['slope_ci_low']:.3f}, {ds.attrs['slope_ci_high']:.3f}) | "
            f"{float(ds.seed_mean_deviation[-1]):.4f} | {float(ds.mean_deviation[-1]):.4f} |"
        )
    spectra = datasets["spectra"]
    lines += [
        "",
        "## Spectra on S^(d−1) (`spectra.nc`, `spectra.png`)",
        "",
        f"Gegenbauer coefficients μ_k of the ReLU NTKs, decay exponent fitted over k ∈ {json.loads(spectra.attrs['fit_range'])} "
        "separately for even and odd k (their constants differ: the kernels' singularities at ρ = 1 and "
        "ρ = −1 add for one parity and cancel partly for the other). BGGB / docs/theory.md §6: −d for depth ≥ 2; "
        "target ±0.15.",
        "",
        "| model | depth | " + " | ".join(f"d={d} even / odd" for d in spectra.d.values) + " |",
        "|---|---:|" + "---|" * spectra.sizes["d"],
    ]
    for model in spectra.model.values:
        for L in spectra.depth.values:
            cells = [
                "{:.3f} / {:.3f}".format(*spectra.exponent.sel(model=model, depth=L, d=d).values) for d in spectra.d.values
            ]
            lines.append(f"| {model} | {L} | " + " | ".join(cells) + " |")
    worst = float(np.nanmax(np.abs(spectra.exponent.values + spectra.d.values[None, None, :, None])))
    lines += ["", f"Largest |exponent + d| over the table: {worst:.3f}."]
    if "spectra_tanh" in datasets:
        tanh = datasets["spectra_tanh"]
        mu = tanh.coefficient.isel(model=0, depth=0, d=0).values
        lines += [
            "",
            "Smooth activations fall faster than any power: the tanh FFNet NTK (depth 2, d = 3) is odd in ρ "
            f"(even μ_k vanish) and its odd μ_k go {mu[1]:.2e}, {mu[5]:.2e}, {mu[9]:.2e}, {mu[13]:.2e} "
            "at k = 1, 5, 9, 13 — geometric, until the quadrature floor near 1e-12.",
        ]
    lines += [
        "",
        "## Test error against depth (`test_error_*.nc`, `test_error_vs_depth.png`)",
        "",
        "NTK normalised to unit diagonal; kernel regression (t = ∞) and the gradient-flow closed form "
        "f(t) = K_et K_tt⁻¹ (I − exp(−t K_tt/n)) y from f = 0.",
    ]
    for task in ("digits", "teacher"):
        ds = datasets.get(f"test_error_{task}")
        if ds is None:
            continue
        detail = f"classes {json.loads(ds.attrs['classes'])}, " if task == "digits" else "random tanh network teacher, "
        lines += [
            "",
            f"**{task}** ({detail}d = {ds.attrs['d']}, n = {ds.attrs['n_train']}, {ds.attrs['n_test']} test points; "
            f"constant predictor: relative MSE {ds.attrs['constant_predictor_test_mse']:.3f}, "
            f"majority-class error {ds.attrs['majority_class_test_error']:.3f}). Kernel regression, "
            "test error (sign) / relative test MSE:",
            "",
            "| model | " + " | ".join(f"L={L}" for L in ds.depth.values) + " |",
            "|---|" + "---|" * ds.sizes["depth"],
        ]
        for model in ds.model.values:
            err = ds.test_error.sel(model=model, time=np.inf).values
            mse = ds.test_mse.sel(model=model, time=np.inf).values
            lines.append(f"| {model} | " + " | ".join(f"{e:.3f} / {m:.3f}" for e, m in zip(err, mse)) + " |")
    lines += ["", "Reading, from the tables:", ""]
    for task in ("digits", "teacher"):
        ds = datasets.get(f"test_error_{task}")
        if ds is None or "ffnet" not in ds.model.values:
            continue
        regression = ds.sel(time=np.inf)
        first, last = int(ds.depth.values[0]), int(ds.depth.values[-1])
        ffnet = regression.sel(model="ffnet")
        stable = [m for m in ds.model.values if m in ("resnet_g0.5", "resnet_g1")]
        spread = max((float(np.ptp(regression.test_mse.sel(model=m).values)) for m in stable), default=float("nan"))
        lines.append(
            f"- {task}: the FFNet's relative test MSE goes {float(ffnet.test_mse.sel(depth=first)):.3f} → "
            f"{float(ffnet.test_mse.sel(depth=last)):.3f} from L = {first} to {last} (constant predictor "
            f"{ds.attrs['constant_predictor_test_mse']:.3f}), its sign error "
            f"{float(ffnet.test_error.sel(depth=first)):.3f} → {float(ffnet.test_error.sel(depth=last)):.3f}; "
            f"λ_min of its normalised train Gram matrix → {float(ds.lambda_min.sel(model='ffnet', depth=last)):.3f} "
            "(¼·11ᵀ + ¾·I has ¾). The γ = 1/2 and γ = 1 ResNets' MSE varies by at most "
            f"{spread:.3f} over all depths."
        )
    lines += [
        "",
        "The degenerate kernels' test predictions shrink to a constant, so the MSE climbs to the constant "
        "predictor's; the sign error follows later, because ridgeless regression still reads the sign from "
        "the small residual structure of a nearly degenerate kernel until that structure is comparable "
        "to the constant part (HWTZ's \"asymptotically unlearnable\" is the MSE statement). The γ = 0 "
        "ResNet degenerates the same way, more slowly. Gradient flow at finite t (the dashed lines of "
        "the figure, `time` in the Datasets) tells the same story.",
    ]
    if timing:
        lines += [
            "",
            "## Speed",
            "",
            "NNGP + NTK of 1000 × 1000 points at depth 1000 (after compilation, this machine): "
            + ", ".join(f"{arch} {seconds:.2f} s" for arch, seconds in timing.items())
            + ". See `benchmarks/limits.py` for the comparison with a naive per-layer implementation.",
        ]
    if wall_time is not None:
        lines += ["", f"Total wall time of `run_all`: {wall_time / 60:.1f} min."]
    return write_text("\n".join(lines) + "\n", path)


__all__ = [
    "DEFAULT_DEPTHS",
    "DEFAULT_GAMMAS",
    "KernelPredictions",
    "Model",
    "SECTION6_TABLE",
    "depth_generalization",
    "depth_models",
    "empirical_ntk",
    "ensemble_ntk",
    "kernel_predictions",
    "kernel_shapes",
    "plot_generalization",
    "plot_kernel_shapes",
    "plot_spectra",
    "plot_width_convergence",
    "run_all",
    "spectral_decay",
    "task_data",
    "time_large_kernels",
    "width_convergence",
]
