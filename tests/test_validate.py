"""The live runner: the simulator's own policy objects, every request recorded, failures
survived; and `batchsim validate` end to end on a tiny model (loose tolerances: the
tight figures are benchmarks/bench_fidelity.py's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")

from sim.config import load  # noqa: E402
from sim.core.records import COMPLETED, FAILED  # noqa: E402
from sim.engine.pipeline import simulate  # noqa: E402
from sim.real.live import run_live  # noqa: E402
from sim.validation.report import render_report  # noqa: E402
from tests.conftest import ROOT, run_cli  # noqa: E402


class FakeClock:
    """A clock the fake model advances: live runs in no real time, deterministically.
    `late_s`: every sleep ends that much later than asked, as a real server's do."""

    def __init__(self, late_s: float = 0.0):
        self.t = 0.0
        self.late_s = late_s

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds + self.late_s


def live_on_exact_clock(loaded, late_s: float = 0.0):
    """The live runner on a FakeClock with a model that takes exactly the profile's time
    (10 ms at 1, 24 at 8, linear)."""
    clock = FakeClock(late_s)

    def model(batch):
        clock.t += (8 + 2 * batch) / 1000

    return run_live(loaded, model, lambda padded: {"batch": padded}, clock=clock, sleep=clock.sleep)


def scenario(**extra):
    return load(
        {
            "seed": 3,
            "duration_s": 20,
            "profile": {"batch_size": [1, 8], "latency_ms": [10, 24]},
            "workload": {"kind": "poisson", "rate_rps": 150},
            "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 3},
            "slo": {"latency_ms": 80},
            **extra,
        }
    )


def test_live_runner_and_simulator_build_their_policy_in_the_one_pipeline(monkeypatch):
    """Both clocks drive a policy built by the pipeline's build step from the resolved
    scenario, each run its own object (a resolved scenario holds none)."""
    from sim.policies import registry

    loaded = scenario()
    built, calls = [], []
    original_build = registry.build

    def counting_build(*args, **kwargs):
        policy = original_build(*args, **kwargs)
        original = policy.decide

        def counting(now_s, queue):
            calls.append(now_s)
            return original(now_s, queue)

        policy.decide = counting
        built.append(policy)
        return policy

    monkeypatch.setattr(registry, "build", counting_build)
    clock = FakeClock()

    def model(batch):
        clock.t += (8 + 2 * batch) / 1000  # the profile (10 ms at 1, 24 at 8, linear), exactly

    result = run_live(
        loaded, model, lambda padded: {"batch": padded}, clock=clock, sleep=clock.sleep
    )
    assert len(built) == 1 and calls, "run_live must ask the policy the pipeline built"
    sim = simulate(loaded)
    assert len(built) == 2 and built[0] is not built[1]  # a fresh policy for every run
    # one scheduler, two clocks: a model that takes exactly the profile's time on a clock that
    # sleeps exactly gives the simulation's batches, bit for bit
    assert np.array_equal(result.records.batch_size, sim.batch_size)
    assert np.array_equal(result.records.batch_start_s, sim.batch_start_s)
    assert np.array_equal(result.records.request_batch, sim.request_batch)
    # every request is accounted for
    assert np.isin(result.records.outcome, [0, 1, 2, 3, 4]).all()


def test_a_failing_batch_is_recorded_and_the_server_goes_on():
    loaded = scenario(duration_s=5)
    clock = FakeClock()
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        clock.t += 0.012
        if calls["n"] == 3:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    result = run_live(
        loaded, flaky, lambda padded: {"batch": padded}, clock=clock, sleep=clock.sleep
    )
    failed = result.records.outcome == FAILED
    assert failed.sum() == result.records.batch_size[2]
    assert np.all(result.records.request_batch[failed] == 2)
    assert (result.records.outcome == COMPLETED).sum() > 500  # it kept serving
    assert len(result.failures) == 1 and "illegal memory access" in result.failures[0]
    report = render_report(
        {
            "scenario": "s", "model": {"name": "m", "size": "tiny", "device": "cpu", "dtype": "float32", "threads": 1},
            "profile": "p.csv", "comparison": [], "ks": None, "failures": result.failures,
            "overhead": {"mean_ms": 0.1, "forward_mean_ms": 12.0, "handling": "added"}, "figure": "f.png",
        }
    )  # fmt: skip
    assert "1 batch(es) failed" in report and "illegal memory access" in report


