"""Sweep throughput: points per minute on 1 and 2 local Dask workers, and the speed-up.

Each point is the quickstart scenario shortened to 100,000 requests (about 11 minutes of
simulated traffic), with a different max batch and rate. Usage:
python benchmarks/bench_sweep.py [--points N] [--requests N]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.experiments.sweep import Sweep, run_sweep  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=40)
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()
    rates = [100 + 5 * i for i in range(args.points // 4)]
    grid = {"policy.max_batch": [8, 16, 32, 64], "workload.rate_rps": rates}
    overrides = [f"requests={args.requests}", "duration_s=null", "warmup_s=0"]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{len(rates) * 4} points of {args.requests:,} requests each (quickstart scenario)")
    timings = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            sweep = Sweep(
                ROOT / "scenarios" / "quickstart.yaml", grid, 1, Path(tmp) / "s", overrides
            )
            start = time.perf_counter()
            run_sweep(sweep, workers=workers)
            timings[workers] = time.perf_counter() - start
        n = len(sweep.points())
        print(
            f"{workers} worker(s): {timings[workers]:6.1f} s, {n / timings[workers] * 60:6.1f} points/min"
        )
    print(f"speed-up with 2 workers: {timings[1] / timings[2]:.2f}x")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory of one worker process: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
