"""The infinite-width studies as types: one registry entry per study file,
the depth_study functions built from the classes (so their defaults cannot
drift), a study defined outside the package becoming a scenario kind, and the
one implementation behind each shared computation."""

import inspect
import json
from pathlib import Path
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from pydantic import NonNegativeFloat

import nth_dynamics as nd
from nth_dynamics import _fits
from nth_dynamics.cli import main
from nth_dynamics.data import gegenbauer, harmonics
from nth_dynamics.engine.networks import make_network
from nth_dynamics.pipeline.scenario import parse_scenario
from nth_dynamics.theory import depth_study, spectrum, studies
from nth_dynamics.theory.studies import STUDIES, AbstractStudy, Estimate, StudyError

STUDY_DIR = Path(studies.__file__).parent
NOT_STUDIES = {"__init__", "base", "common"}


def test_the_registry_has_one_study_per_file_named_by_its_tag():
    files = sorted(path.stem for path in STUDY_DIR.glob("*.py") if path.stem not in NOT_STUDIES)
    assert sorted(STUDIES) == files
    for tag, study in STUDIES.items():
        assert study.__module__ == f"nth_dynamics.theory.studies.{tag}" and study.tag() == tag
        module = __import__(study.__module__, fromlist=["_"])
        defined = [obj for obj in vars(module).values()
                   if isinstance(obj, type) and issubclass(obj, AbstractStudy) and obj.__module__ == module.__name__]
        assert defined == [study], f"{tag}.py must define exactly its one study"


@pytest.mark.parametrize("tag", list(STUDIES))
def test_the_depth_study_function_has_the_class_fields_and_defaults(tag):
    study, function = STUDIES[tag], getattr(depth_study, tag)
    parameters = inspect.signature(function).parameters
    fields = {name: field for name, field in study.model_fields.items() if name != "study"}
    assert list(parameters) == list(fields)
    for name, field in fields.items():
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters[name].default == field.default, name


@pytest.mark.parametrize("tag", list(STUDIES))
def test_every_study_says_what_to_lower_and_estimates_its_defaults(tag):
    study = STUDIES[tag](study=tag)
    assert study.lower.startswith("infinite_width.")
    estimate = study.estimate()
    assert isinstance(estimate, Estimate) and estimate.bytes > 0 and 0 < estimate.seconds < 24 * 3600


def test_the_facade_checks_cross_field_constraints_like_the_scenario():
    with pytest.raises(StudyError, match="widths: got \\[64\\], allowed: at least two widths"):
        depth_study.width_convergence(widths=(64,))
    with pytest.raises(ValueError, match="fit_range"):
        depth_study.spectral_decay(k_max=16)


class ConstantStudy(AbstractStudy):
    """A study defined outside the package: a constant kernel shape per depth."""

    study: Literal["constant"]
    value: NonNegativeFloat = 0.25
    """The constant."""
    depths: tuple[int, ...] = (1, 2)

    lower: ClassVar[str] = "infinite_width.depths"

    def check(self) -> None:
        if self.value > 1:
            raise StudyError("value", f"got {self.value}, allowed: a shape value ≤ 1")

    def run(self) -> xr.Dataset:
        values = np.full(len(self.depths), self.value)
        return xr.Dataset({"shape_at_half": (("depth",), values, {"long_name": "constant", "units": "1"})},
                          coords={"depth": list(self.depths)}, attrs={"title": "a constant"})

    def estimate(self) -> Estimate:
        return Estimate.of(8 * len(self.depths), 0.0, 0)

    def draw(self, ds: xr.Dataset, out_dir: Path) -> list[Path]:
        return []

    def summarise(self, ds: xr.Dataset) -> str:
        return f"constant {float(ds.shape_at_half.mean()):.2f} over {ds.sizes['depth']} depths"


