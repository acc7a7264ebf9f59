"""The server core: one clock-free model of a batching server, driven by any clock.

The core is told the time and what happened, and answers what to do. It is the only place
that admits requests and applies admission limits, asks the policy, drops requests, pads
batches, enforces the memory cap, notifies learning policies and builds the records.
The SimPy engine (sim/engine/engine.py) and the live runner (sim/live.py) drive it, open
loop and robot fleets alike; they keep only a clock, sleeping, and running a batch.

A driver's loop, for each replica:

    action = core.decide(replica, now)       # Start(...) or Sleep(until_s)
    Start: run the batch (simulated: draw its time; live: call the model), then
           core.end(batch, end_s, ok)        # when its end is known: answers its robots
           core.free(replica, end_s, service_s)   # at its end: the replica is free again
    Sleep: sleep until until_s (None: until something else happens) and decide again.

Semantics (docs/semantics.md): arrivals at time t are queued before any decision at t; a
completion at t frees its replica, which decides at t; a batch of k requests padded to p
costs the profile's time for p.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from sim.core.dispatch import ReplicaLoad, make_dispatcher
from sim.core.queue import Admission, expires_at_s, queue_factory
from sim.core.records import DROPPED, FAILED, RunRecords, finalize_outcomes
from sim.core.steps import Steps
from sim.core.traffic import ClosedLoopTraffic, OpenTraffic
from sim.errors import InputError
from sim.policies import registry
from sim.policies.base import Drop, Launch, Policy, Wait
from sim.profiles.profile import Profile

_NAN = math.nan
# the weight of the newest iteration in the moving mean of iteration times (step level)
_SMOOTHING = 0.25


# actions are plain values (not frozen: they are made once per decision, and never changed)
@dataclass(slots=True)
class Start:
    """Run batch `batch` on its replica: `count` requests padded to `padded` (shape `variant`).

    A request-level batch runs every stage, its last `steps` times (None: the model's K).
    A step-level iteration (`admitted` not None) runs the prefix of the `admitted` newly
    admitted requests (shape `admitted_variant`) and one step of the `count` in flight.
    """

    batch: int
    count: int
    padded: int
    variant: int | None = None
    steps: int | None = None
    admitted: int | None = None
    admitted_variant: int | None = None


@dataclass(slots=True)
class Sleep:
    """Nothing to run: decide again at `until_s`, or (None) when something else happens."""

    until_s: float | None


@dataclass(frozen=True)
class ServerSpec:
    """How the server is set up.

    `policies`: one per replica with per-replica queues (`dispatch` names the dispatcher),
    else one policy object shared by all replicas. `profile`: the measured sizes, which
    launches must lie within, and the median predictions of least-work dispatch.
    `memory_cap`: the largest padded size that fits in memory. `shapes`: the measured
    shapes, when a batch costs its largest request's shape. `source` names the scenario
    in error lines.
    """

    policies: tuple[Policy, ...]
    profile: Profile
    replicas: int = 1
    dispatch: str | None = None
    dispatch_rng: np.random.Generator | None = None
    max_queue: int | None = None
    timeout_s: float | None = None
    memory_cap: int | None = None
    shapes: tuple[int, ...] | None = None
    shape_name: str = "shape"
    source: str = "<scenario>"
    policy_kind: str | None = None  # in error lines (None: the policy's repr)
    # a built-in policy (the registry says so): its launches were checked at load; an
    # untrusted one (a plug-in, or a policy built by hand) is guarded at every call
    trusted: bool = False
    # whether the policy batches step by step (None: as its class declares, StepLevelPolicy)
    step_level: bool | None = None
    # denoising steps per request (sim/engine/steps.py): for step-level batching, and for
    # request-level policies that may lower them; None: every batch runs the model whole
    steps: Steps | None = None

    @classmethod
    def shared(cls, policy: Policy, profile: Profile, replicas: int = 1, **options) -> ServerSpec:
        """One shared queue served by `replicas` replicas under one policy object."""
        return cls((policy,) * replicas, profile, replicas, **options)


class _Always:
    """A column holding one value n times, without n objects."""

    def __init__(self, value: float, n: int):
        self._value, self._n = value, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> float:
        return self._value


class _Columns:
    """Per-request columns: Python lists where policies read scalars, arrays for the rest."""

    def __init__(self, traffic: OpenTraffic | ClosedLoopTraffic, spec: ServerSpec):
        if not isinstance(traffic, OpenTraffic):
            # arrivals as they come: float buffers (numpy reads them without a copy)
            self.times = array("d")
            self.deadlines = array("d")
            self.sources = None  # each request's robot: its client's id
            self.shapes: list[int] | None = [] if spec.shapes else None
            self.priority = self.class_id = self.class_names = self.source_names = None
            self.outcome = np.zeros(1024, dtype=np.int8)
            return
        arrivals = traffic.arrivals
        n = len(arrivals)
        self.arrival_s = arrivals.time_s
        self.times = arrivals.time_s.tolist()  # fast scalar reads for policies
        self.deadline_s = (
            traffic.deadline_s if traffic.deadline_s is not None else np.full(n, np.inf)
        )
        # read by EDF policies; without a deadline anywhere, one inf stands for all
        finite = bool(np.isfinite(self.deadline_s).any())
        self.deadlines = self.deadline_s.tolist() if finite else _Always(math.inf, n)
        self.sources = arrivals.source
        self.source_names = arrivals.source_names
        self.shapes = None
        if spec.shapes:
            shape = traffic.shape
            self.shapes = [max(spec.shapes)] * n if shape is None else shape.tolist()
        self.priority = None if traffic.priority is None else traffic.priority.tolist()
        self.class_id, self.class_names = traffic.class_id, traffic.class_names
        self.outcome = np.zeros(n, dtype=np.int8)


class ServerCore:
    """The batching server's state and rules, with no clock of its own (see the module doc)."""

    def __init__(self, traffic: OpenTraffic | ClosedLoopTraffic, spec: ServerSpec):
        self.spec = spec
        self.fleet = None if isinstance(traffic, OpenTraffic) else traffic
        self.closed = self.fleet is not None
        self.replicas = spec.replicas
        self._policies = list(spec.policies)
        self._per_replica = per_replica = spec.dispatch is not None
        if len(self._policies) != spec.replicas:
            raise ValueError("give one policy per replica")
        if not per_replica and len({id(p) for p in self._policies}) != 1:
            raise ValueError("a shared queue is served by one policy object")
        self._learns = [hasattr(p, "on_batch_done") for p in self._policies]
        # a policy of the user's own: its launches' types are checked too, and its failures
        # become the scenario's error
        self._plugin = not spec.trusted
        guard = self._guarded if self._plugin else (lambda method: method)
        # step-level batching: each replica's requests in flight and their steps left; the
        # requests each iteration admitted, and (request, iteration) for each completion;
        # its policy answers how many to admit (admit), not what to launch (decide)
        step_level = spec.step_level
        if step_level is None:
            step_level = registry.is_step_level(type(self._policies[0]))
        self._step_level = step_level
        if self._step_level and spec.steps is None:
            raise ValueError("step-level batching needs the model's steps (ServerSpec.steps)")
        decide = "admit" if self._step_level else "decide"
        self._decide_of = [guard(getattr(p, decide)) for p in self._policies]
        self._batch_done_of = [
            guard(p.on_batch_done) if learns else None
            for p, learns in zip(self._policies, self._learns, strict=True)
        ]
        self.columns = c = _Columns(traffic, spec)
        self._times, self._deadlines = c.times, c.deadlines
        make_queue = queue_factory(
            self._policies[0].order,
            c.times,
            c.deadlines,
            c.priority,
            known=not self.closed,
            in_order=not (self.closed or per_replica or spec.max_queue is not None),
        )
        self.queues = [make_queue() for _ in range(spec.replicas if per_replica else 1)]
        self._queue_of = [self.queues[r if per_replica else 0] for r in range(spec.replicas)]
        self.load = ReplicaLoad(spec.replicas)  # what dispatchers know of each replica
        dispatcher = None
        self._median_s: list[float] | None = None
        profile = spec.profile
        if per_replica:
            dispatcher = make_dispatcher(
                spec.dispatch,
                self.queues,
                profile,
                max(p.max_batch for p in self._policies),
                self.load,
                spec.dispatch_rng or np.random.default_rng(0),
            )
            # predicted (median) batch times, for dispatchers that weigh outstanding work
            self._median_s = [0.0] * profile.min_size + [
                profile.latency_ms(b) / 1000.0
                for b in range(profile.min_size, profile.max_size + 1)
            ]
        self.admission = Admission(
            c.times,
            self.queues,
            c.outcome,
            dispatcher,
            spec.max_queue,
            spec.timeout_s,
            self._fail if self.closed else None,
        )
        # admission: open loop, lazily from the arrival column; closed, from the fleet
        self._admit = self._admit_closed if self.closed else self.admission.advance
        self._plain_admission = (
            not per_replica and spec.max_queue is None and spec.timeout_s is None
        )
        self._min_size, self._max_size = profile.min_size, profile.max_size
        self._shaped = bool(spec.shapes)
        if spec.shapes:
            measured = sorted(spec.shapes)
            self._shape_for = {
                v: next(m for m in measured if m >= v) for v in range(1, measured[-1] + 1)
            }
        # batch columns: one append per batch; `members` lists each batch's requests in turn
        # each batch's replica, start, size and padded size, four floats a batch
        self._batch_log = array("d")
        self._b_end: list[float] = []  # each batch's end, once known
        self._b_shape: list[int] = []
        self._members = array("q")
        self._last_batch = [-1] * spec.replicas  # each replica's latest batch
        self._clients: list = []  # closed loop: the client of each request
        # closed loop: the requests of each replica's running batch (whose robots it answers)
        self._running: list[Sequence[int]] = [()] * spec.replicas
        # closed loop, several replicas: the waits of sleeping replicas, and those whose
        # wake moved earlier since (the driver wakes them)
        self._sleeping: dict[int, tuple[Wait, float]] = {}
        self.rewakes: list[tuple[int, float]] = []
        self._track_sleepers = self.closed and spec.replicas > 1
        self._flying: list[list[int]] = [[] for _ in range(spec.replicas)]
        self._iteration_s = [0.0] * spec.replicas  # a moving mean of iteration times
        self._left: list[list[int]] = [[] for _ in range(spec.replicas)]
        self._admitted = array("q")
        self._completed = array("q")
        # per-request steps, kept when steps can vary (a floor) or run step by step
        self._steps = spec.steps
        self._degrade = spec.steps is not None and spec.steps.floor is not None
        self._keep_steps = spec.steps is not None
        if self._keep_steps:
            c.steps = np.zeros(c.outcome.size, dtype=np.int16)

    # ---- what a driver calls --------------------------------------------------------------
    def decide(self, replica: int, now_s: float) -> Start | Sleep:
        """Replica `replica` is free at `now_s`: start a batch, or sleep until when?"""
        if self._track_sleepers:
            self._sleeping.pop(replica, None)
        self._admit(now_s)
        queue = self._queue_of[replica]
        if self._step_level:
            action = self._iterate(replica, now_s, queue)
            if self._track_sleepers:
                self._check_sleepers(replica)
            return action
        decision = self._decide_of[replica](now_s, queue)
        kind = type(decision)
        if kind is Launch:
            action = self._start(replica, now_s, queue, decision)
        elif kind is Wait:
            action = self._sleep(replica, now_s, queue, decision)
        else:
            action = self._drop_then_decide(replica, now_s, queue, decision)
        if self._track_sleepers:
            self._check_sleepers(replica)
        return action

    def _drop_then_decide(self, replica: int, now_s: float, queue, decision) -> Start | Sleep:
        """The policy gave up requests (Drop): remove them, and ask it again."""
        decide = self._decide_of[replica]
        while True:
            kind = type(decision)
            if kind is Launch:
                return self._start(replica, now_s, queue, decision)
            if kind is Wait:
                return self._sleep(replica, now_s, queue, decision)
            if kind is not Drop:
                self._refuse(f"returned {decision!r}; decide() must return Launch, Wait or Drop")
            count = decision.count
            if type(count) is not int or not 1 <= count <= len(queue):
                self._refuse(f"returned {decision!r} with {len(queue)} queued")
            gone = queue.take(count)
            self.columns.outcome[gone] = DROPPED
            if self.closed:
                self._fail(gone, now_s)
                self._admit(now_s)  # a robot told at once may already send again
            decision = decide(now_s, queue)

    def end(self, batch: int, end_s: float, ok: bool = True) -> None:
        """Batch `batch` ends (or, simulated, will end) at `end_s`; `ok` False: it failed and
        its requests are recorded as failed. Closed loop: its robots get their answers."""
        self._b_end[batch] = end_s
        if self._step_level:
            self._step_done(batch, end_s, ok)
            return
        if not ok:
            self.columns.outcome[self._batch_requests(batch)] = FAILED
        if self.closed:
            clients = self._clients
            ids = self._running[int(self._batch_log[4 * batch])]  # one batch at a time
            self.fleet.answer([clients[request] for request in ids], end_s, ok)
            if self._track_sleepers:
                self._check_sleepers(None)

    def free(self, replica: int, now_s: float, service_s: float) -> None:
        """The replica's batch finished at `now_s` after `service_s` of work: it is free."""
        if self._per_replica:
            # requests that arrived while it ran were dispatched seeing it busy; those
            # arriving at this instant see it free (a completion at t comes first)
            self._admit(now_s, inclusive=False)
            self.load.running[replica] = 0
        if self._learns[replica]:
            row = 4 * self._last_batch[replica]
            size, padded = int(self._batch_log[row + 2]), int(self._batch_log[row + 3])
            self._batch_done_of[replica](now_s, size, padded, service_s)

    def batch_clients(self, batch: int) -> list:
        """Closed loop: the clients of batch `batch`'s requests, in the order it took them."""
        clients = self._clients
        return [clients[request] for request in self._batch_requests(batch)]

    def take_rewakes(self) -> list[tuple[int, float]]:
        """(replica, new wake) for sleeping replicas whose moment moved earlier."""
        rewakes, self.rewakes = self.rewakes, []
        return rewakes

    def quiet_end_s(self, now_s: float) -> float:
        """The end of a run without horizon once nothing is scheduled (no replica will launch
        again): what is left still arrives (and is queued or rejected) and, with an
        admission timeout, expires."""
        end_s = now_s
        if self.admission.last_arrival_s is not None:
            end_s = max(end_s, self.admission.last_arrival_s)
        if self.fleet is not None:
            end_s = max(end_s, self.fleet.last_answer_s)
        self._admit(end_s)
        timeout_s = self.spec.timeout_s
        if timeout_s is not None:
            waiting = [self._times[i] for q in self.queues for i in q.ids()]
            if waiting:
                newest_s = max(waiting)
                # after the newest has waited past the timeout, and it has expired by then
                after_s = math.nextafter(newest_s + timeout_s, math.inf)
                end_s = max(end_s, after_s, expires_at_s(newest_s, timeout_s))
        return end_s

    def records(self, end_s: float, warmup_s: float = 0.0) -> RunRecords:
        """Close the run at `end_s` and return its records (every arrival up to the end
        admitted or rejected, expiries applied, outcomes final)."""
        # a clock stopped at the end saw closed-loop arrivals strictly before it
        self._admit(end_s, not self.closed)
        c = self.columns
        n = len(self._times)
        outcome = c.outcome[:n]
        request_batch = np.full(n, -1, dtype=np.int64)
        batches = np.array(self._batch_log, dtype=float).reshape(-1, 4)
        sizes = batches[:, 2].astype(np.int32)
        members = np.array(self._members, dtype=np.int64)
        # each request's first batch (step level: the iteration that admitted it) ...
        admitted = np.array(self._admitted, dtype=np.int64) if self._step_level else sizes
        request_batch[members] = np.repeat(np.arange(sizes.size, dtype=np.int64), admitted)
        # ... and its last (step level: the one that ran its last step; -1: none yet)
        last_batch = None
        if self._step_level:
            last_batch = np.full(n, -1, dtype=np.int64)
            pairs = np.array(self._completed, dtype=np.int64).reshape(-1, 2)
            last_batch[pairs[:, 0]] = pairs[:, 1]
        batch_end = np.asarray(self._b_end, dtype=float)
        finalize_outcomes(outcome, request_batch, batch_end, end_s, last_batch)
        robots = None
        if self.fleet is not None:
            robots = self.fleet.finish(end_s)
            c.arrival_s = np.frombuffer(self._times, dtype=float).copy()
            c.deadline_s = np.frombuffer(self._deadlines, dtype=float).copy()
            ids = map(attrgetter("id"), self._clients)
            c.sources = np.fromiter(ids, dtype=np.int32, count=len(self._clients))
        return RunRecords(
            arrival_s=c.arrival_s,
            source=c.sources,
            request_batch=request_batch,
            outcome=outcome,
            batch_replica=batches[:, 0].astype(np.int32),
            batch_start_s=batches[:, 1].copy(),
            batch_end_s=batch_end,
            batch_size=sizes,
            batch_padded=batches[:, 3].astype(np.int32),
            replicas=self.replicas,
            warmup_s=warmup_s,
            end_s=float(end_s),
            source_names=c.source_names,
            deadline_s=c.deadline_s,
            class_id=c.class_id,
            class_names=c.class_names,
            robots=robots,
            request_shape=None if c.shapes is None else np.asarray(c.shapes, dtype=np.int32),
            batch_shape=np.asarray(self._b_shape, dtype=np.int32) if self.spec.shapes else None,
            shape_name=self.spec.shape_name,
            request_last_batch=last_batch,
            batch_admitted=admitted.astype(np.int32) if self._step_level else None,
            request_steps=c.steps[:n].copy() if self._keep_steps else None,
        )

    # ---- admission ------------------------------------------------------------------------
    def _admit_closed(self, now_s: float, inclusive: bool = True) -> None:
        """Every arrival up to `now_s` (`inclusive` False: before it) queued or rejected and
        every expiry applied, in time order (open loop: Admission.advance). The fleet
        releases its requests into the columns; with admission limits, robots told of a
        rejection or an expiry may send again, so arrivals and expiries are then taken one
        at a time, earliest first."""
        fleet = self.fleet
        times = self._times
        first = len(times)
        if self._plain_admission:  # one queue, no limits: every arrival just joins it
            if fleet.next_arrival_s <= now_s:
                fleet.release(now_s, inclusive, times, self._deadlines, self._clients)
                self._admitted_from(first)
                self.queues[0].push_range(first, len(times))
            return
        admission = self.admission
        while True:
            arrival_s = fleet.next_arrival_s
            expiry_s = admission.next_expiry_s()
            if expiry_s <= now_s and expiry_s <= arrival_s:
                admission.expire(expiry_s)
                continue
            if arrival_s > now_s or (arrival_s == now_s and not inclusive):
                return
            n = len(times)
            fleet.release(arrival_s, True, times, self._deadlines, self._clients)
            self._admitted_from(n)
            for request in range(n, len(times)):  # those arriving at this one instant
                admission.admit(request)

    def _admitted_from(self, first: int) -> None:
        """Closed loop: requests first.. have joined the columns; size the rest to match."""
        c, n = self.columns, len(self._times)
        if n > c.outcome.size:
            grown = np.zeros(max(n, 2 * c.outcome.size), dtype=np.int8)
            grown[: c.outcome.size] = c.outcome
            c.outcome = self.admission.outcome = grown
        if self._keep_steps and n > c.steps.size:
            grown = np.zeros(max(n, 2 * c.steps.size), dtype=np.int16)
            grown[: c.steps.size] = c.steps
            c.steps = grown
        if c.shapes is not None:
            default = max(self.spec.shapes)
            c.shapes.extend(client.p.shape or default for client in self._clients[first:])

    def _fail(self, requests: Sequence[int], at_s: float) -> None:
        """Closed loop: the server answers these requests with a failure notice at `at_s`."""
        clients = self._clients
        self.fleet.answer([clients[request] for request in requests], at_s, False)

    # ---- decisions ------------------------------------------------------------------------
    def _start(self, replica: int, now_s: float, queue, decision: Launch) -> Start:
        count, padded = decision.count, decision.padded_size
        if self._plugin:  # built-ins launch their launch_sizes only (checked at load, INV-4)
            count, padded = self._checked_launch(decision, len(queue))
        ids = queue.take(count)
        self._members.extend(ids)
        batch = len(self._b_end)
        self._batch_log.extend((replica, now_s, count, padded))
        self._b_end.append(_NAN)
        variant = None
        if self._shaped:
            shapes = self.columns.shapes
            variant = self._shape_for[max(shapes[i] for i in ids)]
            self._b_shape.append(variant)
        if self.closed:
            self._running[replica] = ids
        if self._per_replica:  # what dispatchers know of each replica
            self.load.busy_until_s[replica] = now_s + self._median_s[padded]
            self.load.running[replica] = count
        if self._learns[replica]:
            self._last_batch[replica] = batch
        steps = None
        if self._degrade:  # one step count for the batch: its most urgent request decides
            deadline_s = min(self._deadlines[i] for i in ids)
            rule = self._steps
            steps = rule.choose(now_s, deadline_s, rule.prefix_s[padded], rule.step_s[padded])
        if self._keep_steps:
            self.columns.steps[ids] = self._steps.full if steps is None else steps
        return Start(batch, count, padded, variant, steps)

    def _iterate(self, replica: int, now_s: float, queue) -> Start | Sleep:
        """Step-level batching: the replica's next iteration (admit, then one step for all
        in flight), or, with nothing in flight or waiting, a sleep until a request comes."""
        flying, left = self._flying[replica], self._left[replica]
        in_flight = len(flying)
        cap = self.spec.memory_cap  # requests in flight hold memory (their KV cache)
        admit = self._decide_of[replica](now_s, queue, in_flight)
        if cap is not None:
            admit = min(admit, cap - in_flight)
        if admit <= 0 and not flying:
            return self._sleep(replica, now_s, queue, Wait(until_queue_len=1))
        ids = queue.take(admit) if admit > 0 else []
        flying.extend(ids)
        b = len(flying)
        steps = self._steps
        if self._degrade:
            # its steps ahead take what this replica's iterations have been taking lately
            # (prefixes of later admissions included), at least a step at this size
            deadlines = self._deadlines
            prefix_s = steps.prefix_s[len(ids)] if ids else 0.0
            step_s = max(steps.step_s[b], self._iteration_s[replica])
            chosen = [steps.choose(now_s, deadlines[i], prefix_s, step_s) for i in ids]
        else:
            chosen = [steps.full] * len(ids)
        left.extend(chosen)
        if ids:
            self.columns.steps[ids] = chosen
        batch = len(self._b_end)
        self._batch_log.extend((replica, now_s, b, b))
        self._admitted.append(len(ids))
        self._members.extend(ids)
        self._b_end.append(_NAN)
        variant = new_variant = None
        if self._shaped:
            shapes, shape_for = self.columns.shapes, self._shape_for
            variant = shape_for[max(shapes[i] for i in flying)]
            new_variant = shape_for[max(shapes[i] for i in ids)] if ids else None
            self._b_shape.append(variant)
        if self._per_replica:
            self.load.busy_until_s[replica] = now_s + self._median_s[b]
            self.load.running[replica] = b
        return Start(batch, b, b, variant, None, len(ids), new_variant)

    def _step_done(self, batch: int, end_s: float, ok: bool) -> None:
        """A step-level iteration ends at `end_s`: everyone in flight ran one more step; those
        that ran their last complete with it (a failed iteration fails everyone in flight)."""
        row = 4 * batch
        replica = int(self._batch_log[row])
        took_s = end_s - self._batch_log[row + 1]
        self._iteration_s[replica] += _SMOOTHING * (took_s - self._iteration_s[replica])
        flying, left = self._flying[replica], self._left[replica]
        if ok:
            left[:] = [n - 1 for n in left]
            done = [r for r, n in zip(flying, left, strict=True) if n == 0]
            if done:
                keep = [(r, n) for r, n in zip(flying, left, strict=True) if n > 0]
                flying[:] = [r for r, _ in keep]
                left[:] = [n for _, n in keep]
        else:
            done = flying[:]
            self.columns.outcome[done] = FAILED
            flying.clear()
            left.clear()
        if done:
            for request in done:
                self._completed.extend((request, batch))
            if self.closed:
                clients = self._clients
                self.fleet.answer([clients[r] for r in done], end_s, ok)
        if self._track_sleepers:
            self._check_sleepers(None)

    def _sleep(self, replica: int, now_s: float, queue, decision: Wait) -> Sleep:
        until_s, length = decision.until_s, decision.until_queue_len
        if until_s is not None and not until_s > now_s:
            self._refuse(f"returned {decision} at {now_s!r}: a Wait must name a later time")
        wake_s = self._wake_s(queue, until_s, length)
        if self._track_sleepers:
            self._sleeping[replica] = (decision, math.inf if wake_s is None else wake_s)
        return Sleep(wake_s)

    def _wake_s(self, queue, until_s: float | None, length: int | None) -> float | None:
        """The earliest moment the policy's answer could change: its time, or when the queue
        could reach its length, or (closed loop) when a request expires."""
        fleet = self.fleet
        if fleet is None:
            if length is not None:
                reach = self.admission.time_queue_reaches(queue, length)
                if reach is not None and (until_s is None or reach < until_s):
                    return reach
            return until_s
        wake = math.inf if until_s is None else until_s
        if length is not None and length > len(queue):
            # the k-th pending arrival, unless a rejected robot could send again before it
            k = length - len(queue) if self.spec.max_queue is None else 1
            reach = fleet.kth_arrival_s(k, wake)
            if reach is not None:
                wake = reach
        wake = min(wake, self.admission.next_expiry_s())
        return None if wake == math.inf else wake

    def _check_sleepers(self, acting: int | None) -> None:
        """Closed loop with several replicas: what one replica did (answers, admissions) may
        bring another's moment forward; those are listed in `rewakes`."""
        for replica, (wait, wake_s) in list(self._sleeping.items()):
            if replica == acting:
                continue
            new = self._wake_s(self._queue_of[replica], wait.until_s, wait.until_queue_len)
            if new is not None and new < wake_s:
                self._sleeping[replica] = (wait, new)
                self.rewakes.append((replica, new))

    def _batch_requests(self, batch: int) -> list[int]:
        sizes = np.array(self._batch_log, dtype=float).reshape(-1, 4)[:, 2].astype(np.int64)
        offset = int(sizes[:batch].sum())
        return list(self._members[offset : offset + int(sizes[batch])])

    def _checked_launch(self, decision: Launch, queued: int) -> tuple[int, int]:
        """A plug-in's launch, checked: integers of another type are taken as they are; a
        count beyond the queue, a padding below it, a size the profile did not measure or
        the memory cap refuses is the policy's error, reported in one line."""
        count, padded = decision.count, decision.padded_size
        integral = all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (count, padded)
        )
        if not integral:
            self._refuse(f"returned {decision}: count and padded_size must be integers")
        count, padded = int(count), int(padded)
        if not 0 < count <= queued:
            self._refuse(f"returned {decision} with {queued} queued")
        if padded < count:
            self._refuse(f"returned {decision}: a batch is padded to at least its size")
        if not self._min_size <= padded <= self._max_size:
            self._refuse(
                f"launched a batch padded to {padded}, outside the profile's measured sizes "
                f"{self._min_size}..{self._max_size}"
            )
        cap = self.spec.memory_cap
        if cap is not None and padded > cap:
            self._refuse(f"launched {padded}, above the memory limit ({cap})")
        return count, padded

    def _refuse(self, what: str) -> None:
        kind = self.spec.policy_kind
        label = f"policy {kind}" if kind else repr(self._policies[0])
        raise InputError(f"{label} {what}", source=self.spec.source, field="policy.kind")

    def _guarded(self, method):
        """A plug-in's method whose failures are the scenario's error, in one line."""

        def call(*args):
            try:
                return method(*args)
            except InputError:
                raise
            except Exception as exc:
                self._refuse(f"raised {type(exc).__name__} in {method.__name__}(): {exc}")

        return call
