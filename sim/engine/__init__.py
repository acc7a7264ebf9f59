"""The SimPy engine: queue, replicas, the run loop and its columnar records."""

from sim.engine.core import Engine
from sim.engine.records import OUTCOME_NAMES, RunRecords

__all__ = ["OUTCOME_NAMES", "Engine", "RunRecords"]
