"""Open-loop arrival processes against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sim.errors import InputError
from sim.workload import (
    gamma_arrivals,
    mmpp_arrivals,
    periodic_arrivals,
    poisson_arrivals,
    trace_arrivals,
)
from sim.workload.open import staggered_phases_s


def rng(seed=0):
    return np.random.default_rng(seed)


def test_poisson_rate_and_exponential_gaps():
    a = poisson_arrivals(rng(1), 200.0, count=100_000)
    assert len(a) == 100_000
    gaps = np.diff(a.time_s)
    assert np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1 / 200.0, rel=0.01)
    assert stats.kstest(gaps, "expon", args=(0, 1 / 200.0)).pvalue > 0.01


def test_duration_mode_stops_at_the_horizon():
    a = poisson_arrivals(rng(2), 1000.0, duration_s=30.0)
    assert a.time_s.max() < 30.0
    assert len(a) == pytest.approx(30_000, rel=0.03)


def test_gamma_gaps_have_the_requested_cv():
    a = gamma_arrivals(rng(3), 100.0, 2.5, count=200_000)
    gaps = np.diff(a.time_s)
    assert gaps.mean() == pytest.approx(0.01, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(2.5, rel=0.03)


def test_periodic_staggered_is_exact_without_jitter():
    phases = staggered_phases_s(4, 10.0, "staggered", rng())
    a = periodic_arrivals(rng(), 4, 10.0, phases, duration_s=1.0)
    assert len(a) == 40
    assert np.allclose(np.diff(a.time_s), 0.025)
    assert a.source[:4].tolist() == [0, 1, 2, 3]


def test_periodic_synchronized_and_explicit_phases():
    phases = staggered_phases_s(3, 20.0, "synchronized", rng())
    a = periodic_arrivals(rng(), 3, 20.0, phases, count=9)
    assert a.time_s.tolist() == pytest.approx([0, 0, 0, 0.05, 0.05, 0.05, 0.1, 0.1, 0.1])
    b = periodic_arrivals(rng(), 2, 10.0, [0.0, 0.0043], count=4)
    assert b.time_s.tolist() == pytest.approx([0.0, 0.0043, 0.1, 0.1043])
    r = staggered_phases_s(1000, 10.0, "random", rng(4))
    assert r.min() >= 0 and r.max() < 0.1


def test_periodic_jitter_perturbs_each_send():
    phases = staggered_phases_s(1, 100.0, "synchronized", rng())
    a = periodic_arrivals(rng(5), 1, 100.0, phases, jitter_s=0.001, count=20_000)
    offsets = a.time_s - np.round(a.time_s / 0.01) * 0.01
    assert offsets.std() == pytest.approx(0.001, rel=0.05)


def test_mmpp_long_run_rate_and_burstiness():
    rates, means = [40.0, 400.0], [2.0, 0.5]
    a = mmpp_arrivals(rng(6), rates, means, duration_s=4000.0)
    expected = (40 * 2 + 400 * 0.5) / 2.5
    assert len(a) / 4000.0 == pytest.approx(expected, rel=0.03)
    counts = np.bincount(a.time_s.astype(int))  # per second
    assert counts.var() / counts.mean() > 5  # far burstier than Poisson (index of dispersion 1)


def test_generators_are_deterministic_under_a_seed():
    a = mmpp_arrivals(rng(7), [10.0, 100.0, 0.0], [1.0, 0.3, 0.5], count=5000)
    b = mmpp_arrivals(rng(7), [10.0, 100.0, 0.0], [1.0, 0.3, 0.5], count=5000)
    assert np.array_equal(a.time_s, b.time_s)
    assert len(a) == 5000


def test_trace_is_sorted_with_named_sources(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,robot\n0.3,b\n0.1,a\n0.2,b\n5.0,a\n")
    a = trace_arrivals(path, source_column="robot", duration_s=1.0)
    assert a.time_s.tolist() == [0.1, 0.2, 0.3]
    assert [a.source_names[s] for s in a.source] == ["a", "b", "b"]
    with pytest.raises(InputError, match="asks for requests: 10"):
        trace_arrivals(path, count=10)


@pytest.mark.parametrize("mean_s", [1e9, 1e300])
def test_mmpp_with_sojourns_far_past_the_horizon_draws_only_what_the_run_uses(mean_s):
    """A state held for ages (mean_s 1e9 s) used to draw all of its arrivals at once (13.8
    GiB for 5 s of traffic); only the horizon's part, or the first `count`, is drawn."""
    from sim.workload.open import mmpp_arrivals

    rng = np.random.default_rng(3)
    by_time = mmpp_arrivals(rng, [50.0, 50.0], [mean_s, mean_s], duration_s=100.0)
    assert abs(len(by_time) - 5000) < 5 * np.sqrt(5000)  # Poisson(rate x duration)
    assert np.all(np.diff(by_time.time_s) >= 0) and by_time.time_s[-1] < 100.0
    by_count = mmpp_arrivals(rng, [50.0, 50.0], [mean_s, mean_s], count=777)
    assert len(by_count) == 777 and np.all(np.diff(by_count.time_s) >= 0)


def test_network_ms_null_means_no_network():
    """`null` is accepted wherever "none" is meant: workload.network_ms=null is the same run
    as zero delays (it was a pydantic-style refusal)."""
    import sim
    from tests.conftest import ROOT

    fleet = ROOT / "scenarios" / "aloha-pi0-fleet.yaml"
    none = sim.run(fleet, ["duration_s=20", "workload.network_ms=null"]).summary
    zero = sim.run(
        fleet, ["duration_s=20", "workload.network_ms={uplink: 0, downlink: 0, jitter: 0}"]
    ).summary
    assert none["robots"] == zero["robots"] and none["latency_ms"] == zero["latency_ms"]
