"""Records -> summary figures, exactly as DESIGN.md's output contract defines them.

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from sim.core.records import COMPLETED, DROPPED, FAILED, IN_SERVICE, QUEUED, REJECTED, RunRecords

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class Metric:
    """One figure of summary.json: its flat name (sweep column, validate row, recommend's
    metric), where summary.json keeps it, its unit and label, and the name `--slo` knows
    it by, if any."""

    name: str
    path: tuple[str, ...]
    unit: str
    label: str
    slo: str | None = None


def _distribution(prefix: str, path: str, label: str, slo_names: dict[str, str]) -> list[Metric]:
    stats = ("mean", *(f"p{p}" for p in PERCENTILES), "max")
    return [
        Metric(f"{prefix}_{stat}_ms", (path, stat), "ms", f"{label} {stat}", slo_names.get(stat))
        for stat in stats
    ]


# the metrics registry: every figure any command reads from a summary, under one name
REGISTRY: tuple[Metric, ...] = (
    Metric("throughput_rps", ("throughput_rps",), "requests/s", "throughput"),
    Metric("goodput_rps", ("goodput_rps",), "requests/s", "goodput"),
    *_distribution(
        "latency", "latency_ms", "latency",
        {"mean": "mean_ms", "p50": "p50_ms", "p90": "p90_ms", "p95": "p95_ms", "p99": "p99_ms"},
    ),
    *_distribution("queue_delay", "queue_delay_ms", "queue delay", {"p99": "queue_p99_ms"}),
    Metric("batch_size_mean", ("batch_size", "mean"), "requests", "batch size"),
    Metric("batch_size_padded_mean", ("batch_size", "padded_mean"), "requests", "padded batch"),
    Metric("batches", ("batch_size", "batches"), "batches", "batches"),
    Metric("batch_admitted_mean", ("batch_size", "admitted_mean"), "requests",
           "admitted per iteration"),
    Metric("steps_mean", ("steps", "mean"), "steps", "denoising steps", "steps_mean"),
    Metric("steps_degraded_share", ("steps", "degraded_share"), "fraction",
           "degraded requests", "degraded"),
    Metric("utilization_mean", ("utilization", "mean"), "fraction", "utilization"),
    Metric("slo_attainment", ("slo", "attainment"), "fraction", "SLO attainment", "attainment"),
    *(
        Metric(name if name in ("dropped", "rejected") else f"requests_{name}",
               ("requests", name), "requests", f"{name} requests")
        for name in ("arrived", "completed", "dropped", "rejected", "unfinished", "failed")
    ),
    Metric("robots_stall_fraction", ("robots", "stall_fraction"), "fraction", "stall", "stall"),
    Metric("robots_stall_fraction_max", ("robots", "stall_fraction_max"), "fraction", "worst stall"),
    Metric("robots_deadline_miss_rate", ("robots", "deadline_miss_rate"), "fraction",
           "deadline misses", "miss_rate"),
    Metric("robots_control_rate_ratio", ("robots", "control_rate_ratio"), "fraction",
           "control rate of target", "control_rate"),
    Metric("robots_effective_control_hz", ("robots", "effective_control_hz"), "Hz", "control rate"),
    Metric("robots_chunk_rate_hz", ("robots", "chunk_rate_hz"), "Hz", "chunks"),
    Metric("robots_stale_actions", ("robots", "stale_actions"), "actions", "stale actions"),
    Metric("robots_stale_actions_per_chunk", ("robots", "stale_actions_per_chunk"), "actions",
           "stale actions per chunk"),
    Metric("robots_stall_episodes", ("robots", "stall_episodes"), "episodes", "stall episodes"),
    Metric("robots_stall_episode_mean_ms", ("robots", "stall_episode_mean_ms"), "ms",
           "mean stall episode"),
    Metric("robots_stall_longest_ms", ("robots", "stall_longest_ms"), "ms", "longest stall"),
    Metric("robots_jain_control_rate", ("robots", "jain_control_rate"), "index", "Jain"),
    *(
        Metric(f"robots_round_trip_{stat}_ms", ("robots", "round_trip_ms", stat), "ms",
               f"robot round trip {stat}", "round_trip_p99_ms" if stat == "p99" else None)
        for stat in ("mean", *(f"p{p}" for p in PERCENTILES), "max")
    ),
)  # fmt: skip
METRICS: dict[str, Metric] = {m.name: m for m in REGISTRY}
# what `--slo NAME<=VALUE` constrains
SLO_NAMES: dict[str, str] = {m.slo: m.name for m in REGISTRY if m.slo}


def metric_value(summary: dict[str, Any], name: str) -> float | None:
    """The figure `name` of a summary (None where the run has none, e.g. robots in open loop)."""
    node: Any = summary
    for key in METRICS[name].path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def flatten(summary: dict[str, Any], names: Sequence[str] | None = None) -> dict[str, float | None]:
    """{name: value} of the registry's metrics (or `names`) in a summary."""
    return {name: metric_value(summary, name) for name in (names or METRICS)}


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


