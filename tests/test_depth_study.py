"""The §6 experiments: finite networks against the limit, depth degeneracy of
learning, spectra datasets, and writing the results."""

import math

import numpy as np
import pytest
import xarray as xr
from scipy import linalg

from nth_dynamics.pipeline.results import read_dataset, write_dataset
from nth_dynamics.theory import depth_study
from nth_dynamics.theory.studies import STUDIES


@pytest.fixture(scope="module")
def convergence():
    """tanh FFNet of depth 1, every group trained: 16 seeds at 4 widths over 1.2 decades."""
    return depth_study.width_convergence(
        architecture="ffnet", depth=1, widths=(64, 160, 400, 1000), seeds=16, n=8, d=3, seed=0, activation="tanh"
    )


def test_empirical_ntk_of_the_networks_converges_to_the_limit_like_width_to_the_minus_half(convergence):
    """docs/theory.md §4: ‖K2₀ − Θ∞‖ ~ m^(−1/2). Over data seeds 0–5 this fit gives −0.40 … −0.57."""
    assert convergence.attrs["slope"] == pytest.approx(-0.5, abs=0.15)
    low, high = convergence.attrs["slope_ci_low"], convergence.attrs["slope_ci_high"]
    assert low < convergence.attrs["slope"] < high


def test_the_seed_average_of_the_networks_converges_to_the_limit(convergence):
    """The seed mean has only the O(1/m) bias left plus noise/√16: a convention
    that differs between networks.py and limits.py would leave it at the size
    of the per-seed deviation."""
    seed_mean, per_seed = convergence.seed_mean_deviation.values, convergence.mean_deviation.values
    assert seed_mean[-1] < 0.5 * per_seed[-1]
    assert seed_mean[-1] < 0.03
    assert seed_mean[-1] < seed_mean[0]


def test_kernel_predictions_match_direct_linear_algebra():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((9, 30))
    K = features @ features.T / 30 + 0.1 * np.eye(9)
    y = rng.standard_normal(6)
    n = 6
    predictions = depth_study.kernel_predictions(K, y, [0.5, 7.0, 1e7])
    assert np.allclose(predictions.regression, K[n:, :n] @ np.linalg.solve(K[:n, :n], y))
    for t, flow, flow_train in zip([0.5, 7.0], predictions.flow, predictions.flow_train):
        decay = np.eye(n) - linalg.expm(-t * K[:n, :n] / n)
        assert np.allclose(flow_train, decay @ y)
        assert np.allclose(flow, K[n:, :n] @ np.linalg.solve(K[:n, :n], decay @ y))
    assert np.allclose(predictions.flow[-1], predictions.regression)
    assert np.allclose(predictions.flow_train[-1], y)


@pytest.fixture(scope="module")
def digits_depth():
    return depth_study.depth_generalization(task="digits", depths=(1, 300), gammas=(0.5,), n_train=40, n_test=60, d=6)


def test_ffnet_kernel_loses_the_digits_task_with_depth_and_the_resnet_does_not(digits_depth):
    mse = digits_depth.test_mse.sel(time=np.inf)
    assert float(mse.sel(model="ffnet", depth=300)) > float(mse.sel(model="ffnet", depth=1)) + 0.3
    resnet = mse.sel(model="resnet_g0.5")
    assert abs(float(resnet.sel(depth=300)) - float(resnet.sel(depth=1))) < 0.05
    # the degenerate Gram matrix ¼·11ᵀ + ¾·I has λ_min → 3/4
    assert 0.5 < float(digits_depth.lambda_min.sel(model="ffnet", depth=300)) < 0.76
    assert set(digits_depth.time.values[:-1]) == {10.0, 100.0, 1000.0} and np.isinf(digits_depth.time.values[-1])
    assert np.all((digits_depth.test_error >= 0) & (digits_depth.test_error <= 1))


