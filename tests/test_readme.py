"""Every scenario figure the README quotes is what the shipped scenario gives now.

Each row names a shipped scenario, the figure, how the README prints it, and the words
around it there; the README's whitespace is collapsed first (its lines wrap anywhere).
A change that moves a figure fails here until the README says the new one.
"""

from __future__ import annotations

import re
from functools import cache

import pytest

from sim.config import load
from sim.engine.pipeline import simulate, summarise
from tests.conftest import ROOT

README = re.sub(r"\s+", " ", (ROOT / "README.md").read_text())


@cache
def summary(name: str) -> dict:
    loaded = load(ROOT / "scenarios" / f"{name}.yaml")
    return summarise(loaded, simulate(loaded))


def figure(name: str, path: str) -> float:
    value = summary(name)
    for key in path.split("."):
        value = value[key]
    return value


# (scenario, figure's path in summary.json, format, the README's words with {} for it)
QUOTED = [
    ("quickstart", "requests.arrived", "{:,}", "│ {} arrived,"),
    ("quickstart", "latency_ms.p99", "{:.2f}", "p99 {} max"),
    ("quickstart", "slo.attainment", "{:.2%}", "SLO attainment (<= 100 ms) │ {} ```"),
    ("static-padded", "latency_ms.p99", "{:.0f}", "20 ms timeout: p99 {} ms vs"),
    ("quickstart", "latency_ms.p99", "{:.0f}", "p99 112 ms vs {} ms"),
    ("dispatch-round-robin", "latency_ms.mean", "{:.0f}", "mean latency {} ms round-robin"),
    ("dispatch-shortest-queue", "latency_ms.mean", "{:.0f}", "round-robin, {} shortest-queue"),
    ("dispatch-least-work", "latency_ms.mean", "{:.0f}", "shortest-queue, {} least-work"),
    ("dispatch-power-of-two", "latency_ms.mean", "{:.0f}", "least-work, {} power-of-two |"),
    ("dispatch-shortest-queue", "latency_ms.mean", "{:.0f}", "mean latency {} ms shortest-queue,"),
    ("dispatch-round-robin", "latency_ms.mean", "{:.0f}", "power-of-two, {} round-robin, and"),
    ("dispatch-shortest-queue", "latency_ms.p50", "{:.0f}", "p50 {} ms shortest-queue against"),
    ("dispatch-round-robin", "latency_ms.p50", "{:.0f}", "against {} round-robin."),
    ("lazy-sanity", "latency_ms.mean", "{:.0f}", "mean latency {} ms vs 51"),
    ("quickstart", "latency_ms.mean", "{:.0f}", "mean latency 76 ms vs {},"),
    ("lazy-sanity", "latency_ms.p99", "{:.0f}", "p99 {} vs 94,"),
    ("lazy-sanity", "slo.attainment", "{:.1%}", "SLO attainment {} vs 99.4%"),
    ("quickstart", "slo.attainment", "{:.1%}", "SLO attainment 90.1% vs {} |"),
]


@pytest.mark.parametrize(("name", "path", "fmt", "words"), QUOTED)
def test_the_readme_quotes_what_the_shipped_scenario_gives(name, path, fmt, words):
    quoted = words.format(fmt.format(figure(name, path)))
    assert quoted in README, f"README should say {quoted!r} ({name}: {path})"
