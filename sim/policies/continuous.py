"""Step-level (continuous) batching: iterations over the requests in flight, as Orca and
vLLM schedule LLM decoding, here across robots, for a staged model whose last stage
repeats K times (README, "Staged models", on how OxyGen and ActionFlow differ)."""

from __future__ import annotations

from sim.policies.base import QueueView, every_size_up_to


class ContinuousPolicy:
    """Admit waiting requests into the running iteration loop.

    A replica runs iterations back to back while any request is in flight or waiting. Each
    iteration admits up to `max_batch` minus the in-flight count of the waiting requests,
    in queue order (at most `max_admit` of them, when set: chunked admission, which bounds
    how much prefix work one iteration carries, as Sarathi's chunked prefill does), runs
    their prefix as one batch and one step for everyone in flight. The server core applies
    the rest (docs/semantics.md, "Continuous batching"); this object only answers how many
    to admit.
    """

    name = "continuous"
    order = "fifo"
    step_level = True  # the server core runs iterations, not request-level batches

    def __init__(self, max_batch: int, max_admit: int | None = None, min_steps: int | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_admit is not None and not 1 <= max_admit <= max_batch:
            raise ValueError("max_admit must lie between 1 and max_batch")
        if min_steps is not None and min_steps < 1:
            raise ValueError("min_steps must be >= 1")
        self._max_batch = max_batch
        self.max_admit = max_admit
        self.min_steps = min_steps
        self._admit_cap = max_batch if max_admit is None else max_admit

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def launch_sizes(self) -> set[int]:
        return every_size_up_to(self._max_batch)

    def admit(self, now_s: float, queue: QueueView, in_flight: int) -> int:
        """How many of the waiting requests join the next iteration (0: none)."""
        return min(len(queue), self._max_batch - in_flight, self._admit_cap)

    def __repr__(self) -> str:
        return (
            f"ContinuousPolicy(max_batch={self._max_batch}, max_admit={self.max_admit}, "
            f"min_steps={self.min_steps})"
        )
