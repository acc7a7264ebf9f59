"""Adaptive batching: AIMD on the batch size against a latency target, as Clipper does."""

from __future__ import annotations

from sim.policies.base import Capped, Decision, Launch, QueueView, Wait


class AdaptivePolicy(Capped):
    """A dynamic batcher whose maximum batch size follows AIMD.

    It observes the *service time of each finished batch* (the model's time for the
    batch, not the requests' queueing) and adapts once per finished batch:
    - above `target_ms`: multiplicative back-off, cap <- max(min_batch, cap * backoff);
    - at or below it, when the batch filled the current cap: additive increase,
      cap <- min(max_batch, cap + step). A smaller batch says nothing about whether
      the cap is feasible, so it leaves the cap alone.
    Batches launch like `dynamic` with max_batch = floor(cap): at once when floor(cap)
    are queued, else everything queued once the oldest has waited `max_wait_ms`.
    """

    name = "adaptive"
    order = "fifo"

    def __init__(
        self,
        target_ms: float,
        max_batch: int,
        min_batch: int = 1,
        step: float = 1.0,
        backoff: float = 0.9,
        max_wait_ms: float | None = 0.0,
        initial_batch: int | None = None,
    ):
        super().__init__(max_batch, max_wait_ms, min_batch)
        if target_ms <= 0:
            raise ValueError("target_ms must be > 0")
        if step <= 0:
            raise ValueError("step must be > 0")
        if not 0 < backoff < 1:
            raise ValueError("backoff must lie strictly between 0 and 1")
        start = min_batch if initial_batch is None else initial_batch
        if not min_batch <= start <= max_batch:
            raise ValueError("initial_batch must be between min_batch and max_batch")
        self.target_ms = target_ms
        self._target_s = target_ms / 1000.0
        self.step = step
        self.backoff = backoff
        self.cap = float(start)
        self.history: list[float] = []  # the cap after each finished batch

    @property
    def current_batch(self) -> int:
        return int(self.cap)

    def decide(self, now_s: float, queue: QueueView) -> Decision:
        n = len(queue)
        b = int(self.cap)
        if n >= b:
            return Launch(b, b)
        if n == 0:
            return Wait(until_queue_len=1)
        if self._max_wait_s is None:
            return Wait(until_queue_len=b)
        deadline_s = queue.arrival_s(0) + self._max_wait_s
        if now_s >= deadline_s:
            return Launch(n, n)
        return Wait(until_s=deadline_s, until_queue_len=b)

    def on_batch_done(self, now_s: float, size: int, padded_size: int, service_s: float) -> None:
        if service_s > self._target_s:
            self.cap = max(float(self.min_batch), self.cap * self.backoff)
        elif size >= int(self.cap):
            self.cap = min(float(self._max_batch), self.cap + self.step)
        self.history.append(self.cap)

    def __repr__(self) -> str:
        return (
            f"AdaptivePolicy(target_ms={self.target_ms}, max_batch={self._max_batch}, "
            f"min_batch={self.min_batch}, step={self.step}, backoff={self.backoff}, "
            f"max_wait_ms={self.max_wait_ms})"
        )
