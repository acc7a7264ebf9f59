"""Fidelity: every scenarios/validate-*.yaml through `batchsim validate`, and the error table.

For each scenario: the live runs against the real model (the median of --repeats runs of
the same traffic, and their spread), the simulator's prediction (profile + measured
per-batch overhead; the median of 15 simulations of that traffic, each with its own
draw of service times), and the simulation fed the live runs' own batch times (the
queueing model alone). Prints relative errors of throughput and p50, p99 latency against
the issue's targets (2%, 5%, 5%). About 10 minutes on a 2-core CPU. Usage:
python benchmarks/bench_fidelity.py [--out runs/fidelity] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.validate import TARGETS, validate  # noqa: E402

METRICS = tuple(TARGETS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "fidelity"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.repeats} live run(s) per scenario"
    )
    results = {}
    for path in sorted((ROOT / "scenarios").glob("validate-*.yaml")):
        started = time.perf_counter()
        results[path.stem] = validate(path, Path(args.out) / path.stem, repeats=args.repeats)
        print(f"  {path.stem}: {time.perf_counter() - started:.0f} s", flush=True)
    header = f"{'scenario':22s}" + "".join(f"{m:>17s}" for m in METRICS)
    tables = (
        ("live runs: spread (largest - smallest) / median", "live_spread", "{:>17.1%}"),
        ("prediction (profile + overhead): error vs live", "sim_error", "{:>+17.1%}"),
        ("profile as measured: error vs live", "sim_raw_profile_error", "{:>+17.1%}"),
        (
            "queueing model (live batch times): error vs live",
            "sim_live_service_error",
            "{:>+17.1%}",
        ),
    )
    for label, key, fmt in tables:
        print(f"\n{label}")
        print(header)
        for name, result in results.items():
            rows = {r["metric"]: r for r in result["comparison"]}
            cells = [rows[m][key] for m in METRICS]
            print(
                f"{name:22s}"
                + "".join("-".rjust(17) if v is None else fmt.format(v) for v in cells)
            )
    met = sum(t["met"] for r in results.values() for t in r["targets"].values())
    total = sum(len(r["targets"]) for r in results.values())
    targets = ", ".join(f"{m} {w:.0%}" for m, w in TARGETS.items())
    inside = sum(t["inside_live_range"] for r in results.values() for t in r["targets"].values())
    print(f"\ntargets ({targets}): {met} of {total} met by the prediction")
    print(f"inside the live runs' range (smallest to largest): {inside} of {total}")


if __name__ == "__main__":
    main()
