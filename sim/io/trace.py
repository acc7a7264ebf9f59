"""A run's timeline as a Chrome / Perfetto trace (the Trace Event Format's JSON object form).

Open the file in ui.perfetto.dev or chrome://tracing. Process 1 holds one track per
replica, each batch a complete ("X") slice named by its size, its requests' ids and its
padded size in the slice's args. Process 2, for a robot fleet, holds one track per robot
with each freeze (stall) as a slice. Times are microseconds of simulated time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.errors import InputError

if TYPE_CHECKING:
    from sim.core.records import RunRecords

MAX_EVENTS = 2_000_000  # about 300 MB of JSON: a trace no viewer opens is no use
MAX_IDS = 64  # request ids listed per batch slice (the count is always there)


def chrome_trace(records: RunRecords, name: str = "batchsim") -> dict[str, Any]:
    """The trace of a run: replicas' batches, and robots' stalls where they were logged."""
    robots = records.robots
    stalls = 0 if robots is None or robots.stall_log is None else len(robots.stall_log)
    total = records.batch_start_s.size + stalls
    if total > MAX_EVENTS:
        raise InputError(
            f"the trace would hold {total:,} slices; at most {MAX_EVENTS:,} (shorten the run, "
            "e.g. the override duration_s=60)",
            option="trace",
        )
    events: list[dict[str, Any]] = [
        _meta(1, 0, "process_name", f"{name}: replicas"),
        *(_meta(1, r, "thread_name", f"replica {r}") for r in range(records.replicas)),
    ]
    members = _members(records)
    for b in range(records.batch_start_s.size):
        start, end = records.batch_start_s[b], records.batch_end_s[b]
        if not (np.isfinite(start) and np.isfinite(end)):
            continue
        ids = members.get(b, [])
        events.append(
            {
                "name": f"batch of {int(records.batch_size[b])}",
                "cat": "batch",
                "ph": "X",
                "pid": 1,
                "tid": int(records.batch_replica[b]),
                "ts": start * 1e6,
                "dur": max(end - start, 0.0) * 1e6,
                "args": {
                    "batch": b,
                    "size": int(records.batch_size[b]),
                    "padded_size": int(records.batch_padded[b]),
                    "requests": ids[:MAX_IDS],
                    **({"requests_not_listed": len(ids) - MAX_IDS} if len(ids) > MAX_IDS else {}),
                },
            }
        )
    if robots is not None and len(robots):
        events.append(_meta(2, 0, "process_name", f"{name}: robots (stalls)"))
        for robot, stalls in zip(robots.id.tolist(), robots.stalls_by_robot(), strict=True):
            events.append(_meta(2, robot, "thread_name", f"robot {robot}"))
            for start, end in stalls.tolist():
                events.append(
                    {
                        "name": "stall",
                        "cat": "stall",
                        "ph": "X",
                        "pid": 2,
                        "tid": robot,
                        "ts": start * 1e6,
                        "dur": (end - start) * 1e6,
                    }
                )
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"source": name}}


def write_trace(records: RunRecords, path: Path, name: str = "batchsim") -> Path:
    from sim.io.outputs import write_text

    write_text(path, json.dumps(chrome_trace(records, name)))
    return path


def _meta(pid: int, tid: int, kind: str, value: str) -> dict[str, Any]:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": value}}


def _members(records: RunRecords) -> dict[int, list[int]]:
    """Each batch's request ids (the batch that admitted them)."""
    served = np.flatnonzero(records.request_batch >= 0)
    order = np.argsort(records.request_batch[served], kind="stable")
    ids, batches = served[order], records.request_batch[served][order]
    out: dict[int, list[int]] = {}
    if ids.size:
        cuts = np.flatnonzero(np.diff(batches)) + 1
        for group, batch in zip(np.split(ids, cuts), batches[np.r_[0, cuts]], strict=True):
            out[int(batch)] = group.tolist()
    return out
