"""Columnar records of a run: one array per field, never one Python object per request."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported only where a frame is asked for
    import pandas as pd

# request outcome codes (int8); the names are what requests.parquet stores
QUEUED, COMPLETED, IN_SERVICE, DROPPED, REJECTED, FAILED = 0, 1, 2, 3, 4, 5
OUTCOME_NAMES = ("queued", "completed", "in_service", "dropped", "rejected", "failed")


@dataclass(frozen=True)
class RobotRecords:
    """Each robot's figures at the end of a run, one array per figure (row k: robot k, its
    `id`). Counts named `window_*` are within [warmup, end); the others over the whole run.
    `round_trips_s` holds every window round trip (send to answer at the robot), robot by
    robot, `round_trip_count` of them each; `stall_log` (when kept, for traces) each
    freeze's (start, end), `stall_count` of them each."""

    id: np.ndarray
    group: tuple[str, ...]
    mode: tuple[str, ...]
    control_hz: np.ndarray
    has_deadlines: np.ndarray
    sent: np.ndarray
    responses: np.ndarray
    failures: np.ndarray
    misses: np.ndarray
    executed_actions: np.ndarray
    delivered_actions: np.ndarray
    stale_actions: np.ndarray
    unused_actions: np.ndarray
    replaced_actions: np.ndarray
    queued_actions: np.ndarray
    window_sent: np.ndarray
    window_responses: np.ndarray
    window_failures: np.ndarray
    window_misses: np.ndarray
    window_executed: np.ndarray
    window_stall_s: np.ndarray
    window_stall_episodes: np.ndarray
    window_stall_longest_s: np.ndarray
    round_trips_s: np.ndarray
    round_trip_count: np.ndarray
    stall_log: np.ndarray | None = None  # (n, 2): start, end of each freeze
    stall_count: np.ndarray | None = None
    # real-time chunking robots' window counts by name (sim.workload.rtc.RTC_FIGURES), one
    # value per robot (0 for robots of other modes); None without rtc robots
    rtc: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.id.size)

    def round_trips_by_robot(self) -> list[np.ndarray]:
        """Each robot row's window round trips (s), split in one pass."""
        return np.split(self.round_trips_s, np.cumsum(self.round_trip_count)[:-1])

    def stalls_by_robot(self) -> list[np.ndarray]:
        """Each robot row's freezes as (start, end) rows (none where they were not kept)."""
        if self.stall_log is None or self.stall_count is None:
            return [np.zeros((0, 2)) for _ in range(len(self))]
        return np.split(self.stall_log, np.cumsum(self.stall_count)[:-1])


@dataclass(frozen=True)
class RunRecords:
    """Everything a run produced, in columns, never changed once the run has ended.

    Requests: arrival time, source, the batch that served it (-1: none) and the
    outcome code. A request's start, completion and replica are its batch's.
    Batches: replica, start, end, real size and padded size.

    Step-level batching: a request runs in several iterations (batches); `request_batch`
    is the one that admitted it (its start), `request_last_batch` the one that ran its last
    step (its completion; -1: none yet), and `batch_admitted` how many each iteration
    admitted. `request_steps`: each request's denoising steps, where they are kept.
    """

    arrival_s: np.ndarray
    source: np.ndarray
    request_batch: np.ndarray
    outcome: np.ndarray
    batch_replica: np.ndarray
    batch_start_s: np.ndarray
    batch_end_s: np.ndarray
    batch_size: np.ndarray
    batch_padded: np.ndarray
    replicas: int
    warmup_s: float
    end_s: float
    source_names: tuple[str, ...] | None = None
    deadline_s: np.ndarray | None = None  # per request; inf where none
    class_id: np.ndarray | None = None  # per request, index into class_names
    class_names: tuple[str, ...] | None = None
    robots: RobotRecords | None = None  # closed loop: each robot's figures
    request_shape: np.ndarray | None = None  # shape-aware profiles: each request's shape
    batch_shape: np.ndarray | None = None  # ... and the shape variant each batch ran as
    shape_name: str = "shape"
    request_last_batch: np.ndarray | None = None  # step level: the batch that completed it
    batch_admitted: np.ndarray | None = None  # step level: requests each iteration admitted
    request_steps: np.ndarray | None = None  # denoising steps per request (0: never started)
    # further per-request columns a driver records (observe: when each answer reached the client)
    request_extra: dict[str, np.ndarray] | None = None

    # derived columns, computed once (records do not change once the run has ended)
    @cached_property
    def request_start_s(self) -> np.ndarray:
        return _via_batch(self.request_batch, self.batch_start_s)

    @cached_property
    def request_completion_s(self) -> np.ndarray:
        last = self.request_batch if self.request_last_batch is None else self.request_last_batch
        done = _via_batch(last, self.batch_end_s)
        done[self.outcome != COMPLETED] = np.nan
        return done

    @cached_property
    def request_replica(self) -> np.ndarray:
        replica = np.full(self.request_batch.size, -1, dtype=np.int32)
        served = self.request_batch >= 0
        replica[served] = self.batch_replica[self.request_batch[served]]
        return replica

    def request_columns(self) -> dict[str, Any]:
        """The columns of requests.parquet: arrays, and (codes, categories) for categorical ones."""
        source: Any = self.source
        if self.source_names is not None:
            source = (self.source, self.source_names)
        columns: dict[str, Any] = {
            "id": np.arange(self.arrival_s.size, dtype=np.int64),
            "source": source,
            "arrival": self.arrival_s,
            "start": self.request_start_s,
            "completion": self.request_completion_s,
            "replica": self.request_replica,
            "batch": self.request_batch,
            "outcome": (self.outcome, OUTCOME_NAMES),
        }
        # deadline and class columns, present when the run had deadlines or classes
        if self.deadline_s is not None and np.isfinite(self.deadline_s).any():
            columns["deadline"] = self.deadline_s
        if self.request_shape is not None:
            columns[self.shape_name] = self.request_shape
        if self.request_last_batch is not None:
            columns["last_batch"] = self.request_last_batch
        if self.request_steps is not None:
            columns["steps"] = self.request_steps
        if self.class_names is not None and self.class_id is not None:
            columns["class"] = (self.class_id, self.class_names)
        columns.update(self.request_extra or {})
        return columns

    def batch_columns(self) -> dict[str, Any]:
        """The columns of batches.parquet."""
        return {
            "id": np.arange(self.batch_start_s.size, dtype=np.int64),
            "replica": self.batch_replica,
            "start": self.batch_start_s,
            "end": self.batch_end_s,
            "size": self.batch_size,
            "padded_size": self.batch_padded,
            **({} if self.batch_admitted is None else {"admitted": self.batch_admitted}),
            **({} if self.batch_shape is None else {self.shape_name: self.batch_shape}),
        }

    def requests_frame(self) -> pd.DataFrame:
        """One row per request, in the columns of requests.parquet."""
        return arrow_table(self.request_columns()).to_pandas()

    def batches_frame(self) -> pd.DataFrame:
        """One row per batch, in the columns of batches.parquet."""
        return arrow_table(self.batch_columns()).to_pandas()


