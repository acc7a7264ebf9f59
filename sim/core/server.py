"""The server core: one clock-free model of a batching server, driven by any clock.

The core is told the time and what happened, and answers what to do. It is the only place
that admits requests and applies admission limits, asks the policy, drops requests, pads
batches, enforces the memory cap, notifies learning policies and builds the records.
The SimPy engine (sim/engine/engine.py), the live runner (sim/real/live.py) and `batchsim
serve` (sim/real/serve.py) drive it, open loop and closed loop alike; they keep only a
clock, sleeping, and running a batch. Step-level iterations are in step_level.py, the
batch columns in batch_log.py, the checks on what a policy returns in guard.py.

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
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from sim.core.actions import Sleep, Start
from sim.core.batch_log import BatchLog
from sim.core.columns import RequestColumns
from sim.core.dispatch import ReplicaLoad, make_dispatcher
from sim.core.guard import PolicyGuard
from sim.core.queue import Admission, expires_at_s, queue_factory
from sim.core.records import DROPPED, FAILED, RunRecords, finalize_outcomes
from sim.core.step_level import Iterations
from sim.core.steps import Steps
from sim.core.traffic import ClosedLoopTraffic, OpenTraffic
from sim.policies import registry
from sim.policies.base import Drop, Launch, Policy, Wait
from sim.profiles.profile import Profile


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
    # denoising steps per request (sim/core/steps.py): for step-level batching, and for
    # request-level policies that may lower them; None: every batch runs the model whole
    steps: Steps | None = None
    # every sleeping replica keeps its own wake and is asked again at it (the reference the
    # cohorts and per-replica wake-ups are tested against: the same request times)
    poll_every_sleeper: bool = False
    # a fleet mixing guided and unguided robots (RTC inference-time guidance): each
    # request's client says which it is, and a batch holding a guided one says so (Start)
    guided: bool = False

    @classmethod
    def shared(cls, policy: Policy, profile: Profile, replicas: int = 1, **options) -> ServerSpec:
        """One shared queue served by `replicas` replicas under one policy object."""
        return cls((policy,) * replicas, profile, replicas, **options)


class ServerCore:
    """The batching server's state and rules, with no clock of its own (see the module doc)."""

    def __init__(self, traffic: OpenTraffic | ClosedLoopTraffic, spec: ServerSpec):
        self.spec = spec
        self.fleet = None if isinstance(traffic, OpenTraffic) else traffic
        self.closed = self.fleet is not None
        self.replicas = replicas = spec.replicas
        policies = list(spec.policies)
        self._per_replica = per_replica = spec.dispatch is not None
        if len(policies) != replicas:
            raise ValueError("give one policy per replica")
        if not per_replica and len({id(p) for p in policies}) != 1:
            raise ValueError("a shared queue is served by one policy object")
        profile = spec.profile
        kind = spec.policy_kind
        self.guard = PolicyGuard(
            spec.trusted,
            f"policy {kind}" if kind else repr(policies[0]),
            spec.source,
            profile.min_size,
            profile.max_size,
            spec.memory_cap,
        )
        step_level = spec.step_level
        if step_level is None:
            step_level = registry.is_step_level(type(policies[0]))
        if step_level and spec.steps is None:
            raise ValueError("step-level batching needs the model's steps (ServerSpec.steps)")
        # a step-level policy answers how many to admit (admit), not what to launch (decide)
        wrap = self.guard.wrap
        self._decide_of = [wrap(p.admit if step_level else p.decide) for p in policies]
        self._batch_done_of = [
            wrap(p.on_batch_done) if hasattr(p, "on_batch_done") else None for p in policies
        ]
        self.columns = c = RequestColumns(traffic, spec.shapes, spec.guided)
        self._times, self._deadlines = c.times, c.deadlines
        make_queue = queue_factory(
            policies[0].order,
            c.times,
            c.deadlines,
            c.priority,
            known=not self.closed,
            # every arrival joins the one queue in order: open loop, and closed loop without
            # limits (its robots' requests are released in arrival order)
            in_order=not (
                per_replica
                or spec.max_queue is not None
                or (self.closed and spec.timeout_s is not None)
            ),
        )
        self.queues = [make_queue() for _ in range(replicas if per_replica else 1)]
        self._queue_of = [self.queues[r if per_replica else 0] for r in range(replicas)]
        self.load = ReplicaLoad(replicas)  # what dispatchers know of each replica
        dispatcher = None
        self._median_s: list[float] | None = None
        if per_replica:
            dispatcher = make_dispatcher(
                spec.dispatch,
                self.queues,
                profile,
                max(p.max_batch for p in policies),
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
            self._pushed if per_replica and replicas > 1 else None,
        )
        # admission: open loop, lazily from the arrival column; closed, from the traffic
        self._admit = self._admit_closed if self.closed else self.admission.advance
        self._plain_admission = (
            not per_replica and spec.max_queue is None and spec.timeout_s is None
        )
        # shape-aware profiles: the measured shape a request of each shape runs as
        self.shape_for: dict[int, int] | None = None
        if spec.shapes:
            measured = sorted(spec.shapes)
            self.shape_for = {
                v: next(m for m in measured if m >= v) for v in range(1, measured[-1] + 1)
            }
        self.log = BatchLog()
        self._last_batch = [-1] * replicas  # each replica's latest batch (learning policies)
        self._clients: list = []  # closed loop: the client of each request
        # closed loop: the requests of each replica's running batch (whose clients it answers)
        self._running: list[Sequence[int]] = [()] * replicas
        # several replicas: sleeping replicas in cohorts, one per (queue, wait); only a
        # cohort's first member keeps a wake, the rest would decide alike (one policy, one
        # queue) and are parked until it launches and hands them the turn. `rewakes` lists
        # the replicas a driver must wake (a hand-off, or a wake that moved earlier)
        poll = spec.poll_every_sleeper
        self._several = replicas > 1
        self._cohorted = replicas > 1 and (poll or not per_replica)
        self._cohorts: dict[tuple, _Cohort] = {}
        self._cohort_of: dict[int, _Cohort] = {}
        self._leaving: _Cohort | None = None  # the cohort the deciding replica slept in
        # a cohort shares a queue (polling: each replica is a cohort of its own)
        self._cohort_owner = [r if per_replica or poll else 0 for r in range(replicas)]
        self.rewakes: list[tuple[int, float]] = []
        self._track_sleepers = self.closed and self._cohorted
        # per-replica queues, several replicas: a sleeping replica's queue grows only by
        # the arrivals dispatched to it, so it is woken when one is (Admission's on_push),
        # never by arrivals elsewhere; the driver admits each arrival at its moment
        # (next_arrival_s, admit_until)
        self.evented = per_replica and replicas > 1 and not poll
        self._asleep: dict[int, tuple[Wait, float]] = {}
        # closed loop: an arrival or an answer since the last check, the only things that
        # can bring a sleeper's moment forward (taking and expiring requests only delay it)
        self._moved = False
        # per-request steps, kept when steps can vary (a floor) or run step by step
        self.steps = spec.steps
        self.degrade = spec.steps is not None and spec.steps.floor is not None
        if spec.steps is not None:
            c.steps = np.zeros(c.outcome.size, dtype=np.int16)
        self.iterations = Iterations(self) if step_level else None

    # ---- what a driver calls --------------------------------------------------------------
    def decide(self, replica: int, now_s: float) -> Start | Sleep:
        """Replica `replica` is free at `now_s`: start a batch, or sleep until when?"""
        several = self._several
        if several:
            if self._cohorted:
                self._leave_cohort(replica)
            else:
                self._asleep.pop(replica, None)
        self._admit(now_s)
        queue = self._queue_of[replica]
        if self.iterations is not None:
            action = self.iterations.start(replica, now_s, queue)
        else:
            decision = self._decide_of[replica](now_s, queue)
            kind = type(decision)
            if kind is Launch:
                action = self._start(replica, now_s, queue, decision)
            elif kind is Wait:
                action = self._sleep(replica, now_s, queue, decision)
            else:
                action = self._drop_then_decide(replica, now_s, queue, decision)
        if several:
            if self._leaving is not None:  # it launched: the next one's turn
                self._hand_off(now_s)
            if self._moved and self._track_sleepers:
                self._check_sleepers(replica)
        return action

    def end(self, batch: int, end_s: float, ok: bool = True, failed: Sequence[int] = ()) -> None:
        """Batch `batch` ends (or, simulated, will end) at `end_s`; `ok` False: it failed and
        its requests are recorded as failed; `failed`: the positions in the batch of the
        requests that failed alone (a real server's poisoned inputs; the rest completed).
        Closed loop: its clients get their answers."""
        self.log.end_s[batch] = end_s
        if self.iterations is not None:
            self.iterations.end(batch, end_s, ok)
        else:
            if not ok:
                self.columns.outcome[self.log.requests(batch)] = FAILED
            elif failed:
                requests = self.log.requests(batch)
                self.columns.outcome[[requests[i] for i in failed]] = FAILED
            if self.closed:
                # one batch at a time per replica: the replica's running batch is this one
                self._answer(self._running[self.log.replica[batch]], end_s, ok)
        if self._moved and self._track_sleepers:
            self._check_sleepers(None)

    def free(self, replica: int, now_s: float, service_s: float) -> None:
        """The replica's batch finished at `now_s` after `service_s` of work: it is free."""
        if self._per_replica:
            # requests that arrived while it ran were dispatched seeing it busy; those
            # arriving at this instant see it free (a completion at t comes first)
            self._admit(now_s, inclusive=False)
            self.load.running[replica] = 0
        done = self._batch_done_of[replica]
        if done is not None:
            batch = self._last_batch[replica]
            done(now_s, self.log.size[batch], self.log.padded[batch], service_s)

    def batch_clients(self, batch: int) -> list:
        """Closed loop: the clients of batch `batch`'s requests, in the order it took them."""
        clients = self._clients
        return [clients[request] for request in self.log.requests(batch)]

    def next_arrival_s(self) -> float:
        """When the next arrival not yet admitted reaches the server (inf: none known yet)."""
        if self.fleet is not None:
            return self.fleet.next_arrival_s
        admission = self.admission
        i = admission.next_arrival
        return self._times[i] if i < len(self._times) else math.inf

    def admit_until(self, now_s: float) -> None:
        """Per-replica queues (`evented`): admit every arrival up to `now_s`; the replicas
        whose queue it changed in a way their policy waits for are listed in `rewakes`."""
        self._admit(now_s)

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
        c, log = self.columns, self.log
        n = len(self._times)
        outcome = c.outcome[:n]
        request_batch = np.full(n, -1, dtype=np.int64)
        sizes = np.array(log.size, dtype=np.int32)
        members = np.array(log.members, dtype=np.int64)
        # each request's first batch (step level: the iteration that admitted it) ...
        taken = log.taken()
        request_batch[members] = np.repeat(np.arange(sizes.size, dtype=np.int64), taken)
        # ... and its last (step level: the one that ran its last step; -1: none yet)
        last_batch = None
        step_level = self.iterations is not None
        if step_level:
            last_batch = np.full(n, -1, dtype=np.int64)
            pairs = np.array(log.completed, dtype=np.int64).reshape(-1, 2)
            last_batch[pairs[:, 0]] = pairs[:, 1]
        batch_end = np.asarray(log.end_s, dtype=float)
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
            batch_replica=np.array(log.replica, dtype=np.int32),
            batch_start_s=np.array(log.start_s, dtype=float),
            batch_end_s=batch_end,
            batch_size=sizes,
            batch_padded=np.array(log.padded, dtype=np.int32),
            replicas=self.replicas,
            warmup_s=warmup_s,
            end_s=float(end_s),
            source_names=c.source_names,
            deadline_s=c.deadline_s,
            class_id=c.class_id,
            class_names=c.class_names,
            robots=robots,
            request_shape=None if c.shapes is None else np.asarray(c.shapes, dtype=np.int32),
            batch_shape=np.array(log.shape, dtype=np.int32) if self.spec.shapes else None,
            shape_name=self.spec.shape_name,
            request_last_batch=last_batch,
            batch_admitted=taken.astype(np.int32) if step_level else None,
            request_steps=c.steps[:n].copy() if self.steps is not None else None,
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
        self._moved = True
        c, n = self.columns, len(self._times)
        if n > c.outcome.size:
            grown = np.zeros(max(n, 2 * c.outcome.size), dtype=np.int8)
            grown[: c.outcome.size] = c.outcome
            c.outcome = self.admission.outcome = grown
        if self.steps is not None and n > c.steps.size:
            grown = np.zeros(max(n, 2 * c.steps.size), dtype=np.int16)
            grown[: c.steps.size] = c.steps
            c.steps = grown
        if c.shapes is not None:
            default = max(self.spec.shapes)
            c.shapes.extend(client.p.shape or default for client in self._clients[first:])
        if c.guided is not None:
            c.guided.extend(client.p.guided for client in self._clients[first:])

    def _fail(self, requests: Sequence[int], at_s: float) -> None:
        """Closed loop: the server answers these requests with a failure notice at `at_s`."""
        self._answer(requests, at_s, False)

    def _answer(self, requests: Sequence[int], at_s: float, ok: bool) -> None:
        """Closed loop: these requests' clients are answered at `at_s`, in this order."""
        self._moved = True
        if type(requests) is range:  # a range queue's batch: a slice of the clients
            clients = self._clients[requests.start : requests.stop]
        else:
            clients = list(map(self._clients.__getitem__, requests))
        self.fleet.answer(clients, at_s, ok)

    # ---- decisions ------------------------------------------------------------------------
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
                self.guard.refuse(
                    f"returned {decision!r}; decide() must return Launch, Wait or Drop"
                )
            count = decision.count
            if type(count) is not int or not 1 <= count <= len(queue):
                self.guard.refuse(f"returned {decision!r} with {len(queue)} queued")
            gone = queue.take(count)
            self.columns.outcome[gone] = DROPPED
            if self.closed:
                self._fail(gone, now_s)
                self._admit(now_s)  # a client told at once may already send again
            decision = decide(now_s, queue)

    def _start(self, replica: int, now_s: float, queue, decision: Launch) -> Start:
        """A request-level batch starts: the policy's launch, taken from its queue."""
        count, padded = decision.count, decision.padded_size
        if not self.guard.trusted:  # built-ins launch their launch_sizes only (INV-4)
            count, padded = self.guard.launch(decision, len(queue))
        ids = queue.take(count)
        log = self.log
        batch = log.add(replica, now_s, count, padded, ids)
        variant = None
        if self.shape_for is not None:
            shapes = self.columns.shapes
            variant = self.shape_for[max(shapes[i] for i in ids)]
            log.shape.append(variant)
        if self.closed:
            self._running[replica] = ids
        if self._per_replica:
            self._dispatch_sees(replica, now_s, padded, count)
        if self._batch_done_of[replica] is not None:
            self._last_batch[replica] = batch
        steps = None
        rule = self.steps
        if self.degrade:  # one step count for the batch: its most urgent request decides
            deadline_s = min(self._deadlines[i] for i in ids)
            steps = rule.choose(now_s, deadline_s, rule.prefix_s[padded], rule.step_s[padded])
        if rule is not None:
            self.columns.steps[ids] = rule.full if steps is None else steps
        guided = self.columns.guided
        if guided is not None:  # a batch holding any guided request pays the guided cost
            return Start(batch, count, padded, variant, steps, guided=any(guided[i] for i in ids))
        return Start(batch, count, padded, variant, steps)

    def _dispatch_sees(self, replica: int, now_s: float, padded: int, count: int) -> None:
        """Per-replica queues: what dispatchers know of a replica that starts a batch."""
        if self._per_replica:
            self.load.busy_until_s[replica] = now_s + self._median_s[padded]
            self.load.running[replica] = count

    def _sleep(self, replica: int, now_s: float, queue, decision: Wait) -> Sleep:
        until_s, length = decision.until_s, decision.until_queue_len
        if until_s is not None and not until_s > now_s:
            self.guard.refuse(f"returned {decision} at {now_s!r}: a Wait must name a later time")
        if self.evented:
            wake_s = self._own_wake_s(queue, until_s, length, None)
            self._asleep[replica] = (decision, math.inf if wake_s is None else wake_s)
            return Sleep(wake_s, wake_s is None)
        wake_s = self._wake_s(queue, until_s, length)
        if self._cohorted:
            return self._join_cohort(replica, decision, wake_s)
        return Sleep(wake_s)

    # ---- per-replica queues: woken by their own queue -----------------------------------
    def _own_wake_s(
        self, queue, until_s: float | None, length: int | None, pushed_s: float | None
    ) -> float | None:
        """The earliest moment the answer could change, from the replica's own queue alone:
        its Wait's time, when its oldest expires, or (`pushed_s`: an arrival just joined)
        then, if the queue now holds the Wait's length. A length the queue already held
        when the policy answered changes nothing (as _wake_s)."""
        wake = math.inf if until_s is None else until_s
        if pushed_s is not None and length is not None and len(queue) >= length:
            wake = pushed_s
        timeout_s = self.spec.timeout_s
        if timeout_s is not None:
            oldest_s = queue.oldest_arrival_s()
            if oldest_s is not None:
                wake = min(wake, expires_at_s(oldest_s, timeout_s))
        return None if wake == math.inf else wake

    def _pushed(self, index: int) -> None:
        """An arrival joined queue `index` (its replica's): if the replica sleeps, its moment
        may have come forward."""
        slept = self._asleep.get(index)
        if slept is None:
            return
        wait, wake_s = slept
        queue = self.queues[index]
        arrival_s = self._times[self.admission.next_arrival - 1]
        new = self._own_wake_s(queue, wait.until_s, wait.until_queue_len, arrival_s)
        if new is not None and new < wake_s:
            self._asleep[index] = (wait, new)
            self.rewakes.append((index, new))

    # ---- sleeping replicas of one queue (several replicas) ------------------------------
    def _leave_cohort(self, replica: int) -> None:
        """The replica is awake (its wake, a hand-off, or its batch's end): out of its cohort,
        whose remaining members follow what it decides."""
        cohort = self._cohort_of.pop(replica, None)
        self._leaving = cohort
        if cohort is not None:
            cohort.members.popleft()  # only a cohort's first member is ever woken
            if not cohort.members:
                self._cohorts.pop(cohort.key, None)
                self._leaving = None

    def _hand_off(self, now_s: float) -> None:
        """The replica that left a cohort launched: the cohort's next member decides now, as
        it would have on the same wake."""
        cohort, self._leaving = self._leaving, None
        cohort.wake_s = now_s
        self.rewakes.append((cohort.members[0], now_s))

    def _join_cohort(self, replica: int, wait: Wait, wake_s: float | None) -> Sleep:
        """The replica sleeps on `wait`: the first of a new cohort (which keeps the wake), or
        parked behind a cohort already waiting on the same; the members of the cohort it
        left come with it, since they would have decided the same."""
        left, self._leaving = self._leaving, None
        key = (self._cohort_owner[replica], wait.until_s, wait.until_queue_len)
        wake = math.inf if wake_s is None else wake_s
        cohort = self._cohorts.get(key)
        if cohort is not None:
            if cohort is left:  # the same wait again: still first
                cohort.members.appendleft(replica)
                cohort.wake_s = wake
                self._cohort_of[replica] = cohort
                return Sleep(wake_s)
            if left is None:  # alone, behind those already waiting on it
                cohort.members.append(replica)
                self._cohort_of[replica] = cohort
                return _PARKED
        cohorts, cohort_of = self._cohorts, self._cohort_of
        if cohort is None:
            if left is None:
                cohort = cohorts[key] = _Cohort(key, wait, wake, deque((replica,)))
            else:  # its cohort follows it to the new wait (the object moves: O(1))
                cohort = left
                del cohorts[cohort.key]
                cohort.key, cohort.wait, cohort.wake_s = key, wait, wake
                cohort.members.appendleft(replica)
                cohorts[key] = cohort
            cohort_of[replica] = cohort
            return Sleep(wake_s)
        # behind a cohort already waiting on it (rare: two waits that met), with its own
        del cohorts[left.key]
        cohort.members.append(replica)
        cohort.members.extend(left.members)
        cohort_of[replica] = cohort
        for member in left.members:
            cohort_of[member] = cohort
        return _PARKED

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
        bring a cohort's moment forward; its first member is listed in `rewakes`."""
        self._moved = False
        for cohort in self._cohorts.values():
            first = cohort.members[0]
            if first == acting:
                continue
            wait = cohort.wait
            new = self._wake_s(self._queue_of[first], wait.until_s, wait.until_queue_len)
            if new is not None and new < cohort.wake_s:
                cohort.wake_s = new
                self.rewakes.append((first, new))


_PARKED = Sleep(None, True)  # never changed by a driver: one value serves every parking


class _Cohort:
    """Sleeping replicas of one queue that wait on the same condition, in the order they
    would wake; only the first keeps a wake (`wake_s`, inf: none)."""

    __slots__ = ("key", "wait", "wake_s", "members")

    def __init__(self, key: tuple, wait: Wait, wake_s: float, members: deque):
        self.key = key
        self.wait = wait
        self.wake_s = wake_s
        self.members = members
