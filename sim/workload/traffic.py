"""Traffic values the server core is built from: open-loop requests known in advance, or a
closed-loop robot fleet whose next requests wait in a heap.

Both are clock-free. `OpenTraffic` is arrays. A `Fleet` holds, for every robot that is not
waiting for an answer, its next request's arrival at the server; the core pops arrivals as
its clock passes them and tells the fleet when each request is answered. A robot's next
request is known the moment its answer is known (sync: when its chunk runs out; async:
at the action that crosses the threshold), so a whole fleet costs one heap entry per
request, never a process or an event per robot.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.workload.open import Arrivals
from sim.workload.robots import RobotClient


@dataclass(frozen=True)
class OpenTraffic:
    """Open-loop requests: arrival times and sources, with optional per-request deadlines
    (inf where none), class priorities and ids, and shapes."""

    arrivals: Arrivals
    deadline_s: np.ndarray | None = None
    priority: np.ndarray | None = None
    class_id: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    shape: np.ndarray | None = None

    closed = False

    def __len__(self) -> int:
        return len(self.arrivals)


class Fleet:
    """Closed-loop traffic: robot clients and the heap of their next arrivals at the server.

    Heap entries are (arrival_s, scheduled_s, answered_s, seq, robot): requests reaching the
    server at the same instant are taken in the order their last step was scheduled (the
    send, or the uplink after it), then by when their robot got its previous answer, then
    in the order answers were given (a batch answers its requests in queue order).
    `horizon_s`: nothing is sent or delivered at or after it. `max_requests`: the first
    that many requests to reach the server are all there is; robots then stop.
    """

    closed = True

    def __init__(
        self,
        clients: Sequence[RobotClient],
        horizon_s: float | None = None,
        max_requests: int | None = None,
    ):
        self.clients = list(clients)
        self.horizon_s = horizon_s
        self.max_requests = max_requests
        self.arrived = 0  # requests that reached the server
        self.last_answer_s = -math.inf  # the latest answer delivered to a robot
        self._heap: list[tuple[float, float, float, int, int]] = []
        self._seq = 0
        for client in self.clients:
            self._plan(client, 0.0)

    @property
    def next_arrival_s(self) -> float:
        """When the next pending request reaches the server (inf: none pending)."""
        return self._heap[0][0] if self._heap else math.inf

    def _plan(self, client: RobotClient, now_s: float) -> None:
        """Queue the robot's next request, known at `now_s` (its answer, or the start)."""
        send_s = client.next_send_s
        horizon = self.horizon_s
        if send_s is None or (horizon is not None and send_s >= horizon):
            return  # the robot sends nothing more in this run
        if self.max_requests is not None and self.arrived >= self.max_requests:
            return
        sent_s = now_s + max(send_s - now_s, 0.0)  # a robot cannot send before it knows
        uplink_s, _ = client.draw_network()
        arrival_s = sent_s + uplink_s if uplink_s > 0 else sent_s
        scheduled_s = sent_s if uplink_s > 0 else now_s
        heapq.heappush(self._heap, (arrival_s, scheduled_s, now_s, self._seq, client.id))
        self._seq += 1

    def pop(self) -> tuple[float, RobotClient, float] | None:
        """The next request: (arrival_s, robot, deadline_s at the server); None when it is
        past max_requests (its robot stops)."""
        arrival_s, scheduled_s, answered_s, _, robot = heapq.heappop(self._heap)
        if self.max_requests is not None and self.arrived >= self.max_requests:
            self._heap.clear()
            return None
        client = self.clients[robot]
        sent_s = scheduled_s if client.uplink_s > 0 else arrival_s
        deadline_s = client.send(sent_s)
        self.arrived += 1
        # the server sees the robot's deadline less the nominal downlink
        return arrival_s, client, deadline_s - client.p.downlink_s

    def answer(self, client: RobotClient, at_s: float, ok: bool) -> float:
        """The server answered `client`'s request at `at_s` (ok: its chunk; else a failure
        notice); the robot gets it a downlink later, then plans its next request. Returns
        the time of delivery (inf: after the horizon, never delivered)."""
        down = client.downlink_s
        t = at_s + down if down > 0 else at_s
        if self.horizon_s is not None and t >= self.horizon_s:
            return math.inf
        client.deliver(t, ok)
        if t > self.last_answer_s:
            self.last_answer_s = t
        self._plan(client, t)
        return t

    def kth_arrival_s(self, k: int, before_s: float) -> float | None:
        """The time the k-th next pending request arrives, if that is before `before_s`."""
        heap = self._heap
        if k == 1:
            return heap[0][0] if heap and heap[0][0] < before_s else None
        # count entries earlier than before_s, walking only the part of the heap below it
        found, stack = 0, [0] if heap else []
        while stack and found < k:
            i = stack.pop()
            if heap[i][0] < before_s:
                found += 1
                stack.extend(j for j in (2 * i + 1, 2 * i + 2) if j < len(heap))
        if found < k:
            return None
        return heapq.nsmallest(k, heap)[-1][0]

    def finish(self, end_s: float) -> None:
        """The run ends at `end_s`: requests sent but still on their way count as sent, and
        every robot accounts for its time up to the end."""
        for arrival_s, scheduled_s, _, _, robot in sorted(self._heap):
            client = self.clients[robot]
            sent_s = scheduled_s if client.uplink_s > 0 else arrival_s
            if sent_s < end_s:
                client.send(sent_s)
        self._heap.clear()
        for client in self.clients:
            client.finish(end_s)
