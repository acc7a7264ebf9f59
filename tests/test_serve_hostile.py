"""`batchsim serve` against hostile clients, on loopback (docs/design.md, "serve's limits").

Each case attacks a real `serve` process and then checks that it is still up and still
serving a well-behaved openpi client, and that its records hold. The waits are bounded
generously (the machine is shared); the latency figures under attack are printed by
benchmarks/bench_serve_hostile.py, not asserted here.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("websockets")
client_policy = pytest.importorskip("openpi_client.websocket_client_policy")
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")

from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from tests.test_serve import SCENARIO as SERVE_SCENARIO  # noqa: E402
from tests.test_serve import WAIT_S, Server  # noqa: E402
from tests.test_serve import observation as spec_observation  # noqa: E402


def observation(spec: dict, seed: int = 0) -> dict:
    """test_serve's random observation of the spec, from a seed."""
    return spec_observation(spec, np.random.default_rng(seed))


SCENARIO = {**SERVE_SCENARIO, "name": "serve-hostile"}


def well_behaved(server: Server, seed: int = 0) -> dict:
    """One request from a fresh openpi client: the answer (the server still serves)."""
    policy = client_policy.WebsocketClientPolicy(server.uri)
    spec = policy.get_server_metadata()["observation_spec"]
    result = policy.infer(observation(spec, seed))
    policy._ws.close()
    assert result["actions"].shape == (50, 32)
    return result


def raw(server: Server, **options):
    """A hand-driven connection, its metadata frame read: the hostile peer."""
    ws = connect(server.uri, compression=None, max_size=None, open_timeout=WAIT_S, **options)
    meta = msgpack.unpackb(ws.recv(timeout=WAIT_S))
    return ws, meta


def array(x: np.ndarray, dtype: str | None = None) -> dict:
    return {
        b"__ndarray__": True,
        b"data": x.tobytes(),
        b"dtype": dtype or x.dtype.str,
        b"shape": list(x.shape),
    }


def packed(spec: dict, **replace) -> bytes:
    obs = {k: array(v) for k, v in observation(spec).items()}
    obs.update(replace)
    return msgpack.packb(obs)


def refused(ws, frame: bytes) -> tuple[str, int]:
    """Send a hostile frame: the error text (if any) and the close code."""
    ws.send(frame)
    text = ""
    try:
        while True:
            message = ws.recv(timeout=WAIT_S)
            if isinstance(message, str):
                text = message
    except ConnectionClosed as closed:
        return text, closed.rcvd.code if closed.rcvd else -1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("hostile"))
    yield s
    s.kill()


def test_an_object_array_in_a_list_is_refused_and_the_server_lives(server):
    ws, meta = raw(server)
    attack = array(np.frombuffer(b"\x41" * 64, np.uint8), dtype="|O")
    text, code = refused(ws, packed(meta["observation_spec"], state=[attack]))
    assert code == 1003 and "not numeric" in text
    assert server.alive()
    well_behaved(server)


@pytest.mark.parametrize("tokens", [[0, 1, 10**6], [0, 1, -1], [0, 1, 2**63 - 1], [0.0, 1.0, 1e18]])
def test_token_ids_outside_the_vocabulary_never_reach_a_batch(server, tokens):
    ws, meta = raw(server)
    spec = meta["observation_spec"]
    n = spec["instruction"]["shape"][0]
    ids = np.array(tokens + [0] * (n - len(tokens)))
    # a well-behaved client sends at the same moment: it must not share a failed batch
    good = threading.Thread(target=well_behaved, args=(server, 1))
    good.start()
    text, code = refused(ws, packed(spec, instruction=array(ids)))
    good.join(WAIT_S)
    assert code == 1003 and ("from 0 to 255" in text or "integers" in text), text
    well_behaved(server)


@pytest.mark.parametrize(
    "state, words",
    [
        (np.full(32, 1e300), "finite numbers within"),  # finite in float64, inf in float32
        (np.full(32, np.nan, np.float32), "finite"),
    ],
)
def test_floats_must_be_finite_in_the_models_dtype(server, state, words):
    ws, meta = raw(server)
    text, code = refused(ws, packed(meta["observation_spec"], state=array(state)))
    assert code == 1003 and words in text
    well_behaved(server)


def test_a_huge_dtype_string_is_not_echoed(server):
    ws, meta = raw(server)
    attack = {b"__ndarray__": True, b"data": b"", b"dtype": "f" * 500_000, b"shape": [0]}
    text, code = refused(ws, packed(meta["observation_spec"], state=attack))
    assert code in (1003, 1009) and len(text) < 300


