"""serve under attack: how a well-behaved robot fares while hostile peers hit the server.

Starts `batchsim serve` (pi0-tiny on the CPU, dynamic batching) on loopback and runs one
well-behaved openpi client that sends a request every 50 ms throughout. Phase by phase
(quiet, then each attack alone for a few seconds, from two attacker processes; on a
2-core machine they take CPU from the server and the robot too) it prints the good client's round trip
(median and worst) and /healthz's worst reply time, then the server's RSS growth per
request over --requests requests from 8 clients, and how long SIGTERM takes to exit with
requests queued. The figures are this machine's; nothing is asserted (tests do that).
Usage: python benchmarks/bench_serve_hostile.py [--phase-s 4] [--requests 4000]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import msgpack
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", category=DeprecationWarning)

SCENARIO = {
    "name": "bench-serve-hostile",
    "seed": 1,
    "duration_s": 10,
    "profile": {"path": str(ROOT / "profiles/cpu/pi0-tiny.csv"), "cameras": 1},
    "model": {"name": "pi0", "size": "tiny", "device": "cpu"},
    "workload": {"kind": "poisson", "rate_rps": 10},
    "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 5},
}


def start(tmp: Path, scenario: dict, *args: str) -> tuple[subprocess.Popen, str]:
    (tmp / "s.yaml").write_text(yaml.safe_dump(scenario))
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "serve", str(tmp / "s.yaml"), "--port", "0",
         "--out", str(tmp / "served"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    line = process.stdout.readline()
    return process, f"127.0.0.1:{int(line.rsplit(':', 1)[1])}"


def observation(spec: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        k: rng.standard_normal(v["shape"]).astype(v["dtype"])
        if "float" in v["dtype"]
        else rng.integers(0, 8, v["shape"]).astype(v["dtype"])
        for k, v in spec.items()
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class GoodRobot(threading.Thread):
    """One request every 50 ms; round trips and /healthz times, labelled by phase."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        self.address, self.phase, self.stop = address, "quiet", threading.Event()
        self.policy = WebsocketClientPolicy(f"ws://{address}")
        self.obs = observation(self.policy.get_server_metadata()["observation_spec"], 0)
        self.trips: dict[str, list[float]] = {}
        self.health: dict[str, list[float]] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.perf_counter()
            self.policy.infer(self.obs)
            self.trips.setdefault(self.phase, []).append(time.perf_counter() - began)
            began = time.perf_counter()
            with urllib.request.urlopen(f"http://{self.address}/healthz", timeout=30):
                pass
            self.health.setdefault(self.phase, []).append(time.perf_counter() - began)
            time.sleep(0.05)


def _again_and_again(address: str, stop: threading.Event, act) -> None:
    """Connect, read the metadata frame and `act(ws)`; again on a fresh connection each
    time the server closes one, until `stop`."""
    from websockets.sync.client import connect

    while not stop.is_set():
        try:
            with connect(f"ws://{address}", max_size=None, compression=None) as ws:
                ws.recv()
                act(ws)
        except Exception:  # noqa: BLE001 - the server closes it: the point
            pass


def attack_big_frames(address: str, stop: threading.Event) -> None:
    """60 MB messages (a list of small ints), one after another, each on a fresh socket."""
    frame = msgpack.packb(list(range(2**20)) * 12)

    def act(ws) -> None:
        ws.send(frame)
        ws.recv(timeout=10)

    _again_and_again(address, stop, act)


def attack_pings(address: str, stop: threading.Event) -> None:
    def act(ws) -> None:
        while not stop.is_set():
            ws.ping(b"x" * 125)

    _again_and_again(address, stop, act)


def attack_bad_frames(address: str, stop: threading.Event) -> None:
    """Object arrays and out-of-vocabulary tokens, as fast as the server refuses them."""
    bad = {b"__ndarray__": True, b"data": b"A" * 64, b"dtype": "|O", b"shape": [8]}
    frame = msgpack.packb({"images": [bad], "instruction": [10**6], "state": bad})

    def act(ws) -> None:
        ws.send(frame)
        ws.recv(timeout=10)
        ws.recv(timeout=10)

    _again_and_again(address, stop, act)


ATTACKS = {
    "60 MB frames": attack_big_frames,
    "ping flood": attack_pings,
    "bad frames": attack_bad_frames,
}


def memory(tmp: Path, requests: int) -> tuple[float, int]:
    process, address = start(tmp, SCENARIO)
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    def load(each: int) -> None:
        def client(i: int) -> None:
            policy = WebsocketClientPolicy(f"ws://{address}")
            obs = observation(policy.get_server_metadata()["observation_spec"], i)
            for _ in range(each):
                policy.infer(obs)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    load(125)
    before = rss_kib(process.pid)
    load(requests // 8)
    grown = rss_kib(process.pid) - before
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    return grown * 1024 / requests, grown


def shutdown(tmp: Path) -> float:
    """Three requests waiting on a static policy that never fills: SIGTERM to exit."""
    from websockets.sync.client import connect

    scenario = {**SCENARIO, "policy": {"kind": "static", "batch_size": 8}}
    process, address = start(tmp, scenario, "--grace-s", "1")
    sockets = []
    for seed in range(3):
        ws = connect(f"ws://{address}", max_size=None, compression=None)
        spec = msgpack.unpackb(ws.recv())["observation_spec"]
        from openpi_client import msgpack_numpy

        ws.send(msgpack_numpy.packb(observation(spec, seed)))
        sockets.append(ws)
    time.sleep(0.5)
    began = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-s", type=float, default=4.0)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--attack", nargs=2, help=argparse.SUPPRESS)  # NAME ADDRESS (child)
    args = parser.parse_args()
    if args.attack:
        ATTACKS[args.attack[0]](args.attack[1], threading.Event())
        return
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "a").mkdir()
        process, address = start(tmp / "a", SCENARIO)
        robot = GoodRobot(address)
        robot.start()
        time.sleep(args.phase_s)
        for name in ATTACKS:
            robot.phase = name
            # attackers in processes of their own: their work must not stall the robot's
            attackers = [
                subprocess.Popen([sys.executable, __file__, "--attack", name, address])
                for _ in range(2)
            ]
            time.sleep(args.phase_s)
            for a in attackers:
                a.kill()
                a.wait()
            robot.phase = f"after {name}"
            time.sleep(0.5)
        robot.stop.set()
        robot.join(30)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
        print(f"{'phase':<24} {'requests':>8} {'p50 ms':>8} {'max ms':>8} {'healthz max ms':>15}")
        for phase in ["quiet", *ATTACKS]:
            trips, health = robot.trips.get(phase, []), robot.health.get(phase, [])
            if trips:
                print(
                    f"{phase:<24} {len(trips):>8} {statistics.median(trips) * 1e3:>8.1f} "
                    f"{max(trips) * 1e3:>8.1f} {max(health or [0]) * 1e3:>15.1f}"
                )
        (tmp / "m").mkdir()
        per_request, grown = memory(tmp / "m", args.requests)
        print(f"RSS growth over {args.requests:,} requests: {grown:,} KiB "
              f"({per_request:,.0f} bytes per request)")  # fmt: skip
        (tmp / "s").mkdir()
        print(f"SIGTERM with 3 requests queued, --grace-s 1: exited in {shutdown(tmp / 's'):.2f} s")


if __name__ == "__main__":
    main()
