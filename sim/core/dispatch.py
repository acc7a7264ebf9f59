"""Dispatchers: which replica's queue an arriving request joins (per-replica queues only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import add

import numpy as np

from sim.core.queue import Queue
from sim.profiles.profile import Profile

DISPATCHERS = ("round-robin", "shortest-queue", "least-work", "power-of-two")


@dataclass
class ReplicaLoad:
    """What dispatchers may know of each replica besides its queue; the engine keeps it current."""

    replicas: int
    running: list[int] = field(default_factory=list)  # requests in the running batch (0: idle)
    busy_until_s: list[float] = field(default_factory=list)  # predicted end of the running batch

    def __post_init__(self) -> None:
        self.running = [0] * self.replicas
        self.busy_until_s = [0.0] * self.replicas

    def in_system(self, queues: Sequence[Queue], index: int) -> int:
        return len(queues[index]) + self.running[index]


class RoundRobin:
    """Arrival i joins replica i mod N."""

    def __init__(self, replicas: int):
        self._replicas = replicas
        self._next = 0

    def __call__(self, request: int, now_s: float) -> int:
        index = self._next
        self._next = (index + 1) % self._replicas
        return index


def argmin_in_turn(values: list[float], start: int) -> int:
    """Index of the smallest value; ties go to the first at or after `start`, cyclically,
    so tied replicas take turns (as nginx's least_conn does) instead of the lowest always winning."""
    smallest = min(values)  # (min and index loop in C: a dispatch costs little per replica)
    try:
        return values.index(smallest, start % len(values))
    except ValueError:  # none at or after start: the first before it
        return values.index(smallest)


class ShortestQueue:
    """The replica with the fewest requests, waiting or in its running batch (join the shortest
    queue; ties take turns)."""

    def __init__(self, queues: Sequence[Queue], load: ReplicaLoad):
        self._queues = queues
        self._load = load
        self._turn = 0

    def __call__(self, request: int, now_s: float) -> int:
        # each replica's requests waiting and running (ReplicaLoad.in_system, for all at once)
        lengths = list(map(add, map(len, self._queues), self._load.running))
        chosen = argmin_in_turn(lengths, self._turn)
        self._turn = chosen + 1
        return chosen


class LeastWork:
    """The replica with the least predicted outstanding work (ties take turns).

    Predicted work = what the profile's median says is left of the running batch
    (its start + median latency - now) + the time to serve the queue in batches of
    max_batch: (L // B) * s(B) + s(L mod B) for L queued, s the profile's median.
    """

    def __init__(
        self, queues: Sequence[Queue], profile: Profile, max_batch: int, load: ReplicaLoad
    ):
        self._queues = queues
        self._busy_until_s = load.busy_until_s
        self._turn = 0
        self._max_batch = max_batch
        self._batch_s = [0.0] + [profile.latency_ms(b) / 1000.0 for b in range(1, max_batch + 1)]

    def predicted_work_s(self, index: int, now_s: float) -> float:
        waiting = len(self._queues[index])
        full, rest = divmod(waiting, self._max_batch)
        queued = full * self._batch_s[self._max_batch] + self._batch_s[rest]
        return max(self._busy_until_s[index] - now_s, 0.0) + queued

    def __call__(self, request: int, now_s: float) -> int:
        work = [self.predicted_work_s(i, now_s) for i in range(len(self._queues))]
        chosen = argmin_in_turn(work, self._turn)
        self._turn = chosen + 1
        return chosen


class PowerOfTwo:
    """Two distinct replicas drawn at random; the one with fewer requests, waiting or running
    (ties: the first drawn)."""

    def __init__(self, queues: Sequence[Queue], load: ReplicaLoad, rng: np.random.Generator):
        self._queues = queues
        self._load = load
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
        in_system = self._load.in_system
        return b if in_system(self._queues, b) < in_system(self._queues, a) else a


def make_dispatcher(
    name: str,
    queues: Sequence[Queue],
    profile: Profile,
    max_batch: int,
    load: ReplicaLoad,
    rng: np.random.Generator,
) -> Callable[[int, float], int]:
    if name == "round-robin":
        return RoundRobin(len(queues))
    if name == "shortest-queue":
        return ShortestQueue(queues, load)
    if name == "least-work":
        return LeastWork(queues, profile, max_batch, load)
    if name == "power-of-two":
        return PowerOfTwo(queues, load, rng)
    raise ValueError(f"unknown dispatcher {name!r}; one of {', '.join(DISPATCHERS)}")
