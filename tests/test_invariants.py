"""Invariants of every run (conservation, causality, one batch per replica, padding,
determinism), checked on fixed cases and on random ones drawn by hypothesis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.core import invariants as inv
from sim.core.records import COMPLETED, DROPPED, IN_SERVICE, QUEUED, REJECTED
from sim.policies import DynamicPolicy, Launch, StaticPolicy, Wait
from sim.profiles.profile import Profile
from sim.workload import gamma_arrivals, periodic_arrivals, poisson_arrivals
from tests.conftest import ROOT, simulate_arrays

EPS = 1e-9


def check_invariants(rec, policy, profile=None, timeout_s=None, max_queue=None):
    """INV-1..INV-6 through the package's own checks (sim/core/invariants.py), plus what a
    run of a policy without drops of its own keeps: nothing dropped without a timeout."""
    inv.conservation(rec)
    inv.causality(rec)
    inv.one_batch_per_replica(rec)
    deterministic = profile is not None and profile.deterministic
    inv.sizes_and_padding(
        rec, policy.max_batch, policy.launch_sizes(), profile.latency_ms if deterministic else None
    )
    inv.fifo_order(rec)  # a shared FIFO queue: these policies' order
    inv.admission(rec, timeout_s, max_queue)
    if timeout_s is None:
        assert not np.any(rec.outcome == DROPPED)


def test_inv1_to_inv6_hold_on_a_fixed_case():
    profile = Profile.from_samples({1: 10.0, 4: 14.0, 8: 20.0})
    policy = DynamicPolicy(8, 5.0)
    arrivals = poisson_arrivals(np.random.default_rng(0), 500.0, count=20_000)
    rec = simulate_arrays(arrivals.time_s, policy, profile, replicas=2)
    check_invariants(rec, policy, profile)
    assert np.all(rec.outcome == COMPLETED)


def test_inv1_inv2_a_horizon_leaves_requests_queued_or_in_service():
    profile = Profile.from_samples({1: 50.0, 8: 80.0})
    policy = DynamicPolicy(8, 5.0)
    arrivals = poisson_arrivals(np.random.default_rng(0), 400.0, duration_s=5.0)  # overload
    rec = simulate_arrays(arrivals.time_s, policy, profile, horizon_s=5.0)
    check_invariants(rec, policy, profile)
    assert (rec.outcome == QUEUED).sum() > 0
    assert (rec.outcome == IN_SERVICE).sum() >= 1
    assert rec.end_s == 5.0


def test_static_without_timeout_never_launches_a_partial_batch():
    profile = Profile.from_samples({4: 10.0})
    policy = StaticPolicy(4, None)
    rec = simulate_arrays(np.arange(10) * 0.1, policy, profile)
    assert rec.batch_size.tolist() == [4, 4]
    assert (rec.outcome == QUEUED).sum() == 2  # the last two wait forever
    check_invariants(rec, policy, profile)


def test_ties_arrival_at_decision_time_joins_the_batch():
    # the timer of the first request fires at 0.005, exactly when the third arrives:
    # arrivals at t are queued before the decision at t, so the batch holds three
    profile = Profile.from_samples({1: 1.0, 8: 2.0})
    rec = simulate_arrays([0.0, 0.001, 0.005], DynamicPolicy(8, 5.0), profile)
    assert rec.batch_size.tolist() == [3]
    assert rec.batch_start_s.tolist() == [0.005]


def test_ties_completion_at_arrival_time_frees_the_replica():
    # the first batch ends at 0.010 exactly when the next request arrives: it starts at once
    profile = Profile.from_samples({1: 10.0})
    rec = simulate_arrays([0.0, 0.010], DynamicPolicy(1, 0.0), profile)
    assert rec.batch_start_s.tolist() == [0.0, 0.010]


def test_max_queue_rejects_and_timeout_drops():
    profile = Profile.from_samples({1: 100.0})
    policy = DynamicPolicy(1, 0.0)
    # five requests at once: one starts, two wait (max_queue 2), two are rejected
    rec = simulate_arrays([0.0] * 5, policy, profile, max_queue=3)
    assert rec.outcome.tolist().count(REJECTED) == 2
    # with a 150 ms timeout the third in line (would start at 200 ms) is dropped
    rec = simulate_arrays([0.0] * 3, policy, profile, timeout_s=0.150)
    assert rec.outcome.tolist() == [COMPLETED, COMPLETED, DROPPED]
    check_invariants(rec, policy, profile, timeout_s=0.150)


def test_inv8_identical_seeds_give_identical_records():
    profile = Profile.from_samples({1: [5.0, 6.0, 9.0], 8: [12.0, 15.0, 30.0]})
    policy = DynamicPolicy(8, 2.0)
    times = poisson_arrivals(np.random.default_rng(9), 300.0, count=5000).time_s
    a = simulate_arrays(times, policy, profile, replicas=2, seed=4)
    b = simulate_arrays(times, policy, profile, replicas=2, seed=4)
    c = simulate_arrays(times, policy, profile, replicas=2, seed=5)
    for field in (
        "request_batch",
        "outcome",
        "batch_start_s",
        "batch_end_s",
        "batch_size",
        "batch_replica",
    ):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.batch_end_s, c.batch_end_s)


def follows_the_policy_exactly(rec, policy):
    """Single replica, no admission limits: replaying the policy on the queue as it was,
    every batch starts at the first instant the policy says Launch, with exactly the size
    and padding it named; at every earlier instant (the replica freeing, each arrival) the
    policy said Wait with a timer no earlier than the start."""
    from tests.conftest import ListQueue

    arrival = rec.arrival_s
    served_before = np.zeros(arrival.size, dtype=bool)
    prev_end = 0.0
    for b in range(rec.batch_size.size):
        start = rec.batch_start_s[b]

        def queue_at(t, waiting=~served_before):
            return ListQueue(arrival[(arrival <= t) & waiting].tolist())

        instants = [prev_end, *arrival[(arrival > prev_end) & (arrival < start)].tolist()]
        for t in instants:
            if t < start - EPS:  # SimPy adds delays to its clock: start may be 1 ulp late
                decision = policy.decide(t, queue_at(t))
                assert isinstance(decision, Wait), (b, t, decision)
                assert decision.until_s is None or decision.until_s >= start - EPS, (b, t, decision)
        decision = policy.decide(start, queue_at(start))
        assert decision == Launch(int(rec.batch_size[b]), int(rec.batch_padded[b])), (b, decision)
        served_before |= rec.request_batch == b
        prev_end = rec.batch_end_s[b]


def admission_was_exact(rec, max_queue, timeout_s):
    """A request was rejected exactly when max_queue requests were waiting as it arrived."""
    a = rec.arrival_s
    start = rec.request_start_s
    rejected = rec.outcome == REJECTED
    for i in range(a.size):
        j = np.arange(i)
        waiting = ~rejected[j] & ~(start[j] < a[i]) & (a[j] <= a[i])
        if timeout_s is not None:
            waiting &= ~(a[j] < a[i] - timeout_s)
        assert (int(waiting.sum()) >= max_queue) == bool(rejected[i]), (i, int(waiting.sum()))


# ---- hypothesis ---------------------------------------------------------------------------
sizes_strategy = st.lists(st.integers(1, 32), min_size=1, max_size=6, unique=True).map(sorted)


@st.composite
def profiles(draw):
    sizes = draw(sizes_strategy)
    if sizes[0] != 1:
        sizes = [1, *sizes]
    stochastic = draw(st.booleans())
    samples = {}
    for s in sizes:
        base = draw(st.floats(0.5, 50.0))
        if stochastic:
            spread = draw(st.lists(st.floats(0.5, 3.0), min_size=1, max_size=5))
            samples[s] = [base * x for x in spread]
        else:
            samples[s] = base
    return Profile.from_samples(samples)


@st.composite
def policies(draw, max_size):
    if draw(st.booleans()):
        return StaticPolicy(draw(st.integers(1, max_size)), draw(st.none() | st.floats(0.0, 50.0)))
    max_batch = draw(st.integers(1, max_size))
    allowed = None
    if draw(st.booleans()):
        allowed = sorted(set(draw(st.lists(st.integers(1, max_size), max_size=4)) + [max_batch]))
    preferred = draw(st.lists(st.integers(1, max_batch), max_size=3, unique=True)) or None
    return DynamicPolicy(
        max_batch,
        draw(st.none() | st.floats(0.0, 30.0)),
        draw(st.integers(1, max_batch)),
        preferred,
        allowed,
    )


@st.composite
def arrival_times(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["poisson", "gamma", "periodic", "burst"]))
    count = draw(st.integers(1, 400))
    rate = draw(st.floats(5.0, 2000.0))
    if kind == "poisson":
        return poisson_arrivals(rng, rate, count=count).time_s
    if kind == "gamma":
        return gamma_arrivals(rng, rate, draw(st.floats(0.2, 4.0)), count=count).time_s
    if kind == "periodic":
        sources = draw(st.integers(1, 16))
        phases = rng.uniform(0, 1 / rate, sources)
        return periodic_arrivals(rng, sources, rate, phases, 0.0, count=count).time_s
    return np.sort(np.round(rng.uniform(0, count / rate, count), 3))  # many exact ties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_inv1_to_inv8_hold_for_random_runs(data):
    profile = data.draw(profiles())
    policy = data.draw(policies(profile.max_size))
    times = data.draw(arrival_times())
    replicas = data.draw(st.integers(1, 3))
    max_queue = data.draw(st.none() | st.integers(1, 50))
    timeout_s = data.draw(st.none() | st.floats(0.001, 0.2))
    horizon_s = data.draw(st.none() | st.floats(0.01, 2.0))
    if horizon_s is not None:
        times = times[times < horizon_s]
    seed = data.draw(st.integers(0, 1000))
    args = dict(
        replicas=replicas, seed=seed, max_queue=max_queue, timeout_s=timeout_s, horizon_s=horizon_s
    )
    rec = simulate_arrays(times, policy, profile, **args)
    check_invariants(rec, policy, profile, timeout_s, max_queue)
    again = simulate_arrays(times, policy, profile, **args)
    assert np.array_equal(rec.request_batch, again.request_batch)
    assert np.array_equal(rec.batch_end_s, again.batch_end_s)
    # a policy with a timer and no admission limits serves everyone when given time to drain
    if horizon_s is None and max_queue is None and timeout_s is None:
        has_timer = getattr(policy, "max_wait_ms", None) is not None and policy.min_batch == 1
        has_timer = has_timer or getattr(policy, "timeout_ms", None) is not None
        if has_timer:
            assert np.all(rec.outcome == COMPLETED)
    if replicas == 1 and max_queue is None and timeout_s is None:
        follows_the_policy_exactly(rec, policy)
    if max_queue is not None:
        admission_was_exact(rec, max_queue, timeout_s)


def test_progress_reports_reach_completion():
    from sim.config import load
    from sim.engine.pipeline import simulate

    loaded = load(
        {
            "duration_s": 10,
            "profile": {"batch_size": [1, 8], "latency_ms": [5, 12]},
            "workload": {"kind": "poisson", "rate_rps": 100},
            "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 2},
        }
    )
    seen: list[float] = []
    records = simulate(loaded, progress=seen.append)
    assert seen[-1] == 1.0 and len(seen) > 50 and seen == sorted(seen)
    # the monitor adds events but changes nothing in the run
    assert np.array_equal(records.request_batch, simulate(loaded).request_batch)


def test_requests_mode_accounts_for_arrivals_after_the_last_launch():
    # static B=3 never launches; the second arrival finds the queue full (max_queue 1)
    profile = Profile.from_samples({1: 1.0, 3: 2.0})
    rec = simulate_arrays([0.1, 0.3], StaticPolicy(3, None), profile, max_queue=1)
    assert rec.outcome.tolist() == [QUEUED, REJECTED]
    # with an admission timeout, what can never launch expires
    rec = simulate_arrays([0.1, 0.3], StaticPolicy(3, None), profile, timeout_s=0.5)
    assert rec.outcome.tolist() == [DROPPED, DROPPED]
    assert rec.end_s > 0.8


def test_the_simulator_never_needs_torch(tmp_path):
    """The core (scenario, engine, metrics, CLI run) imports and runs with torch hidden."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from sim.cli import main\n"
        f"raise SystemExit(main(['run', '{ROOT}/scenarios/quickstart.yaml', '-q', '--set', 'duration_s=20']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr


