"""Service after idle: a profile with idle_ms levels, and each batch drawn from the level
its replica's idle time reached."""

from __future__ import annotations

import numpy as np
import pytest

from sim.config import load
from sim.engine.pipeline import simulate
from sim.errors import InputError
from sim.profiles import store


@pytest.fixture
def idle_csv(tmp_path):
    path = tmp_path / "idle.csv"
    # flat in batch size: 10 ms back to back, 12 ms after 5 ms idle, 15 ms after 50 ms
    path.write_text(
        "batch_size,latency_ms,idle_ms,rep\n"
        "1,10,0,0\n8,10,0,0\n1,12,5,0\n8,12,5,0\n1,15,50,0\n8,15,50,0\n"
    )
    return path


def scenario(idle_csv, **extra):
    data = {
        "seed": 5,
        "duration_s": 60,
        "profile": str(idle_csv),
        "workload": {"kind": "poisson", "rate_rps": 40},
        "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 0},
        **extra,
    }
    return load(data)


def test_each_batch_costs_the_level_its_idle_time_reached(idle_csv):
    loaded = scenario(idle_csv)
    assert sorted(loaded.after_idle) == [0.0, 0.005, 0.05]
    assert loaded.profile.latency_ms(4) == 10  # plans and checks: back to back
    rec = simulate(loaded)
    service_ms = (rec.batch_end_s - rec.batch_start_s) * 1000
    idle_ms = np.r_[np.inf, (rec.batch_start_s[1:] - rec.batch_end_s[:-1]) * 1000]
    expected = np.where(idle_ms >= 50, 15.0, np.where(idle_ms >= 5, 12.0, 10.0))
    np.testing.assert_allclose(service_ms, expected, rtol=0, atol=1e-9)
    # all three levels occur at this load, the first batch after no batch at the largest
    assert set(np.round(service_ms, 6)) == {10.0, 12.0, 15.0} and service_ms[0] == 15.0


def test_replicas_keep_their_own_idle_time(idle_csv):
    rec = simulate(scenario(idle_csv, cluster={"replicas": 3}))
    service_ms = (rec.batch_end_s - rec.batch_start_s) * 1000
    for replica in range(3):
        mine = rec.batch_replica == replica
        start, end = rec.batch_start_s[mine], rec.batch_end_s[mine]
        idle_ms = np.r_[np.inf, (start[1:] - end[:-1]) * 1000]
        expected = np.where(idle_ms >= 50, 15.0, np.where(idle_ms >= 5, 12.0, 10.0))
        np.testing.assert_allclose(service_ms[mine], expected, rtol=0, atol=1e-9)


def test_choosing_one_level_turns_the_model_off(idle_csv):
    loaded = scenario(idle_csv, profile={"path": str(idle_csv), "idle_ms": 5})
    assert loaded.after_idle is None and loaded.profile.latency_ms(1) == 12
    rec = simulate(loaded)
    np.testing.assert_allclose((rec.batch_end_s - rec.batch_start_s) * 1000, 12.0)


def test_a_level_is_picked_by_number_whatever_its_spelling(tmp_path):
    # profiles written by batchsim store levels as floats (0.0); idle_ms: 0 must pick them
    path = tmp_path / "floats.csv"
    path.write_text("batch_size,latency_ms,idle_ms\n1,10,0.0\n8,10,0.0\n1,12,10.0\n8,12,10.0\n")
    for value, expected in ((0, 10), (0.0, 10), (10, 12)):
        loaded = scenario(path, profile={"path": str(path), "idle_ms": value})
        assert loaded.profile.latency_ms(1) == expected
    with pytest.raises(InputError, match=r"no rows with idle_ms=3 \(values present: 0.0, 10.0\)"):
        scenario(path, profile={"path": str(path), "idle_ms": 3})


def test_idle_levels_round_trip_through_a_frame(idle_csv, tmp_path):
    levels = _idle_levels(idle_csv)
    out = tmp_path / "again.csv"
    store.write_levels(levels, out)
    again = _idle_levels(out)
    assert sorted(again) == sorted(levels)
    assert all(again[k].latency_ms(8) == levels[k].latency_ms(8) for k in levels)


def test_bad_idle_levels_are_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("batch_size,latency_ms,idle_ms\n1,10,0\n1,12,-5\n")
    with pytest.raises(InputError, match="idle_ms must hold finite numbers >= 0"):
        scenario(bad)
    uneven = tmp_path / "uneven.csv"
    uneven.write_text("batch_size,latency_ms,idle_ms\n1,10,0\n8,10,0\n1,12,50\n")
    with pytest.raises(InputError, match=r"idle_ms 50 measured batch sizes \[1\]"):
        scenario(uneven)
    shaped = tmp_path / "shaped.csv"
    shaped.write_text("batch_size,latency_ms,idle_ms,cameras\n1,10,0,1\n1,12,50,1\n")
    with pytest.raises(InputError, match="shape-aware profile with several idle_ms levels"):
        scenario(shaped, profile={"path": str(shaped), "shape": "cameras"})


def _idle_levels(path, select=None):
    """A profile CSV's idle levels (seconds -> profile), as the loader reads them."""
    return store.by_idle_level(store.read_table(path), select)