def arrow_table(columns: dict[str, Any]):
    """A pyarrow Table of record columns: numpy arrays, (codes, categories) pairs (dictionary
    columns, which read back as pandas categoricals), or lists of numbers, strings and None
    (null). Built from buffers: pyarrow's own converters import pandas, which a simulation
    run never needs."""
    import pyarrow as pa

    def numbers(values: np.ndarray, valid: np.ndarray | None = None):
        values = np.ascontiguousarray(values)
        bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
        kind = pa.from_numpy_dtype(values.dtype)
        return pa.Array.from_buffers(kind, values.size, [bitmap, pa.py_buffer(values)])

    def strings(values: list[str]):
        data = [str(v).encode() for v in values]
        offsets = np.cumsum([0, *map(len, data)], dtype=np.int32)
        buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
        return pa.Array.from_buffers(pa.string(), len(data), buffers)

    def listed(values: list[Any]):
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, str) for v in present):
            return strings(values)
        valid = np.array([v is not None for v in values], dtype=bool)
        if not present:
            return pa.nulls(len(values))
        floating = any(isinstance(v, float) for v in present)
        filled = np.array(
            [v if v is not None else 0 for v in values], dtype=float if floating else np.int64
        )
        return numbers(filled, None if valid.all() else valid)

    arrays = []
    for column in columns.values():
        if isinstance(column, tuple):
            codes, categories = column
            arrays.append(pa.DictionaryArray.from_arrays(numbers(codes), strings(categories)))
        elif isinstance(column, list):
            arrays.append(listed(column))
        else:
            arrays.append(numbers(np.asarray(column)))
    return pa.Table.from_arrays(arrays, names=list(columns))


def write_parquet(columns: dict[str, Any], path: Any) -> None:
    """One record file, written straight from the columns (no DataFrame in between)."""
    import pyarrow.parquet as pq

    # dictionary pages for categorical columns only: on float columns they cost twice the time
    categorical = [name for name, column in columns.items() if isinstance(column, tuple)]
    pq.write_table(arrow_table(columns), path, use_dictionary=categorical)


def finalize_outcomes(
    outcome: np.ndarray,
    request_batch: np.ndarray,
    batch_end_s: np.ndarray,
    end_s: float,
    last_batch: np.ndarray | None = None,
) -> None:
    """The one place a request's final outcome is set: a request whose last batch ended by
    `end_s` completed, one started but not finished then is in service; a failed batch's
    requests stay failed, and the rest (queued, dropped, rejected) are already final.
    `last_batch`: step level, the batch that ran each request's last step (-1: none)."""
    served = request_batch >= 0
    last = request_batch if last_batch is None else last_batch
    finished = last >= 0
    done = np.zeros(served.size, dtype=bool)
    done[finished] = batch_end_s[last[finished]] <= end_s
    ok = outcome != FAILED
    outcome[served & done & ok] = COMPLETED
    outcome[served & ~done & ok] = IN_SERVICE


def _via_batch(request_batch: np.ndarray, batch_values: np.ndarray) -> np.ndarray:
    out = np.full(request_batch.size, np.nan)
    served = request_batch >= 0
    out[served] = batch_values[request_batch[served]]
    return out
