"""recommend as a fleet engineer meets it (issue 19): a line per probe, probes kept and
reused with --out, infeasibility explained and found early, replica probing that stops,
and the phase-locking warning."""

from __future__ import annotations

import json

from tests.conftest import ROOT, run_cli

FLEET = str(ROOT / "scenarios" / "aloha-pi0-fleet.yaml")
FLEET40 = ["--set", "workload.count=40", "--set", "duration_s=60", "--set", "cluster.replicas=1"]


def test_a_slo_below_the_batch_1_floor_is_refused_with_the_numbers():
    """The issue's fleet: 40 sync robots, 50 Hz, 25 of 50 actions, 3 cameras, stall <= 5%.
    5% of 500 ms of motion allows 26.3 ms per round trip; the fastest batch is 25.2 ms and
    the network 4 ms, so no replica count can do it: said at once, no probe run."""
    done = run_cli("recommend", FLEET, "--slo", "stall<=0.05", "--objective", "min-replicas",
                   "--space", "policy.max_batch=1,8", *FLEET40)  # fmt: skip
    assert done.returncode == 3, done.stderr  # no configuration meets the SLO
    assert "probe " not in done.stderr
    assert "allows 26.3 ms per round trip" in done.stderr
    assert "fastest batch 25.2 ms + 4 ms of network" in done.stderr
    # the reason once, for both configurations, and what was tried: nothing
    assert done.stderr.count("cannot be met") == 1
    assert "infeasible policy.max_batch=1, policy.max_batch=8: refused before" in done.stdout
    assert "cannot be met" not in done.stdout
    assert "each was refused before any probe" in done.stdout


def test_probes_stream_are_kept_and_a_rerun_reuses_them(tmp_path):
    argv = ["recommend", str(ROOT / "scenarios" / "quickstart.yaml"), "--slo", "p99_ms<=100",
            "--space", "policy.max_wait_ms=0,5", "--set", "duration_s=30", "--replications", "1",
            "--out", str(tmp_path / "r")]  # fmt: skip
    first = run_cli(*argv)
    assert first.returncode == 0, first.stderr
    probes = [line for line in first.stderr.splitlines() if line.startswith("probe ")]
    report = json.loads((tmp_path / "r" / "recommend.json").read_text())
    assert len(probes) == sum(c["probes"] for c in report["frontier"]) > 4
    verdicts = ("pass", "FAIL", "uncertain")
    assert all("p99_ms " in line and any(v in line for v in verdicts) for line in probes)
    assert "p99_ms<=100" in first.stdout.splitlines()[2]  # the constrained metric is a column
    again = run_cli(*argv)
    reused = [line for line in again.stderr.splitlines() if line.startswith("probe ")]
    assert len(reused) == len(probes) and all(line.endswith("(saved)") for line in reused)
    assert (
        json.loads((tmp_path / "r" / "recommend.json").read_text())["frontier"]
        == report["frontier"]
    )
    other = run_cli(*argv[:-2], "--slo", "p99_ms<=90", "--out", str(tmp_path / "r"))
    assert other.returncode == 2 and "probes of a different search" in other.stderr


