"""Staged models: per-stage profiles, step-level (continuous) batching, fewer steps under
load. Hand-computed cases, the invariants of iterations, and hypothesis properties."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import load
from sim.config.checks import memory_mb
from sim.core import invariants as inv
from sim.engine.pipeline import simulate, summarise
from sim.errors import InputError
from sim.profiles.profile import Profile
from sim.profiles.staged import combined

EPS = 1e-9
# the hand-computed case: prefix 10 ms and step 2 ms flat, K = 3
FLAT = {
    "stages": [
        {"name": "prefix", "batch_size": [1, 2], "latency_ms": [10, 10]},
        {"name": "step", "batch_size": [1, 2], "latency_ms": [2, 2], "repeat": 3},
    ]
}
TWO_ARRIVALS = {"kind": "periodic", "sources": 2, "rate_hz": 1, "phases_ms": [0, 5]}


def scenario(profile, policy, workload=TWO_ARRIVALS, **extra):
    data = {"requests": 2, "profile": profile, "workload": workload, "policy": policy}
    return load({**data, **extra})


def latencies_ms(loaded):
    rec = simulate(loaded)
    return list(np.round((rec.request_completion_s - rec.arrival_s) * 1000, 9))


# ---- hand-computed cases --------------------------------------------------------------------
def test_request_level_dynamic_batching_runs_every_stage():
    # request 0 alone at 0: 10 + 3 x 2 = 16; request 1 (at 5) waits for it, runs 16..32: 27
    loaded = scenario(FLAT, {"kind": "dynamic", "max_batch": 2, "max_wait_ms": 0})
    assert latencies_ms(loaded) == [16.0, 27.0]


def test_continuous_batching_admits_into_the_running_loop():
    # it 1 (0..12): admit r0, prefix 10 + step 2; it 2 (12..24): admit r1, 10 + 2, r0 has 2
    # steps; it 3 (24..26): r0's third step, done at 26; it 4 (26..28): r1's third, 28 - 5
    loaded = scenario(FLAT, {"kind": "continuous", "max_batch": 2})
    assert latencies_ms(loaded) == [26.0, 23.0]
    rec = simulate(loaded)
    assert rec.batch_size.tolist() == [1, 2, 2, 1]  # in flight per iteration
    assert rec.batch_admitted.tolist() == [1, 1, 0, 0]
    assert rec.request_last_batch.tolist() == [2, 3]
    summary = summarise(loaded, rec)
    assert summary["batch_size"]["admitted_mean"] == 0.5
    assert summary["steps"] == {"full": 3, "floor": None, "mean": 3.0, "degraded_share": 0.0}


def test_max_admit_caps_the_prefixes_of_one_iteration():
    # both wait at 12 ms behind a 12 ms iteration of a third; max_admit 1 admits one a time
    three = {"kind": "periodic", "sources": 3, "rate_hz": 1, "phases_ms": [0, 1, 2]}
    flat3 = {"stages": [{**stage, "batch_size": [1, 3]} for stage in FLAT["stages"]]}
    policy = {"kind": "continuous", "max_batch": 3, "max_admit": 1}
    capped = scenario(flat3, policy, three, requests=3)
    rec = simulate(capped)
    assert rec.batch_admitted.tolist()[:3] == [1, 1, 1]
    free = load({**capped.raw, "policy": {"kind": "continuous", "max_batch": 3}})
    assert simulate(free).batch_admitted.tolist()[:2] == [1, 2]


def test_a_plain_profile_is_one_stage_and_runs_unchanged():
    flat = {"batch_size": [1, 2], "latency_ms": [16, 16]}
    loaded = scenario(flat, {"kind": "dynamic", "max_batch": 2, "max_wait_ms": 0})
    assert loaded.model.steps == 1 and loaded.model.prefix is None
    assert loaded.steps is None  # no per-request steps: the hot path is the old one
    assert latencies_ms(loaded) == [16.0, 27.0]


def test_a_staged_profile_is_the_sum_of_its_stages_at_every_size():
    # stages measured at different sizes, with different numbers of samples
    rng = np.random.default_rng(3)
    a = Profile.from_samples(
        {1: rng.uniform(5, 6, 7), 4: rng.uniform(8, 9, 5), 8: rng.uniform(12, 13, 3)}
    )
    b = Profile.from_samples(
        {1: rng.uniform(1, 2, 4), 2: rng.uniform(2, 3, 6), 8: rng.uniform(3, 4, 2)}
    )
    whole = combined([(a, 1), (b, 4)], {}, "<test>")
    assert whole.sizes == (1, 2, 4, 8)
    for size in range(1, 9):
        # comonotone: means add, and so do quantiles (the median and the tails)
        assert whole.mean_ms(size) == pytest.approx(a.mean_ms(size) + 4 * b.mean_ms(size))
    for size in (1, 2, 4, 8):
        for u in (0.01, 0.3, 0.77, 0.99):
            drawn = whole.sampler(np.random.default_rng(0)).at(size, u)
            parts = a.sampler(None).at(size, u) + 4 * b.sampler(None).at(size, u)
            assert drawn == pytest.approx(parts)


# ---- one stage: continuous batching is dynamic batching without a wait ----------------------
@pytest.mark.parametrize("workload", ["open", "fleet"])
def test_continuous_on_one_stage_equals_dynamic_without_wait_bit_for_bit(workload):
    profile = {"batch_size": [1, 4, 8], "latency_ms": [[9, 10, 12], [14, 15, 19], [20, 22, 30]]}
    traffic = (
        {"kind": "poisson", "rate_rps": 450}
        if workload == "open"
        else {"kind": "robots", "count": 12, "control_hz": 50, "chunk": 10, "execute": 5,
              "mode": "sync", "network_ms": {"uplink": 1, "jitter": 0.5}}
    )  # fmt: skip
    base = {"seed": 7, "duration_s": 20, "profile": profile, "workload": traffic,
            "cluster": {"replicas": 2}, "slo": {"latency_ms": 40}}  # fmt: skip
    dynamic = simulate(
        load({**base, "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 0}})
    )
    continuous = simulate(load({**base, "policy": {"kind": "continuous", "max_batch": 8}}))
    for name in ("arrival_s", "request_start_s", "request_completion_s", "outcome",
                 "request_batch", "batch_start_s", "batch_end_s", "batch_size", "batch_replica"):  # fmt: skip
        assert np.array_equal(getattr(dynamic, name), getattr(continuous, name), equal_nan=True), (
            name
        )
    assert dynamic.batch_size.size > 500


# ---- invariants of iterations ---------------------------------------------------------------
def check_iterations(rec, max_batch, max_admit=None, stage_ms=None):
    """INV-S1..S5 of docs/semantics.md for a step-level run, through the package's checks
    (sim/core/invariants.py), and on a deterministic model each iteration's cost."""
    inv.iterations_conserve(rec)
    inv.iteration_causality(rec)
    inv.one_batch_per_replica(rec)
    inv.in_flight_counts(rec)
    inv.steps_one_per_iteration(rec)
    inv.iteration_bounds(rec, max_batch, max_admit)
    if stage_ms is not None:  # INV-S5's cost: prefix(admitted) + step(in flight)
        prefix, step = stage_ms
        cost = np.array([(prefix(a) if a else 0.0) + step(b) for a, b in
                         zip(rec.batch_admitted, rec.batch_size, strict=True)]) / 1000  # fmt: skip
        assert np.allclose(rec.batch_end_s - rec.batch_start_s, cost, rtol=1e-12, atol=1e-12)


