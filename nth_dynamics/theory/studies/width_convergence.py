"""Finite networks against the infinite-width limit (docs/theory.md §4, §6):
the empirical NTK K2₀ of seed ensembles of the project's networks against
:func:`nth_dynamics.theory.limits.ntk`, ‖K2₀ − Θ∞‖ ~ width^(−1/2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import jax
import numpy as np
import xarray as xr
from pydantic import (
    AfterValidator,
    BeforeValidator,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)

from ..._fits import fit_line
from ..._schema import ALL_GROUPS, Activation, Group, Values, _distinct, _sorted, _trained_groups
from ...engine.networks import BRANCHES, READOUTS, parameter_counts
from .. import limits
from .base import AbstractStudy, Estimate, StudyError
from .common import (
    BYTES_PER_PARAMETER,
    attrs,
    colours,
    ensemble_batch,
    ensemble_ntk,
    figure,
    save,
)

NETWORK_OPTIONS = ("activation", "readout", "trained", "alpha", "gamma", "branch", "W_std", "b_std")
"""The fields that are options of the networks (and of their limit kernel)."""
RESNET_ONLY = ("alpha", "gamma", "branch")


class WidthConvergenceStudy(AbstractStudy):
    """Empirical NTK of seed ensembles against the infinite-width limit (docs/theory.md §4, §6).

    ``n`` points uniform on S^(d−1); for each width, ``seeds`` networks of
    :mod:`nth_dynamics.engine.networks` with the network options of the
    fields. The Dataset holds ``deviation(width, seed) = ‖K2₀ − Θ∞‖_F / ‖Θ∞‖_F``
    per seed, ``mean_deviation(width)`` (its mean over seeds),
    ``seed_mean_deviation(width) = ‖mean_seeds K2₀ − Θ∞‖_F / ‖Θ∞‖_F`` (the seed
    average converges: its bias is O(1/width)), ``ntk_limit`` and
    ``ntk_seed_mean``; attributes ``slope`` (least-squares slope of log
    mean_deviation against log width; docs/theory.md §4 predicts −1/2),
    ``slope_ci_low``/``slope_ci_high`` (95 % bootstrap over seeds) and
    ``seed_mean_slope``.
    """

    study: Literal["width_convergence"]
    architecture: Literal["ffnet", "resnet"] = "ffnet"
    depth: NonNegativeInt = 1
    widths: Values(PositiveInt) = (64, 128, 256, 512, 1024, 2048)
    """Network widths m (at least two, for the fitted slope)."""
    seeds: PositiveInt = 8
    """Networks per width."""
    n: PositiveInt = 8
    """Points on the sphere."""
    d: PositiveInt = 3
    seed: NonNegativeInt = 0
    """Seed of the points, the networks and the bootstrap."""
    bootstrap: PositiveInt = 1000
    """Bootstrap resamples of the seeds for the slope's interval."""
    activation: Activation = "tanh"
    readout: Literal[READOUTS] = "activation"  # type: ignore[valid-type]
    trained: Annotated[
        tuple[Group, ...], BeforeValidator(_trained_groups), AfterValidator(_distinct), AfterValidator(_sorted)
    ] = ALL_GROUPS
    alpha: PositiveFloat | None = None
    """resnet: block scale α (give alpha or gamma)."""
    gamma: NonNegativeFloat | None = None
    """resnet: α = depth^(−γ); default γ = 1/2."""
    branch: Literal[BRANCHES] = "two"  # type: ignore[valid-type]
    W_std: PositiveFloat | None = None
    """neural-tangents' W_std of every dense layer (None: 1), in the network and its limit."""
    b_std: NonNegativeFloat | None = None
    """neural-tangents' b_std of every dense layer (None or 0: no biases). Unset,
    both stay out of the arguments, so earlier studies keep their ids; the
    standard parameterization, whose limit changes with the width, is not offered here."""

    lower: ClassVar[str] = "infinite_width.widths, seeds or n"

    def arguments(self) -> dict[str, Any]:
        """The fields, the ResNet-only options only for a ResNet and an unset α or γ left out."""
        skip = RESNET_ONLY if self.architecture != "resnet" else ()
        return {key: value for key, value in super().arguments().items() if key not in skip and value is not None}

    def options(self) -> dict[str, Any]:
        """The network options (and those of the limit kernel)."""
        return {key: value for key, value in self.arguments().items() if key in NETWORK_OPTIONS}

    def check(self) -> None:
        resnet = self.architecture == "resnet"
        if len(self.widths) < 2:
            raise StudyError("widths", f"got {list(self.widths)}, allowed: at least two widths (for the slope)")
        if self.alpha is not None and self.gamma is not None:
            raise StudyError("alpha", "give either alpha or gamma for the residual scale, not both")
        for name in RESNET_ONLY[:2]:
            if getattr(self, name) is not None and not resnet:
                raise StudyError(name, "applies only to architecture resnet; allowed: remove it")
        if resnet and self.depth == 0:
            raise StudyError("depth", "got 0, allowed: depth ≥ 1 for resnet (ffnet allows 0)")
        if resnet and self.branch == "one" and self.readout == "activation":
            raise StudyError("readout", "got 'activation' with branch one (no covariance recursion); "
                             "allowed: 'linear', or branch two")

    def run(self) -> xr.Dataset:
        options, widths, seeds = self.options(), self.widths, self.seeds
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal((self.n, self.d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        limit = np.asarray(limits.ntk(x, None, self.architecture, self.depth, **options))
        keys = jax.random.split(jax.random.key(self.seed), seeds)
        empirical = np.stack([ensemble_ntk(self.architecture, x, w, self.depth, keys, **options) for w in widths])
        scale = np.linalg.norm(limit)  # empirical: (width, seed, n, n)
        deviation = np.linalg.norm(empirical - limit, axis=(2, 3)) / scale
        seed_mean = empirical.mean(axis=1)
        seed_mean_deviation = np.linalg.norm(seed_mean - limit, axis=(1, 2)) / scale
        log_w = np.log(np.asarray(widths, dtype=float))
        draws = rng.integers(0, seeds, size=(self.bootstrap, seeds))
        boot = fit_line(log_w, np.log(deviation[:, draws].mean(axis=-1).T)).slope  # (bootstrap,)
        point = ("point", "point_b")
        return xr.Dataset(
            {
                "deviation": (("width", "seed"), deviation,
                              attrs("relative Frobenius deviation of K2_0 from the limit NTK")),
                "mean_deviation": (("width",), deviation.mean(axis=1), attrs("per-seed deviation averaged over seeds")),
                "seed_mean_deviation": (("width",), seed_mean_deviation, attrs("deviation of the seed-averaged K2_0")),
                "ntk_limit": (point, limit, attrs("infinite-width NTK")),
                "ntk_seed_mean": (("width", *point), seed_mean, attrs("seed-averaged empirical NTK K2_0")),
                "x": (("point", "input_dim"), x, attrs("input points on the unit sphere")),
            },
            coords={"width": np.asarray(widths), "seed": np.arange(seeds), "point": np.arange(self.n),
                    "point_b": np.arange(self.n)},
            attrs={
                "title": "finite-width NTK against the infinite-width limit",
                "architecture": self.architecture,
                "depth": self.depth,
                "options": json.dumps(options, sort_keys=True, default=list),
                "slope": _log_slope(log_w, deviation.mean(axis=1)),
                "slope_ci_low": float(np.percentile(boot, 2.5)),
                "slope_ci_high": float(np.percentile(boot, 97.5)),
                "seed_mean_slope": _log_slope(log_w, seed_mean_deviation),
                "lambda_min_limit": float(np.linalg.eigvalsh(limit)[0]),
                "fit_range": json.dumps([int(widths[0]), int(widths[-1])]),
                "d": self.d,
                "seed_value": self.seed,
            },
        )

    def estimate(self) -> Estimate:
        params = [parameter_counts(self.architecture, self.d, w, self.depth, **self.options())[0] for w in self.widths]
        flops = sum(self.seeds * self.n * (3 + 3 * self.n) * 20 * p for p in params)
        batch = ensemble_batch(self.seeds, params[-1])
        memory = batch * BYTES_PER_PARAMETER * params[-1] + self.n**2 * 8 * (len(self.widths) + 1) * self.seeds
        return Estimate.of(memory, flops, len(self.widths) + 1)

    def draw(self, ds: xr.Dataset, out_dir: Path) -> list[Path]:
        return plot_width_convergence([ds], out_dir / "width_convergence")

    def summarise(self, ds: xr.Dataset) -> str:
        lines = [
            (f"{ds.attrs['architecture']} depth {ds.attrs['depth']}: slope of the mean deviation in log width "
            f"{ds.attrs['slope']:.3f} (95 % bootstrap {ds.attrs['slope_ci_low']:.3f} to {ds.attrs['slope_ci_high']:.3f}; "
            "docs/theory.md §4: −1/2), seed-mean slope "
            f"{ds.attrs['seed_mean_slope']:.3f}."),
            "",
            "| width | mean deviation | seed-mean deviation |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {int(w)} | {float(ds.mean_deviation.sel(width=w)):.4g} | "
                  f"{float(ds.seed_mean_deviation.sel(width=w)):.4g} |" for w in ds.width.values]
        return "\n".join(lines)


def _log_slope(log_x: np.ndarray, y: np.ndarray) -> float:
    return float(fit_line(log_x, np.log(y)).slope)


def plot_width_convergence(datasets: list[xr.Dataset], stem: Path) -> list[Path]:
    """Per-seed deviation, its mean and the seed-mean deviation against width, log-log."""
    fig, axes = figure(1, 1, size=(5.5, 4.2))
    ax = axes[0, 0]
    for colour, ds in zip(colours("tab10"), datasets):
        label = f"{ds.attrs['architecture']} depth {ds.attrs['depth']}"
        w = ds.width.values
        ax.loglog(np.repeat(w, ds.sizes["seed"]), ds.deviation.values.ravel(), ".", color=colour, alpha=0.3, ms=4)
        ax.loglog(w, ds.mean_deviation, "o-", color=colour, label=f"{label}: slope {ds.attrs['slope']:.2f}")
        ax.loglog(w, ds.seed_mean_deviation, "s--", color=colour, ms=4, lw=0.8, label=f"{label}: seed mean")
    w = datasets[0].width.values
    ax.loglog(w, datasets[0].mean_deviation.values[0] * (w / w[0]) ** -0.5, color="grey", lw=2, alpha=0.4,
              label="width^-1/2")
    ax.set(xlabel="width m", ylabel="‖K2₀ − Θ∞‖_F / ‖Θ∞‖_F", title="finite networks → infinite-width NTK")
    ax.legend(fontsize=7)
    return save(fig, stem)


__all__ = ["WidthConvergenceStudy", "plot_width_convergence"]
