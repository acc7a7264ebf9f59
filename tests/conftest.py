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


# ---- markers: what a test needs and costs (README, "Tests"); `make test-fast` leaves out
# slow, torch, network and notebook tests, CI runs them all -----------------------------
MODULE_MARKS = {
    "test_notebooks.py": ("notebook", "slow", "torch"),
    "test_serve.py": ("network", "torch"),
    "test_observe.py": ("network", "torch"),
    "test_serve_hostile.py": ("network", "torch", "slow"),
    "test_observe_hostile.py": ("network",),
    "test_power.py": ("torch",),
    "test_models.py": ("torch",),
    "test_estimate.py": ("torch",),
    "test_recommend.py": ("slow",),
}
# (module, test name or a prefix of a parametrized case's id): marks
TEST_MARKS = {
    ("test_validate.py", "test_validate_end_to_end"): ("torch", "slow"),
    ("test_sweep.py", "test_small_sweep"): ("slow",),
    ("test_sweep.py", "test_killed_sweep"): ("slow",),
    ("test_sweep.py", "test_changed_grid"): ("slow",),
    ("test_sweep.py", "test_sweep_runs_on_an_external"): ("slow", "network"),
    ("test_sweep.py", "test_recommend_"): ("slow",),
    ("test_sweep.py", "test_plot_writes"): ("slow",),
    ("test_sweep.py", "test_sweep_section_in"): ("slow",),
    ("test_sweep.py", "test_a_damaged_point"): ("slow",),
    ("test_sweep.py", "test_ctrl_c"): ("slow",),
    ("test_api.py", "test_sweep_and_recommend"): ("slow",),
    ("test_plugins.py", "test_the_plugin_runs_in_a_sweep"): ("slow",),
    ("test_plugins.py", "test_the_plugin_runs_in_recommend"): ("slow",),
    ("test_cli.py", "test_every_shipped_scenario"): ("slow",),
    # a fresh interpreter per case; the forked table of test_bad_input.py covers the same
    ("test_cli.py", "test_bad_input_is_one_clear_line"): ("slow",),
    ("test_bad_input.py", "test_a_run_killed"): ("slow",),
    ("test_bad_input.py", "test_bad_input_gets_one_clear_line[estimate"): ("torch",),
    ("test_bad_input.py", "test_bad_input_gets_one_clear_line[profile"): ("torch",),
    ("test_bad_input.py", "test_bad_input_gets_one_clear_line[serve"): ("torch",),
    ("test_bad_input.py", "test_bad_input_gets_one_clear_line[sweep"): ("slow",),
    ("test_bad_input.py", "test_bad_input_gets_one_clear_line[recommend"): ("slow",),
}


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        module = item.path.name
        marks = set(MODULE_MARKS.get(module, ()))
        for (where, prefix), more in TEST_MARKS.items():
            if where == module and item.name.startswith(prefix):
                marks.update(more)
        for mark in sorted(marks):
            item.add_marker(getattr(pytest.mark, mark))