@st.composite
def staged_profiles(draw):
    top = draw(st.integers(2, 8))
    sizes = sorted({1, top, *draw(st.lists(st.integers(1, top), max_size=3))})
    stages = []
    for i in range(draw(st.integers(1, 3))):
        lat = draw(st.lists(st.floats(0.5, 20), min_size=len(sizes), max_size=len(sizes)))
        stages.append({"name": f"s{i}", "batch_size": sizes, "latency_ms": sorted(lat)})
    stages[-1]["repeat"] = draw(st.integers(1, 5))
    return {"stages": stages}, top


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_inv_s1_to_s5_hold_for_random_iterations(data):
    profile, top = data.draw(staged_profiles())
    max_batch = data.draw(st.integers(1, top))
    max_admit = data.draw(st.none() | st.integers(1, max_batch))
    floor = data.draw(st.none() | st.integers(1, profile["stages"][-1]["repeat"]))
    policy = {
        "kind": "continuous",
        "max_batch": max_batch,
        "max_admit": max_admit,
        "min_steps": floor,
    }
    loaded = load({
        "seed": data.draw(st.integers(0, 1000)), "requests": 300, "profile": profile,
        "workload": {"kind": "poisson", "rate_rps": data.draw(st.floats(20, 2000))},
        "cluster": {"replicas": data.draw(st.integers(1, 2))}, "policy": policy,
        "slo": {"latency_ms": data.draw(st.floats(5, 200))},
    })  # fmt: skip
    rec = simulate(loaded)
    model = loaded.model
    prefix = None if model.prefix is None else model.prefix.profile
    step = model.step.profile
    check_iterations(
        rec,
        max_batch,
        max_admit,
        (lambda a: prefix.latency_ms(a) if prefix else 0.0, step.latency_ms),
    )
    steps = rec.request_steps[rec.request_batch >= 0]
    assert np.all(steps >= (floor or model.steps)) and np.all(steps <= model.steps)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_request_level_batch_costs_the_sum_of_its_stages(data):
    profile, top = data.draw(staged_profiles())
    loaded = load({
        "requests": 200, "profile": profile,
        "workload": {"kind": "poisson", "rate_rps": data.draw(st.floats(20, 2000))},
        "policy": {"kind": "dynamic", "max_batch": data.draw(st.integers(1, top)), "max_wait_ms": 1},
    })  # fmt: skip
    rec = simulate(loaded)
    stages = [(Profile.from_inline(s["batch_size"], s["latency_ms"]), s.get("repeat", 1))
              for s in profile["stages"]]  # fmt: skip
    expected = [sum(r * p.latency_ms(int(b)) for p, r in stages) / 1000 for b in rec.batch_padded]
    assert np.allclose(rec.batch_end_s - rec.batch_start_s, expected, rtol=1e-12, atol=1e-12)


