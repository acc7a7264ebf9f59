"""`batchsim serve`: an openpi-compatible websocket policy server that batches across robots.

The protocol is openpi's (openpi_client.WebsocketClientPolicy speaks it): on connect the
server sends one msgpack-numpy metadata frame (`observation_spec`: each input key with
its shape and dtype, `action_shape`); then every binary message is one observation
dict, answered by a dict with `actions` (chunk, action_dim) and `server_timing`. An
error goes out as a text frame, then the connection closes. `GET /healthz` answers 200.

Unlike openpi's server, which answers each connection's `infer` in turn, requests from
all connections join one queue and are batched by the scenario's policy, through the
same server core as the simulator (sim.core.server.ServerCore): the requests arrive
into an `Inbox`, the closed-loop traffic of a real server. The model runs in a worker
thread, so the event loop goes on accepting while a batch runs. Every request and batch
is recorded in the simulator's columns; SIGINT or SIGTERM writes them with a summary.

Every peer is assumed hostile (docs/design.md, "serve's limits"):
- a frame is bounded by size (from the observation spec), decoded off the event loop by
  sim.real.wire (numeric dtypes only, bounded containers and strings), and checked at
  admission against everything the model could fail on: keys, shapes, dtypes, finite
  values within the model's float type, token ids within the vocabulary;
- a batch that still fails is split: each request runs alone, the ones that fail alone
  are failed (and recorded so), and the rest get their answers;
- a connection that floods pings or never reads its answers is closed (1008);
- on SIGINT or SIGTERM the server stops accepting, drains its queue for `grace_s`,
  fails what is left with close 1001, and writes every record.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.core.server import ServerCore, Start
from sim.errors import InputError
from sim.real.runner import ModelRunner, build_runner
from sim.real.wire import Limits, bounded, decode

MAX_MESSAGE_BYTES = 64 * 2**20  # the largest frame limit a scenario may ask for
FRAME_SLACK_BYTES = 2**20  # beyond the spec's arrays: keys, a prompt, msgpack framing
GRACE_S = 5.0  # on SIGTERM: how long queued and running requests may still be served
PINGS_PER_S = 20  # a client pinging faster than this is closed (pongs cost the loop)
UNREAD_BYTES = 8 * 2**20  # a client that leaves this much unread is closed
KEPT_FAILURES = 100  # failure lines kept in the summary (all are counted)


class ShuttingDown(RuntimeError):
    """The server stopped before this request was answered."""


class Refused(RuntimeError):
    """The scenario's admission limits (or its policy) turned this request away."""


# the close code a client gets with each kind of failure (else 1011, inference failed)
CLOSE_FOR = {ShuttingDown: (1001, "shutting down"), Refused: (1013, "try again later")}


@dataclass(slots=True, eq=False)  # hashed by identity: a set of the waiting
class Caller:
    """One request in flight: its connection, observation and the answer it waits for.
    Once answered only `id` and `received_s` stay (the core keeps a caller per request
    as its record's source), so memory does not grow with what was sent."""

    id: int  # the connection's number: the request's source in the records
    observation: dict[str, np.ndarray] | None
    answer: asyncio.Future | None
    received_s: float
    failed: str | None = None  # why this request alone failed (its batch-mates did not)


