"""config: the scenario, from YAML to plain values.

Owns the schema (schema.py, policy.py: pure data), reading a file and its overrides
(parse.py, with messages.py's one-line errors), the work limits (limits.py), resolving a
parsed scenario against its profile files (resolve.py: `load`, the one loader) and the
checks it must pass (checks.py).

May import: errors, io, profiles, policies, core (the steps rule). Imported by everything
that runs a scenario.
"""

from sim.config.parse import ParsedScenario, parse
from sim.config.resolve import ResolvedScenario, build_policy, load, resolve

__all__ = ["ParsedScenario", "ResolvedScenario", "build_policy", "load", "parse", "resolve"]
