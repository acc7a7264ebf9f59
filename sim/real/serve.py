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
"""

from __future__ import annotations

import asyncio
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

MAX_MESSAGE_BYTES = 64 * 2**20  # one observation: refused past this before it is decoded


@dataclass(slots=True)
class Caller:
    """One request in flight: its connection, observation and the answer it waits for."""

    id: int  # the connection's number: the request's source in the records
    observation: dict[str, np.ndarray]
    answer: asyncio.Future
    received_s: float
    disconnected: bool = False


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
class ModelRunner:
    """The scenario's model on its device: observations stacked into batch inputs, the
    output split per request."""

    module: Any
    spec: dict[str, tuple[tuple[int, ...], str]]  # key -> (per-request shape, dtype)
    action_shape: tuple[int, ...]
    device: str
    dtype: Any
    # with CUDA graphs: per padded size, the captured inputs, the output and the replay
    graphs: dict[int, tuple[dict[str, Any], Any, Any]] = field(default_factory=dict)

    def check(self, observation: Any) -> dict[str, np.ndarray]:
        """The observation as arrays of the spec's shapes, or a ValueError naming what is wrong."""
        if not isinstance(observation, dict):
            raise ValueError("an observation must be a dict of arrays")
        missing = [k for k in self.spec if k not in observation]
        if missing:
            raise ValueError(f"observation lacks {', '.join(missing)}; expected {self.describe()}")
        out = {}
        for key, (shape, dtype) in self.spec.items():
            value = np.asarray(observation[key])
            if value.shape != shape:
                raise ValueError(f"observation['{key}'] has shape {value.shape}, expected {shape}")
            if value.dtype.kind not in "biuf" or not np.isfinite(value.astype(float)).all():
                raise ValueError(f"observation['{key}'] must hold finite numbers")
            out[key] = value.astype(dtype, copy=False)
        return out

    def describe(self) -> str:
        return ", ".join(f"{k} {list(s)} {d}" for k, (s, d) in self.spec.items())

    def run(
        self, observations: list[dict[str, np.ndarray]], padded: int
    ) -> tuple[np.ndarray, float]:
        """One batch: `observations` padded to `padded` rows (repeating the last), run once.
        Returns each request's actions and the model call's own time (ms), without the
        stacking and copying around it."""
        import torch

        rows = observations + [observations[-1]] * (padded - len(observations))
        inputs = {}
        for key in self.spec:
            stacked = torch.from_numpy(np.stack([r[key] for r in rows]))
            if stacked.is_floating_point():
                stacked = stacked.to(self.dtype)
            inputs[key] = stacked.to(self.device)
        if self.device == "cuda":
            torch.cuda.synchronize()  # the copies above are not the model's time
        began = time.perf_counter()
        if padded in self.graphs:  # refill the graph's own input buffers, then replay it
            static, out, replay = self.graphs[padded]
            for key, value in inputs.items():
                static[key].copy_(value)
            replay()
        else:
            with torch.no_grad():
                out = self.module(**inputs)
        if self.device == "cuda":
            torch.cuda.synchronize()
        model_ms = (time.perf_counter() - began) * 1000
        return out.float().cpu().numpy()[: len(observations)], model_ms

    def warm(self, sizes: list[int]) -> None:
        """One untimed batch per padded size before serving: a model's first call at a
        size is slow (allocation, kernel selection), and no robot should pay for it."""
        zeros = {key: np.zeros(shape, dtype=dt) for key, (shape, dt) in self.spec.items()}
        for size in sizes:
            self.run([zeros], size)

    def capture(self, sizes: list[int]) -> None:
        """A CUDA graph per padded size the policy can launch, captured before serving."""
        import torch

        from sim.profiles.profiler import capture_cuda_graph

        for size in sizes:
            static = {
                key: torch.zeros(
                    (size, *shape),
                    dtype=self.dtype if np.dtype(dt).kind == "f" else getattr(torch, dt),
                    device=self.device,
                )
                for key, (shape, dt) in self.spec.items()
            }
            holder: dict[str, Any] = {}

            def call(static=static, holder=holder) -> None:
                with torch.no_grad():
                    holder["out"] = self.module(**static)

            replay = capture_cuda_graph(call)
            self.graphs[size] = (static, holder["out"], replay)


def build_runner(model_section: Any) -> ModelRunner:
    """The scenario's `model:` built on its device, with its per-request input spec."""
    import torch

    from sim import models
    from sim.profiles.estimate.work import torch_dtype

    if model_section.device == "cuda" and not torch.cuda.is_available():
        raise InputError("is cuda, but this torch sees no CUDA device", field="model.device")
    if model_section.threads is not None:  # as the profile was measured (validate, profile)
        torch.set_num_threads(model_section.threads)
    bundle = models.build(model_section.name, model_section.size, model_section.device)
    dtype = torch_dtype(model_section.dtype)
    module = bundle.module.to(model_section.device).to(dtype).eval()
    sample = bundle.make_inputs(1, cameras=model_section.cameras, dtype=torch.float32)
    spec = {
        key: (tuple(value.shape[1:]), str(value.numpy().dtype)) for key, value in sample.items()
    }
    with torch.no_grad():
        out = module(**{k: v.to(model_section.device) for k, v in _cast(sample, dtype).items()})
    return ModelRunner(module, spec, tuple(out.shape[1:]), model_section.device, dtype)


