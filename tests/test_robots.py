"""Closed-loop robot fleets: hand-computed stall figures, conservation of actions, the
closed-loop throughput law, deadlines flowing into requests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import load
from sim.core import invariants as inv
from sim.engine.pipeline import simulate, summarise
from sim.metrics.robots import robots_frame


def fleet(workload: dict, latency_ms, duration_s: float, warmup_s: float = 0.0, **extra) -> tuple:
    sizes = list(range(1, 65))
    latency = [latency_ms(b) for b in sizes] if callable(latency_ms) else [latency_ms] * 64
    data = {
        "seed": 1,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "profile": {"batch_size": sizes, "latency_ms": latency},
        "workload": {"kind": "robots", **workload},
        "policy": {"kind": "dynamic", "max_batch": 64, "max_wait_ms": 0},
        **extra,
    }
    loaded = load(data)
    records = simulate(loaded)
    return summarise(loaded, records), records


def test_one_sync_robot_stalls_exactly_s_over_the_cycle():
    s, execute, hz = 0.020, 25, 50.0
    cycle = s + execute / hz  # 0.52 s
    summary, records = fleet(
        {"count": 1, "control_hz": hz, "chunk": 50, "execute": execute, "start": "synchronized"},
        s * 1000,
        duration_s=20 * cycle,
        warmup_s=2 * cycle,
    )
    robot = robots_frame(records).iloc[0]
    assert robot.stall_fraction == pytest.approx(s / cycle, rel=1e-9)
    assert robot.effective_control_hz == pytest.approx(execute / cycle, rel=1e-9)
    assert robot.chunk_rate_hz == pytest.approx(1 / cycle, rel=1e-9)
    assert summary["robots"]["stall_fraction"] == pytest.approx(s / cycle, rel=1e-9)
    assert robot.deadline_miss_rate is None  # sync robots without an SLO have no deadline


def test_synchronized_sync_robots_batch_together_and_stall_s_of_n():
    n, execute, hz = 12, 8, 15.0
    s_of_n = 0.010 + 0.003 * n  # 46 ms for the batch of all twelve
    cycle = s_of_n + execute / hz
    summary, records = fleet(
        {"count": n, "control_hz": hz, "chunk": 10, "execute": execute, "start": "synchronized"},
        lambda b: 10.0 + 3.0 * b,
        duration_s=30 * cycle,
        warmup_s=3 * cycle,
    )
    assert set(records.batch_size.tolist()) == {n}
    frame = robots_frame(records)
    assert np.allclose(frame.stall_fraction, s_of_n / cycle, rtol=1e-9)
    assert summary["robots"]["jain_control_rate"] == pytest.approx(1.0)


def test_async_robot_on_time_never_stalls_and_runs_at_control_hz():
    summary, records = fleet(
        {"count": 1, "control_hz": 50, "chunk": 50, "mode": "async", "threshold": 0.5,
         "start": "synchronized"},
        20.0,
        duration_s=11.0,
        warmup_s=1.0,
    )  # fmt: skip
    robot = records.robots
    # the cold start (no actions before the first answer) falls in the warm-up
    assert robot.window_stall_s[0] == 0.0
    assert robot.window_executed[0] == 500  # exactly 50 actions per second for 10 s
    assert robot.window_misses[0] == 0
    assert summary["robots"]["deadline_miss_rate"] == 0.0
    assert summary["robots"]["effective_control_hz"] == pytest.approx(50.0)


def test_async_deadline_is_when_the_queue_runs_dry():
    # 30 Hz, 50 actions, threshold 0.5: a request goes out with 25 actions left, so the
    # robot runs dry 26 ticks after the send; the server sees that minus the downlink
    _, records = fleet(
        {"count": 1, "control_hz": 30, "chunk": 50, "mode": "async", "threshold": 0.5,
         "start": "synchronized", "network_ms": {"uplink": 4, "downlink": 6}},
        20.0,
        duration_s=10.0,
    )  # fmt: skip
    later = slice(1, None)  # the first request is sent dry
    slack_s = records.deadline_s[later] - records.arrival_s[later]
    assert np.allclose(slack_s, 26 / 30 - 0.004 - 0.006, atol=1e-9)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(1, 12),
    hz=st.sampled_from([10.0, 15.0, 30.0, 50.0]),
    chunk=st.integers(2, 60),
    execute_frac=st.floats(0.1, 1.0),
    mode=st.sampled_from(["sync", "async"]),
    threshold=st.floats(0.0, 1.0),
    start=st.sampled_from(["synchronized", "staggered", "random"]),
    latency_ms=st.floats(5.0, 400.0),
    uplink=st.floats(0.0, 20.0),
    jitter=st.floats(0.0, 5.0),
    max_queue=st.none() | st.integers(1, 6),
)
def test_inv12_actions_are_conserved(
    count, hz, chunk, execute_frac, mode, threshold, start, latency_ms, uplink, jitter, max_queue
):
    execute = max(1, int(chunk * execute_frac))
    workload = {
        "count": count, "control_hz": hz, "chunk": chunk, "execute": execute, "mode": mode,
        "start": start, "jitter_ms": jitter,
        "network_ms": {"uplink": uplink, "downlink": uplink / 2, "jitter": jitter},
        **({"threshold": threshold} if mode == "async" else {}),  # sync robots refuse it
    }  # fmt: skip
    admission = {"admission": {"max_queue": max_queue}} if max_queue else {}
    _, records = fleet(workload, lambda b: latency_ms + b, duration_s=8.0, **admission)
    inv.actions_conserved(records)  # INV-12, the package's check
    served = records.request_batch >= 0
    assert np.all(records.request_start_s[served] >= records.arrival_s[served] - 1e-12)


def test_closed_loop_throttles_itself_and_obeys_littles_law():
    """48 sync robots at 15 Hz (8 of 10 actions) against a profile that is slow for them:
    the loop's request rate is N / (round trip + execution time), and doubling the
    service time lowers it rather than growing a queue."""
    n, execute, hz = 48, 8, 15.0
    rates = []
    for scale in (1.0, 2.0):
        summary, records = fleet(
            {"count": n, "control_hz": hz, "chunk": 10, "execute": execute, "start": "random"},
            lambda b, k=scale: k * (40.0 + 6.0 * b),
            duration_s=200.0,
            warmup_s=20.0,
            policy={"kind": "dynamic", "max_batch": 16, "max_wait_ms": 0},
        )
        rate = summary["requests"]["arrived"] / summary["window_s"]
        round_trip_s = summary["robots"]["round_trip_ms"]["mean"] / 1000
        assert rate == pytest.approx(n / (round_trip_s + execute / hz), rel=0.02)
        assert summary["utilization"]["mean"] > 0.95  # overloaded: the GPU never rests
        rates.append(rate)
    assert rates[1] < rates[0]  # self-throttling: slower service, fewer requests
    assert rates[1] > rates[0] / 2  # and batching absorbs part of the slowdown


def test_deadline_policy_keeps_an_async_fleet_fed():
    summary, records = fleet(
        {"count": 32, "control_hz": 30, "chunk": 50, "mode": "async", "threshold": 0.5,
         "start": "random", "network_ms": {"uplink": 5, "downlink": 5}},
        lambda b: 18.0 + 3.6 * b,
        duration_s=60.0,
        warmup_s=5.0,
        policy={"kind": "deadline", "max_batch": 32, "quantile": 0.5, "on_miss": "serve"},
    )  # fmt: skip
    assert summary["robots"]["stall_fraction"] < 0.001
    assert summary["robots"]["deadline_miss_rate"] < 0.01
    # it waits for deadlines, so it batches far more than one request at a time
    assert summary["batch_size"]["mean"] > 8


def test_groups_are_heterogeneous_and_inherit_inline_defaults():
    _, records = fleet(
        {
            "control_hz": 50, "chunk": 50, "execute": 25, "start": "staggered",
            "groups": [{"name": "aloha", "count": 3}, {"name": "droid", "count": 2,
                                                       "control_hz": 15, "chunk": 10, "execute": 8}],
        },
        20.0,
        duration_s=5.0,
    )  # fmt: skip
    frame = robots_frame(records)
    assert frame.group.tolist() == ["aloha"] * 3 + ["droid"] * 2
    assert frame.control_hz.tolist() == [50.0] * 3 + [15.0] * 2


def test_run_prints_and_writes_robot_metrics(tmp_path):
    import json

    import pandas as pd

    from tests.conftest import ROOT, run_cli

    result = run_cli(
        "run",
        str(ROOT / "scenarios/droid-fleet.yaml"),
        "--set",
        "duration_s=30",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "robots (48)" in result.stdout and "robot round trip" in result.stdout
    frame = pd.read_parquet(tmp_path / "robots.parquet")
    assert len(frame) == 48 and {"stall_fraction", "effective_control_hz", "stale_actions"} <= set(
        frame.columns
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["robots"]["count"] == 48
    assert summary["robots"]["stall_fraction"] == pytest.approx(frame.stall_fraction.mean())


def test_stall_episodes_by_hand():
    """One sync robot, 20 ms answers, 10 actions at 50 Hz: it freezes for exactly 20 ms
    before every chunk (the first from the start), so a cycle is 220 ms: in 10 s, 46
    freezes (the last from 9.90 to 9.92 s), each exactly 20 ms."""
    from sim.config import load
    from sim.engine.pipeline import simulate
    from sim.metrics.robots import robots_summary

    loaded = load(
        {
            "duration_s": 10,
            "profile": {"batch_size": [1], "latency_ms": [20]},
            "workload": {"kind": "robots", "count": 1, "control_hz": 50, "chunk": 10},
            "policy": {"kind": "dynamic", "max_batch": 1},
        }
    )
    block = robots_summary(simulate(loaded))
    cycles = 10 / 0.22  # 45.45: 45 whole cycles, then a freeze and part of a chunk
    assert block["stall_episodes"] == int(cycles) + 1
    assert block["stall_longest_ms"] == pytest.approx(20.0)
    stalled_s = block["stall_fraction"] * 10
    assert block["stall_episode_mean_ms"] == pytest.approx(stalled_s / 46 * 1000)
    assert stalled_s == pytest.approx(46 * 0.020)
    assert block["stale_actions_per_chunk"] == 0


def test_round_trips_file_agrees_with_robots_and_is_plotted(tmp_path):
    """round_trips.parquet holds every window round trip: per robot its median is the
    robots.parquet p50; `batchsim plot` draws their CDF beside the server's latency."""
    import pandas as pd

    from tests.conftest import ROOT, run_cli

    out = tmp_path / "r"
    scenario = str(ROOT / "scenarios" / "aloha-pi0-fleet.yaml")
    assert (
        run_cli("run", scenario, "--set", "duration_s=40", "--out", str(out), "-q").returncode == 0
    )
    trips = pd.read_parquet(out / "round_trips.parquet")
    robots = pd.read_parquet(out / "robots.parquet").set_index("robot")
    medians = trips.groupby("robot").round_trip_ms.median()
    assert np.allclose(medians.to_numpy(), robots.round_trip_p50_ms.loc[medians.index].to_numpy())
    # every window response sent in the window; at most one per robot was sent before it
    answered = robots.responses.sum()
    assert answered - 24 <= len(trips) <= answered
    done = run_cli("plot", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "plots" / "round_trip_cdf.png").stat().st_size > 10_000


