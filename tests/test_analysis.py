"""Scaling-law fits and metrics of nth_dynamics.report.analysis, on synthetic Datasets
with known power laws and on the committed quickstart result."""

import json
import shutil

import numpy as np
import pytest
import xarray as xr

import nth_dynamics as nd
from nth_dynamics.pipeline.results import read_dataset
from nth_dynamics.report import analysis, power_law, tolerance

WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096)


def synthetic_result(
    *,
    widths=WIDTHS,
    seeds=8,
    orders=(2, 3, 4),
    times=(0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
    slopes=None,
    noise=0.5,
    grid=None,
    n_power=0.0,
    rng_seed=0,
    floor=None,
):
    """A Dataset shaped like a result of simulate, with exact power laws times
    log-normal seed noise (σ = ``noise``: E varies ~2× between seeds at 0.5):
    E_p = 0.1 t^p m^slope_p n^n_power, max|K(r)₀| = m^(−⌊(r−1)/2⌋), drift = t(1+t)/m.
    ``grid``: leading swept dims {name: values}; ``floor``: the solver
    tolerance written into the scenario attribute (the floor is 10× it)."""
    grid = dict(grid or {})
    slopes = dict(slopes or {p: analysis.predicted_error_slope(p) for p in orders})
    rng = np.random.default_rng(rng_seed)
    lead = tuple(grid)
    lead_shape = tuple(len(v) for v in grid.values())
    m = np.asarray(widths, float)
    t = np.asarray(times, float)
    p = np.asarray(orders)
    ranks = np.arange(2, 7)

    def noisy(shape):
        return np.exp(noise * rng.standard_normal(lead_shape + shape))

    n_factor = 1.0
    if "n_train" in grid:
        n = np.asarray(grid["n_train"], float)
        n_factor = (n ** n_power).reshape([-1 if d == "n_train" else 1 for d in lead] + [1] * 4)
    slope = np.array([slopes[o] for o in orders])
    error = (0.1 * t[None, None, None, :] ** p[None, None, :, None]
             * m[:, None, None, None] ** slope[None, None, :, None])
    error = n_factor * error * noisy((len(m), seeds, 1, 1))
    kernel = m[:, None, None] ** analysis.predicted_kernel_slope(ranks)[None, None, :]
    kernel = kernel * noisy((len(m), seeds, len(ranks)))
    drift = (t * (1 + t))[None, None, :] / m[:, None, None] * noisy((len(m), seeds, 1))
    drift_nth = drift[..., None, :] * (p > 2)[:, None]
    coords = {**{k: np.asarray(v) for k, v in grid.items()}, "width": np.asarray(widths), "seed": np.arange(seeds),
              "order": p, "time": t, "rank": ranks}
    ds = xr.Dataset(
        {
            "truncation_error": (lead + ("width", "seed", "order", "time"), error),
            "test_error": (lead + ("width", "seed", "order", "time"), 1.3 * error),
            "kernel_magnitude": (lead + ("width", "seed", "rank"), kernel),
            "ntk_drift_ref": (lead + ("width", "seed", "time"), drift),
            "ntk_drift_nth": (lead + ("width", "seed", "order", "time"), drift_nth),
            "lambda_min": (lead + ("width", "seed"), 0.1 * noisy((len(m), seeds))),
        },
        coords=coords,
        attrs={"title": "synthetic power laws"},
    )
    if floor is not None:
        ds.attrs["scenario"] = json.dumps({"name": "synthetic", "hierarchy": {"rtol": floor, "atol": floor},
                                           "reference": {"method": "gradient_flow", "rtol": floor, "atol": floor}})
    return ds


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The committed quickstart result, read from a copy."""
    copy = tmp_path_factory.mktemp("quickstart") / "quickstart.nc"
    shutil.copy("results/quickstart.nc", copy)
    return read_dataset(copy)


# ----------------------------------------------------------------------------- fits


def test_the_fit_recovers_a_known_power_law():
    ds = synthetic_result(slopes={2: -1.0, 3: -1.0, 4: -2.0}, noise=0.5)
    fits = analysis.analyse(ds)
    at_t1 = analysis.quantity_fits(fits, "truncation_error").isel(time=-1)
    for order, true in ((2, -1.0), (3, -1.0), (4, -2.0)):
        fit = at_t1.sel(order=order)
        assert abs(float(fit.slope) - true) < 0.15
        assert float(fit.slope_low) < float(fit.slope) < float(fit.slope_high)
        assert float(fit.slope_high) - float(fit.slope_low) < 0.5
        assert float(fit.predicted_slope) == true
        assert (float(fit.fit_min_width), float(fit.fit_max_width), int(fit.fit_points)) == (64, 4096, 7)


def test_the_bootstrap_interval_covers_the_true_slope_of_most_noisy_power_laws():
    """200 independent sweeps of 8 seeds (E varying ~2× between seeds): the
    95 % percentile interval covers the true slope in about 88 % of them (a
    bootstrap over 8 seeds is somewhat narrow), and the fit is unbiased."""
    sweeps = [synthetic_result(noise=0.5, rng_seed=10 + k, orders=(2,), times=(1.0,)).truncation_error
              for k in range(200)]
    fit = analysis.fit_power_law(xr.concat(sweeps, "sweep").isel(order=0, time=0))
    covered = float(((fit.slope_low <= -1.0) & (-1.0 <= fit.slope_high)).mean())
    assert 0.82 <= covered <= 0.99
    assert abs(float(fit.slope.mean()) + 1.0) < 0.02


def test_a_slope_of_the_wrong_sign_disagrees_with_the_prediction():
    ds = synthetic_result(slopes={2: +1.0, 3: -1.0, 4: -2.0})
    fit = analysis.quantity_fits(analysis.analyse(ds), "truncation_error").isel(time=-1).sel(order=2)
    assert float(fit.slope) > 0.8
    assert not float(fit.slope_low) <= -1.0 <= float(fit.slope_high)
    assert not bool(fit.agrees)


def test_a_slope_close_to_the_prediction_but_off_by_more_than_the_tolerance_disagrees():
    ds = synthetic_result(slopes={2: -1.5, 3: -1.0, 4: -2.0}, noise=0.05)
    fit = analysis.quantity_fits(analysis.analyse(ds), "truncation_error").isel(time=-1).sel(order=2)
    assert abs(float(fit.slope) + 1.5) < 0.05 and not bool(fit.agrees)


def test_without_noise_the_fit_is_exact():
    ds = synthetic_result(noise=0.0)
    fit = analysis.fit_power_law(ds.truncation_error.sel(order=4, time=2.0))
    assert float(fit.slope) == pytest.approx(-2.0, abs=1e-12)
    assert float(fit.intercept) == pytest.approx(np.log(0.1 * 2.0**4), abs=1e-10)
    assert float(fit.slope_low) == pytest.approx(float(fit.slope_high), abs=1e-12)


def test_the_bootstrap_is_reproducible_and_resamples_whole_seeds():
    values = synthetic_result().truncation_error.sel(order=2, time=1.0)
    first, again = analysis.fit_power_law(values, seed=3), analysis.fit_power_law(values, seed=3)
    other = analysis.fit_power_law(values, seed=4)
    assert float(first.slope_low) == float(again.slope_low)
    assert float(first.slope_low) != float(other.slope_low)
    counts = analysis.resample_counts(5, 100, seed=0)
    assert counts.shape == (100, 5) and np.all(counts.sum(axis=1) == 5)


def test_one_seed_gives_a_slope_without_an_interval():
    values = synthetic_result(seeds=1).truncation_error.sel(order=2, time=1.0)
    fit = analysis.fit_power_law(values)
    assert np.isfinite(float(fit.slope)) and np.isnan(float(fit.slope_low))


def test_the_fit_range_is_selectable_and_reported():
    """A slope that bends from −3 to −2 at m = 256, as log factors bend p = 4
    at small widths (docs/theory.md §7): fitted from 256 on, it is −2."""
    ds = synthetic_result(noise=0.05)
    m = ds.width
    bent = ds.truncation_error * xr.where(m < 256, (m / 256.0) ** -1.0, 1.0)
    whole = analysis.fit_power_law(bent.sel(order=4, time=2.0))
    wide = analysis.fit_power_law(bent.sel(order=4, time=2.0), lower=256)
    assert float(whole.slope) < -2.2
    assert float(wide.slope) == pytest.approx(-2.0, abs=0.1)
    assert (float(wide.fit_min_width), float(wide.fit_max_width), int(wide.fit_points)) == (256, 4096, 5)
    fits = analysis.analyse(ds, min_width=256, max_width=2048)
    assert fits.attrs["fit_min_width"] == 256 and fits.attrs["fit_max_width"] == 2048
    assert float(fits.truncation_error_fit_max_width.max()) == 2048


def test_errors_at_the_solver_floor_are_left_out_of_the_fit():
    """With tolerance 1e-9 the floor is 1e-8: E_4(t = 0.05) = 0.1·0.05⁴/m² is
    below it from m = 64 on and no fit is made; at t = 2 every width is above it."""
    ds = synthetic_result(noise=0.0, floor=1e-9)
    assert analysis.error_floor(ds) == pytest.approx(1e-8)
    fits = analysis.quantity_fits(analysis.analyse(ds), "truncation_error").sel(order=4)
    assert int(fits.fit_points.sel(time=0.05)) == 0 and np.isnan(float(fits.slope.sel(time=0.05)))
    assert int(fits.fit_points.sel(time=2.0)) == 7
    assert analysis.error_floor(synthetic_result()) == 0.0


def test_every_swept_dimension_is_a_separate_series():
    ds = synthetic_result(grid={"architecture": ["ffnet", "resnet"], "depth": [2, 4]}, seeds=6)
    ds["truncation_error"] = ds.truncation_error * (ds.width / 64.0) ** xr.DataArray(
        [0.0, -0.5], coords={"architecture": ["ffnet", "resnet"]})
    fits = analysis.analyse(ds)
    assert set(fits.truncation_error_slope.dims) == {"architecture", "depth", "order", "time"}
    slopes = fits.truncation_error_slope.sel(order=2, time=2.0)
    assert float(slopes.sel(architecture="ffnet", depth=4)) == pytest.approx(-1.0, abs=0.2)
    assert float(slopes.sel(architecture="resnet", depth=4)) == pytest.approx(-1.5, abs=0.2)


# ----------------------------------------------------------------------------- predictions and other fits


def test_the_predicted_slopes_are_those_of_math_section_4():
    assert [analysis.predicted_error_slope(p) for p in range(2, 7)] == [-1, -1, -2, -2, -3]
    assert [analysis.predicted_kernel_slope(r) for r in range(2, 7)] == [0, -1, -1, -2, -2]
    fits = analysis.analyse(synthetic_result())
    assert fits.kernel_magnitude_predicted_slope.values.tolist() == [0, -1, -1, -2, -2]
    assert float(fits.ntk_drift_ref_predicted_slope.isel(time=-1)) == -1
    nth = fits.ntk_drift_nth_predicted_slope.isel(time=-1)
    assert np.isnan(float(nth.sel(order=2))) and float(nth.sel(order=4)) == -1


def test_kernel_magnitude_and_drift_slopes_are_recovered():
    fits = analysis.analyse(synthetic_result(noise=0.3))
    np.testing.assert_allclose(fits.kernel_magnitude_slope, [0, -1, -1, -2, -2], atol=0.15)
    assert float(fits.ntk_drift_ref_slope.isel(time=-1)) == pytest.approx(-1.0, abs=0.15)
    assert np.isnan(float(fits.ntk_drift_nth_slope.isel(time=-1).sel(order=2)))  # p = 2: K2 frozen, no drift


def test_the_error_grows_like_t_to_the_p_at_small_t():
    fits = analysis.analyse(synthetic_result(noise=0.3))
    exponent = fits.truncation_error_time_exponent.sel(width=256)
    np.testing.assert_allclose(exponent.values, [2, 3, 4], atol=1e-9)  # the seed noise is the same at every t
    assert float(fits.truncation_error_fit_max_time.max()) == analysis.SMALL_TIME
    assert fits.truncation_error_predicted_time_exponent.sel(width=256).values.tolist() == [2, 3, 4]


def test_the_width_at_a_tolerance_is_interpolated_in_log_log():
    widths = xr.DataArray(np.array([64.0, 128, 256, 512]), dims="width")
    error = (1.0 / widths).assign_coords(width=widths.values)
    assert float(analysis.width_at_tolerance(error, 1 / 100)) == pytest.approx(100.0)
    assert np.isnan(float(analysis.width_at_tolerance(error, 1 / 1000)))  # not reached
    assert np.isnan(float(analysis.width_at_tolerance(error, 1 / 10)))  # below it already


def test_the_exponent_of_the_tolerance_width_in_n_is_recovered():
    """E_p = 0.1 t^p n^1.5 m^slope: the width at a fixed tolerance grows like
    n^(1.5/|slope|), i.e. n^1.5 for p = 2 and n^0.75 for p = 4."""
    ds = synthetic_result(grid={"architecture": ["ffnet", "resnet"], "n_train": [4, 8, 16, 32]}, n_power=1.5,
                          orders=(2, 4), widths=tuple(2**k for k in range(4, 17)), noise=0.2)
    fits = analysis.analyse(ds, tolerances={2: 1e-3, 4: 1e-5})
    assert fits.tolerance.sel(order=4) == 1e-5
    exponent = fits.n_exponent.sel(architecture="resnet")
    assert float(exponent.sel(order=2)) == pytest.approx(1.5, abs=0.15)
    assert float(exponent.sel(order=4)) == pytest.approx(0.75, abs=0.1)
    assert float(fits.n_exponent_low.sel(architecture="resnet", order=2)) < 1.5 < float(
        fits.n_exponent_high.sel(architecture="resnet", order=2))
    default = analysis.analyse(ds)  # tolerance: the median error of each order
    assert default.tolerance.sel(order=2) > 0 and np.isfinite(default.width_at_tolerance).any()
    with pytest.raises(ValueError, match="order"):
        analysis.analyse(ds, tolerances={2: 1e-3})


def test_the_fitted_tolerance_width_extrapolates_where_no_crossing_is_swept():
    """max_t E_2 = 0.1 t1² n³/m (t1 = 2; the papers' cubic requirement) over
    widths 32…512: at a tolerance of 1e-2 the n = 32 series never crosses
    inside the sweep (its width is 1.3e6), the fitted law still gives it,
    and the exponent 3."""
    ds = synthetic_result(grid={"n_train": [4, 8, 16, 32]}, n_power=3.0, orders=(2,),
                          widths=(32, 64, 128, 256, 512), noise=0.05)
    fits = analysis.analyse(ds, tolerances={2: 1e-2})
    fitted = fits.width_at_tolerance_fit.sel(order=2)
    assert np.isnan(float(fits.width_at_tolerance.sel(order=2, n_train=32)))
    # n = 32 lies 3.4 decades beyond the sweep: noise in the fitted slope is magnified there
    np.testing.assert_allclose(fitted, 0.4 * 2.0 ** np.array([6, 9, 12, 15]) / 1e-2, rtol=0.3)
    assert float(fits.n_exponent_fit.sel(order=2)) == pytest.approx(3.0, abs=0.1)
    assert float(fits.n_exponent_fit_low.sel(order=2)) < 3.0 < float(fits.n_exponent_fit_high.sel(order=2))
    assert int(fits.n_exponent_fit_points.sel(order=2)) == 4


def test_a_solve_that_stopped_early_is_above_every_tolerance_and_left_out_of_the_fitted_law():
    """E = 1/m for four seeds, but one seed's solve stopped (E = inf) at
    m = 64: the crossing of 1/100 is bracketed by 64 and 128 but cannot be
    interpolated (NaN), the power law is fitted to the other widths, and
    bootstrap samples without that seed still give intervals."""
    widths = np.array([32.0, 64, 128, 256, 512])
    error = xr.DataArray(np.tile(1 / widths[:, None], (1, 4)), dims=("width", "seed"), coords={"width": widths})
    error[1, 2] = np.inf
    out = analysis.tolerance_widths(error, 1 / 100)
    assert np.isnan(float(out.width_at_tolerance))
    assert float(out.width_at_tolerance_fit) == pytest.approx(100.0, rel=1e-12)
    assert np.isfinite(float(out.width_at_tolerance_fit_low))
    later = analysis.tolerance_widths(error, 1 / 200)  # bracketed by 128 and 256: interpolated
    assert float(later.width_at_tolerance) == pytest.approx(200.0, rel=1e-12)
    ok = error.copy()
    ok[1, 2] = 1 / 64
    assert float(analysis.tolerance_widths(ok, 1 / 100).width_at_tolerance) == pytest.approx(100.0, rel=1e-12)


# ----------------------------------------------------------------------------- on a real result


def test_the_truncation_errors_recomputed_from_the_trajectories_match_the_saved_ones(quickstart):
    xr.testing.assert_allclose(analysis.truncation_error(quickstart), quickstart.truncation_error, rtol=1e-12)
    xr.testing.assert_allclose(analysis.truncation_error(quickstart, "test"), quickstart.test_error, rtol=1e-12)


def test_the_drift_of_a_saved_kernel_trajectory_is_its_largest_change():
    ntk = xr.DataArray(
        np.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]], [[1.5, 2.0], [3.0, 3.0], [0.0, 0.0]]]),
        dims=("time", "point", "train_point"),
        coords={"split": ("point", ["train", "train", "test"])},
    )
    assert float(analysis.ntk_drift(ntk).isel(time=-1)) == 1.0  # the test row (change 9) is not in the training block


def test_analyse_computes_every_fit_a_result_supports(quickstart):
    fits = analysis.analyse(quickstart)
    for name in ("truncation_error", "test_error", "kernel_magnitude", "ntk_drift_ref", "ntk_drift_nth"):
        assert f"{name}_slope" in fits and f"{name}_agrees" in fits
    assert fits.truncation_error_slope.dims == ("order", "time")
    assert fits.kernel_magnitude_slope.dims == ("rank",)
    assert "width_at_tolerance" not in fits  # n_train is not swept
    assert fits.attrs["error_floor"] == pytest.approx(1e-8)  # 10 × the tolerance 1e-9
    assert np.isfinite(fits.truncation_error_slope.sel(order=2).isel(time=-1))


def test_nd_analysis_still_offers_every_public_name():
    """The fits live in report.power_law and report.tolerance; nd.analysis re-exports them."""
    promised = ("QUANTITIES", "Quantity", "agrees", "analyse", "decades", "default_tolerance", "error_floor",
                "fit_power_law", "ntk_drift", "predicted_drift_slope", "predicted_error_slope",
                "predicted_kernel_slope", "quantity_fits", "resample_counts", "tolerance_widths",
                "truncation_error", "width_at_tolerance", "RESAMPLES", "CONFIDENCE", "BOOTSTRAP_SEED",
                "SLOPE_TOLERANCE", "WIDE_FROM", "SMALL_TIME", "FLOOR_FACTOR")
    assert [name for name in promised if not hasattr(nd.analysis, name)] == []
    assert nd.analysis is analysis
    assert analysis.tolerance_widths is tolerance.tolerance_widths
    assert analysis.fit_power_law is power_law.fit_power_law
