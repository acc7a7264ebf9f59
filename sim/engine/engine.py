"""The SimPy engine: the server core driven by a simulated clock.

One SimPy process per replica, and nothing else: a replica asks the core what to do; on
`Start` it draws the batch's service time from the service model, tells the core when the
batch will end and holds for it; on `Sleep` it sleeps until the core's moment (a server
that sleeps wakes `wake_latency_s` late). Arrivals never cost an event: open-loop ones are
known in advance, and a robot fleet's next requests are known once their answers are, so
the core admits both in bulk before each decision.
"""

from __future__ import annotations

from collections.abc import Callable

import simpy

from sim.core.records import RunRecords
from sim.core.server import ServerCore, ServerSpec, Start
from sim.core.traffic import ClosedLoopTraffic, OpenTraffic
from sim.engine.service import ServiceModel

ProgressFn = Callable[[float], None]


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

    def _replica(self, replica: int):
        env, core, service = self.env, self.core, self.service
        late_s = self.wake_latency_s
        closed = core.closed
        watch = closed and core.replicas > 1  # only then can a replica's moment move
        while True:
            now = env.now
            action = core.decide(replica, now)
            if watch and core.rewakes:
                self._rewake()
            if type(action) is Start:
                service_s = service(replica, now, action)
                end_s = now + service_s  # what the clock will read then (SimPy adds the same)
                core.end(action.batch, end_s)
                if watch and core.rewakes:
                    self._rewake()
                yield env.timeout(service_s)
                core.free(replica, end_s, service_s)
                continue
            wake = action.until_s
            if wake is None and not closed:
                return  # open loop: no arrival can come and no timer is set
            while True:
                try:
                    if wake is None:  # closed loop: until another replica's answer wakes it
                        yield env.event()
                    else:
                        delay = wake - now
                        # a server that sleeps wakes late; one whose moment has come does not
                        yield env.timeout(delay + late_s if delay > 0 else 0.0)
                    break
                except simpy.Interrupt as moved:
                    wake, now = moved.cause, env.now

    def _rewake(self) -> None:
        for replica, wake_s in self.core.take_rewakes():
            self._processes[replica].interrupt(wake_s)

    def _monitor(self, horizon_s: float, ticks: int = 100):
        step = horizon_s / ticks
        for i in range(1, ticks + 1):
            yield self.env.timeout(step)
            self._progress(i / ticks)

    def run(self) -> RunRecords:
        """Run to the horizon (or until nothing can happen) and return the records."""
        for replica in range(self.core.replicas):
            self._processes.append(self.env.process(self._replica(replica)))
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
