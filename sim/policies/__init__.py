"""Batching policies: plain decision objects shared by the simulator and the live runner."""

from sim.policies.adaptive import AdaptivePolicy
from sim.policies.base import Decision, Drop, Launch, Policy, QueueView, Wait
from sim.policies.continuous import ContinuousPolicy
from sim.policies.deadline import DeadlinePolicy
from sim.policies.dynamic import DynamicPolicy
from sim.policies.pathological import LazyPolicy
from sim.policies.static import StaticPolicy

__all__ = [
    "AdaptivePolicy",
    "ContinuousPolicy",
    "DeadlinePolicy",
    "Decision",
    "Drop",
    "DynamicPolicy",
    "LazyPolicy",
    "Launch",
    "Policy",
    "QueueView",
    "StaticPolicy",
    "Wait",
]
