"""A robot fleet as closed-loop traffic (sim/core/traffic.py's ClosedLoopTraffic): the robots
and the heap of their next requests.

It is clock-free. A `Fleet` holds, for every robot that is not
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

from sim.core.records import RobotRecords
from sim.workload.robots import RobotClient, robot_records


class Fleet:
    """Closed-loop traffic: robot clients and the heap of their next arrivals at the server.

    Heap entries are (arrival_s, scheduled_s, answered_s, seq, clients, dues): requests
    reaching the server at the same instant are taken in the order their last step was
    scheduled (the send, or the uplink after it), then by when their robot got its
    previous answer, then in the order answers were given (a batch answers its requests in
    queue order). Robots of one answer with the same three times share an entry, in that
    order (a batch's robots without network delays: one heap operation, not one each);
    `dues` holds each one's deadline at the server. `horizon_s`: nothing is sent or delivered at or after it.
    `max_requests`: the first that many requests to reach the server are all there is;
    robots then stop.

    Nothing happens to a robot between its answer and its next send, so the send is made
    when the answer is (its clock-free state machine lands at the send time); with
    max_requests it waits until the request reaches the server (`due_s` None), since only
    then is it known whether it is among the first N.
    """

    def __init__(
        self,
        clients: Sequence[RobotClient],
        horizon_s: float | None = None,
        max_requests: int | None = None,
    ):
        self.clients = list(clients)
        self.horizon_s = horizon_s
        self.max_requests = max_requests
        self._horizon_s = math.inf if horizon_s is None else horizon_s
        self._limit = math.inf if max_requests is None else max_requests
        self.arrived = 0  # requests that reached the server (counted with max_requests)
        self.last_answer_s = -math.inf  # the latest answer delivered to a robot
        self._heap: list[tuple] = []
        self._seq = 0
        self.next_arrival_s = math.inf  # when the next pending request reaches the server
        self._draws = any(c.network_jitter_s > 0 for c in self.clients)
        self.answer(self.clients, 0.0, None)  # the start: every robot's first request

    def answer(self, clients: Sequence[RobotClient], at_s: float, ok: bool | None) -> None:
        """The server answered these clients' requests at `at_s` (ok: their chunks; False:
        failure notices; None: nothing, the run starts), in this order. Each robot gets its
        answer a downlink later (none at or after the horizon), then plans its next request:
        sent at its send time (not before it knows), at the server an uplink later."""
        horizon_s = send_until_s = self._horizon_s
        if self.arrived >= self._limit:
            send_until_s = -math.inf  # past max_requests: robots send nothing more
        last_s = self.last_answer_s
        heap, seq, push = self._heap, self._seq, heapq.heappush
        send_now = self.max_requests is None
        draws = self._draws
        entry = None  # the entry this call pushed last
        for client in clients:
            if ok is None:
                t = at_s
                send_s = client.next_send_s
            else:
                down = client.downlink_s
                t = at_s + down if down > 0 else at_s
                if t >= horizon_s:
                    continue
                if t > last_s:
                    last_s = t
                send_s = client.deliver(t, ok)
            if send_s is None or send_s >= send_until_s:
                continue  # the robot sends nothing more in this run
            wait_s = send_s - t
            sent_s = t + wait_s if wait_s > 0 else t
            if draws:  # (each draws only if its own network jitters)
                client.draw_network()
            # the deadline the server sees (the robot's less the nominal downlink), known
            # at the send; None: sent when it reaches the server (max_requests)
            due_s = client.send(sent_s) - client.nominal_downlink_s if send_now else None
            uplink_s = client.uplink_s
            if uplink_s > 0:
                arrival_s, scheduled_s = sent_s + uplink_s, sent_s
            else:
                arrival_s, scheduled_s = sent_s, t
            if (
                entry is not None
                and entry[0] == arrival_s
                and entry[1] == scheduled_s
                and entry[2] == t
            ):  # the same key as the robot before: next in the same entry
                entry[4].append(client)
                entry[5].append(due_s)
            else:
                entry = (arrival_s, scheduled_s, t, seq, [client], [due_s])
                push(heap, entry)
                seq += 1
        self._seq = seq
        self.last_answer_s = last_s
        self.next_arrival_s = heap[0][0] if heap else math.inf

    def release(
        self, until_s: float, inclusive: bool, times: list, deadlines: list, clients: list
    ) -> None:
        """Requests reach the server: every one arriving before `until_s` (or at it, when
        `inclusive`) is appended to the server's columns (arrival, deadline at the server,
        client); past max_requests none is (their robots stop)."""
        if not inclusive:
            until_s = math.nextafter(until_s, -math.inf)  # before t: at or before the float below
        heap, heappop = self._heap, heapq.heappop
        while heap and heap[0][0] <= until_s:
            arrival_s, scheduled_s, _, _, group, dues = heappop(heap)
            if dues[0] is not None:  # sent already: all of them join
                if len(group) == 1:
                    times.append(arrival_s)
                    deadlines.append(dues[0])
                    clients.append(group[0])
                else:
                    times.extend([arrival_s] * len(group))
                    deadlines.extend(dues)
                    clients.extend(group)
                continue
            for client in group:  # max_requests: each is sent now, if among the first N
                if not self._send_late(_sent_s(arrival_s, scheduled_s, client), client):
                    break  # the fleet stops (its heap is cleared)
                times.append(arrival_s)
                deadlines.append(client.deadline_s - client.nominal_downlink_s)
                clients.append(client)
        self.next_arrival_s = heap[0][0] if heap else math.inf

    def _send_late(self, sent_s: float, client: RobotClient) -> bool:
        """max_requests: the request is sent as it reaches the server, if it is among the
        first N; else the fleet stops."""
        if self.arrived >= self._limit:
            self._heap.clear()
            return False
        client.send(sent_s)
        self.arrived += 1
        return True

    def kth_arrival_s(self, k: int, before_s: float) -> float | None:
        """The time the k-th next pending request arrives, if that is before `before_s`."""
        heap = self._heap
        if k == 1:
            return heap[0][0] if heap and heap[0][0] < before_s else None
        # count requests earlier than before_s, walking only the part of the heap below it
        found, stack = 0, [0] if heap else []
        while stack and found < k:
            i = stack.pop()
            if heap[i][0] < before_s:
                found += len(heap[i][4])
                stack.extend(j for j in (2 * i + 1, 2 * i + 2) if j < len(heap))
        if found < k:
            return None
        counted = 0  # the k smallest entries hold at least k requests
        for entry in heapq.nsmallest(k, heap):
            counted += len(entry[4])
            if counted >= k:
                return entry[0]
        return None

    def finish(self, end_s: float) -> RobotRecords:
        """The run ends at `end_s`: requests sent but still on their way count as sent, and
        every robot accounts for its time up to the end. Returns the robots' records."""
        for arrival_s, scheduled_s, _, _, group, dues in sorted(self._heap):
            for client, due_s in zip(group, dues, strict=True):
                sent_s = _sent_s(arrival_s, scheduled_s, client)
                if due_s is None and sent_s < end_s:  # not sent yet (max_requests)
                    client.send(sent_s)
        self._heap.clear()
        self.next_arrival_s = math.inf
        for client in self.clients:
            client.finish(end_s)
        return robot_records(self.clients)


def _sent_s(arrival_s: float, scheduled_s: float, client: RobotClient) -> float:
    """When a heap entry's request leaves its robot: its uplink is scheduled at the send,
    and without one it arrives as it is sent."""
    return scheduled_s if client.uplink_s > 0 else arrival_s
