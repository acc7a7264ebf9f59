"""The Python API (`import sim`, sim/api.py): what the notebooks and the README use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import sim
from tests.conftest import ROOT

QUICK = ROOT / "scenarios" / "quickstart.yaml"
FLEET = ROOT / "scenarios" / "aloha-pi0-fleet.yaml"


def test_import_sim_loads_nothing_heavy():
    code = "import sim, sys; print(sorted(m for m in ('pandas', 'pydantic', 'simpy', 'torch') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_api_names_are_functions_even_after_the_modules_load():
    import sim.experiments.search
    import sim.experiments.sweep
    import sim.profiles.estimate.roofline
    import sim.validation.live  # noqa: F401

    for name in ("load", "run", "sweep", "recommend", "validate", "validate_records", "estimate"):
        assert callable(getattr(sim, name)) and not isinstance(getattr(sim, name), type(sim)), name
    assert set(sim.__all__) >= {"load", "run", "sweep", "recommend", "project_dir", "InputError"}


def test_overrides_as_a_mapping_or_strings_and_a_dict_scenario_agree():
    a = sim.run(QUICK, {"duration_s": 30, "workload.rate_rps": 100})
    b = sim.run(QUICK, ["duration_s=30", "workload.rate_rps=100"])
    data = sim.load(QUICK).raw | {
        "duration_s": 30,
        "workload": {"kind": "poisson", "rate_rps": 100},
    }
    data["profile"] = {"path": str(ROOT / "profiles/h100/pi0-cudagraph.csv"), "cameras": 1}
    c = sim.run(data)
    assert a.summary["latency_ms"] == b.summary["latency_ms"] == c.summary["latency_ms"]


def test_a_run_is_what_the_cli_writes(tmp_path):
    result = sim.run(QUICK, ["duration_s=30"])
    result.write(tmp_path / "api")
    from sim.cli import main

    assert (
        main(["run", str(QUICK), "--set", "duration_s=30", "--out", str(tmp_path / "cli"), "-q"])
        == 0
    )
    for name in ("summary.json", "requests.parquet", "batches.parquet"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), (
            name
        )
    assert (
        result.metric("latency_p99_ms")
        == json.loads((tmp_path / "cli" / "summary.json").read_text())["latency_ms"]["p99"]
    )
    assert len(result.requests) == result.records.arrival_s.size
    assert result.batches["size"].sum() == (result.requests.batch >= 0).sum()
    assert result.robots is None


def test_a_fleet_run_has_its_robots():
    result = sim.run(FLEET, ["duration_s=30"])
    assert len(result.robots) == 24 and result.metric("robots_stall_fraction") > 0


def test_bad_input_raises_input_error_with_the_cli_line():
    with pytest.raises(sim.InputError, match="unknown metric 'p99'"):
        sim.run(QUICK, ["duration_s=20"]).metric("p99")
    with pytest.raises(sim.InputError, match="workload.rate_rps"):
        sim.load(QUICK, {"workload.rate_rps": -1})
    with pytest.raises(sim.InputError, match="overrides go to sim.load"):
        sim.run(sim.load(QUICK), ["duration_s=10"])


def test_sweep_and_recommend(tmp_path):
    table = sim.sweep(QUICK, {"policy.max_batch": [8, 16]}, tmp_path / "sw", workers=1,
                      overrides=["duration_s=20"])  # fmt: skip
    assert sorted(table["grid.policy.max_batch"]) == [8, 16]
    found = sim.recommend(QUICK, "p99_ms<=100", space={"policy.max_wait_ms": [0, 5]},
                          replications=1, overrides=["duration_s=30"])  # fmt: skip
    assert found.best is not None and "sustains" in found.explanation
    assert found.best.config["policy.max_wait_ms"] in (0, 5)


def test_project_dir_holds_the_shipped_files():
    assert (sim.project_dir() / "scenarios" / "quickstart.yaml").is_file()
