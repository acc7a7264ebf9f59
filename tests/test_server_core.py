"""The server core: rules that moved figures when Engine II rebuilt the loop (each a bug of
the three old loops, with the case that shows it), and the core's own contracts."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import load
from sim.core.queue import expires_at_s
from sim.core.records import COMPLETED, DROPPED
from sim.engine.pipeline import simulate


def in_system_just_before(records, i: int) -> list[int]:
    """Requests waiting for or running on each replica just before request i arrives
    (a completion at the same instant counts as before; a batch starting at that instant
    has not started yet, since arrivals are queued before decisions)."""
    a = records.arrival_s[i]
    start, replica = records.request_start_s, records.request_replica
    counts = []
    for r in range(records.replicas):
        mine = records.batch_replica == r
        running = mine & (records.batch_start_s < a) & (records.batch_end_s > a)
        earlier = np.arange(records.arrival_s.size) < i
        queued = earlier & (replica == r) & (start >= a)
        counts.append(int(records.batch_size[running].sum() + queued.sum()))
    return counts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    rate=st.floats(100.0, 600.0),
    replicas=st.integers(2, 4),
    slow=st.floats(20.0, 200.0),
)
def test_inv11_shortest_queue_dispatches_from_the_state_just_before_each_arrival(
    seed, rate, replicas, slow
):
    """Fixed in Engine II: requests that arrived while every replica was busy used to be
    dispatched when a replica next finished, seeing that replica (and no other) as idle.
    Each must join a replica with the fewest requests at its own arrival."""
    loaded = load(
        {
            "seed": seed,
            "requests": 400,
            "profile": {"batch_size": [1, 4], "latency_ms": [[5.0, 5.0, slow], [9.0, 9.0, slow]]},
            "workload": {"kind": "poisson", "rate_rps": rate},
            "cluster": {"replicas": replicas, "queue": "per-replica", "dispatch": "shortest-queue"},
            "policy": {"kind": "dynamic", "max_batch": 4, "max_wait_ms": 0},
        }
    )
    records = simulate(loaded)
    assert np.all(records.outcome == COMPLETED)
    for i in range(records.arrival_s.size):
        counts = in_system_just_before(records, i)
        assert counts[records.request_replica[i]] == min(counts), (i, counts)


def fleet(**extra):
    data = {
        "seed": 2,
        "duration_s": 2.0,
        "profile": {"batch_size": [1, 2], "latency_ms": [10.0, 12.0]},
        "workload": {
            "kind": "robots", "count": 1, "control_hz": 50, "chunk": 10, "start": "synchronized",
            "network_ms": {"uplink": 80.0003, "downlink": 5.0},
        },
        "policy": {"kind": "static", "batch_size": 2},  # one robot never fills a batch
        "admission": {"timeout_ms": 25},
    }  # fmt: skip
    return simulate(load({**data, **extra}))


def test_a_robot_is_told_of_an_expiry_at_the_instant_its_wait_exceeds_the_timeout():
    """Fixed in Engine II: the expiry timer fired at nextafter(arrival + timeout), where the
    check `arrival < now - timeout` could still be false by rounding (it is for an arrival
    at 0.0800003 s with a 25 ms timeout), so the robot was told only at the next decision,
    here never. The expiry instant is the first at which that check holds, and the robot
    hears of it a downlink later and sends again one control period after that."""
    records = fleet()
    a = records.arrival_s
    assert a[0] == 0.0800003
    assert records.outcome[0] == DROPPED
    expiry_s = expires_at_s(a[0], 0.025)
    assert expiry_s - 0.025 > a[0] and not math.nextafter(expiry_s, 0) - 0.025 > a[0]
    assert expiry_s > math.nextafter(a[0] + 0.025, math.inf)  # where the old timer fired
    told_s = expiry_s + 0.005
    assert a[1] == (told_s + 0.02) + 0.0800003
    assert np.all(records.outcome == DROPPED) and len(a) == 15
    robots = records.robots
    assert robots.failures[0] == 15  # the last told at 1.93 s, before the end
    assert robots.sent[0] == 16  # the 16th is on its way at the end (it would arrive at 2.03 s)


def test_a_fleet_with_requests_n_sends_exactly_n():
    """Fixed in Engine II: robots checked the count only when an answer came back, so the
    requests in flight then overshot N (3021 for 3000 on the ALOHA fleet). `requests: N`
    is the first N requests to reach the server."""
    sizes = list(range(1, 17))
    records = simulate(
        load(
            {
                "seed": 4,
                "requests": 1000,
                "profile": {"batch_size": sizes, "latency_ms": [10 + 2 * b for b in sizes]},
                "workload": {"kind": "robots", "count": 24, "control_hz": 50, "chunk": 50,
                             "execute": 25, "start": "random"},
                "policy": {"kind": "dynamic", "max_batch": 16, "max_wait_ms": 5},
            }
        )
    )  # fmt: skip
    assert records.arrival_s.size == 1000
    assert np.all(records.outcome == COMPLETED)
    assert records.robots.sent.sum() == 1000
    # the run ends with the last answer delivered, none still on its way
    assert records.end_s >= records.batch_end_s.max()


def test_a_sleeping_replica_wakes_late_at_its_own_moment_not_at_every_arrival():
    """Fixed in Engine II: in closed loop the replica woke at every arrival, each time
    wake_latency_ms late, so an arrival that could not change its answer still moved its
    launch (here to 8 + 5 = 13 ms). A replica is asked L after its own moment: the timer
    of the oldest request (10 ms), so at 15 ms, as in open loop and the live runner."""
    records = simulate(
        load(
            {
                "seed": 1,
                "duration_s": 0.2,
                "profile": {"batch_size": [1, 8], "latency_ms": [20.0, 20.0]},
                "workload": {
                    "kind": "robots",
                    "groups": [
                        {"count": 1, "control_hz": 10, "chunk": 10, "start": "synchronized"},
                        {"count": 1, "control_hz": 10, "chunk": 10, "start": "synchronized",
                         "network_ms": {"uplink": 8.0}},
                    ],
                },
                "cluster": {"wake_latency_ms": 5.0},
                "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 10},
            }
        )
    )  # fmt: skip
    assert records.arrival_s[:2].tolist() == [0.0, 0.008]
    assert records.batch_size[0] == 2
    assert abs(records.batch_start_s[0] - 0.015) < 1e-12


def test_a_request_sent_at_the_instant_of_an_answer_is_queued_before_the_freed_replica_decides():
    """Fixed in Engine II: arrivals at t are queued before any decision at t, also a robot's
    request sent the instant its answer arrives (no network delay). The replica freed at t
    used to decide first, find the queue empty and leave the request to another."""
    records = simulate(
        load(
            {
                "seed": 1,
                "duration_s": 2.0,
                "profile": {"batch_size": [1], "latency_ms": [30.0]},
                "workload": {"kind": "robots", "count": 1, "control_hz": 30, "chunk": 50,
                             "mode": "async", "threshold": 1.0, "start": "synchronized"},
                "cluster": {"replicas": 2},
                "policy": {"kind": "dynamic", "max_batch": 1, "max_wait_ms": 0},
            }
        )
    )  # fmt: skip
    assert records.batch_size.size > 50
    assert set(records.batch_replica.tolist()) == {0}  # the freed replica takes it, at once
    np.testing.assert_allclose(records.batch_start_s[1:], records.batch_end_s[:-1], atol=1e-12)


def _argmin_in_turn_by_loop(values, start):
    """The rule spelled out: walk from `start` cyclically, keep the first strictly smaller."""
    n = len(values)
    best = start % n
    for step in range(1, n):
        i = (start + step) % n
        if values[i] < values[best]:
            best = i
    return best


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(0, 4), min_size=1, max_size=40)
    | st.lists(st.floats(0, 1, allow_nan=False).map(lambda x: round(x, 1)), min_size=1),
    start=st.integers(0, 100),
)
def test_dispatch_ties_take_turns_from_the_replica_after_the_last_chosen(values, start):
    """argmin_in_turn (shortest-queue, least-work) finds the minimum in C; it must pick what
    the cyclic walk picks: the first smallest at or after `start`."""
    from sim.core.dispatch import argmin_in_turn

    assert argmin_in_turn(values, start) == _argmin_in_turn_by_loop(values, start)
