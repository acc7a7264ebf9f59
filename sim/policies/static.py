"""Static batching: always a batch of exactly B (padded), after a fill or a timeout."""

from __future__ import annotations

from sim.policies.base import Capped, Decision, Launch, QueueView, Wait, seconds


class StaticPolicy(Capped):
    """Wait until `batch_size` requests are queued, or the oldest has waited `timeout_ms`.

    Every batch runs padded to `batch_size`: it costs the profile's time for B
    whatever the number of real requests in it. With `timeout_ms=None` the
    policy waits for a full batch however long that takes.
    """

    name = "static"
    order = "fifo"

    def __init__(self, batch_size: int, timeout_ms: float | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        super().__init__(batch_size)
        self._timeout_s = seconds(timeout_ms, "timeout_ms")
        self.batch_size = batch_size
        self.timeout_ms = timeout_ms

    def launch_sizes(self) -> set[int]:
        return {self.batch_size}  # always padded to B

    def decide(self, now_s: float, queue: QueueView) -> Decision:
        n = len(queue)
        b = self.batch_size
        if n >= b:
            return Launch(b, b)
        if self._timeout_s is None:
            return Wait(until_queue_len=b)
        if n == 0:
            return Wait(until_queue_len=1)
        deadline_s = queue.arrival_s(0) + self._timeout_s
        if now_s >= deadline_s:
            return Launch(n, b)
        return Wait(until_s=deadline_s, until_queue_len=b)

    def __repr__(self) -> str:
        return f"StaticPolicy(batch_size={self.batch_size}, timeout_ms={self.timeout_ms})"
