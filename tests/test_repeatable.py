"""Repeatable runs (issue 26, item 7): a resolved scenario holds no policy object, so two
runs of one loaded scenario are the same run, for every built-in policy and for plug-ins.

Before, a loaded scenario kept one policy object and a learning policy learned across
runs: `sim.run(l)` twice on scenarios/adaptive-aimd.yaml gave p99 123.53 ms, then 122.69.
"""

from __future__ import annotations

import pytest

import sim
from sim.policies import registry
from tests.conftest import ROOT

TINY = {"batch_size": [1, 2, 4, 8, 16], "latency_ms": [[8, 9, 12], 10, 14, 22, [38, 40, 47]]}
POLICIES = {
    "static": {"kind": "static", "batch_size": 4, "timeout_ms": 6},
    "dynamic": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 3},
    "adaptive": {"kind": "adaptive", "target_ms": 40, "max_batch": 16, "max_wait_ms": 2},
    "deadline": {"kind": "deadline", "max_batch": 16, "quantile": 0.9},
    "continuous": {"kind": "continuous", "max_batch": 8},
    "lazy": {"kind": "lazy", "max_batch": 8, "max_wait_ms": 4},
}


def test_every_built_in_policy_is_covered():
    assert set(POLICIES) == set(registry.BUILTIN)


@pytest.mark.parametrize("kind", sorted(POLICIES))
@pytest.mark.parametrize("workload", ["open", "robots"])
def test_two_runs_of_one_loaded_scenario_are_identical(kind, workload):
    staged = {"stages": [{"name": "prefix", **TINY}, {"name": "step", **TINY, "repeat": 4}]}
    traffic = (
        {"kind": "poisson", "rate_rps": 120}
        if workload == "open"
        else {"kind": "robots", "count": 12, "control_hz": 50, "chunk": 20, "start": "random"}
    )
    loaded = sim.load(
        {
            "seed": 5,
            "duration_s": 20,
            "profile": staged if kind == "continuous" else TINY,
            "workload": traffic,
            "policy": POLICIES[kind],
            "slo": {"latency_ms": 150},
            # per-replica queues: one policy object per replica, each built per run
            "cluster": {"replicas": 2, "queue": "per-replica", "dispatch": "least-work"},
        }
    )
    first, second = sim.run(loaded), sim.run(loaded)
    assert first.summary == second.summary
    assert first.records.batch_end_s.tolist() == second.records.batch_end_s.tolist()


def test_the_adaptive_scenario_gives_the_same_p99_twice():
    loaded = sim.load(ROOT / "scenarios" / "adaptive-aimd.yaml")
    p99s = [sim.run(loaded).metric("latency_p99_ms") for _ in range(2)]
    assert p99s[0] == p99s[1] == pytest.approx(123.53, abs=0.01)


def test_a_learning_plug_in_is_built_afresh_for_every_run(tmp_path):
    (tmp_path / "learner.py").write_text(
        "from sim.policies import Launch, Wait\n"
        "class Learner:\n"
        "    name, order = 'learner', 'fifo'\n"
        "    def __init__(self, max_batch):\n"
        "        self.max_batch, self.seen = max_batch, 0\n"
        "    def launch_sizes(self):\n"
        "        return set(range(1, self.max_batch + 1))\n"
        "    def decide(self, now_s, queue):\n"
        "        if not len(queue):\n"
        "            return Wait(until_queue_len=1)\n"
        "        # a batch grows with what it learned: carried state would change the run\n"
        "        return Launch(min(len(queue), 1 + self.seen % self.max_batch), "
        "min(len(queue), 1 + self.seen % self.max_batch))\n"
        "    def on_batch_done(self, now_s, size, padded_size, service_s):\n"
        "        self.seen += 1\n"
    )
    loaded = sim.load(
        {
            "seed": 1,
            "duration_s": 10,
            "profile": TINY,
            "workload": {"kind": "poisson", "rate_rps": 200},
            "policy": {"kind": "learner:Learner", "max_batch": 8},
        },
        base=tmp_path,
    )
    assert sim.run(loaded).summary == sim.run(loaded).summary
