"""The width a network needs (nth_dynamics.report.required_width, issue 11), on
synthetic Datasets shaped like a result of simulate with known exponents in n
and depth: the fits recover them, the intervals cover them, the law predicts
inside its range and refuses outside it, and the report draws and tabulates it."""

import numpy as np
import pytest
import xarray as xr

import nth_dynamics as nd
from nth_dynamics._files import write_dataset
from nth_dynamics.report import plots
from nth_dynamics.report import required_width as rw
from nth_dynamics.report.series import repeats_ffnet, selections, series_label

N_EXPONENT = {"ffnet": 1.0, "resnet": 0.5}
DEPTH_EXPONENT = {"ffnet": 0.8, "resnet": 0.0}
TOLERANCE = 1e-2


def true_width(architecture, n, depth):
    return 10.0 * n ** N_EXPONENT[architecture] * depth ** DEPTH_EXPONENT[architecture]


def synthetic(*, n=(4, 8, 16, 32, 64, 128, 256), depths=(2, 8, 32), widths=tuple(2**k for k in range(4, 15)),
              seeds=8, noise=0.3, rng=0, orders=(2, 4), times=(0.0, 0.5, 1.0)):
    """max_t E_p = TOLERANCE · (m*/m)^(p/2) times log-normal seed noise (σ =
    ``noise``), with m* = :func:`true_width`: the required width at TOLERANCE
    is m* times the seeds' geometric-mean noise to the power 2/p, exactly a
    power law in n and depth. E_p(t) grows linearly to its maximum at t1."""
    rng = np.random.default_rng(rng)
    architectures = list(N_EXPONENT)
    m_star = np.array([[[true_width(a, k, d) for k in n] for d in depths] for a in architectures])
    m = np.asarray(widths, float)
    p = np.asarray(orders)
    times = np.asarray(times) / times[-1]
    ratio = ((m_star[..., None] / m)[..., None, None, None] ** (p / 2)[:, None])  # (arch, depth, n, width, 1, order, 1)
    noise = np.exp(noise * rng.standard_normal((len(architectures), len(depths), len(n), len(m), seeds)))
    error = TOLERANCE * ratio * noise[..., None, None] * times
    dims = ("architecture", "depth", "n_train", "width", "seed", "order", "time")
    coords = {"architecture": architectures, "depth": list(depths), "n_train": list(n), "width": list(widths),
              "seed": np.arange(seeds), "order": p, "time": times}
    return xr.Dataset({"truncation_error": (dims, error)}, coords=coords, attrs={"title": "synthetic widths"})


@pytest.fixture(scope="module")
def widths():
    return rw.required_width(synthetic(), TOLERANCE)


def test_without_noise_the_required_width_is_the_true_one_and_nan_outside_the_swept_widths():
    ds = synthetic(noise=0.0, widths=(16, 64, 256, 1024, 4096))
    out = rw.required_width(ds, TOLERANCE, order=2)
    expected = xr.apply_ufunc(np.vectorize(true_width), ds.architecture, ds.n_train, ds.depth)
    inside = (expected >= 16) & (expected <= 4096)
    np.testing.assert_allclose(out.required_width.sel(order=2).where(inside), expected.where(inside).transpose(
        *out.required_width.sel(order=2).dims), rtol=1e-9)
    assert bool((out.required_width_bracketed.sel(order=2) == inside.transpose(
        *out.required_width_bracketed.sel(order=2).dims)).all())
    assert np.isnan(out.required_width.sel(architecture="ffnet", depth=32, n_train=256, order=2))  # 4.4e4 > 4096
    assert out.required_width_resamples.sizes["resample"] == 1000


def test_the_exponents_in_n_and_depth_are_recovered_and_their_intervals_cover_them(widths):
    """p = 2 and 4 have the same m* (E_p is a power of m*/m): every series
    must recover the exponents; the 95 % intervals cover the truth in most."""
    n_fit = rw.width_exponent(widths, "n_train")
    truth_n = xr.DataArray([N_EXPONENT[a] for a in n_fit.architecture.values], coords={"architecture":
                                                                                        n_fit.architecture})
    assert float(abs(n_fit.exponent - truth_n).max()) < 0.12
    covered = (n_fit.exponent_low <= truth_n) & (truth_n <= n_fit.exponent_high)
    assert float(covered.mean()) >= 0.75
    assert float(n_fit.decades.sel(architecture="resnet").min()) == pytest.approx(np.log10(64))
    # the FFNet of depth 32 needs more than 2^14 from n = 128 on: fitted over 4…64 only
    assert float(n_fit.range_max.sel(architecture="ffnet", depth=32, order=2)) == 64
    depth_fit = rw.width_exponent(widths, "depth")
    truth_depth = xr.DataArray([DEPTH_EXPONENT[a] for a in depth_fit.architecture.values],
                               coords={"architecture": depth_fit.architecture})
    assert float(abs(depth_fit.exponent - truth_depth).max()) < 0.2
    assert float(((depth_fit.exponent_low <= truth_depth) & (truth_depth <= depth_fit.exponent_high)).mean()) >= 0.75


def test_a_dim_that_is_not_swept_is_a_one_line_error(widths):
    with pytest.raises(ValueError, match="gamma is not swept"):
        rw.width_exponent(widths, "gamma")
    with pytest.raises(ValueError, match="two widths"):
        rw.required_width(synthetic().isel(width=[0]), TOLERANCE)