def test_inv10_another_service_draw_keeps_the_traffic_and_redraws_service_times():
    """validate's simulation draws: the same arrivals (and robot phases), other service times."""
    from sim.config import load
    from sim.engine.pipeline import simulate

    data = {
        "seed": 11,
        "duration_s": 20,
        "profile": {"batch_size": [1, 8], "latency_ms": [[5, 6, 9], [12, 15, 30]]},
        "workload": {"kind": "poisson", "rate_rps": 200},
        "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 2},
    }
    base, again, other = (simulate(load(data), service_draw=k) for k in (0, 0, 1))
    plain = simulate(load(data))
    assert np.array_equal(base.batch_end_s, plain.batch_end_s)  # draw 0 is the scenario's own
    assert np.array_equal(base.batch_end_s, again.batch_end_s)
    assert np.array_equal(base.arrival_s, other.arrival_s)
    assert not np.array_equal(base.batch_end_s, other.batch_end_s)
    fleet = {**data, "workload": {"kind": "robots", "count": 6, "control_hz": 30, "chunk": 20,
                                  "start": "random"}}  # fmt: skip
    first, second = (simulate(load(fleet), service_draw=k) for k in (0, 1))
    assert np.array_equal(first.arrival_s[:6], second.arrival_s[:6])  # the same first sends
    assert not np.array_equal(first.batch_end_s, second.batch_end_s)


