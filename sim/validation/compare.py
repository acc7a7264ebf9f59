"""What validate compares, live or recorded runs against the simulation, by one set of rules:
the figures (names of the metrics registry), the fidelity targets, relative errors and the
spread of the observed runs, and the noise-aware verdicts (sim/validation/verdict.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.metrics.registry import metric_value

# the figures compared, live against simulated (names of the metrics registry)
COMPARED = (
    "throughput_rps",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "queue_delay_mean_ms",
    "queue_delay_p99_ms",
    "batch_size_mean",
    "utilization_mean",
    "slo_attainment",
    "robots_stall_fraction",
    "robots_deadline_miss_rate",
    "robots_control_rate_ratio",
    "robots_rtc_late_share",  # real-time chunking robots only
    "robots_rtc_late_actions_per_chunk",
    "robots_rtc_delay_steps_mean",
)


# idle waits before profiled calls: a model runs slower after the server has been idle
# (benchmarks/bench_idle.py), and the simulator draws each batch from the level reached
IDLE_LEVELS_MS = (0.0, 10.0, 200.0)

# simulations of the live traffic, each with its own draw of service times: the prediction
# is their median, as the live figure is the median live run (a fleet whose robots can
# settle into more than one phase pattern gives either, draw by draw, run by run)
SIM_DRAWS = 15

# the fidelity targets: the prediction's relative error against the live run
TARGETS = {"throughput_rps": 0.02, "latency_p50_ms": 0.05, "latency_p99_ms": 0.05}


def latencies_ms(records) -> np.ndarray:
    measured = (records.arrival_s >= records.warmup_s) & (records.outcome == 1)
    return (records.request_completion_s[measured] - records.arrival_s[measured]) * 1000


def noise_aware(
    rows: list[dict[str, Any]],
    lat_sim: np.ndarray,
    lat_live: np.ndarray,
    margin: float = 0.05,
    kind: str = "sim",
) -> dict[str, Any]:
    """The verdict that knows the live runs' own noise (sim.validation.verdict): per figure, whether
    the prediction is indistinguishable from a rerun (needs two or more live runs), and a
    TOST equivalence test of the mean latency within `margin`; `kind`: which simulation
    of the comparison rows is judged."""
    from sim.validation.verdict import indistinguishable, tost

    per_metric = {}
    for row in rows:
        runs, predicted = row.get("live_runs") or [], row.get(kind)
        if len(runs) >= 2 and predicted is not None and all(abs(v) > 1e-12 for v in runs):
            per_metric[row["metric"]] = indistinguishable(predicted, runs)
    enough = lat_sim.size >= 2 and lat_live.size >= 2
    return {
        "per_metric": per_metric,
        "tost_latency": tost(lat_sim, lat_live, margin) if enough else None,
    }


def comparison_rows(
    live_summaries: list[dict[str, Any]], sim_summaries: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One row per COMPARED metric: the median live run and its runs' spread, and for each
    simulation kind (sim, sim_raw_profile, sim_live_service) the median draw and its error.
    Robot figures only for robot runs; None where a figure is undefined (no NaN in JSON)."""
    rows = []
    for name in COMPARED:
        runs = [metric_value(summary, name) for summary in live_summaries]
        if any(v is None for v in runs):
            if name.startswith("robots"):
                continue
            runs = []
        live_v = float(np.median(runs)) if runs else None
        row = {"metric": name, "live": live_v, "live_runs": runs}
        # how far the live runs themselves lie apart: what no prediction can do better than
        row["live_spread"] = (
            (max(runs) - min(runs)) / abs(live_v) if runs and live_v and len(runs) > 1 else None
        )
        for key, summaries in sim_summaries.items():
            draws = [metric_value(summary, name) for summary in summaries]
            v = None if any(d is None for d in draws) else float(np.median(draws))
            row[key] = v
            if key == "sim":
                row["sim_draws"] = draws
            measurable = live_v is not None and v is not None and abs(live_v) > 1e-12
            row[f"{key}_error"] = (v - live_v) / live_v if measurable else None
        rows.append(row)
    return rows


def target_verdicts(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's TARGETS against the comparison rows: met, and inside the live runs' range."""
    by_metric = {row["metric"]: row for row in rows}
    verdicts = {}
    for metric, within in TARGETS.items():
        row = by_metric.get(metric, {})
        error, runs, predicted = row.get("sim_error"), row.get("live_runs"), row.get("sim")
        verdicts[metric] = {
            "metric": metric,
            "error": error,
            "within": within,
            "met": error is not None and abs(error) <= within,
            # no worse than the machine's own noise: inside the live runs' range
            "inside_live_range": bool(runs and predicted is not None)
            and min(runs) <= predicted <= max(runs),
        }
    return verdicts
