"""Closed-loop robot clients: a control loop that executes action chunks from a policy server.

A `RobotClient` is a clock-free state machine (docs/design.md, principle 2): the driver
asks when it will send its next request, tells it when it sent one, and hands it
each response (or failure notice) at the moment it reaches the robot. Actions are
executed one per control period and accounted analytically between those calls,
so a robot costs a handful of events per request, not one per action.

Model (docs/semantics.md says the same):
- The robot executes at most `execute` actions of each `chunk` (the rest of the chunk
  is discarded as unused), one every 1/control_hz seconds, while it has any.
- sync: it sends an observation when it has executed the last action of its chunk
  (one period after that action), idles (stalls) until the response arrives, starts
  executing at once, and repeats.
- async: it keeps executing while its request is in flight, and sends when its
  remaining actions fall to `threshold` x execute or below. A response replaces the
  queue: the actions the robot executed since the observation are stale (the chunk's
  first m actions, m counted in executed actions, LeRobot's timestep rule), the old
  queue's leftovers are discarded, and if the robot had run dry it stalls until then and
  resumes at once.
- A request's deadline (at the robot) is when its action queue runs dry: the first
  control tick with no action left, or one control period after the send when the
  robot has already run dry (async). A sync robot idles by design, so its requests
  have a deadline only when the scenario sets an SLO (`slo_s` after the send). A
  response at the deadline is on time.
- A failure notice (the server dropped or rejected the request) makes the robot send
  again one control period later (it retries at its next tick).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.core.records import RobotRecords

_floor, _ceil = math.floor, math.ceil


@dataclass(frozen=True)
class RobotParams:
    """One robot's loop: rates, chunking, mode and network."""

    control_hz: float
    chunk: int
    execute: int
    mode: str = "sync"  # sync | async
    threshold: float = 0.5
    start_s: float = 0.0
    jitter_s: float = 0.0  # Gaussian jitter on each send time
    uplink_s: float = 0.0
    downlink_s: float = 0.0
    network_jitter_s: float = 0.0
    slo_s: float | None = None  # sync deadline after the send; None: one control period
    group: str = "robots"
    shape: int | None = None  # request shape (e.g. cameras), for shape-aware profiles
    # rtc (sim/workload/rtc.py): the frozen prefix in ticks (None: auto, from the initial
    # one, at most the largest d <= execute <= chunk - d allows), and the guidance
    delay_steps: int | None = None
    initial_delay_steps: int = 0
    max_delay_steps: int = 0
    guidance: str = "inference"
    guided: bool = False  # its requests run the guided model (inference-time, factor > 1)

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_hz

    @property
    def has_deadlines(self) -> bool:
        return self.mode != "sync" or self.slo_s is not None


class Normals:
    """A robot's stream of standard normals, drawn in blocks. `rng.normal(0, s)` is
    0 + s * z for the stream's next standard normal z, and a block holds the same z's as
    one draw at a time, so `0.0 + s * normals()` is that draw bit for bit, at a block's cost."""

    __slots__ = ("_rng", "_block", "_i")
    _SIZE = 64

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._block: list[float] = []
        self._i = 0

    def __call__(self) -> float:
        i = self._i
        if i >= len(self._block):
            self._block = self._rng.standard_normal(self._SIZE).tolist()
            i = 0
        self._i = i + 1
        return self._block[i]


def _ticks_in(first_s: float, count: int, period_s: float, lo_s: float, hi_s: float) -> int:
    """How many of the ticks first, first+T, ..., first+(count-1)T lie in [lo, hi)."""
    if count <= 0 or hi_s <= lo_s:
        return 0
    k_lo = max(0, math.ceil((lo_s - first_s) / period_s - 1e-9))
    k_hi = count if math.isinf(hi_s) else min(count, math.ceil((hi_s - first_s) / period_s - 1e-9))
    return max(0, k_hi - k_lo)


