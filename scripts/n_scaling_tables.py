"""The tables of results/README.md, "The width needed against n and depth
(issue 11)", from the committed parts of the study::

    python scripts/n_scaling_tables.py results/n_scaling_A_to128.nc results/n_scaling_B.nc … [--tolerance 0.03 0.02]
    python scripts/n_scaling_tables.py results/n_scaling_E2.nc … --order 4 --tolerance 1e-3 4e-4

Combines the parts (``nd.analysis.combine``, the same union the ``report``
command draws) and prints, as markdown, per tolerance: the width m* at which
max_τ E_p (p = ``--order``, default 2) falls to it, interpolated between
bracketing widths (— where the swept widths do not bracket it), the exponent
of m* in n with its 95 % bootstrap interval over seeds, and the exponent in
depth per n. The report picks one tolerance (the level most series cross);
this script shows how the exponents move with it. FFNets carry no γ: each is
shown once (``report.series.selections``).
"""

from __future__ import annotations

import argparse

import numpy as np
import xarray as xr

from nth_dynamics import analysis
from nth_dynamics.report.series import any_finite, selections


def _interval(fit: xr.Dataset) -> str:
    if not np.isfinite(float(fit["exponent"])):
        return "— | — | —"
    return (f"{float(fit['exponent']):.2f} | [{float(fit['exponent_low']):.2f}, {float(fit['exponent_high']):.2f}]"
            f" | {int(fit['range_min'])}–{int(fit['range_max'])} ({float(fit['decades']):.2f})")


def _label(labels: dict, dim: str) -> str:
    return "—" if dim == "gamma" and labels.get("architecture") == "ffnet" else str(labels[dim])


def tables(ds: xr.Dataset, tolerance: float, order: int = 2) -> None:
    widths = analysis.required_width(ds, tolerance, order=order).sel(order=order)
    n_values = widths["n_train"].values.tolist()
    in_n = analysis.width_exponent(widths, "n_train")
    dims = [d for d in ("architecture", "gamma", "depth") if d in widths.dims]
    print(f"\n### E_{order}, tolerance {tolerance:g}: m* and its exponent in n\n")
    print("| " + " | ".join(dims) + " | " + " | ".join(f"n = {n}" for n in n_values)
          + " | exponent in n | 95 % interval | n fitted (decades) |")
    print("|" + "---|" * (len(dims) + len(n_values) + 3))
    for labels in selections(widths, dims):
        row = widths["required_width"].sel(labels)
        if not any_finite(ds["truncation_error"].sel(labels).sel(order=order)):
            continue  # no part ran this series
        cells = [f"{float(v):.0f}" if np.isfinite(v) else "—" for v in row.values]
        print("| " + " | ".join(_label(labels, d) for d in dims) + " | " + " | ".join(cells)
              + " | " + _interval(in_n.sel(labels)) + " |")
    if "depth" not in widths.dims or widths.sizes["depth"] < 2:
        return
    in_depth = analysis.width_exponent(widths, "depth")
    rest = [d for d in ("architecture", "gamma") if d in widths.dims]
    print(f"\n### E_{order}, tolerance {tolerance:g}: exponent of m* in depth\n")
    print("| " + " | ".join(rest) + " | n | exponent in depth | 95 % interval | depths fitted (decades) |")
    print("|" + "---|" * (len(rest) + 4))
    for labels in selections(in_depth, rest):
        for n in n_values:
            fit = in_depth.sel(labels).sel(n_train=n)
            if np.isfinite(float(fit["exponent"])):
                print("| " + " | ".join(_label(labels, d) for d in rest) + f" | {n} | " + _interval(fit) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", help="result files of the parts")
    parser.add_argument("--tolerance", type=float, nargs="+", default=[0.03, 0.02])
    parser.add_argument("--order", type=int, default=2, help="the truncation order p of E_p")
    args = parser.parse_args()
    ds = analysis.combine(args.parts)
    for tolerance in args.tolerance:
        tables(ds, tolerance, args.order)


if __name__ == "__main__":
    main()
