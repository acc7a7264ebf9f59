"""The shared FIFO queue over an open-loop arrival array.

Open-loop arrivals are known in advance, so the queue never receives one event
per arrival: before every decision the engine calls `advance(now_s)`, which
admits (or rejects) every arrival up to and including `now_s` in bulk and drops
requests that have waited longer than the admission timeout. The queue stores
request ids in a preallocated array; `buf[head:tail]` is the queue, oldest first.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from sim.engine.records import DROPPED, REJECTED


class ArrivalQueue:
    """FIFO of admitted requests, fed lazily from a sorted array of arrival times."""

    def __init__(
        self,
        arrival_s: np.ndarray,
        outcome: np.ndarray,
        max_queue: int | None = None,
        timeout_s: float | None = None,
    ):
        self._times = arrival_s.tolist()  # Python floats: fast scalar reads for policies
        self._n = len(self._times)
        self._outcome = outcome
        self._max_queue = max_queue
        self.timeout_s = timeout_s
        # admitted ids in queue order; while nothing was rejected, buf[i] == i already
        self.buf = np.arange(self._n, dtype=np.int64)
        self.head = 0  # first id still queued (index into buf)
        self.tail = 0  # one past the last admitted (index into buf)
        self.next_arrival = 0  # first request id that has not arrived yet

    # ---- QueueView --------------------------------------------------------------------
    def __len__(self) -> int:
        return self.tail - self.head

    def arrival_s(self, position: int) -> float:
        return self._times[self.buf[self.head + position]]

    # ---- engine side ------------------------------------------------------------------
    def advance(self, now_s: float) -> None:
        """Admit every arrival at or before `now_s` and expire requests that waited too long."""
        stop = bisect_right(self._times, now_s, self.next_arrival)
        if self._max_queue is None:
            self._admit_all(stop)
        elif self.timeout_s is None:
            self._admit_bounded(stop)
        else:
            # both rules: a request that expires before an arrival frees its place for it
            for i in range(self.next_arrival, stop):
                self._expire(self._times[i])
                self._admit_bounded(i + 1)
        if self.timeout_s is not None:
            self._expire(now_s)

    def _admit_all(self, stop: int) -> None:
        count = stop - self.next_arrival
        if count <= 0:
            return
        if self.tail != self.next_arrival:  # earlier rejections shifted the buffer
            self.buf[self.tail : self.tail + count] = np.arange(self.next_arrival, stop)
        self.tail += count
        self.next_arrival = stop

    def _admit_bounded(self, stop: int) -> None:
        space = self._max_queue - (self.tail - self.head)
        admitted_stop = min(stop, self.next_arrival + max(space, 0))
        self._admit_all(admitted_stop)
        if stop > admitted_stop:
            self._outcome[admitted_stop:stop] = REJECTED
            self.next_arrival = stop

    def _expire(self, now_s: float) -> None:
        cutoff = now_s - self.timeout_s
        buf, times = self.buf, self._times
        while self.head < self.tail and times[buf[self.head]] < cutoff:
            self._outcome[buf[self.head]] = DROPPED
            self.head += 1

    def take(self, count: int) -> np.ndarray:
        """Remove and return the ids of the `count` oldest queued requests."""
        ids = self.buf[self.head : self.head + count]
        self.head += count
        return ids

    def time_queue_reaches(self, length: int) -> float | None:
        """The earliest time the queue could hold `length` requests, from future arrivals alone.

        It can only be early (later rejections or expiries), never late, so a driver
        that wakes then and asks the policy again never misses a launch.
        """
        needed = length - (self.tail - self.head)
        if needed <= 0:
            return None
        i = self.next_arrival + needed - 1
        return self._times[i] if i < self._n else None

    @property
    def exhausted(self) -> bool:
        """No request will ever arrive again."""
        return self.next_arrival >= self._n
