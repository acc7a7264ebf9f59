"""`batchsim observe`: the scenario's traffic driven against any openpi-compatible server.

Every request goes through the real `openpi-client` library (WebsocketClientPolicy, one
websocket connection per robot, msgpack-numpy observations), made careful: the server is
treated as a hostile peer, so frames are size-limited, decoded by sim.real.wire (never
openpi's decoder, which builds any dtype it is told), `--timeout-s` bounds every wait,
and an answer of the wrong action shape or not finite is a bad answer (failed, counted
per robot), not a served one. The traffic is the scenario's, from its seed:
- a robot fleet: each robot is the simulator's own clock-free RobotClient, here on the
  real clock, in a thread of its own with its own connection: it sleeps until its loop's
  next send time, sends, blocks until the answer and hands it to the state machine
  (sync and async alike: the state machine says when the next send is due);
- open loop: the arrival times, sent by a pool of connections (`connections`); a request
  whose time comes while every connection is busy goes out late, and says so.

The records are the client's view in the simulator's columns (docs/records.md): a
request arrives when it is sent and completes when the server answered it, on the client's
clock (the server's `server_timing` mapped through the clock offset that the request
round trips bound); the answer's arrival at the robot is `received`. Batches come from
`server_timing.batch` where the server reports it (batchsim serve does), else every
request is its own batch. A server that refuses, drops or never answers is reported in
one line per robot, and what was recorded is still written.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.core.records import COMPLETED, FAILED, QUEUED, RobotRecords, RunRecords, finalize_outcomes
from sim.errors import InputError, first_line
from sim.real.client import BadAnswer, action_shape_of, check_answer, connect, drop
from sim.real.wire import WireError, bounded, check_dtype, json_safe
from sim.workload.robots import robot_records

MAX_CONNECTIONS = 1024  # one thread and one socket each
MAX_OBSERVATION_BYTES = 64 * 2**20  # what batchsim serve accepts in one message
RECONNECTS = 3  # a robot whose connection failed reconnects this often, then stops
MAX_BATCH_SIZE = 2**20  # a server_timing batch_size beyond this is not believed
MAX_TIMING = 1e9  # seconds or milliseconds in server_timing beyond this are not believed


@dataclass(slots=True)
class Sent:
    """One request as the client saw it (times in seconds since the run's start)."""

    source: int
    scheduled_s: float  # when the traffic said to send it
    sent_s: float
    deadline_s: float = math.inf  # the robot's deadline (robots with deadlines)
    received_s: float = math.nan  # when its answer (or error) reached the client
    ok: bool | None = None  # None: no answer by the end
    timing: dict[str, Any] | None = None  # the server's server_timing
    bad: bool = False  # answered, but the answer was unusable (failed, not served)


@dataclass
class Observation:
    """What every request sends: one random observation per connection, built once."""

    source: str  # where the layout came from, for the summary
    spec: dict[str, Any]  # the layout, as the summary reports it

    make: Callable[[np.random.Generator], dict[str, Any]] = field(repr=False)


def _aloha(section: Any) -> Observation:
    """The `observation:` section: openpi's ALOHA layout (images, state, prompt)."""
    names = ["cam_high", "cam_left_wrist", "cam_right_wrist"]
    names += [f"cam_{k}" for k in range(3, section.cameras)]
    size = section.image_size
    nbytes = section.cameras * 3 * size * size + 4 * section.state_dim + len(section.prompt)
    if nbytes > MAX_OBSERVATION_BYTES:
        raise InputError(
            f"one observation would be {nbytes / 2**20:,.0f} MiB; at most "
            f"{MAX_OBSERVATION_BYTES // 2**20} MiB (fewer cameras or a smaller image_size)",
            field="observation",
        )
    cams = names[: section.cameras]

    def make(rng: np.random.Generator) -> dict[str, Any]:
        return {
            "images": {c: rng.integers(0, 256, (3, size, size), dtype=np.uint8) for c in cams},
            "state": rng.standard_normal(section.state_dim).astype(np.float32),
            "prompt": section.prompt,
        }

    spec = {
        "images": {c: {"shape": [3, size, size], "dtype": "uint8"} for c in cams},
        "state": {"shape": [section.state_dim], "dtype": "float32"},
        "prompt": {"text": section.prompt},
    }
    return Observation("the scenario's observation: section", spec, make)


def _from_spec(spec: dict[str, tuple[tuple[int, ...], np.dtype]], source: str) -> Observation:
    def make(rng: np.random.Generator) -> dict[str, Any]:
        out = {}
        for key, (shape, dtype) in spec.items():
            if dtype.kind == "f":
                out[key] = rng.standard_normal(shape).astype(dtype)
            else:  # token ids and flags: small non-negative values are valid for any vocabulary
                out[key] = rng.integers(0, 8, shape).astype(dtype)
        return out

    layout = {k: {"shape": list(s), "dtype": str(d)} for k, (s, d) in spec.items()}
    return Observation(source, layout, make)


def server_spec(metadata: Any, target: str) -> dict[str, tuple[tuple[int, ...], np.dtype]] | None:
    """The server's `observation_spec` (key -> {shape, dtype}) checked, or None when its
    metadata has none; a malformed one is one line naming the key."""
    spec = metadata.get("observation_spec") if isinstance(metadata, dict) else None
    if spec is None:
        return None
    field_ = "the server's metadata frame: observation_spec"
    if not isinstance(spec, dict) or not spec:
        raise InputError(
            "must be a mapping of input keys to {shape, dtype}",
            option="target",
            given=target,
            field=field_,
        )
    out, total = {}, 0
    for key, entry in spec.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        ok_shape = isinstance(shape, list | tuple) and all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 2**31 for n in shape
        )
        try:
            dtype = check_dtype(entry.get("dtype")) if isinstance(entry, dict) else None
        except WireError:
            dtype = None
        if not ok_shape or dtype is None or len(shape) > 8:
            raise InputError(
                f"{bounded(key, 40)}: needs shape (a list of up to 8 sizes) and a numeric dtype",
                option="target",
                given=target,
                field=field_,
            )
        total += math.prod(shape) * dtype.itemsize
        out[str(key)] = (tuple(shape), dtype)
    if total > MAX_OBSERVATION_BYTES:
        raise InputError(
            f"asks for {total / 2**20:,.0f} MiB per observation; at most "
            f"{MAX_OBSERVATION_BYTES // 2**20} MiB",
            option="target",
            given=target,
            field=field_,
        )
    return out


