"""The named invariants of docs/semantics.md that one run's records must keep, one function
each. Each raises InvariantViolation naming the invariant and the first place it broke;
plug-in authors call them on runs of their policy, and `batchsim run --check`
(sim.engine.pipeline.check_invariants) runs every one that applies to a run.

The invariants about several runs (INV-7 the policy followed exactly, INV-8 determinism,
INV-9 two clocks, INV-10 common random numbers, INV-11 dispatch, INV-13 stable figures,
INV-14 wake-ups are an optimisation)
are checked by the test suite, which names each test by its invariant.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from sim.core.records import COMPLETED, DROPPED, IN_SERVICE, QUEUED, REJECTED, RunRecords
from sim.errors import InvariantViolation

# time comparisons forgive a nanosecond (SimPy adds delays to its clock: 1 ulp late)
EPS = 1e-9


def _require(ok: Any, name: str, what: Callable[[], str]) -> None:
    if not bool(np.all(ok)):
        raise InvariantViolation(name, what())


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(~np.asarray(mask))[0])


def conservation(rec: RunRecords) -> None:
    """INV-1 conservation: every request has exactly one outcome, and the batches hold exactly the
    served requests (request level)."""
    name = "INV-1 conservation"
    known = np.isin(rec.outcome, [QUEUED, COMPLETED, IN_SERVICE, DROPPED, REJECTED])
    _require(
        known, name, lambda: f"request {_first(known)} has outcome {rec.outcome[_first(known)]}"
    )
    served = rec.request_batch >= 0
    held = np.bincount(rec.request_batch[served], minlength=rec.batch_size.size)
    same = held == rec.batch_size
    _require(
        same,
        name,
        lambda: (
            f"batch {_first(same)} has size {rec.batch_size[_first(same)]} "
            f"but holds {held[_first(same)]} requests"
        ),
    )
    started = served == np.isin(rec.outcome, [COMPLETED, IN_SERVICE])
    _require(started, name, lambda: f"request {_first(started)}'s batch and outcome disagree")


def causality(rec: RunRecords) -> None:
    """INV-2 causality: no request starts before it arrives; a request completes when its batch ends,
    by the end of the run; only completed requests have a completion."""
    name = "INV-2 causality"
    served = rec.request_batch >= 0
    start = rec.request_start_s
    early = ~served | (start >= rec.arrival_s - EPS)
    _require(
        early,
        name,
        lambda: (
            f"request {_first(early)} starts at {start[_first(early)]!r}, "
            f"before it arrives at {rec.arrival_s[_first(early)]!r}"
        ),
    )
    ordered = rec.batch_end_s >= rec.batch_start_s
    _require(ordered, name, lambda: f"batch {_first(ordered)} ends before it starts")
    done = rec.outcome == COMPLETED
    completion = rec.request_completion_s
    by_end = ~done | (completion <= rec.end_s + EPS)
    _require(by_end, name, lambda: f"request {_first(by_end)} completes after the run's end")
    only_done = done | np.isnan(completion)
    _require(
        only_done,
        name,
        lambda: f"request {_first(only_done)} has a completion but did not complete",
    )


def one_batch_per_replica(rec: RunRecords) -> None:
    """INV-3 one batch per replica: a replica's batches (step level: iterations) never overlap, and start in
    order."""
    name = "INV-3 one batch per replica"
    for replica in range(rec.replicas):
        mine = np.flatnonzero(rec.batch_replica == replica)
        starts, ends = rec.batch_start_s[mine], rec.batch_end_s[mine]
        ok = np.concatenate([[True], (starts[1:] >= starts[:-1]) & (starts[1:] >= ends[:-1] - EPS)])
        if not ok.all():
            k = _first(ok)
            raise InvariantViolation(
                name,
                f"replica {replica}'s batch {mine[k]} starts at {starts[k]!r}, before its "
                "previous batch ends",
            )


def sizes_and_padding(
    rec: RunRecords,
    max_batch: int,
    launch_sizes: Collection[int],
    service_ms: Callable[[int], float] | None = None,
) -> None:
    """INV-4 sizes and padding: 1 <= size <= max_batch, padded >= size, padded among the policy's launch
    sizes; with `service_ms` (a deterministic profile's time at a padded size) a batch
    lasts exactly that."""
    name = "INV-4 sizes and padding"
    size, padded = rec.batch_size, rec.batch_padded
    within = (size >= 1) & (size <= max_batch) & (padded >= size)
    _require(
        within,
        name,
        lambda: (
            f"batch {_first(within)} has size {size[_first(within)]}, "
            f"padded {padded[_first(within)]}, max_batch {max_batch}"
        ),
    )
    allowed = np.isin(padded, list(launch_sizes))
    _require(
        allowed,
        name,
        lambda: (
            f"batch {_first(allowed)} runs padded to "
            f"{padded[_first(allowed)]}, not a launch size of the policy"
        ),
    )
    if service_ms is not None:
        expected = np.array([service_ms(int(p)) / 1000.0 for p in padded])
        took = rec.batch_end_s - rec.batch_start_s
        exact = np.isclose(took, expected, rtol=1e-12, atol=1e-12)
        _require(
            exact,
            name,
            lambda: (
                f"batch {_first(exact)} took {took[_first(exact)]!r} s, "
                f"the profile says {expected[_first(exact)]!r} s"
            ),
        )


def fifo_order(rec: RunRecords) -> None:
    """INV-5 FIFO order: a shared FIFO queue (one class of priority) starts service in arrival order."""
    name = "INV-5 FIFO order"
    ids = np.flatnonzero(rec.request_batch >= 0)
    start = rec.request_start_s[ids]
    ok = np.concatenate([[True], np.diff(start) >= -EPS])
    _require(
        ok,
        name,
        lambda: f"request {ids[_first(ok)]} (arrived earlier) starts after a later arrival",
    )


def admission(rec: RunRecords, timeout_s: float | None, max_queue: int | None) -> None:
    """INV-6 admission: no request starts after waiting longer than the timeout; without a timeout
    nothing is dropped by admission, without max_queue nothing is rejected. (That a
    request is rejected exactly when max_queue were waiting is checked on random runs by
    the test suite: it replays the queue.)"""
    name = "INV-6 admission"
    served = rec.request_batch >= 0
    if timeout_s is not None:
        waited = rec.request_start_s - rec.arrival_s
        ok = ~served | (waited <= timeout_s + EPS)
        _require(
            ok,
            name,
            lambda: (
                f"request {_first(ok)} started after waiting "
                f"{waited[_first(ok)]!r} s, past the {timeout_s} s timeout"
            ),
        )
    if max_queue is None:
        ok = rec.outcome != REJECTED
        _require(ok, name, lambda: f"request {_first(ok)} was rejected with no max_queue")


def actions_conserved(rec: RunRecords) -> None:
    """INV-12 actions are conserved: a robot's delivered actions = executed + stale + unused + replaced + still
    queued, and it never has more than one request out."""
    name = "INV-12 actions are conserved"
    r = rec.robots
    accounted = (
        r.executed_actions
        + r.stale_actions
        + r.unused_actions
        + r.replaced_actions
        + r.queued_actions
    )
    ok = accounted == r.delivered_actions
    _require(
        ok,
        name,
        lambda: (
            f"robot {r.id[_first(ok)]} was delivered "
            f"{r.delivered_actions[_first(ok)]} actions but accounts for {accounted[_first(ok)]}"
        ),
    )
    answered = r.responses + r.failures
    one_out = (answered <= r.sent) & (r.sent <= answered + 1)
    _require(
        one_out,
        name,
        lambda: (
            f"robot {r.id[_first(one_out)]} sent "
            f"{r.sent[_first(one_out)]} requests for {answered[_first(one_out)]} answers"
        ),
    )


def iterations_conserve(rec: RunRecords) -> None:
    """INV-S1 iterations conserve requests: each started request was admitted by exactly one iteration (admitted counts
    add up), started = completed or in service, and its last iteration is not before its
    first."""
    name = "INV-S1 iterations conserve requests"
    first, last, admitted = rec.request_batch, rec.request_last_batch, rec.batch_admitted
    started = first >= 0
    counts = np.bincount(first[started], minlength=admitted.size) == admitted
    _require(
        counts,
        name,
        lambda: (
            f"iteration {_first(counts)} admitted "
            f"{admitted[_first(counts)]} but holds another count"
        ),
    )
    same = started == np.isin(rec.outcome, [COMPLETED, IN_SERVICE])
    _require(same, name, lambda: f"request {_first(same)}'s iterations and outcome disagree")
    done = rec.outcome == COMPLETED
    order = ~done | (last >= first)
    _require(order, name, lambda: f"request {_first(order)} completes before it is admitted")


def iteration_causality(rec: RunRecords) -> None:
    """INV-S2 iteration causality: admitted after arriving; completed exactly at the end of its last iteration."""
    name = "INV-S2 iteration causality"
    started = rec.request_batch >= 0
    after = ~started | (rec.request_start_s >= rec.arrival_s - EPS)
    _require(after, name, lambda: f"request {_first(after)} is admitted before it arrives")
    done = np.flatnonzero(rec.outcome == COMPLETED)
    at_end = rec.request_completion_s[done] == rec.batch_end_s[rec.request_last_batch[done]]
    _require(
        at_end,
        name,
        lambda: f"request {done[_first(at_end)]} completes off the end of its last iteration",
    )


def in_flight_counts(rec: RunRecords) -> None:
    """INV-S3 in-flight counts: an iteration's size is what was in flight after
    the replica's previous iteration plus what it admitted."""
    name = "INV-S3 in-flight counts"
    last, admitted = rec.request_last_batch, rec.batch_admitted
    finished_in = np.bincount(last[last >= 0], minlength=admitted.size)
    for replica in range(rec.replicas):
        mine = np.flatnonzero(rec.batch_replica == replica)
        flying = np.cumsum(admitted[mine]) - np.concatenate(
            [[0], np.cumsum(finished_in[mine])[:-1]]
        )
        ok = rec.batch_size[mine] == flying
        if not ok.all():
            k = _first(ok)
            raise InvariantViolation(
                name,
                f"iteration {mine[k]} has {rec.batch_size[mine][k]} in flight, not {flying[k]}",
            )


def steps_one_per_iteration(rec: RunRecords) -> None:
    """INV-S4 steps run one per iteration: a completed request ran exactly its steps, one in each iteration of its
    replica from its first to its last."""
    name = "INV-S4 steps run one per iteration"
    first, last = rec.request_batch, rec.request_last_batch
    done = np.flatnonzero(rec.outcome == COMPLETED)
    position = np.empty(rec.batch_replica.size, dtype=np.int64)
    for replica in range(rec.replicas):  # each iteration's index among its replica's
        mine = np.flatnonzero(rec.batch_replica == replica)
        position[mine] = np.arange(mine.size)
    ran = position[last[done]] - position[first[done]] + 1
    ok = ran == rec.request_steps[done]
    _require(
        ok,
        name,
        lambda: (
            f"request {done[_first(ok)]} ran {ran[_first(ok)]} iterations "
            f"for {rec.request_steps[done][_first(ok)]} steps"
        ),
    )


def iteration_bounds(rec: RunRecords, max_batch: int, max_admit: int | None = None) -> None:
    """INV-S5 bounds: in flight <= max_batch, admitted <= max_admit."""
    name = "INV-S5 bounds"
    size = rec.batch_size
    ok = (size >= 1) & (size <= max_batch) & (rec.batch_admitted <= (max_admit or max_batch))
    _require(
        ok,
        name,
        lambda: (
            f"iteration {_first(ok)} has {size[_first(ok)]} in flight and "
            f"admitted {rec.batch_admitted[_first(ok)]} (max_batch {max_batch}, max_admit "
            f"{max_admit})"
        ),
    )


def name_of(invariant: Callable[..., None]) -> str:
    """An invariant function's name as semantics.md gives it ("INV-3 one batch per replica")."""
    return (invariant.__doc__ or "").split(":")[0].strip()