def test_an_oversize_frame_is_closed_before_it_is_decoded(server):
    ws, meta = raw(server)
    assert meta["max_frame_bytes"] < 4 * 2**20
    # the 60 MB list of small ints that stalled the loop: refused at the frame limit
    text, code = refused(ws, msgpack.packb(list(range(3 * 2**20))))
    assert code == 1009
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=WAIT_S) as r:
        assert r.status == 200
    well_behaved(server)


@pytest.mark.parametrize(
    "frame",
    [
        msgpack.packb([0] * 100_000),  # many small values, inside the frame limit
        msgpack.packb({"images": [[[[[[[[[[0]]]]]]]]]]}),
        b"\xc1not msgpack at all",
        msgpack.packb([1, 2, 3]),
    ],
)
def test_malformed_frames_close_only_their_connection(server, frame):
    ws, _ = raw(server)
    text, code = refused(ws, frame)
    assert code == 1003 and text.startswith("batchsim: bad observation")
    assert "\n" not in text and len(text) < 300
    well_behaved(server)


def test_a_ping_flood_is_closed_and_others_are_served(server):
    ws, _ = raw(server)
    with pytest.raises(ConnectionClosed):
        for _ in range(5000):
            ws.ping()
        ws.recv(timeout=WAIT_S)  # the server closed it: nothing comes but the end
    assert server.alive()
    well_behaved(server)


def test_many_attacks_then_the_records_count_them(tmp_path):
    """A fresh server: bad observations and mid-request disconnects are counted."""
    s = Server(tmp_path, {**SCENARIO, "policy": {"kind": "static", "batch_size": 8}})
    try:
        for _ in range(3):
            ws, meta = raw(s)
            refused(ws, packed(meta["observation_spec"], state=array(np.zeros(3))))
        # a static policy holds these until 8 are queued: each client leaves mid-request
        for _ in range(5):
            ws, meta = raw(s)
            ws.send(packed(meta["observation_spec"]))
            ws.close()
        # the server sees the closes at once, or during its grace period at the latest
    finally:
        s.stop()
    served = s.summary()["serve"]
    assert served["bad_observations"] == 3
    assert served["disconnected_mid_request"] == 5


def test_sigterm_with_requests_queued_exits_within_the_grace_period(tmp_path):
    """Requests wait in the queue (a static policy that never fills) and others were
    answered: SIGTERM exits within the grace period, the waiting clients get close 1001,
    and every answered request is recorded once."""
    scenario = {**SCENARIO, "policy": {"kind": "static", "batch_size": 4}}
    s = Server(tmp_path, scenario, "--grace-s", "1")
    closes: list[int] = []
    try:
        # two full batches of 4, answered
        answers = []
        threads = [
            threading.Thread(target=lambda i=i: answers.append(well_behaved(s, i)))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S)
        assert len(answers) == 8

        def waiter(seed: int) -> None:
            ws, meta = raw(s)
            ws.send(packed(meta["observation_spec"]))
            try:
                while True:
                    ws.recv(timeout=WAIT_S)
            except ConnectionClosed as closed:
                closes.append(closed.rcvd.code if closed.rcvd else -1)

        waiting = [threading.Thread(target=waiter, args=(i,)) for i in range(3)]
        for t in waiting:
            t.start()
        time.sleep(1.0)  # the three are queued, the policy waits for a fourth
        _, _, took = s.stop()
        for t in waiting:
            t.join(WAIT_S)
    finally:
        s.kill()
    assert closes == [1001, 1001, 1001]
    assert took < WAIT_S  # it exited (the old server never did)
    summary = s.summary()
    assert summary["serve"]["shut_out_on_stop"] == 3
    requests = pd.read_parquet(s.out / "requests.parquet")
    assert (requests.outcome == "completed").sum() == 8
    assert len(requests) == 11 and (requests.outcome == "queued").sum() == 3


def test_sigterm_under_load_records_every_answered_request_once(tmp_path):
    """Six robots sending back to back; SIGTERM mid-stream. The server exits, each robot
    is closed with 1001 (or finds the server gone), and every answer a robot received is
    one completed request in the records, from that robot's connection."""
    s = Server(tmp_path, None, "--grace-s", "2")
    got: dict[int, int] = {}
    ends: list[str] = []
    started = threading.Barrier(7)

    def robot(i: int) -> None:
        policy = client_policy.WebsocketClientPolicy(s.uri)
        obs = observation(policy.get_server_metadata()["observation_spec"], i)
        got[i] = 0
        started.wait(WAIT_S)
        try:
            while True:
                policy.infer(obs)
                got[i] += 1
        except ConnectionClosed as closed:
            ends.append(f"close {closed.rcvd.code if closed.rcvd else 'none'}")
        except Exception as exc:  # noqa: BLE001 - the server went away under it
            ends.append(type(exc).__name__)

    robots = [threading.Thread(target=robot, args=(i,)) for i in range(6)]
    try:
        for t in robots:
            t.start()
        started.wait(WAIT_S)
        time.sleep(1.5)
        s.stop()
        for t in robots:
            t.join(WAIT_S)
    finally:
        s.kill()
    assert len(ends) == 6 and not any(t.is_alive() for t in robots)
    assert any(e == "close 1001" for e in ends), ends
    requests = pd.read_parquet(s.out / "requests.parquet")
    completed = requests[requests.outcome == "completed"]
    assert sum(got.values()) > 6
    assert len(completed) == sum(got.values())  # every answer received, recorded once
    per_connection = sorted(completed.source.value_counts().tolist())
    assert per_connection == sorted(got.values())