# ---- fewer steps under load -----------------------------------------------------------------
OVERLOADED = {
    "seed": 2, "duration_s": 30, "warmup_s": 2,
    "profile": {"stages": [
        {"name": "prefix", "batch_size": [1, 8], "latency_ms": [[8, 9, 11], [14, 16, 19]]},
        {"name": "step", "batch_size": [1, 8], "latency_ms": [[2, 2.2], [3.5, 4]], "repeat": 10},
    ]},
    "workload": {"kind": "poisson", "rate_rps": 100},
    "slo": {"latency_ms": 60},
}  # fmt: skip


@pytest.mark.parametrize(
    "policy",
    [
        {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 2},
        {"kind": "deadline", "max_batch": 8, "on_miss": "serve"},
        {"kind": "continuous", "max_batch": 8},
    ],
    ids=lambda p: p["kind"],
)
def test_fewer_steps_raise_attainment_and_never_drop_below_the_floor(policy):
    full = summarise(*_run({**OVERLOADED, "policy": policy}))
    loaded, rec = _run({**OVERLOADED, "policy": {**policy, "min_steps": 4}})
    degraded = summarise(loaded, rec)
    served = rec.request_steps[rec.request_batch >= 0]
    assert served.min() >= 4 and served.max() <= 10
    assert degraded["steps"]["degraded_share"] > 0.05
    assert degraded["steps"]["mean"] < 10
    assert degraded["slo"]["attainment"] > full["slo"]["attainment"] + 0.05, (
        full["slo"]["attainment"],
        degraded["slo"]["attainment"],
    )


def _run(data):
    loaded = load(data)
    return loaded, simulate(loaded)


def test_steps_are_lowered_only_when_the_deadline_would_be_missed():
    from sim.core.steps import Steps

    steps = Steps(10, 3)
    assert steps.choose(0.0, 0.030, 0.010, 0.002) == 10  # 10 + 10 x 2 = 30 ms: meets it
    assert steps.choose(0.0, 0.029, 0.010, 0.002) == 9
    assert steps.choose(0.0, 0.016, 0.010, 0.002) == 3  # 3 steps fit exactly
    assert steps.choose(0.0, 0.005, 0.010, 0.002) == 3  # nothing fits: the floor
    assert steps.choose(0.0, float("inf"), 0.010, 0.002) == 10
    assert Steps(10).choose(0.0, 0.001, 0.010, 0.002) == 10  # no floor: never lowered


