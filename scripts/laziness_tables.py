"""The tables of results/README.md, "The laziness scale (issue 14)", from
``results/laziness_scale.nc`` (docs/theory.md §9)::

    python scripts/laziness_tables.py [results/laziness_scale.nc]

Prints, as markdown: the fitted slopes of log max_t E_p in log α per width
and order over two ranges of α (the lazy end, and every α from the edge up)
next to the prediction −(p − 1); the seed geometric means of max_t E_p per
α, width and order with the failed solves; and, per width, where the
hierarchy stops converging, against m^(−1/2).
"""

from __future__ import annotations

import sys

import numpy as np
import xarray as xr

import nth_dynamics as nd
from nth_dynamics.pipeline.results import read_dataset
from nth_dynamics.report.series import geometric_mean

LAZY_FROM = 4.0
"""The lazy end: α ≥ 4, where K̃3/K̃2 < 1/(4m) and every truncation converges."""


def slope_table(ds: xr.Dataset) -> list[str]:
    lines = ["| width | p | predicted | α ≥ 4: slope [95 % interval] (α range, points) | α ≥ 1 | all α with finite E_p |",
             "|---|---|---|---|---|---|"]
    fits = {lower: nd.analysis.laziness_fits(ds, lower=lower) for lower in (LAZY_FROM, 1.0, None)}
    for width in ds["width"].values.tolist():
        for order in ds["order"].values.tolist():
            cells = []
            for lower, fit in fits.items():
                one = fit.sel(width=width, order=order)
                if not np.isfinite(float(one["slope"])):
                    cells.append("—")
                    continue
                cells.append(
                    f"{float(one['slope']):.2f} [{float(one['slope_low']):.2f}, {float(one['slope_high']):.2f}] "
                    f"({float(one['fit_min_output_scale']):g}–{float(one['fit_max_output_scale']):g}, "
                    f"{int(one['fit_points'])})"
                )
            predicted = float(fits[LAZY_FROM]["predicted_slope"].sel(width=width, order=order))
            lines.append(f"| {width} | {order} | {predicted:g} | " + " | ".join(cells) + " |")
    return lines


def error_table(ds: xr.Dataset) -> list[str]:
    worst = ds["truncation_error"].max("time")
    mean = geometric_mean(worst.where(np.isfinite(worst)))
    failed = ds["nth_failed"].sum("seed") if "nth_failed" in ds else xr.zeros_like(mean)
    widths, orders = ds["width"].values.tolist(), ds["order"].values.tolist()
    header = "| α | " + " | ".join(f"m = {w}: E_{p}" for w in widths for p in orders) + " |"
    lines = [header, "|---" * (1 + len(widths) * len(orders)) + "|"]
    for alpha in ds["output_scale"].values.tolist():
        cells = []
        for w in widths:
            for p in orders:
                value = float(mean.sel(output_scale=alpha, width=w, order=p))
                n_failed = int(failed.sel(output_scale=alpha, width=w, order=p))
                text = f"{value:.2e}" if np.isfinite(value) else "inf"
                cells.append(text + (f" ({n_failed} failed)" if n_failed else ""))
        lines.append(f"| {alpha:g} | " + " | ".join(cells) + " |")
    return lines


def edge_table(ds: xr.Dataset) -> list[str]:
    """Per width: the smallest α from which on (upwards) the seed means of
    max_t E_p fall with p at every α (E_4 < E_3 < E_2), and the smallest from
    which E_4 < E_2 and no solve failed; both against m^(−1/2)."""
    worst = ds["truncation_error"].max("time")
    mean = geometric_mean(worst.where(np.isfinite(worst)))
    failed = ds["nth_failed"].any("seed") if "nth_failed" in ds else xr.zeros_like(mean, dtype=bool)
    alphas = ds["output_scale"].values
    lines = ["| width | m^(−1/2) | E_4 < E_2, no failure, from α = | (× m^(1/2)) | E_4 < E_3 < E_2 from α = | E_3 < E_2 from α = |",
             "|---|---|---|---|---|---|"]

    def from_where(good: np.ndarray) -> float:
        """The smallest α with ``good`` at it and at every larger α (NaN if none)."""
        start = np.nan
        for alpha, ok in zip(alphas[::-1], good[::-1]):
            if not ok:
                break
            start = alpha
        return start

    for width in ds["width"].values.tolist():
        e = {p: mean.sel(width=width, order=p).values for p in ds["order"].values.tolist()}
        broken = failed.sel(width=width).any("order").values
        even = from_where((e[4] < e[2]) & ~broken)
        monotone = from_where((e[4] < e[3]) & (e[3] < e[2]) & ~broken)
        odd = from_where(e[3] < e[2])
        scale = width ** -0.5
        lines.append(f"| {width} | {scale:.3g} | {even:g} | {even / scale:.2g} | {monotone:g} | {odd:g} |")
    return lines


def main(path: str = "results/laziness_scale.nc") -> None:
    ds = read_dataset(path)
    print("\n".join(slope_table(ds)), end="\n\n")
    print("\n".join(error_table(ds)), end="\n\n")
    print("\n".join(edge_table(ds)))


if __name__ == "__main__":
    main(*sys.argv[1:])
