"""Queues of waiting requests, and the feed that fills them from an open-loop arrival array.

Open-loop arrivals are known in advance, so no queue receives one event per
arrival: before every decision the engine calls `Feed.advance(now_s)`, which
admits (or rejects) every arrival up to and including `now_s`, in order, and
drops requests that have waited longer than the admission timeout. Between two
decisions a queue only grows, so handling the arrivals in between lazily, one
after another, gives exactly what handling each at its own instant would.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Callable, Sequence

import numpy as np

from sim.engine.records import DROPPED, REJECTED


class FifoQueue:
    """Request ids in arrival order, in a preallocated array: `buf[head:tail]` waits."""

    def __init__(self, times: list[float], deadlines: list[float], prefilled: bool = False):
        self._times = times
        self._deadlines = deadlines
        n = len(times)
        # the shared queue starts as 0..n-1: while nothing is rejected, admitting costs nothing
        self.buf = np.arange(n, dtype=np.int64) if prefilled else np.empty(n, dtype=np.int64)
        self._prefilled = prefilled  # then buf[i] == i for every i >= tail, always
        self.head = 0
        self.tail = 0

    def __len__(self) -> int:
        return self.tail - self.head

    def arrival_s(self, position: int) -> float:
        return self._times[self.buf[self.head + position]]

    def deadline_s(self, position: int) -> float:
        return self._deadlines[self.buf[self.head + position]]

    def push(self, request: int) -> None:
        if self.tail == self.buf.size:  # closed loop: requests keep coming
            self.buf = np.concatenate(
                [self.buf, np.empty(max(self.buf.size, 1024), dtype=np.int64)]
            )
        self.buf[self.tail] = request
        self.tail += 1

    def push_range(self, start: int, stop: int) -> None:
        """Admit requests start..stop-1 (consecutive ids)."""
        count = stop - start
        if not (self._prefilled and self.tail == start):
            self.buf[self.tail : self.tail + count] = np.arange(start, stop)
        self.tail += count

    def take(self, count: int) -> np.ndarray:
        """Remove and return the first `count` ids."""
        ids = self.buf[self.head : self.head + count]
        self.head += count
        return ids

    def expire(self, cutoff_s: float) -> np.ndarray:
        """Remove and return every request that arrived before `cutoff_s` (all at the front)."""
        start = self.head
        times, buf = self._times, self.buf
        while self.head < self.tail and times[buf[self.head]] < cutoff_s:
            self.head += 1
        return buf[start : self.head]


class OrderedQueue:
    """Request ids kept sorted by a key: class priority then arrival, or deadline (EDF)."""

    def __init__(self, times: list[float], deadlines: list[float], key: Callable[[int], tuple]):
        self._times = times
        self._deadlines = deadlines
        self._key = key
        self._entries: list[tuple] = []  # (key..., id), sorted

    def __len__(self) -> int:
        return len(self._entries)

    def arrival_s(self, position: int) -> float:
        return self._times[self._entries[position][-1]]

    def deadline_s(self, position: int) -> float:
        return self._deadlines[self._entries[position][-1]]

    def push(self, request: int) -> None:
        insort(self._entries, (*self._key(request), request))

    def push_range(self, start: int, stop: int) -> None:
        for request in range(start, stop):
            self.push(request)

    def take(self, count: int) -> np.ndarray:
        ids = np.array([e[-1] for e in self._entries[:count]], dtype=np.int64)
        del self._entries[:count]
        return ids

    def expire(self, cutoff_s: float) -> np.ndarray:
        times = self._times
        gone = [e[-1] for e in self._entries if times[e[-1]] < cutoff_s]
        if gone:
            self._entries = [e for e in self._entries if times[e[-1]] >= cutoff_s]
        return np.array(gone, dtype=np.int64)


Queue = FifoQueue | OrderedQueue


def queue_factory(
    order: str,
    times: list[float],
    deadlines: list[float],
    priority: np.ndarray | None,
    *,
    growing: bool,
    prefilled: bool,
) -> Callable[[], Queue]:
    """The queue a policy serves from, the same in the engine and the live runner.

    EDF policies get deadline order unless deadlines already come in arrival order;
    FIFO policies get class priority, then arrival, when classes differ in priority;
    otherwise arrival order. `growing`: requests are created as the run goes on (closed
    loop), so nothing about their deadlines is known in advance.
    """
    if order == "edf" and (growing or np.any(np.diff(deadlines) < 0)):
        return lambda: OrderedQueue(times, deadlines, lambda i: (deadlines[i],))
    if order == "fifo" and priority is not None and np.unique(priority).size > 1:
        prio = priority.tolist()
        return lambda: OrderedQueue(times, deadlines, lambda i: (-prio[i], times[i]))
    return lambda: FifoQueue(times, deadlines, prefilled=prefilled and not growing)


Dispatcher = Callable[[int, float], int]  # (request id, now_s) -> queue index


class Feed:
    """Admits open-loop arrivals into the queues, lazily and in order."""

    def __init__(
        self,
        times: list[float],
        queues: Sequence[Queue],
        outcome: np.ndarray,
        dispatch: Dispatcher | None = None,
        max_queue: int | None = None,
        timeout_s: float | None = None,
        on_fail: Callable[[np.ndarray], None] | None = None,
    ):
        self._times = times  # grows while the run goes on, for closed-loop traffic
        self.queues = list(queues)
        self.outcome = outcome
        self._on_fail = on_fail
        self._dispatch = dispatch
        self._max_queue = max_queue
        self.timeout_s = timeout_s
        self.next_arrival = 0  # first request id that has not arrived yet
        single_fifo = len(self.queues) == 1 and isinstance(self.queues[0], FifoQueue)
        self._bulk = (
            single_fifo
            and dispatch is None
            and on_fail is None
            and (max_queue is None or timeout_s is None)
        )

    def advance(self, now_s: float) -> None:
        """Admit or reject every arrival at or before `now_s`, then expire what waited too long."""
        stop = bisect_right(self._times, now_s, self.next_arrival)
        if stop > self.next_arrival:
            if self._bulk:
                self._admit_bulk(stop)
            else:
                self._admit_each(stop)
        if self.timeout_s is not None:
            self._expire(now_s)

    def _admit_bulk(self, stop: int) -> None:
        queue, start = self.queues[0], self.next_arrival
        admitted_stop = stop
        if self._max_queue is not None:
            admitted_stop = min(stop, start + max(self._max_queue - len(queue), 0))
            self.outcome[admitted_stop:stop] = REJECTED
        queue.push_range(start, admitted_stop)
        self.next_arrival = stop

    def _admit_each(self, stop: int) -> None:
        for request in range(self.next_arrival, stop):
            if self.timeout_s is not None:
                # a request that expired before this arrival has freed its place
                self._expire(self._times[request])
            self.next_arrival = request + 1
            index = 0 if self._dispatch is None else self._dispatch(request, self._times[request])
            queue = self.queues[index]
            if self._max_queue is not None and len(queue) >= self._max_queue:
                self.outcome[request] = REJECTED
                if self._on_fail is not None:
                    self._on_fail(np.array([request]))
            else:
                queue.push(request)

    def _expire(self, now_s: float) -> None:
        cutoff_s = now_s - self.timeout_s
        for queue in self.queues:
            gone = queue.expire(cutoff_s)
            if gone.size:
                self.outcome[gone] = DROPPED
                if self._on_fail is not None:
                    self._on_fail(gone)

    def time_queue_reaches(self, queue: Queue, length: int) -> float | None:
        """The earliest time `queue` could hold `length` requests, from future arrivals alone.

        It can only be early (arrivals rejected, expired or dispatched elsewhere), never
        late, so a driver that wakes then and asks the policy again never misses a launch.
        """
        needed = length - len(queue)
        if needed <= 0:
            return None
        i = self.next_arrival + needed - 1
        return self._times[i] if i < len(self._times) else None

    @property
    def last_arrival_s(self) -> float | None:
        return self._times[-1] if self._times else None