# ---- staged files: a profile CSV with a stage column and its sidecar ------------------------
def staged_csv(tmp_path, sidecar=None, cameras=False):
    rows = ["batch_size,latency_ms,peak_mem_mb,stage" + (",cameras" if cameras else "")]
    for cams in (1, 3) if cameras else (None,):
        extra = f",{cams}" if cams else ""
        scale = 1 if cams in (None, 1) else 2
        rows += [f"1,{10 * scale},100,prefix{extra}", f"4,{16 * scale},140,prefix{extra}",
                 f"1,2,90,step{extra}", f"4,3,95,step{extra}"]  # fmt: skip
    path = tmp_path / "staged.csv"
    path.write_text("\n".join(rows) + "\n")
    meta = {"model": "m", "device": "cpu", "stages": [{"name": "prefix", "repeat": 1},
                                                      {"name": "step", "repeat": 5}]}  # fmt: skip
    (tmp_path / "staged.meta.json").write_text(json.dumps(sidecar or meta))
    return path


def test_a_csv_whose_sidecar_lists_stages_is_a_staged_model(tmp_path):
    path = staged_csv(tmp_path)
    loaded = scenario(str(path), {"kind": "dynamic", "max_batch": 4, "max_wait_ms": 0})
    assert loaded.model.names == ("prefix", "step") and loaded.model.steps == 5
    assert latencies_ms(loaded) == [20.0, 35.0]  # 10 + 5 x 2; then 20..40, minus 5
    assert loaded.profile.peak_memory_mb(4) == 140  # the largest stage's
    one = scenario({"path": str(path), "stage": "step"}, {"kind": "dynamic", "max_batch": 4})
    assert one.model.steps == 1 and one.profile.latency_ms(1) == 2


def test_staged_profiles_keep_shapes_and_memory(tmp_path):
    path = staged_csv(tmp_path, cameras=True)
    loaded = load({
        "requests": 2, "profile": {"path": str(path), "shape": "cameras"},
        "workload": TWO_ARRIVALS, "request_shapes": {1: 0.5, 3: 0.5},
        "policy": {"kind": "dynamic", "max_batch": 2, "max_wait_ms": 0},
        "cluster": {"memory_mb": 120},
    })  # fmt: skip
    assert sorted(loaded.shaped) == [1, 3]
    assert loaded.shaped[3].latency_ms(1) == 20 + 5 * 2  # the prefix at 3 cameras; steps alike
    assert loaded.memory_cap == 2  # 100 MB at 1, 140 at 4: 120 fits 2


def test_continuous_batching_bounds_what_is_in_flight_by_memory(tmp_path):
    path = staged_csv(tmp_path)
    data = {"seed": 1, "requests": 400, "profile": str(path),
            "workload": {"kind": "poisson", "rate_rps": 2000},
            "policy": {"kind": "continuous", "max_batch": 4}}  # fmt: skip
    free = simulate(load(data))
    assert free.batch_size.max() == 4
    capped = simulate(load({**data, "cluster": {"memory_mb": 120}}))
    assert capped.batch_size.max() == 2
    check_iterations(capped, 2)


# ---- bad stage definitions: one clear line --------------------------------------------------
@pytest.mark.parametrize(
    ("profile", "words"),
    [
        ({"stages": []}, ["profile.stages", "at least one stage"]),
        ({"stages": [{**FLAT["stages"][0], "repeat": 0}]}, ["profile.stages.0.repeat", "greater than 0"]),
        ({"stages": [{**FLAT["stages"][0], "repeat": -2}]}, ["profile.stages.0.repeat"]),
        ({"stages": [FLAT["stages"][0], FLAT["stages"][0]]}, ["distinct"]),
        ({"stages": [FLAT["stages"][0], {"name": "x", "batch_size": [1], "latency_ms": [1]}]},
         ["stage 'x'", "1..1"]),
        ({"stages": [{"name": "p", "batch_size": [1, 2], "latency_ms": [1]}]},
         ["profile.stages.0", "latency_ms has 1"]),
        ({"stages": [{"name": "p", "batch_size": [1, 2], "latency_ms": [1, 2], "bogus": 1}]},
         ["profile.stages.0.bogus", "unknown field"]),
    ],
)  # fmt: skip
def test_bad_stages_are_refused_in_one_line(profile, words):
    with pytest.raises(InputError) as err:
        scenario(profile, {"kind": "dynamic", "max_batch": 2})
    line = str(err.value)
    assert "\n" not in line
    for word in words:
        assert word in line, (word, line)


