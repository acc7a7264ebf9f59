"""Cost and energy, hand-computed (docs/semantics.md, "Cost and energy").

One periodic source at 10 Hz for 10 s, each request served alone in a fixed 20 ms: 100
batches, 2 s of busy replica time. On one replica the other 8 s are idle; on two, the
second replica idles all 10 s (18 s of idle replica time in all). With idle 50 W and
busy 300 W:
- 1 replica: 300 x 2 + 50 x 8 = 1,000 J; 100 W on average; 10 J per request;
- 2 replicas: 300 x 2 + 50 x 18 = 1,500 J; 150 W; 15 J per request.
At $2.50 per GPU-hour: $2.50/h and $5.00/h; per million requests 2.5 x 10/3600 / 100 x
10^6 = $69.44 and twice that.
"""

from __future__ import annotations

import json

import pytest

import sim
from sim.errors import InputError
from tests.conftest import ROOT

PERIODIC = {
    "name": "cost-hand",
    "seed": 0,
    "duration_s": 10,
    "profile": {"batch_size": [1, 2], "latency_ms": [20, 30]},
    "workload": {"kind": "periodic", "rate_hz": 10},
    "policy": {"kind": "dynamic", "max_batch": 1, "max_wait_ms": 0},
    "power": {"idle_w": 50, "busy_w": 300},
    "cost": {"gpu_hour_usd": 2.5},
}
EXACT = 1e-12  # float sums of 100 batch times: exact but for the last bits


@pytest.mark.parametrize(
    "replicas, joules, watts, per_request, usd_h",
    [(1, 1000.0, 100.0, 10.0, 2.5), (2, 1500.0, 150.0, 15.0, 5.0)],
)
def test_energy_and_cost_by_hand_on_one_and_two_replicas(
    replicas, joules, watts, per_request, usd_h
):
    run = sim.run({**PERIODIC, "cluster": {"replicas": replicas}})
    energy = run.summary["energy"]
    assert run.summary["cost"]["usd_per_gpu_hour"] == 2.5
    assert run.summary["requests"]["completed"] == 100
    assert energy["busy_s"] == pytest.approx(2.0, rel=EXACT)
    assert energy["idle_s"] == pytest.approx(10.0 * replicas - 2.0, rel=EXACT)
    assert energy["joules"] == pytest.approx(joules, rel=EXACT)
    assert run.metric("energy_average_power_w") == pytest.approx(watts, rel=EXACT)
    assert run.metric("energy_joules_per_request") == pytest.approx(per_request, rel=EXACT)
    assert run.metric("cost_usd_per_hour") == usd_h
    per_million = usd_h * 10 / 3600 / 100 * 1e6
    assert run.metric("cost_usd_per_million_requests") == pytest.approx(per_million, rel=EXACT)
    assert run.metric("cost_usd_per_robot_hour") is None  # open loop: no robots
    assert energy["upper_bound"] is False and "scenario" in energy["source"]


def test_measured_power_per_batch_size_is_used_at_each_padded_size(tmp_path):
    """Two synchronized sources: every batch holds 2 requests and runs 30 ms at the
    measured 260 W; the sidecar's measured idle is 80 W. 100 batches: 3 s busy, 7 s idle:
    260 x 3 + 80 x 7 = 1,340 J for 200 requests."""
    csv = tmp_path / "measured.csv"
    csv.write_text("batch_size,latency_ms,power_w\n1,20,200\n2,30,260\n4,50,400\n")
    meta = {"gpu": "NVIDIA H100 80GB HBM3", "power": {"idle_w": 80, "method": "test"}}
    (tmp_path / "measured.meta.json").write_text(json.dumps(meta))
    scenario = {
        **PERIODIC,
        "profile": {"path": str(csv)},
        "workload": {"kind": "periodic", "rate_hz": 10, "sources": 2, "phase": "synchronized"},
        "policy": {"kind": "dynamic", "max_batch": 2, "max_wait_ms": 0},
    }
    del scenario["power"]
    run = sim.run(scenario)
    assert run.metric("batch_size_mean") == 2
    energy = run.summary["energy"]
    assert energy["joules"] == pytest.approx(260 * 3 + 80 * 7, rel=EXACT)
    assert run.metric("energy_joules_per_request") == pytest.approx(1340 / 200, rel=EXACT)
    assert "measured power_w" in energy["source"] and energy["upper_bound"] is False
    # a price per GPU picks the profile's own GPU
    run = sim.run({**scenario, "cost": {"gpu_hour_usd": {"h100": 2.5, "l40s": 1.1}}})
    assert run.summary["cost"]["gpu"] == "h100" and run.metric("cost_usd_per_hour") == 2.5


def test_the_shipped_h100_profile_gets_power_from_the_table_as_an_upper_bound():
    run = sim.run(
        ROOT / "scenarios/aloha-pi0-fleet.yaml",
        ["duration_s=30", "cost={gpu_hour_usd: {h100: 2.5, l40s: 1.1}}"],
    )
    energy = run.summary["energy"]
    assert energy["upper_bound"] is True and energy["idle_w"] == 70.0
    assert energy["busy_w_mean"] == pytest.approx(700.0)
    window = run.summary["window_s"]
    assert energy["joules"] == pytest.approx(
        700 * energy["busy_s"] + 70 * (window - energy["busy_s"])
    )
    robots = run.summary["robots"]["count"]
    assert run.metric("cost_usd_per_robot_hour") == pytest.approx(2.5 / robots)


def test_an_estimated_profile_is_priced_as_its_target_gpu():
    run = sim.run(ROOT / "scenarios/aloha-fleet-estimated-l40s.yaml", ["duration_s=30",
                  "cost={gpu_hour_usd: {h100: 2.5, l40s: 1.1}}"])  # fmt: skip
    assert run.summary["cost"]["gpu"] == "l40s" and run.metric("cost_usd_per_hour") == 1.1
    assert run.summary["energy"]["idle_w"] == 35.0


def test_cpu_and_inline_profiles_have_no_energy_block():
    run = sim.run({**PERIODIC, "power": None})
    assert "energy" not in run.summary and run.metric("energy_joules_per_request") is None
    assert run.summary["cost"]["usd_per_hour"] == 2.5  # a price alone still prices it


@pytest.mark.parametrize(
    "cost, words",
    [
        (
            {"gpu_hour_usd": {"l40s": 1.1}},
            "no price for the profile's GPU 'h100' (prices given: l40s)",
        ),
        ({"gpu_hour_usd": {"tpu": 1.1}}, "'tpu' is not a GPU of the table"),
    ],
)
def test_a_price_mapping_without_the_profiles_gpu_is_one_line(cost, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        sim.load(ROOT / "scenarios/aloha-pi0-fleet.yaml", [f"cost={json.dumps(cost)}"])


def test_a_price_mapping_on_an_inline_profile_is_one_line():
    with pytest.raises(InputError, match="need a profile measured on, or estimated for, a GPU"):
        sim.load({**PERIODIC, "cost": {"gpu_hour_usd": {"h100": 2.5}}})
