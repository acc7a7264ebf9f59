"""Deliberately bad policies, for sanity tests (as BLIS keeps them): a good policy must beat them."""

from __future__ import annotations

from sim.policies.base import Capped, Decision, Launch, QueueView, Wait


class LazyPolicy(Capped):
    """Always waits the full timer: launches only when the oldest has waited `max_wait_ms`,
    even when a full batch was ready long before."""

    name = "lazy"
    order = "fifo"

    def __init__(self, max_batch: int, max_wait_ms: float):
        if max_wait_ms is None:
            raise ValueError("max_wait_ms must be >= 0")
        super().__init__(max_batch, max_wait_ms)

    def decide(self, now_s: float, queue: QueueView) -> Decision:
        n = len(queue)
        if n == 0:
            return Wait(until_queue_len=1)
        deadline_s = queue.arrival_s(0) + self._max_wait_s
        if now_s >= deadline_s:
            size = min(n, self._max_batch)
            return Launch(size, size)
        return Wait(until_s=deadline_s)

    def __repr__(self) -> str:
        return f"LazyPolicy(max_batch={self._max_batch}, max_wait_ms={self.max_wait_ms})"
