"""A batching policy of your own, as a plug-in: size-or-timeout batching written from scratch.

A scenario names it as `policy: {kind: size_or_timeout:SizeOrTimeout, max_batch: 16,
max_wait_ms: 5}`; the module is imported from the scenario's folder (or the working
directory) and the other keys are the class's keyword arguments. It follows the protocol
of sim/policies/base.py: `name`, `order`, `max_batch`, `launch_sizes()` and `decide()`.
It decides exactly as the built-in `dynamic` policy does with the same two keys, so the
two give the same figures (tests/test_plugins.py checks that).
"""

from sim.policies import Launch, Wait


class SizeOrTimeout:
    """Launch a full batch at once, else everything queued once the oldest has waited."""

    name = "size-or-timeout"
    order = "fifo"  # serve in arrival order ("edf": earliest deadline first)

    def __init__(self, max_batch: int, max_wait_ms: float):
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0

    def launch_sizes(self) -> set[int]:
        return set(range(1, self.max_batch + 1))  # never padded

    def decide(self, now_s: float, queue) -> Launch | Wait:
        queued = len(queue)
        if queued >= self.max_batch:
            return Launch(self.max_batch, self.max_batch)
        if queued == 0:
            return Wait(until_queue_len=1)  # ask again at the next arrival
        timer_s = queue.arrival_s(0) + self.max_wait_s
        if now_s >= timer_s:
            return Launch(queued, queued)
        # ask again when the timer fires, or earlier if the batch fills
        return Wait(until_s=timer_s, until_queue_len=self.max_batch)
