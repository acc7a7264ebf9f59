"""`batchsim serve` against the real openpi client, on loopback, with a tiny model on the CPU.

The server runs as a real process (`python -m sim.cli serve`); clients are openpi-client's
WebsocketClientPolicy, one connection per robot, as robots run it. Assertions carry
margin: the machine is shared and noisy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT

pytest.importorskip("torch")
pytest.importorskip("websockets")
client_policy = pytest.importorskip("openpi_client.websocket_client_policy")
# openpi-client 0.1.2 calls websockets' connect() the pre-14 way; harmless here
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")

SCENARIO = {
    "name": "serve-tiny",
    "seed": 1,
    "duration_s": 10,
    "profile": {"path": str(ROOT / "profiles/cpu/pi0-tiny.csv"), "cameras": 1},
    "model": {"name": "pi0", "size": "tiny", "device": "cpu"},
    "workload": {"kind": "poisson", "rate_rps": 10},
    "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 20},
}


WAIT_S = 30  # the longest any step may take on a busy machine


class Server:
    """`batchsim serve` on a free port, in its own process (`args`: more serve flags; the
    folder is on PYTHONPATH, for a plug-in model written there)."""

    def __init__(self, tmp: Path, scenario: dict | None = None, *args: str):
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "s.yaml").write_text(yaml.safe_dump(scenario or SCENARIO))
        self.out = tmp / "served"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sim.cli", "serve", str(tmp / "s.yaml"), "--port", "0",
             "--out", str(self.out), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp}"},
        )  # fmt: skip
        line = self.process.stdout.readline()
        assert "listening on ws://" in line, line + self.process.stderr.read()
        self.port = int(line.rsplit(":", 1)[1])
        self.uri = f"ws://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = WAIT_S) -> tuple[str, str, float]:
        """SIGTERM, and its output, errors and how long it took to exit (exit code 0)."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, err
        return out, err, time.monotonic() - began

    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.kill()


def observation(spec: dict, rng: np.random.Generator) -> dict:
    return {
        key: (
            rng.standard_normal(v["shape"]).astype(v["dtype"])
            if "float" in v["dtype"]
            else rng.integers(0, 8, v["shape"]).astype(v["dtype"])
        )
        for key, v in spec.items()
    }


def test_the_real_openpi_client_gets_correctly_shaped_actions(server):
    policy = client_policy.WebsocketClientPolicy("127.0.0.1", server.port)
    meta = policy.get_server_metadata()
    assert meta["action_shape"] == [50, 32]
    assert set(meta["observation_spec"]) == {"images", "instruction", "state"}
    result = policy.infer(observation(meta["observation_spec"], np.random.default_rng(0)))
    assert result["actions"].shape == (50, 32)
    assert np.isfinite(result["actions"]).all()
    assert result["server_timing"]["batch_size"] == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as r:
        assert r.status == 200
    server.stop()
    summary = json.loads((server.out / "summary.json").read_text())
    assert summary["requests"]["completed"] == 1


def test_robots_are_batched_and_recorded_exactly_once_on_sigterm(server):
    """Six synchronized robots, five requests each: every request is answered, batches
    form, the server's records hold each request once, and the batch each client was told
    it joined has the size the server recorded."""
    answers: list[dict] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def robot(i: int) -> None:
        try:
            policy = client_policy.WebsocketClientPolicy("127.0.0.1", server.port)
            spec = policy.get_server_metadata()["observation_spec"]
            rng = np.random.default_rng(i)
            start.wait(timeout=30)
            for _ in range(5):
                answers.append(policy.infer(observation(spec, rng))["server_timing"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(answers) == 30
    server.stop()
    requests = pd.read_parquet(server.out / "requests.parquet")
    batches = pd.read_parquet(server.out / "batches.parquet")
    assert len(requests) == 30 and (requests.outcome == "completed").all()
    assert requests.source.value_counts().tolist() == [5] * 6  # each robot's five, once
    assert batches["size"].sum() == 30
    assert batches["size"].mean() > 1  # requests from several robots share batches
    told = pd.DataFrame(answers).groupby("batch").batch_size.first()
    recorded = batches.set_index("id")["size"]
    assert (recorded.loc[told.index] == told).all()
    summary = json.loads((server.out / "summary.json").read_text())
    assert summary["serve"]["connections"] == 6


def test_a_bad_observation_gets_an_error_frame_and_others_are_served(server):
    bad = client_policy.WebsocketClientPolicy("127.0.0.1", server.port)
    good = client_policy.WebsocketClientPolicy("127.0.0.1", server.port)
    spec = good.get_server_metadata()["observation_spec"]
    wrong = observation(spec, np.random.default_rng(0))
    wrong["state"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(RuntimeError, match="state.*shape"):
        bad.infer(wrong)
    result = good.infer(observation(spec, np.random.default_rng(1)))
    assert result["actions"].shape == (50, 32)
    server.stop()
    summary = json.loads((server.out / "summary.json").read_text())
    assert summary["serve"]["bad_observations"] == 1
    assert summary["requests"]["completed"] == 1
