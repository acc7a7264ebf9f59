"""Fidelity: every scenarios/validate-*.yaml through `batchsim validate`, and the error table.

For each scenario: the live run against the real model, the simulator's prediction
(profile + measured per-batch overhead), and the simulation fed the live run's own
batch times (the queueing model alone). Prints relative errors of throughput and p50,
p99 latency. Usage: python benchmarks/bench_fidelity.py [--out runs/fidelity]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.validate import validate  # noqa: E402

METRICS = ("throughput_rps", "latency_p50_ms", "latency_p99_ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "fidelity"))
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    header = f"{'scenario':28s}" + "".join(f"{m:>18s}" for m in METRICS)
    for label, key in (
        ("prediction (profile + overhead)", "sim_error"),
        ("queueing model (live batch times)", "sim_live_service_error"),
    ):
        print(f"\n{label}: relative error vs live")
        print(header)
        for path in sorted((ROOT / "scenarios").glob("validate-*.yaml")):
            result = _results.get(path) or validate(path, Path(args.out) / path.stem)
            _results[path] = result
            rows = {r["metric"]: r for r in result["comparison"]}
            print(f"{path.stem:28s}" + "".join(f"{rows[m][key]:>+18.1%}" for m in METRICS))


_results: dict = {}

if __name__ == "__main__":
    main()
