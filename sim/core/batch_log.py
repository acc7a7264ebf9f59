"""The batch log: every batch a core started (step level: every iteration), one typed
column per figure, and each batch's requests in `members` from its `offset`, so reading a
batch's requests costs O(its size), however long the run."""

from __future__ import annotations

import math
from array import array

import numpy as np


class BatchLog:
    """Append-only columns of the batches, one append per figure per batch."""

    __slots__ = ("replica", "start_s", "size", "padded", "end_s", "shape", "members", "offset",
                 "completed")  # fmt: skip

    def __init__(self) -> None:
        self.replica = array("i")
        self.start_s = array("d")
        self.size = array("i")  # requests in the batch (step level: in flight)
        self.padded = array("i")
        self.end_s: list[float] = []  # NaN until the batch's end is known
        self.shape = array("i")  # the shape variant each batch ran as (shape-aware profiles)
        self.members = array("q")  # each batch's requests in turn (step level: those admitted)
        self.offset = array("q")  # where each batch's requests start in `members`
        self.completed = array("q")  # step level: (request, iteration) of each completion

    def __len__(self) -> int:
        return len(self.end_s)

    def add(self, replica: int, start_s: float, size: int, padded: int, ids) -> int:
        """A batch starts: its columns, and `ids` (the requests it took); returns its number."""
        self.replica.append(replica)
        self.start_s.append(start_s)
        self.size.append(size)
        self.padded.append(padded)
        self.offset.append(len(self.members))
        self.members.extend(ids)
        self.end_s.append(math.nan)
        return len(self.end_s) - 1

    def requests(self, batch: int) -> array:
        """The requests batch `batch` took, in the order it took them."""
        offset = self.offset
        lo = offset[batch]
        hi = offset[batch + 1] if batch + 1 < len(offset) else len(self.members)
        return self.members[lo:hi]

    def taken(self) -> np.ndarray:
        """How many requests each batch took (its size; step level: those it admitted)."""
        return np.diff(np.asarray(self.offset, dtype=np.int64), append=len(self.members))