def choose_observation(scenario: Any, metadata: Any, target: str) -> Observation:
    """The observation layout: the scenario's `observation:` section, else the server's
    observation_spec, else the scenario's model inputs, else a minimal state vector."""
    if scenario.observation is not None:
        return _aloha(scenario.observation)
    spec = server_spec(metadata, target)
    if spec is not None:
        return _from_spec(spec, "the server's observation_spec")
    if scenario.model is not None:
        try:
            from sim import models

            bundle = models.build(scenario.model.name, scenario.model.size)
            sample = bundle.make_inputs(1, cameras=scenario.model.cameras)
            inputs = {k: (tuple(v.shape[1:]), v.numpy().dtype) for k, v in sample.items()}
            return _from_spec(inputs, f"the inputs of model {scenario.model.name}")
        except ImportError:
            pass  # no torch here: the minimal observation
    minimal = {"state": ((14,), np.dtype(np.float32))}
    return _from_spec(minimal, "a minimal state vector (no observation:, spec or model)")


def load_for_observe(path: Any, overrides: list[str]) -> Any:
    """The scenario for observe: only its traffic is used, so one with a model: and no
    profile: is loaded with a stand-in profile (nothing is simulated)."""
    from sim.config import load, parse

    parsed = parse(path, overrides)
    if parsed.scenario.profile is not None:
        return load(path, overrides)
    data = {**parsed.data, "profile": {"batch_size": [1, 1024], "latency_ms": [1.0, 1.0]}}
    return load(data, base=parsed.base, origin=parsed.source)


def check_target(target: str) -> str:
    if not target.startswith(("ws://", "wss://")) or len(target) > 2000:
        raise InputError("must be a websocket address, ws://HOST:PORT (or wss://)", option="target")
    return target


