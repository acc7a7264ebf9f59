"""Execution-time predictors: how long a batch takes in simulation, chosen once per run.

- `PlainService`: one draw from the profile at the padded size.
- `ShapedService`: the draw from the variant of the batch's shape (the smallest measured
  shape at least as large as its largest request's).
- `AfterIdleService`: the draw from the idle level the replica's idle time reached (the
  largest level <= the time since its previous batch ended; no previous batch: the
  largest level).

Each is called as `service(replica, now_s, padded_size, variant)` and returns seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from sim.profile import ServiceSampler


class PlainService:
    def __init__(self, sampler: ServiceSampler):
        self._sampler = sampler

    def __call__(self, replica: int, now_s: float, padded: int, variant: int | None) -> float:
        return self._sampler(padded)


class ShapedService:
    def __init__(self, samplers: Mapping[int, ServiceSampler]):
        self._samplers = dict(samplers)

    def __call__(self, replica: int, now_s: float, padded: int, variant: int | None) -> float:
        return self._samplers[variant](padded)


class AfterIdleService:
    def __init__(self, levels: Sequence[tuple[float, ServiceSampler]], replicas: int):
        # (seconds idle, sampler), ascending
        self._levels = sorted(levels, key=lambda level: level[0])
        self._last_end_s = [-math.inf] * replicas

    def __call__(self, replica: int, now_s: float, padded: int, variant: int | None) -> float:
        idle_s = now_s - self._last_end_s[replica]
        sampler = self._levels[0][1]
        for level_s, level_sampler in self._levels:
            if idle_s >= level_s:
                sampler = level_sampler
        service_s = sampler(padded)
        self._last_end_s[replica] = now_s + service_s  # as the clock will add it
        return service_s


ServiceModel = PlainService | ShapedService | AfterIdleService
