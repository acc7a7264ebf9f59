"""Batching policies: plain decision objects shared by the simulator and the live runner."""

from sim.policies.base import Decision, Launch, Policy, QueueView, Wait
from sim.policies.dynamic import DynamicPolicy
from sim.policies.static import StaticPolicy

__all__ = ["Decision", "DynamicPolicy", "Launch", "Policy", "QueueView", "StaticPolicy", "Wait"]
