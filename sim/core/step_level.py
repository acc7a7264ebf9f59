"""Step-level batching in the core (docs/semantics.md, "Continuous batching"): each replica
keeps its requests in flight and their steps left; an iteration admits what the policy
says, runs the prefix of those admitted and one step of everyone in flight, and those
that ran their last step complete at its end. The policy (a StepLevelPolicy) only
answers how many waiting requests to admit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.core.actions import Sleep, Start
from sim.core.records import FAILED
from sim.policies.base import Wait

if TYPE_CHECKING:
    from sim.core.server import ServerCore

# the weight of the newest iteration in the moving mean of iteration times
_SMOOTHING = 0.25


class Iterations:
    """The iterations of one core's replicas."""

    def __init__(self, core: ServerCore):
        self.core = core
        replicas = core.replicas
        self.flying: list[list[int]] = [[] for _ in range(replicas)]  # requests in flight
        self.left: list[list[int]] = [[] for _ in range(replicas)]  # their steps left
        self.iteration_s = [0.0] * replicas  # a moving mean of each replica's iteration times

    def start(self, replica: int, now_s: float, queue) -> Start | Sleep:
        """The replica's next iteration (admit, then one step for all in flight), or, with
        nothing in flight or waiting, a sleep until a request comes."""
        core = self.core
        flying, left = self.flying[replica], self.left[replica]
        in_flight = len(flying)
        cap = core.spec.memory_cap  # requests in flight hold memory (their KV cache)
        admit = core._decide_of[replica](now_s, queue, in_flight)
        if cap is not None:
            admit = min(admit, cap - in_flight)
        if admit <= 0 and not flying:
            return core._sleep(replica, now_s, queue, Wait(until_queue_len=1))
        ids = queue.take(admit) if admit > 0 else []
        flying.extend(ids)
        b = len(flying)
        steps = core.steps
        if core.degrade:
            # its steps ahead take what this replica's iterations have been taking lately
            # (prefixes of later admissions included), at least a step at this size
            deadlines = core._deadlines
            prefix_s = steps.prefix_s[len(ids)] if ids else 0.0
            step_s = max(steps.step_s[b], self.iteration_s[replica])
            chosen = [steps.choose(now_s, deadlines[i], prefix_s, step_s) for i in ids]
        else:
            chosen = [steps.full] * len(ids)
        left.extend(chosen)
        if ids:
            core.columns.steps[ids] = chosen
        log = core.log
        batch = log.add(replica, now_s, b, b, ids)  # its members: the requests it admitted
        variant = new_variant = None
        if core.shape_for is not None:
            shapes, shape_for = core.columns.shapes, core.shape_for
            variant = shape_for[max(shapes[i] for i in flying)]
            new_variant = shape_for[max(shapes[i] for i in ids)] if ids else None
            log.shape.append(variant)
        core._dispatch_sees(replica, now_s, b, b)
        guided = core.columns.guided  # an iteration holding a guided request pays its step
        return Start(batch, b, b, variant, None, len(ids), new_variant,
                     guided is not None and any(guided[i] for i in flying))  # fmt: skip

    def end(self, batch: int, end_s: float, ok: bool) -> None:
        """An iteration ends at `end_s`: everyone in flight ran one more step; those that
        ran their last complete with it (a failed iteration fails everyone in flight)."""
        core, log = self.core, self.core.log
        replica = log.replica[batch]
        took_s = end_s - log.start_s[batch]
        self.iteration_s[replica] += _SMOOTHING * (took_s - self.iteration_s[replica])
        flying, left = self.flying[replica], self.left[replica]
        if ok:
            left[:] = [n - 1 for n in left]
            done = [r for r, n in zip(flying, left, strict=True) if n == 0]
            if done:
                keep = [(r, n) for r, n in zip(flying, left, strict=True) if n > 0]
                flying[:] = [r for r, _ in keep]
                left[:] = [n for _, n in keep]
        else:
            done = flying[:]
            core.columns.outcome[done] = FAILED
            flying.clear()
            left.clear()
        if done:
            for request in done:
                log.completed.extend((request, batch))
            if core.closed:
                core._answer(done, end_s, ok)
