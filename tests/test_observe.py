"""`batchsim observe` through the real openpi client, on loopback: against `batchsim serve`,
against plain openpi-style servers written here (one request at a time, silent, dropping),
and `validate --records` on what it recorded and on the recorded runs the project ships.

The machine is shared and noisy: assertions carry margin; the tight figures are in
benchmarks/bench_fidelity.py and recorded/README.md.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.cli import main
from tests.conftest import ROOT

pytest.importorskip("websockets")
pytest.importorskip("openpi_client.websocket_client_policy")
# openpi-client 0.1.2 calls websockets' connect() the pre-14 way; harmless here
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")

from openpi_client import msgpack_numpy  # noqa: E402

ROBOTS = {
    "name": "observe-tiny",
    "seed": 3,
    "duration_s": 8,
    "warmup_s": 1,
    "profile": {"path": str(ROOT / "profiles/cpu/pi0-tiny.csv"), "cameras": 1},
    "model": {"name": "pi0", "size": "tiny", "device": "cpu"},
    "workload": {
        "kind": "robots",
        "count": 6,
        "control_hz": 50,
        "chunk": 50,
        "execute": 10,
        "start": "synchronized",
        "jitter_ms": 1,
    },
    "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 10},
}
SERVICE_MS = 20.0
OPEN = {
    "name": "plain-server",
    "seed": 5,
    "duration_s": 6,
    "warmup_s": 1,
    # the plain server below: one request at a time, SERVICE_MS each
    "profile": {"batch_size": [1], "latency_ms": [SERVICE_MS]},
    "workload": {"kind": "poisson", "rate_rps": 20},
    "policy": {"kind": "dynamic", "max_batch": 1, "max_wait_ms": 0},
}


def write(tmp: Path, data: dict, name: str = "s.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_serve_and_observe_agree_on_every_request_and_batch(tmp_path):
    """Six synchronized robots against batchsim serve for 8 s: every request is answered
    and recorded once on each side, batches form, and the server's batch membership
    agrees with what each client was told and saw."""
    from tests.test_serve import Server

    server = Server(tmp_path, ROBOTS)
    try:
        code = main(
            [
                "observe",
                str(write(tmp_path, ROBOTS, "robots.yaml")),
                "--target",
                f"ws://127.0.0.1:{server.port}",
                "--out",
                str(tmp_path / "observed"),
            ]
        )
        assert code == 0
    finally:
        server.stop()
    seen = pd.read_parquet(tmp_path / "observed" / "requests.parquet")
    served = pd.read_parquet(server.out / "requests.parquet")
    batches = pd.read_parquet(server.out / "batches.parquet").set_index("id")
    # every request answered (some after the end: in service then), none failed or lost
    assert set(seen.outcome) <= {"completed", "in_service"}
    assert (served.outcome == "completed").all()
    assert len(seen) == len(served) > 6 * 5
    # each robot's requests, once on each side (the server numbers connections from 1)
    assert sorted(seen.source.value_counts()) == sorted(served.source.value_counts())
    assert batches["size"].mean() > 1
    # batch membership: the requests that were told batch k are exactly its size
    told = seen.groupby("server_batch").size()
    assert (batches.loc[told.index, "size"] == told).all()
    # and the client's timings bracket the batch (sent before it began, answered after)
    assert (seen.arrival <= seen.start + 1e-3).all()
    assert (seen.received.dropna() >= seen.completion.dropna() - 1e-3).all()
    summary = json.loads((tmp_path / "observed" / "summary.json").read_text())
    assert summary["robots"]["count"] == 6
    assert summary["observe"]["batches_from"] == "the server's server_timing.batch"
    assert summary["observe"]["clock_offset_uncertainty_s"] < 0.05
    assert summary["observe"]["problem_count"] == 0
    robots = pd.read_parquet(tmp_path / "observed" / "robots.parquet")
    assert len(robots) == 6 and (robots.responses > 0).all()


def test_rtc_robots_on_the_real_clock_against_serve_and_validated_from_their_records(tmp_path):
    """Real-time chunking robots (issue 29) run by observe with the simulator's own RtcRobot
    on the real clock, against batchsim serve: the rtc figures are recorded, and validate
    --records compares them with the simulation of the same fleet."""
    from tests.test_serve import Server

    workload = {**ROBOTS["workload"], "mode": "rtc", "delay_steps": "auto",
                "initial_delay_steps": 2}  # fmt: skip
    rtc = {**ROBOTS, "name": "observe-rtc", "workload": workload}
    scenario = write(tmp_path, rtc, "rtc.yaml")
    server = Server(tmp_path, rtc)
    out = tmp_path / "observed"
    try:
        target = f"ws://127.0.0.1:{server.port}"
        assert main(["observe", str(scenario), "--target", target, "--out", str(out)]) == 0
    finally:
        server.stop()
    summary = json.loads((out / "summary.json").read_text())
    rtc_figures = summary["robots"]["rtc"]
    assert rtc_figures["chunks"] > 6 * 5
    assert 0 <= rtc_figures["late_share"] <= 1 and rtc_figures["discarded_chunks"] == 0
    # auto: d is the largest round trip so far in 20 ms ticks, at least one tick
    assert 1 <= rtc_figures["delay_steps_mean"] <= 10
    # an rtc robot keeps moving while its request is out
    assert summary["robots"]["stall_fraction"] < 0.5
    v = tmp_path / "v"
    assert main(["validate", str(scenario), "--records", str(out), "--out", str(v)]) == 0
    rows = {r["metric"]: r for r in json.loads((v / "validation.json").read_text())["comparison"]}
    assert rows["robots_rtc_late_share"]["live"] == rtc_figures["late_share"]
    assert rows["robots_rtc_delay_steps_mean"]["sim"] is not None


class PlainServer:
    """An openpi-style server written here: websockets' sync server, metadata {} on
    connect, then one answer per observation, one request at a time across all
    connections (openpi's server never batches). `mode`: answer | silent | drop."""

    def __init__(self, mode: str = "answer"):
        from websockets.sync.server import serve

        self.mode = mode
        self.lock = threading.Lock()
        self.shapes: list[tuple] = []
        self.server = serve(self.handle, "127.0.0.1", 0, compression=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, ws) -> None:
        ws.send(msgpack_numpy.packb({}))
        for message in ws:
            observation = msgpack_numpy.unpackb(message)
            self.shapes.append(tuple(np.asarray(observation["state"]).shape))
            if self.mode == "silent":
                continue
            with self.lock:  # one at a time, a fixed service time
                time.sleep(SERVICE_MS / 1000)
            answer = {"actions": np.zeros((50, 7), np.float32)}
            answer["server_timing"] = {"infer_ms": SERVICE_MS}
            ws.send(msgpack_numpy.packb(answer))
            if self.mode == "drop":
                return  # closes the connection after one answer

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def plain():
    servers = []

    def start(mode: str = "answer") -> PlainServer:
        servers.append(PlainServer(mode))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_a_simulation_of_a_plain_openpi_server_predicts_its_median_latency(tmp_path, plain):
    server = plain()
    out = tmp_path / "observed"
    scenario = write(tmp_path, OPEN)
    target = f"ws://127.0.0.1:{server.port}"
    assert main(["observe", str(scenario), "--target", target, "--out", str(out)]) == 0
    # no observation:, no spec, no model: the minimal state vector
    assert set(server.shapes) == {(14,)}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["observe"]["batches_from"].startswith("one batch per request")
    assert summary["requests"]["completed"] > 60
    assert (
        main(["validate", str(scenario), "--records", str(out), "--out", str(tmp_path / "v")]) == 0
    )
    result = json.loads((tmp_path / "v" / "validation.json").read_text())
    p50 = next(r for r in result["comparison"] if r["metric"] == "latency_p50_ms")
    # M/D/1 at rho 0.4 with 20 ms of service: the round trip adds a millisecond or two
    assert abs(p50["sim_error"]) < 0.3, p50
    assert p50["live"] >= SERVICE_MS


def test_a_server_that_never_answers_is_reported_and_the_records_kept(tmp_path, plain, capsys):
    server = plain("silent")
    fleet = {**ROBOTS, "duration_s": 2, "warmup_s": 0}
    fleet["workload"] = {**ROBOTS["workload"], "count": 2}
    out = tmp_path / "observed"
    argv = ["observe", str(write(tmp_path, fleet)), "--target", f"ws://127.0.0.1:{server.port}"]
    assert main([*argv, "--out", str(out), "--timeout-s", "0.5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert any("no answer within 0.5 s" in line for line in summary["observe"]["problems"])
    requests = pd.read_parquet(out / "requests.parquet")
    assert len(requests) == 2 and (requests.outcome == "queued").all()
    assert "no answer within 0.5 s" in capsys.readouterr().err


def test_a_server_that_drops_connections_is_reported(tmp_path, plain):
    server = plain("drop")
    fleet = {**ROBOTS, "duration_s": 3, "warmup_s": 0}
    fleet["workload"] = {**ROBOTS["workload"], "count": 2}
    out = tmp_path / "observed"
    argv = ["observe", str(write(tmp_path, fleet)), "--target", f"ws://127.0.0.1:{server.port}"]
    assert main([*argv, "--out", str(out)]) == 0
    seen = json.loads((out / "summary.json").read_text())["observe"]
    assert any("ConnectionClosed" in line for line in seen["problems"])
    assert any("stopped after 3 reconnects" in line for line in seen["problems"])
    requests = pd.read_parquet(out / "requests.parquet")
    # each robot: one answer per connection (4), then a failed request on each (4)
    assert (requests.outcome == "completed").sum() == 2 * 4


SHIPPED = ROOT / "recorded" / "serve-observe-cpu"


def test_validate_records_on_the_shipped_recorded_runs_reproduces_their_report(tmp_path):
    runs = sorted(str(p) for p in SHIPPED.glob("observed-*"))
    assert len(runs) == 3
    out = tmp_path / "v"
    scenario = str(ROOT / "scenarios" / "serve-observe-cpu.yaml")
    assert main(["validate", scenario, "--records", *runs, "--out", str(out)]) == 0
    result = json.loads((out / "validation.json").read_text())
    shipped = json.loads((SHIPPED / "validation" / "validation.json").read_text())
    # the records are fixed and the simulation is seeded: the same figures, to the bit
    assert result["comparison"] == shipped["comparison"]
    by_metric = {r["metric"]: r for r in result["comparison"]}
    # the records' own batch times reproduce the latency; the CPU profile (the model
    # alone, on a quiet machine) is faster than the model inside the busy server
    assert abs(by_metric["latency_p50_ms"]["sim_recorded_batches_error"]) < 0.1
    assert by_metric["robots_stall_fraction"]["live"] is not None
    assert set(result["noise_aware"]["per_metric"]) >= {"latency_p50_ms", "throughput_rps"}
    assert result["outside_model_ms"]["mean_ms"] > 0
    # one definition of the counts: what each run's own summary.json (observe's table)
    # counts, after the warm-up, and report.md says so
    for run, described in zip(runs, result["records"], strict=True):
        summary = json.loads((Path(run) / "summary.json").read_text())
        assert described["requests"] == summary["requests"]["arrived"]
        assert described["batches"] == summary["batch_size"]["batches"]
        assert described["warmup_s"] == 2 and described["requests_in_warmup"] > 0
    report = (out / "report.md").read_text()
    first = result["records"][0]
    assert (
        f"({first['requests']:,} requests and {first['batches']:,} batches after the 2 s" in report
    )


def test_a_users_log_in_the_documented_schema_reads_as_the_run_folder(tmp_path):
    """observed-1 rewritten as a user's CSV log (arrival, start, end, batch_size): the
    same requests, batches and latencies as the run folder."""
    from sim.metrics.summary import summarize
    from sim.real.recorded import read_recorded

    folder = SHIPPED / "observed-1"
    requests = pd.read_parquet(folder / "requests.parquet")
    # robots jittered before the start send at negative times, outside any window
    done = requests[(requests.outcome == "completed") & (requests.arrival >= 0)]
    log = pd.DataFrame(
        {
            "arrival": done.arrival + 1.7e9,  # epoch seconds: any origin
            "start": done.start + 1.7e9,
            "end": done.completion + 1.7e9,
            "batch_size": pd.read_parquet(folder / "batches.parquet")["size"].to_numpy()[
                done.batch
            ],
        }
    )
    log.to_csv(tmp_path / "log.csv", index=False)
    from_log = summarize(read_recorded(tmp_path / "log.csv", 0.0).records)
    from_folder = summarize(read_recorded(folder, 0.0).records)
    assert from_log["requests"]["completed"] == from_folder["requests"]["completed"]
    assert from_log["batch_size"]["batches"] == from_folder["batch_size"]["batches"]
    assert from_log["latency_ms"]["p50"] == pytest.approx(
        from_folder["latency_ms"]["p50"], abs=1e-3
    )  # epoch floats: 0.2 us
    scenario = str(ROOT / "scenarios" / "serve-observe-cpu.yaml")
    out = tmp_path / "v"
    argv = ["validate", scenario, "--records", str(tmp_path / "log.csv"), "--out", str(out)]
    assert main([*argv, "--profile-from-records"]) == 0
    result = json.loads((out / "validation.json").read_text())
    assert result["prediction_profile"] == "recorded batch times"


def test_the_prepared_gpu_script_runs_small_on_the_cpu(tmp_path):
    """scripts/gpu_serve_observe.py --smoke: the GPU check's every step (profile, serve,
    observe two fleets twice, validate --records), tiny, so a GPU session never finds it
    broken."""
    import subprocess
    import sys

    out = tmp_path / "gpu"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gpu_serve_observe.py"),
            "--smoke",
            "--out",
            str(out),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    done = json.loads((out / "provenance.json").read_text())
    assert set(done["observed"]) == {"count_4", "count_8"}
    for fleet in ("count_4", "count_8"):
        result = json.loads((out / fleet / "validation" / "validation.json").read_text())
        assert len(result["records"]) == 2 and result["noise_aware"]["per_metric"]
    assert (out / "profile" / "pi0-torch-cudagraph.meta.json").exists()
    assert (out / "served" / "summary.json").exists()
