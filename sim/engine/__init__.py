"""The server core (clock-free), its SimPy driver, queues, dispatchers, service models, records."""

from sim.engine.engine import Engine, ProgressFn
from sim.engine.records import OUTCOME_NAMES, RunRecords
from sim.engine.server import ServerCore, ServerSpec, Sleep, Start
from sim.engine.service import AfterIdleService, PlainService, ShapedService

__all__ = [
    "OUTCOME_NAMES",
    "AfterIdleService",
    "Engine",
    "PlainService",
    "ProgressFn",
    "RunRecords",
    "ServerCore",
    "ServerSpec",
    "ShapedService",
    "Sleep",
    "Start",
]
