"""The live runner: the simulator's own policy objects against a real clock and a real model.

The scenario's open-loop arrivals (same seed, so the same arrival times as the
simulation) are replayed in real time. One loop plays the server: it admits what has
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

from sim.engine.queue import Feed, FifoQueue
from sim.engine.records import COMPLETED, DROPPED, FAILED, IN_SERVICE, RunRecords
from sim.errors import InputError
from sim.policies.base import Drop, Launch
from sim.scenario import LoadedScenario


@dataclass
class LiveResult:
    records: RunRecords
    forward_ms: np.ndarray  # per batch: the model call alone
    overhead_ms: np.ndarray  # per batch: the rest of the batch's time (inputs, bookkeeping)
    failures: list[str] = field(default_factory=list)  # one line per failed batch


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
    if s.workload.kind == "robots":
        raise InputError(
            "the live runner replays open-loop workloads; robots are not supported yet",
            field="workload.kind",
        )
    if s.cluster.replicas != 1 or s.cluster.queue != "shared":
        raise InputError("the live runner serves one replica with a shared queue", field="cluster")
    rngs = loaded.rngs()
    arrivals = loaded.arrivals(rngs["arrivals"])
    attributes = loaded.request_attributes(arrivals, rngs["classes"])
    n = len(arrivals)
    times = arrivals.time_s.tolist()
    deadlines = attributes["deadline_s"].tolist()
    outcome = np.zeros(n, dtype=np.int8)
    request_batch = np.full(n, -1, dtype=np.int64)
    queue = FifoQueue(times, deadlines, prefilled=True)
    timeout_s = None if s.admission.timeout_ms is None else s.admission.timeout_ms / 1000.0
    feed = Feed(times, [queue], outcome, None, s.admission.max_queue, timeout_s)
    policy = loaded.policy  # the simulator's own object
    learns = hasattr(policy, "on_batch_done")
    horizon = s.duration_s
    b_start, b_end, b_size, b_padded, forward, overhead, failures = [], [], [], [], [], [], []
    t0 = clock()
    while True:
        now = clock() - t0
        if horizon is not None and now >= horizon:
            break
        feed.advance(now)
        decision = policy.decide(now, queue)
        if type(decision) is Launch:
            ids = queue.take(decision.count)
            batch_id = len(b_start)
            request_batch[ids] = batch_id
            inputs = make_inputs(decision.padded_size)
            f0 = clock()
            try:
                model(**inputs)
                ok = True
            except Exception as exc:  # a failing batch must not stop the server
                ok = False
                failures.append(
                    f"batch {batch_id} ({decision.count} requests): {type(exc).__name__}: {exc}"
                )
            f1 = clock()
            end = f1 - t0
            b_start.append(now)
            b_end.append(end)
            b_size.append(decision.count)
            b_padded.append(decision.padded_size)
            forward.append((f1 - f0) * 1000)
            overhead.append((end - now) * 1000 - forward[-1])
            if not ok:
                outcome[ids] = FAILED
            if learns:
                policy.on_batch_done(end, decision.count, decision.padded_size, end - now)
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
        delay = wake - (clock() - t0)
        if delay > 0:
            sleep(delay)
    end_s = horizon if horizon is not None else clock() - t0
    feed.advance(end_s)
    batch_end = np.asarray(b_end, dtype=float)
    served = request_batch >= 0
    done = np.zeros(n, dtype=bool)
    done[served] = batch_end[request_batch[served]] <= end_s
    ok_mask = outcome != FAILED
    outcome[served & done & ok_mask] = COMPLETED
    outcome[served & ~done & ok_mask] = IN_SERVICE
    records = RunRecords(
        arrival_s=arrivals.time_s,
        source=arrivals.source,
        request_batch=request_batch,
        outcome=outcome,
        batch_replica=np.zeros(len(b_start), dtype=np.int32),
        batch_start_s=np.asarray(b_start, dtype=float),
        batch_end_s=batch_end,
        batch_size=np.asarray(b_size, dtype=np.int32),
        batch_padded=np.asarray(b_padded, dtype=np.int32),
        replicas=1,
        warmup_s=s.warmup_s,
        end_s=float(end_s),
        deadline_s=attributes["deadline_s"],
    )
    return LiveResult(records, np.asarray(forward), np.asarray(overhead), failures)
