"""Engine speed: 1,000,000 Poisson requests, dynamic batching, as a whole `batchsim run`.

Model: max_batch 16, max_wait 5 ms, s(b) = 10 + 2b ms, load 0.8 of the capacity at
max_batch (rate = 0.8 * 16 / 42 ms = 304.8 requests/s). Prints, each as the median of
--repeats runs in this one process:
  - the whole `batchsim run` process (start-up, imports, simulation, parquet and
    summary output), timed from outside, and its peak resident memory;
  - batchsim's engine alone, in process;
  - a lean hand-written SimPy loop of the same model (one event per arrival, a
    deque queue, latencies kept in a list): the baseline the issue asks for.

Usage: python benchmarks/bench_engine.py [--requests N] [--repeats K]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
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


def service_s(b: int) -> float:
    return 0.010 + 0.002 * b


def lean_simpy_loop(n: int, seed: int) -> tuple[float, float]:
    """The same model written directly in SimPy; returns (mean latency s, mean batch)."""
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    queue: deque[float] = deque()
    latencies: list[float] = []
    batches: list[int] = []
    state = {"signal": None}

    def source():
        for gap in rng.exponential(1 / RATE_RPS, n).tolist():
            yield env.timeout(gap)
            queue.append(env.now)
            signal = state["signal"]
            # wake an idle server on its first request or on a full batch
            if signal is not None and not signal.triggered and len(queue) in (1, MAX_BATCH):
                signal.succeed()

    def server():
        while True:
            now = env.now
            if queue and (len(queue) >= MAX_BATCH or now >= queue[0] + MAX_WAIT_S):
                batch = [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
                s = service_s(len(batch))
                yield env.timeout(s)
                done = env.now
                latencies.extend(done - a for a in batch)
                batches.append(len(batch))
                continue
            state["signal"] = env.event()
            if queue:
                yield state["signal"] | env.timeout(queue[0] + MAX_WAIT_S - now)
            else:
                yield state["signal"]
            state["signal"] = None

    env.process(source())
    env.process(server())
    env.run()
    return float(np.mean(latencies)), float(np.mean(batches))


def scenario(n: int) -> dict:
    sizes = list(range(1, MAX_BATCH + 1))
    return {
        "name": "bench-engine",
        "seed": 1,
        "requests": n,
        "profile": {"batch_size": sizes, "latency_ms": [service_s(b) * 1000 for b in sizes]},
        "workload": {"kind": "poisson", "rate_rps": RATE_RPS},
        "policy": {"kind": "dynamic", "max_batch": MAX_BATCH, "max_wait_ms": MAX_WAIT_S * 1000},
    }


def whole_process(path: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `batchsim run` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "sim.cli", "run", str(path), "--out", str(out), "-q"]
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    # ru_maxrss of children is the max over all children so far (KiB on Linux)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def engine_only(path: Path) -> tuple[float, float, float]:
    from sim.scenario import load_scenario
    from sim.simulate import simulate

    loaded = load_scenario(path)
    start = time.perf_counter()
    rec = simulate(loaded)
    wall = time.perf_counter() - start
    done = rec.request_batch >= 0
    latency = float(np.mean(rec.request_completion_s[done] - rec.arrival_s[done]))
    return wall, latency, float(rec.batch_size.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.requests
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"model: {n:,} Poisson requests at {RATE_RPS:.1f} req/s, dynamic max_batch {MAX_BATCH}, "
        f"max_wait {MAX_WAIT_S * 1000:g} ms, s(b) = 10 + 2b ms (load 0.8)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(scenario(n)))
        proc, peaks, eng, lean = [], [], [], []
        for _ in range(args.repeats):
            wall, peak = whole_process(path, Path(tmp) / "out")
            proc.append(wall)
            peaks.append(peak)
            wall_e, lat_e, batch_e = engine_only(path)
            eng.append(wall_e)
            start = time.perf_counter()
            lat_l, batch_l = lean_simpy_loop(n, seed=1)
            lean.append(time.perf_counter() - start)
    med = statistics.median
    print(f"{'':34s}{'wall s':>10s}{'requests/s':>14s}")
    print(f"{'batchsim run (whole process)':34s}{med(proc):10.2f}{n / med(proc):14,.0f}")
    print(f"{'batchsim engine (in process)':34s}{med(eng):10.2f}{n / med(eng):14,.0f}")
    print(f"{'lean SimPy loop (event/arrival)':34s}{med(lean):10.2f}{n / med(lean):14,.0f}")
    print(f"whole process / lean loop speed: {med(lean) / med(proc):.2f}x (target >= 0.5)")
    print(f"peak memory of the batchsim process: {max(peaks):,.0f} MB (target < 1024)")
    print(
        f"same model, same answers: mean latency {lat_e * 1000:.2f} ms (batchsim) vs "
        f"{lat_l * 1000:.2f} ms (lean), mean batch {batch_e:.3f} vs {batch_l:.3f}"
    )


if __name__ == "__main__":
    main()
