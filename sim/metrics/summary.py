"""Records -> summary figures, exactly as docs/design.md's output contract defines them.

Definitions (docs/semantics.md):
- measured requests: those that arrived at or after `warmup_s`; every request
  figure (counts, latency, queue delay, SLO) is over them;
- window: [warmup_s, end_s]; throughput and goodput divide by its length;
- latency = completion - arrival; queue delay = batch start - arrival (ms);
- percentiles are numpy's linear interpolation between order statistics;
- batch figures are over batches that started in the window, `mean` over batches;
- utilization: busy time of each replica inside the window / window length;
- SLO attainment = completed by their deadline (arrival + SLO) / arrived; dropped
  and rejected count as misses, and so does a request still in the system at the
  end whose deadline has passed; one whose deadline has not is censored (left out);
- with request classes, the same figures per class, and Jain's fairness index
  across classes of their attainment;
- step-level batching: a batch is an iteration and its size the requests in flight in it;
  `admitted_mean` is the mean number each iteration admitted;
- steps (staged models with steps per request): over completed measured requests, the
  mean denoising steps and the share that ran fewer than K.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.config.pricing import Pricing
from sim.core.records import COMPLETED, DROPPED, FAILED, IN_SERVICE, QUEUED, REJECTED, RunRecords
from sim.metrics.cost import busy_in_window, cost_block, energy_block
from sim.metrics.registry import distribution, jain_index
from sim.metrics.robots import robots_summary


def _requests_block(
    rec: RunRecords, deadline_s: np.ndarray | None, subset: np.ndarray, window_s: float
) -> dict[str, Any]:
    """Counts, throughput, goodput, latency, queue delay and SLO attainment of `subset`."""
    outcome = rec.outcome
    completed = subset & (outcome == COMPLETED)
    unfinished = subset & ((outcome == QUEUED) | (outcome == IN_SERVICE))
    completion_s = rec.request_completion_s
    latency_ms = (completion_s[completed] - rec.arrival_s[completed]) * 1000.0
    started = subset & (rec.request_batch >= 0)
    queue_delay_ms = (rec.request_start_s[started] - rec.arrival_s[started]) * 1000.0
    counts = {
        "arrived": int(subset.sum()),
        "completed": int(completed.sum()),
        "dropped": int((subset & (outcome == DROPPED)).sum()),
        "rejected": int((subset & (outcome == REJECTED)).sum()),
        "unfinished": int(unfinished.sum()),
        "failed": int((subset & (outcome == FAILED)).sum()),
    }
    throughput = counts["completed"] / window_s if window_s > 0 else 0.0
    goodput, attainment = throughput, None
    if deadline_s is not None and np.isfinite(deadline_s[subset]).any():
        met = int((completion_s[completed] <= deadline_s[completed]).sum())
        censored = int((rec.end_s <= deadline_s[unfinished]).sum())
        denominator = counts["arrived"] - censored
        attainment = met / denominator if denominator > 0 else None
        goodput = met / window_s if window_s > 0 else 0.0
    return {
        "requests": counts,
        "throughput_rps": throughput,
        "goodput_rps": goodput,
        "latency_ms": distribution(latency_ms),
        "queue_delay_ms": distribution(queue_delay_ms),
        "attainment": attainment,
    }


def summarize(
    rec: RunRecords,
    slo_latency_ms: float | None = None,
    steps: tuple[int, int | None] | None = None,
    pricing: Pricing | None = None,
) -> dict[str, Any]:
    """The summary.json figures of one run (the records are read, never changed).

    A request meets its SLO when it completes by its deadline (arrival + the SLO of its
    class, or `slo_latency_ms`). `steps`: (K, floor) of a staged model whose steps per
    request the core kept. A fleet's records add the `robots` block; `pricing` (prices
    and power) the `cost` and `energy` blocks, from the same busy time as utilisation.
    """
    deadline_s = rec.deadline_s
    if deadline_s is None and slo_latency_ms is not None:
        deadline_s = rec.arrival_s + slo_latency_ms / 1000.0
    window_s = rec.end_s - rec.warmup_s
    measured = rec.arrival_s >= rec.warmup_s
    overall = _requests_block(rec, deadline_s, measured, window_s)
    attainment = overall.pop("attainment")

    in_window = rec.batch_start_s >= rec.warmup_s
    sizes = rec.batch_size[in_window]
    values, freq = np.unique(sizes, return_counts=True)
    busy = busy_in_window(rec)
    per_replica = (
        np.bincount(rec.batch_replica, weights=busy, minlength=rec.replicas) / window_s
        if window_s > 0
        else np.zeros(rec.replicas)
    )
    summary = {
        "window_s": window_s,
        **overall,
        "batch_size": {
            "batches": int(sizes.size),
            "mean": float(sizes.mean()) if sizes.size else None,
            "padded_mean": float(rec.batch_padded[in_window].mean()) if sizes.size else None,
            "hist": {str(int(v)): int(c) for v, c in zip(values, freq, strict=True)},
        },
        "utilization": {
            "mean": float(per_replica.mean()),
            "per_replica": [float(u) for u in per_replica],
        },
        "slo": {"latency_ms": slo_latency_ms, "attainment": attainment},
    }
    if rec.batch_admitted is not None:
        admitted = rec.batch_admitted[in_window]
        summary["batch_size"]["admitted_mean"] = float(admitted.mean()) if admitted.size else None
    if rec.class_names is not None and rec.class_id is not None:
        classes = {}
        for index, name in enumerate(rec.class_names):
            block = _requests_block(rec, deadline_s, measured & (rec.class_id == index), window_s)
            classes[name] = block
        summary["classes"] = classes
        summary["fairness"] = {
            "jain_attainment": jain_index([c["attainment"] for c in classes.values()])
        }
    if steps is not None:  # the core kept each request's steps
        summary["steps"] = steps_summary(rec, *steps)
    if rec.robots is not None:
        summary["robots"] = robots_summary(rec)
    if pricing is not None:  # cost and energy, exact from the records
        completed = summary["requests"]["completed"]
        energy = energy_block(rec, pricing, completed, busy)
        if energy is not None:  # absent where no power is known (the table's footer says so)
            summary["energy"] = energy
        robots = summary["robots"]["count"] if "robots" in summary else None
        cost = cost_block(rec, pricing, completed, robots)
        if cost is not None:
            summary["cost"] = cost
    return summary


def steps_summary(rec: RunRecords, full: int, floor: int | None) -> dict[str, Any]:
    """The `steps` block: K, the floor, and over completed measured requests the mean steps
    and the share that ran fewer than K (the quality cost is reported, not modelled)."""
    done = (rec.outcome == COMPLETED) & (rec.arrival_s >= rec.warmup_s)
    steps = rec.request_steps[done]
    return {
        "full": full,
        "floor": floor,
        "mean": float(steps.mean()) if steps.size else None,
        "degraded_share": float((steps < full).mean()) if steps.size else None,
    }