def test_infeasible_is_explained_replicas_stop_and_phase_locking_is_warned(tmp_path):
    """max_batch 8 with jitter 0: the robots phase-lock, and more replicas make the stall
    worse (0.12 at 1, 0.14 at 2 and 4): the search stops at 4, says how close it came and
    which term failed, and warns that 1 ms of jitter changes the answer."""
    done = run_cli("recommend", FLEET, "--slo", "stall<=0.1", "--objective", "min-replicas",
                   "--space", "policy.max_batch=1,8", *FLEET40, "--set", "workload.jitter_ms=0",
                   "--out", str(tmp_path / "r"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r" / "recommend.json").read_text())
    bad = next(c for c in report["frontier"] if c["config"] == {"policy.max_batch": 8})
    assert not bad["feasible"] and bad["probes"] <= 4  # 1, 2, 4: not on to 256
    assert bad["closest"]["failed"] == ["stall<=0.1"] and bad["closest"]["load"] == 1
    assert "stopped helping" in bad["why"]
    assert "infeasible policy.max_batch=8: closest at cluster.replicas=1: stall 0.12" in done.stdout
    assert "phase-lock" in done.stderr and report["warnings"]


def test_policies_are_a_search_dimension_with_short_labels(tmp_path):
    """--space/--grid policy=@a.yaml,@b.yaml (or inline mappings) compares whole policy
    sections, whatever keys each kind has, labelled "kind key=value" in every table."""
    (tmp_path / "dynamic.yaml").write_text("{kind: dynamic, max_batch: 16, max_wait_ms: 5}\n")
    (tmp_path / "deadline.yaml").write_text("kind: deadline\nmax_batch: 32\n")
    quick = str(ROOT / "scenarios" / "quickstart.yaml")
    done = run_cli("recommend", quick, "--slo", "attainment>=0.9", "--space",
                   "policy=@dynamic.yaml,@deadline.yaml", "--set", "duration_s=30",
                   "--replications", "1", "--workers", "1", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| dynamic max_batch=16 max_wait_ms=5 |" in done.stdout
    assert "| deadline max_batch=32" in done.stdout
    assert "probe policy=deadline max_batch=32 workload.rate_rps=" in done.stderr
    swept = run_cli("sweep", quick, "--grid",
                    "policy={kind: static, batch_size: 8, timeout_ms: 20},@deadline.yaml",
                    "--set", "duration_s=20", "--workers", "1", "--out", str(tmp_path / "sw"),
                    cwd=tmp_path)  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert "| static batch_size=8 timeout_ms=20 |" in swept.stdout
    import pandas as pd

    labels = set(pd.read_parquet(tmp_path / "sw" / "results.parquet")["grid.policy"])
    assert labels == {"static batch_size=8 timeout_ms=20", "deadline max_batch=32"}


def test_exact_ties_rank_in_the_order_the_configurations_were_listed():
    """max_batch 1 runs alike at every max_wait: the same load and p99. Dask hands results
    back in the order workers finish, so the winner used to change from run to run."""
    from sim.experiments.search import Candidate, Evaluation, Recommender

    search = Recommender(
        ROOT / "scenarios" / "quickstart.yaml",
        ["p99_ms<=100"],
        space=["policy.max_wait_ms=0,2,5"],
    )
    same = {"latency_p99_ms": (40.0, 39.0, 41.0)}
    finished = [
        Candidate(config, Evaluation(300.0, True, same)) for config in reversed(search.configs)
    ]
    ranked = search.rank(finished)
    assert [c.config for c in ranked] == search.configs


PRICED = ["--set", "duration_s=30", "--set", "cost={gpu_hour_usd: {h100: 2.5, l40s: 1.1}}"]
TWO_GPUS = (
    "profile.path=../profiles/h100/pi0-cudagraph.csv,../profiles/estimated/l40s-pi0-cudagraph.csv"
)


def test_min_cost_picks_the_cheaper_feasible_fleet_each_priced_by_its_own_gpu(tmp_path):
    """The 24-robot ALOHA fleet on the measured H100 ($2.50/h) and the estimated L40S
    ($1.10/h): both need one replica for stall <= 0.4, so the L40S fleet wins on $/h."""
    result = run_cli(
        "recommend", FLEET, *PRICED, "--objective", "min-cost", "--slo", "stall<=0.4",
        "--space", TWO_GPUS, "--out", str(tmp_path / "rec"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "rec" / "recommend.json").read_text())
    feasible = [row for row in report["frontier"] if row["feasible"]]
    per_hour = [row["metrics"]["cost_usd_per_hour"]["mean"] for row in feasible]
    assert per_hour == sorted(per_hour)  # ranked cheapest first
    winner = feasible[0]
    assert "l40s" in winner["config"]["profile.path"]
    assert per_hour[0] == winner["load"] * 1.1
    assert "$/h" in result.stdout and "at $1.10/h" in result.stdout
    assert "J per request" in result.stdout


def test_min_cost_without_prices_is_one_line():
    result = run_cli("recommend", FLEET, "--objective", "min-cost", "--slo", "stall<=0.4")
    assert result.returncode == 2
    assert "min-cost needs prices" in result.stderr and "Traceback" not in result.stderr


def test_min_energy_ranks_by_joules_per_request(tmp_path):
    result = run_cli(
        "recommend", FLEET, *PRICED, "--objective", "min-energy", "--slo", "stall<=0.4",
        "--space", TWO_GPUS, "--out", str(tmp_path / "rec"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "rec" / "recommend.json").read_text())
    joules = [
        row["metrics"]["energy_joules_per_request"]["mean"]
        for row in report["frontier"]
        if row["feasible"]
    ]
    assert len(joules) == 2 and joules == sorted(joules)


def test_the_worst_robots_stall_and_round_trip_percentiles_are_slo_terms(tmp_path):
    """A fleet constrained by its worst robot's stall and its p99 round trip: the search
    runs, and the frontier shows both constrained figures."""
    result = run_cli(
        "recommend", FLEET, "--objective", "min-replicas", "--slo", "stall_max<=0.3",
        "--slo", "round_trip_p99_ms<=120", "--set", "duration_s=30", "--replications", "1",
        "--out", str(tmp_path / "rec"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "rec" / "recommend.json").read_text())
    best = report["frontier"][0]
    assert best["feasible"]
    assert best["metrics"]["robots_stall_fraction_max"]["mean"] <= 0.3
    assert best["metrics"]["robots_round_trip_p99_ms"]["mean"] <= 120
    assert "stall_max<=0.3" in result.stdout and "round_trip_p99_ms<=120" in result.stdout


def test_nothing_feasible_after_probes_exits_3_and_says_what_was_tried(tmp_path):
    result = run_cli(
        "recommend", FLEET, "--objective", "min-replicas", "--slo", "stall<=0.06",
        "--set", "duration_s=20", "--replications", "1",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert (
        "no configuration is shown to meet stall<=0.06 at the cluster.replicas tried (1 to"
        in result.stdout
    )