def records_with(scenario: dict, reference: bool, log_stalls: bool):
    """One run's records, with the lean SyncRobot where it applies or (reference) every robot
    a RobotClient, which counts its figures on the way."""
    from sim.workload import build
    from sim.workload.robots import RobotClient

    with pytest.MonkeyPatch.context() as patch:
        if reference:
            patch.setattr(build, "client_class", lambda params: RobotClient)
        return simulate(load(scenario), log_stalls=log_stalls)


ROBOT_FIELDS = (
    "sent", "responses", "failures", "misses", "executed_actions", "delivered_actions",
    "stale_actions", "unused_actions", "replaced_actions", "queued_actions", "window_sent",
    "window_responses", "window_failures", "window_misses", "window_executed",
    "window_stall_s", "window_stall_episodes", "window_stall_longest_s", "round_trips_s",
    "round_trip_count", "stall_log", "stall_count",
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1000),
    count=st.integers(1, 10),
    hz=st.sampled_from([10.0, 30.0, 50.0]),
    chunk=st.integers(1, 40),
    execute_frac=st.floats(0.05, 1.0),
    start=st.sampled_from(["synchronized", "staggered", "random"]),
    latency_ms=st.floats(2.0, 300.0),
    network=st.sampled_from([None, {"uplink": 3, "downlink": 2}, {"downlink": 1, "jitter": 0.7}]),
    warmup_s=st.sampled_from([0.0, 0.37, 2.0]),
    slo_ms=st.none() | st.floats(5.0, 400.0),
    admission=st.sampled_from([{}, {"max_queue": 2}, {"timeout_ms": 20}]),
    limit=st.sampled_from(["duration", "requests"]),
    replicas=st.integers(1, 3),
    log_stalls=st.booleans(),
    jitter_ms=st.sampled_from([0.0, 0.0, 1.0, 15.0, 120.0]),
)
def test_sync_robots_figures_derived_after_the_run_are_those_counted_on_the_way(
    seed, count, hz, chunk, execute_frac, start, latency_ms, network, warmup_s,
    slo_ms, admission, limit, replicas, log_stalls, jitter_ms,
):  # fmt: skip
    """A SyncRobot keeps only its sends and answers; every robot figure it derives after the
    run is bit for bit what RobotClient counts on the way, failures, warm-up, network
    delays, request limits and freeze logs included. Send jitter as large as a control
    period or more makes sends overlap their chunks (and fast answers land before a chunk
    runs out): those robots become RobotClients mid-run, and still give the same."""
    workload = {"kind": "robots", "count": count, "control_hz": hz, "chunk": chunk,
                "execute": max(1, round(chunk * execute_frac)), "mode": "sync", "start": start,
                "jitter_ms": jitter_ms}  # fmt: skip
    if network:
        workload["network_ms"] = network
    scenario = {
        "seed": seed,
        "warmup_s": warmup_s,
        "profile": {"batch_size": [1, 8], "latency_ms": [[latency_ms, latency_ms * 1.3]] * 2},
        "workload": workload,
        "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 2},
        "admission": admission,
        "cluster": {"replicas": replicas},
    }
    if limit == "duration":
        scenario["duration_s"] = warmup_s + 4.0
    else:
        scenario["requests"] = 60
    if slo_ms is not None:
        scenario["slo"] = {"latency_ms": slo_ms}
    lean = records_with(scenario, False, log_stalls)
    counted = records_with(scenario, True, log_stalls)
    np.testing.assert_array_equal(lean.arrival_s, counted.arrival_s)
    np.testing.assert_array_equal(lean.deadline_s, counted.deadline_s)
    for name in ROBOT_FIELDS:
        a, b = getattr(lean.robots, name), getattr(counted.robots, name)
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("jitter_ms,latency_ms", [(30.0, 40.0), (2.0, 1.0)])
def test_a_sync_robot_whose_sends_overlap_its_chunk_becomes_a_counting_client(
    jitter_ms, latency_ms
):
    """Sends jittered by more than a control period (50 Hz: 20 ms) come before the chunk's
    last action; answers faster than the jitter land before the chunk runs out. Either way
    the robot replays its log into a RobotClient and counts on the way from then on, and
    the figures are still RobotClient's, bit for bit."""
    from sim.workload.sync_robot import SyncRobot

    scenario = {
        "seed": 4,
        "duration_s": 6.0,
        "warmup_s": 1.0,
        "profile": {"batch_size": [1, 8], "latency_ms": [[latency_ms, latency_ms * 1.2]] * 2},
        "workload": {"kind": "robots", "count": 6, "control_hz": 50, "chunk": 10,
                     "execute": 4, "mode": "sync", "start": "staggered", "jitter_ms": jitter_ms},
        "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 1},
        "slo": {"latency_ms": 30},
    }  # fmt: skip
    became = []
    become = SyncRobot._become_counting

    def counted(self, *args):
        became.append(self.id)
        return become(self, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SyncRobot, "_become_counting", counted)
        lean = records_with(scenario, False, True)
    counted_on_the_way = records_with(scenario, True, True)
    assert became, "no robot's sends overlapped: the case does not test the hand-over"
    for name in ROBOT_FIELDS:
        a, b = getattr(lean.robots, name), getattr(counted_on_the_way.robots, name)
        np.testing.assert_array_equal(a, b, err_msg=name)
