"""The metrics registry: one name, path and unit per figure of summary.json, which the CLI
table, sweeps, recommend's SLO terms and validate's rows all read through."""

from __future__ import annotations

import pytest

from sim.config import load
from sim.engine.pipeline import simulate, summarise
from sim.experiments.search import SloTerm
from sim.metrics.registry import METRICS, REGISTRY, SLO_NAMES, flatten, metric_value
from sim.validation.compare import COMPARED
from tests.conftest import ROOT


def summary_of(name: str, **overrides) -> dict:
    loaded = load(ROOT / "scenarios" / f"{name}.yaml", {"duration_s": 30, **overrides})
    return summarise(loaded, simulate(loaded))


STEP_LEVEL = ("batch_admitted_mean", "steps_mean", "steps_degraded_share")


def test_every_metric_is_where_the_registry_says():
    open_loop, fleet = summary_of("quickstart"), summary_of("lerobot-async-fleet")
    stalling = summary_of("aloha-pi0-fleet")  # the async fleet never freezes
    staged = summary_of("pi0-continuous", **{"policy.min_steps": 4})
    priced = summary_of("aloha-pi0-fleet", cost={"gpu_hour_usd": 2.5})
    rtc = summary_of("rtc-pi0-fleet")
    for metric in REGISTRY:
        summary = fleet if metric.name.startswith("robots_") else open_loop
        if metric.name.startswith("robots_rtc_"):
            assert metric_value(fleet, metric.name) is None  # real-time chunking robots only
            summary = rtc
        if metric.name.startswith(("cost_", "energy_")):
            summary = priced  # a price only where the scenario gives one
        if metric.name == "robots_stall_episode_mean_ms":
            assert metric_value(fleet, metric.name) is None  # no freeze, no mean
            summary = stalling
        if metric.name in STEP_LEVEL:
            assert metric_value(open_loop, metric.name) is None  # request level, K steps
            summary = staged
        assert metric_value(summary, metric.name) is not None, metric.name
    assert metric_value(open_loop, "robots_stall_fraction") is None  # not a fleet
    assert flatten(open_loop)["latency_p99_ms"] == open_loop["latency_ms"]["p99"]
    assert flatten(fleet)["robots_round_trip_p50_ms"] == fleet["robots"]["round_trip_ms"]["p50"]


def test_names_are_unique_and_carry_their_unit():
    assert len(METRICS) == len(REGISTRY)
    for metric in REGISTRY:
        if metric.unit == "ms":
            assert metric.name.endswith("_ms"), metric.name
        if metric.unit == "requests/s":
            assert metric.name.endswith("_rps"), metric.name
        if metric.unit == "Hz":
            assert metric.name.endswith("_hz"), metric.name


@pytest.mark.parametrize(
    "slo, metric",
    [
        ("mean_ms", "latency_mean_ms"),
        ("p50_ms", "latency_p50_ms"),
        ("p90_ms", "latency_p90_ms"),
        ("p99_ms", "latency_p99_ms"),
        ("queue_p99_ms", "queue_delay_p99_ms"),
        ("attainment", "slo_attainment"),
        ("stall", "robots_stall_fraction"),
        ("miss_rate", "robots_deadline_miss_rate"),
        ("control_rate", "robots_control_rate_ratio"),
    ],
)
def test_every_slo_name_recommend_knew_still_works(slo, metric):
    assert SLO_NAMES[slo] == metric
    assert SloTerm.parse(f"{slo}<=1").metric == metric


def test_validate_and_the_sweep_columns_come_from_the_registry():
    assert set(COMPARED) <= set(METRICS)
    from sim.experiments.sweep import run_point

    row = run_point(
        {
            "duration_s": 5,
            "profile": {"batch_size": [1, 8], "latency_ms": [5, 9]},
            "workload": {"kind": "poisson", "rate_rps": 50},
            "policy": {"kind": "dynamic", "max_batch": 8},
        },
        str(ROOT),
        {},
        seed=1,
    )
    assert set(METRICS) <= set(row)


def test_every_invariant_names_tests_that_exist():
    """docs/semantics.md names each invariant's test; those tests must exist."""
    import re

    text = (ROOT / "docs" / "semantics.md").read_text()
    table = text[text.index("## Invariants") :]
    sources = "".join(p.read_text() for p in (ROOT / "tests").glob("*.py"))
    names = set(re.findall(r"`((?:test_|check_|follows_|admission_)[a-z_*]+)`", table))
    assert len(names) >= 8
    for name in names:
        pattern = name.replace("*", "[a-z_]*")
        assert re.search(rf"def {pattern}\(", sources), name
    assert [f"INV-{k}" for k in range(1, 14)] == re.findall(r"INV-\d+", table)[:13]


def test_the_readmes_list_of_slo_terms_is_the_registrys():
    """README's `--slo` list is the registry's short names, every one of them, in order."""
    import re

    text = (ROOT / "README.md").read_text()
    listed = re.search(r"`--slo` terms, as sim/metrics/registry\.py names them: (.*?);", text, re.S)
    assert listed is not None
    names = [n.strip() for n in " ".join(listed.group(1).split()).split(",")]
    assert names == list(SLO_NAMES)


@pytest.mark.parametrize(
    "term, metric",
    [
        ("stall_max<=0.2", "robots_stall_fraction_max"),
        ("round_trip_p99_ms<=80", "robots_round_trip_p99_ms"),
        ("round_trip_p50_ms<=40", "robots_round_trip_p50_ms"),
        ("latency_p95_ms<=100", "latency_p95_ms"),  # a full registry name
        ("utilization_mean<=0.9", "utilization_mean"),
    ],
)
def test_every_registry_metric_can_be_an_slo_term(term, metric):
    assert SloTerm.parse(term).metric == metric
