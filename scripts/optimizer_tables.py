"""The tables of results/README.md, "References the hierarchy does not
describe (issue 14)", from the four runs of ``scenarios/optimizer_references.yaml``::

    python scripts/optimizer_tables.py [results/]

Prints, as markdown, per reference (gradient flow, gradient descent, SGD with
momentum, Adam at the same step η): the seed geometric means of max_t E_p per
width with the fitted slope in log m and its seed-bootstrap interval
(:func:`~nth_dynamics.report.power_law.fit_power_law`); the distance of each
reference from gradient flow on the same networks, max_t |f_ref − f_gf| over
the training points (the floor no truncation order can go below); and the
final training loss.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr

from nth_dynamics.pipeline.results import read_dataset
from nth_dynamics.report.power_law import fit_power_law
from nth_dynamics.report.series import geometric_mean

RUNS = {"gf": "gradient flow", "gd": "gradient descent", "momentum": "SGD, momentum 0.9", "adam": "Adam"}


def slope(values: xr.DataArray) -> str:
    fit = fit_power_law(values, "width")
    return f"{float(fit['slope']):.2f} [{float(fit['slope_low']):.2f}, {float(fit['slope_high']):.2f}]"


def main(folder: Path) -> None:
    runs = {name: read_dataset(folder / f"optimizer_references_{name}.nc") for name in RUNS}
    flow = runs["gf"]
    widths = flow["width"].values.tolist()
    n = int(flow.sizes["train_point"])
    print("| reference | quantity | " + " | ".join(f"m = {w}" for w in widths) + " | slope in log m |")
    print("|---|---|" + "---|" * len(widths) + "---|")
    for name, ds in runs.items():
        worst = ds["truncation_error"].max("time")
        rows = {f"max_t E_{int(p)}": worst.sel(order=p) for p in ds["order"].values}
        if name != "gf":
            rows["max_t ‖f_ref − f_gf‖∞"] = abs(ds["f_ref"] - flow["f_ref"]).isel(point=slice(0, n)).max(("time", "point"))
        rows["final loss"] = ds["loss_ref"].isel(time=-1)
        for label, values in rows.items():
            means = geometric_mean(values).values
            print(f"| {RUNS[name]} | {label} | " + " | ".join(f"{v:.3g}" for v in means) + f" | {slope(values)} |")
    print(f"\ncompute per run (s, by stage): " + "; ".join(
        f"{RUNS[name]} {ds.attrs['stage_wall_times']}" for name, ds in runs.items()))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results"))
