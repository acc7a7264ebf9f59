"""`batchsim run` end to end, its output contract, overrides, determinism and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, run_cli

PROFILE = ROOT / "profiles" / "h100" / "pi0-cudagraph.csv"


def write_scenario(tmp: Path, **changes) -> Path:
    data = {
        "name": "cli-test",
        "seed": 3,
        "duration_s": 20,
        "warmup_s": 1,
        "profile": {"path": str(PROFILE), "cameras": 1},
        "workload": {"kind": "poisson", "rate_rps": 120},
        "policy": {"kind": "dynamic", "max_batch": 16, "max_wait_ms": 5},
        "slo": {"latency_ms": 80},
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


SUMMARY_KEYS = {
    "requests",
    "throughput_rps",
    "goodput_rps",
    "latency_ms",
    "queue_delay_ms",
    "batch_size",
    "utilization",
    "slo",
}


def test_run_writes_the_contract_outputs(tmp_path):
    scenario = write_scenario(tmp_path)
    result = run_cli("run", str(scenario), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "throughput" in result.stdout and "SLO attainment" in result.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert {"arrived", "completed", "dropped", "rejected"} <= summary["requests"].keys()
    for key in ("latency_ms", "queue_delay_ms"):
        assert set(summary[key]) == {"mean", "p50", "p90", "p95", "p99", "max"}
    assert {"mean", "hist"} <= summary["batch_size"].keys()
    assert {"latency_ms", "attainment"} <= summary["slo"].keys()
    requests = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    batches = pd.read_parquet(tmp_path / "out" / "batches.parquet")
    assert list(requests.columns) == [
        "id", "source", "arrival", "start", "completion", "replica", "batch", "outcome", "deadline"
    ]  # fmt: skip
    assert (requests.deadline - requests.arrival).round(9).eq(0.080).all()
    assert list(batches.columns) == ["id", "replica", "start", "end", "size", "padded_size"]
    # the summary is computed from exactly these rows
    measured = requests[requests.arrival >= 1.0]
    done = measured[measured.outcome == "completed"]
    assert summary["requests"]["arrived"] == len(measured)
    assert summary["requests"]["completed"] == len(done)
    latency_ms = (done.completion - done.arrival) * 1000
    assert summary["latency_ms"]["p99"] == pytest.approx(latency_ms.quantile(0.99))
    assert summary["throughput_rps"] == pytest.approx(len(done) / 19.0)
    in_window = batches[batches.start >= 1.0]
    assert summary["batch_size"]["mean"] == pytest.approx(in_window["size"].mean())
    assert sum(summary["batch_size"]["hist"].values()) == len(in_window)
    # unfinished requests that have not yet waited 80 ms are censored, later ones are misses
    unfinished = measured[measured.outcome.isin(["queued", "in_service"])]
    censored = ((20.0 - unfinished.arrival) * 1000 <= 80).sum()
    attained = (latency_ms <= 80).sum()
    assert summary["slo"]["attainment"] == pytest.approx(attained / (len(measured) - censored))
    assert summary["profile"]["provenance"]["gpu"] == "NVIDIA H100 80GB HBM3"


def test_same_seed_same_files_bit_for_bit(tmp_path):
    """Reruns write the same bytes, summary.json included (the wall time is in run.json)."""
    scenario = write_scenario(tmp_path)
    for name in ("a", "b"):
        assert run_cli("run", str(scenario), "-q", "--out", str(tmp_path / name)).returncode == 0
    for name in ("summary.json", "requests.parquet", "batches.parquet", "scenario.yaml"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert "wall_s" not in json.loads((tmp_path / "a" / "summary.json").read_text())
    assert json.loads((tmp_path / "a" / "run.json").read_text())["wall_s"] > 0


def test_set_overrides_a_field_like_the_file(tmp_path):
    scenario = write_scenario(tmp_path)
    result = run_cli(
        "run", str(scenario), "-q", "--out", str(tmp_path / "o"),
        "--set", "policy.max_batch=4", "--set", "cluster.replicas=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    batches = pd.read_parquet(tmp_path / "o" / "batches.parquet")
    assert batches["size"].max() <= 4
    assert set(batches.replica) == {0, 1}
    written = yaml.safe_load((tmp_path / "o" / "scenario.yaml").read_text())
    assert written["policy"]["max_batch"] == 4 and written["cluster"]["replicas"] == 2


# validate-*.yaml name a model instead of a profile: tests/test_validate.py runs them
@pytest.mark.parametrize(
    "name",
    sorted(
        p.name for p in (ROOT / "scenarios").glob("*.yaml") if not p.name.startswith("validate-")
    ),
)
def test_every_shipped_scenario_runs_as_is(name, tmp_path):
    result = run_cli("run", str(ROOT / "scenarios" / name), "--out", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["requests"]["completed"] > 0


# ---- bad input: exit 2, one line naming file and field, no traceback ------------------------
def _mutate(tmp: Path, **changes) -> list[str]:
    return ["run", str(write_scenario(tmp, **changes))]


def _profile_csv(tmp: Path, text: str) -> dict:
    path = tmp / "prof.csv"
    path.write_text(text)
    return {"path": str(path)}


def _trace_workload(tmp: Path, text: str, **extra) -> dict:
    path = tmp / "trace.csv"
    path.write_text(text)
    return {"kind": "trace", "path": str(path), **extra}


BAD_INPUTS = {
    "missing scenario file": (lambda t: ["run", str(t / "nope.yaml")], ["nope.yaml", "not found"]),
    "yaml syntax": (
        lambda t: (t.joinpath("s.yaml").write_text("a: [1, 2\n"), ["run", str(t / "s.yaml")])[1],
        ["s.yaml", "invalid YAML", "line"],
    ),
    "yaml not a mapping": (
        lambda t: (t.joinpath("s.yaml").write_text("- 1\n- 2\n"), ["run", str(t / "s.yaml")])[1],
        ["s.yaml", "mapping"],
    ),
    "unknown top-level field": (
        lambda t: _mutate(t, duraton_s=5),
        ["duraton_s", "unknown field", "duration_s"],
    ),
    "unit-less key": (
        lambda t: _mutate(t, policy={"kind": "dynamic", "max_batch": 8, "max_wait": 5}),
        ["policy.max_wait", "unknown field", "max_wait_ms"],
    ),
    "negative value": (
        lambda t: _mutate(t, policy={"kind": "dynamic", "max_batch": -1}),
        ["policy.max_batch", "greater than 0"],
    ),
    "wrong type": (
        lambda t: _mutate(t, workload={"kind": "poisson", "rate_rps": "fast"}),
        ["workload.rate_rps", "number", "fast"],
    ),
    "unknown workload kind": (
        lambda t: _mutate(t, workload={"kind": "poison", "rate_rps": 1}),
        ["workload.kind", "poison", "poisson"],
    ),
    "missing policy": (lambda t: _mutate(t, policy=None), ["policy", "required"]),
    "both stop rules": (lambda t: _mutate(t, requests=100), ["duration_s", "requests"]),
    "inconsistent policy": (
        lambda t: _mutate(t, policy={"kind": "dynamic", "max_batch": 4, "min_batch": 9}),
        ["policy", "min_batch"],
    ),
    "phases of wrong length": (
        lambda t: _mutate(
            t, workload={"kind": "periodic", "sources": 3, "rate_hz": 10, "phases_ms": [0, 1]}
        ),
        ["workload", "phases_ms", "3"],
    ),
    "batch beyond profile": (
        lambda t: _mutate(t, policy={"kind": "dynamic", "max_batch": 128}),
        ["policy.max_batch", "128", "1..64", "extrapolated"],
    ),
    "allowed size beyond profile": (
        lambda t: _mutate(t, policy={"kind": "dynamic", "max_batch": 8, "allowed_sizes": [4, 100]}),
        ["policy.allowed_sizes", "100"],
    ),
    "missing profile file": (
        lambda t: _mutate(t, profile="missing.csv"),
        ["profile", "missing.csv", "not found"],
    ),
    "profile variant not chosen": (
        lambda t: _mutate(t, profile=str(PROFILE)),
        ["pi0-cudagraph.csv", "cameras", "several values"],
    ),
    "profile variant absent": (
        lambda t: _mutate(t, profile={"path": str(PROFILE), "cameras": 2}),
        ["pi0-cudagraph.csv", "cameras=2", "1, 3"],
    ),
    "profile missing column": (
        lambda t: _mutate(t, profile=_profile_csv(t, "batch,latency_ms\n1,10\n")),
        ["prof.csv", "batch_size"],
    ),
    "profile non-numeric": (
        lambda t: _mutate(t, profile=_profile_csv(t, "batch_size,latency_ms\n1,10\n2,slow\n")),
        ["prof.csv", "latency_ms", "'slow' on line 3"],
    ),
    "profile non-positive latency": (
        lambda t: _mutate(t, profile=_profile_csv(t, "batch_size,latency_ms\n1,0\n")),
        ["prof.csv", "latency_ms", "> 0"],
    ),
    "profile bad provenance": (
        lambda t: (
            t.joinpath("prof.meta.json").write_text("{oops"),
            _mutate(t, profile=_profile_csv(t, "batch_size,latency_ms\n1,10\n")),
        )[1],
        ["prof.meta.json", "invalid JSON"],
    ),
    "inline profile lengths": (
        lambda t: _mutate(t, profile={"batch_size": [1, 2], "latency_ms": [10]}),
        ["profile", "batch_size has 2", "latency_ms has 1"],
    ),
    "trace missing file": (
        lambda t: _mutate(t, workload={"kind": "trace", "path": "nope.csv"}),
        ["workload.path", "nope.csv", "not found"],
    ),
    "trace bad time": (
        lambda t: _mutate(t, workload=_trace_workload(t, "arrival_s\n0.1\nsoon\n")),
        ["trace.csv", "arrival_s", "'soon' on line 3"],
    ),
    "trace missing column": (
        lambda t: _mutate(t, workload=_trace_workload(t, "t\n0.1\n")),
        ["trace.csv", "arrival_s"],
    ),
    "set without value": (
        lambda t: [*_mutate(t), "--set", "policy.max_batch"],
        ["--set", "KEY=VALUE"],
    ),
    "set unknown key": (
        lambda t: [*_mutate(t), "--set", "policy.max_bach=4"],
        ["--set policy.max_bach=4", "unknown field", "max_batch"],
    ),
    "set invalid value": (
        lambda t: [*_mutate(t), "--set", "policy.max_batch=abc"],
        ["--set policy.max_batch=abc", "integer"],
    ),
    "set through a value": (
        lambda t: [*_mutate(t), "--set", "name.x=1"],
        ["--set", "'name' is a value"],
    ),
    "unknown flag": (lambda t: [*_mutate(t), "--bogus"], ["--bogus"]),
    "unknown command": (lambda t: ["simulate", "x.yaml"], ["simulate"]),
    "adaptive negative target": (
        lambda t: _mutate(t, policy={"kind": "adaptive", "target_ms": -5, "max_batch": 8}),
        ["policy.target_ms", "greater than 0"],
    ),
    "adaptive backoff outside (0, 1)": (
        lambda t: _mutate(
            t, policy={"kind": "adaptive", "target_ms": 50, "max_batch": 8, "backoff": 1.5}
        ),
        ["policy.backoff", "less than 1"],
    ),
    "deadline quantile out of range": (
        lambda t: _mutate(t, policy={"kind": "deadline", "max_batch": 8, "quantile": 0.999}),
        ["policy.quantile", "0.99"],
    ),
    "deadline without an slo": (
        lambda t: _mutate(t, policy={"kind": "deadline", "max_batch": 8}, slo=None),
        ["deadline policy needs slo.latency_ms"],
    ),
    "unknown dispatcher": (
        lambda t: _mutate(t, cluster={"replicas": 2, "queue": "per-replica", "dispatch": "random"}),
        ["cluster.dispatch", "round-robin", "least-work"],
    ),
    "dispatcher on a shared queue": (
        lambda t: _mutate(t, cluster={"replicas": 2, "dispatch": "least-work"}),
        ["cluster", "per-replica only"],
    ),
    "memory limit without memory data": (
        lambda t: _mutate(
            t, cluster={"memory_mb": 1000}, profile={"batch_size": [1, 16], "latency_ms": [5, 9]}
        ),
        ["cluster.memory_mb", "peak_mem_mb"],
    ),
    "batch beyond the memory limit": (
        lambda t: _mutate(t, cluster={"memory_mb": 5000}),
        ["policy.max_batch", "16", "5,313 MB", "memory_mb 5000", "largest batch that fits is 10"],
    ),
    "duplicate class names": (
        lambda t: _mutate(t, classes=[{"name": "a", "share": 1}, {"name": "a", "share": 2}]),
        ["classes", "distinct"],
    ),
    "robots execute above chunk": (
        lambda t: _mutate(
            t, workload={"kind": "robots", "count": 4, "control_hz": 50, "chunk": 10, "execute": 25}
        ),
        ["workload", "execute (25) cannot exceed chunk (10)"],
    ),
    "robots threshold outside [0, 1]": (
        lambda t: _mutate(
            t,
            workload={
                "kind": "robots",
                "count": 4,
                "control_hz": 30,
                "chunk": 50,
                "mode": "async",
                "threshold": 1.5,
            },
        ),
        ["workload.threshold", "less than or equal to 1"],
    ),
    "robots zero control rate": (
        lambda t: _mutate(t, workload={"kind": "robots", "count": 4, "control_hz": 0, "chunk": 50}),
        ["workload.control_hz", "greater than 0"],
    ),
    "robots group missing count": (
        lambda t: _mutate(
            t, workload={"kind": "robots", "control_hz": 30, "chunk": 50, "groups": [{"name": "a"}]}
        ),
        ["workload.groups.0.count", "required"],
    ),
    "robots with classes": (
        lambda t: _mutate(
            t,
            workload={"kind": "robots", "count": 2, "control_hz": 30, "chunk": 50},
            classes=[{"name": "a", "share": 1}],
        ),
        ["classes apply to open-loop workloads"],
    ),
    "class share not positive": (
        lambda t: _mutate(t, classes=[{"name": "a", "share": 0}]),
        ["classes.0.share", "greater than 0"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_line_and_exit_2(case, tmp_path):
    make_args, expected = BAD_INPUTS[case]
    result = run_cli(*make_args(tmp_path), cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("batchsim: error: ")
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])


def test_bad_input_leaves_earlier_outputs_alone(tmp_path):
    scenario = write_scenario(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", str(scenario), "-q", "--out", str(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = run_cli("run", str(scenario), "-q", "--out", str(out), "--set", "policy.max_batch=0")
    assert result.returncode == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_relative_paths_resolve_beside_the_scenario(tmp_path):
    shutil.copy(PROFILE, tmp_path / "p.csv")
    scenario = write_scenario(tmp_path, profile={"path": "p.csv", "cameras": 1})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run_cli("run", str(scenario), "-q", cwd=elsewhere).returncode == 0


def test_version_and_short_help():
    from importlib.metadata import version

    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"batchsim {version('batchsim')}"
    for argv in (["-h"], ["run", "-h"], ["estimate", "-h"]):
        shown = run_cli(*argv)
        assert shown.returncode == 0 and "Usage:" in shown.stdout and "Options" in shown.stdout, (
            argv
        )


def test_tables_off_a_terminal_are_plain_and_unwrapped():
    """Into a pipe (a log, grep) a table is ASCII, one line per row however long, with no
    colour codes; COLUMNS=40 does not fold it."""
    import os
    import subprocess

    from tests.conftest import BATCHSIM

    done = subprocess.run(
        [*BATCHSIM, "run", "scenarios/quickstart.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "40"},
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| requests")]
    assert len(rows) == 1 and "arrived" in rows[0] and "unfinished" in rows[0], done.stdout
    assert "\x1b[" not in done.stdout and "│" not in done.stdout
    assert done.stdout.splitlines()[0].startswith("batchsim run: quickstart")
