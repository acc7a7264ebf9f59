"""Dispatchers: which replica's queue an arriving request joins (per-replica queues only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sim.engine.queue import Queue
from sim.profile import Profile

DISPATCHERS = ("round-robin", "shortest-queue", "least-work", "power-of-two")


class RoundRobin:
    """Arrival i joins replica i mod N."""

    def __init__(self, replicas: int):
        self._replicas = replicas
        self._next = 0

    def __call__(self, request: int, now_s: float) -> int:
        index = self._next
        self._next = (index + 1) % self._replicas
        return index


class ShortestQueue:
    """The replica with the fewest waiting requests (ties: the lowest index)."""

    def __init__(self, queues: Sequence[Queue]):
        self._queues = queues

    def __call__(self, request: int, now_s: float) -> int:
        lengths = [len(q) for q in self._queues]
        return lengths.index(min(lengths))


class LeastWork:
    """The replica with the least predicted outstanding work (ties: the lowest index).

    Predicted work = what the profile's median says is left of the running batch
    (`busy_until_s[r]` - now, set by the engine at each launch) + the time to serve the
    queue in batches of max_batch: (L // B) * s(B) + s(L mod B) for L queued.
    """

    def __init__(
        self,
        queues: Sequence[Queue],
        profile: Profile,
        max_batch: int,
        busy_until_s: list[float],
    ):
        self._queues = queues
        self._busy_until_s = busy_until_s
        self._max_batch = max_batch
        self._batch_s = [0.0] + [profile.latency_ms(b) / 1000.0 for b in range(1, max_batch + 1)]

    def predicted_work_s(self, index: int, now_s: float) -> float:
        waiting = len(self._queues[index])
        full, rest = divmod(waiting, self._max_batch)
        queued = full * self._batch_s[self._max_batch] + self._batch_s[rest]
        return max(self._busy_until_s[index] - now_s, 0.0) + queued

    def __call__(self, request: int, now_s: float) -> int:
        work = [self.predicted_work_s(i, now_s) for i in range(len(self._queues))]
        return work.index(min(work))


class PowerOfTwo:
    """Two distinct replicas drawn at random; the one with the shorter queue (ties: the first)."""

    def __init__(self, queues: Sequence[Queue], rng: np.random.Generator):
        self._queues = queues
        self._rng = rng
        self._pairs: list[list[int]] = []

    def __call__(self, request: int, now_s: float) -> int:
        n = len(self._queues)
        if n == 1:
            return 0
        if not self._pairs:
            first = self._rng.integers(0, n, 4096)
            second = (first + self._rng.integers(1, n, 4096)) % n  # distinct from first
            self._pairs = np.stack([first, second], axis=1).tolist()[::-1]
        a, b = self._pairs.pop()
        return b if len(self._queues[b]) < len(self._queues[a]) else a


def make_dispatcher(
    name: str,
    queues: Sequence[Queue],
    profile: Profile,
    max_batch: int,
    busy_until_s: list[float],
    rng: np.random.Generator,
) -> Callable[[int, float], int]:
    if name == "round-robin":
        return RoundRobin(len(queues))
    if name == "shortest-queue":
        return ShortestQueue(queues)
    if name == "least-work":
        return LeastWork(queues, profile, max_batch, busy_until_s)
    if name == "power-of-two":
        return PowerOfTwo(queues, rng)
    raise ValueError(f"unknown dispatcher {name!r}; one of {', '.join(DISPATCHERS)}")
