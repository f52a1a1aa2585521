"""Depth degeneracy of the limit NTK (HWTZ; docs/theory.md §6):
Θ_L(ρ)/Θ_L(1) against depth for the FFNet (→ 1/4 for every ρ ≠ 1) and the
ResNets with α = L^(−γ)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import xarray as xr
from pydantic import Field, NonNegativeFloat, PositiveInt

from ..._schema import Activation, Values
from .. import limits
from .base import AbstractStudy, Estimate, flops_per_pair_layer
from .common import (
    DEFAULT_DEPTHS,
    DEFAULT_GAMMAS,
    attrs,
    colours,
    depth_models,
    figure,
    markdown_table,
    model_coords,
    save,
)

SECTION6_TABLE = {1: 0.471, 10: 0.374, 100: 0.278, 1000: 0.2538}
"""docs/theory.md §6: Θ_L(0.5)/(L + 1) of the HWTZ FFNet, L counting the readout (network depth L − 1)."""


class KernelShapesStudy(AbstractStudy):
    """Depth degeneracy (HWTZ): Θ_L(ρ)/Θ_L(1) against depth for the FFNet and
    one ResNet per γ.

    ρ = cos θ on ``angles`` equally spaced θ ∈ [0, π] (dense near ρ = 1, where
    the deep kernels' spike lives). The Dataset holds ``ntk_shape(model, depth,
    rho)``, ``shape_at_half(model, depth)`` (ρ = 0.5), ``spike_angle(model,
    depth)`` (the angle where the shape has fallen half-way from 1 to its value
    at ρ = 0: → 0 with depth for a spiky, degenerate kernel; constant for a
    stable one) and ``section6(table_L)``: the FFNet's Θ_L(0.5)/(L + 1) at
    docs/theory.md §6's L (network depth L − 1) next to ``section6_reference``.
    """

    study: Literal["kernel_shapes"]
    depths: Values(PositiveInt) = DEFAULT_DEPTHS
    """Network depths L (FFNet hidden-to-hidden layers, ResNet blocks)."""
    gammas: Values(NonNegativeFloat, allow_empty=True) = DEFAULT_GAMMAS
    """One ResNet per γ, α = L^(−γ) ([] for the FFNet alone)."""
    angles: Annotated[int, Field(ge=3)] = 401
    """Points ρ = cos θ, θ equally spaced in [0, π]."""
    activation: Activation = "relu"

    lower: ClassVar[str] = "infinite_width.angles or the number of depths"

    def run(self) -> xr.Dataset:
        models = depth_models(self.gammas, activation=self.activation)
        depths = self.depths
        rho = np.cos(np.linspace(0.0, math.pi, self.angles))
        shapes = np.array([[np.asarray(limits.ntk_shape(rho, m.architecture, L, **m.options)) for L in depths]
                           for m in models])
        at_half = np.array([[float(limits.ntk_shape(0.5, m.architecture, L, **m.options)[0]) for L in depths]
                            for m in models])
        table_L = np.array(sorted(SECTION6_TABLE))
        ffnet = models[0]
        section6 = np.array([float(limits.ntk_shape(0.5, "ffnet", int(L) - 1, **ffnet.options)[0]) for L in table_L])
        return xr.Dataset(
            {
                "ntk_shape": (("model", "depth", "rho"), shapes, attrs("normalised NTK Theta(rho)/Theta(1)")),
                "shape_at_half": (("model", "depth"), at_half, attrs("Theta(0.5)/Theta(1)")),
                "spike_angle": (("model", "depth"), spike_angle(rho, shapes),
                                attrs("half-height angle of the spike at rho = 1", "rad")),
                "section6": (("table_L",), section6, attrs("FFNet Theta_L(0.5)/(L+1), L = network depth + 1")),
                "section6_reference": (("table_L",), np.array([SECTION6_TABLE[L] for L in table_L]),
                                       attrs("docs/theory.md section 6 table")),
            },
            coords={**model_coords(models), "depth": np.asarray(depths), "rho": rho, "table_L": table_L},
            attrs={
                "title": "depth degeneracy of the infinite-width NTK (HWTZ)",
                "models": json.dumps({m.label: m.options for m in models}, sort_keys=True),
            },
        )

    def estimate(self) -> Estimate:
        models = 1 + len(self.gammas)
        flops = models * sum(self.depths) * self.angles * flops_per_pair_layer(self.activation)
        return Estimate.of(8 * models * len(self.depths) * self.angles * 8, flops, models * len(self.depths))

    def draw(self, ds: xr.Dataset, out_dir: Path) -> list[Path]:
        depths = ds.depth.values
        show = depths[np.unique(np.linspace(0, len(depths) - 1, min(5, len(depths))).round().astype(int))]
        return plot_kernel_shapes(ds, out_dir / "kernel_shapes", show_depths=[int(L) for L in show])

    def summarise(self, ds: xr.Dataset) -> str:
        lines = markdown_table("Θ_L(0.5)/Θ_L(1)", ds.shape_at_half, "depth", "L")
        lines += ["", "| docs/theory.md §6 L | FFNet Θ_L(0.5)/(L+1) | docs/theory.md §6 |", "|---:|---:|---:|"]
        lines += [f"| {L} | {float(ds.section6.sel(table_L=L)):.5f} | {float(ds.section6_reference.sel(table_L=L)):.4g} |"
                  for L in ds.table_L.values]
        return "\n".join(lines)


def spike_angle(rho: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """θ where shape(θ) first crosses (1 + shape(ρ=0))/2, by linear interpolation in θ."""
    theta = np.arccos(np.clip(rho, -1, 1))
    out = np.full(shapes.shape[:-1], np.nan)
    for index in np.ndindex(shapes.shape[:-1]):
        curve = shapes[index]
        level = 0.5 * (1 + np.interp(0.5 * math.pi, theta, curve))
        below = np.nonzero(curve < level)[0]
        if below.size and below[0] > 0:
            i = below[0]
            out[index] = np.interp(level, [curve[i], curve[i - 1]], [theta[i], theta[i - 1]])
    return out


def plot_kernel_shapes(ds: xr.Dataset, stem: Path, show_depths: Iterable[int] = (1, 10, 100, 1000)) -> list[Path]:
    """Shape against ρ for several depths (one panel per model) and Θ(0.5)/Θ(1) against depth."""
    show = [L for L in show_depths if L in ds.depth.values]
    models = list(ds.model.values)
    fig, axes = figure(1, len(models) + 1, size=(3.6 * (len(models) + 1), 3.4))
    axes = axes[0]
    for ax, model in zip(axes, models):
        for colour, L in zip(colours("viridis", len(show)), show):
            ax.plot(ds.rho, ds.ntk_shape.sel(model=model, depth=L), color=colour, label=f"L = {L}")
        ax.axhline(0.25, color="grey", lw=0.7, ls=":")
        ax.set(title=model, xlabel="ρ = x·x′", ylim=(-0.1, 1.02))
    axes[0].set_ylabel("Θ_L(ρ) / Θ_L(1)")
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    for model in models:
        ax.semilogx(ds.depth, ds.shape_at_half.sel(model=model), marker=".", label=model)
    ax.plot(ds.table_L - 1, ds.section6_reference, "kx", label="docs/theory.md §6 (depth = L − 1)")
    ax.axhline(0.25, color="grey", lw=0.7, ls=":")
    ax.set(title="ρ = 0.5", xlabel="depth L", ylabel="Θ_L(0.5) / Θ_L(1)")
    ax.legend(fontsize=7)
    return save(fig, stem)


__all__ = ["SECTION6_TABLE", "KernelShapesStudy", "plot_kernel_shapes", "spike_angle"]
