"""The metrics registry: every figure any command reads from a summary, under one flat
name (`latency_p99_ms`), with where summary.json keeps it, its unit, its label and the
name `--slo` knows it by. The CLI table, the sweep's columns, recommend's SLO terms and
validate's comparison rows all read through it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    Metric("robots_stall_fraction_max", ("robots", "stall_fraction_max"), "fraction",
           "worst stall", "stall_max"),
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
               f"robot round trip {stat}", f"round_trip_{stat}_ms")
        for stat in ("mean", *(f"p{p}" for p in PERCENTILES), "max")
    ),
)  # fmt: skip
# real-time chunking robots (docs/semantics.md, "Real-time chunking"): present with rtc robots
REGISTRY += (
    Metric("robots_rtc_late_share", ("robots", "rtc", "late_share"), "fraction",
           "late chunks", "rtc_late_share"),
    Metric("robots_rtc_late_actions_per_chunk", ("robots", "rtc", "late_actions_per_chunk"),
           "actions", "late actions per chunk", "rtc_late_actions"),
    Metric("robots_rtc_discarded_chunks", ("robots", "rtc", "discarded_chunks"), "chunks",
           "discarded chunks", "rtc_discarded"),
    Metric("robots_rtc_delay_steps_mean", ("robots", "rtc", "delay_steps_mean"), "ticks",
           "frozen prefix d", "rtc_delay_steps"),
    Metric("robots_rtc_staleness_max_actions", ("robots", "rtc", "staleness_max_actions"),
           "actions", "worst staleness", "rtc_staleness_max"),
)  # fmt: skip
# cost and energy (docs/semantics.md, "Cost and energy"): present where priced / powered
REGISTRY += (
    Metric("cost_usd_per_hour", ("cost", "usd_per_hour"), "USD/h", "cost per hour",
           "usd_per_hour"),
    Metric("cost_usd_per_million_requests", ("cost", "usd_per_million_requests"), "USD",
           "cost per million requests", "usd_per_million"),
    Metric("cost_usd_per_robot_hour", ("cost", "usd_per_robot_hour"), "USD/h",
           "cost per robot-hour", "usd_per_robot_hour"),
    Metric("energy_average_power_w", ("energy", "average_power_w"), "W", "average power",
           "power_w"),
    Metric("energy_joules_per_request", ("energy", "joules_per_request"), "J",
           "energy per request", "joules_per_request"),
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