# ---- connections -------------------------------------------------------------------------
# ---- the run -----------------------------------------------------------------------------
@dataclass
class ObserveRun:
    """One observe run: the clock, the connections, what was sent and what went wrong."""

    target: str
    horizon_s: float  # nothing is sent at or after it (inf: open loop with a request count)
    timeout_s: float  # a request unanswered this long is dropped
    clock: Callable[[], float] = time.perf_counter
    sent: list[Sent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    t0: float = 0.0
    action_shape: tuple[int, ...] | None = None  # as the server declared it
    bad_answers: dict[int, int] = field(default_factory=dict)  # per robot (or source)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.in_flight: dict[int, tuple[float, Any]] = {}  # connection -> (sent_s, policy)
        self.timed_out: set[int] = set()
        self.opened: list[Any] = []  # every connection made, closed at the end

    def now(self) -> float:
        return self.clock() - self.t0

    def sleep_until(self, t_s: float) -> bool:
        """Sleep until run time `t_s`; False when the run was stopped meanwhile."""
        delay = t_s - self.now()
        if delay > 0:
            return not self.stop.wait(delay)
        return not self.stop.is_set()

    def problem(self, line: str) -> None:
        with self.lock:
            self.problems.append(line)

    def request(self, k: int, policy: Any, obs: dict, record: Sent) -> bool:
        """Send one observation on connection `k` and wait for its answer; False when the
        connection is gone (the caller reconnects or stops)."""
        with self.lock:
            self.sent.append(record)
            self.in_flight[k] = (record.sent_s, policy)
        try:
            timing = check_answer(policy.infer(obs), self.action_shape)
            record.received_s, record.ok, record.timing = self.now(), True, timing
            return True
        except BadAnswer as exc:  # answered, but unusable: failed, and counted per robot
            record.received_s, record.ok, record.bad = self.now(), False, True
            with self.lock:
                self.bad_answers[record.source] = self.bad_answers.get(record.source, 0) + 1
            self.problem(f"connection {k}: bad answer: {exc}")
            return True  # the connection itself is sound
        except Exception as exc:  # noqa: BLE001 - any failure of one request is recorded
            record.received_s = self.now()
            if k in self.timed_out:
                self.problem(f"connection {k}: no answer within {self.timeout_s:g} s; dropped")
                record.ok = None  # never answered
            elif not self.stop.is_set():
                record.ok = False
                self.problem(f"connection {k}: {type(exc).__name__}: {bounded(first_line(exc))}")
            return False
        finally:
            with self.lock:
                self.in_flight.pop(k, None)
                self.timed_out.discard(k)

    def reconnect(self, who: str, reconnects: int) -> Any | None:
        """A fresh connection for a client whose connection failed, or None (and a line
        saying why) when it has reconnected RECONNECTS times or the run is over."""
        if reconnects == RECONNECTS or self.stop.is_set():
            self.problem(f"{who}: stopped after {reconnects} reconnects")
            return None
        try:
            policy = connect(self.target, self.timeout_s)
        except InputError as exc:
            self.problem(f"{who}: reconnect failed: {exc.message}")
            return None
        self.opened.append(policy)
        return policy

    def carry_on(self, alive: bool, policy: Any, who: str, reconnects: int) -> tuple[Any, int]:
        """After a request: the same connection while it lives, else a fresh one (None:
        the client stops), with the reconnects counted."""
        if alive:
            return policy, reconnects
        return self.reconnect(who, reconnects), reconnects + 1

    def watchdog(self) -> None:
        """Drop requests unanswered for timeout_s, until the run stops."""
        while not self.stop.wait(0.05):
            now = self.now()
            with self.lock:
                late = [(k, p) for k, (s, p) in self.in_flight.items() if now - s > self.timeout_s]
                self.timed_out.update(k for k, _ in late)
            for _, policy in late:
                drop(policy)


def robot_loop(run: ObserveRun, k: int, client: Any, policy: Any, obs: dict) -> None:
    """One robot: its clock-free state machine on the real clock, over its own connection."""
    reconnects = 0
    while True:
        send_s = client.next_send_s
        if send_s is None or send_s >= run.horizon_s or not run.sleep_until(send_s):
            return
        now = run.now()
        if now >= run.horizon_s:
            return
        deadline_s = client.send(now)
        record = Sent(client.id, send_s, now, deadline_s)
        alive = run.request(k, policy, obs, record)
        if record.ok is None:  # no answer: the robot gets nothing more in this run
            return
        if record.received_s < run.horizon_s:
            client.deliver(record.received_s, bool(record.ok))
        policy, reconnects = run.carry_on(alive, policy, f"robot {client.id}", reconnects)
        if policy is None:
            return


def open_loop_worker(run: ObserveRun, k: int, policy: Any, obs: dict, work: Any) -> None:
    """One connection of the open-loop pool: the next arrival, at its time, until none is left."""
    reconnects = 0
    while True:
        with run.lock:
            item = next(work, None)
        if item is None:
            return
        source, at_s = item
        if at_s >= run.horizon_s or not run.sleep_until(at_s):
            return
        alive = run.request(k, policy, obs, Sent(int(source), float(at_s), run.now()))
        policy, reconnects = run.carry_on(alive, policy, f"connection {k}", reconnects)
        if policy is None:
            return


def clock_offset(sent: list[Sent]) -> tuple[float | None, float | None]:
    """The server clock's offset from the client's (client = server + offset), bounded by
    every answered request: the server received it after it was sent and answered before it
    arrived. Returns the midpoint of the tightest bounds and their half-width (None: the
    server reports no times)."""
    lower, upper = -math.inf, math.inf
    for r in sent:
        got, answered = _number(r.timing, "received_s"), _number(r.timing, "answered_s")
        if r.ok and got is not None and answered is not None:
            lower = max(lower, r.sent_s - got)
            upper = min(upper, r.received_s - answered)
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return None, None
    if lower > upper:  # the clocks drifted apart within the run: take the middle anyway
        lower, upper = upper, lower
    return (lower + upper) / 2, (upper - lower) / 2


# server_timing's fields as a server may send them: times in seconds (perf_counter or the
# epoch), durations in ms (never negative), batch sizes; a value outside is not believed
TIMING_RANGES = {
    "received_s": (-1e12, 1e12),
    "answered_s": (-1e12, 1e12),
    "infer_ms": (0.0, MAX_TIMING),
    "queue_ms": (0.0, MAX_TIMING),
    "model_ms": (0.0, MAX_TIMING),
    "batch_size": (1.0, float(MAX_BATCH_SIZE)),
}


def _number(timing: dict[str, Any] | None, key: str) -> float | None:
    """A server_timing field, or None when it is absent, not a number or out of range."""
    value = (timing or {}).get(key)
    if type(value) not in (int, float) or not math.isfinite(value):
        return None
    low, high = TIMING_RANGES[key]
    return float(value) if low <= value <= high else None


def _batch_key(timing: dict[str, Any] | None) -> int:
    """The server's batch number, or -1 (none reported, or not a sensible one)."""
    key = (timing or {}).get("batch")
    return key if type(key) is int and 0 <= key < 2**62 else -1


def client_records(
    sent: list[Sent], end_s: float, warmup_s: float, robots: RobotRecords | None
) -> tuple[RunRecords, dict[str, Any]]:
    """The client's records in the simulator's columns, and how they were derived."""
    sent = sorted(sent, key=lambda r: r.sent_s)
    offset, half_width = clock_offset(sent)
    n = len(sent)
    request_batch = np.full(n, -1, dtype=np.int64)
    outcome = np.full(n, QUEUED, dtype=np.int8)
    starts: list[float] = []
    ends: list[float] = []
    sizes: list[int] = []
    by_server_batch: dict[Any, int] = {}
    for i, r in enumerate(sent):
        if r.ok is False:
            outcome[i] = FAILED
            continue
        if not r.ok:
            continue  # unanswered: still queued when the run ended
        infer_ms = _number(r.timing, "infer_ms")
        answered = _number(r.timing, "answered_s")
        key = _batch_key(r.timing)
        if key >= 0 and key in by_server_batch:
            request_batch[i] = by_server_batch[key]
            continue
        end = answered + offset if answered is not None and offset is not None else r.received_s
        end = min(end, r.received_s)
        start = end - infer_ms / 1000 if infer_ms is not None else r.sent_s
        start = min(max(start, r.sent_s), end)  # causality: served after it was sent
        size = _number(r.timing, "batch_size")
        request_batch[i] = len(starts)
        if key >= 0:
            by_server_batch[key] = len(starts)
        starts.append(start)
        ends.append(end)
        sizes.append(int(size) if size is not None else 1)
    # batches in start order, as the simulator numbers them
    order = np.argsort(np.asarray(starts), kind="stable")
    renumber = np.empty(order.size, dtype=np.int64)
    renumber[order] = np.arange(order.size)
    served = request_batch >= 0
    request_batch[served] = renumber[request_batch[served]]
    batch_start = np.asarray(starts, dtype=float)[order]
    batch_end = np.asarray(ends, dtype=float)[order]
    batch_size = np.asarray(sizes, dtype=np.int32)[order]
    # a request answered after the end is still in service, as in the simulator
    finalize_outcomes(outcome, request_batch, batch_end, end_s)
    received = np.array([r.received_s for r in sent], dtype=float)
    received[outcome != COMPLETED] = np.nan
    records = RunRecords(
        arrival_s=np.array([r.sent_s for r in sent], dtype=float),
        source=np.array([r.source for r in sent], dtype=np.int32),
        request_batch=request_batch,
        outcome=outcome,
        batch_replica=np.zeros(batch_start.size, dtype=np.int32),
        batch_start_s=batch_start,
        batch_end_s=batch_end,
        batch_size=batch_size,
        batch_padded=batch_size.copy(),
        replicas=1,
        warmup_s=warmup_s,
        end_s=end_s,
        deadline_s=np.array([r.deadline_s for r in sent], dtype=float),
        robots=robots,
        request_extra={
            "scheduled": np.array([r.scheduled_s for r in sent], dtype=float),
            "received": received,
            "server_infer_ms": np.array(
                [_number(r.timing, "infer_ms") or math.nan for r in sent], dtype=float
            ),
            "server_queue_ms": np.array(
                [_number(r.timing, "queue_ms") or math.nan for r in sent], dtype=float
            ),
            "server_model_ms": np.array(
                [_number(r.timing, "model_ms") or math.nan for r in sent], dtype=float
            ),
            # the server's own batch number (-1: none reported), to match its records
            "server_batch": np.array([_batch_key(r.timing) for r in sent], dtype=np.int64),
        },
    )
    derived = {
        "clock_offset_s": offset,
        "clock_offset_uncertainty_s": half_width,
        "batches_from": (
            "the server's server_timing.batch"
            if by_server_batch
            else "one batch per request (the server reports no batches)"
        ),
    }
    return records, derived


def observe(
    loaded: Any,
    target: str,
    connections: int | None = None,
    timeout_s: float = 30.0,
    stage: Callable[[str], None] = lambda message: None,
) -> tuple[RunRecords, dict[str, Any]]:
    """Drive the scenario's traffic against `target`; returns the records and the summary
    (its `observe` block says what the client saw)."""
    from sim.engine import pipeline
    from sim.workload import build

    s = loaded.scenario
    closed = s.workload.kind == "robots"
    if closed and s.duration_s is None:
        raise InputError(
            "observe runs robot fleets for duration_s", source=loaded.source, field="requests"
        )
    rngs = build.streams(s.seed)
    if closed:  # the robots themselves (a Fleet would send their first requests at once)
        clients = build.robots(loaded, rngs["robots"])
        count = len(clients)
    else:
        arrivals = build.arrivals(loaded, rngs["arrivals"])
        times, sources = arrivals.time_s, arrivals.source
        count = connections or min(32, max(1, len(times)))
    if count > MAX_CONNECTIONS:
        where = {"source": loaded.source} if closed else {"option": "connections"}
        raise InputError(
            f"{count:,} connections; observe opens at most {MAX_CONNECTIONS:,} (one thread each)",
            **where,
        )
    if s.observation is not None:  # refused before anything connects
        try:
            _aloha(s.observation)
        except InputError as exc:
            raise InputError(exc.message, source=loaded.source, field="observation") from None
    horizon_s = s.duration_s if s.duration_s is not None else math.inf
    run = ObserveRun(target, horizon_s, timeout_s)
    first = connect(target, timeout_s)
    metadata = first.get_server_metadata()
    obs = choose_observation(s, metadata, target)
    run.action_shape = action_shape_of(metadata)
    policies = [first, *(connect(target, timeout_s) for _ in range(count - 1))]
    stage(f"{count} client(s) connected to {target}; observations from {obs.source}")
    obs_rng = np.random.default_rng(s.seed)
    observations = [obs.make(obs_rng) for _ in range(count)]
    if closed:
        jobs = [
            (robot_loop, (run, k, clients[k], policies[k], observations[k])) for k in range(count)
        ]
    else:
        work = iter(zip(sources.tolist(), times.tolist(), strict=True))
        jobs = [
            (open_loop_worker, (run, k, policies[k], observations[k], work)) for k in range(count)
        ]
    threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in jobs]
    watchdog = threading.Thread(target=run.watchdog, daemon=True)
    interrupted = _run_threads(run, threads, watchdog, stage, s.duration_s)
    end_s = run.now() if interrupted or not math.isfinite(horizon_s) else horizon_s
    for policy in [*policies, *run.opened]:
        drop(policy)
    robots = None
    if closed:
        for client in clients:
            client.finish(end_s)
        robots = robot_records(clients)
    records, derived = client_records(run.sent, end_s, s.warmup_s, robots)
    summary = pipeline.summarise(loaded, records)
    summary["profile"] = {"source": f"observed at {target}", "provenance": {}}
    sent_late_ms = [(r.sent_s - r.scheduled_s) * 1000 for r in run.sent]
    summary["observe"] = {
        "target": target,
        # JSON-safe: a server's metadata may hold bytes, arrays or anything msgpack carries
        "server": json_safe({k: v for k, v in metadata.items() if k != "observation_spec"})
        if isinstance(metadata, dict)
        else {},
        "connections": count,
        "observation": {"from": obs.source, "layout": obs.spec},
        "interrupted": interrupted,
        "sent_late_ms_p50": float(np.median(sent_late_ms)) if sent_late_ms else None,
        "sent_late_ms_max": float(np.max(sent_late_ms)) if sent_late_ms else None,
        "bad_answers": sum(run.bad_answers.values()),
        "bad_answers_by_source": {str(k): v for k, v in sorted(run.bad_answers.items())},
        "problems": run.problems[:100],
        "problem_count": len(run.problems),
        **derived,
    }
    return records, summary


