"""`batchsim observe` against hostile servers written here, on loopback: it exits 2 with
one line, or counts what was wrong and keeps its records; it never crashes, never takes
a frame whole, and never waits past --timeout-s."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pytest
import yaml

from sim.cli import main

pytest.importorskip("websockets")
pytest.importorskip("openpi_client.websocket_client_policy")
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")

from openpi_client import msgpack_numpy  # noqa: E402

FLEET = {
    "name": "observe-hostile",
    "seed": 3,
    "duration_s": 2,
    "warmup_s": 0,
    "profile": {"batch_size": [1], "latency_ms": [5.0]},
    "workload": {"kind": "robots", "count": 2, "control_hz": 50, "chunk": 10, "execute": 5},
    "policy": {"kind": "dynamic", "max_batch": 1, "max_wait_ms": 0},
}
ACTIONS = (10, 7)


class FakeServer:
    """websockets' sync server in a thread: `metadata` (bytes, or None for none) on
    connect, then `answer(observation)` (bytes or None: no answer) per message."""

    def __init__(self, metadata: bytes | None, answer=None):
        from websockets.sync.server import serve

        self.metadata, self.answer = metadata, answer
        self.server = serve(self.handle, "127.0.0.1", 0, compression=None, max_size=None)
        self.port = self.server.socket.getsockname()[1]
        self.target = f"ws://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, ws) -> None:
        try:
            if self.metadata is None:
                time.sleep(5)  # connected, but silent
                return
            ws.send(self.metadata)
            for message in ws:
                reply = self.answer(msgpack_numpy.unpackb(message)) if self.answer else None
                if reply is not None:
                    ws.send(reply)
        except Exception:  # noqa: BLE001 - the client hung up on us: expected here
            return

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def fake():
    servers: list[FakeServer] = []

    def start(metadata, answer=None) -> FakeServer:
        servers.append(FakeServer(metadata, answer))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def observe(tmp: Path, target: str, *extra: str) -> tuple[int, Path]:
    scenario = tmp / "s.yaml"
    scenario.write_text(yaml.safe_dump(FLEET))
    out = tmp / "observed"
    code = main(["observe", str(scenario), "--target", target, "--out", str(out), *extra])
    return code, out


def answer_with(actions, timing=None):
    def reply(_observation):
        return msgpack_numpy.packb({"actions": actions, "server_timing": timing or {}})

    return reply


META = msgpack_numpy.packb({"action_shape": list(ACTIONS)})


def refused_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_an_object_array_in_the_metadata_is_one_line_not_a_crash(tmp_path, fake, capsys):
    attack = {b"__ndarray__": True, b"data": b"\x41" * 64, b"dtype": "|O", b"shape": [8]}
    server = fake(msgpack.packb({"observation_spec": {"state": attack}}))
    code, out = observe(tmp_path, server.target)
    assert code == 2
    line = refused_line(capsys)
    assert "metadata frame is refused" in line and "not numeric" in line
    assert not out.exists()


def test_a_metadata_frame_that_is_not_msgpack_says_so(tmp_path, fake, capsys):
    server = fake(b"\xc1 this is not msgpack")
    code, _ = observe(tmp_path, server.target)
    assert code == 2 and "the metadata frame is not msgpack" in refused_line(capsys)


def test_a_server_sending_no_metadata_is_waited_on_only_for_timeout_s(tmp_path, fake, capsys):
    server = fake(None)
    began = time.monotonic()
    code, _ = observe(tmp_path, server.target, "--timeout-s", "0.5")
    took = time.monotonic() - began
    assert code == 2 and "no metadata frame came within 0.5 s" in refused_line(capsys)
    assert took < 30  # the old client waited 30 s whatever --timeout-s said


def test_an_oversize_metadata_frame_is_refused_before_it_is_read(tmp_path, fake, capsys):
    server = fake(msgpack.packb({"padding": b"\0" * (20 * 2**20)}))
    code, _ = observe(tmp_path, server.target)
    assert code == 2 and "metadata frame" in refused_line(capsys)


def test_bytes_in_the_metadata_are_kept_as_json_safe_text(tmp_path, fake):
    meta = msgpack_numpy.packb({"name": b"\xff\xfe raw", "action_shape": list(ACTIONS)})
    server = fake(meta, answer_with(np.zeros(ACTIONS, np.float32)))
    code, out = observe(tmp_path, server.target)
    assert code == 0
    seen = json.loads((out / "summary.json").read_text())["observe"]
    assert seen["server"]["name"] == "<6 bytes>"
    assert seen["bad_answers"] == 0


@pytest.mark.parametrize("batch_size", [1e12, 2**64 - 1, -5, float("nan")])
def test_absurd_server_timings_are_not_believed(tmp_path, fake, batch_size):
    timing = {"batch": 2**64 - 1, "batch_size": batch_size, "infer_ms": 1e300, "queue_ms": -1}
    server = fake(META, answer_with(np.zeros(ACTIONS, np.float32), timing))
    code, out = observe(tmp_path, server.target)
    assert code == 0
    batches = pd.read_parquet(out / "batches.parquet")
    assert len(batches) > 0 and (batches["size"] == 1).all()


@pytest.mark.parametrize(
    "actions, words",
    [
        (np.zeros((3, 7), np.float32), "declared"),
        (np.full(ACTIONS, np.nan, np.float32), "not all finite"),
    ],
)
def test_wrong_or_nan_answers_are_bad_answers_per_robot_not_served(tmp_path, fake, actions, words):
    server = fake(META, answer_with(actions))
    code, out = observe(tmp_path, server.target)
    assert code == 0
    seen = json.loads((out / "summary.json").read_text())["observe"]
    assert seen["bad_answers"] > 0
    assert set(seen["bad_answers_by_source"]) == {"0", "1"}  # both robots, counted apart
    assert any(words in line for line in seen["problems"])
    requests = pd.read_parquet(out / "requests.parquet")
    assert (requests.outcome == "completed").sum() == 0
    assert (requests.outcome == "failed").sum() == seen["bad_answers"]


def test_an_oversize_answer_is_refused_and_the_records_kept(tmp_path, fake):
    huge = msgpack_numpy.packb({"actions": np.zeros((20 * 2**20,), np.uint8)})
    server = fake(META, lambda _obs: huge)
    code, out = observe(tmp_path, server.target)
    assert code == 0
    seen = json.loads((out / "summary.json").read_text())["observe"]
    assert any("frame limit; closed with 1009" in line for line in seen["problems"])
    requests = pd.read_parquet(out / "requests.parquet")
    assert (requests.outcome != "completed").all()
