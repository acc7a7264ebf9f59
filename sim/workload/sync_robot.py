"""A lean sync robot: on the hot path it decides only when it sends; every figure of what
it did is derived after the run from its sends and answers (`figures`), with numpy.

A sync robot executes its `usable` actions from the answer on, one per control period,
and sends when the last one's period ends (give or take its send jitter). As long as each
send comes after its chunk's last action and each answer after the chunk ran out,
nothing is left to account for between two calls: its actions, stalls and misses are
functions of (start, sends, answers, their outcomes, the end). `RobotClient`
(sim/workload/robots.py) is the reference these figures are tested against, bit for bit
(tests/test_robots.py). A jittered send early enough to overlap its chunk, or an answer
that lands before the chunk ran out, makes the robot a RobotClient from then on: it
replays its log into one (same calls, same times) and hands every later call to it.
Async robots keep executing while a request is out, so they run as RobotClient.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

from sim.workload.robots import Robot, RobotClient, RobotParams, ticks_from


class SyncRobot(Robot):
    """A sync robot, with RobotClient's driver interface: it keeps its next send, its
    request's deadline, its network draws and a log of its sends and answers (`finish`
    notes the end; `figures` derives the rest)."""

    __slots__ = (
        "_cycle_s", "_slo_s", "sends", "answers", "failed", "end_s", "log_stalls",
        "_chunk_from_s", "_dry_s", "_counting",
    )  # fmt: skip

    def __init__(
        self,
        robot_id: int,
        params: RobotParams,
        rng: np.random.Generator,
        warmup_s: float = 0.0,
        log_stalls: bool = False,
    ):
        if params.mode != "sync":
            raise ValueError("SyncRobot runs sync robots")
        super().__init__(robot_id, params, rng, warmup_s)
        self.log_stalls = log_stalls
        # the chunk's actions from the answer to the send (RobotClient: tick + queue x period)
        self._cycle_s = self.usable * self._period_s
        self._slo_s = params.slo_s
        self.sends = array("d")
        self.answers = array("d")
        self.failed: list[int] = []  # which answers were failure notices (rare)
        self.end_s = math.nan
        # with send jitter: the start of the chunk whose send is still to come, and when
        # the chunk runs out while its answer is still to come (what the checks compare)
        self._chunk_from_s: float | None = None
        self._dry_s: float | None = None
        self._counting: RobotClient | None = None  # the RobotClient it became, if it did

    def send(self, now_s: float) -> float:
        if self._jitter_s > 0:
            if self._counting is not None:
                self.deadline_s = deadline_s = self._counting.send(now_s)
                return deadline_s
            chunk_from_s = self._chunk_from_s
            if chunk_from_s is not None:  # its chunk's last action must come first
                self._chunk_from_s = None
                steps = (now_s - chunk_from_s) / self._period_s  # as RobotClient._run_until
                if math.floor(steps + 1e-9) + 1 < self.usable:
                    return self._become_counting("send", now_s)
        self.sends.append(now_s)
        self.next_send_s = None
        slo_s = self._slo_s
        self.deadline_s = deadline_s = math.inf if slo_s is None else now_s + slo_s
        return deadline_s

    def deliver(self, now_s: float, ok: bool) -> float:
        """The answer reaches the robot; returns its next send."""
        if self._jitter_s > 0:
            if self._counting is not None:
                self.next_send_s = send_s = self._counting.deliver(now_s, ok)
                return send_s
            dry_s = self._dry_s
            if dry_s is not None:  # its chunk must have run out before
                self._dry_s = None
                if not dry_s < now_s:
                    return self._become_counting("deliver", now_s, ok)
        answers = self.answers
        answers.append(now_s)
        if ok:  # its chunk runs out a cycle later
            send_s = now_s + self._cycle_s
            if self._jitter_s > 0:
                self._chunk_from_s, self._dry_s = now_s, send_s
                send_s = self._jittered(send_s)
        else:  # a failure notice: it retries at its next tick
            self.failed.append(len(answers) - 1)
            send_s = now_s + self._period_s
            if self._jitter_s > 0:
                send_s = self._jittered(send_s)
        self.next_send_s = send_s
        return send_s

    def finish(self, end_s: float) -> None:
        self.end_s = end_s
        if self._counting is not None:
            self._counting.finish(end_s)

    def _become_counting(self, call: str, now_s: float, ok: bool = True) -> float:
        """Its sends and actions overlap: from now on a RobotClient counts for it. The
        client is brought to this moment by replaying the log (its draws during the replay
        are thrown away: the times are in the log), then takes this call and the robot's
        own stream of draws."""
        client = RobotClient(
            self.id, self.p, np.random.default_rng(0), self.warmup_s, self.log_stalls
        )
        failed = set(self.failed)
        for i, sent_s in enumerate(self.sends):
            client.send(sent_s)
            if i < len(self.answers):
                client.deliver(self.answers[i], i not in failed)
        client._normal = self._normal
        self._counting = client
        if call == "send":
            self.next_send_s = None
            self.deadline_s = deadline_s = client.send(now_s)
            return deadline_s
        self.next_send_s = send_s = client.deliver(now_s, ok)
        return send_s

    # ---- after the run ------------------------------------------------------------------
    def figures(self) -> dict:
        """Every figure RobotClient counts on the way, from the log (see robot_records)."""
        if self._counting is not None:
            return self._counting.figures()
        w, end_s = self.warmup_s, self.end_s
        usable, period = self.usable, self._period_s
        sends = np.frombuffer(self.sends, dtype=float) if self.sends else np.zeros(0)
        answers = np.frombuffer(self.answers, dtype=float) if self.answers else np.zeros(0)
        ok = np.ones(answers.size, dtype=bool)
        ok[self.failed] = False
        sent_of = sends[: answers.size]  # the request each answer answers
        in_window = answers >= w
        failed = ~ok
        if self._slo_s is None:
            late = np.zeros(answers.size, dtype=bool)
        else:
            late = answers > (sent_of + self._slo_s) + 1e-12
        missed = failed | (ok & late)
        trip = ok & (sent_of >= w)
        # each answered chunk runs in full, but the last one if no send follows it
        ok_at = answers[ok]
        executed = np.full(ok_at.size, usable, dtype=np.int64)
        queued = 0
        tail_stall_from = None
        if ok_at.size:
            last = int(np.flatnonzero(ok)[-1])
            dry_s = ok_at[-1] + self._cycle_s  # when its last chunk runs out
            if sends.size > last + 1:  # it sent after its last chunk: dry then, till the end
                if dry_s < end_s:
                    tail_stall_from = dry_s
            else:  # it is executing at the end (RobotClient._run_until)
                due = math.ceil((end_s - ok_at[-1]) / period - 1e-9)
                count = due if due < usable else usable
                count = max(count, 0)
                executed[-1] = count
                queued = usable - count
                if count == usable and dry_s < end_s:
                    tail_stall_from = dry_s
        # stalls: from the start to the first answer, from each chunk's end to the next
        starts = np.concatenate(([self.p.start_s], ok_at[:-1] + self._cycle_s))
        ends = ok_at.copy()
        if not ok_at.size:
            starts, ends = np.array([self.p.start_s]), np.array([end_s])
        elif tail_stall_from is not None:
            starts = np.append(starts, tail_stall_from)
            ends = np.append(ends, end_s)
        lo = np.where(starts >= w, starts, w)
        counted = ends > lo
        frozen = ends[counted] - lo[counted]
        return {
            "sent": sends.size,
            "responses": int(ok.sum()),
            "failures": int(failed.sum()),
            "misses": int(missed.sum()),
            "executed_actions": int(executed.sum()),
            "stale_actions": 0,
            "replaced_actions": 0,
            "queue": queued,
            "window_sent": int((sends >= w).sum()),
            "window_responses": int((ok & in_window).sum()),
            "window_failures": int((failed & in_window).sum()),
            "window_misses": int((missed & in_window).sum()),
            "window_executed": int(ticks_from(ok_at, executed, period, w).sum()),
            "window_stall_s": float(np.cumsum(frozen)[-1]) if frozen.size else 0.0,
            "window_stall_episodes": int(frozen.size),
            "window_stall_longest_s": float(frozen.max()) if frozen.size else 0.0,
            "round_trips_s": answers[trip] - sent_of[trip],
            "stall_log": (
                np.column_stack((starts, ends))[ends > starts].ravel() if self.log_stalls else None
            ),
        }
