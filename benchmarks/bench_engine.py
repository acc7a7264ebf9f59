"""Engine speed: open-loop traffic and a closed-loop robot fleet, each as a whole `batchsim
run` against a lean hand-written SimPy loop of the same model, measured in this one run.

Models (both: dynamic batching, max_batch 16, max_wait 5 ms, s(b) = 10 + 2b ms):
- open loop: 1,000,000 Poisson requests at 0.8 of the capacity at max_batch
  (rate = 0.8 * 16 / 42 ms = 304.8 requests/s);
- fleet: 100 sync robots at 50 Hz executing 25 of 50 actions, staggered, four simulated
  hours (about 2.75M requests; --fleet-hours).

Prints, each as the median of --repeats runs, interleaved:
  - the whole `batchsim run --out` process (start-up, imports, simulation, summary and
    Parquet output), timed from outside, and its peak resident memory;
  - batchsim's engine alone, in process;
  - the lean SimPy loop (open: one event per arrival and a deque; fleet: one process per
    robot waiting on its answer), in process: the baseline the issue asks for;
  - the peak memory of a whole process on --memory-requests open-loop requests (10M);
  - replica scaling: the cost per completed request of a whole process at 1, 8, 32 and 64
    replicas (--scaling-replicas), for the 60-robot ALOHA fleet and open-loop traffic;
  - the same fleet with async robots, per request, against the lean sync loop's cost per
    request (there is no lean async loop).

Usage: python benchmarks/bench_engine.py [--requests N] [--fleet-hours H] [--repeats K]
       [--memory-requests N (0: skip)] [--scaling-replicas 1,8,32,64 ('': skip)]
       [--scaling-repeats K]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import simpy
import yaml

MAX_BATCH, MAX_WAIT_S = 16, 0.005
RATE_RPS = 0.8 * MAX_BATCH / (0.010 + 0.002 * MAX_BATCH)
ROBOTS, CONTROL_HZ, CHUNK, EXECUTE = 100, 50.0, 50, 25
ROOT = Path(__file__).resolve().parents[1]


def service_s(b: int) -> float:
    return 0.010 + 0.002 * b


def _server(env: simpy.Environment, queue: deque, state: dict, on_batch) -> simpy.events.Event:
    """Dynamic batching as a lean SimPy process: `queue` holds (arrival time, payload)."""

    def server():
        while True:
            now = env.now
            if queue and (len(queue) >= MAX_BATCH or now >= queue[0][0] + MAX_WAIT_S):
                batch = [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
                yield env.timeout(service_s(len(batch)))
                on_batch(batch)
                continue
            state["signal"] = env.event()
            if queue:
                yield state["signal"] | env.timeout(queue[0][0] + MAX_WAIT_S - now)
            else:
                yield state["signal"]
            state["signal"] = None

    return env.process(server())


def _arrive(queue: deque, state: dict, item) -> None:
    queue.append(item)
    signal = state["signal"]
    # wake an idle server on its first request or on a full batch
    if signal is not None and not signal.triggered and len(queue) in (1, MAX_BATCH):
        signal.succeed()


def lean_open_loop(n: int, seed: int) -> tuple[float, float]:
    """The open-loop model written directly in SimPy; (mean latency s, mean batch)."""
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    queue: deque = deque()
    state: dict = {"signal": None}
    latencies: list[float] = []
    batches: list[int] = []

    def done(batch):
        latencies.extend(env.now - a for a, _ in batch)
        batches.append(len(batch))

    def source():
        for gap in rng.exponential(1 / RATE_RPS, n).tolist():
            yield env.timeout(gap)
            _arrive(queue, state, (env.now, None))

    env.process(source())
    _server(env, queue, state, done)
    env.run()
    return float(np.mean(latencies)), float(np.mean(batches))


def lean_fleet(horizon_s: float) -> tuple[int, float, float]:
    """The fleet written directly in SimPy: each robot sends, waits for its answer, executes
    its actions and sends again; (answers, mean round trip s, mean batch)."""
    env = simpy.Environment()
    queue: deque = deque()
    state: dict = {"signal": None}
    trips: list[float] = []
    batches: list[int] = []
    motion_s = EXECUTE / CONTROL_HZ

    def done(batch):
        for _, answered in batch:
            answered.succeed()
        batches.append(len(batch))

    def robot(r):
        yield env.timeout(r * motion_s / ROBOTS)
        while True:
            sent = env.now
            answered = env.event()
            _arrive(queue, state, (sent, answered))
            yield answered
            trips.append(env.now - sent)
            yield env.timeout(motion_s)

    for r in range(ROBOTS):
        env.process(robot(r))
    _server(env, queue, state, done)
    env.run(until=horizon_s)
    return len(trips), float(np.mean(trips)), float(np.mean(batches))


def profile() -> dict:
    sizes = list(range(1, MAX_BATCH + 1))
    return {"batch_size": sizes, "latency_ms": [service_s(b) * 1000 for b in sizes]}


def open_scenario(n: int) -> dict:
    return {
        "name": "bench-engine",
        "seed": 1,
        "requests": n,
        "profile": profile(),
        "workload": {"kind": "poisson", "rate_rps": RATE_RPS},
        "policy": {"kind": "dynamic", "max_batch": MAX_BATCH, "max_wait_ms": MAX_WAIT_S * 1000},
    }


def fleet_scenario(hours: float) -> dict:
    return {
        "name": "bench-fleet",
        "seed": 1,
        "duration_s": 3600 * hours,
        "profile": profile(),
        "workload": {"kind": "robots", "count": ROBOTS, "control_hz": CONTROL_HZ,
                     "chunk": CHUNK, "execute": EXECUTE, "mode": "sync", "start": "staggered"},
        "policy": {"kind": "dynamic", "max_batch": MAX_BATCH, "max_wait_ms": MAX_WAIT_S * 1000},
    }  # fmt: skip


def async_scenario(hours: float) -> dict:
    """The fleet with async robots (send at half a chunk left): no lean loop of its own, so
    its whole process is compared per request with the lean sync loop's."""
    scenario = fleet_scenario(hours)
    scenario["name"] = "bench-fleet-async"
    scenario["workload"] = {**scenario["workload"], "mode": "async", "threshold": 0.5}
    scenario["limits"] = {"max_requests": 1_000_000_000}  # its upper estimate: 1 / fastest batch
    return scenario


