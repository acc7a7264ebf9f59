"""Columnar records of a run: one array per field, never one Python object per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# request outcome codes (int8); the names are what requests.parquet stores
QUEUED, COMPLETED, IN_SERVICE, DROPPED, REJECTED, FAILED = 0, 1, 2, 3, 4, 5
OUTCOME_NAMES = ("queued", "completed", "in_service", "dropped", "rejected", "failed")


@dataclass
class RunRecords:
    """Everything a run produced, in columns.

    Requests: arrival time, source, the batch that served it (-1: none) and the
    outcome code. A request's start, completion and replica are its batch's.
    Batches: replica, start, end, real size and padded size.
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
    robots: list[Any] | None = None  # closed loop: the RobotClient of each source id
    request_shape: np.ndarray | None = None  # shape-aware profiles: each request's shape
    batch_shape: np.ndarray | None = None  # ... and the shape variant each batch ran as
    shape_name: str = "shape"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def request_start_s(self) -> np.ndarray:
        return _via_batch(self.request_batch, self.batch_start_s)

    @property
    def request_completion_s(self) -> np.ndarray:
        done = _via_batch(self.request_batch, self.batch_end_s)
        done[self.outcome != COMPLETED] = np.nan
        return done

    @property
    def request_replica(self) -> np.ndarray:
        replica = np.full(self.request_batch.size, -1, dtype=np.int32)
        served = self.request_batch >= 0
        replica[served] = self.batch_replica[self.request_batch[served]]
        return replica

    def requests_frame(self) -> pd.DataFrame:
        """One row per request, in the columns of requests.parquet."""
        source: Any = self.source
        if self.source_names is not None:
            source = pd.Categorical.from_codes(self.source, categories=list(self.source_names))
        return pd.DataFrame(
            {
                "id": np.arange(self.arrival_s.size, dtype=np.int64),
                "source": source,
                "arrival": self.arrival_s,
                "start": self.request_start_s,
                "completion": self.request_completion_s,
                "replica": self.request_replica,
                "batch": self.request_batch,
                "outcome": pd.Categorical.from_codes(self.outcome, categories=list(OUTCOME_NAMES)),
                **self._class_columns(),
            }
        )

    def _class_columns(self) -> dict[str, Any]:
        """deadline and class columns, present when the run had deadlines or classes."""
        columns: dict[str, Any] = {}
        if self.deadline_s is not None and np.isfinite(self.deadline_s).any():
            columns["deadline"] = self.deadline_s
        if self.request_shape is not None:
            columns[self.shape_name] = self.request_shape
        if self.class_names is not None and self.class_id is not None:
            columns["class"] = pd.Categorical.from_codes(
                self.class_id, categories=list(self.class_names)
            )
        return columns

    def batches_frame(self) -> pd.DataFrame:
        """One row per batch, in the columns of batches.parquet."""
        return pd.DataFrame(
            {
                "id": np.arange(self.batch_start_s.size, dtype=np.int64),
                "replica": self.batch_replica,
                "start": self.batch_start_s,
                "end": self.batch_end_s,
                "size": self.batch_size,
                "padded_size": self.batch_padded,
                **({} if self.batch_shape is None else {self.shape_name: self.batch_shape}),
            }
        )


def finalize_outcomes(
    outcome: np.ndarray, request_batch: np.ndarray, batch_end_s: np.ndarray, end_s: float
) -> None:
    """The one place a request's final outcome is set: a request in a batch that ended by
    `end_s` completed, one in a batch still running then is in service; a failed batch's
    requests stay failed, and the rest (queued, dropped, rejected) are already final."""
    served = request_batch >= 0
    done = np.zeros(served.size, dtype=bool)
    done[served] = batch_end_s[request_batch[served]] <= end_s
    ok = outcome != FAILED
    outcome[served & done & ok] = COMPLETED
    outcome[served & ~done & ok] = IN_SERVICE


def _via_batch(request_batch: np.ndarray, batch_values: np.ndarray) -> np.ndarray:
    out = np.full(request_batch.size, np.nan)
    served = request_batch >= 0
    out[served] = batch_values[request_batch[served]]
    return out
