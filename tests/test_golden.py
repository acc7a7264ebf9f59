"""Golden runs: every shipped scenario, and variants that reach every path of the engine,
give exactly the summary figures (and batches) stored in tests/golden/.

The golden files were written by the engine before Engine II (commit 3b72a50) and guard
its rebuild: a figure may move only through a documented bug fix with its own test, and
then its golden file is rewritten with `python -m tests.test_golden --write NAME`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden"
PI0_TINY = "profile={path: ../profiles/cpu/pi0-tiny.csv, cameras: 1}"
FLEET = "scenarios/aloha-pi0-fleet.yaml"
ASYNC = "scenarios/lerobot-async-fleet.yaml"
SHORT = "duration_s=60"
NO_NET = "workload.network_ms={uplink: 0, downlink: 0, jitter: 0}"
DEADLINE_SERVE = "policy={kind: deadline, max_batch: 16, quantile: 0.9, on_miss: serve}"
DEADLINE_DROP = "policy={kind: deadline, max_batch: 16, quantile: 0.5, on_miss: drop}"
STAGED = "scenarios/pi0-continuous.yaml"
STAGED_SHORT = "duration_s=200"

# name -> (scenario file, --set overrides)
CASES: dict[str, tuple[str, list[str]]] = {
    **{
        p.stem: (f"scenarios/{p.name}", [])
        for p in sorted((ROOT / "scenarios").glob("*.yaml"))
        if not p.stem.startswith("validate-")
    },
    **{
        p.stem: (f"scenarios/{p.name}", [PI0_TINY])
        for p in sorted((ROOT / "scenarios").glob("validate-*.yaml"))
    },
    # closed loop
    "fleet-no-network": (FLEET, [SHORT, NO_NET, "workload.jitter_ms=0"]),
    "fleet-synchronized": (FLEET, [SHORT, "workload.start=synchronized", "workload.jitter_ms=0"]),
    "fleet-two-replicas": (FLEET, [SHORT, "workload.count=40", "cluster.replicas=2"]),
    "fleet-per-replica-sq": (
        FLEET,
        [
            SHORT,
            "workload.count=40",
            "cluster={replicas: 3, queue: per-replica, dispatch: shortest-queue}",
        ],
    ),
    "fleet-per-replica-lw": (
        FLEET,
        [
            SHORT,
            "workload.count=40",
            "cluster={replicas: 2, queue: per-replica, dispatch: least-work}",
        ],
    ),
    "fleet-per-replica-p2": (
        FLEET,
        [
            SHORT,
            "workload.count=40",
            "cluster={replicas: 3, queue: per-replica, dispatch: power-of-two}",
        ],
    ),
    "fleet-admission": (
        FLEET,
        [SHORT, "workload.count=64", "admission={max_queue: 3, timeout_ms: 25}"],
    ),
    "fleet-timeout-only": (FLEET, [SHORT, "workload.count=48", "admission.timeout_ms=30"]),
    "fleet-requests": (FLEET, ["duration_s=null", "requests=3000"]),
    "fleet-wake-latency": (
        FLEET,
        [SHORT, "cluster.wake_latency_ms=0.2", DEADLINE_SERVE, "slo.latency_ms=80"],
    ),
    "fleet-static": (FLEET, [SHORT, "policy={kind: static, batch_size: 4, timeout_ms: 8}"]),
    # staged models (issue 15): request level, fewer steps, and iterations in closed loop
    "staged-dynamic": (
        STAGED,
        [STAGED_SHORT, "policy={kind: dynamic, max_batch: 8, max_wait_ms: 5}"],
    ),
    "staged-deadline-floor": (
        STAGED,
        [STAGED_SHORT, "policy={kind: deadline, max_batch: 8, on_miss: serve, min_steps: 3}"],
    ),
    "staged-continuous-floor": (
        STAGED,
        [
            STAGED_SHORT,
            "workload.rate_rps=3",
            "policy={kind: continuous, max_batch: 8, max_admit: 2, min_steps: 4}",
        ],
    ),
    "staged-fleet-continuous": (
        FLEET,
        [
            SHORT,
            "workload.count=8",
            "profile=../profiles/cpu/pi0-tiny-staged.csv",
            "policy={kind: continuous, max_batch: 16}",
            "cluster.replicas=2",
        ],
    ),
    "fleet-adaptive": (
        FLEET,
        [SHORT, "policy={kind: adaptive, target_ms: 40, max_batch: 16, max_wait_ms: 2}"],
    ),
    "fleet-lazy": (FLEET, [SHORT, "policy={kind: lazy, max_batch: 16, max_wait_ms: 4}"]),
    "fleet-deadline-drop": (FLEET, [SHORT, DEADLINE_DROP, "slo.latency_ms=40"]),
    "async-no-network": (ASYNC, [SHORT, NO_NET]),
    "async-dynamic": (ASYNC, [SHORT, "policy={kind: dynamic, max_batch: 32, max_wait_ms: 5}"]),
    "async-deadline-drop": (
        ASYNC,
        [SHORT, "policy={kind: deadline, max_batch: 32, on_miss: drop}"],
    ),
    "async-two-replicas-wake": (ASYNC, [SHORT, "cluster={replicas: 2, wake_latency_ms: 0.1}"]),
    "mixed-fleet": ("tests/golden/mixed-fleet.yaml", []),
    "idle-open": ("tests/golden/idle-open.yaml", []),
    "idle-robots": ("tests/golden/idle-robots.yaml", []),
    # open loop
    "open-wake-latency": (
        "scenarios/quickstart.yaml",
        ["duration_s=60", "cluster.wake_latency_ms=0.3"],
    ),
    "open-admission": (
        "scenarios/quickstart.yaml",
        ["duration_s=60", "workload.rate_rps=400", "admission={max_queue: 20, timeout_ms: 60}"],
    ),
    "open-max-queue": (
        "scenarios/quickstart.yaml",
        ["duration_s=60", "workload.rate_rps=400", "admission.max_queue=10"],
    ),
    "open-requests-static": (
        "scenarios/static-padded.yaml",
        ["duration_s=null", "requests=5003", "policy={kind: static, batch_size: 8}"],
    ),
    "open-classes-deadline": ("scenarios/slo-classes.yaml", ["duration_s=60", DEADLINE_DROP]),
    "open-per-replica-admission": (
        "scenarios/dispatch-shortest-queue.yaml",
        ["duration_s=60", "admission={max_queue: 5, timeout_ms: 80}"],
    ),
    "open-shapes-replicas": (
        "scenarios/mixed-cameras.yaml",
        ["duration_s=60", "cluster.replicas=2"],
    ),
}


def _digest(frame: pd.DataFrame) -> str:
    """A hash of a frame's values (not its Parquet bytes, which carry library versions)."""
    h = hashlib.sha256()
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(str)
        array = values.to_numpy()
        if array.dtype == object:  # strings: their text, not their object pointers
            array = array.astype(str)
        h.update(column.encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:20]


