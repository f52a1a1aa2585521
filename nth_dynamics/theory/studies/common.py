"""What several studies share (docs/theory.md §6): the depth models (the FFNet
and one ResNet per γ), the seed-ensemble NTK of finite networks, the two real
tasks, and the small writers of Dataset attributes, figures and Markdown.

The depth-study models follow docs/theory.md §6: the FFNet is HWTZ's (ReLU,
every layer trained, readout on σ(h_L)); the ResNets are the two-matrix
branch with only the hidden matrices trained and a linear readout on h_L, as
in §6's formula. Depth is always the networks' depth (FFNet hidden-to-hidden
layers, ResNet blocks): the FFNet of depth L is §6's Θ_{L+1}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import Array, ArrayLike, Float
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..._files import save_figure
from ...data import make_data
from ...engine.kernels import kernel_tower
from ...engine.networks import make_ensemble, parameter_counts

DEFAULT_DEPTHS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
DEFAULT_GAMMAS = (0.0, 0.5, 1.0)
ENSEMBLE_BYTES = 2**30
"""Memory the seed ensemble of :func:`ensemble_ntk` plans for by default."""
BYTES_PER_PARAMETER = 8 * 6
"""float64 and ~6 parameter-sized arrays alive per network while K2₀ is formed."""


# ----------------------------------------------------------------------------- depth models


class Model(NamedTuple):
    """One kernel of a depth study: a label, the architecture and its options (all but depth)."""

    label: str
    architecture: str
    options: dict[str, Any]
    gamma: float  # NaN for the FFNet


def depth_models(gammas: Sequence[float] = DEFAULT_GAMMAS, *, activation: str = "relu") -> list[Model]:
    """The FFNet and one ResNet per γ (α = L^(−γ)), with docs/theory.md §6's conventions."""
    ffnet = {"activation": activation, "trained": "all", "readout": "activation"}
    models = [Model("ffnet", "ffnet", ffnet, math.nan)]
    for gamma in gammas:
        options = {"activation": activation, "trained": "hidden", "readout": "linear", "branch": "two",
                   "gamma": float(gamma)}
        models.append(Model(f"resnet_g{gamma:g}", "resnet", options, float(gamma)))
    return models


def model_coords(models: Sequence[Model]) -> dict[str, Any]:
    """The ``model`` coordinate and its ``architecture`` and ``gamma`` labels."""
    return {
        "model": [m.label for m in models],
        "architecture": ("model", [m.architecture for m in models]),
        "gamma": ("model", np.array([m.gamma for m in models])),
    }


# ----------------------------------------------------------------------------- finite networks


def empirical_ntk(model: eqx.Module, x: Float[Array, "n d"]) -> Float[Array, "n n"]:
    """``K2₀(a, b) = <∇θ f(x_a), ∇θ f(x_b)>`` over the model's trained
    parameters: K2 of the kernel tower (:func:`nth_dynamics.engine.kernels.kernel_tower`,
    docs/theory.md §2)."""
    return kernel_tower(model, x, 2)[0]


@eqx.filter_jit
def _ensemble_ntk(ensemble, x):
    return eqx.filter_vmap(lambda model: empirical_ntk(model, x))(ensemble)


def ensemble_ntk(
    architecture: str,
    x: Float[ArrayLike, "n d"],
    width: int,
    depth: int,
    keys: jax.Array,
    *,
    seed_batch: int | None = None,
    **options,
) -> Float[np.ndarray, "seeds n n"]:
    """K2₀ of a seed ensemble of the project's networks
    (:func:`nth_dynamics.engine.networks.make_ensemble`, ``eqx.filter_vmap``
    over seeds), ``seed_batch`` seeds at a time (default: as many as fit
    :data:`ENSEMBLE_BYTES`)."""
    x = jnp.asarray(x, dtype=jnp.float64)
    if seed_batch is None:
        seed_batch = ensemble_batch(len(keys), parameter_counts(architecture, x.shape[1], width, depth, **options)[0])
    blocks = []
    for start in range(0, len(keys), seed_batch):
        ensemble = make_ensemble(architecture, x.shape[1], width, depth, keys[start : start + seed_batch], **options)
        blocks.append(np.asarray(_ensemble_ntk(ensemble, x)))
    return np.concatenate(blocks)


def ensemble_batch(seeds: int, parameters: int) -> int:
    """Seeds of one ensemble block: all of them, or as many as fit :data:`ENSEMBLE_BYTES`."""
    return max(1, min(seeds, ENSEMBLE_BYTES // (BYTES_PER_PARAMETER * parameters)))


# ----------------------------------------------------------------------------- tasks


def task_data(task: str, *, n_train: int, n_test: int, d: int, seed: int, classes: Sequence[int] = (3, 8)):
    """The two real tasks, through :func:`nth_dynamics.data.make_data`:
    ``"digits"`` (two classes of scikit-learn's bundled digits, labels ±1,
    PCA to d dims, unit sphere) or ``"teacher"`` (x uniform on S^(d−1), labels
    from a random wide tanh network of the project, width 512, depth 1)."""
    specs = {
        "digits": {"kind": "digits", "classes": tuple(classes)},
        "teacher": {"kind": "teacher", "teacher": "network", "teacher_width": 512, "teacher_depth": 1},
    }
    if task not in specs:
        raise ValueError(f"task must be one of {sorted(specs)}, got {task!r}")
    spec = {**specs[task], "d": d, "n_train": n_train, "n_test": n_test}
    return make_data(spec, jax.random.key(seed))


# ----------------------------------------------------------------------------- writing


def attrs(long_name: str, units: str = "1") -> dict[str, str]:
    """CF attributes of a data variable."""
    return {"long_name": long_name, "units": units}


def figure(*subplots: int, size: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A pyplot-free figure (Agg when saved) and its axes, always a 2-D array."""
    fig = Figure(figsize=size)
    return fig, fig.subplots(*subplots, squeeze=False)


def save(fig: Figure, stem: Path) -> list[Path]:
    """Lay out ``fig`` and write it as PNG and SVG next to each other."""
    fig.tight_layout()
    return save_figure(fig, stem, dpi=130, bbox_inches="tight")


def colours(name: str, count: int | None = None) -> list:
    """``count`` colours along a continuous colormap, or a qualitative map's own list."""
    cmap = colormaps[name]
    return list(cmap.colors) if count is None else list(cmap(np.linspace(0, 0.9, count)))


def markdown_table(title: str, values: xr.DataArray, column: str, label: str) -> list[str]:
    """A Markdown table of ``values(model, column)``: one row per model."""
    columns = values[column].values
    lines = [f"{title}:", "", "| model | " + " | ".join(f"{label}={c}" for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for model in values.model.values:
        row = values.sel(model=model).values
        lines.append(f"| {model} | " + " | ".join("—" if np.isnan(v) else f"{v:.4f}" for v in row) + " |")
    return lines


__all__ = [
    "DEFAULT_DEPTHS",
    "DEFAULT_GAMMAS",
    "Model",
    "attrs",
    "depth_models",
    "empirical_ntk",
    "ensemble_batch",
    "ensemble_ntk",
    "markdown_table",
    "model_coords",
    "task_data",
]
