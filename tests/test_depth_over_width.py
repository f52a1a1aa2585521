"""Finite-width corrections against depth/width (nth_dynamics.report.depth_over_width,
issue 11) on synthetic depth × width grids with a known law: exp(βL/m) (a
function of L/m) for one architecture, a power law in m alone for the other.
The fits recover β and the slope with intervals that cover them, and tell the
two laws apart; the report draws and tabulates them; a tiny real simulation
goes through the same path end to end."""

import json

import numpy as np
import pytest
import xarray as xr

import nth_dynamics as nd
from nth_dynamics._files import read_dataset, write_dataset
from nth_dynamics.cli import main
from nth_dynamics.report import depth_over_width as dow
from nth_dynamics.report import plots

DEPTHS = (2, 4, 8, 16, 32)
WIDTHS = (32, 64, 128, 256)  # L/m from 1/128 to 1, every ratio in between at several (L, m)
BETA = {"ffnet": 5.0, "resnet": 0.0}  # exp(β L/m)
WIDTH_SLOPE = {"ffnet": 0.0, "resnet": -1.0}  # m^slope, at every depth
DRIFT_BETA = 2.0  # the FFNet's relative NTK drift grows like exp(2 L/m)


def synthetic(*, seeds=6, noise=0.2, rng=0, floor=1e-12, orders=(2, 4), times=(0.0, 0.5, 1.0), grid=None):
    """A Dataset shaped like a result of simulate over architecture × depth ×
    width at fixed n: max_t E_p = 10^(−p) · exp(β L/m) · (m/32)^slope times
    log-normal seed noise (σ = ``noise``, one draw per seed and cell), reached
    at t1 (E_p(t) ∝ t); the reference's ‖K2_t − K2₀‖∞ = 0.01 t exp(βd L/m) ·
    max|K2₀| (βd = DRIFT_BETA for the FFNet, 0 for the ResNet)."""
    rng = np.random.default_rng(rng)
    grid = dict(grid or {})
    lead = tuple(grid)
    lead_shape = tuple(len(v) for v in grid.values())
    architectures = list(BETA)
    L = np.asarray(DEPTHS, float)[:, None]
    m = np.asarray(WIDTHS, float)[None, :]
    law = np.stack([np.exp(BETA[a] * L / m) * (m / 32) ** WIDTH_SLOPE[a] for a in architectures])  # (arch, L, m)
    drift_law = np.stack([np.exp((DRIFT_BETA if a == "ffnet" else 0.0) * L / m) * np.ones_like(m)
                          for a in architectures])
    p = np.asarray(orders)
    t = np.asarray(times, float) / times[-1]
    shape = lead_shape + law.shape + (seeds,)
    noisy = np.exp(noise * rng.standard_normal(shape))
    error = (law[..., None] * noisy)[..., None, None] * (10.0 ** -p)[:, None] * t  # (…, arch, L, m, seed, p, t)
    magnitude = 2.0 * np.exp(0.1 * rng.standard_normal(shape))
    drift_noise = np.exp(noise * rng.standard_normal(shape))
    drift = (0.01 * drift_law[..., None] * drift_noise * magnitude)[..., None] * t
    dims = lead + ("architecture", "depth", "width", "seed")
    coords = {**{k: np.asarray(v) for k, v in grid.items()}, "architecture": architectures, "depth": list(DEPTHS),
              "width": list(WIDTHS), "seed": np.arange(seeds), "order": p, "time": t, "rank": [2, 3, 4]}
    coords.setdefault("n_train", 8)  # fixed n, as a scalar coordinate
    scenario = {"name": "synthetic_dow", "hierarchy": {"rtol": floor, "atol": floor},
                "reference": {"method": "gradient_flow", "rtol": floor, "atol": floor}}
    return xr.Dataset(
        {
            "truncation_error": (dims + ("order", "time"), error),
            "kernel_magnitude": (dims + ("rank",), np.stack([magnitude, magnitude / 10, magnitude / 100], axis=-1)),
            "ntk_drift_ref": (dims + ("time",), drift),
        },
        coords=coords,
        attrs={"title": "synthetic depth over width", "scenario": json.dumps(scenario)},
    )


@pytest.fixture(scope="module")
def fits():
    return dow.depth_over_width(synthetic())


