"""`batchsim recommend`: the best configuration that meets an SLO, by capacity search.

For every configuration of the policy space (a grid of scenario keys), a capacity
search finds the most load it sustains within the SLO, as Vidur-Search does for
QPS: starting from the scenario's value, the load is doubled (or halved) until the
SLO flips, then bisected to 2%. The load is the arrival rate (max-throughput), the
fleet size (max-robots), or, the other way round, the fewest replicas that meet the
SLO at the scenario's load (min-replicas; min-cost and min-energy search the same and
rank those fleets by $/h, each priced by its own profile's GPU, or by joules per
request). "Meets the SLO" is judged with confidence: a probe runs R replications
(common random numbers), and more while the 95% interval of an SLO metric straddles its
bound, up to a cap; it passes (fails) only when every interval lies clear of its bound,
and is otherwise uncertain, which the search treats as not shown to pass
(sim.experiments.stats). answer.py words the outcome.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.config import checks, load, parse
from sim.config.limits import DEFAULT, Limits, check
from sim.errors import InputError, Interrupted
from sim.experiments import answer
from sim.experiments.floors import check_priced, slo_floor
from sim.experiments.stats import (
    FAIL,
    PASS,
    UNCERTAIN,
    SloTerm,
    combine,
    interval,
    next_count,
    unit_of,
)
from sim.experiments.sweep import parse_grid, run_point

# the load keys the objectives search: they move the traffic and the cluster, not what the
# profile must cover
LOAD_KEYS = ("workload.rate_rps", "workload.count", "cluster.replicas", "workload.rate_hz")
OBJECTIVES = {
    "max-throughput": ("workload.rate_rps", "max"),
    "max-robots": ("workload.count", "max"),
    "min-replicas": ("cluster.replicas", "min"),
    # the fewest replicas that meet the SLO, per configuration; the winner is the cheapest
    # (or least energy) of those fleets, each priced by its own profile's GPU
    "min-cost": ("cluster.replicas", "min"),
    "min-energy": ("cluster.replicas", "min"),
}
# what the min-cost and min-energy objectives rank feasible fleets by (lowest first)
RANKED_BY = {"min-cost": "cost_usd_per_hour", "min-energy": "energy_joules_per_request"}
DEFAULT_CAP = 10  # replications a probe may take before it is called uncertain
# what every probe keeps beside its SLO terms (shown in the frontier where present)
KEPT = (
    "throughput_rps",
    "latency_p99_ms",
    "slo_attainment",
    "requests_arrived",  # what each probe simulated (in its measured window)
    "cost_usd_per_hour",
    "cost_usd_per_million_requests",
    "energy_joules_per_request",
    "robots_stall_fraction",  # fleets: what the robots feel
    "robots_round_trip_p99_ms",
    "robots_rtc_late_share",  # real-time chunking robots: how many chunks came late
)


@dataclass
class Evaluation:
    load: float
    feasible: bool  # shown to meet every SLO term (verdict pass)
    metrics: dict[str, tuple[float, float, float]]  # metric -> (mean, lo, hi) of the 95% interval
    failed: list[str] = field(default_factory=list)  # the SLO terms it was shown to miss
    # how far its worst SLO term is past its bound, relative to the bound (<= 0: met)
    shortfall: float = 0.0
    verdict: str = PASS  # pass, fail, or uncertain (an interval still straddles a bound)
    replications: int = 1  # how many it took to decide (or the cap, if uncertain)
    straddling: list[str] = field(default_factory=list)  # uncertain: the terms straddling

    @property
    def uncertain(self) -> bool:
        return self.verdict == UNCERTAIN


@dataclass
class Candidate:
    config: dict[str, Any]
    best: Evaluation | None = None  # the extreme feasible load found
    evaluations: list[Evaluation] = field(default_factory=list)
    note: str | None = None  # why the search stopped where it did (infeasible ones)

    def closest(self) -> Evaluation | None:
        """An infeasible configuration's nearest miss: the probe whose worst SLO term came
        closest to its bound."""
        if self.best is not None or not self.evaluations:
            return None
        return min(self.evaluations, key=lambda e: e.shortfall)


def parse_space(items: Sequence[str], limits: Limits = DEFAULT) -> dict[str, list[Any]]:
    """KEY=V1,V2,... or KEY=LO:HI[:STEP] (integers); at most limits.max_points
    configurations in all, counted before any is listed."""
    plain, ranges = [], {}
    for item in items:
        key, _, raw = item.partition("=")
        m = re.fullmatch(r"\s*(-?\d+):(-?\d+)(?::(\d+))?\s*", raw)
        if m:
            lo, hi, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
            if hi < lo or step < 1:
                raise InputError(
                    f"'{raw}' is not LO:HI[:STEP] with LO <= HI", option="space", given=item
                )
            what = "{n} configurations"
            count = (hi - lo) // step + 1
            check("max_points", count, limits, what, option="space", given=item)
            ranges[key.strip()] = range(lo, hi + 1, step)
        else:
            plain.append(item)
    space = parse_grid(plain, "space")  # the syntax of a sweep's grid
    space.update(ranges)
    total = math.prod(len(values) for values in space.values())
    check("max_points", total, limits, "{n} configurations", option="space")
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
        max_replications: int | None = None,
    ):
        if objective not in OBJECTIVES:
            raise InputError(
                f"unknown objective '{objective}'; one of {', '.join(OBJECTIVES)}",
                option="objective",
            )
        self.objective = objective
        self.search_key, self.direction = OBJECTIVES[objective]
        self.ranked_by = RANKED_BY.get(objective)  # what min-cost and min-energy rank by
        if search_key:
            self.search_key = search_key
        self.slo = [SloTerm.parse(s) for s in slo]
        if not self.slo:
            raise InputError("give at least one term (e.g. 'p99_ms<=100')", option="slo")
        if replications < 1:
            raise InputError("must be >= 1", option="replications")
        self.replications = replications
        # a probe whose interval straddles a bound runs more, up to this many
        self.max_replications = max(replications, max_replications or DEFAULT_CAP)
        if max_replications is not None and max_replications < replications:
            raise InputError(
                f"must be >= --replications ({replications})", option="max_replications"
            )
        self.tolerance = tolerance
        self.scenario_path = Path(scenario_path)
        parsed = parse(self.scenario_path, list(overrides))
        self.base = {k: v for k, v in parsed.data.items() if k != "sweep"}
        self.base_dir = str(parsed.base)
        self.base_seed = parsed.scenario.seed
        self.space = parse_space(space, parsed.scenario.limits)
        self.integer = self.search_key in ("workload.count", "cluster.replicas")
        start = _get(self.base, self.search_key)
        if start is None and self.search_key == "cluster.replicas":
            start = 1  # the default a scenario without cluster: runs with
        if not isinstance(start, int | float) or isinstance(start, bool) or start <= 0:
            raise InputError(
                f"the {objective} search varies {self.search_key}, which this scenario does not set "
                "to a positive number; choose the key with {search}",
                source=str(self.scenario_path),
                mentions=("search",),
            )
        self.start = start
        self.configs = [dict(zip(self.space, combo, strict=True)) for combo in _product(self.space)]
        self.floors: dict[str, str] = {}  # configuration -> why no load can meet the SLO
        self.warnings: list[str] = []  # what the CLI should say beside the answer
        resolved = []
        for config in self.configs:  # every configuration must load before any work
            loaded = load(self.base, config, base=parsed.base, origin=str(self.scenario_path),
                          option="space")  # fmt: skip
            resolved.append(loaded)
            where = f" ({answer.named(config)})" if config else ""
            check_priced(objective, loaded.pricing, where, str(self.scenario_path))
            floor = self.floor(loaded)
            if floor is not None:
                self.floors[_config_key(config)] = floor
        wanted = 256 if self.integer else start * 4096
        self.max_value = max_value or self._ceiling(wanted, resolved)

    def floor_of(self, config: dict[str, Any]) -> str | None:
        """Why this configuration was refused before any probe (see floor), or None."""
        return self.floors.get(_config_key(config))

    def floor(self, loaded: Any) -> str | None:
        """Why this configuration cannot meet the SLO at any load or replica count, or None
        (sim.experiments.floors)."""
        return slo_floor(loaded, self.slo)

    def _ceiling(self, wanted: float, resolved: list[Any]) -> float:
        """The highest load the search may probe: `wanted`, halved until every
        configuration is within the scenario's work limits there (a search must not
        stop half way on a limit). Each configuration was loaded once (`resolved`); the
        load key moves only the traffic and the cluster, so at each halving its schema
        is validated again and the work checked against the profile it already read."""
        if self.search_key not in LOAD_KEYS:  # another key may change what the profile must hold
            resolved = [None] * len(self.configs)
        value = wanted
        while value > self.start:
            load_value = int(value) if self.integer else value
            try:
                for config, loaded in zip(self.configs, resolved, strict=True):
                    overrides = {**config, self.search_key: load_value}
                    where = {"base": Path(self.base_dir), "origin": str(self.scenario_path)}
                    if loaded is None:
                        load(self.base, overrides, **where)
                        continue
                    s = parse(self.base, overrides, **where).scenario
                    checks.check_work(s, loaded.source, loaded.profile)
                    checks.check_requests(s, loaded.source, loaded.profile.min_latency_s)
                return value
            except InputError:
                value = max(value // 2, 1) if self.integer else value / 2
        return self.start

    def evaluate(self, config: dict[str, Any], load: float) -> Evaluation:
        """One probe: `replications` runs (seeds base, base+1, ...: the same for every
        configuration and load), then more while an SLO term's interval straddles its
        bound, up to `max_replications`; judged pass, fail or uncertain
        (sim.experiments.stats)."""
        overrides = {**config, self.search_key: int(load) if self.integer else load}
        rows: list[dict[str, Any]] = []
        count = self.replications
        while True:
            rows += [
                run_point(self.base, self.base_dir, overrides, self.base_seed + r)
                for r in range(len(rows), count)
            ]
            ev = self._judge(float(load), rows)
            if not ev.uncertain or count >= self.max_replications:
                return ev
            count = next_count(count, self.max_replications)

    def _judge(self, load: float, rows: list[dict[str, Any]]) -> Evaluation:
        final = len(rows) >= self.max_replications
        metrics = {}
        for name in {t.metric for t in self.slo} | set(KEPT):
            values = [row.get(name) for row in rows]
            if all(v is not None for v in values):
                iv = interval(values, unit_of(name))
                metrics[name] = (iv.mean, iv.lo, iv.hi)
        judged = [(t, *t.judge([row.get(t.metric) for row in rows], final)) for t in self.slo]
        verdict = combine([v for _, v, _ in judged])
        return Evaluation(
            load,
            verdict == PASS,
            metrics,
            failed=[str(t) for t, v, _ in judged if v == FAIL],
            shortfall=max(s for _, _, s in judged),
            verdict=verdict,
            replications=len(rows),
            straddling=[str(t) for t, v, _ in judged if v == UNCERTAIN],
        )

    def search(
        self,
        config: dict[str, Any],
        on_probe: Callable[[dict[str, Any], Evaluation, bool], None] | None = None,
        known: dict[str, Evaluation] | None = None,
    ) -> Candidate:
        """The extreme feasible load for one configuration (max, or min for replicas).
        `on_probe(config, evaluation, reused)` hears of every probe as it ends; `known`
        holds earlier probes (probe_key -> Evaluation), reused instead of rerun."""
        cand = Candidate(config)
        floor = self.floor_of(config)
        if floor is not None:  # no load can beat it: refused before any probe
            cand.note = floor
            return cand

        def probe(x: float) -> bool:
            key = probe_key(config, float(x))
            reused = known is not None and key in known
            ev = known[key] if reused else self.evaluate(config, x)
            cand.evaluations.append(ev)
            if on_probe is not None:
                on_probe(config, ev, reused)
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
                    # doubling again is pointless when the last two doublings did not bring
                    # the worst SLO term 1% of its bound closer than the best before them
                    evs = cand.evaluations
                    if (
                        len(evs) >= 3
                        and min(e.shortfall for e in evs[-2:]) > evs[-3].shortfall - 0.01
                    ):
                        cand.note = (
                            f"more {self.search_key.split('.')[-1]} stopped helping: the worst "
                            f"term was {evs[-3].shortfall:+.1%} past its bound at "
                            f"{answer.fmt_load(evs[-3].load)}, then "
                            + " and ".join(
                                f"{e.shortfall:+.1%} at {answer.fmt_load(e.load)}" for e in evs[-2:]
                            )
                        )
                        break
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

    def identity(self) -> dict[str, Any]:
        """What makes two searches the same (a probe log's header)."""
        return {
            "scenario": self.base,
            "space": self.space,
            "slo": [str(t) for t in self.slo],
            "objective": self.objective,
            "search_key": self.search_key,
            "replications": self.replications,
            "max_replications": self.max_replications,
        }

    def run(
        self,
        workers: int | None = None,
        on_done: Callable[[Candidate], None] | None = None,
        on_probe: Callable[[dict[str, Any], Evaluation, bool], None] | None = None,
        log: ProbeLog | None = None,
    ) -> list[Candidate]:
        """Search every configuration (on Dask when workers > 1) and rank them. Every probe
        is reported to `on_probe` and kept in `log` as it ends (on Dask: as its
        configuration ends), and a probe `log` already holds is not run again."""
        known = log.known if log is not None else None

        def heard(config: dict[str, Any], ev: Evaluation, reused: bool) -> None:
            if log is not None:
                log.add(config, ev)
            if on_probe is not None:
                on_probe(config, ev, reused)

        results: list[Candidate] = []
        try:
            if workers and workers > 1 and len(self.configs) > 1:
                from sim.experiments.executor import fan_out

                jobs = [(c, None, known) for c in self.configs]
                searched = fan_out(self.search, jobs, workers)
                with closing(searched):  # the cluster closes at once, also on Ctrl-C
                    for _, cand in searched:
                        for ev in cand.evaluations:
                            reused = known is not None and probe_key(cand.config, ev.load) in known
                            heard(cand.config, ev, reused)
                        results.append(cand)
                        if on_done:
                            on_done(cand)
            else:
                for config in self.configs:
                    results.append(self.search(config, heard, known))
                    if on_done:
                        on_done(results[-1])
        except KeyboardInterrupt:
            kept = (
                f"{len(log.known)} probes are saved in {log.path}; the same command reuses them"
                if log is not None
                else "nothing is saved (give an output folder to keep the probes and resume)"
            )
            raise Interrupted(
                f"{len(results)} of {len(self.configs)} configurations searched; {kept}"
            ) from None
        return self.rank(results)

    def rank(self, candidates: list[Candidate]) -> list[Candidate]:
        # exact ties (configurations that run alike) go to the one listed first, whatever
        # order the workers finished in
        listed = {_config_key(c): i for i, c in enumerate(self.configs)}

        ranked_by = self.ranked_by

        def score(c: Candidate) -> tuple:
            position = listed.get(_config_key(c.config), len(listed))
            if c.best is None:
                return (1, 0.0, 0.0, position)
            p99 = c.best.metrics.get("latency_p99_ms", (math.inf, 0))[0]
            if ranked_by is not None:  # feasible first, cheapest (least energy), lowest p99
                return (0, c.best.metrics.get(ranked_by, (math.inf, 0))[0], p99, position)
            load = c.best.load if self.direction == "max" else -c.best.load
            return (0, -load, p99, position)  # feasible first, most load, lowest p99

        return sorted(candidates, key=score)

    def explain(self, ranked: list[Candidate]) -> str:
        """The answer in one line (sim.experiments.answer)."""
        return answer.explain(self, ranked)

    def phase_lock_warnings(self, ranked: list[Candidate]) -> list[str]:
        """A fleet whose robots all send exactly on their ticks (jitter_ms 0) can phase-lock:
        the same robots share every batch. Each configuration's answer (its best load, or
        its nearest miss) is probed again with 1 ms of send jitter; where feasibility flips,
        or the worst SLO term moves by 5% of its bound, the answer depends on the lockstep."""
        loaded = load(self.base, {}, base=Path(self.base_dir), origin=str(self.scenario_path))
        workload = loaded.scenario.workload
        if workload.kind != "robots" or any(g.jitter_ms > 0 for g in workload.groups):
            return []

        def moved(a: Evaluation, b: Evaluation) -> bool:
            for t in self.slo:
                ma, mb = a.metrics.get(t.metric, (None,))[0], b.metrics.get(t.metric, (None,))[0]
                if ma is not None and mb is not None and abs(ma - mb) > 0.05 * (abs(t.bound) or 1):
                    return True
            return a.verdict != b.verdict

        lines = []
        for cand in ranked:
            # the answer (best load or nearest miss) and the search's last probe
            points = {e.load: e for e in (cand.best or cand.closest(), *cand.evaluations[-1:]) if e}
            for ev in points.values():
                jittered = self.evaluate({**cand.config, "workload.jitter_ms": 1.0}, ev.load)
                if not moved(ev, jittered):
                    continue
                lines.append(
                    f"{answer.where(cand.config)} at {self.search_key}={answer.fmt_load(ev.load)}: "
                    f"{answer.describe_probe(ev, self.slo)} with jitter_ms 0, "
                    f"{answer.describe_probe(jittered, self.slo)} with 1 ms "
                    f"({jittered.verdict}): the robots phase-lock (the "
                    "same robots share every batch); the answer depends on it, so set "
                    "workload.jitter_ms to what your robots do"
                )
                break  # one warning per configuration
        return lines

    def infeasible_line(self, cand: Candidate) -> str:
        """One line on why a configuration has no load shown to meet the SLO."""
        return answer.infeasible_line(self, cand)

    def report(self, ranked: list[Candidate]) -> dict[str, Any]:
        """recommend.json (sim.experiments.answer)."""
        return answer.report(self, ranked)


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def probe_key(config: dict[str, Any], load: float) -> str:
    """One probe's identity in a probe log: its configuration and load."""
    return json.dumps([config, load], sort_keys=True, default=str)


class ProbeLog:
    """recommend's probes, one JSON line each in OUT/probes.jsonl, appended as they end: a
    killed search rerun with the same --out reuses them instead of simulating again. The
    first line names the search (scenario, space, SLO, objective, replications); a log of
    another search is refused."""

    def __init__(self, path: Path, search: dict[str, Any]):
        self.path = path
        self.known: dict[str, Evaluation] = {}
        header = json.dumps({"search": search}, sort_keys=True, default=str)
        if path.exists():
            lines = path.read_text().splitlines()
            if lines and lines[0] != header:
                raise InputError(
                    "holds the probes of a different search (scenario, space, SLO, objective "
                    "or replications differ, or an older batchsim wrote it); use another "
                    "output folder",
                    source=str(path),
                )
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                    ev = Evaluation(
                        row["load"], row["feasible"],
                        {k: tuple(v) for k, v in row["metrics"].items()},
                        row["failed"], row["shortfall"], row["verdict"],
                        row["replications"], row["straddling"],
                    )  # fmt: skip
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill: that probe runs again
                self.known[probe_key(row["config"], row["load"])] = ev
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(header + "\n")

    def add(self, config: dict[str, Any], ev: Evaluation) -> None:
        key = probe_key(config, ev.load)
        if key in self.known:
            return
        self.known[key] = ev
        row = {
            "config": config,
            "load": ev.load,
            "feasible": ev.feasible,
            "metrics": ev.metrics,
            "failed": ev.failed,
            "shortfall": ev.shortfall if math.isfinite(ev.shortfall) else 1e300,
            "verdict": ev.verdict,
            "replications": ev.replications,
            "straddling": ev.straddling,
        }
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")


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
