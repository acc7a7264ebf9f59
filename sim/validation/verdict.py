"""Noise-aware verdicts: is a prediction as close to the live runs as the runs are to
each other?

A fixed target ("p99 within 5%") can be tighter than the machine's own run-to-run
variation. Given several live (or recorded) runs of the same traffic:

- `live_spread`: each run's leave-one-out error, against the median of the others; the
  spread is the largest of them, the error a rerun is seen to make;
- `indistinguishable`: the prediction's error against the median of all runs lies within
  that spread;
- `tost`: a two one-sided tests equivalence test of the mean latency within a stated
  relative margin (Welch's t), and `ks`: the two-sample Kolmogorov-Smirnov statistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spread:
    errors: tuple[float, ...]  # per run: value / median(other runs) - 1
    spread: float  # the largest |error|

    def as_dict(self) -> dict:
        return {"errors": list(self.errors), "spread": self.spread}


def live_spread(values: list[float] | np.ndarray) -> Spread:
    """Leave-one-out errors of one figure across runs (at least two runs)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        raise ValueError("a spread needs at least two runs")
    errors = tuple(float(v[i] / np.median(np.delete(v, i)) - 1) for i in range(v.size))
    return Spread(errors, max(abs(e) for e in errors))


def indistinguishable(predicted: float, values: list[float] | np.ndarray) -> dict:
    """The prediction's error against the runs' median, the runs' spread, and whether the
    error is within it (a rerun could have made it)."""
    v = np.asarray(values, dtype=float)
    spread = live_spread(v)
    error = float(predicted / np.median(v) - 1)
    return {
        "error": error,
        "spread": spread.spread,
        "indistinguishable": abs(error) <= spread.spread,
    }


def tost(
    predicted: np.ndarray, live: np.ndarray, margin: float = 0.05, alpha: float = 0.05
) -> dict:
    """Two one-sided Welch tests: are the mean latencies equal within +-margin x the live
    mean? Equivalent when both one-sided nulls are rejected (p < alpha)."""
    from scipy import stats

    p_s, l_s = np.asarray(predicted, float), np.asarray(live, float)
    delta = margin * float(l_s.mean())
    lower = stats.ttest_ind(p_s + delta, l_s, equal_var=False, alternative="greater").pvalue
    upper = stats.ttest_ind(p_s - delta, l_s, equal_var=False, alternative="less").pvalue
    p = float(max(lower, upper))
    return {"margin": margin, "delta": delta, "p": p, "equivalent": p < alpha, "alpha": alpha}


def ks(predicted: np.ndarray, live: np.ndarray) -> dict:
    from scipy import stats

    result = stats.ks_2samp(np.asarray(predicted, float), np.asarray(live, float))
    return {"statistic": float(result.statistic), "pvalue": float(result.pvalue)}
