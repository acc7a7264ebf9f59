"""Real-time chunking robots (RTC): Black, Galliker, Levine, "Real-Time Execution of Action
Chunking Flow Policies", 2025 (arXiv 2506.07339), as LeRobot's RTC loop runs it
(lerobot/policies/rtc: action_queue.py, latency_tracker.py). docs/semantics.md defines it.

Notation: control period T = 1/control_hz, chunk length H (`chunk`), execution horizon s
(`execute`), frozen prefix d (`delay_steps`, in ticks), d <= s <= H - d.

- The robot observes at a tick before that tick's action; chunk k, from the observation at
  t_k, holds actions for ticks t_k ... t_k + H - 1.
- It sends its next observation once it has executed s actions since its last send
  (stalled ticks do not count) and its answer is in: every s ticks in steady state.
- Chunk k reaches the robot after its round trip; the robot has then executed c actions of
  the old chunk since t_k (c = r_k = ceil(round trip / T) while it had actions). It
  switches to chunk k at index c, as LeRobot's merge does (it drops min(delay, actions
  consumed)): the first d of those were the frozen prefix, which guidance makes equal to
  the old chunk's, and c - d > 0 are late actions, executed unguided from the old chunk.
  A chunk whose answer comes after t_k + d T is a late chunk: that is its deadline.
- If the old chunk runs out first, the robot stalls until the answer arrives and resumes
  at once, at index c (the actions it had executed since t_k). The first chunk (no old
  one) is never late: the robot waits for it, as every robot does at its start.
- delay_steps auto: d = ceil(largest round trip so far / T) (LeRobot's LatencyTracker.max,
  never reset in a run), initial_delay_steps until the first answer, and at most the
  largest d that d <= s <= H - d allows; beyond it late chunks are counted, not refused.
- guidance training: the chunk was conditioned on the d of its send; a late chunk is
  discarded (GPU work wasted), the robot keeps its old chunk and sends a new observation
  at once. inference (and none): late chunks are used as above. Inference-time guidance
  costs GPU time (`guidance_step_factor`), not modelled here but in the service.

The accounting is RobotClient's (sim/workload/robots.py): the switch is its async answer
(the actions executed since the observation are stale, the old queue's leftovers are
replaced), with the whole chunk usable; only the send rule, the deadline, discards and the
rtc figures differ.
"""

from __future__ import annotations

import math

import numpy as np

from sim.workload.robots import RobotClient, RobotParams


class RtcRobot(RobotClient):
    """A real-time chunking robot, with RobotClient's driver interface."""

    __slots__ = (
        "delay_steps", "_auto", "_max_trip_s", "_pending_delay", "_index_at_send",
        "_has_chunk", "_s", "rtc_chunks", "rtc_late", "rtc_late_actions", "rtc_discarded",
        "rtc_delay_sum", "rtc_sends", "rtc_staleness_max",
    )  # fmt: skip

    def __init__(
        self,
        robot_id: int,
        params: RobotParams,
        rng: np.random.Generator,
        warmup_s: float = 0.0,
        log_stalls: bool = False,
    ):
        if params.mode != "rtc":
            raise ValueError("RtcRobot runs rtc robots")
        super().__init__(robot_id, params, rng, warmup_s, log_stalls)
        self.usable = params.chunk  # a late next chunk lets it run past s, to the chunk's end
        self._s = params.execute
        self._auto = params.delay_steps is None
        self.delay_steps = params.initial_delay_steps if self._auto else params.delay_steps
        self._max_trip_s = 0.0
        self._pending_delay = self.delay_steps  # the d the request in flight was sent with
        self._index_at_send: int | None = None  # the old chunk's index at that send
        self._has_chunk = False
        # window counts (answers, and sends, at or after warmup_s)
        self.rtc_chunks = self.rtc_late = self.rtc_late_actions = self.rtc_discarded = 0
        self.rtc_delay_sum = self.rtc_sends = 0
        self.rtc_staleness_max = 0

    def send(self, now_s: float) -> float:
        """The robot observes at `now_s`, before the action due then; returns the request's
        deadline at the robot: the switch tick t_k + d T."""
        if self.stalled_since_s is None:
            self._run_until(now_s)  # the observation precedes the action due at its tick
        self._index_at_send = self.usable - self.queue if self._has_chunk else None
        self.in_flight = True
        self.next_send_s = None
        self.sent_at_s = now_s
        self.executed_since_send = 0
        d = self._pending_delay = self.delay_steps
        self.deadline_s = now_s + d * self._period_s
        self.sent += 1
        if now_s >= self.warmup_s:
            self.window_sent += 1
            self.rtc_sends += 1
            self.rtc_delay_sum += d
        return self.deadline_s

    def deliver(self, now_s: float, ok: bool) -> float | None:
        """Chunk k (ok) or a failure notice reaches the robot at `now_s`: it switches (or,
        training-time, discards a late chunk); returns its next send."""
        stalled = self._arrive(now_s)  # a chunk at a tick is used for it
        in_window = now_s >= self.warmup_s
        if not ok:  # a failure notice: a miss; the robot observes again one period later
            self._failed(now_s, in_window)
            return self.next_send_s
        trip_s = now_s - self.sent_at_s
        if self.sent_at_s >= self.warmup_s:
            self.round_trips_s.append(trip_s)
        self.responses += 1
        self.window_responses += in_window
        # the first chunk has no old one to blend with: nothing to be late for, or to discard
        late = now_s > self.deadline_s + 1e-12 and self._index_at_send is not None
        if late:
            self.misses += 1
            self.window_misses += in_window
        d, consumed, chunk = self._pending_delay, self.executed_since_send, self.usable
        if self._auto:  # LeRobot: ceil(max latency / dt), never above what d <= s <= H - d allows
            self._max_trip_s = max(self._max_trip_s, trip_s)
            wanted = math.ceil(self._max_trip_s / self._period_s - 1e-9)
            self.delay_steps = min(self.p.max_delay_steps, wanted)
        if late and self.p.guidance == "training":
            # conditioned on a prefix the robot has moved past: thrown away, observe again
            self.stale_actions += chunk
            self.rtc_discarded += in_window
            self.next_send_s = now_s
            return now_s
        stale = consumed if consumed < chunk else chunk
        self.stale_actions += stale
        if self.queue:
            self.replaced_actions += self.queue
        if in_window:
            self.rtc_chunks += 1
            if late:
                self.rtc_late += 1
                self.rtc_late_actions += max(0, stale - d)
            if self._index_at_send is not None:  # the old chunk's last action, frozen prefix in
                last = min(chunk - 1, self._index_at_send + max(d, consumed) - 1)
                self.rtc_staleness_max = max(self.rtc_staleness_max, last)
        queue = self.queue = chunk - stale
        self._has_chunk = True
        if queue and stalled is not None:
            self._add_stall(stalled, now_s)
            self.stalled_since_s = None
            self.next_tick_s = now_s
        left = self._s - consumed  # actions to execute before the next observation
        if left <= 0 or not queue:
            self.next_send_s = now_s
        else:  # the tick after the s-th action since the last send
            self.next_send_s = self._jittered(self.next_tick_s + left * self._period_s)
        return self.next_send_s

    def figures(self) -> dict:
        row = super().figures()
        row.update({name: getattr(self, name) for name in RTC_FIGURES})
        return row


# each robot's real-time chunking counts (window), gathered by robot_records
RTC_FIGURES = (
    "rtc_chunks", "rtc_late", "rtc_late_actions", "rtc_discarded", "rtc_delay_sum",
    "rtc_sends", "rtc_staleness_max",
)  # fmt: skip
