"""The report of a saved result: figures, report.md, analysis.nc, bad input."""

import shutil

import numpy as np
import pytest
from test_analysis import synthetic_result

from nth_dynamics.cli import main
from nth_dynamics.pipeline.results import read_dataset, write_dataset
from nth_dynamics.pipeline.scenario import ScenarioError
from nth_dynamics.report import plots

WIDTH_FIGURES = ("error_vs_width", "test_error_vs_width", "width_slope_vs_time", "error_vs_time",
                 "kernel_magnitude_vs_width", "ntk_drift_vs_width")


@pytest.fixture(scope="module")
def quickstart_report(tmp_path_factory):
    """The report of a copy of the committed quickstart result, default directory."""
    copy = tmp_path_factory.mktemp("result") / "quickstart.nc"
    shutil.copy("results/quickstart.nc", copy)
    written = plots.write_report(copy)
    return copy, written


def test_the_report_goes_next_to_the_result_by_default(quickstart_report):
    copy, written = quickstart_report
    out_dir = copy.parent / "quickstart_report"
    assert written[0] == out_dir / "report.md"
    assert all(path.parent == out_dir and path.exists() for path in written)


def test_every_figure_with_data_is_written_as_png_and_svg(quickstart_report):
    copy, written = quickstart_report
    names = {path.name for path in written}
    for stem in WIDTH_FIGURES:
        assert {f"{stem}.png", f"{stem}.svg"} <= names
        assert (copy.parent / "quickstart_report" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    assert "resnet_vs_ffnet.png" not in names  # one architecture only


def test_the_table_puts_fitted_slopes_next_to_the_predictions(quickstart_report):
    copy, _ = quickstart_report
    report = (copy.parent / "quickstart_report" / "report.md").read_text()
    assert "−p/2 for even p, −(p−1)/2 for odd p" in report
    assert "0, −1, −1, −2, −2 for r = 2…6" in report
    assert "| p | fitted slope | interval | predicted | widths in fit | decades | agrees | max\\|K(p+1)₀\\| slope |" in report
    assert "| 4 | -2.00 | [-3.87, -0.13] | -2 | 32–128 (2) | 0.60 | yes | — |" in report  # the tower ends at K4
    fits = read_dataset(copy.parent / "quickstart_report" / "analysis.nc")
    k3 = float(fits.kernel_magnitude_slope.sel(rank=3))
    row = next(line for line in report.splitlines() if line.startswith("| 2 | ") and "32–128" in line)
    assert row.endswith(f"| {k3:.2f} |")
    assert "E_p ∝ t^p at small t" in report and "λ_min(K2₀)" in report
    assert "**Only 2 seeds**" in report and "**The widths span 0.60 decades**" in report


def test_the_analysis_is_saved_with_the_report(quickstart_report):
    copy, _ = quickstart_report
    fits = read_dataset(copy.parent / "quickstart_report" / "analysis.nc")
    assert fits.truncation_error_slope.dims == ("order", "time")
    assert fits.attrs["resamples"] == 1000


def test_resnet_against_ffnet_over_n_and_figures_without_data_skipped(tmp_path, monkeypatch):
    """A sweep over architecture and n_train: the tolerance widths and their
    exponent in n, drawn against n (not as an error ratio); no test points:
    no test-error figure; depth not swept: no figure against depth."""
    monkeypatch.setattr(plots, "FORMATS", ("png",))
    ds = synthetic_result(grid={"architecture": ["ffnet", "resnet"], "n_train": [4, 16]}, n_power=1.0,
                          orders=(2, 4), widths=(64, 256, 1024, 4096), seeds=3, times=(0.0, 0.1, 1.0), noise=0.1)
    ds["test_error"] = ds.test_error * np.nan
    result = write_dataset(ds, tmp_path / "sweep.nc")
    written = plots.write_report(result, tmp_path / "report")
    names = {path.name for path in written}
    assert "required_width_vs_n.png" in names and "test_error_vs_width.png" not in names
    assert "resnet_vs_ffnet.png" not in names and "required_width_vs_depth.png" not in names
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Width at which max_t E_p falls to a tolerance" in report
    assert "| architecture=resnet | 2 |" in report
    assert "The same, fitted from m = 256 on" in report


def test_a_missing_or_unreadable_result_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(ScenarioError, match="no such result file"):
        plots.write_report(tmp_path / "absent.nc")
    garbage = tmp_path / "garbage.nc"
    garbage.write_text("not a netCDF file")
    with pytest.raises(ScenarioError, match="cannot be read as a result"):
        plots.write_report(garbage)
    assert main(["report", str(garbage)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {garbage}: cannot be read as a result") and "\n" not in err


def test_a_dataset_that_is_not_a_result_is_refused(tmp_path):
    other = write_dataset(synthetic_result().drop_dims("width"), tmp_path / "other.nc")
    with pytest.raises(ScenarioError, match="not a result of simulate"):
        plots.write_report(other)


def test_an_output_directory_that_is_a_file_is_refused(tmp_path, quickstart_report):
    copy, _ = quickstart_report
    occupied = tmp_path / "occupied"
    occupied.write_text("")
    with pytest.raises(ScenarioError, match="not a directory"):
        plots.write_report(copy, occupied)