def test_without_noise_the_laws_are_recovered_exactly():
    out = dow.depth_over_width(synthetic(noise=0.0, seeds=1))
    ffnet, resnet = (out.sel(architecture=a) for a in ("ffnet", "resnet"))
    np.testing.assert_allclose(ffnet.beta.sel(quantity=["E_2", "E_4"]), BETA["ffnet"], rtol=1e-9)
    np.testing.assert_allclose(float(ffnet.beta.sel(quantity="ntk_drift")), DRIFT_BETA, rtol=1e-9)
    np.testing.assert_allclose(float(ffnet.beta_intercept.sel(quantity="E_2")), np.log(1e-2), rtol=1e-9)
    assert float(ffnet.beta_residual.max()) < 1e-9 and float(ffnet.spread_equal_ratio.max()) < 1e-9
    np.testing.assert_allclose(resnet.width_slope.sel(quantity=["E_2", "E_4"]), WIDTH_SLOPE["resnet"], rtol=1e-9)
    np.testing.assert_allclose(resnet.pooled_width_slope.sel(quantity="E_2"), WIDTH_SLOPE["resnet"], rtol=1e-9)
    assert float(resnet.pooled_width_residual.sel(quantity="E_2")) < 1e-9
    assert float(resnet.spread_equal_width.sel(quantity="E_2")) < 1e-9
    np.testing.assert_allclose(out.ratio.sel(architecture="ffnet", quantity="E_2", depth=32, width=32), 1.0)
    assert np.isnan(out.beta_low).all()  # one seed: no interval


def test_beta_of_the_ffnet_is_recovered_within_its_interval(fits):
    ffnet = fits.sel(architecture="ffnet")
    for quantity, truth in (("E_2", BETA["ffnet"]), ("E_4", BETA["ffnet"]), ("ntk_drift", DRIFT_BETA)):
        at = ffnet.sel(quantity=quantity)
        assert float(at.beta_low) <= truth <= float(at.beta_high), (quantity, at.beta.values)
        assert abs(float(at.beta) - truth) < 0.5
        assert float(at.beta_high - at.beta_low) < 1.5
    resnet = fits.sel(architecture="resnet", quantity="E_2")
    assert float(resnet.pooled_width_slope_low) <= -1.0 <= float(resnet.pooled_width_slope_high)
    at_each_depth = fits.sel(architecture="resnet", quantity="E_2")  # four widths, six seeds: wider, less sure
    assert float(abs(at_each_depth.width_slope + 1.0).max()) < 0.2
    covered = (at_each_depth.width_slope_low <= -1.0) & (at_each_depth.width_slope_high >= -1.0)
    assert float(covered.mean()) >= 0.6


def test_the_two_laws_are_told_apart(fits):
    """exp(βL/m) data prefer law (i) and collapse at equal L/m; data that are a
    power law in m alone prefer law (ii) and collapse at equal m."""
    for quantity in ("E_2", "E_4"):
        ffnet, resnet = (fits.sel(architecture=a, quantity=quantity) for a in ("ffnet", "resnet"))
        assert str(ffnet.preferred.values) == "L/m" and float(ffnet.residual_ratio_high) < 1
        assert str(resnet.preferred.values) == "m" and float(resnet.residual_ratio_low) > 1
        assert float(ffnet.collapse_high) < 1 < float(resnet.collapse_low)
        # the better law fits to the seeds' scatter, the other does not
        assert float(ffnet.beta_residual) < 3 * float(ffnet.seed_error) < float(ffnet.pooled_width_residual)
        assert float(resnet.pooled_width_residual) < 3 * float(resnet.seed_error) < float(resnet.beta_residual)
    assert int(fits.cells.max()) == len(DEPTHS) * len(WIDTHS)


def test_a_truncation_that_blew_up_is_counted_and_left_out():
    ds = synthetic()
    ds["truncation_error"].loc[{"architecture": "ffnet", "depth": 32, "width": 32, "seed": 3, "order": 4,
                                "time": 1.0}] = np.inf
    out = dow.depth_over_width(ds)
    e4 = out.sel(architecture="ffnet", quantity="E_4")
    assert int(e4.blown_up_seeds.sum()) == 1 and int(e4.blown_up_seeds.sel(depth=32, width=32)) == 1
    assert int(e4.cells) == len(DEPTHS) * len(WIDTHS) - 1 and np.isnan(float(e4.size.sel(depth=32, width=32)))
    assert float(e4.beta_low) <= BETA["ffnet"] <= float(e4.beta_high)
    assert int(out.sel(architecture="ffnet", quantity="E_2").cells) == len(DEPTHS) * len(WIDTHS)


def test_errors_below_the_solver_floor_are_left_out():
    # the ResNet's E_2 = 10⁻²·32/m falls below 3·10⁻³ from m = 128 on, its E_4 everywhere
    out = dow.depth_over_width(synthetic(), floor=3e-3)
    e2, e4 = (out.sel(architecture="resnet", quantity=q) for q in ("E_2", "E_4"))
    assert len(DEPTHS) * 2 <= int(e2.cells) < len(DEPTHS) * len(WIDTHS)
    assert int(e4.cells) == 0 and np.isnan(float(e4.beta))


