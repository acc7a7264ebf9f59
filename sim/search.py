"""`batchsim recommend`: the best configuration that meets an SLO, by capacity search.

For every configuration of the policy space (a grid of scenario keys), a capacity
search finds the most load it sustains within the SLO, as Vidur-Search does for
QPS: starting from the scenario's value, the load is doubled (or halved) until the
SLO flips, then bisected to 2%. The load is the arrival rate (max-throughput), the
fleet size (max-robots), or, the other way round, the fewest replicas that meet the
SLO at the scenario's load (min-replicas). "Meets the SLO" is judged with
confidence: over R replications (common random numbers), the 95% interval of every
SLO metric must lie on the right side of its bound.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import InputError, Interrupted
from sim.limits import DEFAULT, Limits, check
from sim.metrics import SLO_NAMES
from sim.scenario import load, parse
from sim.sweeps import confidence_interval, parse_grid, run_point

OBJECTIVES = {
    "max-throughput": ("workload.rate_rps", "max"),
    "max-robots": ("workload.count", "max"),
    "min-replicas": ("cluster.replicas", "min"),
}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SLO_RE = re.compile(rf"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*({_NUMBER})\s*$")


@dataclass(frozen=True)
class SloTerm:
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
                source="--slo",
            )
        name, op, bound = match.groups()
        if name not in SLO_NAMES:
            raise InputError(
                f"unknown metric '{name}'; one of {', '.join(SLO_NAMES)}", source="--slo"
            )
        if not math.isfinite(float(bound)):
            raise InputError(f"'{text}': the bound must be a finite number", source="--slo")
        return cls(name, SLO_NAMES[name], op, float(bound))

    def met(self, values: Sequence[float | None]) -> bool:
        """True when the 95% interval of the values lies within the bound (the value itself
        with one replication)."""
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            return False  # e.g. nothing completed
        mean, half = confidence_interval(values)
        half = 0.0 if math.isnan(half) else half
        if self.op in ("<=", "<"):
            worst = mean + half
            return worst <= self.bound if self.op == "<=" else worst < self.bound
        worst = mean - half
        return worst >= self.bound if self.op == ">=" else worst > self.bound

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.bound:g}"


@dataclass
class Evaluation:
    load: float
    feasible: bool
    metrics: dict[str, tuple[float, float]]  # metric -> (mean, ci95 half-width)


@dataclass
class Candidate:
    config: dict[str, Any]
    best: Evaluation | None = None  # the extreme feasible load found
    evaluations: list[Evaluation] = field(default_factory=list)


def parse_space(items: Sequence[str], limits: Limits = DEFAULT) -> dict[str, list[Any]]:
    """--space KEY=V1,V2,... or KEY=LO:HI[:STEP] (integers); at most limits.max_points
    configurations in all, counted before any is listed."""
    plain, ranges = [], {}
    for item in items:
        key, _, raw = item.partition("=")
        m = re.fullmatch(r"\s*(-?\d+):(-?\d+)(?::(\d+))?\s*", raw)
        if m:
            lo, hi, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
            if hi < lo or step < 1:
                raise InputError(
                    f"'{raw}' is not LO:HI[:STEP] with LO <= HI", source=f"--space {item}"
                )
            what = "{n} configurations"
            count = (hi - lo) // step + 1
            check("max_points", count, limits, what, source=f"--space {item}", field=None)
            ranges[key.strip()] = range(lo, hi + 1, step)
        else:
            plain.append(item)
    try:
        space = parse_grid(plain)
    except InputError as exc:  # the same syntax as --grid, but the user typed --space
        raise InputError(
            exc.message, source=(exc.source or "").replace("--grid", "--space"), field=exc.field
        ) from None
    space.update(ranges)
    total = math.prod(len(values) for values in space.values())
    check("max_points", total, limits, "{n} configurations", source="--space", field=None)
    return {key: list(values) for key, values in space.items()}


class Recommender:
    """Capacity search over a policy space for one scenario."""

    def __init__(
        self,
        scenario_path: str | Path,
        slo: Sequence[str],
        objective: str = "max-throughput",
        space: Sequence[str] = (),
        replications: int = 2,
        search_key: str | None = None,
        overrides: Sequence[str] = (),
        tolerance: float = 0.02,
        max_value: float | None = None,
    ):
        if objective not in OBJECTIVES:
            raise InputError(
                f"unknown objective '{objective}'; one of {', '.join(OBJECTIVES)}",
                source="--objective",
            )
        self.objective = objective
        self.search_key, self.direction = OBJECTIVES[objective]
        if search_key:
            self.search_key = search_key
        self.slo = [SloTerm.parse(s) for s in slo]
        if not self.slo:
            raise InputError("give at least one --slo (e.g. --slo 'p99_ms<=100')", source="--slo")
        if replications < 1:
            raise InputError("must be >= 1", source="--replications")
        self.replications = replications
        self.tolerance = tolerance
        self.scenario_path = Path(scenario_path)
        parsed = parse(self.scenario_path, list(overrides))
        self.base = {k: v for k, v in parsed.data.items() if k != "sweep"}
        self.base_dir = str(parsed.base)
        self.base_seed = parsed.scenario.seed
        self.space = parse_space(space, parsed.scenario.limits)
        self.integer = self.search_key in ("workload.count", "cluster.replicas")
        start = _get(self.base, self.search_key)
        if not isinstance(start, int | float) or isinstance(start, bool) or start <= 0:
            raise InputError(
                f"the {objective} search varies {self.search_key}, which this scenario does not set "
                f"to a positive number; choose the key with --search",
                source=str(self.scenario_path),
            )
        self.start = start
        self.configs = [dict(zip(self.space, combo, strict=True)) for combo in _product(self.space)]
        for config in self.configs:  # every configuration must load before any work
            load(self.base, config, base=parsed.base, origin=str(self.scenario_path),
                 flag="--space")  # fmt: skip
        self.max_value = max_value or self._ceiling(256 if self.integer else start * 4096)

    def _ceiling(self, wanted: float) -> float:
        """The highest load the search may probe: `wanted`, halved until every
        configuration is within the scenario's work limits there (a search must not
        stop half way on a limit)."""
        value = wanted
        while value > self.start:
            load_value = int(value) if self.integer else value
            try:
                for config in self.configs:
                    load(self.base, {**config, self.search_key: load_value},
                         base=Path(self.base_dir), origin=str(self.scenario_path))  # fmt: skip
                return value
            except InputError:
                value = max(value // 2, 1) if self.integer else value / 2
        return self.start

    def evaluate(self, config: dict[str, Any], load: float) -> Evaluation:
        overrides = {**config, self.search_key: int(load) if self.integer else load}
        rows = [
            run_point(self.base, self.base_dir, overrides, self.base_seed + r)
            for r in range(self.replications)
        ]
        metrics = {}
        for name in {t.metric for t in self.slo} | {
            "throughput_rps",
            "latency_p99_ms",
            "slo_attainment",
        }:
            values = [row.get(name) for row in rows]
            if all(v is not None for v in values):
                metrics[name] = confidence_interval(values)
        feasible = all(t.met([row.get(t.metric) for row in rows]) for t in self.slo)
        return Evaluation(float(load), feasible, metrics)

    def search(self, config: dict[str, Any]) -> Candidate:
        """The extreme feasible load for one configuration (max, or min for replicas)."""
        cand = Candidate(config)

        def probe(x: float) -> bool:
            ev = self.evaluate(config, x)
            cand.evaluations.append(ev)
            return ev.feasible

        def keep(x: float) -> None:
            cand.best = next(e for e in reversed(cand.evaluations) if e.load == float(x))

        if self.direction == "max":
            lo, hi = None, None
            x = self.start
            if probe(x):
                lo = x
                while hi is None and x < self.max_value:
                    x = min(x * 2, self.max_value)
                    if probe(x):
                        lo = x
                    else:
                        hi = x
                if hi is None:
                    keep(lo)
                    return cand
            else:
                hi = x
                while lo is None and x > (1 if self.integer else self.start / 4096):
                    x = max(x // 2, 1) if self.integer else x / 2
                    if probe(x):
                        lo = x
                    else:
                        hi = x
                        if self.integer and x == 1:
                            break
                if lo is None:
                    return cand
            while self._apart(lo, hi):
                mid = (lo + hi) // 2 if self.integer else (lo + hi) / 2
                if probe(mid):
                    lo = mid
                else:
                    hi = mid
            keep(lo)
        else:  # the fewest that meet the SLO
            lo_bad, good = 0, None
            x = 1
            while good is None and x <= self.max_value:
                if probe(x):
                    good = x
                else:
                    lo_bad = x
                    x *= 2
            if good is None:
                return cand
            while good - lo_bad > 1:
                mid = (good + lo_bad) // 2
                if probe(mid):
                    good = mid
                else:
                    lo_bad = mid
            keep(good)
        return cand

    def _apart(self, lo: float, hi: float) -> bool:
        if self.integer:
            return hi - lo > 1
        return (hi - lo) / hi > self.tolerance

    def run(
        self, workers: int | None = None, on_done: Callable[[Candidate], None] | None = None
    ) -> list[Candidate]:
        """Search every configuration (on Dask when workers > 1) and rank them."""
        if workers and workers > 1 and len(self.configs) > 1:
            from dask.distributed import as_completed

            from sim.cluster import local_cluster

            results = []
            try:
                with local_cluster(workers) as client:
                    futures = [client.submit(self.search, c, pure=False) for c in self.configs]
                    for future in as_completed(futures):
                        results.append(future.result())
                        if on_done:
                            on_done(results[-1])
            except KeyboardInterrupt:
                raise Interrupted(
                    f"{len(results)} of {len(self.configs)} configurations were searched; "
                    "recommend does not resume yet, so a rerun starts again"
                ) from None
        else:
            results = []
            for config in self.configs:
                results.append(self.search(config))
                if on_done:
                    on_done(results[-1])
        return self.rank(results)

    def rank(self, candidates: list[Candidate]) -> list[Candidate]:
        def score(c: Candidate) -> tuple:
            if c.best is None:
                return (1, 0.0, 0.0)
            load = c.best.load if self.direction == "max" else -c.best.load
            p99 = c.best.metrics.get("latency_p99_ms", (math.inf, 0))[0]
            return (0, -load, p99)  # feasible first, most load, then lowest p99

        return sorted(candidates, key=score)

    def explain(self, ranked: list[Candidate]) -> str:
        what = {"max": "sustains", "min": "needs"}[self.direction]
        unit = self.search_key
        slo = " and ".join(str(t) for t in self.slo)
        win = ranked[0] if ranked else None
        if win is None or win.best is None:
            return f"no configuration meets {slo} at any {unit} tried"
        text = f"winner {win.config or '(scenario as is)'} {what} {unit}={_fmt(win.best.load)} within {slo}"
        if len(ranked) > 1 and ranked[1].best is not None:
            r = ranked[1]
            text += f"; runner-up {r.config} {what} {_fmt(r.best.load)}"
            if self.direction == "max" and r.best.load > 0:
                text += f" ({win.best.load / r.best.load - 1:+.1%} for the winner)"
        return text

    def report(self, ranked: list[Candidate]) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "search_key": self.search_key,
            "slo": [str(t) for t in self.slo],
            "replications": self.replications,
            "explanation": self.explain(ranked),
            "frontier": [
                {
                    "config": c.config,
                    "feasible": c.best is not None,
                    "load": None if c.best is None else c.best.load,
                    "metrics": {}
                    if c.best is None
                    else {k: {"mean": m, "ci95": h} for k, (m, h) in c.best.metrics.items()},
                    "probes": len(c.evaluations),
                }
                for c in ranked
            ],
        }


def _fmt(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def _get(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _product(space: dict[str, list[Any]]) -> list[tuple]:
    import itertools

    return list(itertools.product(*space.values())) if space else [()]
