"""The infinite-width experiments of docs/theory.md §6 as functions of plain
keyword arguments, each returning an ``xarray.Dataset``:

* :func:`width_convergence` — the seed ensemble of the project's own networks
  against :func:`nth_dynamics.limits.ntk`: ``‖K2₀ − Θ∞‖ ~ width^(−1/2)`` (docs/theory.md §4).
* :func:`kernel_shapes` — depth degeneracy (HWTZ): ``Θ_L(ρ)/Θ_L(1)`` against
  depth for the FFNet (→ 1/4) and ResNets with γ ∈ {0, 1/2, 1}.
* :func:`depth_generalization` — kernel regression and the NTK gradient-flow
  closed form on the digits two-class task and a sphere teacher, test error
  against depth.
* :func:`spectral_decay` — Gegenbauer spectra and their k^(−d) decay (BGGB).

Each function is its study class of :mod:`nth_dynamics.theory.studies`
(whose fields, with their defaults, are the function's keyword arguments:
the signatures are generated from them), checked and run. :func:`run_all`
writes every Dataset (netCDF, atomically) and figure (PNG + SVG) of
``results/infinite_width``.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from .._files import write_dataset
from .._provenance import base_attributes
from . import limits
from .studies import STUDIES, AbstractStudy
from .studies.common import (
    DEFAULT_DEPTHS,
    DEFAULT_GAMMAS,
    Model,
    depth_models,
    empirical_ntk,
    ensemble_ntk,
    task_data,
)
from .studies.depth_generalization import (
    KernelPredictions,
    kernel_predictions,
    plot_generalization,
)
from .studies.kernel_shapes import SECTION6_TABLE, plot_kernel_shapes
from .studies.spectral_decay import plot_spectra
from .studies.width_convergence import plot_width_convergence


def _facade(study: type[AbstractStudy]) -> Callable[..., xr.Dataset]:
    """``study(**arguments)``, checked and run, as a function whose keyword
    arguments (and their defaults) are the study's fields."""
    tag = study.tag()

    def run(**arguments) -> xr.Dataset:
        instance = study(study=tag, **arguments)
        instance.check()
        return instance.run()

    parameters = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=field.annotation)
        for name, field in study.model_fields.items()
        if name != "study"
    ]
    run.__signature__ = inspect.Signature(parameters, return_annotation=xr.Dataset)
    run.__name__ = run.__qualname__ = tag
    run.__doc__ = f"The :class:`~nth_dynamics.theory.studies.{study.__name__}` of these fields, run.\n\n{study.__doc__}"
    return run


kernel_shapes = _facade(STUDIES["kernel_shapes"])
depth_generalization = _facade(STUDIES["depth_generalization"])
spectral_decay = _facade(STUDIES["spectral_decay"])
width_convergence = _facade(STUDIES["width_convergence"])


def time_large_kernels(n: int = 1000, depth: int = 1000, d: int = 10) -> dict[str, float]:
    """Wall time of the NNGP and NTK of ``n × n`` points at ``depth``
    (ReLU FFNet and γ = 1/2 ResNet), after compilation."""
    x = np.random.default_rng(0).standard_normal((n, d))
    seconds = {}
    for architecture, options in (("ffnet", {"activation": "relu"}), ("resnet", {"activation": "relu", "gamma": 0.5})):
        limits.kernels(x[:8], x, architecture, 1, **options).ntk.block_until_ready()
        limits.kernels(x, None, architecture, 1, **options).ntk.block_until_ready()
        start = time.perf_counter()
        limits.kernels(x, None, architecture, depth, **options).ntk.block_until_ready()
        seconds[architecture] = time.perf_counter() - start
    return seconds


def run_all(outdir: str | os.PathLike = "results/infinite_width", *, quick: bool = False) -> dict[str, xr.Dataset]:
    """Run every experiment of this module and write the results to ``outdir``:
    ``<name>.nc`` Datasets and ``<name>.png``/``.svg`` figures (the README
    there is a committed document, not written here).

    ``quick=True`` shrinks every sweep (for a smoke test in seconds to a minute).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if quick:
        depths, widths, seeds, k_max, fit, n_train, n_test = (1, 10, 100), (64, 128, 256), 2, 64, (16, 64), 40, 60
    else:
        depths, widths, seeds, k_max, fit, n_train, n_test = (
            DEFAULT_DEPTHS, (64, 128, 256, 512, 1024, 2048), 16, 256, (32, 128), 150, 200)
    datasets: dict[str, xr.Dataset] = {}
    datasets["kernel_shapes"] = _provenance(kernel_shapes(depths=depths + ((10000,) if not quick else ())),
                                            "kernel_shapes()")
    for task in ("digits", "teacher"):
        datasets[f"test_error_{task}"] = _provenance(
            depth_generalization(task=task, depths=depths, n_train=n_train, n_test=n_test),
            f"depth_generalization(task={task!r})",
        )
    datasets["spectra"] = _provenance(spectral_decay(depths=(2, 4, 8), k_max=k_max, fit_range=fit), "spectral_decay()")
    datasets["spectra_tanh"] = _provenance(
        spectral_decay(dims=(3,), depths=(2,), gammas=(), k_max=k_max, fit_range=fit, activation="tanh"),
        "spectral_decay(activation='tanh')",
    )
    for architecture, depth in (("ffnet", 2), ("resnet", 2)):
        datasets[f"width_convergence_{architecture}"] = _provenance(
            width_convergence(architecture=architecture, depth=depth, widths=widths, seeds=seeds, n=8, d=3),
            f"width_convergence(architecture={architecture!r}, depth={depth})",
        )
    for name, ds in datasets.items():
        write_dataset(ds, outdir / f"{name}.nc")
    plot_kernel_shapes(datasets["kernel_shapes"], outdir / "kernel_shapes")
    plot_generalization([datasets["test_error_digits"], datasets["test_error_teacher"]], outdir / "test_error_vs_depth")
    plot_spectra(datasets["spectra"], outdir / "spectra", smooth=datasets["spectra_tanh"])
    plot_width_convergence(
        [datasets["width_convergence_ffnet"], datasets["width_convergence_resnet"]], outdir / "width_convergence"
    )
    return datasets


def _provenance(ds: xr.Dataset, call: str) -> xr.Dataset:
    ds.attrs.update(base_attributes(f"nth_dynamics.depth_study.{call}"))
    return ds


__all__ = [
    "DEFAULT_DEPTHS",
    "DEFAULT_GAMMAS",
    "SECTION6_TABLE",
    "KernelPredictions",
    "Model",
    "depth_generalization",
    "depth_models",
    "empirical_ntk",
    "ensemble_ntk",
    "kernel_predictions",
    "kernel_shapes",
    "plot_generalization",
    "plot_kernel_shapes",
    "plot_spectra",
    "plot_width_convergence",
    "run_all",
    "spectral_decay",
    "task_data",
    "time_large_kernels",
    "width_convergence",
]
