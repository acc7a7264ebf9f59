"""Fidelity: every scenarios/validate-*.yaml through `batchsim validate`, and the error table.

For each scenario: the live runs against the real model (the median of --repeats runs of
the same traffic, and their spread), the simulator's prediction (profile + measured
per-batch overhead; the median of 15 simulations of that traffic, each with its own
draw of service times), and the simulation fed the live runs' own batch times (the
queueing model alone). Prints relative errors of throughput and p50, p99 latency against
the issue's targets (2%, 5%, 5%), and the noise-aware verdict beside them: each figure's
error against the live runs' own leave-one-out spread (indistinguishable from a rerun,
or not), a TOST equivalence test of mean latency within 5%, and the KS statistic. Then
the same verdicts for the shipped recorded runs (recorded/*/observed-K, through
`validate --records`). About 10 minutes on a 2-core CPU. Usage:
python benchmarks/bench_fidelity.py [--out runs/fidelity] [--repeats 3] [--records-only]
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

from sim.validation.compare import TARGETS  # noqa: E402
from sim.validation.live import validate  # noqa: E402
from sim.validation.records import validate_records  # noqa: E402

METRICS = tuple(TARGETS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "fidelity"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records-only", action="store_true", help="only the recorded runs")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.repeats} live run(s) per scenario"
    )
    results = {}
    for path in [] if args.records_only else sorted((ROOT / "scenarios").glob("validate-*.yaml")):
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
    noise_aware("live runs", results)
    recorded = {}
    for folder in sorted((ROOT / "recorded").glob("*/")):
        runs = sorted(folder.glob("observed-*"))
        scenario = ROOT / "scenarios" / f"{folder.name}.yaml"
        if not runs or not scenario.exists():
            continue
        started = time.perf_counter()
        out = Path(args.out) / f"records-{folder.name}"
        recorded[folder.name] = validate_records(scenario, runs, out)
        print(
            f"\n  {folder.name} ({len(runs)} recorded runs): {time.perf_counter() - started:.0f} s"
        )
    if recorded:
        for label, key in (
            ("prediction", "sim_error"),
            ("recorded batch times", "sim_recorded_batches_error"),
        ):
            print(f"\nrecorded runs, {label}: error vs the recorded median")
            print(f"{'scenario':22s}" + "".join(f"{m:>17s}" for m in METRICS))
            for name, result in recorded.items():
                rows = {r["metric"]: r for r in result["comparison"]}
                cells = [rows[m].get(key) for m in METRICS]
                print(
                    f"{name:22s}"
                    + "".join("-".rjust(17) if v is None else f"{v:>+17.1%}" for v in cells)
                )
        noise_aware("recorded runs", recorded)
        batches = {
            name: {"noise_aware": r["noise_aware_recorded_batches"], "ks": None}
            for name, r in recorded.items()
            if "noise_aware_recorded_batches" in r
        }
        noise_aware("recorded runs, simulated with the recorded batch times", batches)


def noise_aware(what: str, results: dict) -> None:
    """The verdict that knows the noise: per target figure, the prediction's error against
    the median of the runs beside a rerun's own (leave-one-out) error; TOST; KS."""
    if not results:
        return
    print(
        f"\nnoise-aware verdict against the {what} (error / a rerun's spread: same = indistinguishable)"
    )
    print(f"{'scenario':22s}" + "".join(f"{m:>24s}" for m in METRICS) + f"{'TOST p':>9s}{'KS':>7s}")
    same = total = 0
    for name, result in results.items():
        noise = result["noise_aware"]
        cells = []
        for metric in METRICS:
            v = noise["per_metric"].get(metric)
            if v is None:
                cells.append("-".rjust(24))
                continue
            total += 1
            same += bool(v["indistinguishable"])
            word = "same" if v["indistinguishable"] else "differs"
            cells.append(f"{v['error']:+.1%} / {v['spread']:.1%} {word}".rjust(24))
        tost = noise.get("tost_latency")
        ks = result.get("ks")
        print(
            f"{name:22s}"
            + "".join(cells)
            + (f"{tost['p']:>9.3f}" if tost else "-".rjust(9))
            + (f"{ks['statistic']:>7.3f}" if ks else "-".rjust(7))
        )
    print(f"indistinguishable from a rerun: {same} of {total}")


if __name__ == "__main__":
    main()