class Robot:
    """What every robot client keeps and draws, however it accounts for its actions: its
    parameters, its next send and deadline, and its draws (send jitter, network delays)
    from its own stream, in the same order whichever client it is."""

    __slots__ = (
        "id", "p", "_normal", "warmup_s", "usable", "_period_s", "_jitter_s", "next_send_s",
        "deadline_s", "uplink_s", "downlink_s", "nominal_downlink_s", "network_jitter_s",
    )  # fmt: skip

    def __init__(
        self, robot_id: int, params: RobotParams, rng: np.random.Generator, warmup_s: float
    ):
        self.id = robot_id
        self.p = params
        self._normal = Normals(rng)
        self.warmup_s = warmup_s
        self.usable = min(params.execute, params.chunk)
        self._period_s = params.period_s
        self._jitter_s = params.jitter_s
        self.deadline_s = math.inf
        # the network delays of the next (or in-flight) request, drawn by draw_network()
        self.uplink_s = params.uplink_s
        self.downlink_s = params.downlink_s
        self.network_jitter_s = params.network_jitter_s
        self.nominal_downlink_s = params.downlink_s
        self.next_send_s: float | None = self._jittered(params.start_s)  # its first draw

    def draw_network(self) -> None:
        """Draw the next request's uplink and downlink delays (kept until it is answered);
        without network jitter they stay the nominal ones."""
        if self.network_jitter_s > 0:
            self.uplink_s = self._network(self.p.uplink_s)
            self.downlink_s = self._network(self.p.downlink_s)

    def _jittered(self, t_s: float) -> float:
        if self._jitter_s > 0:
            t_s += 0.0 + self._jitter_s * self._normal()
        return t_s

    def _network(self, nominal_s: float) -> float:
        return max(0.0, nominal_s + (0.0 + self.network_jitter_s * self._normal()))


