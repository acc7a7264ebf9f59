"""Adaptive, deadline and lazy policies: exact decisions from hand-built queues (no SimPy)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sim.policies import AdaptivePolicy, DeadlinePolicy, Drop, Launch, LazyPolicy, Wait
from sim.profiles.profile import Profile
from tests.conftest import ListQueue


@dataclass
class EdfQueue:
    """Arrival times and deadlines, already in EDF order."""

    times: list[float]
    deadlines: list[float]

    def __len__(self) -> int:
        return len(self.times)

    def arrival_s(self, position: int) -> float:
        return self.times[position]

    def deadline_s(self, position: int) -> float:
        return self.deadlines[position]


# s(b) = 10 + 2b ms for b = 1..8
LINEAR = Profile.from_samples({b: 10.0 + 2.0 * b for b in range(1, 9)})


class TestDeadline:
    def policy(self, **kw) -> DeadlinePolicy:
        return DeadlinePolicy(LINEAR, max_batch=kw.pop("max_batch", 8), **kw)

    def test_empty_queue_waits_for_an_arrival(self):
        assert self.policy().decide(0.0, EdfQueue([], [])) == Wait(None, 1)

    def test_waits_until_the_last_safe_moment_for_the_batch_that_would_run(self):
        # two queued, earliest deadline 0.100: a batch of 2 takes 14 ms -> latest start 0.086
        q = EdfQueue([0.0, 0.01], [0.100, 0.110])
        assert self.policy().decide(0.02, q) == Wait(pytest.approx(0.086), 3)

    def test_launches_at_the_last_safe_moment(self):
        q = EdfQueue([0.0, 0.01], [0.100, 0.110])
        wait = self.policy().decide(0.02, q)
        assert self.policy().decide(wait.until_s, q) == Launch(2, 2)

    def test_full_batch_launches_at_once_sized_to_the_earliest_deadline(self):
        # 10 queued, max 8: s(8) = 26 ms; earliest deadline 24 ms away -> s(7) = 24 fits
        q = EdfQueue([0.0] * 10, [0.024] * 10)
        assert self.policy().decide(0.0, q) == Launch(7, 7)

    def test_hopeless_front_requests_are_dropped(self):
        # s(1) = 12 ms: the first two cannot make it even alone
        q = EdfQueue([0.0, 0.0, 0.0], [0.005, 0.011, 0.5])
        assert self.policy().decide(0.0, q) == Drop(2)

    def test_hopeless_front_requests_are_served_first_with_on_miss_serve(self):
        q = EdfQueue([0.0, 0.0, 0.0], [0.005, 0.011, 0.5])
        # the on-time one (deadline 0.5) fits in a batch of 3 (16 ms): all three go now
        assert self.policy(on_miss="serve").decide(0.0, q) == Launch(3, 3)
        # alone late requests launch at once, as many as are late (capped at max_batch)
        assert self.policy(on_miss="serve", max_batch=2).decide(0.0, q) == Launch(2, 2)

    def test_gives_up_one_urgent_request_when_it_would_pin_the_batch_to_one(self):
        # front deadline allows only s(1) = 12 ms; the next 8 allow s(8) = 26 ms
        q = EdfQueue([0.0] * 9, [0.013] + [0.030] * 8)
        assert self.policy().decide(0.0, q) == Drop(1)
        # serve mode never gives up: the front pins the batch
        assert self.policy(on_miss="serve").decide(0.0, q) == Launch(1, 1)

    def test_keeps_the_urgent_request_when_dropping_gains_nothing(self):
        q = EdfQueue([0.0] * 3, [0.013, 0.030, 0.030])
        # (j=0, b=1) is worth 1; (j=1, b=2) is worth 1 too: ties keep everyone
        assert self.policy().decide(0.0, q) == Launch(1, 1)

    def test_quantile_is_the_prediction(self):
        noisy = Profile.from_samples({1: [10.0, 10.0, 10.0, 40.0], 2: [12.0, 12.0, 12.0, 60.0]})
        median = DeadlinePolicy(noisy, 2, quantile=0.5)
        tail = DeadlinePolicy(noisy, 2, quantile=0.99)
        assert median.predicted_s[1] == pytest.approx(0.010)
        assert tail.predicted_s[1] > 0.035
        q = EdfQueue([0.0], [0.020])
        assert median.decide(0.0, q) == Wait(pytest.approx(0.010), 2)
        assert tail.decide(0.0, q) == Drop(1)

    def test_requests_without_deadlines_are_served_at_once(self):
        inf = float("inf")
        assert self.policy().decide(0.0, EdfQueue([0.0, 0.0], [inf, inf])) == Launch(2, 2)

    @pytest.mark.parametrize("kw", [{"quantile": 0.3}, {"quantile": 1.0}, {"on_miss": "ignore"}])
    def test_bad_parameters(self, kw):
        with pytest.raises(ValueError):
            DeadlinePolicy(LINEAR, 4, **kw)


class TestAdaptive:
    def test_launches_at_the_current_cap(self):
        policy = AdaptivePolicy(target_ms=30, max_batch=16, initial_batch=4, max_wait_ms=5)
        assert policy.decide(0.0, ListQueue([0.0] * 6)) == Launch(4, 4)
        assert policy.decide(0.001, ListQueue([0.0, 0.0])) == Wait(pytest.approx(0.005), 4)
        assert policy.decide(0.005, ListQueue([0.0, 0.0])) == Launch(2, 2)

    def test_additive_increase_only_after_a_full_batch_within_target(self):
        policy = AdaptivePolicy(target_ms=30, max_batch=16, initial_batch=4, step=2)
        policy.on_batch_done(1.0, 4, 4, 0.020)
        assert policy.cap == 6
        policy.on_batch_done(1.0, 3, 3, 0.020)  # not full: no evidence, no change
        assert policy.cap == 6

    def test_multiplicative_backoff_above_target(self):
        policy = AdaptivePolicy(target_ms=30, max_batch=16, initial_batch=10, backoff=0.5)
        policy.on_batch_done(1.0, 10, 10, 0.031)
        assert policy.cap == 5.0
        policy.on_batch_done(1.0, 5, 5, 0.031)
        assert policy.cap == 2.5 and policy.current_batch == 2

    def test_cap_stays_within_bounds(self):
        policy = AdaptivePolicy(target_ms=30, max_batch=4, min_batch=2, initial_batch=4)
        for _ in range(5):
            policy.on_batch_done(1.0, 4, 4, 0.001)
        assert policy.cap == 4
        for _ in range(20):
            policy.on_batch_done(1.0, 4, 4, 1.0)
        assert policy.cap == 2

    @pytest.mark.parametrize(
        "kw",
        [
            {"target_ms": -1},
            {"target_ms": 0},
            {"backoff": 1.0},
            {"backoff": 0.0},
            {"step": 0},
            {"min_batch": 9},
        ],
    )
    def test_bad_parameters(self, kw):
        args = {"target_ms": 30, "max_batch": 8, **kw}
        with pytest.raises(ValueError):
            AdaptivePolicy(**args)


class TestLazy:
    def test_waits_the_full_timer_even_with_a_full_batch(self):
        policy = LazyPolicy(max_batch=4, max_wait_ms=10)
        assert policy.decide(0.001, ListQueue([0.0] * 9)) == Wait(pytest.approx(0.010), None)
        assert policy.decide(0.010, ListQueue([0.0] * 9)) == Launch(4, 4)
        assert policy.decide(0.0, ListQueue([])) == Wait(None, 1)
