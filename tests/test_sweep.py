"""Cells of a sweep: save times in units of n/λ_min (``time.unit``), and NTH
solves that stop early (``hierarchy.on_failure``)."""

import json

import numpy as np
import pytest

from nth_dynamics.engine.hierarchy import SolverError
from nth_dynamics.pipeline.scenario import parse_scenario
from nth_dynamics.pipeline.sweep import run_cell

SCALED = """\
name: scaled
seed: [0, 1]
data: {kind: sphere, n_train: 4, n_test: 2, d: 5}
network: {architecture: resnet, width: 24, depth: 2, activation: tanh}
hierarchy: {orders: [2, 3], rtol: 1.0e-11, atol: 1.0e-11}
reference: {rtol: 1.0e-11, atol: 1.0e-11}
time: {t1: 0.5, n_saves: 4, unit: n_over_lambda_min}
"""


@pytest.fixture(scope="module")
def scaled():
    return run_cell(parse_scenario(SCALED).cells()[0])


def test_the_time_scale_is_n_over_lambda_min_of_each_seed(scaled):
    np.testing.assert_allclose(scaled.time_scale, 4 / scaled.lambda_min, rtol=1e-12)
    assert float(scaled.time_scale[0]) != pytest.approx(float(scaled.time_scale[1]), rel=1e-3)  # seeds really differ
    np.testing.assert_allclose(scaled.time, [0, 1 / 6, 1 / 3, 0.5])
    assert "n / lambda_min" in scaled.time.attrs["long_name"]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_scaled_seed_runs_the_same_trajectory_as_its_absolute_time_grid(scaled, seed):
    """Seed s of the scaled cell equals a cell of that seed alone whose save
    times are t = time_scale[s] · τ: both the NTH and the reference."""
    scale = float(scaled.time_scale[seed])
    alone = SCALED.replace("seed: [0, 1]", f"seed: [{seed}]").replace(
        "time: {t1: 0.5, n_saves: 4, unit: n_over_lambda_min}", f"time: {{t1: {0.5 * scale!r}, n_saves: 4}}"
    )
    absolute = run_cell(parse_scenario(alone).cells()[0])
    assert "time_scale" not in absolute
    np.testing.assert_allclose(absolute.time, scale * scaled.time, rtol=1e-14)
    one = scaled.isel(seed=[seed])
    for name in ("f_nth", "f_ref"):
        np.testing.assert_allclose(one[name], absolute[name], rtol=0, atol=1e-9)
    assert float(one.loss_ref[0, -1]) < 0.5 * float(one.loss_ref[0, 0])  # half a time scale trains


def test_the_default_unit_keeps_the_cell_ids_of_earlier_results():
    base = SCALED.replace(", unit: n_over_lambda_min", "")
    explicit = SCALED.replace("unit: n_over_lambda_min", "unit: t")
    cells = [parse_scenario(text).cells()[0] for text in (base, explicit, SCALED)]
    assert cells[0].id == cells[1].id != cells[2].id
    assert "unit" not in cells[0].spec.id_payload()["time"]
    assert json.loads(json.dumps(cells[2].spec.id_payload()))["time"]["unit"] == "n_over_lambda_min"


# ----------------------------------------------------------------------------- hierarchy.on_failure

GENEROUS = SCALED.replace(", unit: n_over_lambda_min", "").replace("t1: 0.5", "t1: 2.0").replace("n_saves: 4", "n_saves: 9")


@pytest.fixture(scope="module")
def generous():
    return run_cell(parse_scenario(GENEROUS).cells()[0])


