"""Denoising steps per request: the full count K of a staged model, and the one rule that
lowers it under load (docs/semantics.md, "Fewer steps under load")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# a request that meets its deadline to within a nanosecond meets it (float noise)
_TOLERANCE_S = 1e-9


@dataclass(frozen=True)
class Steps:
    """K steps per request, lowered down to `floor` (None: never) when a request would
    otherwise miss its deadline. `prefix_s[b]` and `step_s[b]` are the median times of the
    prefix (every stage but the last; 0 for a one-stage model) and of one step at size b."""

    full: int
    floor: int | None = None
    prefix_s: Sequence[float] = ()
    step_s: Sequence[float] = ()

    def choose(self, now_s: float, deadline_s: float, prefix_s: float, step_s: float) -> int:
        """The steps of a request (or request-level batch) starting at `now_s`: K when its
        predicted end (now + `prefix_s` + K x `step_s`) meets `deadline_s`; else the most
        steps that still meet it; else the floor."""
        full, floor = self.full, self.floor
        if floor is None or deadline_s == math.inf:
            return full
        start_s = now_s + prefix_s
        if start_s + full * step_s <= deadline_s + _TOLERANCE_S:
            return full
        fit = math.floor((deadline_s + _TOLERANCE_S - start_s) / step_s)
        return max(floor, min(full - 1, fit))