def test_validate_end_to_end_on_a_tiny_model(tmp_path):
    path = tmp_path / "v.yaml"
    data = yaml.safe_load((ROOT / "scenarios/validate-dynamic.yaml").read_text())
    data.update(duration_s=6, warmup_s=1, workload={"kind": "poisson", "rate_rps": 60})
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "val"
    result = run_cli("validate", str(path), "--out", str(out), "--repeats", "2", "--sim-draws", "3")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "validation.json").read_text())
    rows = {r["metric"]: r for r in report["comparison"]}
    # two live runs of the same traffic: the live figure is their median, with their spread
    p50 = rows["latency_p50_ms"]
    assert report["repeats"] == 2 and len(p50["live_runs"]) == 2
    assert p50["live"] == pytest.approx(sum(p50["live_runs"]) / 2)
    assert p50["live_spread"] == pytest.approx(
        abs(p50["live_runs"][0] - p50["live_runs"][1]) / p50["live"]
    )
    # three simulations of that traffic, each its own service draw: the prediction is their median
    assert report["sim_draws"] == 3 and len(p50["sim_draws"]) == 3
    assert p50["sim"] == pytest.approx(sorted(p50["sim_draws"])[1])
    assert len(set(p50["sim_draws"])) > 1
    assert set(report["targets"]) == {"throughput_rps", "latency_p50_ms", "latency_p99_ms"}
    assert report["targets"]["latency_p50_ms"]["error"] == p50["sim_error"]
    inside = min(p50["live_runs"]) <= p50["sim"] <= max(p50["live_runs"])
    assert report["targets"]["latency_p50_ms"]["inside_live_range"] == inside
    assert {"live_run_1", "live_run_2"} <= set(report["requests"])
    # the noise-aware verdict: against the two runs' own leave-one-out spread
    noise = report["noise_aware"]["per_metric"]["latency_p50_ms"]
    assert noise["indistinguishable"] == (abs(noise["error"]) <= noise["spread"])
    assert report["noise_aware"]["tost_latency"]["margin"] == 0.05
    assert "Noise-aware" in (out / "report.md").read_text()
    assert "interleaved" in json.loads((out / "profile.meta.json").read_text())["timing"]
    # a busy machine slows the live model, not the profile: fed the live runs' own batch
    # times, the queueing model reproduces them (the tight figures are in the benchmark)
    assert abs(rows["throughput_rps"]["sim_live_service_error"]) < 0.10
    assert abs(rows["latency_p50_ms"]["sim_live_service_error"]) < 0.35
    assert report["ks"]["statistic"] < 0.6
    assert (out / "report.md").read_text().startswith("# Validation")
    assert "median of 2 live run(s)" in (out / "report.md").read_text()
    assert (out / "latency_cdf.png").stat().st_size > 10_000
    assert (out / "profile.meta.json").exists()
    # every live run's records and the first simulation's, as `batchsim run --out` writes them
    import pandas as pd

    for k in (1, 2):
        requests = pd.read_parquet(out / f"live-run-{k}" / "requests.parquet")
        assert len(requests) >= report["requests"][f"live_run_{k}"]["arrived"] > 0
    assert (out / "sim-draw-1" / "batches.parquet").exists()
    assert run_cli("plot", str(out / "live-run-1")).returncode == 0


