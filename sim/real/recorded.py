"""Recorded runs, read for `batchsim validate --records`: the one loader of them.

A recorded run is either a folder batchsim wrote (`observe`, `serve`, `run`, or a
validate `live-run-K/`: requests.parquet and batches.parquet, with summary.json) or a
user's own log: a CSV or Parquet file, or a folder holding requests.csv or
requests.parquet, in this schema (docs/records.md):

    arrival, start, end      seconds, one row per request (`completion` is read as `end`);
                             any origin: times are taken relative to the first arrival
    batch or batch_size      the batch each request ran in (an id; blank or -1: none),
                             or its size (requests with the same start and end then share
                             a batch)
    source, replica          optional: the robot or stream, and the replica (default 0)
    outcome                  optional: completed | failed | dropped | rejected | queued |
                             in_service (default: completed where `end` is set, else queued)

Each is read into the simulator's own columns (sim.core.records.RunRecords), so every
figure of a recorded run is computed by the same code as a simulated one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.core.records import COMPLETED, OUTCOME_NAMES, QUEUED, RunRecords
from sim.errors import InputError
from sim.io import files

NEEDED = "arrival, start, end, and batch or batch_size (docs/records.md)"
MAX_ROWS = 20_000_000  # the simulator's own default request limit


@dataclass
class Recorded:
    """One recorded run: where it came from, its records, and its robot figures (a fleet
    run's summary.json has them; a log of requests cannot)."""

    source: str
    records: RunRecords
    robots: dict[str, Any] | None = None
    model_ms: np.ndarray | None = None  # per request: its batch's model call alone, if known
    has_sources: bool = True  # False: a log without a source column (every request source 0)
    scenario: dict[str, Any] | None = None  # the scenario.yaml a batchsim folder was made with


def read_recorded(path: Path, warmup_s: float) -> Recorded:
    """A recorded run (a batchsim run folder, or a log in the schema above)."""
    path = Path(path)
    if path.is_dir():
        if (path / "requests.parquet").is_file() and (path / "batches.parquet").is_file():
            return _run_folder(path, warmup_s)
        for name in ("requests.parquet", "requests.csv"):
            if (path / name).is_file():
                return _log(path / name, warmup_s)
        raise InputError(
            "holds no recorded run (requests.parquet and batches.parquet, or requests.csv)",
            source=str(path),
        )
    return _log(path, warmup_s)


def _table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".parquet":
        frame = files.read_parquet(path, "records")
    elif path.suffix.lower() == ".csv":
        frame = files.read_csv(path, "records")
    else:
        raise InputError("records are a .csv or .parquet file, or a run folder", source=str(path))
    if len(frame) > MAX_ROWS:
        raise InputError(f"{len(frame):,} rows; at most {MAX_ROWS:,}", source=str(path))
    if frame.empty:
        raise InputError("holds no requests", source=str(path))
    return frame


def _numbers(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """A column as floats; text in it is one line naming the first bad cell."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values) & frame[column].notna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"must hold numbers (seconds, or ids); row {row + 1} has {files.cell(frame, column, row)}",
            source=source,
            field=column,
        )
    return values


def _require(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if "end" not in frame and "completion" in frame:
        frame = frame.rename(columns={"completion": "end"})
    missing = [c for c in ("arrival", "start", "end") if c not in frame]
    if "batch" not in frame and "batch_size" not in frame:
        missing.append("batch or batch_size")
    if missing:
        raise InputError(
            f"no column {', '.join(repr(m) for m in missing)}; records need {NEEDED}; "
            f"it has {files.column_list(frame.columns)}",
            source=source,
        )
    return frame


def _outcomes(frame: pd.DataFrame, served: np.ndarray, source: str) -> np.ndarray:
    if "outcome" not in frame:
        return np.where(served, COMPLETED, QUEUED).astype(np.int8)
    names = frame["outcome"].astype(str).str.strip().str.lower()
    unknown = sorted(set(names) - set(OUTCOME_NAMES))
    if unknown:
        raise InputError(
            f"unknown outcome {unknown[0][:40]!r}; allowed: {', '.join(OUTCOME_NAMES)}",
            source=source,
            field="outcome",
        )
    return names.map({n: i for i, n in enumerate(OUTCOME_NAMES)}).to_numpy(dtype=np.int8)


def _log(path: Path, warmup_s: float) -> Recorded:
    """A user's log: requests with their times and batch, batches rebuilt from them."""
    source = str(path)
    frame = _require(_table(path), source)
    arrival = _numbers(frame, "arrival", source)
    start, end = _numbers(frame, "start", source), _numbers(frame, "end", source)
    if not np.isfinite(arrival).all():
        row = int(np.flatnonzero(~np.isfinite(arrival))[0])
        raise InputError(f"row {row + 1} has no arrival time", source=source, field="arrival")
    served = np.isfinite(start) & np.isfinite(end)
    for earlier, later, a, b in (
        ("arrival", "start", arrival, start),
        ("start", "end", start, end),
    ):
        wrong = served & (b < a)
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise InputError(
                f"{int(wrong.sum()):,} row(s) have {later} before {earlier} (row {row + 1}: "
                f"{a[row]:g} then {b[row]:g}); times are seconds on one clock",
                source=source,
                field=later,
            )
    origin = float(arrival.min())
    arrival, start, end = arrival - origin, start - origin, end - origin
    replica = (
        _numbers(frame, "replica", source).astype(np.int64)
        if "replica" in frame
        else np.zeros(len(frame), dtype=np.int64)
    )
    if (replica < 0).any() or replica.max() > 4096:
        raise InputError("replica numbers run from 0 to 4,096", source=source, field="replica")
    if "batch" in frame:
        ids = _numbers(frame, "batch", source)
        served &= np.isfinite(ids) & (ids >= 0)
        key = pd.Series(np.where(served, ids, np.nan))
    else:  # requests sharing a start and an end (to the microsecond) ran together
        key = pd.Series(
            [
                (int(r), round(s * 1e6), round(e * 1e6)) if ok else None
                for r, s, e, ok in zip(replica, start, end, served, strict=True)
            ],
            dtype=object,
        )
    codes, uniques = pd.factorize(key, use_na_sentinel=True)
    groups = pd.DataFrame({"code": codes, "start": start, "end": end, "replica": replica}).loc[
        codes >= 0
    ]
    by_batch = groups.groupby("code").agg(
        start=("start", "min"),
        end=("end", "max"),
        replica=("replica", "first"),
        size=("start", "size"),
    )
    if "batch_size" in frame:
        told = _numbers(frame, "batch_size", source)
        told_size = pd.Series(told[codes >= 0]).groupby(codes[codes >= 0]).max()
        by_batch["size"] = np.maximum(by_batch["size"], told_size.fillna(0).astype(int))
    order = np.argsort(by_batch.start.to_numpy(), kind="stable")
    renumber = np.empty(order.size, dtype=np.int64)
    renumber[order] = np.arange(order.size)
    request_batch = np.where(codes >= 0, renumber[np.maximum(codes, 0)], -1).astype(np.int64)
    ordered = by_batch.iloc[order]
    outcome = _outcomes(frame, served, source)
    sources, names = _sources(frame)
    end_s = float(np.nanmax(np.concatenate([arrival, end[served]])))
    records = RunRecords(
        arrival_s=arrival,
        source=sources,
        request_batch=request_batch,
        outcome=outcome,
        batch_replica=ordered.replica.to_numpy(dtype=np.int32),
        batch_start_s=ordered.start.to_numpy(dtype=float),
        batch_end_s=ordered.end.to_numpy(dtype=float),
        batch_size=ordered["size"].to_numpy(dtype=np.int32),
        batch_padded=ordered["size"].to_numpy(dtype=np.int32),
        replicas=int(replica.max()) + 1,
        warmup_s=warmup_s,
        end_s=end_s,
        source_names=names,
    )
    return Recorded(source, records, has_sources="source" in frame)


def _sources(frame: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...] | None]:
    if "source" not in frame:
        return np.zeros(len(frame), dtype=np.int32), None
    values = frame["source"]
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(dtype=np.int32), None
    codes, uniques = pd.factorize(values.astype(str))
    return codes.astype(np.int32), tuple(uniques)


def _run_folder(path: Path, warmup_s: float) -> Recorded:
    """A folder batchsim wrote: its own columns, read back as they were written."""
    requests = files.read_parquet(path / "requests.parquet", "records")
    batches = files.read_parquet(path / "batches.parquet", "records")
    source = str(path)
    for name, frame, needed in (
        ("requests.parquet", requests, ("arrival", "batch", "outcome")),
        ("batches.parquet", batches, ("start", "end", "size")),
    ):
        missing = [c for c in needed if c not in frame]
        if missing:
            raise InputError(
                f"no column {', '.join(repr(m) for m in missing)}; it has "
                f"{files.column_list(frame.columns)}",
                source=str(path / name),
            )
    summary = {}
    if (path / "summary.json").is_file():
        summary = files.read_json(path / "summary.json", "summary")
    request_batch = requests["batch"].to_numpy(dtype=np.int64)
    if request_batch.max(initial=-1) >= len(batches):
        raise InputError("requests.parquet names batches that batches.parquet lacks", source=source)
    outcome = _outcomes(requests, request_batch >= 0, str(path / "requests.parquet"))
    batch_start = batches["start"].to_numpy(dtype=float)
    batch_end = batches["end"].to_numpy(dtype=float)
    arrival = requests["arrival"].to_numpy(dtype=float)
    window_s = summary.get("window_s") if isinstance(summary, dict) else None
    made_with = files.run_scenario(path)
    recorded_warmup = files.warmup_of(made_with)
    if isinstance(window_s, int | float) and recorded_warmup is not None:
        end_s = recorded_warmup + float(window_s)
    else:
        end_s = float(np.nanmax(np.concatenate([arrival, batch_end, [0.0]])))
    replica = (
        batches["replica"].to_numpy(dtype=np.int32)
        if "replica" in batches
        else np.zeros(len(batches), dtype=np.int32)
    )
    size = batches["size"].to_numpy(dtype=np.int32)
    padded = batches["padded_size"].to_numpy(dtype=np.int32) if "padded_size" in batches else size
    sources, names = _sources(requests)
    records = RunRecords(
        arrival_s=arrival,
        source=sources,
        request_batch=request_batch,
        outcome=outcome,
        batch_replica=replica,
        batch_start_s=batch_start,
        batch_end_s=batch_end,
        batch_size=size,
        batch_padded=padded,
        replicas=int(replica.max(initial=0)) + 1,
        warmup_s=warmup_s,
        end_s=end_s,
        deadline_s=requests["deadline"].to_numpy(dtype=float) if "deadline" in requests else None,
        source_names=names,
    )
    model_ms = (
        requests["server_model_ms"].to_numpy(dtype=float) if "server_model_ms" in requests else None
    )
    robots = summary.get("robots") if isinstance(summary, dict) else None
    robots = robots if isinstance(robots, dict) else None
    return Recorded(source, records, robots, model_ms, scenario=made_with)


def batch_times_ms(recorded: list[Recorded]) -> dict[int, np.ndarray]:
    """Every recorded batch's service time (end - start, ms) by padded size, over the
    runs: what the server spent per batch, the model and everything around it."""
    parts = [
        pd.DataFrame(
            {
                "padded": r.records.batch_padded,
                "ms": (r.records.batch_end_s - r.records.batch_start_s) * 1000,
            }
        )
        for r in recorded
    ]
    frame = pd.concat(parts, ignore_index=True)
    frame = frame[np.isfinite(frame.ms) & (frame.ms >= 0)]
    return {int(k): g.ms.to_numpy() for k, g in frame.groupby("padded")}


def describe(recorded: Recorded, summary: dict[str, Any]) -> dict[str, Any]:
    """What one recorded run holds, for validation.json, counted as every batchsim output
    counts (observe's and run's tables, summary.json): requests that arrived after the
    warm-up, batches that started after it (`summary`: the run's summary)."""
    rec = recorded.records
    return {
        "source": recorded.source,
        "requests": summary["requests"]["arrived"],
        "batches": summary["batch_size"]["batches"],
        "warmup_s": rec.warmup_s,
        "requests_in_warmup": int((rec.arrival_s < rec.warmup_s).sum()),
        "end_s": rec.end_s,
        "robot_figures": recorded.robots is not None,
    }
