"""The noise-aware verdict functions give known answers on synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest

from sim.validation.verdict import indistinguishable, ks, live_spread, tost


def test_leave_one_out_errors_by_hand():
    # runs 100, 110, 90: medians of the others 100, 95, 105
    spread = live_spread([100, 110, 90])
    assert spread.errors == pytest.approx((0.0, 110 / 95 - 1, 90 / 105 - 1))
    assert spread.spread == pytest.approx(110 / 95 - 1)
    with pytest.raises(ValueError):
        live_spread([1.0])


def test_a_prediction_within_the_runs_spread_is_indistinguishable():
    runs = [100, 110, 90]  # median 100, spread 15.8%
    assert indistinguishable(112, runs)["indistinguishable"]
    far = indistinguishable(120, runs)
    assert not far["indistinguishable"] and far["error"] == pytest.approx(0.2)
    # identical runs leave no room at all
    assert not indistinguishable(100.5, [100, 100, 100])["indistinguishable"]


def test_tost_finds_equal_means_equivalent_and_shifted_ones_not():
    rng = np.random.default_rng(0)
    live = rng.normal(100, 5, 2000)
    same = rng.normal(100, 5, 2000)
    assert tost(same, live, margin=0.02)["equivalent"]
    shifted = rng.normal(110, 5, 2000)  # 10% off, beyond a 5% margin
    assert not tost(shifted, live, margin=0.05)["equivalent"]
    few = rng.normal(100, 5, 5)  # too few samples to show equivalence within 1%
    assert not tost(few, live, margin=0.01)["equivalent"]


def test_ks_is_zero_for_the_same_sample_and_one_for_disjoint_ones():
    x = np.arange(100.0)
    assert ks(x, x)["statistic"] == 0.0
    assert ks(x, x + 1000)["statistic"] == 1.0
