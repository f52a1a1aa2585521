"""Parallel cells benchmark: ``simulate --workers N`` against one process, on
a sweep of small cells (where compilation, which XLA runs on one core,
dominates the wall time).

    python benchmarks/workers.py                # 8 cells, 2 workers
    python benchmarks/workers.py --workers 4

Both runs start from empty cell directories and run in fresh subprocesses, so
neither reuses the other's compilations. Prints the wall times and their
ratio, measured in this run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIO = """\
name: workers_benchmark
seed: [0, 1, 2, 3]
data: {kind: sphere, n_train: [4, 8], n_test: 2, d: 5}
network: {architecture: [ffnet, resnet], width: [32, 64], depth: 2, activation: tanh}
hierarchy: {orders: [2, 3, 4]}
time: {t1: 1.0, n_saves: 5}
"""


def run(scenario: Path, out: Path, workers: int) -> float:
    command = [sys.executable, "-m", "nth_dynamics", "simulate", str(scenario), "-o", str(out), "--quiet",
               "--workers", str(workers)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        scenario = Path(directory) / "benchmark.yaml"
        scenario.write_text(SCENARIO)
        serial = run(scenario, Path(directory) / "serial.nc", 1)
        parallel = run(scenario, Path(directory) / "parallel.nc", args.workers)
    print(f"8 cells: one process {serial:.1f} s, {args.workers} workers {parallel:.1f} s, "
          f"speed-up {serial / parallel:.2f}×")


if __name__ == "__main__":
    main()