def test_validate_needs_a_model_section(tmp_path):
    result = run_cli("validate", str(ROOT / "scenarios/quickstart.yaml"), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "validate needs a model: section" in result.stderr and "Traceback" not in result.stderr


def test_a_scenario_with_only_a_model_explains_how_to_run_it(tmp_path):
    result = run_cli("run", str(ROOT / "scenarios/validate-dynamic.yaml"))
    assert result.returncode == 2
    assert "batchsim validate measures one from model:" in result.stderr


DEADLINE = {"kind": "deadline", "max_batch": 8, "quantile": 0.9, "on_miss": "serve"}


@pytest.mark.parametrize(
    "policy",
    [
        {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 3},
        {"kind": "static", "batch_size": 4, "timeout_ms": 10},
        DEADLINE,
        {**DEADLINE, "on_miss": "drop"},
    ],
    ids=["dynamic", "static", "deadline-serve", "deadline-drop"],
)
def test_inv9_live_open_loop_with_classes_matches_the_simulation_bit_for_bit(policy):
    """Classes with their own SLOs and priorities: deadlines out of arrival order, so the
    live runner must serve from the engine's own queue order (EDF, or priority then arrival)."""
    loaded = scenario(
        duration_s=10,
        policy=policy,
        classes=[
            {"name": "control", "share": 0.3, "latency_ms": 40, "priority": 1},
            {"name": "planning", "share": 0.7, "latency_ms": 200, "priority": 0},
        ],
    )
    live = live_on_exact_clock(loaded)
    sim = simulate(loaded)
    assert np.array_equal(live.records.request_batch, sim.request_batch)
    assert np.array_equal(live.records.batch_start_s, sim.batch_start_s)
    assert np.array_equal(live.records.outcome, sim.outcome)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("policy", [None, DEADLINE], ids=["dynamic", "deadline"])
def test_inv9_live_robot_fleet_matches_the_simulation_bit_for_bit(mode, policy):
    """Closed loop, two clocks: the fleet's own client state machines on the live runner's
    clock (a model that takes exactly the profile's time) give the simulation's requests,
    batches and robot figures exactly. Robots' deadlines come out of arrival order, so the
    deadline policy checks that both serve from the same (EDF) queue."""
    from sim.metrics.robots import robots_summary

    loaded = scenario(
        duration_s=30,
        warmup_s=3,
        workload={
            "kind": "robots", "count": 8, "control_hz": 30, "chunk": 50, "execute": 25, "mode": mode,
            "start": "random", "network_ms": {"uplink": 3, "downlink": 4},
        },
        **({"policy": policy} if policy else {}),
    )  # fmt: skip
    live = live_on_exact_clock(loaded)
    sim = simulate(loaded)
    assert np.array_equal(live.records.arrival_s, sim.arrival_s)
    assert np.array_equal(live.records.batch_size, sim.batch_size)
    assert np.array_equal(live.records.batch_start_s, sim.batch_start_s)
    assert robots_summary(live.records) == robots_summary(sim)


@pytest.mark.parametrize("flag", ["--repeats", "--sim-draws"])
def test_validate_refuses_zero_runs(tmp_path, flag):
    result = run_cli(
        "validate", str(ROOT / "scenarios/validate-dynamic.yaml"), "--out", str(tmp_path), flag, "0"
    )  # fmt: skip
    assert result.returncode == 2
    assert flag in result.stderr and ">= 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_profiling_passes_are_scaled_to_the_median_speed_before_pooling():
    """A machine that drifts: pass 1 runs 1.5x slower than pass 0 at every size. Scaled to
    the median speed, both passes give the same samples; the spread within a pass stays."""
    import pandas as pd

    from sim.validation.live import normalise_drift

    rows = [
        {"batch_size": b, "latency_ms": factor * base * b, "idle_ms": idle, "run": run}
        for run, factor in ((0, 1.0), (1, 1.5))
        for b in (1, 4)
        for base in (9.0, 10.0, 11.0)
        for idle in (0, 200)
    ]
    scaled, speeds = normalise_drift(pd.DataFrame(rows))
    assert speeds[1] / speeds[0] == pytest.approx(1.5)  # relative to the pooled medians
    by_pass = scaled.groupby(["run", "batch_size", "idle_ms"]).latency_ms.apply(sorted)
    assert by_pass[0, 4, 0] == pytest.approx(by_pass[1, 4, 0])
    assert by_pass[0, 1, 200] == pytest.approx([11.25, 12.5, 13.75])  # 1.25 x (9, 10, 11)
    assert (scaled.measured_ms == pd.DataFrame(rows).latency_ms).all()


@pytest.mark.parametrize("robots", [False, True], ids=["open-loop", "robots"])
def test_inv9_a_server_that_wakes_late_matches_the_simulation_with_that_wake_latency(robots):
    """Sleeps that end 0.3 ms late: the simulation with cluster.wake_latency_ms 0.3 gives the
    live runner's batches bit for bit, and without it, other batches."""
    workload = (
        {"kind": "robots", "count": 8, "control_hz": 30, "chunk": 50, "mode": "async",
         "threshold": 0.5, "start": "random", "network_ms": {"uplink": 3, "downlink": 3}}
        if robots
        else {"kind": "poisson", "rate_rps": 150}
    )  # fmt: skip
    extra = {"workload": workload, "duration_s": 20, "policy": DEADLINE}
    live = live_on_exact_clock(scenario(**extra), late_s=0.0003)
    assert live.wake_late_ms.size > 100
    np.testing.assert_allclose(live.wake_late_ms, 0.3, atol=1e-6)
    late = simulate(scenario(**extra, cluster={"wake_latency_ms": 0.3}))
    assert np.array_equal(live.records.batch_size, late.batch_size)
    np.testing.assert_allclose(live.records.batch_start_s, late.batch_start_s, rtol=0, atol=1e-9)
    on_time = simulate(scenario(**extra))
    assert not np.array_equal(on_time.batch_start_s[:50], late.batch_start_s[:50])


def test_comparison_rows_take_medians_of_live_runs_and_of_simulation_draws():
    from sim.validation.compare import comparison_rows, target_verdicts

    def summary(thr, p50, p99):
        return {"throughput_rps": thr, "latency_ms": {"p50": p50, "p99": p99}}

    live = [summary(100, 20, 50), summary(100, 22, 70), summary(99, 30, 60)]
    sims = {
        "sim": [summary(101, 21, 58), summary(102, 23, 62), summary(101, 40, 61)],
        "sim_raw_profile": [summary(100, 20, 40)],
    }
    rows = {r["metric"]: r for r in comparison_rows(live, sims)}
    p50 = rows["latency_p50_ms"]
    assert p50["live"] == 22 and p50["live_runs"] == [20, 22, 30]
    assert p50["live_spread"] == pytest.approx(10 / 22)
    assert p50["sim"] == 23 and p50["sim_draws"] == [21, 23, 40]
    assert p50["sim_error"] == pytest.approx(1 / 22)
    assert p50["sim_raw_profile_error"] == pytest.approx(-2 / 22)
    assert rows["latency_mean_ms"]["live"] is None  # not in these summaries: no NaN
    assert "robots_stall_fraction" not in rows  # robot figures for robot runs only
    verdicts = target_verdicts(list(rows.values()))
    assert verdicts["latency_p50_ms"]["met"] and verdicts["latency_p50_ms"]["inside_live_range"]
    p99 = verdicts["latency_p99_ms"]  # 61 vs 60: +1.7%, inside 50..70
    assert p99["met"] and p99["inside_live_range"]
    assert (
        verdicts["throughput_rps"]["met"]
        and verdicts["throughput_rps"]["inside_live_range"] is False
    )


SHIPPED_RECORDS = ROOT / "recorded" / "serve-observe-cpu" / "observed-1"


@pytest.mark.parametrize(
    "override, words",
    [
        ("workload.count=4", ["workload.count 8", "has 4"]),
        ("workload.execute=50", ["workload.execute 10", "has 50"]),
        ("workload.chunk=100", ["workload.chunk 50", "has 100"]),
        ("workload.control_hz=30", ["workload.control_hz 50.0", "has 30.0"]),
        ("workload.mode=async", ["workload.mode sync", "has async"]),
        ("model.cameras=3", ["model.cameras 1", "has 3"]),
        ("workload={kind: poisson, rate_rps: 50}", ["workload.kind robots", "has poisson"]),
    ],
)
def test_validate_records_refuses_records_of_another_fleet(tmp_path, override, words):
    """The shipped 8-robot records (10 of 50 actions at 50 Hz, one camera) name the
    scenario they were made with; against another fleet: one line naming the field and
    both values, exit 2, nothing written."""
    result = run_cli(
        "validate", str(ROOT / "scenarios" / "serve-observe-cpu.yaml"), "--records",
        str(SHIPPED_RECORDS), "--set", override, "--out", str(tmp_path / "v"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
    assert "made with" in lines[0] and str(SHIPPED_RECORDS) in lines[0]
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize(
    "override, words",
    [
        ("workload.count=4", ["workload.count", "8 robots (distinct sources)", "has 4"]),
        ("workload.execute=50", ["workload.control_hz", "send every", "1000 ms of actions"]),
    ],
)
def test_records_without_their_scenario_are_checked_by_what_they_hold(tmp_path, override, words):
    """The same records without scenario.yaml (as a user's log would come): the robots are
    counted by distinct sources, and sync robots' send intervals checked against execute /
    control_hz."""
    import shutil

    folder = tmp_path / "records"
    shutil.copytree(SHIPPED_RECORDS, folder)
    (folder / "scenario.yaml").unlink()
    result = run_cli(
        "validate", str(ROOT / "scenarios" / "serve-observe-cpu.yaml"), "--records",
        str(folder), "--set", override, "--out", str(tmp_path / "v"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