class Inbox:
    """The traffic of a real server (sim.core.traffic.ClosedLoopTraffic): requests are
    pushed as they arrive over the network, and the core's answers are collected for the
    server to send. It has no robots of its own, so it keeps no robot records."""

    def __init__(self) -> None:
        self.arrived = 0
        self.last_answer_s = -math.inf
        self.next_arrival_s = math.inf
        self._heap: list[tuple[float, int, Caller]] = []
        self._seq = 0
        self.answered: list[tuple[list[Caller], float, bool]] = []

    def push(self, at_s: float, caller: Caller) -> None:
        heapq.heappush(self._heap, (at_s, self._seq, caller))
        self._seq += 1
        self.next_arrival_s = self._heap[0][0]

    def release(self, until_s, inclusive, times, deadlines, clients) -> None:
        if not inclusive:
            until_s = math.nextafter(until_s, -math.inf)
        heap = self._heap
        while heap and heap[0][0] <= until_s:
            at_s, _, caller = heapq.heappop(heap)
            times.append(at_s)
            deadlines.append(math.inf)  # a network request states no deadline
            clients.append(caller)
            self.arrived += 1
        self.next_arrival_s = heap[0][0] if heap else math.inf

    def answer(self, clients, at_s: float, ok: bool | None) -> None:
        if ok is not None:
            self.answered.append((list(clients), at_s, bool(ok)))
            self.last_answer_s = max(self.last_answer_s, at_s)

    def kth_arrival_s(self, k: int, before_s: float) -> float | None:
        times = sorted(t for t, _, _ in self._heap)
        return times[k - 1] if len(times) >= k and times[k - 1] < before_s else None

    def finish(self, end_s: float) -> None:
        self._heap.clear()
        self.next_arrival_s = math.inf
        return None  # no robot records: the robots are elsewhere