class RobotClient(Robot):
    """One robot's control loop as a state machine driven by a clock (simulated or real).

    Between two calls nothing happens to a robot but its own actions, which are counted
    analytically, so the driver may call it whenever it likes as long as it calls it in
    time order: `draw_network()` when it plans the next request, `send(t)` at its send
    time, `deliver(t, ok)` when the answer reaches the robot, `finish(end)` at the end.
    Its running totals are counted in slots of its own (a robot is called once or twice
    per request, on the simulator's hottest path); `robot_records` gathers them.
    """

    __slots__ = (
        "queue", "next_tick_s", "stalled_since_s", "in_flight", "executed_since_send",
        "sent_at_s", "_sync", "_chunk",
        # running totals (robot_records gathers them)
        "sent", "responses", "failures", "misses", "executed_actions", "stale_actions",
        "replaced_actions", "window_executed", "window_stall_s", "window_responses",
        "window_sent", "window_misses", "window_failures", "window_stall_episodes",
        "window_stall_longest_s", "round_trips_s", "stall_log",
    )  # fmt: skip

    def __init__(
        self,
        robot_id: int,
        params: RobotParams,
        rng: np.random.Generator,
        warmup_s: float = 0.0,
        log_stalls: bool = False,
    ):
        super().__init__(robot_id, params, rng, warmup_s)
        self._chunk = params.chunk
        self._sync = params.mode == "sync"
        self.queue = 0  # actions left to execute
        self.next_tick_s = params.start_s  # when the next action is due
        self.stalled_since_s: float | None = params.start_s  # the robot starts with nothing
        self.in_flight = False
        self.executed_since_send = 0
        self.sent_at_s = 0.0
        self.sent = self.responses = self.failures = self.misses = 0
        self.executed_actions = self.stale_actions = self.replaced_actions = 0
        self.window_executed = self.window_responses = self.window_sent = 0
        self.window_misses = self.window_failures = 0
        self.window_stall_s = 0.0
        self.window_stall_episodes = 0
        self.window_stall_longest_s = 0.0
        self.round_trips_s = array("d")  # seconds, as a buffer numpy reads without a copy
        # (start, end) of each freeze, when asked (traces)
        self.stall_log: array | None = array("d") if log_stalls else None

    # ---- what the driver asks -----------------------------------------------------------
    def send(self, now_s: float) -> float:
        """The robot sends its observation at `now_s`; returns the request's deadline at the
        robot (network delays: draw_network() before)."""
        if self.stalled_since_s is None:
            self._run_until(now_s, True)  # the action due at the send tick runs first
        self.in_flight = True
        self.next_send_s = None
        self.sent_at_s = now_s
        self.executed_since_send = 0
        if self._sync:
            slo_s = self.p.slo_s
            deadline_s = now_s + slo_s if slo_s is not None else math.inf
        elif self.stalled_since_s is not None:
            # already dry: the next action is due at the next control tick
            deadline_s = now_s + self._period_s
        else:
            # the queue runs dry at the first tick with no action left
            deadline_s = self.next_tick_s + self.queue * self._period_s
        self.deadline_s = deadline_s
        self.sent += 1
        if now_s >= self.warmup_s:
            self.window_sent += 1
        return deadline_s

    def deliver(self, now_s: float, ok: bool) -> float | None:
        """The response (ok) or a failure notice (not ok) reaches the robot at `now_s`;
        returns its next send (next_send_s)."""
        stalled = self._arrive(now_s)
        in_window = now_s >= self.warmup_s
        if not ok:
            self._failed(now_s, in_window)
            return self.next_send_s
        if now_s > self.deadline_s + 1e-12:
            self.misses += 1
            self.window_misses += in_window
        self.responses += 1
        self.window_responses += in_window
        sent_s = self.sent_at_s
        if sent_s >= self.warmup_s:
            self.round_trips_s.append(now_s - sent_s)
        queue = self.usable
        stale = self.executed_since_send
        if stale:  # actions executed since the observation: the chunk's first ones are stale
            if stale > queue:
                stale = queue
            self.stale_actions += stale
            queue -= stale
        if self.queue:
            self.replaced_actions += self.queue
        self.queue = queue
        if queue and stalled is not None:
            self._add_stall(stalled, now_s)
            self.stalled_since_s = None
            self.next_tick_s = now_s
        if self._sync:
            # the next observation goes out when the chunk's last action period ends
            send_s = self.next_tick_s + queue * self._period_s
            self.next_send_s = self._jittered(send_s) if self._jitter_s > 0 else send_s
        else:
            self._schedule_async_send(now_s)
        return self.next_send_s

    def _arrive(self, now_s: float) -> float | None:
        """An answer reaches the robot at `now_s`: it executes every action due before then
        (one due at `now_s` is the answer's) and waits no more. Returns since when it has
        been stalled (None: it has an action to run)."""
        stalled = self.stalled_since_s
        if stalled is None:
            if self.queue:  # ticks strictly before now; a response at a tick comes first
                self._run_until(now_s)
                stalled = self.stalled_since_s
            elif self.next_tick_s < now_s:
                stalled = self.stalled_since_s = self.next_tick_s
        self.in_flight = False
        return stalled

    def _failed(self, now_s: float, in_window: bool) -> None:
        """A failure notice: a miss; the robot sends again one control period later (an
        async robot with more actions left than its threshold, when it crosses it)."""
        self.misses += 1
        self.failures += 1
        self.window_misses += in_window
        self.window_failures += in_window
        self.next_send_s = self._jittered(now_s + self._period_s)
        if self.p.mode == "async":
            self._schedule_async_send(now_s)

    def finish(self, end_s: float) -> None:
        """Account for everything up to `end_s` (the end of the run)."""
        self._run_until(end_s)
        if self.stalled_since_s is not None:
            self._add_stall(self.stalled_since_s, end_s)
            self.stalled_since_s = end_s

    def figures(self) -> dict:
        """The figures it counted, by name (robot_records gathers every robot's)."""
        row = {name: getattr(self, name) for name in _INT_FIGURES}
        row["window_stall_s"] = self.window_stall_s
        row["window_stall_longest_s"] = self.window_stall_longest_s
        row["round_trips_s"] = np.array(self.round_trips_s, dtype=float)
        row["stall_log"] = None if self.stall_log is None else np.array(self.stall_log, dtype=float)
        return row

    # ---- the loop between events ----------------------------------------------------------
    def _run_until(self, t_s: float, inclusive: bool = False) -> None:
        """Execute every action due before `t_s` (or at it, when `inclusive`); a robot whose
        queue runs dry stalls from the first tick it has no action for."""
        if self.stalled_since_s is not None:
            return
        queue = self.queue
        tick_s = self.next_tick_s
        if queue:
            period = self._period_s
            steps = (t_s - tick_s) / period
            due = _floor(steps + 1e-9) + 1 if inclusive else _ceil(steps - 1e-9)
            count = due if due < queue else queue
            if count > 0:
                self.executed_actions += count
                if tick_s >= self.warmup_s:  # every tick in the window (what _ticks_in counts)
                    self.window_executed += count
                else:
                    self.window_executed += _ticks_in(
                        tick_s, count, period, self.warmup_s, math.inf
                    )
                queue -= count
                self.queue = queue
                if self.in_flight:
                    self.executed_since_send += count
                tick_s = self.next_tick_s = tick_s + count * period
        if queue == 0 and tick_s < t_s:
            self.stalled_since_s = tick_s

    def _schedule_async_send(self, now_s: float) -> None:
        """async: send as soon as the remaining actions are <= threshold x execute."""
        limit = self.p.threshold * self.usable
        if self.queue <= limit:
            self.next_send_s = self._jittered(max(now_s, self.next_send_s or now_s))
            return
        # after executing j more actions, queue - j <= limit; the j-th runs at next_tick + (j-1)T
        j = math.ceil(self.queue - limit - 1e-9)
        self.next_send_s = self._jittered(self.next_tick_s + (j - 1) * self._period_s)

    def _add_stall(self, start_s: float, end_s: float) -> None:
        lo = start_s if start_s >= self.warmup_s else self.warmup_s
        if self.stall_log is not None and end_s > start_s:
            self.stall_log.extend((start_s, end_s))
        if end_s > lo:
            frozen_s = end_s - lo
            self.window_stall_s += frozen_s
            self.window_stall_episodes += 1
            if frozen_s > self.window_stall_longest_s:
                self.window_stall_longest_s = frozen_s