def run_case(name: str, tmp: Path) -> dict:
    """`batchsim run` the case into tmp; its summary (no wall time) and the records' hashes."""
    from sim.cli import main

    path, overrides = CASES[name]
    args = ["run", str(ROOT / path), "--out", str(tmp), "-q"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    # paths in the summary (the profile's source) name the checkout: stored relative to it
    text = (tmp / "summary.json").read_text().replace(str(ROOT), "<root>")
    summary = json.loads(text)
    requests = pd.read_parquet(tmp / "requests.parquet", columns=["outcome", "batch"])
    return {
        "summary": summary,
        "batches": _digest(pd.read_parquet(tmp / "batches.parquet")),
        "requests": _digest(requests),
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_inv13_golden_run(name, tmp_path):
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    got = run_case(name, tmp_path)
    assert got["summary"] == expected["summary"]
    assert got["batches"] == expected["batches"]
    assert got["requests"] == expected["requests"]


def test_every_shipped_scenario_has_a_golden_run():
    shipped = {p.stem for p in (ROOT / "scenarios").glob("*.yaml")}
    assert shipped <= set(CASES)


if __name__ == "__main__":  # python -m tests.test_golden --write [NAME ...]
    import tempfile

    if sys.argv[1:2] != ["--write"]:
        raise SystemExit("usage: python -m tests.test_golden --write [NAME ...]")
    for name in sys.argv[2:] or sorted(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            result = run_case(name, Path(tmp))
        (GOLDEN / f"{name}.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print("wrote", name)
