"""The tables of results/README.md, "The laziness scale (issue 14)", from
``results/laziness_scale.nc`` (docs/theory.md §9)::

    python scripts/laziness_tables.py [results/laziness_scale.nc]

Prints, as markdown: the fitted slopes of log max_t E_p in log α per width
and order over three ranges of α (the lazy end α ≥ 4, α ≥ 1, and α ≤ 1/4)
next to the lazy prediction −(p − 1); the seed geometric means of max_t E_p
per α, width and order with the failed solves; and, per width and α, α√m
with E_3/E_2 and E_4/E_2 (where the hierarchy stops converging).
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
    lines = ["| width | p | predicted (lazy) | α ≥ 4: slope [95 % interval] (α range, points) | α ≥ 1 | α ≤ 1/4 |",
             "|---|---|---|---|---|---|"]
    ranges = {"lazy": (LAZY_FROM, None), "from 1": (1.0, None), "small": (None, 0.25)}
    fits = {name: nd.analysis.laziness_fits(ds, lower=lower, upper=upper) for name, (lower, upper) in ranges.items()}
    for width in ds["width"].values.tolist():
        for order in ds["order"].values.tolist():
            cells = []
            for fit in fits.values():
                one = fit.sel(width=width, order=order)
                if not np.isfinite(float(one["slope"])):
                    cells.append("—")
                    continue
                cells.append(
                    f"{float(one['slope']):.2f} [{float(one['slope_low']):.2f}, {float(one['slope_high']):.2f}] "
                    f"({float(one['fit_min_output_scale']):g}–{float(one['fit_max_output_scale']):g}, "
                    f"{int(one['fit_points'])})"
                )
            predicted = float(fits["lazy"]["predicted_slope"].sel(width=width, order=order))
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
    """Per width and α: α√m, and the ratios E_3/E_2 and E_4/E_2 of the seed
    geometric means of max_t E_p (a truncation that converges has E_4 ≪ E_2;
    at the edge E_4 ≈ E_2), with the number of failed solves."""
    worst = ds["truncation_error"].max("time")
    mean = geometric_mean(worst.where(np.isfinite(worst)))
    failed = ds["nth_failed"].sum(("seed", "order")) if "nth_failed" in ds else None
    widths = ds["width"].values.tolist()
    lines = ["| α | " + " | ".join(f"m = {w}: α√m, E_3/E_2, E_4/E_2" for w in widths) + " |",
             "|---" * (1 + len(widths)) + "|"]
    for alpha in ds["output_scale"].values.tolist():
        cells = []
        for w in widths:
            e = {p: float(mean.sel(output_scale=alpha, width=w, order=p)) for p in (2, 3, 4)}
            n_failed = 0 if failed is None else int(failed.sel(output_scale=alpha, width=w))
            cells.append(f"{alpha * w ** 0.5:.3g}, {e[3] / e[2]:.2f}, {e[4] / e[2]:.3g}"
                         + (f" ({n_failed} failed)" if n_failed else ""))
        lines.append(f"| {alpha:g} | " + " | ".join(cells) + " |")
    return lines


def main(path: str = "results/laziness_scale.nc") -> None:
    ds = read_dataset(path)
    print("\n".join(slope_table(ds)), end="\n\n")
    print("\n".join(error_table(ds)), end="\n\n")
    print("\n".join(edge_table(ds)))


if __name__ == "__main__":
    main(*sys.argv[1:])
