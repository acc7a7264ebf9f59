"""What the core is built from: open-loop traffic (every request known in advance, as
arrays) or closed-loop traffic (requests that exist only once earlier ones are answered:
a robot fleet, or the inbox of a real server). Both are declared here, so the core never
asks what a traffic value is beyond these two interfaces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class ArrivalTimes(Protocol):
    """Sorted arrival times (s) and each request's source (sim.workload.open.Arrivals)."""

    time_s: np.ndarray
    source: np.ndarray
    source_names: tuple[str, ...] | None

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class OpenTraffic:
    """Open-loop requests: arrival times and sources, with optional per-request deadlines
    (inf where none), class priorities and ids, and shapes."""

    arrivals: ArrivalTimes
    deadline_s: np.ndarray | None = None
    priority: np.ndarray | None = None
    class_id: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    shape: np.ndarray | None = None


class Client(Protocol):
    """A closed-loop request's sender: `id` is the request's source in the records; `shape`
    (through `p.shape`, robots) is read with a shape-aware profile."""

    id: int


class ClosedLoopTraffic(Protocol):
    """Closed-loop traffic as the core drives it (sim.workload.traffic.Fleet: robots;
    sim.real.serve.Inbox: a real server's connections).

    The traffic keeps its pending requests' arrivals at the server; the core `release`s
    those up to its clock into its columns, asks `kth_arrival_s` when a policy waits for a
    queue length, and tells it of every `answer` (chunks, or failure notices)."""

    next_arrival_s: float  # when the next pending request reaches the server (inf: none)
    last_answer_s: float  # the latest answer delivered

    def release(
        self, until_s: float, inclusive: bool, times: Any, deadlines: Any, clients: list
    ) -> None:
        """Append every request arriving before `until_s` (or at it, when `inclusive`) to
        the core's columns: arrival, deadline at the server, client."""
        ...

    def answer(self, clients: Sequence[Any], at_s: float, ok: bool | None) -> None:
        """The server answered these clients' requests at `at_s` (ok False: failure notices)."""
        ...

    def kth_arrival_s(self, k: int, before_s: float) -> float | None:
        """When the k-th next pending request arrives, if that is before `before_s`."""
        ...

    def finish(self, end_s: float) -> Any:
        """The run ends at `end_s`: returns the clients' records (None: none kept)."""
        ...
