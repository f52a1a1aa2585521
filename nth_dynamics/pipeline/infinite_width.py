"""The infinite-width scenario kind (``kind: infinite_width``): one study of
:mod:`nth_dynamics.depth_study` run from a scenario file, through the same
commands as the finite-width sweeps (docs/theory.md §6)::

    python -m nth_dynamics validate scenarios/depth_degeneracy.yaml
    python -m nth_dynamics simulate scenarios/depth_degeneracy.yaml -o results/infinite_width/depth_degeneracy.nc
    python -m nth_dynamics report results/infinite_width/depth_degeneracy.nc

The ``infinite_width`` section names the study (``kernel_shapes``,
``depth_generalization``, ``spectral_decay`` or ``width_convergence``) and its
parameters: a study class of :mod:`nth_dynamics.theory.studies`, whose fields
are also the keyword arguments of the depth_study function of that name
(:func:`study_arguments`). Everything study-specific (running, estimates, what
to lower, figures, the summary) is a method of that class; this module only
adds what every study shares. The study runs as one computation (one "cell":
nothing to resume) and its Dataset gets the provenance attributes of every
result (:func:`nth_dynamics.results.provenance`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import xarray as xr

from .._files import output_format, read_dataset, write_text
from .._progress import Progress
from ..theory.studies import STUDIES, AbstractStudy, Estimate
from .results import provenance
from .scenario import Cell, Scenario, ScenarioError

COORDINATES: dict[str, tuple[str, str]] = {
    "model": ("kernel: ffnet, or resnet_g<gamma> (alpha = depth^-gamma)", "1"),
    "architecture": ("network architecture", "1"),
    "gamma": ("ResNet residual exponent, alpha = depth^-gamma (NaN for the FFNet)", "1"),
    "depth": ("network depth (FFNet hidden-to-hidden layers, ResNet blocks)", "1"),
    "rho": ("correlation rho = x.x' of unit inputs", "1"),
    "table_L": ("L of the docs/theory.md section 6 table (network depth + 1)", "1"),
    "time": ("gradient-flow time of the 1/(2n) loss (inf: kernel regression)", "1"),
    "d": ("input dimension (sphere S^(d-1))", "1"),
    "k": ("Gegenbauer degree", "1"),
    "parity": ("parity of the degrees of the fit", "1"),
    "width": ("network width m", "1"),
    "seed": ("network seed index", "1"),
    "point": ("input point", "1"),
    "point_b": ("input point (second index of the kernel)", "1"),
}


def study_arguments(scenario: Scenario) -> dict[str, Any]:
    """Keyword arguments of ``depth_study.<study>`` from the ``infinite_width``
    section: its fields, as plain JSON-able values
    (:meth:`~nth_dynamics.theory.studies.AbstractStudy.arguments`)."""
    return scenario.infinite_width.arguments()


def study_cell(scenario: Scenario) -> Cell:
    """The one cell of an infinite-width scenario: its id hashes the study and its arguments."""
    spec = {"study": scenario.infinite_width.study, "arguments": study_arguments(scenario)}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return Cell(id=digest, coords={"study": spec["study"]}, spec=spec)


def simulate_study(scenario: Scenario, *, progress=None, command: str | None = None) -> xr.Dataset:
    """Run the study of ``scenario`` and return its Dataset with the provenance
    attributes of :func:`nth_dynamics.results.provenance` (the study's own title
    unless the scenario has a description), ``study`` and ``study_arguments``."""
    progress = progress or Progress()
    study = scenario.infinite_width
    cell = study_cell(scenario)
    name, arguments = cell.spec["study"], cell.spec["arguments"]
    estimate = study.estimate()
    check_study_budget(scenario, estimate)
    progress.start(1)
    try:
        progress.cell(1, cell, False)
        progress.stage(name)
        started = time.perf_counter()
        ds = study.run()
        seconds = round(time.perf_counter() - started, 3)
        progress.cell_done(cell, seconds)
    finally:
        progress.finish()
    title = ds.attrs.get("title", "")
    ds.attrs.update(
        provenance(
            scenario,
            stage_times={name: seconds},
            cells=[{"cell_id": cell.id, "study": name, "memory_bytes": estimate.bytes,
                    "stage_wall_times": {name: seconds}}],
            command=command,
        )
    )
    ds.attrs["title"] = scenario.description.strip() or title
    ds.attrs["study"] = name
    ds.attrs["study_arguments"] = json.dumps(arguments, sort_keys=True)
    for coordinate, (long_name, units) in COORDINATES.items():
        if coordinate in ds.coords and "long_name" not in ds[coordinate].attrs:
            ds[coordinate].attrs.update(long_name=long_name, units=units)
    return ds


# ----------------------------------------------------------------------------- budget


def check_study_budget(scenario: Scenario, estimate: Estimate) -> None:
    """Refuse the study if its memory estimate exceeds ``memory_budget_gb``."""
    if estimate.bytes > scenario.memory_budget_gb * 1e9:
        study = scenario.infinite_width
        raise ScenarioError(
            f"{scenario.source}: memory_budget_gb: the {study.study} study needs ≈ {estimate.bytes / 1e9:.3g} GB, "
            f"above the budget of {scenario.memory_budget_gb:g} GB; allowed: lower {study.lower}, "
            "or raise memory_budget_gb"
        )


# ----------------------------------------------------------------------------- report


def is_study_result(path: str | Path) -> bool:
    """Whether ``path`` is a result of an infinite-width scenario (False when it
    cannot be read: the finite-width report then says why)."""

    try:
        engine = "zarr" if output_format(path) == "zarr" else "h5netcdf"
        with xr.open_dataset(path, engine=engine) as ds:  # lazily: only the attributes are read
            return json.loads(ds.attrs.get("scenario", "{}")).get("kind") == "infinite_width"
    except Exception:  # h5py, zarr, xarray and json raise many kinds
        return False


def write_study_report(result_path: str | Path, out_dir: str | Path) -> list[Path]:
    """The figures of the study (PNG + SVG, its ``draw``) and ``report.md``
    (its ``summarise``) in ``out_dir``; returns the paths, ``report.md`` first."""

    ds = read_dataset(result_path)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ScenarioError(f"{out_dir}: cannot create the report directory ({error.strerror}); "
                            "allowed: a writable directory") from None
    study = result_study(ds)
    figures = study.draw(ds, out_dir)
    report = write_text(_markdown(ds, study, Path(result_path), [p.name for p in figures if p.suffix == ".png"]),
                        out_dir / "report.md")
    return [report, *figures]


def result_study(ds: xr.Dataset) -> AbstractStudy:
    """The study that computed a result, rebuilt from its ``study`` and ``study_arguments`` attributes."""
    return STUDIES[ds.attrs["study"]].model_validate({"study": ds.attrs["study"],
                                                      **json.loads(ds.attrs["study_arguments"])})


def _markdown(ds: xr.Dataset, study: AbstractStudy, result_path: Path, figures: list[str]) -> str:
    lines = [
        f"# {ds.attrs.get('title', study.study)}",
        "",
        f"Result `{result_path.name}`: infinite-width study `{study.study}` (docs/theory.md §6), "
        f"`nth_dynamics.depth_study.{study.study}(**{ds.attrs['study_arguments']})`; "
        f"git {ds.attrs.get('git_commit', '?')}.",
        "",
    ]
    lines += [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(lines) + "\n" + study.summarise(ds) + "\n"


__all__ = ["check_study_budget", "is_study_result", "result_study", "simulate_study", "study_arguments", "study_cell",
           "write_study_report"]