def test_it_needs_depth_and_width_sweeps_and_the_report_draws_it_only_at_fixed_n(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="two depths and two widths"):
        dow.depth_over_width(synthetic().isel(depth=[0]))
    assert dow.applies(synthetic()) and not dow.applies(synthetic().isel(depth=0))
    swept_n = synthetic(grid={"n_train": [4, 8]})
    assert not dow.applies(swept_n) and "depth_over_width_beta" not in nd.analysis.analyse(swept_n, resamples=50)
    monkeypatch.setattr(plots, "FORMATS", ("png",))
    monkeypatch.setattr(plots, "FIGURES", {"depth_over_width": plots.FIGURES["depth_over_width"]})  # the others: seconds each
    result = write_dataset(synthetic(), tmp_path / "dow.nc")
    written = {path.name for path in plots.write_report(result, tmp_path / "report")}
    assert "depth_over_width.png" in written
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Finite-width corrections against depth/width" in report
    rows = [line for line in report.splitlines() if line.startswith("| architecture=")]
    verdicts = {tuple(row.split(" | ")[:2]): row.split(" | ")[9] for row in rows if len(row.split(" | ")) > 12}
    assert verdicts[("| architecture=ffnet", "E_2")] == "L/m" and verdicts[("| architecture=resnet", "E_2")] == "m"
    fits = read_dataset(tmp_path / "report" / "analysis.nc")
    assert fits.depth_over_width_beta.dims == ("quantity", "architecture")
    assert str(fits.depth_over_width_preferred.sel(architecture="resnet", quantity="E_2").values) == "m"


TINY = """\
name: tiny_depth_over_width
seed: [0, 1]
data: {kind: sphere, n_train: 4, n_test: 0, d: 3}
network: {architecture: [ffnet, resnet], width: [16, 32], depth: [2, 4], gamma: 0.5}
hierarchy: {orders: [2], rtol: 1.0e-8, atol: 1.0e-8, on_failure: record}
reference: {method: gradient_flow, rtol: 1.0e-8, atol: 1.0e-8}
time: {t1: 0.5, n_saves: 3}
"""


@pytest.mark.slow  # eight small cells simulated and reported through the CLI: minutes on a loaded machine
def test_a_tiny_simulation_goes_through_to_the_figure(tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY)
    result = tmp_path / "tiny.nc"
    assert main(["simulate", str(scenario), "-o", str(result), "--quiet"]) == 0
    assert main(["report", str(result), "-o", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "depth_over_width.png").read_bytes()[:4] == b"\x89PNG"
    fits = read_dataset(tmp_path / "report" / "analysis.nc")
    assert list(fits.quantity.values) == ["E_2", "ntk_drift"]
    assert np.isfinite(fits.depth_over_width_beta.sel(quantity=["E_2", "ntk_drift"])).all()
    ds = read_dataset(result)
    # the relative drift is the reference's ‖K2_t − K2₀‖∞ over max|K2₀|, the largest over t
    expected = (ds.ntk_drift_ref.max("time") / ds.kernel_magnitude.sel(rank=2)).sel(architecture="resnet")
    sizes = dow.correction_sizes(ds).sel(quantity="ntk_drift", architecture="resnet")
    xr.testing.assert_allclose(sizes.drop_vars("quantity"), expected.transpose(*sizes.dims).drop_vars("rank"))


def test_a_power_law_in_depth_over_width_is_recovered_by_law_iii():
    """E = (L/m)^0.9 times log-normal seed noise, the shape the FFNets of part
    W showed: law (iii) recovers the exponent within its interval and leaves
    the smallest residual, where law (i), exp(βL/m), cannot follow it at
    small L/m and law (ii) has no depth."""
    ds = synthetic()
    error = ds["truncation_error"]
    ratio = (ds["depth"].astype(float) / ds["width"].astype(float)) ** 0.9
    noise = np.exp(0.1 * np.random.default_rng(1).standard_normal(error.isel(order=0, time=0).shape))
    t = error["time"] / error["time"].max()
    ds["truncation_error"] = (ratio * xr.DataArray(noise, dims=error.isel(order=0, time=0).dims) * t
                              * 10.0 ** -error["order"]).transpose(*error.dims)
    at = dow.depth_over_width(ds).sel(architecture="ffnet", quantity="E_2")
    assert float(at.ratio_exponent_low) <= 0.9 <= float(at.ratio_exponent_high), at.ratio_exponent.values
    assert abs(float(at.ratio_exponent) - 0.9) < 0.1
    assert float(at.ratio_exponent_residual) < 0.5 * float(at.beta_residual)
    assert float(at.ratio_exponent_residual) < 0.5 * float(at.pooled_width_residual)
