"""``hierarchy.basis: reduced`` through the command line: the reduced cell
against the full one, its basis outputs under their own names, and the
scenario errors and budget hint that come with it (docs/theory.md §8)."""

import numpy as np
import pytest
import xarray as xr

from nth_dynamics.cli import main
from nth_dynamics.pipeline.estimates import planned_rank
from nth_dynamics.pipeline.scenario import parse_scenario

SCENARIO = """\
name: {name}
seed: [0, 1]
data: {{kind: sphere, n_train: 16, n_test: 2}}
network: {{width: 48, depth: 1}}
hierarchy: {{orders: [2, 3, 4], rtol: 1.0e-10, atol: 1.0e-10{basis}}}
reference: {{rtol: 1.0e-10, atol: 1.0e-10}}
time: {{t1: 2.0, n_saves: 5}}
"""
REDUCED = ", basis: reduced, basis_tol: 1.0e-8"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same cell simulated with the full and with the reduced basis."""
    directory = tmp_path_factory.mktemp("reduced")
    results = {}
    for name, basis in (("full", ""), ("reduced", REDUCED)):
        scenario = directory / f"{name}.yaml"
        scenario.write_text(SCENARIO.format(name=name, basis=basis))
        results[name] = directory / f"{name}.nc"
        assert main(["simulate", str(scenario), "-o", str(results[name]), "--quiet"]) == 0
    return {name: xr.load_dataset(path) for name, path in results.items()}


@pytest.mark.slow  # two CLI simulations, ~90 s
def test_the_reduced_cell_reproduces_the_full_one_within_its_error_estimate(runs):
    full, reduced = runs["full"], runs["reduced"]
    np.testing.assert_array_equal(full.f_ref, reduced.f_ref)  # the reference is the same computation
    assert (reduced.basis_rank < 16).all() and (reduced.basis_rank >= 1).all()  # a genuine reduction
    difference = np.abs(full.f_nth - reduced.f_nth).max(["time", "point"])
    scale = full.truncation_error.max("time")
    for p in (3, 4):
        assert (difference.sel(order=p) <= 1e-3 * scale.sel(order=p)).all(), p
        # the stored estimate bounds the true difference (with the solver tolerance's room)
        assert (difference.sel(order=p) <= 10 * reduced.basis_error.sel(order=p) + 1e-8).all(), p
    np.testing.assert_allclose(reduced.f_nth.sel(order=2), full.f_nth.sel(order=2), rtol=0, atol=1e-8)


@pytest.mark.slow  # shares the two simulations above
def test_projected_magnitudes_never_stand_under_the_full_name(runs):
    full, reduced = runs["full"], runs["reduced"]
    assert "projected_kernel_magnitude" not in full and "basis_rank" not in full
    np.testing.assert_allclose(reduced.kernel_magnitude.sel(rank=2), full.kernel_magnitude.sel(rank=2), rtol=1e-12)
    assert reduced.kernel_magnitude.sel(rank=[3, 4]).isnull().all()
    assert reduced.projected_kernel_magnitude.notnull().all()
    assert reduced.basis_error.dims == ("width", "seed", "order")
    assert reduced.basis_rank.dims == ("width", "seed")
    for name in ("basis_rank", "basis_error", "basis_error_ratio", "projected_kernel_magnitude"):
        assert reduced[name].attrs["long_name"] and reduced[name].attrs["units"] == "1"


def test_the_default_basis_keeps_cell_ids():
    full = parse_scenario(SCENARIO.format(name="s", basis=""), source="s.yaml")
    explicit = parse_scenario(SCENARIO.format(name="s", basis=", basis: full"), source="s.yaml")
    reduced = parse_scenario(SCENARIO.format(name="s", basis=REDUCED), source="s.yaml")
    assert [c.id for c in full.cells()] == [c.id for c in explicit.cells()]
    assert full.cells()[0].id != reduced.cells()[0].id


@pytest.mark.parametrize(
    ("hierarchy", "field"),
    [
        (", basis_tol: 1.0e-6", "hierarchy.basis_tol"),
        (", basis: pod", "hierarchy.basis"),
        (", basis: reduced, basis_tol: 0", "hierarchy.basis_tol"),
    ],
)
def test_bad_basis_settings_are_one_line_errors(tmp_path, capsys, hierarchy, field):
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(SCENARIO.format(name="bad", basis=hierarchy))
    assert main(["validate", str(scenario)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(scenario) in err and field in err and "allowed" in err


def test_validate_says_when_the_reduced_basis_would_fit(tmp_path, capsys):
    big = SCENARIO.format(name="big", basis="").replace("n_train: 16", "n_train: 128").replace("[2, 3, 4]", "[2, 4]")
    scenario = tmp_path / "big.yaml"
    scenario.write_text(big + "memory_budget_gb: 3\n")  # full ≈ 5.6 GB, reduced (rank 16) ≈ 2.5 GB
    assert main(["validate", str(scenario)]) == 2
    err = capsys.readouterr().err.strip()
    assert "memory_budget_gb" in err and "hierarchy.basis: reduced" in err and "\n" not in err


def test_a_reduced_sweep_records_the_solves_that_stop_early(tmp_path, capsys):
    """``on_failure: record`` with ``basis: reduced``: a step budget too small
    for any NTH solve still writes the cell, flags every (seed, order), leaves
    the reference whole and stores no basis-error estimate for the failures."""
    scenario = tmp_path / "record.yaml"
    scenario.write_text(SCENARIO.format(name="record", basis=REDUCED + ", on_failure: record, max_steps: 2")
                        .replace("[2, 3, 4]", "[2, 3]"))
    result = tmp_path / "record.nc"
    assert main(["simulate", str(scenario), "-o", str(result), "--quiet"]) == 0
    assert capsys.readouterr().err.strip().startswith("note: 4 of 4 NTH solves (p=2, p=3) stopped before the last save")
    ds = xr.load_dataset(result)
    assert bool(ds.nth_failed.all()) and np.isinf(ds.truncation_error.isel(time=-1)).all()
    assert np.isfinite(ds.f_ref).all() and (ds.basis_rank >= 1).all()
    assert ds.basis_error.sel(order=3).isnull().all()


def test_validate_plans_a_reduced_cell_at_equal_progress_at_rank_n(tmp_path, capsys):
    """At time.unit n_over_lambda_min the residual keeps every mode to t1, so
    the plan is rank n (as measured) and validate says the basis saves nothing."""
    plain = SCENARIO.format(name="tau", basis=REDUCED).replace("n_train: 16", "n_train: 32")
    text = plain.replace("t1: 2.0", "unit: n_over_lambda_min, t1: 1.0")
    scenario = tmp_path / "tau.yaml"
    scenario.write_text(text)
    (cell,) = parse_scenario(text, source="tau.yaml").cells()
    assert planned_rank(cell.spec) == 32
    assert planned_rank(parse_scenario(plain, source="t.yaml").cells()[0].spec) < 32  # time.unit t: rank 16
    assert main(["validate", str(scenario)]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("note: 1 reduced cell planned at rank n") and "saves nothing" in err and "\n" not in err