def whole_process(path: Path, out: Path, extra: list[str] = ()) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `batchsim run` process."""
    start = time.perf_counter()
    cmd = [sys.executable, "-c", "import resource, sys\nfrom sim.cli import main\n"
           "code = main(sys.argv[1:])\n"
           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(code)",
           "run", str(path), "--out", str(out), "-q", *extra]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return wall, int(done.stdout.split()[-1]) / 1024  # ru_maxrss is KiB on Linux


def engine_only(path: Path):
    from sim.config import load
    from sim.engine.pipeline import simulate

    loaded = load(path)
    start = time.perf_counter()
    records = simulate(loaded)
    return time.perf_counter() - start, records


SCALING_FLEET = ROOT / "scenarios" / "aloha-pi0-fleet.yaml"
SCALING_OPEN = ROOT / "scenarios" / "quickstart.yaml"
SCALING_POLICY = "policy={kind: dynamic, max_batch: 16, max_wait_ms: 2}"


def replica_scaling(replicas: list[int], repeats: int) -> None:
    """Per completed request, what a run costs as the replicas grow (whole process, median
    of `repeats`): the issue's fleet (60 sync ALOHA robots on the H100 pi0 profile, 300 s,
    dynamic 16 / 2 ms) and open-loop traffic at 400 req/s on the same policy."""
    cases = {
        "fleet, 60 sync robots, 300 s": (SCALING_FLEET, ["workload.count=60", "duration_s=300"]),
        "open loop, 400 req/s, 300 s": (SCALING_OPEN, ["workload.rate_rps=400", "duration_s=300"]),
    }
    print(
        f"replica scaling (whole process, median of {repeats}): us per completed request "
        f"(x the cost at {replicas[0]} replica)"
    )
    print(f"{'':34s}" + "".join(f"{f'{r} repl.':>18s}" for r in replicas))
    with tempfile.TemporaryDirectory() as tmp:
        for label, (path, overrides) in cases.items():
            costs = []
            for r in replicas:
                walls = []
                for _ in range(repeats):
                    out = Path(tmp) / f"scale-{r}"
                    sets = [*overrides, SCALING_POLICY, f"cluster.replicas={r}"]
                    argv = [a for s in sets for a in ("--set", s)]
                    walls.append(whole_process(path, out, argv)[0])
                summary = json.loads((out / "summary.json").read_text())
                costs.append(statistics.median(walls) / summary["requests"]["completed"] * 1e6)
            cells = "".join(f"{f'{c:,.1f} ({c / costs[0]:.1f}x)':>18s}" for c in costs)
            print(f"{label:34s}{cells}")
    print("target: 32 replicas cost at most 1.5x of 1 replica, per completed request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--fleet-hours", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-requests", type=int, default=10_000_000)
    parser.add_argument(
        "--scaling-replicas", default="1,8,32,64", help="replica counts of the scaling rows"
    )
    parser.add_argument("--scaling-repeats", type=int, default=1)
    args = parser.parse_args()
    med = statistics.median
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        open_path, fleet_path = Path(tmp) / "open.yaml", Path(tmp) / "fleet.yaml"
        open_path.write_text(yaml.safe_dump(open_scenario(args.requests)))
        fleet_path.write_text(yaml.safe_dump(fleet_scenario(args.fleet_hours)))
        times: dict[str, list[float]] = {k: [] for k in ("op", "oe", "ol", "fp", "fe", "fl")}
        peaks = []
        for _ in range(args.repeats):
            wall, peak = whole_process(open_path, Path(tmp) / "out")
            times["op"].append(wall)
            peaks.append(peak)
            wall, open_records = engine_only(open_path)
            times["oe"].append(wall)
            start = time.perf_counter()
            lean_latency, lean_batch = lean_open_loop(args.requests, seed=1)
            times["ol"].append(time.perf_counter() - start)
            times["fp"].append(whole_process(fleet_path, Path(tmp) / "fleet-out")[0])
            wall, fleet_records = engine_only(fleet_path)
            times["fe"].append(wall)
            start = time.perf_counter()
            lean_answers, lean_trip, lean_fleet_batch = lean_fleet(3600 * args.fleet_hours)
            times["fl"].append(time.perf_counter() - start)
        async_path = Path(tmp) / "async.yaml"
        async_path.write_text(yaml.safe_dump(async_scenario(args.fleet_hours)))
        async_walls = [whole_process(async_path, Path(tmp) / "async-out")[0]]
        async_summary = json.loads((Path(tmp) / "async-out" / "summary.json").read_text())
        memory = None
        if args.memory_requests:
            big = Path(tmp) / "big.yaml"
            big.write_text(yaml.safe_dump(open_scenario(args.memory_requests)))
            memory = whole_process(big, Path(tmp) / "big-out")
    m = {k: med(v) for k, v in times.items()}
    n_fleet = int((fleet_records.outcome == 1).sum())
    done = open_records.request_batch >= 0
    latency = float(np.mean(open_records.request_completion_s[done] - open_records.arrival_s[done]))
    trips = fleet_records.robots.round_trips_s
    print(
        f"open loop: {args.requests:,} Poisson requests at {RATE_RPS:.1f} req/s; fleet: {ROBOTS} "
        f"sync robots, {CONTROL_HZ:g} Hz, {EXECUTE} of {CHUNK} actions, {args.fleet_hours:g} h "
        f"({n_fleet:,} requests); dynamic max_batch {MAX_BATCH}, max_wait "
        f"{MAX_WAIT_S * 1000:g} ms, s(b) = 10 + 2b ms; medians of {args.repeats}"
    )
    print(f"{'':36s}{'open s':>9s}{'fleet s':>9s}")
    print(f"{'batchsim run (whole process)':36s}{m['op']:9.2f}{m['fp']:9.2f}")
    print(f"{'batchsim engine (in process)':36s}{m['oe']:9.2f}{m['fe']:9.2f}")
    print(f"{'lean SimPy loop (in process)':36s}{m['ol']:9.2f}{m['fl']:9.2f}")
    print(f"open loop:   whole process / lean loop speed {m['ol'] / m['op']:.2f}x (target >= 1.0)")
    print(f"closed loop: whole process / lean loop speed {m['fl'] / m['fp']:.2f}x (target >= 1.0)")
    lean_us = m["fl"] / lean_answers * 1e6
    async_n = async_summary["requests"]["completed"]  # no warm-up: every request
    async_us = statistics.median(async_walls) / async_n * 1e6
    print(
        f"async fleet (threshold 0.5, whole process, one run): {async_us:.2f} us per request "
        f"({async_n:,} requests) vs the lean sync loop's {lean_us:.2f}: "
        f"{lean_us / async_us:.2f}x"
    )
    print(f"peak memory of the 1M open-loop process: {max(peaks):,.0f} MB")
    if memory is not None:
        print(
            f"peak memory for {args.memory_requests:,} open-loop requests: {memory[1]:,.0f} MB "
            f"in {memory[0]:.1f} s (target < 2048)"
        )
    print(
        f"same models, same answers: open mean latency {latency * 1000:.2f} ms (batchsim) vs "
        f"{lean_latency * 1000:.2f} (lean), mean batch {open_records.batch_size.mean():.3f} vs "
        f"{lean_batch:.3f}; fleet {n_fleet:,} vs {lean_answers:,} answers, mean round trip "
        f"{trips.mean() * 1000:.4f} vs {lean_trip * 1000:.4f} ms, mean batch "
        f"{fleet_records.batch_size.mean():.4f} vs {lean_fleet_batch:.4f}"
    )
    if args.scaling_replicas:
        replica_scaling([int(r) for r in args.scaling_replicas.split(",")], args.scaling_repeats)


if __name__ == "__main__":
    main()
