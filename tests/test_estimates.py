"""validate's time plan: the step count of the adaptive solves
(:func:`planned_steps`) against the steps real cells take."""

import numpy as np
import pytest

from nth_dynamics.pipeline.cells import ModelFactory
from nth_dynamics._cost import BYTES_PER_SECOND, FLOPS_PER_SECOND, SOLVER_PARAMETER_PASSES
from nth_dynamics.pipeline.estimates import ASSUMED_STEPS, estimate_seconds, network_counts, planned_steps
from nth_dynamics.pipeline.scenario import parse_scenario
from nth_dynamics.pipeline.sweep import run_cell

CELLS = """\
name: steps
seed: [0, 1]
data: {{kind: sphere, n_train: {n}, d: 9}}
network: {{architecture: {architecture}, width: 256, depth: 2, activation: tanh}}
hierarchy: {{orders: [2]}}
time: {{t1: 1.0, n_saves: 3, unit: n_over_lambda_min}}
"""


@pytest.mark.parametrize("architecture", ["ffnet", "resnet"])
def test_the_planned_steps_follow_the_steps_of_real_gradient_flows(architecture):
    """Measured steps grow about 4× from n = 4 to n = 64 (the NTK's
    conditioning); the plan follows them to within 1.6×, where the fixed
    ASSUMED_STEPS misses one of the two ends by more than that."""
    ratios, measured = [], []
    for n in (4, 64):
        cell = parse_scenario(CELLS.format(n=n, architecture=architecture)).cells()[0]
        steps = float(np.median(run_cell(cell)["ref_num_steps"]))
        measured.append(steps)
        ratios.append(steps / planned_steps(cell.spec))
    assert measured[1] > 3 * measured[0]
    assert all(1 / 1.6 < ratio < 1.6 for ratio in ratios), ratios
    assert max(max(s / ASSUMED_STEPS, ASSUMED_STEPS / s) for s in measured) > 1.6


def _spec(text: str):
    return parse_scenario(text).cells()[0].spec


def test_the_plan_grows_with_accuracy_time_and_narrowness():
    base = CELLS.format(n=16, architecture="ffnet")
    steps = planned_steps(_spec(base))
    tighter = base + "reference: {rtol: 1.0e-11, atol: 1.0e-11}\n"
    assert planned_steps(_spec(tighter)) == pytest.approx(steps * 100 ** (1 / 5), rel=1e-12)  # Tsit5: 5th order
    longer = base.replace("t1: 1.0", "t1: 4.0")
    assert 1.5 * steps < planned_steps(_spec(longer)) < 2 * steps  # ~√(t1·λ_max/n) once that is large
    narrow = base.replace("width: 256", "width: 8")
    assert planned_steps(_spec(narrow)) == pytest.approx(steps * np.exp(0.45 * (16 / 8 - 16 / 256)), rel=1e-12)


def test_a_users_model_and_a_descent_reference_are_planned_without_the_limit_kernel():
    spec = _spec(CELLS.format(n=8, architecture="ffnet").replace(", unit: n_over_lambda_min", ""))
    factory = ModelFactory(lambda key, d, width, depth, activation: None)
    assert planned_steps(spec, factory) == ASSUMED_STEPS
    descent = spec.model_copy(update={"reference": spec.reference.model_copy(
        update={"method": "gradient_descent", "lr": 0.001})})
    # t1/lr = 1000 descent steps of one gradient each, in place of 7 Runge–Kutta stages × the planned steps,
    # without the stages' passes over the parameters
    n, n_trained, steps = spec.n_train, network_counts(spec)[1], planned_steps(spec)
    expected = len(spec.seeds) * (6 * n * n_trained * (1000 - 7 * steps) / FLOPS_PER_SECOND
                                  - steps * SOLVER_PARAMETER_PASSES * n_trained * 8 / BYTES_PER_SECOND)
    assert estimate_seconds(descent) - estimate_seconds(spec) == pytest.approx(expected, rel=1e-9)


def test_a_standard_parameterization_is_planned_from_its_own_kernel():
    """Its limit kernel needs the width and grows with it: at a fixed t1 the
    wider network's solve is the stiffer one, planned, not the fallback."""
    text = CELLS.format(n=16, architecture="ffnet").replace(", unit: n_over_lambda_min", "").replace(
        "activation: tanh}", "activation: tanh, parameterization: standard}").replace("width: 256", "width: [64, 256]")
    narrow, wide = (planned_steps(cell.spec) for cell in parse_scenario(text).cells())
    assert ASSUMED_STEPS not in (narrow, wide) and wide > narrow