def _budget(generous) -> int:
    """A step budget that some of the generous solves exceed and others do not."""
    steps = np.sort(np.unique(generous.nth_num_steps.values))
    assert len(steps) > 1
    return int(steps[len(steps) // 2 - 1])


def test_a_failed_solve_is_recorded_as_inf_from_where_it_stopped(generous):
    budget = _budget(generous)
    text = GENEROUS.replace("orders: [2, 3]", f"orders: [2, 3], max_steps: {budget}, on_failure: record")
    recorded = run_cell(parse_scenario(text).cells()[0])
    failed = recorded.nth_failed
    np.testing.assert_array_equal(failed, generous.nth_num_steps > budget)
    assert failed.any() and not failed.all()
    for seed in recorded.seed.values:
        for order in recorded.order.values:
            got = recorded.f_nth.sel(seed=seed, order=order)
            reached = np.isfinite(got).all("point")
            if bool(failed.sel(seed=seed, order=order)):
                # saves before the stop are those of the generous solve, every save after it is inf
                assert not bool(reached[-1]) and bool(reached[0])
                assert np.isinf(got.where(~reached, np.inf)).all()
                assert np.isinf(recorded.truncation_error.sel(seed=seed, order=order).where(~reached, np.inf)).all()
            else:
                assert bool(reached.all())
            want = generous.f_nth.sel(seed=seed, order=order).where(reached, 0.0)
            np.testing.assert_allclose(got.where(reached, 0.0), want, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(recorded.f_ref, generous.f_ref)  # the reference is untouched


def test_by_default_a_failed_solve_stops_the_cell_and_the_default_keeps_cell_ids(generous):
    budget = _budget(generous)
    stop = GENEROUS.replace("orders: [2, 3]", f"orders: [2, 3], max_steps: {budget}")
    with pytest.raises(SolverError, match="NTH p=.* solver stopped after"):
        run_cell(parse_scenario(stop).cells()[0])
    explicit = parse_scenario(GENEROUS.replace("orders: [2, 3]", "orders: [2, 3], on_failure: stop")).cells()[0]
    record = parse_scenario(GENEROUS.replace("orders: [2, 3]", "orders: [2, 3], on_failure: record")).cells()[0]
    assert explicit.id == parse_scenario(GENEROUS).cells()[0].id != record.id
    assert "on_failure" not in explicit.spec.id_payload()["hierarchy"]
    assert "nth_failed" not in generous


# ----------------------------------------------------------------------------- memory estimate

MEASURED = """\
name: measured
seed: [0, 1]
memory_budget_gb: {budget}
data: {{kind: sphere, n_train: 4, n_test: 2, d: 7}}
network: {{architecture: ffnet, width: 64, depth: 2, activation: tanh}}
hierarchy: {{orders: [2, 4]}}
time: {{t1: 0.5, n_saves: 3}}
"""

# VmHWM, not ru_maxrss: Linux carries the parent's resident high-water mark
# at fork into the child's ru_maxrss across exec (a large pytest process
# would be measured instead of the cell)
PEAK = """\
import re, sys
from nth_dynamics.pipeline.scenario import parse_scenario
from nth_dynamics.pipeline.sweep import run_cell
run_cell(parse_scenario(sys.stdin.read()).cells()[0])
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1)) * 1024)
"""


@pytest.mark.parametrize(
    "budget", [pytest.param(8.0, marks=pytest.mark.slow), 0.75], ids=["vectorised", "chunked"]  # ~30 s each
)
def test_the_cell_estimate_covers_the_peak_memory_of_its_process(budget):
    """A whole cell in a fresh process (JAX, compilation, tower, solvers):
    its peak resident memory stays below the estimate, whose tower alone
    is far smaller than the process (what a chunked K5/K6 tower missed)."""
    import subprocess
    import sys
    from pathlib import Path

    from nth_dynamics.pipeline.sweep import estimate_cell

    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc to read a process's peak memory")

    text = MEASURED.format(budget=budget)
    estimate = estimate_cell(parse_scenario(text).cells()[0])
    assert (estimate["batch_size"] < 4) == (budget < 1)
    done = subprocess.run([sys.executable, "-c", PEAK], input=text, capture_output=True, text=True, check=True)
    peak = int(done.stdout.strip().splitlines()[-1])
    assert estimate["parts"]["tower"] < 0.1 * peak
    assert peak < estimate["bytes"] < 4 * peak
