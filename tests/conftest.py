"""Shared helpers: hand-built queues, direct engine runs, the CLI as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
BATCHSIM = [sys.executable, "-m", "sim.cli"]


@dataclass
class ListQueue:
    """A QueueView over a plain list of arrival times, oldest first."""

    times: list[float]

    def __len__(self) -> int:
        return len(self.times)

    def arrival_s(self, position: int) -> float:
        return self.times[position]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `batchsim ARGS` in a fresh process, as a user would."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*BATCHSIM, *args], capture_output=True, text=True, cwd=cwd, env=env)


def simulate_arrays(
    times: np.ndarray,
    policy,
    profile,
    replicas: int = 1,
    seed: int = 0,
    max_queue: int | None = None,
    timeout_s: float | None = None,
    horizon_s: float | None = None,
    warmup_s: float = 0.0,
):
    """Run the engine on explicit arrival times."""
    from sim.core.server import ServerSpec
    from sim.core.traffic import OpenTraffic
    from sim.engine.engine import Engine
    from sim.engine.service import PlainService
    from sim.workload import Arrivals

    arrivals = Arrivals(np.asarray(times, dtype=float), np.zeros(len(times), dtype=np.int32))
    spec = ServerSpec.shared(policy, profile, replicas, max_queue=max_queue, timeout_s=timeout_s)
    service = PlainService(profile.sampler(np.random.default_rng(seed)))
    return Engine(OpenTraffic(arrivals), spec, service, horizon_s, warmup_s).run()


# CI explores the same hypothesis examples every run; locally each run explores new ones
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
