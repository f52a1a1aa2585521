"""Gegenbauer spectra of the limit NTKs on S^(d−1) and their k^(−d) decay
(BGGB; docs/theory.md §6)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import xarray as xr
from pydantic import Field, NonNegativeFloat, PositiveInt

from ..._schema import Activation, Values
from .. import limits, spectrum
from .base import AbstractStudy, Estimate, StudyError, flops_per_pair_layer
from .common import (
    Model,
    attrs,
    colours,
    depth_models,
    figure,
    markdown_table,
    model_coords,
    save,
)

PARITIES = ("even", "odd")


class SpectralDecayStudy(AbstractStudy):
    """Gegenbauer spectra of the NTKs on S^(d−1) and their decay exponents (BGGB).

    The Dataset holds ``coefficient(model, depth, d, k)`` (μ_k, see
    :func:`nth_dynamics.theory.spectrum.gegenbauer_coefficients`) and
    ``exponent(model, depth, d, parity)``: the slope of log μ_k against log k
    over ``fit_range``, fitted separately over even and odd k (their constants
    differ; NaN where the coefficients of that parity vanish, as for smooth odd
    activations, or are not all positive). BGGB: −d for ReLU at depth ≥ 2.
    """

    study: Literal["spectral_decay"]
    dims: Values(Annotated[int, Field(ge=2)]) = (2, 3, 4)
    """Input dimensions d (the sphere S^(d−1))."""
    depths: Values(PositiveInt) = (2, 4, 8)
    gammas: Values(NonNegativeFloat, allow_empty=True) = (0.5, 1.0)
    k_max: PositiveInt = 256
    """Highest degree k of the spectrum."""
    fit_range: tuple[PositiveInt, PositiveInt] = (32, 128)
    """Degrees [k_min, k_max] of the power-law fit."""
    activation: Activation = "relu"

    lower: ClassVar[str] = "infinite_width.k_max"

    def check(self) -> None:
        low, high = self.fit_range
        if not (low + 3 <= high <= self.k_max):
            raise StudyError("fit_range", f"got {list(self.fit_range)}, allowed: [k_min, k_max] with k_min + 3 ≤ "
                             f"k_max ≤ infinite_width.k_max = {self.k_max} (two degrees of each parity)")

    def run(self) -> xr.Dataset:
        models = depth_models(self.gammas, activation=self.activation)
        dims, depths = self.dims, self.depths
        coefficients = np.empty((len(models), len(depths), len(dims), self.k_max + 1))
        exponents = np.full((len(models), len(depths), len(dims), len(PARITIES)), np.nan)
        for i, model in enumerate(models):
            for j, L in enumerate(depths):
                profile = _cached_profile(model, int(L))
                for l, d in enumerate(dims):
                    mu = spectrum.gegenbauer_coefficients(profile, int(d), self.k_max)
                    coefficients[i, j, l] = mu
                    for p, parity in enumerate(PARITIES):
                        try:
                            exponents[i, j, l, p] = spectrum.decay_exponent(mu, *self.fit_range, parity=parity).exponent
                        except ValueError:
                            pass  # that parity vanishes: leave NaN
        return xr.Dataset(
            {
                "coefficient": (("model", "depth", "d", "k"), coefficients,
                                attrs("Gegenbauer coefficient mu_k (eigenvalue)")),
                "exponent": (("model", "depth", "d", "parity"), exponents, attrs("fitted decay exponent of mu_k in k")),
            },
            coords={**model_coords(models), "depth": np.asarray(depths), "d": np.asarray(dims),
                    "k": np.arange(self.k_max + 1), "parity": list(PARITIES)},
            attrs={
                "title": "Gegenbauer spectra of infinite-width NTKs on the sphere (BGGB)",
                "fit_range": json.dumps(list(self.fit_range)),
                "activation": self.activation,
                "models": json.dumps({m.label: m.options for m in models}, sort_keys=True),
            },
        )

    def estimate(self) -> Estimate:
        models = 1 + len(self.gammas)
        nodes = 32 * 10 * max(16, math.ceil(math.pi * self.k_max / 16))  # spectrum's composite Gauss–Legendre
        projections = models * len(self.depths) * len(self.dims) * nodes * self.k_max * 40  # Gegenbauer sums
        flops = models * sum(self.depths) * nodes * flops_per_pair_layer(self.activation) + projections
        return Estimate.of((self.k_max + 1) * nodes * 8 * 2, flops, models * len(self.depths))

    def draw(self, ds: xr.Dataset, out_dir: Path) -> list[Path]:
        return plot_spectra(ds, out_dir / "spectra")

    def summarise(self, ds: xr.Dataset) -> str:
        lines: list[str] = []
        for parity in ds.parity.values:
            exponent = ds.exponent.sel(parity=parity)
            for L in ds.depth.values:
                lines += markdown_table(f"decay exponent of μ_k, {parity} k, depth {L} (BGGB: −d)",
                                        exponent.sel(depth=L), "d", "d")
                lines.append("")
        return "\n".join(lines)


def _cached_profile(model: Model, depth: int):
    """k(ρ) of one model; the spectra of several d share the same quadrature nodes."""
    cache: dict[bytes, np.ndarray] = {}

    def profile(rho: np.ndarray) -> np.ndarray:
        key = np.asarray(rho).tobytes()
        if key not in cache:
            cache[key] = np.asarray(limits.ntk_profile(rho, model.architecture, depth, **model.options))
        return cache[key]

    return profile


def plot_spectra(ds: xr.Dataset, stem: Path, smooth: xr.Dataset | None = None) -> list[Path]:
    """μ_k against k on log-log axes, one panel per d, with the k^(−d) guide
    (and the coefficients of a ``smooth`` activation's Dataset, if given)."""
    fig, axes = figure(1, ds.sizes["d"], size=(4.6 * ds.sizes["d"], 4.0))
    k = ds.k.values[1:]
    for ax, d in zip(axes[0], ds.d.values):
        for colour, model in zip(colours("tab10"), ds.model.values):
            for style, L in zip(("-", "--", ":"), ds.depth.values):
                mu = ds.coefficient.sel(model=model, depth=L, d=d).values[1:]
                ax.loglog(k, np.where(mu > 0, mu, np.nan), color=colour, ls=style, lw=0.9, label=f"{model} L={L}")
        if smooth is not None and d in smooth.d.values:
            for model in smooth.model.values[:1]:
                mu = smooth.coefficient.sel(model=model, d=d).isel(depth=0).values[1:]
                ax.loglog(k, np.where(mu > 1e-14, mu, np.nan), "k.", ms=3, label=f"{model} {smooth.attrs['activation']}")
        k_anchor = min(32, int(k[-1]))  # the guide passes through μ_32 (or the last μ_k of a short spectrum)
        anchor = ds.coefficient.sel(d=d).isel(model=0, depth=0).values[k_anchor]
        ax.loglog(k, anchor * (k / k_anchor) ** (-float(d)), color="grey", lw=2, alpha=0.4, label=f"k^-{d}")
        ax.set(title=f"S^{d - 1} (d = {d})", xlabel="degree k", ylabel="μ_k", ylim=(1e-14, 1))
    axes[0, 0].legend(fontsize=6, ncol=2)
    return save(fig, stem)


__all__ = ["SpectralDecayStudy", "plot_spectra"]
