"""Cells of a sweep: save times in units of n/λ_min (``time.unit``)."""

import json

import numpy as np
import pytest

from nth_dynamics.scenario import parse_scenario
from nth_dynamics.sweep import run_cell

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
    assert "unit" not in cells[0].spec["time"]
    assert json.loads(json.dumps(cells[2].spec))["time"]["unit"] == "n_over_lambda_min"
