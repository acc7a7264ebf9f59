"""The policy protocol: a clock-free decision from the queue state and the current time.

A policy never sleeps and never touches SimPy or threads. Whoever drives it (the
SimPy engine or the live runner) asks `decide(now_s, queue)` whenever a replica
is free and something may have changed, and gets back either a `Launch` or a
`Wait`. A `Wait` names the conditions under which the answer could change (a
time, a queue length), so the driver knows when to ask again; asking earlier is
always allowed and simply returns another `Wait`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# Decisions are plain values, made once per decision on the simulator's hottest path: not
# frozen (a frozen dataclass costs three times as much to build), but never changed.


@dataclass(slots=True)
class Launch:
    """Start a batch of the `count` oldest queued requests, run (and costed) at `padded_size`."""

    count: int
    padded_size: int


@dataclass(slots=True)
class Wait:
    """Launch nothing now; decide again at `until_s` or once the queue holds `until_queue_len`.

    None means no such condition. Both None: only a later completion or driver
    event can change the answer.
    """

    until_s: float | None = None
    until_queue_len: int | None = None


@dataclass(slots=True)
class Drop:
    """Remove the first `count` requests in queue order, counted as dropped; then ask again."""

    count: int


Decision = Launch | Wait | Drop


class QueueView(Protocol):
    """What a policy may read of the queue, in queue order (position 0 is served first).

    The order is the one the policy asks for with its `order` attribute: "fifo"
    (higher class priority first, then arrival) or "edf" (earliest deadline first).
    """

    def __len__(self) -> int: ...

    def arrival_s(self, position: int) -> float:
        """Arrival time of the request at `position`."""
        ...

    def deadline_s(self, position: int) -> float:
        """Deadline of the request at `position` (inf when it has none)."""
        ...


@runtime_checkable
class Policy(Protocol):
    """A batching policy. Implementations are plain objects shared by simulator and live runner."""

    name: str
    order: str  # "fifo" or "edf": the queue order this policy decides on

    def decide(self, now_s: float, queue: QueueView) -> Decision:
        """What a free replica should do at `now_s` given `queue`."""
        ...

    def launch_sizes(self) -> set[int]:
        """Every padded batch size this policy can launch (to check against the profile)."""
        ...

    @property
    def max_batch(self) -> int:
        """The largest number of requests in one batch."""
        ...


class LearningPolicy(Policy, Protocol):
    """A policy that also learns from finished batches (the driver reports each one)."""

    def on_batch_done(self, now_s: float, size: int, padded_size: int, service_s: float) -> None:
        """Batch of `size` (run as `padded_size`) finished at `now_s` after `service_s` of work."""
        ...


class StepLevelPolicy(Protocol):
    """A step-level (continuous batching) policy: the core runs iterations over the
    requests in flight and asks only how many waiting requests the next one admits."""

    name: str
    order: str
    step_level: bool  # True: the registry and the core run it step by step

    def admit(self, now_s: float, queue: QueueView, in_flight: int) -> int:
        """How many of the waiting requests join the next iteration (0: none)."""
        ...

    def launch_sizes(self) -> set[int]: ...

    @property
    def max_batch(self) -> int: ...


def every_size_up_to(max_batch: int) -> set[int]:
    """The launch sizes of a policy that runs any batch of 1..max_batch unpadded."""
    return set(range(1, max_batch + 1))


def seconds(value_ms: float | None, name: str) -> float | None:
    """A millisecond setting (None: none) in seconds, refused when negative."""
    if value_ms is None:
        return None
    if value_ms < 0:
        raise ValueError(f"{name} must be >= 0")
    return value_ms / 1000.0


class Capped:
    """What most built-in policies share: batches of at most `max_batch` (checked), run
    unpadded, and an optional timer `max_wait_ms` (None: none) kept in seconds too."""

    def __init__(self, max_batch: int, max_wait_ms: float | None = None, min_batch: int = 1):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if not 1 <= min_batch <= max_batch:
            raise ValueError("min_batch must be between 1 and max_batch")
        self._max_wait_s = seconds(max_wait_ms, "max_wait_ms")
        self._max_batch = max_batch
        self.min_batch = min_batch
        self.max_wait_ms = max_wait_ms

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def launch_sizes(self) -> set[int]:
        return every_size_up_to(self._max_batch)


def pad_table(max_batch: int, allowed_sizes: list[int] | None) -> list[int]:
    """pad[k] = the size a batch of k requests runs as: the next allowed size >= k."""
    if not allowed_sizes:
        return list(range(max_batch + 1))
    allowed = sorted(allowed_sizes)
    table = [0]
    for k in range(1, max_batch + 1):
        table.append(next(a for a in allowed if a >= k))
    return table
