"""Execution-time predictors: how long a batch takes in simulation, chosen once per run.

- `PlainService`: one draw from the profile at the padded size.
- `ShapedService`: the draw from the variant of the batch's shape (the smallest measured
  shape at least as large as its largest request's).
- `AfterIdleService`: the draw from the idle level the replica's idle time reached (the
  largest level <= the time since its previous batch ended; no previous batch: the
  largest level).

- `GuidedService`: a fleet mixing RTC-guided and other robots, the guided model for a
  batch holding a guided request, else the plain one.
- `StagedService`: by stage, for batches that run a chosen number of steps (request
  level: the prefix and `steps` steps at the padded size) or step by step (an iteration:
  the prefix of the admitted requests and one step of those in flight). A batch's stages
  share one uniform, as a staged profile's draws do (sim.profiles.profile.combined).

Each is called as `service(replica, now_s, start)` with the core's `Start` and returns
seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from sim.profiles.profile import Profile, ServiceSampler


class PlainService:
    def __init__(self, sampler: ServiceSampler):
        self._sampler = sampler

    def __call__(self, replica: int, now_s: float, start) -> float:
        return self._sampler(start.padded)


class ShapedService:
    def __init__(self, samplers: Mapping[int, ServiceSampler]):
        self._samplers = dict(samplers)

    def __call__(self, replica: int, now_s: float, start) -> float:
        return self._samplers[start.variant](start.padded)


class AfterIdleService:
    def __init__(self, levels: Sequence[tuple[float, ServiceSampler]], replicas: int):
        # (seconds idle, sampler), ascending
        self._levels = sorted(levels, key=lambda level: level[0])
        self._last_end_s = [-math.inf] * replicas

    def __call__(self, replica: int, now_s: float, start) -> float:
        idle_s = now_s - self._last_end_s[replica]
        sampler = self._levels[0][1]
        for level_s, level_sampler in self._levels:
            if idle_s >= level_s:
                sampler = level_sampler
        service_s = sampler(start.padded)
        self._last_end_s[replica] = now_s + service_s  # as the clock will add it
        return service_s


class StagedService:
    def __init__(
        self,
        prefix: Mapping[int | None, Profile] | None,
        step: Mapping[int | None, Profile],
        full_steps: int,
        rng: np.random.Generator,
    ):
        # one stream of uniforms for the batches; the samplers only evaluate draws
        self._u = ServiceSampler(next(iter(step.values())), rng)
        self._prefix = None if prefix is None else {k: p.sampler(rng) for k, p in prefix.items()}
        self._step = {k: p.sampler(rng) for k, p in step.items()}
        self._full = full_steps
        samplers = [*self._step.values(), *(self._prefix or {}).values()]
        self._fixed = all(s.deterministic for s in samplers)

    def __call__(self, replica: int, now_s: float, start) -> float:
        u = 0.5 if self._fixed else self._u.uniform()
        if start.admitted is None:  # request level: every stage, the last `steps` times
            size = start.padded
            steps = self._full if start.steps is None else start.steps
            total = steps * self._step[start.variant].at(size, u)
            if self._prefix is not None:
                total = self._prefix[start.variant].at(size, u) + total
            return total
        total = self._step[start.variant].at(start.count, u)  # one step for all in flight
        if start.admitted and self._prefix is not None:
            total = self._prefix[start.admitted_variant].at(start.admitted, u) + total
        return total


class GuidedService:
    """A fleet mixing RTC-guided and other robots: a batch holding a guided request
    (`start.guided`) costs what the guided model draws, any other the plain model's."""

    def __init__(self, plain: ServiceModel, guided: ServiceModel):
        self._plain, self._guided = plain, guided

    def __call__(self, replica: int, now_s: float, start) -> float:
        return (self._guided if start.guided else self._plain)(replica, now_s, start)


ServiceModel = PlainService | ShapedService | AfterIdleService | StagedService | GuidedService
