"""The infinite-width scenario kind (``kind: infinite_width``): one study of
:mod:`nth_dynamics.depth_study` run from a scenario file, through the same
commands as the finite-width sweeps (docs/theory.md §6)::

    python -m nth_dynamics validate scenarios/depth_degeneracy.yaml
    python -m nth_dynamics simulate scenarios/depth_degeneracy.yaml -o results/infinite_width/depth_degeneracy.nc
    python -m nth_dynamics report results/infinite_width/depth_degeneracy.nc

The ``infinite_width`` section names the study (``kernel_shapes``,
``depth_generalization``, ``spectral_decay`` or ``width_convergence``) and its
parameters, which are the keyword arguments of the depth_study function of that
name (:func:`study_arguments`). The study runs as one computation (one "cell":
nothing to resume) and its Dataset gets the provenance attributes of every
result (:func:`nth_dynamics.results.provenance`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._files import output_format, read_dataset, write_text
from .._progress import Progress
from ..theory import depth_study
from .results import provenance
from .scenario import Cell, Scenario, ScenarioError
from .study_specs import (
    DepthGeneralizationStudy,
    KernelShapesStudy,
    SpectralDecayStudy,
    WidthConvergenceStudy,
)

FLOPS_PER_SECOND = 2e9
"""Assumed sustained throughput of the rough time estimate (as :mod:`nth_dynamics.sweep`)."""
COMPILE_SECONDS = 5.0
"""Assumed compilation time per kernel shape (dominant for small studies)."""

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
    section: its fields, as plain JSON-able values (the ResNet-only options of
    width_convergence only for a ResNet, an unset α or γ left out)."""
    study = scenario.infinite_width
    arguments = study.model_dump(mode="json", exclude={"study"})
    if isinstance(study, WidthConvergenceStudy):
        resnet_only = ("alpha", "gamma", "branch") if study.architecture != "resnet" else ()
        arguments = {key: value for key, value in arguments.items() if key not in resnet_only and value is not None}
    return arguments


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
    cell = study_cell(scenario)
    name, arguments = cell.spec["study"], cell.spec["arguments"]
    estimate = estimate_study(scenario)
    check_study_budget(scenario, estimate)
    progress.start(1)
    try:
        progress.cell(1, cell, False)
        progress.stage(name)
        started = time.perf_counter()
        ds = getattr(depth_study, name)(**arguments)
        seconds = round(time.perf_counter() - started, 3)
        progress.cell_done(cell, seconds)
    finally:
        progress.finish()
    title = ds.attrs.get("title", "")
    ds.attrs.update(
        provenance(
            scenario,
            stage_times={name: seconds},
            cells=[{"cell_id": cell.id, "study": name, "memory_bytes": estimate["bytes"],
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


# ----------------------------------------------------------------------------- estimates


def estimate_study(scenario: Scenario) -> dict[str, float]:
    """Rough peak memory (bytes) and run time (seconds) of the study: the
    kernels' pair count × depth × a cost per pair and layer (ReLU closed form
    ~50 flops; smooth activations a 2-D quadrature), plus compilation per
    kernel shape. Good to an order of magnitude."""
    study = scenario.infinite_width
    per_pair_layer = 50.0 if study.activation == "relu" else 20.0 * 64**2
    models = 1 + len(getattr(study, "gammas", ()))
    if isinstance(study, KernelShapesStudy):
        pairs = study.angles
        flops = models * sum(study.depths) * pairs * per_pair_layer
        memory = 8 * models * len(study.depths) * pairs * 8
        compiles = models * len(study.depths)
    elif isinstance(study, DepthGeneralizationStudy):
        points = study.n_train + study.n_test
        solves = models * len(study.depths) * 10 * study.n_train**3  # an eigendecomposition per kernel
        flops = models * sum(study.depths) * points**2 * per_pair_layer + solves
        memory = 12 * points**2 * 8
        compiles = models * len(study.depths)
    elif isinstance(study, SpectralDecayStudy):
        nodes = 32 * 10 * max(16, math.ceil(math.pi * study.k_max / 16))  # spectrum's composite Gauss–Legendre
        projections = models * len(study.depths) * len(study.dims) * nodes * study.k_max * 4  # Gegenbauer sums
        flops = models * sum(study.depths) * nodes * per_pair_layer + projections
        memory = (study.k_max + 1) * nodes * 8 * 2
        compiles = models * len(study.depths)
    else:
        depth = max(study.depth, 1)
        matrices = depth * (2 if study.architecture == "resnet" and study.branch == "two" else 1)
        params = [w * study.d + matrices * w * w + w for w in study.widths]
        flops = sum(study.seeds * study.n * (3 + 3 * study.n) * 2 * p for p in params)
        batch = max(1, min(study.seeds, 2**30 // (8 * 6 * params[-1])))  # as depth_study.ensemble_ntk
        memory = batch * 8 * 6 * params[-1] + study.n**2 * 8 * (len(study.widths) + 1) * study.seeds
        compiles = len(study.widths) + 1
    return {"bytes": int(memory), "seconds": flops / FLOPS_PER_SECOND + COMPILE_SECONDS * min(compiles, 4)}


LOWER = {
    "kernel_shapes": "infinite_width.angles or the number of depths",
    "depth_generalization": "infinite_width.n_train or n_test",
    "spectral_decay": "infinite_width.k_max",
    "width_convergence": "infinite_width.widths, seeds or n",
}
"""What to lower when a study's estimate exceeds memory_budget_gb."""


def check_study_budget(scenario: Scenario, estimate: dict[str, float]) -> None:
    """Refuse the study if its memory estimate exceeds ``memory_budget_gb``."""
    if estimate["bytes"] > scenario.memory_budget_gb * 1e9:
        study = scenario.infinite_width.study
        raise ScenarioError(
            f"{scenario.source}: memory_budget_gb: the {study} study needs ≈ {estimate['bytes'] / 1e9:.3g} GB, "
            f"above the budget of {scenario.memory_budget_gb:g} GB; allowed: lower {LOWER[study]}, "
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
    """The figure of the study (PNG + SVG, :mod:`nth_dynamics.depth_study`'s
    plots) and ``report.md`` (its key numbers) in ``out_dir``; returns the
    paths, ``report.md`` first."""

    ds = read_dataset(result_path)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ScenarioError(f"{out_dir}: cannot create the report directory ({error.strerror}); "
                            "allowed: a writable directory") from None
    study = ds.attrs["study"]
    if study == "kernel_shapes":
        depths = ds.depth.values
        show = depths[np.unique(np.linspace(0, len(depths) - 1, min(5, len(depths))).round().astype(int))]
        figures = depth_study.plot_kernel_shapes(ds, out_dir / "kernel_shapes", show_depths=[int(L) for L in show])
    elif study == "depth_generalization":
        finite = ds.time.values[np.isfinite(ds.time.values)]
        flow_time = float(finite[len(finite) // 2]) if finite.size else math.inf
        figures = depth_study.plot_generalization([ds], out_dir / "test_error_vs_depth", flow_time=flow_time)
    elif study == "spectral_decay":
        figures = depth_study.plot_spectra(ds, out_dir / "spectra")
    else:
        figures = depth_study.plot_width_convergence([ds], out_dir / "width_convergence")
    report = write_text(_markdown(ds, Path(result_path), [p.name for p in figures if p.suffix == ".png"]), out_dir / "report.md")
    return [report, *figures]


def _markdown(ds: xr.Dataset, result_path: Path, figures: list[str]) -> str:
    study = ds.attrs["study"]
    lines = [
        f"# {ds.attrs.get('title', study)}",
        "",
        f"Result `{result_path.name}`: infinite-width study `{study}` (docs/theory.md §6), "
        f"`nth_dynamics.depth_study.{study}(**{ds.attrs['study_arguments']})`; git {ds.attrs.get('git_commit', '?')}.",
        "",
    ]
    lines += [f"![{name}]({name})" for name in figures] + [""]
    if study == "kernel_shapes":
        lines += _table("Θ_L(0.5)/Θ_L(1)", ds.shape_at_half, "depth", "L")
        lines += ["", "| docs/theory.md §6 L | FFNet Θ_L(0.5)/(L+1) | docs/theory.md §6 |", "|---:|---:|---:|"]
        lines += [f"| {L} | {float(ds.section6.sel(table_L=L)):.5f} | {float(ds.section6_reference.sel(table_L=L)):.4g} |"
                  for L in ds.table_L.values]
    elif study == "depth_generalization":
        regression = ds.sel(time=np.inf)
        lines += _table(f"{ds.attrs['task']}: kernel regression, test error (sign)", regression.test_error, "depth", "L")
        lines += [""] + _table("relative test MSE", regression.test_mse, "depth", "L")
        lines += ["", f"Constant predictor: relative test MSE {ds.attrs['constant_predictor_test_mse']:.3f}; "
                  f"majority class: test error {ds.attrs['majority_class_test_error']:.3f}."]
    elif study == "spectral_decay":
        for parity in ds.parity.values:
            exponent = ds.exponent.sel(parity=parity)
            for L in ds.depth.values:
                lines += _table(f"decay exponent of μ_k, {parity} k, depth {L} (BGGB: −d)", exponent.sel(depth=L), "d", "d")
                lines.append("")
    else:
        lines += [
            f"{ds.attrs['architecture']} depth {ds.attrs['depth']}: slope of the mean deviation in log width "
            f"{ds.attrs['slope']:.3f} (95 % bootstrap {ds.attrs['slope_ci_low']:.3f} to {ds.attrs['slope_ci_high']:.3f}; "
            "docs/theory.md §4: −1/2), seed-mean slope "
            f"{ds.attrs['seed_mean_slope']:.3f}.",
            "",
            "| width | mean deviation | seed-mean deviation |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {int(w)} | {float(ds.mean_deviation.sel(width=w)):.4g} | {float(ds.seed_mean_deviation.sel(width=w)):.4g} |"
                  for w in ds.width.values]
    return "\n".join(lines) + "\n"


def _table(title: str, values: xr.DataArray, column: str, label: str) -> list[str]:
    """A Markdown table of ``values(model, column)``: one row per model."""
    columns = values[column].values
    lines = [f"{title}:", "", "| model | " + " | ".join(f"{label}={c}" for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for model in values.model.values:
        row = values.sel(model=model).values
        lines.append(f"| {model} | " + " | ".join("—" if np.isnan(v) else f"{v:.4f}" for v in row) + " |")
    return lines


__all__ = ["estimate_study", "is_study_result", "simulate_study", "study_arguments", "study_cell",
           "write_study_report"]