def _cast(inputs: dict, dtype: Any) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}


@dataclass
class PolicyServer:
    """The websocket server, the batching loop and the records of one `serve` run."""

    loaded: Any  # LoadedScenario
    runner: ModelRunner
    clock: Callable[[], float] = time.perf_counter
    inbox: Inbox = field(default_factory=Inbox)
    errors: int = 0
    failures: list[str] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        from sim.engine import pipeline
        from sim.workload.build import streams

        spec = pipeline.server_spec(self.loaded, streams(self.loaded.scenario.seed))
        self.core = ServerCore(self.inbox, spec)
        self.t0 = self.clock()
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.callers: list[Caller] = []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="batchsim-model")

    def now(self) -> float:
        return self.clock() - self.t0

    def metadata(self) -> dict[str, Any]:
        return {
            "server": "batchsim",
            "policy": self.loaded.policy_description,
            "observation_spec": {
                k: {"shape": list(s), "dtype": d} for k, (s, d) in self.runner.spec.items()
            },
            "action_shape": list(self.runner.action_shape),
        }

    async def handle(self, ws) -> None:
        """One connection: the metadata frame, then observation after observation."""
        from openpi_client import msgpack_numpy  # the protocol's own encoding
        from websockets.exceptions import ConnectionClosed

        self.connections += 1
        number = self.connections
        try:
            await ws.send(msgpack_numpy.packb(self.metadata()))
            async for message in ws:
                try:
                    if isinstance(message, str):
                        raise ValueError("send observations as binary msgpack frames")
                    observation = self.runner.check(msgpack_numpy.unpackb(message))
                except Exception as exc:  # a bad observation: this client only
                    self.errors += 1
                    await ws.send(f"batchsim: bad observation: {exc}")
                    await ws.close(1003, "bad observation")
                    return
                caller = Caller(
                    number, observation, asyncio.get_running_loop().create_future(), self.now()
                )
                self.callers.append(caller)
                self.inbox.push(caller.received_s, caller)
                self.wake.set()
                try:
                    result = await caller.answer
                except RuntimeError as exc:
                    await ws.send(f"batchsim: {exc}")
                    await ws.close(1011, "inference failed")
                    return
                await ws.send(msgpack_numpy.packb(result))
        except ConnectionClosed:
            for caller in self.callers:
                if caller.id == number and not caller.answer.done():
                    caller.disconnected = True

    async def batching(self) -> None:
        """The replica: decide, run a batch off the event loop, answer; else sleep until
        the policy's time or the next arrival."""
        loop = asyncio.get_running_loop()
        core = self.core
        while not self.stopping.is_set():
            now = self.now()
            action = core.decide(0, now)
            if type(action) is Start:
                callers = core.batch_clients(action.batch)
                started = self.now()
                model_ms = None
                try:
                    actions, model_ms = await loop.run_in_executor(
                        self.pool, self.runner.run, [c.observation for c in callers], action.padded
                    )
                    ok = True
                except Exception as exc:  # a failing batch must not stop the server
                    ok = False
                    self.failures.append(f"batch {action.batch}: {type(exc).__name__}: {exc}")
                end = self.now()
                core.end(action.batch, end, ok)
                core.free(0, end, end - now)
                self._send_answers(action, started, end, actions if ok else None, model_ms)
                continue
            self.wake.clear()
            timeout = None if action.until_s is None else max(0.0, action.until_s - self.now())
            waiters = [
                asyncio.ensure_future(self.wake.wait()),
                asyncio.ensure_future(self.stopping.wait()),
            ]
            done, pending = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()

    def _send_answers(
        self, action: Start, started: float, end: float, actions, model_ms: float | None
    ) -> None:
        for callers, _, ok in self.inbox.answered:
            for i, caller in enumerate(callers):
                if caller.answer.done():
                    continue
                if not ok or actions is None:
                    caller.answer.set_exception(RuntimeError("the batch failed on the server"))
                    continue
                caller.answer.set_result(
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

    def records(self):
        return self.core.records(self.now())


async def _serve(server: PolicyServer, host: str, port: int, ready: Callable[[int], None]) -> None:
    from http import HTTPStatus

    from websockets.asyncio.server import serve

    def health(connection, request):
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stopping.set)
    async with serve(
        server.handle,
        host,
        port,
        process_request=health,
        compression=None,
        max_size=MAX_MESSAGE_BYTES,
    ) as ws_server:
        bound = ws_server.sockets[0].getsockname()[1]
        ready(bound)
        await server.batching()
        ws_server.close()
    server.pool.shutdown(wait=True)


def serve_scenario(
    loaded: Any, host: str, port: int, out: Path | None, ready: Callable[[int], None]
) -> dict[str, Any]:
    """Serve until SIGINT or SIGTERM; then write the records (with `out`) and return the summary."""
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
    server = PolicyServer(loaded, runner)
    asyncio.run(_serve(server, host, port, ready))
    records = server.records()
    summary = pipeline.summarise(loaded, records)
    summary["serve"] = {
        "connections": server.connections,
        "bad_observations": server.errors,
        "disconnected_mid_request": sum(c.disconnected for c in server.callers),
        "failed_batches": server.failures,
        "observation_spec": server.metadata()["observation_spec"],
    }
    if out is not None:
        pipeline.write_outputs(out, summary, records, loaded.raw)
    return summary
