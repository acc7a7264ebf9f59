"""Phase rules: when each of N periodic streams (a periodic source, a robot) starts.

Written once for every workload that has phases (periodic sources and robot fleets):
- synchronized: every stream at 0;
- staggered: stream i of N at i/N of one period;
- random: uniform in [0, period), one draw per stream in stream order.
"""

from __future__ import annotations

import numpy as np

PHASE_RULES = ("staggered", "synchronized", "random")


def phase_offset_s(
    rule: str, index: int, count: int, period_s: float, rng: np.random.Generator
) -> float:
    """The start offset (s) of stream `index` of `count` under `rule`."""
    if rule == "synchronized":
        return 0.0
    if rule == "staggered":
        return index * period_s / count
    if rule == "random":
        return float(rng.uniform(0.0, period_s))
    raise ValueError(f"unknown phase rule {rule!r}; one of {', '.join(PHASE_RULES)}")


def phase_offsets_s(rule: str, count: int, period_s: float, rng: np.random.Generator) -> np.ndarray:
    """The start offsets of all `count` streams, in stream order."""
    return np.array([phase_offset_s(rule, i, count, period_s, rng) for i in range(count)])