def ticks_from(first_s: np.ndarray, count: np.ndarray, period_s: float, lo_s: float) -> np.ndarray:
    """_ticks_in for runs of `count` actions from each `first_s`, counting those at or after
    `lo_s` (a run that starts at or after it counts whole), with the same arithmetic."""
    before = np.ceil((lo_s - first_s) / period_s - 1e-9)
    skipped = np.maximum(before, 0).astype(np.int64)
    partial = np.maximum(count - skipped, 0)
    return np.where(first_s >= lo_s, count, np.where(count > 0, partial, 0))


_INT_FIGURES = (
    "sent", "responses", "failures", "misses", "executed_actions", "stale_actions",
    "replaced_actions", "window_sent", "window_responses", "window_failures",
    "window_misses", "window_executed", "window_stall_episodes", "queue",
)  # fmt: skip


def robot_records(clients: Sequence) -> RobotRecords:
    """Every robot's figures as columns, one row per client in order (a finished run's
    figures: call once every client has been told the end). A RobotClient counted them on
    the way; a SyncRobot (sim/workload/sync_robot.py) derives them from its log."""
    rows = [c.figures() for c in clients]
    ints = {
        name: np.fromiter((row[name] for row in rows), dtype=np.int64, count=len(rows))
        for name in _INT_FIGURES
    }
    floats = {
        name: np.fromiter((row[name] for row in rows), dtype=float, count=len(rows))
        for name in ("window_stall_s", "window_stall_longest_s")
    }
    trips = [row["round_trips_s"] for row in rows]
    logged = bool(rows) and all(row["stall_log"] is not None for row in rows)
    logs = [row["stall_log"] for row in rows] if logged else []
    rtc = None
    if any(c.p.mode == "rtc" for c in clients):
        from sim.workload.rtc import RTC_FIGURES

        rtc = {
            name: np.fromiter((row.get(name, 0) for row in rows), dtype=np.int64, count=len(rows))
            for name in RTC_FIGURES
        }
    chunk = np.array([c.p.chunk for c in clients], dtype=np.int64)
    usable = np.array([c.usable for c in clients], dtype=np.int64)
    responses = ints["responses"]
    return RobotRecords(
        id=np.array([c.id for c in clients], dtype=np.int64),
        group=tuple(c.p.group for c in clients),
        mode=tuple(c.p.mode for c in clients),
        control_hz=np.array([c.p.control_hz for c in clients], dtype=float),
        has_deadlines=np.array([c.p.has_deadlines for c in clients], dtype=bool),
        sent=ints["sent"],
        responses=responses,
        failures=ints["failures"],
        misses=ints["misses"],
        executed_actions=ints["executed_actions"],
        delivered_actions=responses * chunk,
        stale_actions=ints["stale_actions"],
        unused_actions=responses * (chunk - usable),
        replaced_actions=ints["replaced_actions"],
        queued_actions=ints["queue"],
        window_sent=ints["window_sent"],
        window_responses=ints["window_responses"],
        window_failures=ints["window_failures"],
        window_misses=ints["window_misses"],
        window_executed=ints["window_executed"],
        window_stall_s=floats["window_stall_s"],
        window_stall_episodes=ints["window_stall_episodes"],
        window_stall_longest_s=floats["window_stall_longest_s"],
        round_trips_s=np.concatenate(trips) if trips else np.zeros(0),
        round_trip_count=np.array([t.size for t in trips], dtype=np.int64),
        stall_log=np.concatenate(logs).reshape(-1, 2) if logged else None,
        stall_count=np.array([log.size // 2 for log in logs], dtype=np.int64) if logged else None,
        rtc=rtc,
    )
