"""The SimPy model: replicas pulling batches from a shared queue under a policy.

One SimPy process per replica. A free replica asks the policy what to do; on
`Launch` it takes the oldest requests, draws the batch's service time from the
profile at the padded size and holds for it; on `Wait` it sleeps until the
earliest moment the answer could change (the policy's time, or the arrival that
brings the queue to the policy's length) and asks again. Arrivals never cost an
event: they are known in advance and admitted in bulk before each decision.

Semantics (docs/semantics.md says the same): arrivals at time t are queued
before any decision at t (`advance` admits arrival times <= t); a completion at
t frees its replica, which decides at t; a batch of k requests padded to p
costs the profile's time for p.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import simpy

from sim.engine.queue import ArrivalQueue
from sim.engine.records import COMPLETED, IN_SERVICE, RunRecords
from sim.policies.base import Launch, Policy
from sim.profile import ServiceSampler
from sim.workload.open import Arrivals

ProgressFn = Callable[[float], None]


class Engine:
    """One simulation run over open-loop arrivals."""

    def __init__(
        self,
        arrivals: Arrivals,
        policy: Policy,
        service: ServiceSampler,
        replicas: int = 1,
        max_queue: int | None = None,
        timeout_s: float | None = None,
        horizon_s: float | None = None,
        warmup_s: float = 0.0,
        progress: ProgressFn | None = None,
    ):
        self.env = simpy.Environment()
        self.arrivals = arrivals
        self.policy = policy
        self.service = service
        self.replicas = replicas
        self.horizon_s = horizon_s
        self.warmup_s = warmup_s
        self._progress = progress
        n = len(arrivals)
        self.outcome = np.zeros(n, dtype=np.int8)
        self.request_batch = np.full(n, -1, dtype=np.int64)
        self.queue = ArrivalQueue(arrivals.time_s, self.outcome, max_queue, timeout_s)
        # per-batch columns grow as Python lists: one append per batch is cheap
        self._b_replica: list[int] = []
        self._b_start: list[float] = []
        self._b_end: list[float] = []
        self._b_size: list[int] = []
        self._b_padded: list[int] = []

    def _replica(self, replica: int):
        env, queue, policy = self.env, self.queue, self.policy
        request_batch = self.request_batch
        b_replica, b_start, b_end = self._b_replica, self._b_start, self._b_end
        b_size, b_padded = self._b_size, self._b_padded
        while True:
            now = env.now
            queue.advance(now)
            decision = policy.decide(now, queue)
            if type(decision) is Launch:
                count, padded = decision.count, decision.padded_size
                if not 1 <= count <= len(queue) or padded < count:
                    raise RuntimeError(f"{policy!r} returned {decision} with {len(queue)} queued")
                batch_id = len(b_start)
                request_batch[queue.take(count)] = batch_id
                service_s = self.service(padded)
                b_replica.append(replica)
                b_start.append(now)
                b_end.append(now + service_s)
                b_size.append(count)
                b_padded.append(padded)
                yield env.timeout(service_s)
                continue
            wake = decision.until_s
            if decision.until_queue_len is not None:
                reach = queue.time_queue_reaches(decision.until_queue_len)
                if reach is not None and (wake is None or reach < wake):
                    wake = reach
            if wake is None:
                # open loop: no arrival can come and no timer is set, so nothing will change
                return
            yield env.timeout(max(wake - now, 0.0))

    def _monitor(self, horizon_s: float, ticks: int = 100):
        step = horizon_s / ticks
        for i in range(1, ticks + 1):
            yield self.env.timeout(step)
            self._progress(i / ticks)

    def run(self) -> RunRecords:
        """Run to the horizon (or until nothing can happen) and return the records."""
        for r in range(self.replicas):
            self.env.process(self._replica(r))
        if self._progress is not None:
            span = self.horizon_s
            if span is None and len(self.arrivals):
                span = float(self.arrivals.time_s[-1])
            if span:
                self.env.process(self._monitor(span))
        self.env.run(until=self.horizon_s)
        end_s = self.horizon_s if self.horizon_s is not None else self._quiet_end_s()
        if self._progress is not None:
            self._progress(1.0)
        return self._records(end_s)

    def _quiet_end_s(self) -> float:
        """End of a run without horizon: nothing is scheduled, so no replica will launch
        again; what is left still arrives (and is queued or rejected) and, with an
        admission timeout, expires."""
        end_s = self.env.now
        if len(self.arrivals):
            end_s = max(end_s, float(self.arrivals.time_s[-1]))
        self.queue.advance(end_s)
        if self.queue.timeout_s is not None and len(self.queue):
            newest_s = self.queue.arrival_s(len(self.queue) - 1)
            end_s = max(end_s, math.nextafter(newest_s + self.queue.timeout_s, math.inf))
        return end_s

    def _records(self, end_s: float) -> RunRecords:
        # every arrival up to the end is admitted or rejected, and expiries applied
        self.queue.advance(end_s)
        batch_end = np.asarray(self._b_end, dtype=float)
        served = self.request_batch >= 0
        done = np.zeros(served.size, dtype=bool)
        done[served] = batch_end[self.request_batch[served]] <= end_s
        self.outcome[served & done] = COMPLETED
        self.outcome[served & ~done] = IN_SERVICE
        return RunRecords(
            arrival_s=self.arrivals.time_s,
            source=self.arrivals.source,
            request_batch=self.request_batch,
            outcome=self.outcome,
            batch_replica=np.asarray(self._b_replica, dtype=np.int32),
            batch_start_s=np.asarray(self._b_start, dtype=float),
            batch_end_s=batch_end,
            batch_size=np.asarray(self._b_size, dtype=np.int32),
            batch_padded=np.asarray(self._b_padded, dtype=np.int32),
            replicas=self.replicas,
            warmup_s=self.warmup_s,
            end_s=float(end_s),
            source_names=self.arrivals.source_names,
        )
