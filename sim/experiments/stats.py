"""The statistics experiments decide by: confidence intervals over replications, and the
SLO terms that judge a configuration by them (pass, fail, or uncertain).

Replications are independent runs of one configuration (seeds base, base+1, ...; every
configuration and load uses the same seeds: common random numbers). A sweep reports the
Student-t interval of each metric's mean (`confidence_interval`). recommend judges with
`interval`, which suits percentiles and never reaches outside a metric's range:

- a figure in ms, requests/s, J or $ whose replications are all positive gets the
  Student-t interval of its log, turned back (the geometric mean's interval): a p99 is
  skewed right and cannot be negative, and its spread grows with its size;
- a share (attainment, stall) gets the Student-t interval of its mean, cut to [0, 1];
- anything else the plain interval, cut at 0 when no replication is negative.

A term passes when the whole interval is on its side of the bound, fails when the whole
interval is on the other side, and is uncertain while the interval straddles the bound.

May import: errors, metrics.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.metrics.registry import METRICS, SLO_NAMES

LEVEL = 0.95  # every interval batchsim reports or decides by
PASS, FAIL, UNCERTAIN = "pass", "fail", "uncertain"

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SLO_RE = re.compile(rf"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*({_NUMBER})\s*$")


def _clean(values: Iterable[Any]) -> np.ndarray:
    return np.asarray(
        [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))],
        dtype=float,
    )


def _t_half(x: np.ndarray, level: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def confidence_interval(values: Iterable[float], level: float = LEVEL) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval of the mean; half-width nan with one
    value (a sweep's columns, and paired differences, which may be negative)."""
    x = _clean(values)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), _t_half(x, level)


@dataclass(frozen=True)
class Interval:
    """A metric over replications: the mean of the replications and the `LEVEL` interval
    [lo, hi] (nan with fewer than two replications)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def known(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))


def interval(values: Iterable[Any], unit: str = "", level: float = LEVEL) -> Interval:
    """The interval recommend judges a metric by (see the module's docstring); `unit`: the
    metric's unit in the registry ("fraction" for shares)."""
    x = _clean(values)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, math.nan, math.nan, 1)
    if np.all(x == x[0]):  # every replication agrees: nothing to be unsure of
        return Interval(mean, mean, mean, int(x.size))
    if unit != "fraction" and np.all(x > 0):
        logs = np.log(x)
        centre, half = float(logs.mean()), _t_half(logs, level)
        # exp(700) ~ 1e304: the widest interval a float can hold
        lo, hi = math.exp(max(centre - half, -700)), math.exp(min(centre + half, 700))
        # the arithmetic mean lies above the geometric one: keep it inside what is shown
        return Interval(mean, min(lo, mean), max(hi, mean), int(x.size))
    half = _t_half(x, level)
    lo, hi = mean - half, mean + half
    if unit == "fraction":
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    elif np.all(x >= 0):
        lo = max(lo, 0.0)
    return Interval(mean, lo, hi, int(x.size))


def unit_of(metric: str) -> str:
    return METRICS[metric].unit if metric in METRICS else ""


@dataclass(frozen=True)
class SloTerm:
    """One SLO term of recommend (`p99_ms<=100`): the metric it reads, the operator and
    the bound."""

    name: str
    metric: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> SloTerm:
        match = _SLO_RE.match(text)
        if not match:
            raise InputError(
                f"'{text}' is not METRIC<=VALUE (e.g. p99_ms<=100, attainment>=0.99)",
                option="slo",
            )
        name, op, bound = match.groups()
        # a short name (p99_ms, stall_max), or any registry metric by its full name
        metric = SLO_NAMES.get(name) or (name if name in METRICS else None)
        if metric is None:
            raise InputError(
                f"unknown metric '{name}'; one of {', '.join(SLO_NAMES)}, or any metric of "
                "the registry by its full name (latency_p95_ms, robots_stall_fraction_max, ...)",
                option="slo",
            )
        if not math.isfinite(float(bound)):
            raise InputError(f"'{text}': the bound must be a finite number", option="slo")
        return cls(name, metric, op, float(bound))

    @property
    def upper(self) -> bool:
        return self.op in ("<=", "<")

    def _within(self, value: float) -> bool:
        return {
            "<=": value <= self.bound,
            "<": value < self.bound,
            ">=": value >= self.bound,
            ">": value > self.bound,
        }[self.op]

    def judge(self, values: Sequence[Any], final: bool = False) -> tuple[str, float]:
        """(verdict, shortfall) of the replications' values: pass when the whole interval
        is within the bound, fail when the whole interval is past it, else uncertain. With
        one replication the interval is unknown: uncertain, unless `final` (no more
        replications may run), when the value alone decides. The shortfall is how far the
        interval's worst end lies past the bound, relative to the bound's size (<= 0: met;
        inf: no value, e.g. nothing completed)."""
        if len(_clean(values)) < len(values) or not values:
            return FAIL, math.inf
        iv = interval(values, unit_of(self.metric))
        worst, best = (iv.hi, iv.lo) if self.upper else (iv.lo, iv.hi)
        if not iv.known:
            worst = best = iv.mean
        scale = abs(self.bound) or 1.0
        shortfall = (worst - self.bound if self.upper else self.bound - worst) / scale
        if not iv.known and not final:
            return UNCERTAIN, shortfall
        if self._within(worst):
            return PASS, shortfall
        if not self._within(best):
            return FAIL, shortfall
        return UNCERTAIN, shortfall

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.bound:g}"


def combine(verdicts: Sequence[str]) -> str:
    """A probe's verdict from its terms': any fail fails it, else any uncertain leaves it
    uncertain, else it passes."""
    if FAIL in verdicts:
        return FAIL
    return UNCERTAIN if UNCERTAIN in verdicts else PASS


def next_count(n: int, cap: int) -> int:
    """How many replications a still-uncertain probe runs next: half as many again
    (rounded up), up to the cap: 2, 3, 5, 8, 12, ..."""
    return min(cap, math.ceil(n * 1.5))
