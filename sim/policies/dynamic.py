"""Dynamic batching with Triton's semantics (max batch, preferred sizes, queue delay)."""

from __future__ import annotations

from collections.abc import Sequence

from sim.policies.base import Capped, Decision, Launch, QueueView, Wait, pad_table


class DynamicPolicy(Capped):
    """Size-or-timeout batching, as Triton's dynamic batcher and TF Serving do it.

    A free replica launches at once when a `max_batch` batch can be formed, or
    else the largest preferred size that can; otherwise it launches everything
    queued (up to `max_batch`) once at least `min_batch` requests are queued and
    the oldest has waited `max_wait_ms`. `max_wait_ms=None` disables that timer;
    `max_wait_ms=0` launches min(queue, max_batch) as soon as `min_batch` are
    queued. With `allowed_sizes` a batch of k runs padded to the next allowed
    size >= k (CUDA-graph buckets, TF Serving's allowed_batch_sizes).
    """

    name = "dynamic"
    order = "fifo"

    def __init__(
        self,
        max_batch: int,
        max_wait_ms: float | None = None,
        min_batch: int = 1,
        preferred_sizes: Sequence[int] | None = None,
        allowed_sizes: Sequence[int] | None = None,
        min_steps: int | None = None,
    ):
        super().__init__(max_batch, max_wait_ms, min_batch)
        self.min_steps = min_steps  # applied by the server core (sim/core/steps.py)
        preferred = sorted(set(preferred_sizes or []))
        if any(not 1 <= p <= max_batch for p in preferred):
            raise ValueError("preferred_sizes must lie between 1 and max_batch")
        allowed = sorted(set(allowed_sizes or []))
        if allowed and allowed[-1] < max_batch:
            raise ValueError("the largest allowed size must be >= max_batch")
        if any(a < 1 for a in allowed):
            raise ValueError("allowed_sizes must be >= 1")
        self.preferred_sizes = preferred
        self.allowed_sizes = allowed
        self._pad = pad_table(max_batch, allowed or None)
        # largest preferred size <= n, and smallest preferred size > n, for every n < max_batch
        self._pref_at_most = [
            max((p for p in preferred if p <= n), default=0) for n in range(max_batch)
        ]
        self._pref_above = [
            min((p for p in preferred if p > n), default=max_batch) for n in range(max_batch)
        ]

    def launch_sizes(self) -> set[int]:
        return {self._pad[k] for k in range(1, self._max_batch + 1)}

    def decide(self, now_s: float, queue: QueueView) -> Decision:
        n = len(queue)
        cap = self._max_batch
        if n >= cap:
            return Launch(cap, self._pad[cap])
        preferred = self._pref_at_most[n]
        if preferred:
            return Launch(preferred, self._pad[preferred])
        next_len = self._pref_above[n]
        if self._max_wait_s is None:
            return Wait(until_queue_len=next_len)
        if n < self.min_batch:
            return Wait(until_queue_len=min(next_len, self.min_batch))
        deadline_s = queue.arrival_s(0) + self._max_wait_s
        if now_s >= deadline_s:
            return Launch(n, self._pad[n])
        return Wait(until_s=deadline_s, until_queue_len=next_len)

    def __repr__(self) -> str:
        return (
            f"DynamicPolicy(max_batch={self._max_batch}, max_wait_ms={self.max_wait_ms}, "
            f"min_batch={self.min_batch}, preferred_sizes={self.preferred_sizes}, "
            f"allowed_sizes={self.allowed_sizes})"
        )
