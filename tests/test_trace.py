"""`batchsim run --trace`: the batch timeline and robot stalls as a Chrome/Perfetto trace.

Checked against the Trace Event Format's JSON object form (the fields ui.perfetto.dev and
chrome://tracing read) and against the run's own records: one slice per batch on its
replica's track, never two at once on a track, and each robot's stall slices adding up
to the stall time its summary reports.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, run_cli


def check_schema(trace: dict) -> list[dict]:
    assert set(trace) >= {"traceEvents"} and trace["displayTimeUnit"] in ("ms", "ns")
    events = trace["traceEvents"]
    for e in events:
        assert isinstance(e["name"], str) and e["ph"] in ("X", "M")
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] == "X":
            assert e["ts"] >= 0 and e["dur"] >= 0
        else:
            assert e["name"] in ("process_name", "thread_name") and "name" in e["args"]
    return events


@pytest.mark.parametrize(
    ("scenario", "overrides", "replicas"),
    [
        ("aloha-pi0-fleet.yaml", ["duration_s=30"], 1),
        ("dispatch-least-work.yaml", ["duration_s=10"], 4),
    ],
)
def test_the_trace_holds_every_batch_on_its_replica_and_the_stalls(
    tmp_path, scenario, overrides, replicas
):
    sets = [a for o in overrides for a in ("--set", o)]
    done = run_cli("run", str(ROOT / "scenarios" / scenario), *sets, "--out", str(tmp_path / "r"),
                   "--trace", str(tmp_path / "t.json"), "-q")  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = check_schema(json.loads((tmp_path / "t.json").read_text()))
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert [names[(1, r)] for r in range(replicas)] == [f"replica {r}" for r in range(replicas)]
    batches = pd.read_parquet(tmp_path / "r" / "batches.parquet")
    slices = pd.DataFrame([e for e in events if e.get("cat") == "batch"])
    assert len(slices) == len(batches)
    assert (slices.tid.to_numpy() == batches.replica.to_numpy()).all()
    assert np.allclose(slices.ts / 1e6, batches.start) and np.allclose(
        slices.dur / 1e6, batches.end - batches.start
    )
    assert (
        sum(len(a["requests"]) + a.get("requests_not_listed", 0) for a in slices.args)
        == batches["size"].sum()
    )
    for _, track in slices.groupby("tid"):  # one batch per replica at a time
        ends = (track.ts + track.dur).to_numpy()[:-1]
        assert (track.ts.to_numpy()[1:] >= ends - 1e-3).all()
    stalls = [e for e in events if e.get("cat") == "stall"]
    if scenario.startswith("aloha"):
        summary = json.loads((tmp_path / "r" / "summary.json").read_text())
        robots = pd.read_parquet(tmp_path / "r" / "robots.parquet")
        warmup, window = 10.0, summary["window_s"]  # aloha-pi0-fleet's warmup_s
        for robot, frame in pd.DataFrame(stalls).groupby("tid"):
            start, end = frame.ts / 1e6, (frame.ts + frame.dur) / 1e6
            in_window = (np.minimum(end, warmup + window) - np.maximum(start, warmup)).clip(0).sum()
            expected = robots.set_index("robot").stall_fraction[robot] * window
            assert in_window == pytest.approx(expected, rel=1e-6, abs=1e-9)
    else:
        assert not stalls