def test_the_law_predicts_inside_its_range_and_refuses_outside(widths):
    law = rw.WidthLaw.fit(widths)
    for architecture, n, depth in (("ffnet", 50, 8), ("resnet", 100, 32), ("ffnet", 20, 16), ("resnet", 6, 4)):
        prediction = law.predict(n=n, depth=depth, architecture=architecture, order=2)
        assert prediction.width == pytest.approx(true_width(architecture, n, depth), rel=0.15)
        assert prediction.low < prediction.width < prediction.high
    with pytest.raises(ValueError, match=r"n = 300 outside the fitted n 4…256"):
        law.predict(n=300, depth=8, architecture="ffnet", order=2)
    with pytest.raises(ValueError, match="n = 100 outside the fitted n 4…64 at depth 32"):
        law.predict(n=100, depth=16, architecture="ffnet", order=2)  # between depths: both laws must cover n
    with pytest.raises(ValueError, match="depth 64 outside the fitted depths 2…32"):
        law.predict(n=16, depth=64, architecture="ffnet", order=2)
    with pytest.raises(ValueError, match="give architecture="):
        law.predict(n=16, depth=8, order=2)
    with pytest.raises(ValueError, match="no law"):
        law.predict(n=16, depth=8, architecture="mlp", order=2)
    assert law.predict(n=16, depth=8, architecture="ffnet", order=2, tolerance=TOLERANCE).width > 0
    with pytest.raises(ValueError, match="fitted at tolerance 0.01, not 0.001"):
        law.predict(n=16, depth=8, architecture="ffnet", order=2, tolerance=1e-3)


def test_one_seed_gives_widths_and_a_law_without_intervals():
    widths = rw.required_width(synthetic(seeds=1, n=(4, 16, 64), depths=(2, 8)), TOLERANCE, order=2)
    assert np.isfinite(widths.required_width).any() and np.isnan(widths.required_width_low).all()
    assert np.isnan(rw.width_exponent(widths).exponent_low).all()
    prediction = rw.WidthLaw.fit(widths).predict(n=16, depth=8, architecture="resnet", order=2)
    assert np.isfinite(prediction.width) and np.isnan(prediction.low)


def test_analyse_and_required_width_are_one_computation():
    """The report's exponent in n (analyse → tolerance_widths) and width_exponent's
    are the same fit of the same crossings and bootstrap draws; analyse adds the
    exponent in depth and the decades."""
    ds = synthetic(n=(4, 16, 64), depths=(2, 8), widths=(16, 64, 256, 1024, 4096, 16384), seeds=4)
    fits = nd.analysis.analyse(ds, tolerances={2: TOLERANCE, 4: TOLERANCE})
    widths = nd.analysis.required_width(ds, {2: TOLERANCE, 4: TOLERANCE})
    np.testing.assert_array_equal(fits.width_at_tolerance, widths.required_width.transpose(
        *fits.width_at_tolerance.dims))
    n_fit = nd.analysis.width_exponent(widths, "n_train")
    for name in ("", "_low", "_high"):
        np.testing.assert_allclose(fits[f"n_exponent{name}"], n_fit[f"exponent{name}"].transpose(
            *fits[f"n_exponent{name}"].dims), rtol=1e-12)
    assert {"n_exponent_decades", "depth_exponent", "depth_exponent_low", "depth_exponent_range_max"} <= set(fits)


def test_the_report_draws_the_required_width_against_n_and_depth_and_tabulates_the_exponents(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "FORMATS", ("png",))
    # two save times, one order: the per-width figures stay small
    ds = synthetic(n=(4, 16, 64), depths=(2, 8), widths=(16, 64, 256, 1024, 4096, 16384), seeds=4, orders=(2,),
                   times=(0.0, 1.0))
    written = plots.write_report(write_dataset(ds, tmp_path / "widths.nc"), tmp_path / "report")
    names = {path.name for path in written}
    assert {"required_width_vs_n.png", "required_width_vs_depth.png"} <= names
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Exponent of the required width in depth" in report
    assert "| n fitted (decades) | target met |" in report
    assert "| architecture=ffnet, n_train=16 | 2 |" in report
    assert "does not contradict it" in report


def test_an_ffnet_is_one_series_across_the_residual_scales_it_does_not_have():
    """A result over both architectures and several γ holds each FFNet at every
    γ (broadcast): the report's series list it once, its label without γ."""
    grid = {"architecture": ["ffnet", "resnet"], "gamma": [0.5, 1.0], "depth": [2, 8]}
    values = xr.DataArray(np.zeros((2, 2, 2)), coords=grid, dims=list(grid))
    listed = selections(values, list(grid))
    assert [tuple(s.values()) for s in listed] == [("ffnet", 0.5, 2), ("ffnet", 0.5, 8), ("resnet", 0.5, 2),
                                                   ("resnet", 0.5, 8), ("resnet", 1.0, 2), ("resnet", 1.0, 8)]
    assert [series_label(s) for s in listed[:3]] == ["architecture=ffnet, depth=2", "architecture=ffnet, depth=8",
                                                     "architecture=resnet, gamma=0.5, depth=2"]
    assert repeats_ffnet(values, {"architecture": "ffnet", "gamma": 1.0})
    assert not repeats_ffnet(values, {"gamma": 1.0}) and not repeats_ffnet(values, {"architecture": "resnet", "gamma": 1.0})
    assert len(selections(values, ["gamma", "depth"])) == 4  # without the architecture nothing is an FFNet
