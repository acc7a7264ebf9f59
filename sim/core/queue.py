"""Queues of waiting requests, and the admission rules that fill them.

A queue holds request ids in the order its policy serves them. Requests are numbered in
arrival order, and every figure of a request (arrival, deadline, priority) lives in the
server core's columns, which the queue reads by id.

Admission (`Admission`) is written once for open and closed loops: an arriving request
joins the queue its dispatcher picks (the shared queue without one), unless that queue
already holds `max_queue` requests (rejected); a request that has waited strictly longer
than `timeout_s` without starting is dropped. Open-loop arrivals are known in advance,
so no queue receives one event per arrival: before every decision the core calls
`Admission.advance(now_s)`, which admits every arrival up to `now_s` in order. Between
two decisions a queue only grows, so admitting the arrivals in between lazily, one after
another, gives exactly what admitting each at its own instant would.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Sequence

import numpy as np

from sim.core.records import DROPPED, REJECTED


def expires_at_s(arrival_s: float, timeout_s: float) -> float:
    """The first instant at which a request that arrived at `arrival_s` has waited strictly
    longer than `timeout_s` (now - timeout > arrival, in floating point): it is dropped
    then, and at exactly the timeout it can still start."""
    t = arrival_s + timeout_s
    while t - timeout_s > arrival_s:  # rounding put it late: step back
        t = math.nextafter(t, -math.inf)
    while not t - timeout_s > arrival_s:
        t = math.nextafter(t, math.inf)
    return t


class RangeQueue:
    """The shared FIFO queue while every arrival is admitted in order: requests head..tail-1,
    with no buffer at all."""

    def __init__(self, times: list[float], deadlines: list[float]):
        self._times = times
        self._deadlines = deadlines
        self.head = 0
        self.tail = 0

    def __len__(self) -> int:
        return self.tail - self.head

    def arrival_s(self, position: int) -> float:
        return self._times[self.head + position]

    def deadline_s(self, position: int) -> float:
        return self._deadlines[self.head + position]

    def push_range(self, start: int, stop: int) -> None:
        """Admit requests start..stop-1, which follow the tail (start == tail)."""
        self.tail = stop

    def take(self, count: int) -> range:
        """Remove and return the first `count` ids."""
        head = self.head
        self.head = head + count
        return range(head, head + count)

    def expire(self, now_s: float, timeout_s: float) -> range:
        """Remove and return every request that has waited longer than `timeout_s` (FIFO: all
        at the front)."""
        start, times = self.head, self._times
        cutoff_s = now_s - timeout_s
        while self.head < self.tail and times[self.head] < cutoff_s:
            self.head += 1
        return range(start, self.head)

    def oldest_arrival_s(self) -> float | None:
        return self._times[self.head] if self.tail > self.head else None

    def ids(self) -> list[int]:
        return list(range(self.head, self.tail))


class FifoQueue:
    """Request ids in arrival order: `buffer[head:]` waits."""

    # compact the buffer when this many taken ids lie before the head
    _COMPACT = 4096

    def __init__(self, times: list[float], deadlines: list[float]):
        self._times = times
        self._deadlines = deadlines
        self._buffer: list[int] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._buffer) - self._head

    def arrival_s(self, position: int) -> float:
        return self._times[self._buffer[self._head + position]]

    def deadline_s(self, position: int) -> float:
        return self._deadlines[self._buffer[self._head + position]]

    def push(self, request: int) -> None:
        self._buffer.append(request)

    def push_range(self, start: int, stop: int) -> None:
        self._buffer.extend(range(start, stop))

    def take(self, count: int) -> list[int]:
        head = self._head
        ids = self._buffer[head : head + count]
        self._head = head + count
        if self._head >= self._COMPACT:
            del self._buffer[: self._head]
            self._head = 0
        return ids

    def expire(self, now_s: float, timeout_s: float) -> list[int]:
        buffer, times = self._buffer, self._times
        stop = self._head
        cutoff_s = now_s - timeout_s
        while stop < len(buffer) and times[buffer[stop]] < cutoff_s:
            stop += 1
        return self.take(stop - self._head)

    def oldest_arrival_s(self) -> float | None:
        return self._times[self._buffer[self._head]] if len(self) else None

    def ids(self) -> list[int]:
        return self._buffer[self._head :]


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

    def take(self, count: int) -> list[int]:
        ids = [e[-1] for e in self._entries[:count]]
        del self._entries[:count]
        return ids

    def expire(self, now_s: float, timeout_s: float) -> list[int]:
        times, cutoff_s = self._times, now_s - timeout_s
        gone = [e[-1] for e in self._entries if times[e[-1]] < cutoff_s]
        if gone:
            self._entries = [e for e in self._entries if times[e[-1]] >= cutoff_s]
        return gone

    def oldest_arrival_s(self) -> float | None:
        times = self._times
        return min((times[e[-1]] for e in self._entries), default=None)

    def ids(self) -> list[int]:
        return [e[-1] for e in self._entries]


Queue = RangeQueue | FifoQueue | OrderedQueue


def queue_factory(
    order: str,
    times: list[float],
    deadlines: list[float],
    priority: Sequence[int] | None,
    *,
    known: bool,
    in_order: bool,
) -> Callable[[], Queue]:
    """The queue a policy serves from.

    EDF policies get deadline order unless deadlines are `known` in advance and come in
    arrival order (a column that is not a list holds one value); FIFO policies get class priority, then arrival, when classes differ in
    priority; otherwise arrival order. `in_order`: every arrival joins this one queue in
    order (the shared queue without admission limits), so the queue is a range of ids.
    """
    in_arrival_order = known and (
        not isinstance(deadlines, list) or not np.any(np.diff(deadlines) < 0)
    )
    if order == "edf" and not in_arrival_order:
        return lambda: OrderedQueue(times, deadlines, lambda i: (deadlines[i],))
    if order == "fifo" and priority is not None and len(set(priority)) > 1:
        prio = list(priority)
        return lambda: OrderedQueue(times, deadlines, lambda i: (-prio[i], times[i]))
    if in_order:
        return lambda: RangeQueue(times, deadlines)
    return lambda: FifoQueue(times, deadlines)


# how far ahead of the next arrival a decision's search looks first
_WINDOW = 64


Dispatcher = Callable[[int, float], int]  # (request id, now_s) -> queue index
FailFn = Callable[[Sequence[int], float], None]  # (request ids, when) -> tell their clients


class Admission:
    """Admits arrivals into the queues and drops requests that waited too long.

    `times` is the core's arrival column: open-loop arrivals are all there from the start,
    closed-loop ones are appended as they reach the server. `on_fail` is told of every
    rejected or dropped request, with the instant it happened (closed loop: its robot).
    """

    def __init__(
        self,
        times: list[float],
        queues: Sequence[Queue],
        outcome: np.ndarray,
        dispatch: Dispatcher | None = None,
        max_queue: int | None = None,
        timeout_s: float | None = None,
        on_fail: FailFn | None = None,
        on_push: Callable[[int], None] | None = None,
    ):
        self._times = times
        self._on_push = on_push  # told the index of each queue an arrival joins
        self.queues = list(queues)
        self.outcome = outcome
        self._on_fail = on_fail
        self._dispatch = dispatch
        self._max_queue = max_queue
        self.timeout_s = timeout_s
        self.next_arrival = 0  # first request id not admitted (or rejected) yet
        self._bulk = (
            len(self.queues) == 1
            and not isinstance(self.queues[0], OrderedQueue)
            and dispatch is None
            and on_fail is None
            and (max_queue is None or timeout_s is None)
        )

    # ---- open loop ----------------------------------------------------------------------
    def advance(self, now_s: float, inclusive: bool = True) -> None:
        """Admit or reject every arrival at or before `now_s` (`inclusive` False: before it),
        then expire what waited too long."""
        start = self.next_arrival
        times = self._times
        # the first arrival after now: few arrive between two decisions, so look just
        # ahead first (bisecting the whole column touches memory far from them)
        lo, hi = start, start + _WINDOW
        if hi >= len(times):
            hi = len(times)
        elif times[hi] <= now_s if inclusive else times[hi] < now_s:
            lo, hi = hi, len(times)
        stop = (bisect_right if inclusive else bisect_left)(times, now_s, lo, hi)
        if stop > start:
            if self._bulk:  # one queue, and no rejection depends on an expiry
                admitted_stop = stop
                if self._max_queue is not None:
                    room = self._max_queue - len(self.queues[0])
                    admitted_stop = min(stop, start + max(room, 0))
                    self.outcome[admitted_stop:stop] = REJECTED
                self.queues[0].push_range(start, admitted_stop)
                self.next_arrival = stop
            else:
                for request in range(start, stop):
                    self.admit(request)
        if self.timeout_s is not None:
            self.expire(now_s)

    def time_queue_reaches(self, queue: Queue, length: int) -> float | None:
        """The earliest time `queue` could hold `length` requests, from future arrivals alone
        (open loop). It can only be early (arrivals rejected, expired or dispatched
        elsewhere), never late, so a driver that wakes then and asks again misses nothing."""
        needed = length - len(queue)
        if needed <= 0:
            return None
        i = self.next_arrival + needed - 1
        return self._times[i] if i < len(self._times) else None

    # ---- one arrival at a time (dispatch, limits, closed loop) --------------------------
    def admit(self, request: int) -> None:
        """Request `request` arrives now (at its arrival time): it joins a queue or is rejected."""
        at_s = self._times[request]
        if self.timeout_s is not None:
            # a request that expired before this arrival has freed its place
            self.expire(at_s)
        self.next_arrival = request + 1
        index = 0 if self._dispatch is None else self._dispatch(request, at_s)
        queue = self.queues[index]
        if self._max_queue is not None and len(queue) >= self._max_queue:
            self.outcome[request] = REJECTED
            if self._on_fail is not None:
                self._on_fail((request,), at_s)
        else:
            queue.push(request)
            if self._on_push is not None:
                self._on_push(index)

    def expire(self, now_s: float) -> None:
        """Drop every queued request that has waited strictly longer than the timeout."""
        timeout_s = self.timeout_s
        for queue in self.queues:
            gone = queue.expire(now_s, timeout_s)
            if len(gone):
                self.outcome[gone] = DROPPED
                if self._on_fail is not None:
                    for request in gone:  # each is told when its own wait ran out
                        self._on_fail((request,), expires_at_s(self._times[request], timeout_s))

    def next_expiry_s(self) -> float:
        """When the next queued request expires (inf: no timeout, or nothing queued)."""
        if self.timeout_s is None:
            return math.inf
        oldest = [a for q in self.queues if (a := q.oldest_arrival_s()) is not None]
        return expires_at_s(min(oldest), self.timeout_s) if oldest else math.inf

    @property
    def last_arrival_s(self) -> float | None:
        return self._times[-1] if self._times else None
