"""The core's per-request columns: Python lists where policies read scalars (arrival,
deadline, priority), arrays for the rest. Open loop they are the traffic's arrays; closed
loop they grow as requests arrive."""

from __future__ import annotations

import math
from array import array

import numpy as np

from sim.core.traffic import ClosedLoopTraffic, OpenTraffic


class Always:
    """A column holding one value n times, without n objects."""

    def __init__(self, value: float, n: int):
        self._value, self._n = value, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> float:
        return self._value


class RequestColumns:
    """Per-request columns: Python lists where policies read scalars, arrays for the rest."""

    def __init__(
        self,
        traffic: OpenTraffic | ClosedLoopTraffic,
        shapes: tuple[int, ...] | None,
        guided: bool = False,
    ):
        self.guided: list[bool] | None = None  # closed loop, mixed guidance: per request
        if not isinstance(traffic, OpenTraffic):
            self.guided = [] if guided else None
            # arrivals as they come: float buffers (numpy reads them without a copy)
            self.times = array("d")
            self.deadlines = array("d")
            self.sources = None  # each request's robot: its client's id
            self.shapes: list[int] | None = [] if shapes else None
            self.priority = self.class_id = self.class_names = self.source_names = None
            self.outcome = np.zeros(1024, dtype=np.int8)
            return
        arrivals = traffic.arrivals
        n = len(arrivals)
        self.arrival_s = arrivals.time_s
        self.times = arrivals.time_s.tolist()  # fast scalar reads for policies
        self.deadline_s = (
            traffic.deadline_s if traffic.deadline_s is not None else np.full(n, np.inf)
        )
        # read by EDF policies; without a deadline anywhere, one inf stands for all
        finite = bool(np.isfinite(self.deadline_s).any())
        self.deadlines = self.deadline_s.tolist() if finite else Always(math.inf, n)
        self.sources = arrivals.source
        self.source_names = arrivals.source_names
        self.shapes = None
        if shapes:
            shape = traffic.shape
            self.shapes = [max(shapes)] * n if shape is None else shape.tolist()
        self.priority = None if traffic.priority is None else traffic.priority.tolist()
        self.class_id, self.class_names = traffic.class_id, traffic.class_names
        self.outcome = np.zeros(n, dtype=np.int8)
