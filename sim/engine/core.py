"""The SimPy model: replicas pulling batches from queues under a policy.

One SimPy process per replica. A free replica asks its policy what to do; on
`Launch` it takes the first requests of its queue, draws the batch's service time
from the profile at the padded size and holds for it; on `Drop` it removes
requests the policy gave up on; on `Wait` it sleeps until the earliest moment the
answer could change (the policy's time, or the arrival that could bring the queue
to the policy's length) and asks again. Arrivals never cost an event: they are
known in advance and admitted in bulk before each decision.

Semantics (docs/semantics.md says the same): arrivals at time t are queued
before any decision at t; a completion at t frees its replica, which decides at
t; a batch of k requests padded to p costs the profile's time for p.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import simpy

from sim.engine.dispatch import ReplicaLoad, make_dispatcher
from sim.engine.queue import Feed, Queue, queue_factory
from sim.engine.records import COMPLETED, DROPPED, IN_SERVICE, RunRecords
from sim.policies.base import Drop, Launch, Policy
from sim.profile import Profile, ServiceSampler
from sim.workload.open import Arrivals
from sim.workload.robots import RobotClient

ProgressFn = Callable[[float], None]


class Engine:
    """One simulation run over open-loop arrivals.

    `policy` is one object shared by all replicas (shared queue), or one per replica
    (per-replica queues, where an arriving request joins the queue `dispatch` picks).
    Requests may carry deadlines (for EDF policies and SLO accounting) and class
    priorities (served first under FIFO policies).
    """

    def __init__(
        self,
        arrivals: Arrivals,
        policy: Policy | Sequence[Policy],
        service: ServiceSampler,
        replicas: int = 1,
        max_queue: int | None = None,
        timeout_s: float | None = None,
        horizon_s: float | None = None,
        warmup_s: float = 0.0,
        progress: ProgressFn | None = None,
        *,
        dispatch: str | None = None,
        profile: Profile | None = None,
        dispatch_rng: np.random.Generator | None = None,
        deadline_s: np.ndarray | None = None,
        priority: np.ndarray | None = None,
        class_id: np.ndarray | None = None,
        class_names: tuple[str, ...] | None = None,
        max_padded_size: int | None = None,
        clients: Sequence[RobotClient] | None = None,
        max_requests: int | None = None,
        shape: np.ndarray | None = None,
        shaped_service: dict[int, ServiceSampler] | None = None,
        shape_name: str = "shape",
        after_idle: Sequence[tuple[float, ServiceSampler]] | None = None,
        wake_latency_s: float = 0.0,
    ):
        self.env = simpy.Environment()
        self.clients = list(clients) if clients is not None else None
        self._max_requests = max_requests
        if self.clients is not None:  # closed loop: requests are created as the run goes on
            arrivals = Arrivals(np.zeros(0), np.zeros(0, dtype=np.int32))
        self.arrivals = arrivals
        self.service = service
        self.replicas = replicas
        self.horizon_s = horizon_s
        self.warmup_s = warmup_s
        self._progress = progress
        self._max_padded_size = max_padded_size
        n = len(arrivals)
        per_replica = dispatch is not None
        self.policies = list(policy) if isinstance(policy, Sequence) else [policy] * replicas
        if len(self.policies) != replicas:
            raise ValueError("give one policy, or one per replica")
        if not per_replica and len({id(p) for p in self.policies}) != 1:
            raise ValueError("a shared queue is served by one policy object")
        self.outcome = np.zeros(n, dtype=np.int8)
        self.request_batch = np.full(n, -1, dtype=np.int64)
        # shape-aware profiles: a batch costs the variant of its largest request shape
        self._shaped = shaped_service
        self.shape_name = shape_name
        self.request_shape = None
        if shaped_service is not None:
            default = max(shaped_service)
            self.request_shape = (
                np.full(n, default, dtype=np.int32) if shape is None else shape.astype(np.int32)
            )
            measured = sorted(shaped_service)
            self._shape_for = {
                v: next(m for m in measured if m >= v) for v in range(1, default + 1)
            }
        self._b_shape: list[int] = []
        self._wake_latency_s = wake_latency_s
        # (seconds idle, sampler), ascending: a batch draws from the largest level its
        # replica's idle time reached (the first batch, after no batch, from the largest)
        self._after_idle = sorted(after_idle, key=lambda level: level[0]) if after_idle else None
        if self._after_idle is not None and shaped_service is not None:
            raise ValueError("idle levels and shape-aware service do not combine")
        self.deadline_s = np.full(n, np.inf) if deadline_s is None else deadline_s
        self.class_id = np.zeros(n, dtype=np.int16) if class_id is None else class_id
        self.class_names = class_names
        times = arrivals.time_s.tolist()  # Python floats: fast scalar reads for policies
        deadlines = self.deadline_s.tolist()
        self._times, self._deadlines, self._sources = times, deadlines, arrivals.source.tolist()
        self._pending: dict[int, simpy.Event] = {}  # closed loop: request id -> its response
        self._arrived = self.env.event()  # closed loop: fires when a request arrives
        make_queue = queue_factory(
            self.policies[0].order,
            times,
            deadlines,
            priority,
            growing=self.clients is not None,
            prefilled=not per_replica,
        )
        self.queues: list[Queue] = [make_queue() for _ in range(replicas if per_replica else 1)]
        self.load = ReplicaLoad(replicas)  # what dispatchers know of each replica
        dispatcher = None
        if per_replica:
            if profile is None:
                raise ValueError("per-replica dispatch needs the profile")
            dispatcher = make_dispatcher(
                dispatch,
                self.queues,
                profile,
                max(p.max_batch for p in self.policies),
                self.load,
                dispatch_rng or np.random.default_rng(0),
            )
        # predicted (median) batch times, for dispatchers that weigh outstanding work
        self._median_s: list[float] | None = None
        if per_replica:
            self._median_s = [0.0] * (profile.min_size) + [
                profile.latency_ms(b) / 1000.0
                for b in range(profile.min_size, profile.max_size + 1)
            ]
        on_fail = self._notify_failed if self.clients is not None else None
        self.feed = Feed(
            times, self.queues, self.outcome, dispatcher, max_queue, timeout_s, on_fail
        )
        # per-batch columns grow as Python lists: one append per batch is cheap
        self._b_replica: list[int] = []
        self._b_start: list[float] = []
        self._b_end: list[float] = []
        self._b_size: list[int] = []
        self._b_padded: list[int] = []

    def _replica(self, replica: int):
        env, feed, policy = self.env, self.feed, self.policies[replica]
        queue = self.queues[replica if len(self.queues) > 1 else 0]
        learns = hasattr(policy, "on_batch_done")
        closed_loop = self.clients is not None
        b_replica, b_start, b_end = self._b_replica, self._b_start, self._b_end
        b_size, b_padded = self._b_size, self._b_padded
        max_padded = self._max_padded_size
        load = self.load
        after_idle = self._after_idle
        wake_late_s = self._wake_latency_s
        last_end = -math.inf
        while True:
            now = env.now
            feed.advance(now)
            decision = policy.decide(now, queue)
            kind = type(decision)
            if kind is Launch:
                count, padded = decision.count, decision.padded_size
                if not 1 <= count <= len(queue) or padded < count:
                    raise RuntimeError(f"{policy!r} returned {decision} with {len(queue)} queued")
                if max_padded is not None and padded > max_padded:
                    raise RuntimeError(f"{policy!r} launched {padded}, above the memory limit")
                batch_id = len(b_start)
                ids = queue.take(count)
                self.request_batch[ids] = batch_id
                if after_idle is not None:
                    idle_s = now - last_end
                    sampler = after_idle[0][1]
                    for level_s, level_sampler in after_idle:
                        if idle_s >= level_s:
                            sampler = level_sampler
                    service_s = sampler(padded)
                elif self._shaped is None:
                    service_s = self.service(padded)
                else:
                    variant = self._shape_for[int(self.request_shape[ids].max())]
                    service_s = self._shaped[variant](padded)
                    self._b_shape.append(variant)
                b_replica.append(replica)
                b_start.append(now)
                b_end.append(now + service_s)
                b_size.append(count)
                b_padded.append(padded)
                if self._median_s is not None:
                    load.busy_until_s[replica] = now + self._median_s[padded]
                load.running[replica] = count
                yield env.timeout(service_s)
                last_end = env.now
                load.running[replica] = 0
                if learns:
                    policy.on_batch_done(env.now, count, padded, service_s)
                if closed_loop:
                    for request in ids.tolist():
                        self._pending.pop(request).succeed(True)
                continue
            if kind is Drop:
                if not 1 <= decision.count <= len(queue):
                    raise RuntimeError(f"{policy!r} returned {decision} with {len(queue)} queued")
                gone = queue.take(decision.count)
                self.outcome[gone] = DROPPED
                if closed_loop:
                    self._notify_failed(gone)
                continue
            wake = decision.until_s
            if closed_loop:
                # arrivals are not known in advance: also wake at the next one
                events = [self._arrived]
                if wake is not None:
                    events.append(env.timeout(max(wake - now, 0.0)))
                yield env.any_of(events)
                if wake_late_s and env.now > now:  # it slept: it wakes late
                    yield env.timeout(wake_late_s)
                continue
            if decision.until_queue_len is not None:
                reach = feed.time_queue_reaches(queue, decision.until_queue_len)
                if reach is not None and (wake is None or reach < wake):
                    wake = reach
            if wake is None:
                # open loop: no arrival can come and no timer is set, so nothing will change
                return
            delay = wake - now
            # a server that sleeps wakes late; one whose moment has come does not sleep
            yield env.timeout(delay + wake_late_s if delay > 0 else 0.0)

    # ---- closed loop ----------------------------------------------------------------------
    def _robot(self, client: RobotClient):
        """Drive one robot client with the simulated clock: send, wait for the answer, deliver."""
        env = self.env
        while True:
            send_s = client.next_send_s
            if send_s is None or (self.horizon_s is not None and send_s >= self.horizon_s):
                return
            if self._max_requests is not None and len(self._times) >= self._max_requests:
                return
            yield env.timeout(max(send_s - env.now, 0.0))
            uplink_s, downlink_s, deadline_s = client.send(env.now)
            if uplink_s > 0:
                yield env.timeout(uplink_s)
            answered = env.event()
            self._submit(client.id, deadline_s - client.p.downlink_s, answered, client.p.shape)
            ok = yield answered
            if downlink_s > 0:
                yield env.timeout(downlink_s)
            client.deliver(env.now, ok)

    def _submit(
        self, source: int, deadline_s: float, answered: simpy.Event, shape: int | None = None
    ) -> None:
        """A request reaches the server now: record it, admit it, wake idle replicas."""
        request = len(self._times)
        if request == self.outcome.size:
            self._grow()
        if self.request_shape is not None:
            self.request_shape[request] = shape if shape is not None else max(self._shaped)
        self._times.append(self.env.now)
        self._deadlines.append(deadline_s)
        self._sources.append(source)
        self.deadline_s[request] = deadline_s
        self._pending[request] = answered
        self.feed.advance(self.env.now)
        if self.feed.timeout_s is not None:
            self.env.process(self._expire_at(self.env.now + self.feed.timeout_s))
        arrived, self._arrived = self._arrived, self.env.event()
        arrived.succeed()

    def _expire_at(self, t_s: float):
        # a request that waits longer than timeout_ms is dropped then, its robot told at once
        yield self.env.timeout(max(math.nextafter(t_s, math.inf) - self.env.now, 0.0))
        self.feed.advance(self.env.now)

    def _notify_failed(self, requests: np.ndarray) -> None:
        for request in requests.tolist():
            self._pending.pop(request).succeed(False)

    def _grow(self) -> None:
        extra = max(self.outcome.size, 1024)
        self.outcome = np.concatenate([self.outcome, np.zeros(extra, dtype=np.int8)])
        self.request_batch = np.concatenate(
            [self.request_batch, np.full(extra, -1, dtype=np.int64)]
        )
        self.deadline_s = np.concatenate([self.deadline_s, np.full(extra, np.inf)])
        self.class_id = np.concatenate([self.class_id, np.zeros(extra, dtype=np.int16)])
        if self.request_shape is not None:
            self.request_shape = np.concatenate(
                [self.request_shape, np.zeros(extra, dtype=np.int32)]
            )
        self.feed.outcome = self.outcome

    def _monitor(self, horizon_s: float, ticks: int = 100):
        step = horizon_s / ticks
        for i in range(1, ticks + 1):
            yield self.env.timeout(step)
            self._progress(i / ticks)

    def run(self) -> RunRecords:
        """Run to the horizon (or until nothing can happen) and return the records."""
        for r in range(self.replicas):
            self.env.process(self._replica(r))
        for client in self.clients or []:
            self.env.process(self._robot(client))
        if self._progress is not None:
            span = self.horizon_s if self.horizon_s is not None else self.feed.last_arrival_s
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
        if self.feed.last_arrival_s is not None:
            end_s = max(end_s, self.feed.last_arrival_s)
        self.feed.advance(end_s)
        if self.feed.timeout_s is not None:
            waiting = [q.arrival_s(i) for q in self.queues for i in range(len(q))]
            if waiting:
                newest_s = max(waiting) + self.feed.timeout_s
                end_s = max(end_s, math.nextafter(newest_s, math.inf))
        return end_s

    def _records(self, end_s: float) -> RunRecords:
        # every arrival up to the end is admitted or rejected, and expiries applied
        self.feed.advance(end_s)
        if self.clients is not None:
            n = len(self._times)
            self.arrivals = Arrivals(
                np.asarray(self._times), np.asarray(self._sources, dtype=np.int32)
            )
            self.outcome, self.request_batch = self.outcome[:n], self.request_batch[:n]
            self.deadline_s, self.class_id = self.deadline_s[:n], self.class_id[:n]
            if self.request_shape is not None:
                self.request_shape = self.request_shape[:n]
            for client in self.clients:
                client.finish(end_s)
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
            deadline_s=self.deadline_s,
            class_id=self.class_id,
            class_names=self.class_names,
            robots=self.clients,
            request_shape=self.request_shape,
            batch_shape=None if self._shaped is None else np.asarray(self._b_shape, dtype=np.int32),
            shape_name=self.shape_name,
        )