def test_a_request_turned_away_by_the_queue_limit_is_told_at_once(tmp_path):
    """admission.max_queue 1 and a static policy waiting for 4: the first request waits,
    the second is rejected, and its client hears so at once (close 1013), not when some
    later batch ends."""
    scenario = {**SCENARIO, "policy": {"kind": "static", "batch_size": 4},
                "admission": {"max_queue": 1}}  # fmt: skip
    s = Server(tmp_path, scenario, "--grace-s", "0")
    try:
        first, meta = raw(s)
        first.send(packed(meta["observation_spec"]))
        time.sleep(0.5)
        second, _ = raw(s)
        text, code = refused(second, packed(meta["observation_spec"]))
    finally:
        s.stop()
    assert code == 1013 and "turned this request away" in text
    requests = pd.read_parquet(s.out / "requests.parquet")
    assert sorted(requests.outcome) == ["queued", "rejected"]


POISON_MODEL = '''
import torch
from sim.models import ModelBundle, build


def factory(size):
    """pi0-tiny that raises when a request's state starts with 42: a poisoned input
    that passes every admission check."""
    inner = build("pi0", "tiny")

    class Poisoned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner.module

        def forward(self, images, instruction, state):
            if bool((state[:, 0] == 42).any()):
                raise RuntimeError("poisoned input")
            return self.inner(images=images, instruction=instruction, state=state)

    return ModelBundle("poisoned", size, Poisoned(), inner.make_inputs, inner.output_shape,
                       inner.config, inner.input_ranges)
'''


def test_a_poisoned_request_fails_alone_and_its_batch_mates_are_answered(tmp_path):
    (tmp_path / "poison_model.py").write_text(POISON_MODEL)
    scenario = {
        **SCENARIO,
        "model": {"name": "poison_model:factory", "size": "tiny", "device": "cpu"},
        "policy": {"kind": "static", "batch_size": 4},
    }
    s = Server(tmp_path, scenario)
    results: dict[int, object] = {}
    try:

        def client(i: int) -> None:
            policy = client_policy.WebsocketClientPolicy(s.uri)
            obs = observation(policy.get_server_metadata()["observation_spec"], i)
            if i == 0:
                obs["state"][0] = 42.0
            try:
                results[i] = policy.infer(obs)
            except Exception as exc:  # noqa: BLE001 - the poisoned one
                results[i] = exc

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S)
    finally:
        s.stop()
    assert isinstance(results[0], RuntimeError) and "fails alone" not in str(results[0])
    assert "poisoned input" in str(results[0])
    for i in (1, 2, 3):
        assert results[i]["actions"].shape == (50, 32)
        assert results[i]["server_timing"]["batch_size"] == 4  # they shared the batch
    served = s.summary()["serve"]
    assert any("connection" in line and "fails alone" in line for line in served["failed_batches"])
    requests = pd.read_parquet(s.out / "requests.parquet")
    assert (requests.outcome == "completed").sum() == 3
    assert (requests.outcome == "failed").sum() == 1


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_memory_stays_flat_over_thousands_of_requests(tmp_path):
    """The old server kept ~50 KiB per answered request; this asserts under 8 KiB (the
    records themselves are a few dozen bytes), over 4,000 requests after a warm-up."""
    s = Server(tmp_path, {**SCENARIO, "policy": {"kind": "dynamic", "max_batch": 8,
                                                  "max_wait_ms": 2}})  # fmt: skip
    clients = 8

    def run(requests_each: int) -> None:
        def client(i: int) -> None:
            policy = client_policy.WebsocketClientPolicy(s.uri)
            obs = observation(policy.get_server_metadata()["observation_spec"], i)
            for _ in range(requests_each):
                policy.infer(obs)
            policy._ws.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)

    try:
        run(125)  # 1,000 requests: allocator pools and caches settle
        before = rss_kib(s.process.pid)
        run(500)  # 4,000 more
        grown = rss_kib(s.process.pid) - before
    finally:
        s.stop()
    assert s.summary()["requests"]["completed"] == 5000
    assert grown < 4000 * 8, f"grew {grown:,} KiB over 4,000 requests"
