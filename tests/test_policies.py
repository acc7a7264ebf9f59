"""Policy decisions from hand-built queue states and times: no SimPy, no clock."""

from __future__ import annotations

import pytest

from sim.policies import DynamicPolicy, Launch, StaticPolicy, Wait
from tests.conftest import ListQueue


class TestStatic:
    def test_full_batch_launches_at_once(self):
        assert StaticPolicy(4, None).decide(1.0, ListQueue([0.1, 0.2, 0.3, 0.9, 0.95])) == Launch(
            4, 4
        )

    def test_no_timeout_waits_for_a_full_batch(self):
        assert StaticPolicy(4, None).decide(100.0, ListQueue([0.1, 0.2])) == Wait(None, 4)

    def test_empty_queue_with_timeout_waits_for_the_first_request(self):
        assert StaticPolicy(4, 10.0).decide(1.0, ListQueue([])) == Wait(None, 1)

    def test_timer_pending(self):
        assert StaticPolicy(4, 10.0).decide(1.005, ListQueue([1.0, 1.002])) == Wait(1.0 + 0.010, 4)

    def test_timer_expired_launches_padded_to_batch_size(self):
        assert StaticPolicy(4, 10.0).decide(1.0 + 0.010, ListQueue([1.0, 1.002])) == Launch(2, 4)

    def test_timeout_zero_launches_whatever_is_queued(self):
        assert StaticPolicy(8, 0.0).decide(2.0, ListQueue([2.0])) == Launch(1, 8)

    def test_launch_sizes(self):
        assert StaticPolicy(8).launch_sizes() == {8}
        assert StaticPolicy(8).max_batch == 8


class TestDynamic:
    def test_max_batch_formed_launches_at_once(self):
        q = ListQueue([0.0] * 10)
        assert DynamicPolicy(8, 5.0).decide(0.0, q) == Launch(8, 8)

    def test_waits_for_timer_or_full_batch(self):
        q = ListQueue([1.0, 1.001])
        assert DynamicPolicy(8, 5.0).decide(1.002, q) == Wait(1.0 + 0.005, 8)

    def test_timer_expiry_launches_everything_queued(self):
        q = ListQueue([1.0, 1.001, 1.004])
        assert DynamicPolicy(8, 5.0).decide(1.0 + 0.005, q) == Launch(3, 3)

    def test_max_wait_zero_launches_as_soon_as_free(self):
        assert DynamicPolicy(8, 0.0).decide(3.0, ListQueue([3.0])) == Launch(1, 1)
        assert DynamicPolicy(8, 0.0).decide(3.0, ListQueue([2.0] * 5)) == Launch(5, 5)
        assert DynamicPolicy(8, 0.0).decide(3.0, ListQueue([2.0] * 12)) == Launch(8, 8)

    def test_empty_queue_waits_for_first_request(self):
        assert DynamicPolicy(8, 5.0).decide(0.0, ListQueue([])) == Wait(None, 1)

    def test_no_timer_waits_only_for_size(self):
        q = ListQueue([0.0, 0.0, 0.0])
        assert DynamicPolicy(8, None).decide(1000.0, q) == Wait(None, 8)

    def test_min_batch_holds_back_the_timer(self):
        q = ListQueue([0.0, 0.1])
        policy = DynamicPolicy(8, 5.0, min_batch=3)
        assert policy.decide(10.0, q) == Wait(None, 3)
        # once min_batch are queued, an expired timer launches at once
        assert policy.decide(10.0, ListQueue([0.0, 0.1, 9.0])) == Launch(3, 3)

    def test_preferred_size_launches_largest_formable(self):
        policy = DynamicPolicy(16, 50.0, preferred_sizes=[4, 8])
        assert policy.decide(0.0, ListQueue([0.0] * 5)) == Launch(4, 4)
        assert policy.decide(0.0, ListQueue([0.0] * 11)) == Launch(8, 8)
        assert policy.decide(0.0, ListQueue([0.0] * 3)) == Wait(0.05, 4)
        # above the largest preferred size the next size to wait for is max_batch
        assert policy.decide(0.0, ListQueue([0.0] * 3)).until_queue_len == 4

    def test_allowed_sizes_pad_up(self):
        policy = DynamicPolicy(16, 0.0, allowed_sizes=[1, 2, 4, 8, 16])
        assert policy.decide(0.0, ListQueue([0.0] * 5)) == Launch(5, 8)
        assert policy.decide(0.0, ListQueue([0.0] * 3)) == Launch(3, 4)
        assert policy.decide(0.0, ListQueue([0.0] * 17)) == Launch(16, 16)
        assert policy.launch_sizes() == {1, 2, 4, 8, 16}

    def test_timer_compares_with_the_same_expression_it_waits_on(self):
        # waking exactly at the deadline the policy named must launch, whatever the rounding
        policy = DynamicPolicy(8, 3.0)
        q = ListQueue([0.1])
        wait = policy.decide(0.1, q)
        assert policy.decide(wait.until_s, q) == Launch(1, 1)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_batch": 0},
            {"max_batch": 4, "min_batch": 5},
            {"max_batch": 4, "max_wait_ms": -1},
            {"max_batch": 4, "preferred_sizes": [8]},
            {"max_batch": 8, "allowed_sizes": [1, 2, 4]},
        ],
    )
    def test_inconsistent_settings_are_refused(self, kwargs):
        with pytest.raises(ValueError):
            DynamicPolicy(**kwargs)