def jain_index(values: list[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all equal, 1/n at worst."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size == 0 or not np.any(x):
        return None
    return float(x.sum() ** 2 / (x.size * np.sum(x**2)))


def _requests_block(rec: RunRecords, subset: np.ndarray, window_s: float) -> dict[str, Any]:
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
    deadline_s = rec.deadline_s
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


def summarize(rec: RunRecords, slo_latency_ms: float | None = None) -> dict[str, Any]:
    """The summary.json figures of one run.

    A request meets its SLO when it completes by its deadline (arrival + the SLO of its
    class, or `slo_latency_ms`).
    """
    if rec.deadline_s is None and slo_latency_ms is not None:
        rec.deadline_s = rec.arrival_s + slo_latency_ms / 1000.0
    window_s = rec.end_s - rec.warmup_s
    measured = rec.arrival_s >= rec.warmup_s
    overall = _requests_block(rec, measured, window_s)
    attainment = overall.pop("attainment")

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
            block = _requests_block(rec, measured & (rec.class_id == index), window_s)
            classes[name] = block
        summary["classes"] = classes
        summary["fairness"] = {
            "jain_attainment": jain_index([c["attainment"] for c in classes.values()])
        }
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


def robots_columns(rec: RunRecords) -> dict[str, list[Any]]:
    """robots.parquet's columns: one row per robot, figures over the window [warmup_s, end]."""
    window_s = rec.end_s - rec.warmup_s
    rows = []
    for client in rec.robots or []:
        st, p = client.stats, client.p
        answered = st.window_responses + st.window_failures
        trips_ms = np.asarray(st.round_trips_s, dtype=float) * 1000.0
        rows.append(
            {
                "robot": client.id,
                "group": p.group,
                "mode": p.mode,
                "control_hz": p.control_hz,
                "requests": st.window_sent,
                "responses": st.window_responses,
                "failures": st.failures,
                "deadline_misses": st.window_misses,
                "deadline_miss_rate": (
                    st.window_misses / answered if answered and p.has_deadlines else None
                ),
                "stall_fraction": float(st.window_stall_s) / window_s,
                # freezes: how many, how long on average, the longest (within the window)
                "stall_episodes": st.window_stall_episodes,
                "stall_episode_mean_ms": (
                    st.window_stall_s / st.window_stall_episodes * 1000.0
                    if st.window_stall_episodes
                    else None
                ),
                "stall_longest_ms": st.window_stall_longest_s * 1000.0,
                "effective_control_hz": st.window_executed / window_s,
                "control_rate_ratio": st.window_executed / window_s / p.control_hz,
                "chunk_rate_hz": st.window_responses / window_s,
                "executed_actions": st.executed_actions,
                "delivered_actions": st.delivered_actions,
                "stale_actions": st.stale_actions,
                "unused_actions": st.unused_actions,
                "replaced_actions": st.replaced_actions,
                "queued_actions": client.queue,
                "round_trip_p50_ms": float(np.percentile(trips_ms, 50)) if trips_ms.size else None,
                "round_trip_p99_ms": float(np.percentile(trips_ms, 99)) if trips_ms.size else None,
            }
        )
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


def round_trip_columns(rec: RunRecords) -> dict[str, np.ndarray]:
    """round_trips.parquet: every robot round trip in the window (send to answer at the
    robot, network included), with its robot and group."""
    robots = rec.robots or []
    trips = [np.asarray(c.stats.round_trips_s, dtype=float) for c in robots]
    groups = sorted({c.p.group for c in robots})
    code = {g: i for i, g in enumerate(groups)}
    return {
        "robot": np.concatenate(
            [np.full(t.size, c.id, dtype=np.int32) for c, t in zip(robots, trips, strict=True)]
            or [np.zeros(0, np.int32)]
        ),
        "group": (
            np.concatenate(
                [
                    np.full(t.size, code[c.p.group], dtype=np.int32)
                    for c, t in zip(robots, trips, strict=True)
                ]
                or [np.zeros(0, np.int32)]
            ),
            tuple(groups),
        ),
        "round_trip_ms": np.concatenate(trips or [np.zeros(0)]) * 1000.0,
    }


def robots_frame(rec: RunRecords) -> pd.DataFrame:
    """robots.parquet as a frame: one row per robot."""
    import pandas as pd

    return pd.DataFrame(robots_columns(rec))


def robots_summary(rec: RunRecords) -> dict[str, Any]:
    """The `robots` block of summary.json: fleet figures over the window."""
    columns = robots_columns(rec)
    trips = (
        np.concatenate([np.asarray(c.stats.round_trips_s, dtype=float) for c in rec.robots])
        * 1000.0
    )
    with_deadlines = [c for c in rec.robots if c.p.has_deadlines]
    total_answered = sum(c.stats.window_responses + c.stats.window_failures for c in with_deadlines)
    total_misses = sum(c.stats.window_misses for c in with_deadlines)
    stall = np.asarray(columns["stall_fraction"], dtype=float)
    episodes = sum(c.stats.window_stall_episodes for c in rec.robots)
    stalled_s = sum(c.stats.window_stall_s for c in rec.robots)
    chunks = sum(c.stats.responses for c in rec.robots)
    stale = int(np.sum(columns["stale_actions"]))
    return {
        "count": int(stall.size),
        "stall_fraction": float(stall.mean()),
        "stall_fraction_max": float(stall.max()),
        "deadline_miss_rate": total_misses / total_answered if total_answered else None,
        "effective_control_hz": float(np.mean(columns["effective_control_hz"])),
        "control_rate_ratio": float(np.mean(columns["control_rate_ratio"])),
        "chunk_rate_hz": float(np.mean(columns["chunk_rate_hz"])),
        "stall_episodes": episodes,
        "stall_episode_mean_ms": stalled_s / episodes * 1000.0 if episodes else None,
        "stall_longest_ms": float(np.max(columns["stall_longest_ms"])),
        "stale_actions": stale,
        # of each chunk received, how many actions were already past (async robots)
        "stale_actions_per_chunk": stale / chunks if chunks else None,
        "unused_actions": int(np.sum(columns["unused_actions"])),
        "replaced_actions": int(np.sum(columns["replaced_actions"])),
        "round_trip_ms": distribution(trips),
        "jain_control_rate": jain_index(columns["control_rate_ratio"]),
    }
