"""The new user's question as a benchmark (issue 27, item 4): 60 ALOHA robots, pi0 on an
H100 (3 cameras, CUDA graphs), 50 Hz, executing 25 of 50 actions, no network: how many
replicas keep stall under 5% with robot round trips under 150 ms at p99, for each
max_batch and max_wait? `recommend --objective min-replicas` over 5 x 3 configurations.

Prints the wall time, the probes and the requests they simulated, and the answer.

    python benchmarks/bench_recommend.py [--workers N] [--replications R] [--max-replications M]
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

import sim.api as api  # noqa: E402

SCENARIO = ROOT / "scenarios" / "aloha-pi0-fleet.yaml"
OVERRIDES = [
    "workload.count=60",
    "cluster.replicas=1",
    "workload.network_ms={uplink: 0, downlink: 0, jitter: 0}",
]
SPACE = {"policy.max_batch": [1, 2, 4, 8, 16], "policy.max_wait_ms": [0, 2, 5]}
SLO = ["stall<=0.05", "round_trip_p99_ms<=150"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--replications", type=int, default=2)
    parser.add_argument("--max-replications", type=int, default=None)
    args = parser.parse_args()
    probes, requests, runs = [], [0.0], [0]

    def on_probe(config, ev, reused):
        probes.append((config, ev.load, ev.verdict))
        requests[0] += ev.metrics.get("requests_arrived", (0.0,))[0] * ev.replications
        runs[0] += ev.replications

    started = time.perf_counter()
    found = api.recommend(
        SCENARIO,
        SLO,
        objective="min-replicas",
        space=SPACE,
        replications=args.replications,
        max_replications=args.max_replications,
        workers=args.workers,
        overrides=OVERRIDES,
        on_probe=on_probe,
    )
    wall_s = time.perf_counter() - started
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"recommend min-replicas, 60 sync robots (ALOHA pi0, H100, 3 cameras), "
        f"{len(found.ranked)} configurations, {args.replications} replications (up to "
        f"{found.search.max_replications} while uncertain), {args.workers} workers"
    )
    print(f"wall time: {wall_s:.1f} s (target < 60 s)")
    verdicts = {v: sum(1 for p in probes if p[2] == v) for v in ("pass", "fail", "uncertain")}
    print(
        f"probes: {len(probes)} ({verdicts['pass']} pass, {verdicts['fail']} fail, "
        f"{verdicts['uncertain']} uncertain), {runs[0]} runs; simulated requests (measured "
        f"windows): {requests[0]:,.0f}"
    )
    print(found.explanation)


if __name__ == "__main__":
    main()
