"""The live runner: the simulator's own policy objects against a real clock and a real model.

The scenario's open-loop arrivals (same seed, so the same arrival times as the
simulation) are replayed in real time; a robot fleet's clients (the simulator's own
state machines) run their control loops on the real clock. One loop plays the server: it admits what has
arrived (with the engine's own queue and admission code), asks the policy, and on
`Launch` builds the batch's inputs and runs the model, synchronously: the replica is
this thread. Records come out in the simulator's columns, so the two runs compare
field by field. What the real system adds around the model's forward (building the
inputs, Python scheduling) is measured per batch as `overhead_ms`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.engine.queue import Feed, queue_factory
from sim.engine.records import COMPLETED, DROPPED, FAILED, IN_SERVICE, RunRecords
from sim.errors import InputError
from sim.policies.base import Drop, Launch
from sim.scenario import LoadedScenario


@dataclass
class LiveResult:
    records: RunRecords
    forward_ms: np.ndarray  # per batch: the model call alone
    overhead_ms: np.ndarray  # per batch: the rest of the batch's time (inputs, bookkeeping)
    wake_late_ms: np.ndarray  # per sleep: how much later than asked the server woke
    failures: list[str] = field(default_factory=list)  # one line per failed batch


class _Server:
    """One replica on the real clock: runs launched batches and keeps the batch columns."""

    def __init__(self, policy, model, make_inputs, clock, t0: float):
        self.policy, self.model, self.make_inputs, self.clock, self.t0 = (
            policy,
            model,
            make_inputs,
            clock,
            t0,
        )
        self.learns = hasattr(policy, "on_batch_done")
        self.start: list[float] = []
        self.end: list[float] = []
        self.size: list[int] = []
        self.padded: list[int] = []
        self.forward_ms: list[float] = []
        self.overhead_ms: list[float] = []
        self.failures: list[str] = []
        self.wake_late_ms: list[float] = []

    def sleep_until(self, wake: float, sleep) -> None:
        """Sleep until `wake` (s since t0), if it is still ahead, and record how late it woke."""
        delay = wake - (self.clock() - self.t0)
        if delay > 0:
            sleep(delay)
            self.wake_late_ms.append((self.clock() - self.t0 - wake) * 1000)

    def launch(
        self, now: float, decision: Launch, queue, request_batch: np.ndarray, outcome: np.ndarray
    ):
        """Take the batch, build its inputs and run the model; (ids, end time, ok)."""
        ids = queue.take(decision.count)
        batch_id = len(self.start)
        request_batch[ids] = batch_id
        inputs = self.make_inputs(decision.padded_size)
        f0 = self.clock()
        try:
            self.model(**inputs)
            ok = True
        except Exception as exc:  # a failing batch must not stop the server
            ok = False
            self.failures.append(
                f"batch {batch_id} ({decision.count} requests): {type(exc).__name__}: {exc}"
            )
        f1 = self.clock()
        end = f1 - self.t0
        self.start.append(now)
        self.end.append(end)
        self.size.append(decision.count)
        self.padded.append(decision.padded_size)
        self.forward_ms.append((f1 - f0) * 1000)
        self.overhead_ms.append((end - now) * 1000 - self.forward_ms[-1])
        if not ok:
            outcome[ids] = FAILED
        if self.learns:
            self.policy.on_batch_done(end, decision.count, decision.padded_size, end - now)
        return ids, end, ok

    def result(
        self,
        arrival_s,
        source,
        request_batch,
        outcome,
        end_s: float,
        warmup_s: float,
        deadline_s,
        robots=None,
    ) -> LiveResult:
        """Final outcomes (completed or still in service at the end) and the records."""
        batch_end = np.asarray(self.end, dtype=float)
        served = request_batch >= 0
        done = np.zeros(request_batch.size, dtype=bool)
        done[served] = batch_end[request_batch[served]] <= end_s
        ok = outcome != FAILED
        outcome[served & done & ok] = COMPLETED
        outcome[served & ~done & ok] = IN_SERVICE
        records = RunRecords(
            arrival_s=arrival_s,
            source=source,
            request_batch=request_batch,
            outcome=outcome,
            batch_replica=np.zeros(len(self.start), dtype=np.int32),
            batch_start_s=np.asarray(self.start, dtype=float),
            batch_end_s=batch_end,
            batch_size=np.asarray(self.size, dtype=np.int32),
            batch_padded=np.asarray(self.padded, dtype=np.int32),
            replicas=1,
            warmup_s=warmup_s,
            end_s=end_s,
            deadline_s=deadline_s,
            robots=robots,
        )
        return LiveResult(
            records,
            np.asarray(self.forward_ms),
            np.asarray(self.overhead_ms),
            np.asarray(self.wake_late_ms),
            self.failures,
        )


def run_live(
    loaded: LoadedScenario,
    model: Callable[..., Any],
    make_inputs: Callable[[int], dict[str, Any]],
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> LiveResult:
    """Replay the scenario's open-loop traffic in real time against `model`.

    `make_inputs(padded_size)` builds one batch's keyword arguments; `model(**inputs)` runs it.
    A batch whose model call raises is recorded as failed (its requests' outcome) and the
    server goes on.
    """
    s = loaded.scenario
    if s.cluster.replicas != 1 or s.cluster.queue != "shared":
        raise InputError("the live runner serves one replica with a shared queue", field="cluster")
    if s.workload.kind == "robots":
        return _run_live_robots(loaded, model, make_inputs, clock, sleep)
    rngs = loaded.rngs()
    arrivals = loaded.arrivals(rngs["arrivals"])
    attributes = loaded.request_attributes(arrivals, rngs["classes"])
    n = len(arrivals)
    times = arrivals.time_s.tolist()
    deadlines = attributes["deadline_s"].tolist()
    outcome = np.zeros(n, dtype=np.int8)
    request_batch = np.full(n, -1, dtype=np.int64)
    policy = loaded.policy  # the simulator's own object
    # the engine's own queue order: EDF, class priority or arrival, as the policy asks
    queue = queue_factory(
        policy.order, times, deadlines, attributes.get("priority"), growing=False, prefilled=True
    )()
    timeout_s = None if s.admission.timeout_ms is None else s.admission.timeout_ms / 1000.0
    feed = Feed(times, [queue], outcome, None, s.admission.max_queue, timeout_s)
    horizon = s.duration_s
    t0 = clock()
    server = _Server(policy, model, make_inputs, clock, t0)
    while True:
        now = clock() - t0
        if horizon is not None and now >= horizon:
            break
        feed.advance(now)
        decision = policy.decide(now, queue)
        if type(decision) is Launch:
            server.launch(now, decision, queue, request_batch, outcome)
            continue
        if type(decision) is Drop:
            outcome[queue.take(decision.count)] = DROPPED
            continue
        wake = decision.until_s
        upcoming = times[feed.next_arrival] if feed.next_arrival < n else None
        if upcoming is not None and (wake is None or upcoming < wake):
            wake = upcoming  # anything that arrives may change the answer
        if wake is None:
            break  # nothing will arrive and nothing is timed: done
        if horizon is not None:
            wake = min(wake, horizon)
        server.sleep_until(wake, sleep)
    end_s = horizon if horizon is not None else clock() - t0
    feed.advance(end_s)
    return server.result(
        arrivals.time_s, arrivals.source, request_batch, outcome, float(end_s), s.warmup_s,
        attributes["deadline_s"],
    )  # fmt: skip


def _run_live_robots(
    loaded: LoadedScenario,
    model: Callable[..., Any],
    make_inputs: Callable[[int], dict[str, Any]],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> LiveResult:
    """Closed loop: the scenario's robot clients (the simulator's own state machines) send,
    wait and act on a real clock; responses reach them when their batch really finishes.

    Robot events (sends, arrivals at the server, deliveries) wait in a time-ordered heap and
    are handled at their own timestamps, in order, between model calls.
    """
    import heapq
    import math

    s = loaded.scenario
    if s.duration_s is None:
        raise InputError("live robot fleets run for duration_s", field="requests")
    rngs = loaded.rngs()
    clients = s.workload.clients(rngs["robots"], s.warmup_s, s.slo.latency_ms)
    # at most one request per robot per control period (retries wait a period)
    capacity = sum(math.ceil(s.duration_s * c.p.control_hz) + 2 for c in clients)
    times: list[float] = []
    deadlines: list[float] = []
    sources: list[int] = []
    outcome = np.zeros(capacity, dtype=np.int8)
    request_batch = np.full(capacity, -1, dtype=np.int64)
    downlink: dict[int, float] = {}  # request -> its drawn downlink delay
    in_flight: dict[
        int, tuple[float, float]
    ] = {}  # robot -> (downlink, server deadline) of its request
    events: list[tuple[float, int, str, int, bool]] = []  # (time, seq, kind, robot or request, ok)
    seq = 0

    def push(t: float, kind: str, who: int, ok: bool = True) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, who, ok))
        seq += 1

    def failed(requests: np.ndarray) -> None:
        for r in requests.tolist():
            push(max(times[r], 0.0) + downlink[r], "deliver", r, False)

    policy = loaded.policy
    queue = queue_factory(policy.order, times, deadlines, None, growing=True, prefilled=False)()
    timeout_s = None if s.admission.timeout_ms is None else s.admission.timeout_ms / 1000.0
    feed = Feed(times, [queue], outcome, None, s.admission.max_queue, timeout_s, on_fail=failed)
    horizon = s.duration_s
    for c in clients:
        if c.next_send_s is not None:
            push(c.next_send_s, "send", c.id)
    t0 = clock()
    server = _Server(policy, model, make_inputs, clock, t0)
    while True:
        now = clock() - t0
        if now >= horizon:
            break
        while events and events[0][0] <= now:
            t, _, kind, who, ok = heapq.heappop(events)
            if kind == "send":
                if t >= horizon:
                    continue
                client = clients[who]
                up, down, deadline = client.send(t)
                push(t + up, "arrive", who, ok=True)
                in_flight[who] = (down, deadline - client.p.downlink_s)
            elif kind == "arrive":
                down, server_deadline = in_flight.pop(who)
                request = len(times)
                times.append(t)
                deadlines.append(server_deadline)
                sources.append(who)
                downlink[request] = down
                feed.advance(t)
            else:  # deliver
                client = clients[sources[who]]
                client.deliver(t, ok)
                if client.next_send_s is not None:
                    push(client.next_send_s, "send", client.id)
        feed.advance(now)
        decision = policy.decide(now, queue)
        if type(decision) is Launch:
            ids, end, ok = server.launch(now, decision, queue, request_batch, outcome)
            for r in ids.tolist():
                push(end + downlink[r], "deliver", r, ok)
            continue
        if type(decision) is Drop:
            gone = queue.take(decision.count)
            outcome[gone] = DROPPED
            for r in gone.tolist():
                push(now + downlink[r], "deliver", r, False)
            continue
        wake = decision.until_s
        if events and (wake is None or events[0][0] < wake):
            wake = events[0][0]  # the next send, arrival or delivery may change the answer
        wake = horizon if wake is None else min(wake, horizon)
        server.sleep_until(wake, sleep)
    end_s = float(horizon)
    n = len(times)
    for client in clients:
        client.finish(end_s)
    return server.result(
        np.asarray(times, dtype=float), np.asarray(sources, dtype=np.int32), request_batch[:n],
        outcome[:n], end_s, s.warmup_s, np.asarray(deadlines, dtype=float), clients,
    )  # fmt: skip
