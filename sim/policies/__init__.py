"""policies: batching policies as plain decision objects, shared by every clock.

base.py is the protocol (Launch, Wait, Drop; QueueView; Policy, StepLevelPolicy); one
module per built-in (static, dynamic, adaptive, deadline, continuous, lazy); registry.py
the one place a policy is built, plug-ins imported and trust decided.

May import: errors, profiles. Imported by core, config and everything above them.
"""

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