def test_stages_from_different_measurements_are_refused(tmp_path):
    (tmp_path / "a.csv").write_text("batch_size,latency_ms\n1,10\n2,12\n")
    (tmp_path / "a.meta.json").write_text(json.dumps({"model": "pi0", "device": "cpu"}))
    (tmp_path / "b.csv").write_text("batch_size,latency_ms\n1,2\n2,2\n")
    (tmp_path / "b.meta.json").write_text(json.dumps({"model": "pi0", "device": "cuda"}))
    (tmp_path / "c.csv").write_text("batch_size,latency_ms\n1,2\n2,2\n")  # no sidecar
    stages = [{"name": "prefix", "path": str(tmp_path / "a.csv")}]
    mixed = {"stages": [*stages, {"name": "step", "path": str(tmp_path / "b.csv"), "repeat": 3}]}
    with pytest.raises(InputError, match="disagrees on device: stage 'prefix' has 'cpu'"):
        scenario(mixed, {"kind": "dynamic", "max_batch": 2})
    bare = {"stages": [*stages, {"name": "step", "path": str(tmp_path / "c.csv")}]}
    with pytest.raises(InputError, match="stage 'step'.*has no provenance sidecar"):
        scenario(bare, {"kind": "dynamic", "max_batch": 2})


def test_a_floor_above_the_models_steps_is_refused():
    with pytest.raises(InputError, match="min_steps 4 is above the model's 3 steps"):
        scenario(FLAT, {"kind": "continuous", "max_batch": 2, "min_steps": 4})
    with pytest.raises(InputError, match="min_steps 2 is above the model's 1 steps"):
        scenario(
            {"batch_size": [1, 2], "latency_ms": [1, 2]},
            {"kind": "dynamic", "max_batch": 2, "min_steps": 2},
        )


def test_kv_cache_per_request_bounds_what_is_in_flight():
    # peak memory 100 MB at 1, 170 at 8: 10 MB per request more; kv_mb_per_request: 5 says
    # a request in flight holds 5 MB (its KV cache), so 130 MB holds 4, or 7 with the key
    stages = [
        {"name": "p", "batch_size": [1, 8], "latency_ms": [10, 12], "peak_mem_mb": [100, 170]},
        {"name": "s", "batch_size": [1, 8], "latency_ms": [2, 3], "repeat": 4},
    ]
    data = {"seed": 3, "requests": 600, "workload": {"kind": "poisson", "rate_rps": 3000},
            "policy": {"kind": "continuous", "max_batch": 8}, "cluster": {"memory_mb": 130}}  # fmt: skip
    by_slope = load({**data, "profile": {"stages": stages}})
    by_key = load({**data, "profile": {"stages": stages, "kv_mb_per_request": 5}})
    assert (by_slope.memory_cap, by_key.memory_cap) == (4, 7)
    assert memory_mb(by_key.scenario, by_key.profile, 7) == 130
    for loaded, most in ((by_slope, 4), (by_key, 7)):
        rec = simulate(loaded)
        assert rec.batch_size.max() == most
        check_iterations(rec, most)
        assert summarise(loaded, rec)["memory"]["largest_in_flight"] == most
    with pytest.raises(InputError, match="belongs to the profile, not to one stage"):
        load({**data, "profile": {"stages": [{**stages[0], "kv_mb_per_request": 5}, stages[1]]}})
    # request level, the same bound is the largest batch: a policy above it is refused
    with pytest.raises(InputError, match="the largest batch that fits is 7"):
        load({**data, "profile": {"stages": stages, "kv_mb_per_request": 5},
              "policy": {"kind": "dynamic", "max_batch": 8}})  # fmt: skip
