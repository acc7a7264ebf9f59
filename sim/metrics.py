"""Records -> summary figures, exactly as DESIGN.md's output contract defines them.

Definitions (docs/semantics.md):
- measured requests: those that arrived at or after `warmup_s`; every request
  figure (counts, latency, queue delay, SLO) is over them;
- window: [warmup_s, end_s]; throughput and goodput divide by its length;
- latency = completion - arrival; queue delay = batch start - arrival (ms);
- percentiles are numpy's linear interpolation between order statistics;
- batch figures are over batches that started in the window, `mean` over batches;
- utilization: busy time of each replica inside the window / window length;
- SLO attainment = completed within the SLO / arrived; dropped and rejected
  count as misses, and so does a request still in the system at the end that has
  already waited longer than the SLO; one that has not is censored (left out).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.engine.records import COMPLETED, DROPPED, IN_SERVICE, QUEUED, REJECTED, RunRecords

PERCENTILES = (50, 90, 95, 99)


def distribution(values_ms: np.ndarray) -> dict[str, float | None]:
    """mean, p50, p90, p95, p99, max of a sample (None when empty)."""
    if values_ms.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    pct = np.percentile(values_ms, PERCENTILES)
    return {
        "mean": float(values_ms.mean()),
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
        "max": float(values_ms.max()),
    }


def summarize(rec: RunRecords, slo_latency_ms: float | None = None) -> dict[str, Any]:
    """The summary.json figures of one run."""
    window_s = rec.end_s - rec.warmup_s
    measured = rec.arrival_s >= rec.warmup_s
    outcome = rec.outcome
    completed = measured & (outcome == COMPLETED)
    unfinished = measured & ((outcome == QUEUED) | (outcome == IN_SERVICE))
    start_s = rec.request_start_s
    completion_s = rec.request_completion_s
    latency_ms = (completion_s[completed] - rec.arrival_s[completed]) * 1000.0
    started = measured & (rec.request_batch >= 0)
    queue_delay_ms = (start_s[started] - rec.arrival_s[started]) * 1000.0

    counts = {
        "arrived": int(measured.sum()),
        "completed": int(completed.sum()),
        "dropped": int((measured & (outcome == DROPPED)).sum()),
        "rejected": int((measured & (outcome == REJECTED)).sum()),
        "unfinished": int(unfinished.sum()),
    }
    throughput = counts["completed"] / window_s if window_s > 0 else 0.0
    slo: dict[str, Any] = {"latency_ms": slo_latency_ms, "attainment": None}
    goodput = throughput
    if slo_latency_ms is not None:
        met = int((latency_ms <= slo_latency_ms).sum())
        waited_ms = (rec.end_s - rec.arrival_s[unfinished]) * 1000.0
        censored = int((waited_ms <= slo_latency_ms).sum())
        denominator = counts["arrived"] - censored
        slo["attainment"] = met / denominator if denominator > 0 else None
        goodput = met / window_s if window_s > 0 else 0.0

    in_window = rec.batch_start_s >= rec.warmup_s
    sizes = rec.batch_size[in_window]
    values, freq = np.unique(sizes, return_counts=True)
    busy = np.clip(
        np.minimum(rec.batch_end_s, rec.end_s) - np.maximum(rec.batch_start_s, rec.warmup_s),
        0.0,
        None,
    )
    per_replica = (
        np.bincount(rec.batch_replica, weights=busy, minlength=rec.replicas) / window_s
        if window_s > 0
        else np.zeros(rec.replicas)
    )

    return {
        "window_s": window_s,
        "requests": counts,
        "throughput_rps": throughput,
        "goodput_rps": goodput,
        "latency_ms": distribution(latency_ms),
        "queue_delay_ms": distribution(queue_delay_ms),
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
        "slo": slo,
    }
