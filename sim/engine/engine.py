"""The SimPy engine: the server core driven by a simulated clock.

One SimPy process per replica: a replica asks the core what to do; on `Start` it draws
the batch's service time from the service model, tells the core when the batch will end
and holds for it; on `Sleep` it sleeps until the core's moment (a server that sleeps
wakes `wake_latency_s` late), or, parked or with no moment, until the core lists it in
`rewakes` (its bell is rung; a timed sleep that must end earlier is interrupted).
Arrivals never cost an event with a shared queue: open-loop ones are known in advance,
and a robot fleet's next requests are known once their answers are, so the core admits
both in bulk before each decision. With per-replica queues one more process admits each
arrival at its moment, after that instant's completions, so that only the replica it
joins is woken.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import simpy

from sim.core.records import RunRecords
from sim.core.server import ServerCore, ServerSpec, Start
from sim.core.traffic import ClosedLoopTraffic, OpenTraffic
from sim.engine.service import ServiceModel

ProgressFn = Callable[[float], None]


class _AfterTheInstant(simpy.Timeout):
    """A timeout that fires after every other event of its instant (SimPy orders an
    instant's events by priority, then by when they were scheduled; this one's priority
    comes after NORMAL): arrivals admitted by it see the completions of that instant."""

    def __init__(self, env: simpy.Environment, delay: float):
        # as simpy.Timeout.__init__, with a later priority
        self.env = env
        self.callbacks = []
        self._value = None
        self._delay = delay
        self._ok = True
        env.schedule(self, simpy.events.NORMAL + 1, delay)


class Engine:
    """One simulation run: traffic (open or closed) served under `spec`, batch times from
    `service`, until `horizon_s` (None: until nothing more can happen)."""

    def __init__(
        self,
        traffic: OpenTraffic | ClosedLoopTraffic,
        spec: ServerSpec,
        service: ServiceModel,
        horizon_s: float | None = None,
        warmup_s: float = 0.0,
        wake_latency_s: float = 0.0,
        progress: ProgressFn | None = None,
    ):
        self.env = simpy.Environment()
        self.core = ServerCore(traffic, spec)
        self.service = service
        self.horizon_s = horizon_s
        self.warmup_s = warmup_s
        self.wake_latency_s = wake_latency_s
        self._progress = progress
        self._processes: list[simpy.Process] = []
        # each replica's bell while it sleeps with no moment of its own (parked, or closed
        # loop until an answer), else None: it holds a timer, which an interrupt moves
        self._bells: list[simpy.Event | None] = [None] * spec.replicas
        # per-replica queues: the process that admits each arrival at its moment, and the
        # moment it sleeps until (an earlier arrival, known later, moves it)
        self._clock: simpy.Process | None = None
        self._clock_s = math.inf

    def _replica(self, replica: int):
        env, core, service = self.env, self.core, self.service
        late_s = self.wake_latency_s
        closed = core.closed
        watch = core.replicas > 1  # only then is a replica woken by another's doing
        clocked = closed and core.evented  # answers may bring the next arrival forward
        while True:
            now = env.now
            action = core.decide(replica, now)
            if watch and core.rewakes:
                self._rewake()
            if clocked:
                self._retime_clock()
            if type(action) is Start:
                service_s = service(replica, now, action)
                end_s = now + service_s  # what the clock will read then (SimPy adds the same)
                core.end(action.batch, end_s)
                if watch and core.rewakes:
                    self._rewake()
                if clocked:
                    self._retime_clock()
                yield env.timeout(service_s)
                core.free(replica, end_s, service_s)
                continue
            wake = action.until_s
            if wake is None and not closed and not action.parked:
                return  # open loop: no arrival can come and no timer is set
            bells = self._bells
            while True:
                try:
                    if wake is None:  # until another replica's doing rings its bell
                        bell = bells[replica] = env.event()
                        wake = yield bell
                        now = env.now
                        if wake <= now:  # its turn has come (a hand-off): decide at once
                            break
                        continue
                    delay = wake - now
                    # a server that sleeps wakes late; one whose moment has come does not
                    yield env.timeout(delay + late_s if delay > 0 else 0.0)
                    break
                except simpy.Interrupt as moved:  # its moment moved earlier
                    wake, now = moved.cause, env.now
                    if wake <= now:
                        break

    def _rewake(self) -> None:
        bells = self._bells
        for replica, wake_s in self.core.take_rewakes():
            bell = bells[replica]
            if bell is not None:  # asleep with no moment of its own: ring (cheaper)
                bells[replica] = None
                bell.succeed(wake_s)
            else:
                self._processes[replica].interrupt(wake_s)

    def _arrivals(self):
        """Per-replica queues: admit every arrival at its moment, after the instant's other
        events, and wake the replica it was dispatched to if that changes its answer."""
        env, core = self.env, self.core
        while True:
            at_s = self._clock_s = core.next_arrival_s()
            try:
                if at_s == math.inf:
                    if not core.closed:
                        return  # open loop: every arrival admitted
                    yield env.event()  # until an answer makes the next one known
                else:
                    yield _AfterTheInstant(env, max(0.0, at_s - env.now))
            except simpy.Interrupt:
                continue  # an earlier arrival became known
            core.admit_until(env.now)
            if core.rewakes:
                self._rewake()

    def _retime_clock(self) -> None:
        if self.core.next_arrival_s() < self._clock_s and self._clock is not None:
            self._clock_s = -math.inf  # one interrupt until the clock sets its next moment
            self._clock.interrupt()

    def _monitor(self, horizon_s: float, ticks: int = 100):
        step = horizon_s / ticks
        for i in range(1, ticks + 1):
            yield self.env.timeout(step)
            self._progress(i / ticks)

    def run(self) -> RunRecords:
        """Run to the horizon (or until nothing can happen) and return the records."""
        for replica in range(self.core.replicas):
            self._processes.append(self.env.process(self._replica(replica)))
        if self.core.evented:
            self._clock = self.env.process(self._arrivals())
        if self._progress is not None:
            span = (
                self.horizon_s if self.horizon_s is not None else self.core.admission.last_arrival_s
            )
            if span:
                self.env.process(self._monitor(span))
        self.env.run(until=self.horizon_s)
        if self.horizon_s is not None:
            end_s = self.horizon_s
        else:
            end_s = self.core.quiet_end_s(self.env.now)
        if self._progress is not None:
            self._progress(1.0)
        return self.core.records(end_s, self.warmup_s)
