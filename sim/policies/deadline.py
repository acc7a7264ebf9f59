"""Deadline-aware batching: earliest deadline first, launch at the last safe moment."""

from __future__ import annotations

import math
from typing import Literal

from sim.policies.base import Capped, Decision, Drop, Launch, QueueView, Wait
from sim.profiles.profile import Profile

# comparisons against deadlines forgive a nanosecond of floating-point noise
TOLERANCE_S = 1e-9


class DeadlinePolicy(Capped):
    """Plan batches against request deadlines, as Clockwork and Nexus do.

    The queue is in earliest-deadline-first order. Predicted batch latency is the
    profile's `quantile` at the batch size (0.5: the median; 0.99: plan for the tail).
    - Requests at the front that would miss their deadline even alone are dropped
      (`on_miss: drop`) or served at once, ahead of the rest (`on_miss: serve`).
    - With `max_batch` or more queued, a batch launches at once.
    - Otherwise the policy waits until the last moment every queued request can still
      be met, were the queue served from then on in back-to-back batches of max_batch
      (for the front batch: earliest deadline - latency(queued)), and asks again at each
      arrival, since a larger batch has a larger latency.
    - At launch, the batch is the largest (up to max_batch) whose predicted latency
      keeps every member within its deadline. With `on_miss: drop` the policy may also
      give up the j most urgent requests when that lets a batch of b later ones all
      make their deadlines: it picks the (j, b) with the most b - j (ties: fewer
      dropped), as Nexus's early drop does, so one urgent request cannot pin every
      batch to size 1. With `on_miss: serve` nothing is given up (j = 0).
    """

    name = "deadline"
    order = "edf"

    def __init__(
        self,
        profile: Profile,
        max_batch: int,
        quantile: float = 0.5,
        on_miss: Literal["drop", "serve"] = "drop",
        min_steps: int | None = None,
        floor_profile: Profile | None = None,
    ):
        super().__init__(max_batch)
        self.min_steps = min_steps
        if not 0.5 <= quantile <= 0.99:
            raise ValueError("quantile must lie between 0.5 and 0.99")
        if on_miss not in ("drop", "serve"):
            raise ValueError("on_miss must be 'drop' or 'serve'")
        self.quantile = quantile
        self.on_miss = on_miss
        self.predicted_s = [0.0] + [
            profile.latency_ms(b, quantile) / 1000.0 for b in range(1, max_batch + 1)
        ]
        # with a floor of steps (`floor_profile`: the model run at min_steps), what can still
        # be met is judged at the floor: a request is late when even a degraded batch
        # misses, and a launch's size is what fits at the floor; waiting still plans with
        # the full steps (the server core then runs the most steps that fit, steps.py)
        self.floor_s = self.predicted_s
        if floor_profile is not None:
            self.floor_s = [0.0] + [
                floor_profile.latency_ms(b, quantile) / 1000.0 for b in range(1, max_batch + 1)
            ]

    def largest_within(self, slack_s: float, cap: int) -> int:
        """The largest batch size <= cap whose predicted latency (at the floor of steps, if
        any) fits in `slack_s` (0: none)."""
        predicted = self.floor_s
        for b in range(cap, 0, -1):
            if predicted[b] <= slack_s + TOLERANCE_S:
                return b
        return 0

    def decide(self, now_s: float, queue: QueueView) -> Decision:
        n = len(queue)
        if n == 0:
            return Wait(until_queue_len=1)
        alone_s = self.floor_s[1]
        late = 0
        while late < n and now_s + alone_s > queue.deadline_s(late) + TOLERANCE_S:
            late += 1
        cap = min(n, self._max_batch)
        if late:
            if self.on_miss == "drop":
                return Drop(late)
            if late >= cap:
                return Launch(cap, cap)
            fit = self.largest_within(queue.deadline_s(late) - now_s, cap)
            size = max(fit, late)
            return Launch(size, size)
        earliest_s = queue.deadline_s(0)
        if math.isinf(earliest_s):  # nothing queued has a deadline: serve at once
            return Launch(cap, cap)
        if n < self._max_batch:
            latest_start_s = self.latest_start_s(queue)
            if now_s < latest_start_s:
                return Wait(until_s=latest_start_s, until_queue_len=n + 1)
        if self.on_miss == "serve":
            size = self.largest_within(earliest_s - now_s, cap)
            return Launch(size, size)
        dropped, size = self.best_window(now_s, queue, cap)
        if dropped:
            return Drop(dropped)
        return Launch(size, size)

    def latest_start_s(self, queue: QueueView) -> float:
        """The last moment the next batch can start with every queued request still on time,
        if the queue is then served in back-to-back batches of max_batch (EDF order): for
        the request at position i, in batch k = i // max_batch, deadline_i minus the
        predicted time of batches 0..k."""
        n = len(queue)
        size = self._max_batch
        latest = math.inf
        finish_s = 0.0
        for k in range(0, n, size):
            finish_s += self.predicted_s[min(size, n - k)]
            # within batch k the earliest deadline binds (EDF order)
            latest = min(latest, queue.deadline_s(k) - finish_s)
        return latest

    def best_window(self, now_s: float, queue: QueueView, cap: int) -> tuple[int, int]:
        """(j, b): give up the first j, launch the next b, all on time; most b - j wins."""
        n = len(queue)
        best_j, best_b = 0, 0
        for b in range(cap, 0, -1):
            if b < best_b - best_j:
                break  # no smaller batch can match the best, even with nothing dropped
            need_s = now_s + self.floor_s[b] - TOLERANCE_S
            lo, hi = 0, n  # first position whose deadline is >= need_s (EDF order)
            while lo < hi:
                mid = (lo + hi) // 2
                if queue.deadline_s(mid) < need_s:
                    lo = mid + 1
                else:
                    hi = mid
            if lo + b > n:
                continue
            value, best = b - lo, best_b - best_j
            if value > best or (value == best and lo < best_j):
                best_j, best_b = lo, b
        return best_j, best_b

    def __repr__(self) -> str:
        return (
            f"DeadlinePolicy(max_batch={self._max_batch}, quantile={self.quantile}, "
            f"on_miss={self.on_miss!r})"
        )
