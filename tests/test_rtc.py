"""Real-time chunking robots (issue 29): hand-computed cases of the issue, the client's
state machine driven by hand, and hypothesis properties (conservation of actions, of
time, causality, never beyond a chunk)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import sim
from sim.workload.robots import RobotParams
from sim.workload.rtc import RtcRobot

T = 0.02  # 50 Hz


def fleet(tmp_path, latency_ms=60.0, **robot):
    """One RTC robot at 50 Hz, H = 50, s = 25, d = 5, served alone in a constant time."""
    workload = {"kind": "robots", "count": 1, "control_hz": 50, "chunk": 50, "execute": 25,
                "mode": "rtc", "delay_steps": 5, "start": "synchronized", **robot}  # fmt: skip
    data = {
        "name": "rtc-hand",
        "seed": 1,
        "duration_s": 20,
        "warmup_s": 2,
        "profile": {"batch_size": [1, 2], "latency_ms": [latency_ms, latency_ms]},
        "workload": workload,
        "policy": {"kind": "dynamic", "max_batch": 1, "max_wait_ms": 0},
    }
    path = tmp_path / "rtc.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def robots_of(path, *overrides):
    return sim.run(path, list(overrides), check=True).summary["robots"]


def test_60_ms_no_stall_no_late_chunk_two_chunks_a_second(tmp_path):
    """r = 3 ticks <= d = 5: every chunk in time; the stalest action is s + d - 1 = 29."""
    r = robots_of(fleet(tmp_path, 60))
    assert r["stall_fraction"] == 0 and r["chunk_rate_hz"] == pytest.approx(2.0)
    rtc = r["rtc"]
    assert rtc["late_share"] == 0 and rtc["late_actions_per_chunk"] == 0
    assert rtc["staleness_max_actions"] == 25 + 5 - 1 and rtc["delay_steps_mean"] == 5
    assert r["deadline_miss_rate"] == 0


def test_190_ms_every_chunk_5_actions_late_no_stall_still_2_chunks_a_second(tmp_path):
    """r = ceil(190 / 20) = 10 ticks: each chunk arrives 5 ticks after its switch tick, so
    10 - 5 = 5 of its actions are skipped (old, unguided ones ran instead)."""
    r = robots_of(fleet(tmp_path, 190))
    assert r["stall_fraction"] == 0 and r["chunk_rate_hz"] == pytest.approx(2.0)
    assert r["rtc"]["late_share"] == 1 and r["rtc"]["late_actions_per_chunk"] == 5
    assert r["rtc"]["staleness_max_actions"] == 25 + 10 - 1
    assert r["deadline_miss_rate"] == 1  # the deadline is the switch tick


def test_600_ms_the_old_chunk_runs_dry(tmp_path):
    """After a send the old chunk holds H - s = 25 actions (500 ms); a 600 ms answer leaves
    the robot 100 ms stalled each cycle: 600 ms per chunk, 1/6 stalled, and 25 - 5 = 20
    late actions per chunk; the next observation goes out at the answer (s already run)."""
    r = robots_of(fleet(tmp_path, 600))
    assert r["stall_fraction"] == pytest.approx(1 / 6)
    assert r["chunk_rate_hz"] == pytest.approx(1 / 0.6)
    assert r["rtc"]["late_actions_per_chunk"] == 20
    assert r["rtc"]["staleness_max_actions"] == 49  # the old chunk ran to its end


def test_inference_guidance_multiplies_the_denoising_stage(tmp_path):
    """A staged 10 ms prefix and 10 x 2 ms steps at factor 3: 10 + 10 x 2 x 3 = 70 ms."""
    path = fleet(tmp_path, guidance_step_factor=3)
    data = yaml.safe_load(path.read_text())
    data["profile"] = {"stages": [
        {"name": "prefix", "batch_size": [1, 2], "latency_ms": [10, 10]},
        {"name": "step", "batch_size": [1, 2], "latency_ms": [2, 2], "repeat": 10},
    ]}  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    run = sim.run(path)
    assert run.metric("latency_mean_ms") == pytest.approx(70.0)
    unguided = sim.run(path, ["workload.guidance=none", "workload.guidance_step_factor=1"])
    assert unguided.metric("latency_mean_ms") == pytest.approx(30.0)


@pytest.mark.parametrize(
    "override, words",
    [
        ("workload.delay_steps=30", ["delay_steps <= execute <= chunk - delay_steps", "30"]),
        ("workload.execute=48", ["execute 48", "chunk 50"]),
        ("workload.guidance_step_factor=3", ["needs a staged profile"]),
        ("workload.mode=async", ["apply to mode: rtc only"]),
        ("workload.threshold=0.5", ["threshold applies to async robots"]),
        ("workload.delay_steps=foo", ["workload.delay_steps", "control ticks, or auto", "foo"]),
    ],
)
def test_impossible_combinations_are_one_line(tmp_path, override, words):
    from tests.conftest import run_cli

    done = run_cli("run", str(fleet(tmp_path)), "--set", override)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines


def _robot(**changes) -> RtcRobot:
    p = dict(control_hz=50, chunk=50, execute=25, mode="rtc", delay_steps=5,
             max_delay_steps=25)  # fmt: skip
    return RtcRobot(0, RobotParams(**{**p, **changes}), np.random.default_rng(0))


def test_training_time_rtc_discards_a_late_chunk_then_adapts_its_delay():
    """Auto delay from 5; the first answer (60 ms) sets d = 3; a 190 ms answer then comes 10
    ticks after a send conditioned on d = 3: discarded (the robot keeps its old chunk and
    observes again at once), and d becomes ceil(190 / 20) = 10, so the next 190 ms answer is
    in time."""
    robot = _robot(delay_steps=None, initial_delay_steps=5, guidance="training")
    assert robot.send(0.0) == pytest.approx(5 * T)
    first = robot.deliver(0.06, True)  # the first chunk: nothing to be late for
    assert robot.delay_steps == 3 and first == pytest.approx(0.06 + 25 * T)
    assert robot.send(first) == pytest.approx(first + 3 * T)
    answer = first + 0.19
    assert robot.deliver(answer, True) == answer  # discarded: observe again at once
    assert (robot.rtc_discarded, robot.rtc_late, robot.delay_steps) == (1, 0, 10)
    assert robot.queue == 50 - 25 - 10  # the old chunk goes on: 10 ticks ran since the send
    robot.send(answer)
    robot.deliver(answer + 0.19, True)  # r = 10 <= d = 10: in time, used
    assert (robot.rtc_discarded, robot.rtc_late, robot.rtc_chunks) == (1, 0, 2)
    assert robot.stalled_since_s is None


def test_inference_time_rtc_uses_the_late_chunk():
    robot = _robot()
    robot.send(0.0)
    nxt = robot.deliver(0.06, True)
    robot.send(nxt)
    robot.deliver(nxt + 0.19, True)
    assert (robot.rtc_late, robot.rtc_late_actions, robot.rtc_discarded) == (1, 5, 0)
    assert robot.queue == 50 - 10  # switched at index 10


@settings(max_examples=150, deadline=None)
@given(
    trips=st.lists(st.floats(0.001, 1.2), min_size=1, max_size=40),
    fails=st.lists(st.booleans(), min_size=40, max_size=40),
    delay=st.one_of(st.none(), st.integers(0, 20)),
    guidance=st.sampled_from(["inference", "training", "none"]),
    execute=st.integers(20, 30),
)
def test_properties_of_the_rtc_client(trips, fails, delay, guidance, execute):
    """Whatever the round trips (and failure notices): every delivered action is executed,
    stale, replaced or still queued (conservation); the robot never holds more than a chunk,
    never sends before it is told, or before its answer (causality); and executing plus
    stalling fills the time from its start to the end (conservation of time)."""
    chunk = 50
    robot = _robot(execute=execute, delay_steps=delay, initial_delay_steps=3,
                   max_delay_steps=min(execute, chunk - execute), guidance=guidance)  # fmt: skip
    now = 0.0
    for trip, fail in zip(trips, fails, strict=False):
        send = robot.next_send_s
        assert send is not None and send >= now - 1e-12
        deadline = robot.send(send)
        assert deadline >= send
        now = send + trip
        robot.deliver(now, not (fail and trip < 0.05))
        assert 0 <= robot.queue <= chunk
    end = now + 0.5
    robot.finish(end)
    delivered = robot.responses * chunk
    accounted = robot.executed_actions + robot.stale_actions + robot.replaced_actions + robot.queue
    assert delivered == accounted
    busy = robot.executed_actions * T + robot.window_stall_s
    assert busy == pytest.approx(end, abs=T + 1e-9)
    assert robot.rtc_late + robot.rtc_discarded <= robot.responses
    if guidance != "training":
        assert robot.rtc_discarded == 0
    assert robot.rtc_staleness_max <= chunk - 1
    assert robot.rtc_late_actions <= robot.rtc_late * chunk
    assert not math.isnan(robot.window_stall_s)


def test_rtc_robots_run_in_sweep_and_recommend(tmp_path):
    """The shipped rtc fleet swept over d (the rtc figures are sweep columns) and searched
    for the most robots within a late-chunk share (an rtc SLO term)."""
    import pandas as pd

    from tests.conftest import ROOT, run_cli

    fleet_yaml = str(ROOT / "scenarios" / "rtc-pi0-fleet.yaml")
    short = ["--set", "duration_s=30", "--set", "workload.count=32"]
    swept = run_cli("sweep", fleet_yaml, "--grid", "workload.delay_steps=2,12", *short,
                    "--workers", "1", "--out", str(tmp_path / "sw"), "-q")  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    summary = pd.read_parquet(tmp_path / "sw" / "summary.parquet").set_index(
        "grid.workload.delay_steps"
    )
    late = summary["robots_rtc_late_share"]
    assert late[2] > late[12]  # a frozen prefix shorter than the round trip: late chunks
    # s + max(d, r) - 1: d + s - 1 at least, more where a chunk came late
    assert summary.loc[12, "robots_rtc_staleness_max_actions"] >= 12 + 25 - 1
    found = run_cli("recommend", fleet_yaml, "--objective", "max-robots", "--slo",
                    "rtc_late_share<=0.05", "--set", "duration_s=30", "--workers", "1",
                    "--max-replications", "2")  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert "sustains workload.count=" in found.stdout
    assert "rtc_late_share<=0.05" in found.stdout


def test_a_batch_holding_any_guided_request_pays_the_guided_cost(tmp_path):
    """A fleet mixing an inference-guided rtc robot (factor 3) and sync robots on a staged
    10 ms prefix + 10 x 2 ms steps: a batch with the guided robot's request in it takes
    10 + 10 x 2 x 3 = 70 ms whoever else is in it, any other 30 ms."""
    import pandas as pd

    stages = [
        {"name": "prefix", "batch_size": [1, 4], "latency_ms": [10, 10]},
        {"name": "step", "batch_size": [1, 4], "latency_ms": [2, 2], "repeat": 10},
    ]
    base = {"control_hz": 50, "chunk": 50, "execute": 25, "start": "staggered"}
    data = {
        "name": "mixed-guidance", "seed": 3, "duration_s": 20, "warmup_s": 1,
        "profile": {"stages": stages},
        "workload": {"kind": "robots", "groups": [
            {**base, "name": "guided", "count": 1, "mode": "rtc", "delay_steps": 5,
             "guidance_step_factor": 3},
            {**base, "name": "sync", "count": 3, "jitter_ms": 3},
        ]},
        "policy": {"kind": "dynamic", "max_batch": 4, "max_wait_ms": 10},
    }  # fmt: skip
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    sim.run(path, out=out, check=True)
    requests = pd.read_parquet(out / "requests.parquet")
    batches = pd.read_parquet(out / "batches.parquet").set_index("id")
    took_ms = (batches.end - batches.start) * 1000
    guided = set(requests.loc[requests.source == 0, "batch"]) - {-1}
    others = set(batches.index) - guided
    assert guided and others  # both kinds ran
    assert np.allclose(took_ms[sorted(guided)], 70.0)
    assert np.allclose(took_ms[sorted(others)], 30.0)
    mixed = requests[requests.batch.isin(guided)].groupby("batch").source.nunique()
    assert (mixed > 1).any()  # some guided batches carried sync robots' requests too


def test_guided_groups_with_different_factors_are_refused(tmp_path):
    from tests.conftest import run_cli

    path = fleet(tmp_path, guidance_step_factor=3)
    data = yaml.safe_load(path.read_text())
    rtc = data.pop("workload")
    del rtc["kind"]
    data["workload"] = {"kind": "robots", "groups": [rtc, {**rtc, "guidance_step_factor": 2}]}
    path.write_text(yaml.safe_dump(data))
    done = run_cli("run", str(path))
    assert done.returncode == 2 and "must share guidance_step_factor (got 2, 3)" in done.stderr
