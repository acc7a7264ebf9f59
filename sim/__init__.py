"""batchsim: simulate batching schedulers for VLA robot-policy inference.

The Python API (sim/api.py; README, "Python API"): `load`, `run` (a `Run` with the
summary and the records as DataFrames), `sweep`, `recommend`, `validate`,
`validate_records`, `estimate` (with the `GPUS` table), `confidence_interval`,
`project_dir`, and `InputError`. They load on first use,
so `import sim` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "load": "sim.api",
    "run": "sim.api",
    "Run": "sim.engine.pipeline",
    "sweep": "sim.api",
    "recommend": "sim.api",
    "Recommendation": "sim.api",
    "project_dir": "sim.api",
    "validate": "sim.validation.live",
    "validate_records": "sim.validation.records",
    "estimate": "sim.profiles.estimate.roofline",
    "GPUS": "sim.profiles.estimate.gpus",
    "confidence_interval": "sim.experiments.stats",
    "InputError": "sim.errors",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
