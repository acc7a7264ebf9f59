"""Profiles: loading, interpolation, sampling, the refusal to extrapolate, shipped data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.errors import InputError
from sim.profiles import store
from sim.profiles.profile import Profile
from tests.conftest import ROOT


def test_deterministic_profile_interpolates_linearly():
    p = Profile.from_samples({1: 10.0, 4: 16.0, 8: 40.0})
    assert p.deterministic
    assert [p.latency_ms(b) for b in range(1, 9)] == pytest.approx([10, 12, 14, 16, 22, 28, 34, 40])
    sampler = p.sampler(np.random.default_rng(0))
    assert sampler(3) == pytest.approx(0.014)
    assert sampler(8) == pytest.approx(0.040)


@pytest.mark.parametrize("size", [0, 9, 64])
def test_sizes_outside_the_measured_range_are_refused(size):
    p = Profile.from_samples({1: 10.0, 8: 40.0})
    with pytest.raises(InputError, match="never extrapolated"):
        p.latency_ms(size)


def test_measured_size_draws_uniformly_from_its_samples():
    p = Profile.from_samples({1: [10.0, 20.0, 30.0, 40.0]})
    sampler = p.sampler(np.random.default_rng(1))
    draws = np.array([sampler(1) for _ in range(40_000)]) * 1000
    values, counts = np.unique(np.round(draws, 9), return_counts=True)
    assert values.tolist() == [10.0, 20.0, 30.0, 40.0]
    assert np.allclose(counts / counts.sum(), 0.25, atol=0.01)


def test_interpolated_size_blends_quantiles_and_keeps_order():
    rng = np.random.default_rng(2)
    low = rng.normal(20, 2, 500)
    high = rng.normal(60, 5, 300)
    p = Profile.from_samples({2: low, 6: high})
    sampler = p.sampler(np.random.default_rng(3))
    draws = np.array([sampler(4) for _ in range(50_000)]) * 1000
    # the mean is the average of the neighbours' means (w = 0.5), and so is E[S^2]'s blend
    assert draws.mean() == pytest.approx(p.mean_ms(4), rel=0.005)
    assert p.mean_ms(4) == pytest.approx((low.mean() + high.mean()) / 2)
    assert np.mean(draws**2) == pytest.approx(p.second_moment_ms2(4), rel=0.01)
    # every quantile lies between the neighbours' quantiles
    for q in (0.05, 0.5, 0.95):
        assert np.quantile(low, q) < np.quantile(draws, q) < np.quantile(high, q)


def test_csv_round_trip_keeps_samples_memory_and_provenance(tmp_path):
    p = Profile.from_samples(
        {1: [10.0, 11.0], 4: [20.0, 22.0, 21.0]},
        peak_mem_mb={1: 100.0, 4: 250.0},
        provenance={"device": "test"},
    )
    store.write(p, tmp_path / "x.csv")
    assert json.loads((tmp_path / "x.meta.json").read_text()) == {"device": "test"}
    q = store.read(tmp_path / "x.csv")
    assert q.sizes == (1, 4)
    assert q.samples_ms[1].tolist() == [20.0, 21.0, 22.0]
    assert q.peak_memory_mb(4) == 250.0
    assert q.peak_memory_mb(2) == pytest.approx(150.0)
    assert q.provenance == {"device": "test"}


def test_csv_without_sidecar_loads_with_unknown_provenance(tmp_path):
    (tmp_path / "hand.csv").write_text("batch_size,latency_ms\n1,5\n2,6\n")
    p = store.read(tmp_path / "hand.csv")
    assert p.provenance == {"provenance": "unknown"}
    assert p.peak_mem_mb is None


def test_inline_profile_accepts_values_or_sample_lists():
    p = Profile.from_inline([1, 2, 4], [20, [23, 25], 31])
    assert p.latency_ms(2) == pytest.approx(24.0)
    assert not p.deterministic


# medians of shared/gpu-profiles/README.md, 1 camera
H100_CUDAGRAPH_MEDIANS = {1: 18.2, 2: 22.0, 4: 28.2, 8: 41.7, 16: 70.8, 32: 133.5, 64: 260.6}


def test_shipped_h100_profile_matches_its_published_medians():
    p = store.read(ROOT / "profiles" / "h100" / "pi0-cudagraph.csv", {"cameras": 1})
    assert p.sizes == tuple(H100_CUDAGRAPH_MEDIANS)
    for size, median in H100_CUDAGRAPH_MEDIANS.items():
        assert p.latency_ms(size) == pytest.approx(median, abs=0.06)
    assert p.provenance["gpu"] == "NVIDIA H100 80GB HBM3"
    assert p.provenance["selected"] == {"cameras": 1}
    assert p.peak_memory_mb(64) > p.peak_memory_mb(1)


@pytest.mark.parametrize("path", sorted((ROOT / "profiles").rglob("*.csv")), ids=lambda p: p.name)
def test_every_shipped_profile_loads_with_provenance(path):
    import pandas as pd

    frame = pd.read_csv(path)
    stages = sorted(frame["stage"].unique()) if "stage" in frame else [None]
    for c in sorted(frame["cameras"].unique()):
        for stage in stages:  # a staged profile: each stage on its own
            select = {"cameras": int(c), **({"stage": stage} if stage else {})}
            p = store.read(path, select)
            assert p.min_size == 1 and p.max_size == (
                8 if "small" in path.name else 16 if "tiny" in path.name else 64
            )
            assert {"device", "dtype", "torch", "timing", "date"} <= p.provenance.keys()
    if stages != [None]:
        assert [s["name"] for s in json.loads(path.with_suffix(".meta.json").read_text())["stages"]]


def test_a_profile_file_is_parsed_once_per_content_not_per_mtime(tmp_path):
    """Issue 27, item 3: recommend and sweeps load every configuration; each profile CSV
    is parsed once per distinct content in a process (keyed by its bytes and its
    sidecar's, not a modification time)."""
    import os

    path = tmp_path / "p.csv"
    path.write_text("batch_size,latency_ms\n1,5\n2,6\n")
    first = store.read_table(path)
    assert store.read_table(path) is first  # the same bytes: not parsed again
    assert store.selected(first) is store.selected(store.read_table(path))
    stat = path.stat()
    path.write_text("batch_size,latency_ms\n1,7\n2,9\n")  # same size, same mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = store.read_table(path)
    assert again is not first and store.selected(again).latency_ms(1) == 7.0
    (tmp_path / "p.meta.json").write_text('{"device": "cpu"}')  # a sidecar is content too
    assert store.selected(store.read_table(path)).provenance == {"device": "cpu"}


def test_a_profile_figure_says_measured_or_estimated_in_its_title():
    from sim.api import profile_title

    est = json.loads((ROOT / "profiles/estimated/l40s-pi0-cudagraph.meta.json").read_text())
    assert profile_title("l40s", est) == (
        "l40s: ESTIMATED for the l40s from a measurement on the h100"
    )
    measured = json.loads((ROOT / "profiles/h100/pi0-cudagraph.meta.json").read_text())
    assert profile_title("pi0", measured) == (
        "pi0: measured on NVIDIA H100 80GB HBM3, torch.bfloat16"
    )