def _run_threads(
    run: ObserveRun,
    threads: list[threading.Thread],
    watchdog: threading.Thread,
    stage: Callable[[str], None],
    duration_s: float | None,
) -> bool:
    """Start the clients together and wait for them (a progress line every 5 s); SIGINT or
    SIGTERM stops them early. Returns whether the run was interrupted."""
    stopped = {"by": None}
    grace_s = min(run.timeout_s, 5.0)

    def on_signal(signum, frame):  # the records so far are written, not lost
        stopped["by"] = signal.Signals(signum).name
        run.stop.set()

    main = threading.current_thread() is threading.main_thread()
    previous = {}
    if main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        run.t0 = run.clock() + 0.05  # every thread is up before the first send
        for thread in threads:
            thread.start()
        watchdog.start()
        last = time.monotonic()
        while any(t.is_alive() for t in threads):
            if run.stop.is_set():
                with run.lock:
                    flying = [p for _, p in run.in_flight.values()]
                for policy in flying:
                    drop(policy)
            if run.now() > run.horizon_s + grace_s:  # answers after the end count for nothing
                run.stop.set()
            alive = next((t for t in threads if t.is_alive()), None)
            if alive is not None:
                alive.join(0.1)
            if time.monotonic() - last >= 5.0:
                last = time.monotonic()
                answered = sum(r.ok is True for r in run.sent)
                of = f" of {duration_s:g}" if duration_s else ""
                stage(
                    f"{run.now():.0f}{of} s: {answered:,} answered, {len(run.problems)} problem(s)"
                )
        run.stop.set()
        watchdog.join(1.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped["by"]:
        stage(f"stopped by {stopped['by']}: writing what was recorded")
    return stopped["by"] is not None
