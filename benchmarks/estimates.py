"""How far ``validate``'s rough time plan is from what committed cells took.

    PYTHONPATH=. python benchmarks/estimates.py                        # results/n_scaling.cells
    PYTHONPATH=. python benchmarks/estimates.py results/laziness_scale.cells --min-width 64

Every committed cell carries its spec (``cell_spec``), its solver step counts
(``ref_num_steps``) and its stage times (``stage_wall_times``), so the plan
can be checked against the sweeps themselves without running anything. For
the reference gradient flow, the measured step count (median over seeds) is
divided by :func:`~nth_dynamics.pipeline.estimates.planned_steps` (steps from
the stiffness of the infinite-width NTK on the cell's own points) and, as the
baseline, by the fixed ``ASSUMED_STEPS`` the plan used before; then each
cell's measured time by :func:`~nth_dynamics.pipeline.estimates.estimate_seconds`.
Printed: the quantiles of each ratio (1 is a perfect plan) and the cells the
plan misses most. The times were measured on shared cores, often beside a
second sweep, so their ratios scatter more than the step counts'.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import xarray as xr

from nth_dynamics.pipeline.cells import CellSpec
from nth_dynamics.pipeline.estimates import ASSUMED_STEPS, estimate_seconds, planned_steps


def _quantiles(name: str, ratios: np.ndarray) -> str:
    low, median, high = np.percentile(ratios, [10, 50, 90])
    spread = np.exp(np.mean(np.abs(np.log(ratios))))
    return (f"{name:<38} median {median:6.2f}   10 % {low:6.2f}   90 % {high:6.2f}   "
            f"geometric mean miss ×{spread:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cells", nargs="?", default="results/n_scaling.cells", help="a --cells directory")
    parser.add_argument("--min-width", type=int, default=0, help="leave out narrower networks")
    parser.add_argument("--worst", type=int, default=8, help="how many of the worst-planned cells to list")
    args = parser.parse_args()

    rows = []
    for path in sorted(Path(args.cells).glob("*.nc")):
        with xr.open_dataset(path) as ds:
            if "ref_num_steps" not in ds or "stage_wall_times" not in ds.attrs:
                continue
            spec = CellSpec.model_validate(json.loads(ds.attrs["cell_spec"]))
            if spec.network.width < args.min_width or spec.reference.method != "gradient_flow":
                continue
            steps = float(np.median(ds["ref_num_steps"].values))
            seconds = sum(json.loads(ds.attrs["stage_wall_times"]).values())
        rows.append((path.stem, spec, steps, planned_steps(spec), seconds, estimate_seconds(spec)))
    if not rows:
        raise SystemExit(f"{args.cells}: no cells with a gradient-flow reference and stage times")

    steps = np.array([r[2] for r in rows])
    planned = np.array([r[3] for r in rows])
    seconds = np.array([r[4] for r in rows])
    estimated = np.array([r[5] for r in rows])
    print(f"{len(rows)} cells of {args.cells}" + (f", widths ≥ {args.min_width}" if args.min_width else ""))
    print(_quantiles("reference steps / planned_steps", steps / planned))
    print(_quantiles(f"reference steps / {ASSUMED_STEPS} (the old plan)", steps / ASSUMED_STEPS))
    print(_quantiles("cell time / estimate_seconds", seconds / estimated))
    print(f"\nthe {args.worst} cells whose step count the plan misses most:")
    order = np.argsort(-np.abs(np.log(steps / planned)))[: args.worst]
    for i in order:
        cell_id, spec = rows[i][:2]
        print(f"  {cell_id}  {spec.network.architecture:<6} depth {spec.network.depth:>2}  n {spec.n_train:>3}  "
              f"width {spec.network.width:>4}: {steps[i]:7.0f} steps, planned {planned[i]:7.0f}")


if __name__ == "__main__":
    main()
