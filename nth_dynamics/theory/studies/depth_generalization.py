"""Depth degeneracy of learning (HWTZ; docs/theory.md §6): test error against
depth of kernel regression and the NTK gradient flow with the limit kernels,
on the digits two-class task or a sphere teacher."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple

import numpy as np
import xarray as xr
from jaxtyping import Float
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from ..._schema import Activation, Digit, Values
from ...data import digits_problem
from ...engine.hierarchy import closed_form_p2
from .. import limits
from .base import AbstractStudy, Estimate, StudyError, flops_per_pair_layer
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
    task_data,
)

class KernelPredictions(NamedTuple):
    regression: Float[np.ndarray, " n_test"]
    flow: Float[np.ndarray, "time n_test"]
    flow_train: Float[np.ndarray, "time n"]


def kernel_predictions(
    K: Float[np.ndarray, "n_all n_all"], y_train: Float[np.ndarray, " n"], times: Sequence[float]
) -> KernelPredictions:
    """Kernel regression and the NTK gradient flow from f = 0 (docs/theory.md §3,
    p = 2 with a frozen limit kernel) on the Gram matrix of train ∪ test (train
    first): :func:`nth_dynamics.engine.hierarchy.closed_form_p2` at ``times`` and
    at t = ∞,

    ``f_train(t) = (I − exp(−t K_tt/n)) y``,
    ``f_test(t) = K_et K_tt⁻¹ (I − exp(−t K_tt/n)) y`` and ``f_test(∞) = K_et K_tt⁻¹ y``.
    """
    n = y_train.shape[0]
    K = np.asarray(K, dtype=np.float64)
    all_times = np.concatenate([np.asarray(times, dtype=float), [np.inf]])
    f = np.asarray(closed_form_p2(K[:, :n], np.zeros(K.shape[0]), np.asarray(y_train, dtype=float), all_times))
    return KernelPredictions(f[-1, n:], f[:-1, n:], f[:-1, :n])


class DepthGeneralizationStudy(AbstractStudy):
    """Test error against depth of kernel regression and the NTK gradient flow (HWTZ).

    For each model (FFNet, ResNet per γ) and depth, the NTK normalised to unit
    diagonal (inputs are on the sphere, so this only fixes the kernel's scale,
    which in the plain parametrisation runs from 2^(−L) to 1.5^L with depth:
    gradient-flow time then means the same thing at every depth) gives kernel
    regression (t = ∞) and the gradient-flow closed form at ``times``.

    The Dataset holds ``test_mse(model, depth, time)`` (mean squared test error
    over the mean square of the test labels: 1 for the zero predictor),
    ``test_error(model, depth, time)`` (fraction of sign disagreements with the
    labels: the classification error on digits), ``train_mse(model, depth,
    time)`` and ``lambda_min(model, depth)`` of the normalised K_tt. The
    ``time`` coordinate ends with ``inf`` for kernel regression.
    """

    study: Literal["depth_generalization"]
    task: Literal["digits", "teacher"] = "digits"
    """digits (two classes of the bundled digits) or teacher (a random wide tanh network on the sphere)."""
    depths: Values(PositiveInt) = DEFAULT_DEPTHS
    gammas: Values(NonNegativeFloat, allow_empty=True) = DEFAULT_GAMMAS
    n_train: PositiveInt = 150
    n_test: PositiveInt = 200
    d: PositiveInt = 8
    """Input dimension (digits: principal components)."""
    seed: NonNegativeInt = 0
    """Seed of the data."""
    times: Values(PositiveFloat) = (10.0, 100.0, 1000.0)
    """Gradient-flow times besides t = ∞ (kernel regression)."""
    classes: tuple[Digit, Digit] = (3, 8)
    """digits: the two digits, labelled +1 and −1."""
    activation: Activation = "relu"

    lower: ClassVar[str] = "infinite_width.n_train or n_test"

    def check(self) -> None:
        problem = digits_problem(self.d, self.classes, self.n_train, self.n_test) if self.task == "digits" else None
        if problem:
            raise StudyError(*problem)

    def run(self) -> xr.Dataset:
        data = task_data(self.task, n_train=self.n_train, n_test=self.n_test, d=self.d, seed=self.seed,
                         classes=self.classes)
        x = np.concatenate([np.asarray(data.x_train), np.asarray(data.x_test)])
        y_train, y_test = np.asarray(data.y_train), np.asarray(data.y_test)
        models = depth_models(self.gammas, activation=self.activation)
        all_times = np.concatenate([np.asarray(self.times, dtype=float), [np.inf]])
        shape = (len(models), len(self.depths), len(all_times))
        test_mse, test_error, train_mse = np.empty(shape), np.empty(shape), np.empty(shape)
        lambda_min = np.empty(shape[:2])
        for i, model in enumerate(models):
            for j, L in enumerate(self.depths):
                K = np.asarray(limits.normalized_ntk(x, None, model.architecture, int(L), **model.options))
                predictions = kernel_predictions(K, y_train, self.times)
                test_f = np.vstack([predictions.flow, predictions.regression[None]])
                train_f = np.vstack([predictions.flow_train, y_train[None]])  # regression interpolates
                test_mse[i, j] = np.mean((test_f - y_test) ** 2, axis=1) / np.mean(y_test**2)
                test_error[i, j] = np.mean(np.sign(test_f) != np.sign(y_test), axis=1)
                train_mse[i, j] = np.mean((train_f - y_train) ** 2, axis=1) / np.mean(y_train**2)
                lambda_min[i, j] = np.linalg.eigvalsh(K[: self.n_train, : self.n_train])[0]
        constant = np.mean((np.mean(y_train) - y_test) ** 2) / np.mean(y_test**2)
        cube = ("model", "depth", "time")
        return xr.Dataset(
            {
                "test_mse": (cube, test_mse, attrs("test mean squared error / mean square of test labels")),
                "test_error": (cube, test_error, attrs("fraction of test points with sign(f) != sign(y)")),
                "train_mse": (cube, train_mse, attrs("train mean squared error / mean square of labels")),
                "lambda_min": (("model", "depth"), lambda_min,
                               attrs("smallest eigenvalue of the normalised train Gram matrix")),
            },
            coords={**model_coords(models), "depth": np.asarray(self.depths), "time": all_times},
            attrs={
                "title": f"test error against depth of infinite-width kernels: {self.task}",
                "task": self.task,
                "n_train": self.n_train,
                "n_test": self.n_test,
                "d": self.d,
                "seed_value": self.seed,
                "classes": json.dumps(list(self.classes)) if self.task == "digits" else "",
                "constant_predictor_test_mse": float(constant),
                "majority_class_test_error": float(min(np.mean(y_test > 0), np.mean(y_test < 0))),
                "models": json.dumps({m.label: m.options for m in models}, sort_keys=True),
            },
        )

    def estimate(self) -> Estimate:
        models = 1 + len(self.gammas)
        points = self.n_train + self.n_test
        solves = models * len(self.depths) * 100 * self.n_train**3  # an eigendecomposition per kernel
        flops = models * sum(self.depths) * points**2 * flops_per_pair_layer(self.activation) + solves
        return Estimate.of(12 * points**2 * 8, flops, models * len(self.depths))

    def draw(self, ds: xr.Dataset, out_dir: Path) -> list[Path]:
        finite = ds.time.values[np.isfinite(ds.time.values)]
        flow_time = float(finite[len(finite) // 2]) if finite.size else math.inf
        return plot_generalization([ds], out_dir / "test_error_vs_depth", flow_time=flow_time)

    def summarise(self, ds: xr.Dataset) -> str:
        regression = ds.sel(time=np.inf)
        lines = markdown_table(f"{ds.attrs['task']}: kernel regression, test error (sign)", regression.test_error,
                               "depth", "L")
        lines += [""] + markdown_table("relative test MSE", regression.test_mse, "depth", "L")
        lines += ["", f"Constant predictor: relative test MSE {ds.attrs['constant_predictor_test_mse']:.3f}; "
                  f"majority class: test error {ds.attrs['majority_class_test_error']:.3f}."]
        return "\n".join(lines)


def plot_generalization(datasets: Sequence[xr.Dataset], stem: Path, flow_time: float = 100.0) -> list[Path]:
    """Test error (and test MSE) against depth for each task, kernel regression
    solid, gradient flow at ``flow_time`` dashed."""
    fig, axes = figure(2, len(datasets), size=(5.0 * len(datasets), 7.0))
    for column, ds in enumerate(datasets):
        for row, (name, label) in enumerate((("test_error", "test error (sign)"), ("test_mse", "relative test MSE"))):
            ax = axes[row, column]
            for colour, model in zip(colours("tab10"), ds.model.values):
                ax.semilogx(ds.depth, ds[name].sel(model=model, time=np.inf), color=colour, marker=".",
                            label=f"{model} regression")
                if flow_time in ds.time.values:
                    ax.semilogx(ds.depth, ds[name].sel(model=model, time=flow_time), color=colour, ls="--", lw=0.9)
            baseline = "constant_predictor_test_mse" if name == "test_mse" else "majority_class_test_error"
            ax.axhline(ds.attrs[baseline], color="grey", ls=":", lw=0.8)
            ax.set(xlabel="depth L", ylabel=label, title=f"{ds.attrs['task']} (dashed: flow t = {flow_time:g})")
        axes[0, column].legend(fontsize=7)
    return save(fig, stem)


__all__ = ["DepthGeneralizationStudy", "KernelPredictions", "kernel_predictions", "plot_generalization"]