# ---- the package's checks fail when an invariant breaks -----------------------------------
def _open_run():
    profile = Profile.from_samples({1: 10.0, 4: 14.0, 8: 20.0})
    times = poisson_arrivals(np.random.default_rng(2), 300.0, count=400).time_s
    return simulate_arrays(times, DynamicPolicy(8, 5.0), profile, replicas=2), profile


def _broken(kind, rec):
    """A copy of the records with one invariant broken."""
    from dataclasses import replace

    if kind == "conservation":
        size = rec.batch_size.copy()
        size[0] += 1
        return replace(rec, batch_size=size)
    if kind == "causality":
        arrival = rec.arrival_s.copy()
        arrival[0] = rec.batch_start_s[rec.request_batch[0]] + 1.0
        return replace(rec, arrival_s=arrival)
    if kind == "one_batch_per_replica":
        start = rec.batch_start_s.copy()
        mine = np.flatnonzero(rec.batch_replica == 0)
        start[mine[1]] = rec.batch_end_s[mine[0]] - 0.001
        return replace(rec, batch_start_s=start)
    if kind == "sizes_and_padding":
        padded = rec.batch_padded.copy()
        padded[np.argmax(rec.batch_size)] = 0
        return replace(rec, batch_padded=padded)
    if kind == "fifo_order":
        batch = rec.request_batch.copy()
        batch[0], batch[-1] = batch[-1], batch[0]
        return replace(rec, request_batch=batch)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["conservation", "causality", "one_batch_per_replica", "sizes_and_padding", "fifo_order"],
)
def test_each_invariant_check_catches_its_violation(kind):
    rec, profile = _open_run()
    args = (8, set(range(1, 9))) if kind == "sizes_and_padding" else ()
    getattr(inv, kind)(rec, *args)  # the run as it was keeps it
    with pytest.raises(inv.InvariantViolation) as caught:
        getattr(inv, kind)(_broken(kind, rec), *args)
    assert caught.value.name == inv.name_of(getattr(inv, kind))


def test_inv6_admission_catches_a_wait_past_the_timeout():
    rec, _ = _open_run()
    waited = float(np.nanmax(rec.request_start_s - rec.arrival_s))
    inv.admission(rec, waited, None)
    with pytest.raises(inv.InvariantViolation, match="INV-6"):
        inv.admission(rec, waited / 2, None)


def test_run_check_asserts_the_invariants_and_exits_1_on_a_violation(monkeypatch, capsys):
    from sim.cli import main

    scenario = str(ROOT / "scenarios" / "quickstart.yaml")
    assert main(["run", scenario, "--set", "duration_s=20", "--check"]) == 0
    out = capsys.readouterr().out
    assert "invariants hold: INV-1 conservation" in out and "INV-5 FIFO order" in out

    def broken(records):
        raise inv.InvariantViolation("INV-5 FIFO order", "request 3 starts after a later one")

    broken.__doc__ = inv.fifo_order.__doc__
    monkeypatch.setattr(inv, "fifo_order", broken)
    assert main(["run", scenario, "--set", "duration_s=20", "--check"]) == 1
    assert "batchsim: invariant violated: INV-5 FIFO order" in capsys.readouterr().err