def test_teacher_task_is_a_regression_on_the_sphere():
    data = depth_study.task_data("teacher", n_train=10, n_test=5, d=4, seed=1)
    assert np.allclose(np.linalg.norm(data.x_train, axis=1), 1.0)
    assert data.y_test.shape == (5,) and np.std(np.asarray(data.y_train)) > 0.05
    with pytest.raises(ValueError, match="task must be one of"):
        depth_study.task_data("mnist", n_train=10, n_test=5, d=4, seed=1)


@pytest.fixture(scope="module")
def shapes():
    return depth_study.kernel_shapes(depths=(1, 10, 100), gammas=(0.0, 1.0), angles=101)


def test_kernel_shapes_carry_the_section6_table_and_the_spike(shapes):
    assert np.allclose(shapes.section6, shapes.section6_reference, atol=6e-4)
    assert np.allclose(shapes.ntk_shape.sel(rho=1.0), 1.0)
    spike = shapes.spike_angle
    assert float(spike.sel(model="ffnet", depth=100)) < 0.5 * float(spike.sel(model="ffnet", depth=1))
    stable = spike.sel(model="resnet_g1").values
    assert np.ptp(stable) < 0.05 * stable[0]
    assert math.isnan(float(shapes.gamma.sel(model="ffnet"))) and float(shapes.gamma.sel(model="resnet_g1")) == 1.0


@pytest.fixture(scope="module")
def spectra():
    return depth_study.spectral_decay(dims=(3,), depths=(2,), gammas=(1.0,), k_max=64, fit_range=(16, 64))


def test_spectral_decay_dataset_fits_both_parities(spectra):
    exponents = spectra.exponent.sel(d=3, depth=2)
    assert np.allclose(exponents, -3.0, atol=0.15)
    assert spectra.coefficient.dims == ("model", "depth", "d", "k")


def test_results_are_written_as_netcdf_figures_and_summaries(tmp_path, convergence, digits_depth, shapes, spectra):
    datasets = {
        "kernel_shapes": shapes,
        "test_error_digits": digits_depth,
        "spectra": spectra,
        "width_convergence_ffnet": convergence,
    }
    for name, ds in datasets.items():
        write_dataset(ds, tmp_path / f"{name}.nc")
        xr.testing.assert_allclose(read_dataset(tmp_path / f"{name}.nc"), ds)
    depth_study.plot_kernel_shapes(shapes, tmp_path / "kernel_shapes")
    depth_study.plot_generalization([digits_depth], tmp_path / "test_error_vs_depth")
    depth_study.plot_spectra(spectra, tmp_path / "spectra")
    depth_study.plot_width_convergence([convergence], tmp_path / "width_convergence")
    for stem in ("kernel_shapes", "test_error_vs_depth", "spectra", "width_convergence"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 0 and (tmp_path / f"{stem}.svg").stat().st_size > 0
    assert not list(tmp_path.glob(".*.tmp"))
    text = STUDIES["kernel_shapes"](study="kernel_shapes").summarise(shapes)
    assert "| 1000 | 0.25380 | 0.2538 |" in text  # the §6 table is computed at its own L
    text = STUDIES["spectral_decay"](study="spectral_decay").summarise(spectra)
    assert "decay exponent of μ_k, even k, depth 2" in text and "| resnet_g1 |" in text
    text = STUDIES["width_convergence"](study="width_convergence").summarise(convergence)
    assert f"slope of the mean deviation in log width {convergence.attrs['slope']:.3f}" in text
    assert text.count("\n| ") == convergence.sizes["width"] + 1  # the header and one row per width


@pytest.mark.slow
def test_run_all_quick_writes_every_result(tmp_path):
    depth_study.run_all(tmp_path, quick=True)
    for name in ("kernel_shapes", "test_error_digits", "test_error_teacher", "spectra", "width_convergence_resnet"):
        assert (tmp_path / f"{name}.nc").exists()
    for stem in ("kernel_shapes", "test_error_vs_depth", "spectra", "width_convergence"):
        assert (tmp_path / f"{stem}.png").exists()
    assert not (tmp_path / "README.md").exists()  # results/infinite_width/README.md is written by hand
