"""A fleet's figures from its robots' records (docs/semantics.md, "Robot figures"): one row
per robot for robots.parquet, every window round trip for round_trips.parquet, and the
`robots` block of summary.json. All over the window [warmup_s, end]."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from sim.core.records import RunRecords
from sim.metrics.registry import distribution, jain_index

if TYPE_CHECKING:
    import pandas as pd


def _per_robot_percentiles(rec: RunRecords, qs: tuple[float, ...]) -> list[list[float | None]]:
    """Each robot's round-trip percentiles (ms), one list per q (None: no round trip)."""
    out: list[list[float | None]] = [[] for _ in qs]
    for trips_s in rec.robots.round_trips_by_robot():
        trips_ms = trips_s * 1000.0
        for column, q in zip(out, qs, strict=True):
            column.append(float(np.percentile(trips_ms, q)) if trips_ms.size else None)
    return out


def robots_columns(rec: RunRecords) -> dict[str, list[Any]]:
    """robots.parquet's columns: one row per robot, figures over the window [warmup_s, end]."""
    r = rec.robots
    if r is None or len(r) == 0:
        return {}
    window_s = rec.end_s - rec.warmup_s
    answered = r.window_responses + r.window_failures
    episodes = r.window_stall_episodes
    with np.errstate(divide="ignore", invalid="ignore"):
        miss_rate = r.window_misses / answered
        episode_mean_ms = r.window_stall_s / episodes * 1000.0
    effective_hz = r.window_executed / window_s
    trip_p50, trip_p99 = _per_robot_percentiles(rec, (50, 99))
    return {
        "robot": r.id.tolist(),
        "group": list(r.group),
        "mode": list(r.mode),
        "control_hz": r.control_hz.tolist(),
        "requests": r.window_sent.tolist(),
        "responses": r.window_responses.tolist(),
        "failures": r.failures.tolist(),
        "deadline_misses": r.window_misses.tolist(),
        "deadline_miss_rate": [
            float(m) if a and d else None
            for m, a, d in zip(miss_rate, answered, r.has_deadlines, strict=True)
        ],
        "stall_fraction": (r.window_stall_s / window_s).tolist(),
        # freezes: how many, how long on average, the longest (within the window)
        "stall_episodes": episodes.tolist(),
        "stall_episode_mean_ms": [
            float(m) if n else None for m, n in zip(episode_mean_ms, episodes, strict=True)
        ],
        "stall_longest_ms": (r.window_stall_longest_s * 1000.0).tolist(),
        "effective_control_hz": effective_hz.tolist(),
        "control_rate_ratio": (effective_hz / r.control_hz).tolist(),
        "chunk_rate_hz": (r.window_responses / window_s).tolist(),
        "executed_actions": r.executed_actions.tolist(),
        "delivered_actions": r.delivered_actions.tolist(),
        "stale_actions": r.stale_actions.tolist(),
        "unused_actions": r.unused_actions.tolist(),
        "replaced_actions": r.replaced_actions.tolist(),
        "queued_actions": r.queued_actions.tolist(),
        "round_trip_p50_ms": trip_p50,
        "round_trip_p99_ms": trip_p99,
    }


def round_trip_columns(rec: RunRecords) -> dict[str, Any]:
    """round_trips.parquet: every robot round trip in the window (send to answer at the
    robot, network included), with its robot and group."""
    r = rec.robots
    groups = sorted(set(r.group))
    code = {g: i for i, g in enumerate(groups)}
    group_code = np.array([code[g] for g in r.group], dtype=np.int32)
    return {
        "robot": np.repeat(r.id.astype(np.int32), r.round_trip_count),
        "group": (np.repeat(group_code, r.round_trip_count), tuple(groups)),
        "round_trip_ms": r.round_trips_s * 1000.0,
    }


def robots_frame(rec: RunRecords) -> pd.DataFrame:
    """robots.parquet as a frame: one row per robot."""
    import pandas as pd

    return pd.DataFrame(robots_columns(rec))


def robots_summary(rec: RunRecords) -> dict[str, Any]:
    """The `robots` block of summary.json: fleet figures over the window."""
    r = rec.robots
    columns = robots_columns(rec)
    deadlines = r.has_deadlines
    total_answered = int((r.window_responses + r.window_failures)[deadlines].sum())
    total_misses = int(r.window_misses[deadlines].sum())
    stall = np.asarray(columns["stall_fraction"], dtype=float)
    episodes = int(r.window_stall_episodes.sum())
    stalled_s = sum(r.window_stall_s.tolist())  # in robot order, as the figures were added
    chunks = int(r.responses.sum())
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
        "round_trip_ms": distribution(r.round_trips_s * 1000.0),
        "jain_control_rate": jain_index(columns["control_rate_ratio"]),
        **({"rtc": rtc_summary(r.rtc)} if r.rtc is not None else {}),
    }


def rtc_summary(rtc: dict[str, np.ndarray]) -> dict[str, Any]:
    """Real-time chunking robots' figures over the window (docs/semantics.md): the share
    of chunks that came after their switch tick, their late actions per chunk, discarded
    chunks (training-time RTC), the mean frozen prefix d sent with, and the stalest action
    executed (d + s - 1 when every chunk is in time)."""
    chunks = int(rtc["rtc_chunks"].sum())
    discarded = int(rtc["rtc_discarded"].sum())
    received, late = chunks + discarded, int(rtc["rtc_late"].sum()) + discarded
    sends = int(rtc["rtc_sends"].sum())
    return {
        "chunks": chunks,
        "late_share": late / received if received else None,
        "late_actions_per_chunk": int(rtc["rtc_late_actions"].sum()) / chunks if chunks else None,
        "discarded_chunks": discarded,
        "delay_steps_mean": int(rtc["rtc_delay_sum"].sum()) / sends if sends else None,
        "staleness_max_actions": int(rtc["rtc_staleness_max"].max()),
    }