@dataclass
class PolicyServer:
    """The websocket server, the batching loop and the records of one `serve` run."""

    loaded: Any  # LoadedScenario
    runner: ModelRunner
    clock: Callable[[], float] = time.perf_counter
    inbox: Inbox = field(default_factory=Inbox)
    grace_s: float = GRACE_S
    max_frame_bytes: int | None = None  # None: from the observation spec
    errors: int = 0  # bad observations (each closed its connection)
    failures: list[str] = field(default_factory=list)  # the first KEPT_FAILURES lines
    failure_count: int = 0
    connections: int = 0
    disconnected: int = 0  # clients gone while their request was queued or running
    shut_out: int = 0  # requests failed (close 1001) because the server was stopping
    throttled: int = 0  # connections closed for flooding pings or not reading

    def __post_init__(self) -> None:
        from sim.engine import pipeline
        from sim.workload.build import streams

        spec = pipeline.server_spec(self.loaded, streams(self.loaded.scenario.seed))
        self.core = ServerCore(self.inbox, spec)
        self.t0 = self.clock()
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.waiting: set[Caller] = set()  # pushed, not yet answered (drained on shutdown)
        self.drain_until_s = math.inf  # once stopping: the end of the grace period
        # answers set but not yet sent by their handlers: shutdown waits for them, so an
        # answered (recorded) request is never cut off by the closing connections
        self.undelivered = 0
        self.all_delivered = asyncio.Event()
        if self.max_frame_bytes is None:
            wanted = 2 * self.runner.spec_bytes() + FRAME_SLACK_BYTES
            self.max_frame_bytes = min(wanted, MAX_MESSAGE_BYTES)
        self.limits = Limits(max_frame_bytes=self.max_frame_bytes)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="batchsim-model")
        # decoding and checking off the event loop: /healthz and other clients go on
        self.decoder = ThreadPoolExecutor(2, thread_name_prefix="batchsim-decode")

    def now(self) -> float:
        return self.clock() - self.t0

    def stop(self) -> None:
        """SIGINT or SIGTERM: stop taking requests, and drain for the grace period."""
        if not self.stopping.is_set():
            self.drain_until_s = self.now() + self.grace_s
            self.stopping.set()

    def metadata(self) -> dict[str, Any]:
        return {
            "server": "batchsim",
            "policy": self.loaded.policy_description,
            "observation_spec": {
                k: {"shape": list(s), "dtype": d} for k, (s, d) in self.runner.spec.items()
            },
            "action_shape": list(self.runner.action_shape),
            "max_frame_bytes": self.max_frame_bytes,
        }

    def admit(self, message: Any) -> dict[str, np.ndarray]:
        """One frame decoded within the limits and checked (in a decoder thread)."""
        return self.runner.check(decode(message, self.limits))

    def _answered(self) -> None:
        self.undelivered += 1
        self.all_delivered.clear()

    def _delivered(self) -> None:
        self.undelivered -= 1
        if self.undelivered == 0:
            self.all_delivered.set()

    def fail(self, line: str) -> None:
        self.failure_count += 1
        if len(self.failures) < KEPT_FAILURES:
            self.failures.append(line)

    async def handle(self, ws) -> None:
        """One connection: the metadata frame, then observation after observation. While
        a request waits for its answer, the connection is watched, so a client that leaves
        is counted at once."""
        from openpi_client import msgpack_numpy  # the protocol's own encoding
        from websockets.exceptions import ConnectionClosed

        self.connections += 1
        number = self.connections
        loop = asyncio.get_running_loop()
        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            await ws.send(msgpack_numpy.packb(self.metadata()))
            async for message in ws:
                if self.stopping.is_set():
                    await self._refuse_stopping(ws, closed)
                    return
                try:
                    observation = await loop.run_in_executor(self.decoder, self.admit, message)
                except Exception as exc:  # noqa: BLE001 - a bad observation: this client only
                    self.errors += 1
                    await ws.send(f"batchsim: bad observation: {bounded(exc)}")
                    await ws.close(1003, "bad observation")
                    return
                if self.stopping.is_set():  # it stopped while this one was decoded
                    await self._refuse_stopping(ws, closed)
                    return
                caller = Caller(number, observation, loop.create_future(), self.now())
                self.waiting.add(caller)
                self.inbox.push(caller.received_s, caller)
                self.wake.set()
                answer = caller.answer
                await asyncio.wait({answer, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not answer.done():  # the client left mid-request: its answer goes nowhere
                    self.disconnected += 1
                    caller.answer = None
                    return
                caller.answer = None  # nothing of the answer is kept once it is sent
                try:
                    if answer.exception() is not None:
                        exc = answer.exception()
                        code, reason = CLOSE_FOR.get(type(exc), (1011, "inference failed"))
                        await ws.send(f"batchsim: {exc}")
                        await ws.close(code, reason)
                        return
                    await ws.send(msgpack_numpy.packb(answer.result()))
                finally:
                    self._delivered()
        except ConnectionClosed:
            pass
        finally:
            closed.cancel()

    async def _refuse_stopping(self, ws, closed: asyncio.Future) -> None:
        """A request that came in as the server stopped: refused with 1001, or, if its
        client has already left, counted as a client gone mid-request."""
        if closed.done():
            self.disconnected += 1
            return
        await ws.close(1001, "the server is shutting down")

    async def batching(self) -> None:
        """The replica: decide, run a batch off the event loop, answer; else sleep until
        the policy's time or the next arrival. Once stopping, it runs until nothing is
        waiting, or until the policy would wait past the grace period (the caller bounds
        a running batch by the grace period too)."""
        loop = asyncio.get_running_loop()
        core = self.core
        while not (self.stopping.is_set() and not self.waiting):
            now = self.now()
            action = core.decide(0, now)
            if self.inbox.answered:  # turned away at admission, before any batch
                self._refuse_answered()
            stopping = self.stopping.is_set()
            # nothing new arrives once stopping: a policy waiting past the grace period (for
            # a full batch, say) will not launch in it, so what waits is failed now
            if (
                stopping
                and type(action) is not Start
                and (action.until_s is None or action.until_s > self.drain_until_s)
            ):
                return
            if type(action) is Start:
                callers = core.batch_clients(action.batch)
                started = self.now()
                actions, model_ms = await self._run(loop, callers, action)
                end = self.now()
                failed = [i for i, c in enumerate(callers) if c.failed]
                core.end(action.batch, end, actions is not None, failed=failed)
                core.free(0, end, end - now)
                self._send_answers(action, started, end, actions, model_ms)
                continue
            self.wake.clear()
            timeout = None if action.until_s is None else max(0.0, action.until_s - self.now())
            waiters = [asyncio.ensure_future(self.wake.wait())]
            if not stopping:  # once stopping, only the policy's moment or an answer wakes it
                waiters.append(asyncio.ensure_future(self.stopping.wait()))
            done, pending = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()

    async def _run(self, loop, callers: list[Caller], action: Start):
        """The batch in the model thread: (actions, model_ms), or (None, None) when it
        failed. A failed batch of several is split: each request runs alone; those that
        fail alone are marked `failed`, the others keep the answer they got alone."""
        runner = self.runner
        observations = [c.observation for c in callers]
        try:
            return await loop.run_in_executor(self.pool, runner.run, observations, action.padded)
        except Exception as exc:  # a failing batch must not stop the server
            self.fail(f"batch {action.batch}: {type(exc).__name__}: {bounded(exc)}")
            if len(callers) == 1:
                return None, None
        rows, model_ms = [], 0.0
        for caller in callers:
            try:
                out, ms = await loop.run_in_executor(self.pool, runner.run, [caller.observation], 1)
            except Exception as exc:  # this request fails alone: it alone is failed
                caller.failed = f"{type(exc).__name__}: {bounded(exc)}"
                out, ms = np.zeros((1, *runner.action_shape), dtype=np.float32), 0.0
            rows.append(out[0])
            model_ms += ms
        alone = [c for c in callers if c.failed]
        for caller in alone:
            self.fail(
                f"batch {action.batch}: the request of connection {caller.id} fails alone "
                f"({caller.failed}); {len(callers) - len(alone)} of its batch-mates were "
                "answered from runs alone"
            )
        if not alone:
            self.fail(f"batch {action.batch}: every request ran alone without failing")
        return np.stack(rows), model_ms

    def _take(self, caller: Caller) -> asyncio.Future | None:
        """The caller leaves the waiting set (its observation read, or no longer needed);
        its answer to set, if its client still waits (counted until its handler sends it)."""
        self.waiting.discard(caller)
        caller.observation = None
        answer = caller.answer
        if answer is None or answer.done():  # its client left
            return None
        self._answered()
        return answer

    def _send_answers(
        self, action: Start, started: float, end: float, actions, model_ms: float | None
    ) -> None:
        for callers, _, ok in self.inbox.answered:
            for i, caller in enumerate(callers):
                answer = self._take(caller)
                if answer is None:
                    continue
                if not ok or actions is None:
                    answer.set_exception(RuntimeError("the batch failed on the server"))
                elif caller.failed:
                    answer.set_exception(
                        RuntimeError(f"this request failed on the server ({caller.failed})")
                    )
                else:
                    answer.set_result(
                        {
                            "actions": actions[i],
                            "server_timing": {
                                "infer_ms": (end - started) * 1000,  # the whole batch
                                "model_ms": model_ms,  # the model call alone
                                "queue_ms": (started - caller.received_s) * 1000,
                                "batch": action.batch,
                                "batch_size": action.count,
                                "received_s": caller.received_s,
                                "answered_s": end,
                            },
                        }
                    )
        self.inbox.answered.clear()

    def _refuse_answered(self) -> None:
        """Requests the core answered without a batch (the queue was full, one waited past
        the admission timeout, the policy dropped it): their clients are told at once."""
        for callers, _, _ in self.inbox.answered:
            for caller in callers:
                answer = self._take(caller)
                if answer is not None:
                    answer.set_exception(
                        Refused("the server turned this request away (its queue limits)")
                    )
        self.inbox.answered.clear()

    def shut_out_waiting(self) -> None:
        """After the grace period: every request still waiting gets close 1001."""
        for caller in list(self.waiting):
            answer = self._take(caller)
            if answer is not None:
                answer.set_exception(
                    ShuttingDown("the server shut down before answering this request")
                )
                self.shut_out += 1

    def records(self):
        return self.core.records(self.now())


def guarded_connection():
    """websockets' ServerConnection, closing a peer that floods pings (each is answered
    on the event loop) or leaves its answers unread (they pile up in memory)."""
    from websockets.asyncio.server import ServerConnection
    from websockets.frames import Opcode

    class GuardedConnection(ServerConnection):
        server_state: PolicyServer | None = None
        _window_s = 0.0
        _pings = 0

        def process_event(self, event) -> None:
            if getattr(event, "opcode", None) is Opcode.PING:
                now = self.loop.time()
                if now - self._window_s >= 1.0:
                    self._window_s, self._pings = now, 0
                self._pings += 1
                if self._pings > PINGS_PER_S:
                    self._throttle("too many pings")
                    return
            super().process_event(event)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.get_write_buffer_size() > UNREAD_BYTES:
                self._throttle("answers left unread")

        def _throttle(self, why: str) -> None:
            if not self.transport.is_closing():
                if self.server_state is not None:
                    self.server_state.throttled += 1
                self.transport.abort()  # no close frame: its writes are what piled up

    return GuardedConnection


async def _serve(server: PolicyServer, host: str, port: int, ready: Callable[[int], None]) -> None:
    from http import HTTPStatus

    from websockets.asyncio.server import serve

    def health(connection, request):
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stop)
    connection = guarded_connection()
    connection.server_state = server
    async with serve(
        server.handle,
        host,
        port,
        process_request=health,
        compression=None,
        max_size=server.max_frame_bytes,
        max_queue=4,  # frames a client may send ahead: each can be max_size
        create_connection=connection,
    ) as ws_server:
        bound = ws_server.sockets[0].getsockname()[1]
        ready(bound)
        batching = asyncio.ensure_future(server.batching())
        await server.stopping.wait()
        deadline = loop.time() + server.grace_s
        ws_server.server.close()  # no new connections; open ones are drained below
        try:  # the queue drains (and a running batch ends) within the grace period
            await asyncio.wait_for(asyncio.shield(batching), server.grace_s)
        except TimeoutError:
            batching.cancel()
        server.shut_out_waiting()
        if server.undelivered:  # the handlers send their answers and 1001 closes
            with contextlib.suppress(TimeoutError):
                wait_s = max(0.2, deadline - loop.time())
                await asyncio.wait_for(server.all_delivered.wait(), wait_s)
        ws_server.close()
        # the closing handshakes in what is left of the grace period (a moment at least);
        # a peer that ignores its close has its socket dropped at exit
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ws_server.wait_closed(), max(0.2, deadline - loop.time()))
    server.decoder.shutdown(wait=False, cancel_futures=True)
    server.pool.shutdown(wait=False, cancel_futures=True)