def test_a_newly_registered_study_is_a_valid_infinite_width_scenario(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(STUDIES, "constant", ConstantStudy)
    text = "kind: infinite_width\ninfinite_width: {study: constant, value: 0.5, depths: [3]}\n"
    scn = parse_scenario(text, source="new.yaml")
    assert isinstance(scn.infinite_width, ConstantStudy) and scn.infinite_width.value == 0.5
    assert json.loads(scn.to_json())["infinite_width"] == {"study": "constant", "value": 0.5, "depths": [3]}
    ds = nd.simulate(scn)
    assert ds.attrs["study"] == "constant" and json.loads(ds.attrs["study_arguments"]) == {"value": 0.5, "depths": [3]}
    assert ds.shape_at_half.values.tolist() == [0.5]

    path, result = tmp_path / "new.yaml", tmp_path / "new.nc"
    path.write_text(text)
    assert main(["validate", str(path)]) == 0
    assert "study: constant" in capsys.readouterr().out
    assert main(["simulate", str(path), "-o", str(result), "--quiet"]) == 0
    assert main(["report", str(result), "-o", str(tmp_path / "report")]) == 0
    assert "constant 0.50 over 1 depths" in (tmp_path / "report" / "report.md").read_text()
    for bad, message in (("value: 2", "infinite_width.value: got 2.0, allowed: a shape value ≤ 1"),
                         ("valeu: 2", "infinite_width.valeu: unknown key; did you mean 'value'?")):
        path.write_text(f"kind: infinite_width\ninfinite_width: {{study: constant, {bad}}}\n")
        assert main(["validate", str(path)]) == 2
        assert f"error: {path}: {message}" in capsys.readouterr().err
    path.write_text("kind: infinite_width\ninfinite_width: {study: constnt}\n")
    assert main(["validate", str(path)]) == 2
    assert "width_convergence, constant; did you mean 'constant'?" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one implementation each


def test_empirical_ntk_is_the_gram_matrix_of_the_trained_parameter_jacobian():
    x = jax.random.normal(jax.random.key(1), (5, 3))
    for architecture, options in (("ffnet", {"trained": "all"}), ("resnet", {"trained": "hidden", "readout": "linear"})):
        model = make_network(architecture, 3, 16, 2, key=jax.random.key(0), activation="tanh", **options)
        params, static = eqx.partition(model, model.trained_filter())
        jacobian = jax.jacrev(lambda p: jax.vmap(eqx.combine(p, static))(x))(params)
        rows = jnp.concatenate([leaf.reshape(5, -1) for leaf in jax.tree.leaves(jacobian)], axis=1)
        np.testing.assert_allclose(depth_study.empirical_ntk(model, x), rows @ rows.T, rtol=1e-10, atol=1e-12)


def test_one_gegenbauer_recurrence_serves_the_data_and_the_spectra():
    assert spectrum.gegenbauer_polynomials is harmonics.gegenbauer_polynomials
    t = np.linspace(-1, 1, 11)
    for d in (2, 3, 7):
        table = spectrum.gegenbauer_polynomials(t, d, 9)
        for k in range(10):
            np.testing.assert_allclose(gegenbauer(k, d, t), table[k], rtol=0, atol=1e-15)
        np.testing.assert_allclose(table[:, -1], 1.0)  # P_k(1) = 1


def test_the_line_fit_is_least_squares_and_vectorises_over_resamples():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(12), rng.standard_normal((7, 12))
    line = _fits.fit_line(x, y)
    for i in range(7):
        slope, intercept = np.polyfit(x, y[i], 1)
        assert line.slope[i] == pytest.approx(slope, abs=1e-12) and line.intercept[i] == pytest.approx(intercept, abs=1e-12)
    valid = np.arange(12) < 5
    masked = _fits.fit_line(x, np.where(valid, y, np.nan), valid)
    np.testing.assert_allclose(masked.slope, _fits.fit_line(x[:5], y[:, :5]).slope, rtol=1e-12)
    assert np.isnan(_fits.fit_line(x[:1], y[:, :1]).slope).all()
    exponent = spectrum.decay_exponent(np.r_[1.0, np.arange(1, 41) ** -3.0], 4, 40).exponent  # μ_k = k^-3
    assert exponent == pytest.approx(-3.0, abs=1e-12)