def serve_scenario(
    loaded: Any,
    host: str,
    port: int,
    out: Path | None,
    ready: Callable[[int], None],
    grace_s: float = GRACE_S,
    max_frame_bytes: int | None = None,
) -> dict[str, Any]:
    """Serve until SIGINT or SIGTERM; then drain for `grace_s`, write the records (with
    `out`) and return the summary."""
    from sim.engine import pipeline

    s = loaded.scenario
    if s.model is None:
        raise InputError(
            "serve needs a model: section (the model to run)", source=loaded.source, field="model"
        )
    if s.cluster.replicas != 1 or s.cluster.queue != "shared":
        raise InputError(
            "serve runs one replica with a shared queue", source=loaded.source, field="cluster"
        )
    from sim.real.live import check_servable

    check_servable(s, loaded.source)
    runner = build_runner(s.model)
    sizes = sorted(loaded.launch_sizes)
    if s.model.cuda_graphs:
        runner.capture(sizes)  # capturing runs each size: the warm-up too
    else:
        runner.warm(sizes)
    server = PolicyServer(loaded, runner, grace_s=grace_s, max_frame_bytes=max_frame_bytes)
    asyncio.run(_serve(server, host, port, ready))
    records = server.records()
    summary = pipeline.summarise(loaded, records)
    summary["serve"] = {
        "connections": server.connections,
        "bad_observations": server.errors,
        "disconnected_mid_request": server.disconnected,
        "shut_out_on_stop": server.shut_out,
        "throttled_connections": server.throttled,
        "failed_batches": server.failures,
        "failure_count": server.failure_count,
        "max_frame_bytes": server.max_frame_bytes,
        "grace_s": server.grace_s,
        "observation_spec": server.metadata()["observation_spec"],
    }
    if out is not None:
        pipeline.write_outputs(out, summary, records, loaded.raw)
    return summary
