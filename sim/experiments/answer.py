"""What recommend says about a finished search: the winner line with its margin and
whether the margin exceeds the noise, the one line per infeasible or uncertain
configuration, and recommend.json's report.

A configuration's limit is bracketed by its probes: the extreme load shown to meet the SLO
(pass) and the nearest one shown to miss it (fail); probes in between were uncertain (an
interval straddled a bound at the replication cap) or not run (the bisection's 2%). The
winner's margin exceeds the noise only when the runner-up was shown to fail where it
would have to pass to match the winner (sim.experiments.stats).

May import: errors, metrics, experiments (the Recommender and its candidates are passed in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sim.experiments.stats import FAIL, LEVEL, SloTerm

METHOD = (
    "each probe runs its replications (common random numbers), and more while an SLO "
    "term's 95% interval straddles its bound, up to the cap; a probe is pass or fail only "
    "when every interval is clear of its bound, else uncertain. Intervals: Student t on the "
    "log of positive figures (percentiles, rates), on the mean of shares (cut to [0, 1])"
)


def fmt_load(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def named(config: dict[str, Any]) -> str:
    """A configuration as the winner line shows it: {'policy': 'deadline max_batch=32'}."""
    from sim.experiments.sweep import label

    return str({k: label(v) for k, v in config.items()}) if config else "(scenario as is)"


def where(config: dict[str, Any]) -> str:
    """A configuration as probe lines and warnings show it: "policy.max_batch=8"."""
    from sim.experiments.sweep import label

    return " ".join(f"{k}={label(v)}" for k, v in config.items()) or "(scenario)"


def fmt_interval(
    mean: float, lo: float | None, hi: float | None, spec: str = ".4g", ends: str = ".3g"
) -> str:
    """ "94.2 [92.8, 95.9]" (the mean as `spec`, the interval's ends as `ends`); the value
    alone with one replication, or when all agree."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi) or lo == hi:
        return f"{mean:{spec}}"
    return f"{mean:{spec}} [{lo:{ends}}, {hi:{ends}}]"


def describe_probe(ev: Any, slo: Sequence[SloTerm]) -> str:
    """A probe's constrained figures, each against its bound: "p99_ms 94.2 [92.8, 95.9]
    (<=100)"."""
    parts = []
    for term in slo:
        mean, lo, hi = ev.metrics.get(term.metric, (None, None, None))
        if mean is None:
            parts.append(f"{term.name} - ({term.op}{term.bound:g})")
            continue
        parts.append(f"{term.name} {fmt_interval(mean, lo, hi)} ({term.op}{term.bound:g})")
    return ", ".join(parts)


def verdict_text(ev: Any) -> str:
    """ "pass", "FAIL p99_ms<=100", or "uncertain: p99_ms<=100 straddles its bound after
    10 replications"."""
    if ev.feasible:
        return "pass"
    if ev.verdict == FAIL:
        return "FAIL " + ", ".join(ev.failed)
    terms = ", ".join(ev.straddling)
    return (
        f"uncertain: {terms} straddle{'s' if len(ev.straddling) == 1 else ''} the bound "
        f"after {ev.replications} replications"
    )


def priced(ev: Any) -> str:
    """ " at $X/h ($Y per million requests), Z J per request" where the probe has them."""
    parts = []
    per_hour = ev.metrics.get("cost_usd_per_hour", (None,))[0]
    per_million = ev.metrics.get("cost_usd_per_million_requests", (None,))[0]
    joules = ev.metrics.get("energy_joules_per_request", (None,))[0]
    if per_hour is not None:
        parts.append(
            f"${per_hour:.2f}/h"
            + ("" if per_million is None else f" (${per_million:.3g} per million requests)")
        )
    if joules is not None:
        parts.append(f"{joules:.3g} J per request")
    return (" at " + ", ".join(parts)) if parts else ""


def margin(rec: Any, win: Any, runner: Any) -> str:
    """How much the winner wins by, and whether that exceeds the noise: it does when the
    runner-up was shown to fail (not merely not shown to pass) where it would have to pass
    to match the winner."""
    w, r = win.best, runner.best
    fails = [e.load for e in runner.evaluations if e.verdict == FAIL]
    ranked_by = rec.ranked_by
    if ranked_by is not None:
        mine = w.metrics.get(ranked_by, (None, None, None))
        theirs = r.metrics.get(ranked_by, (None, None, None))
        if mine[0] is None or not theirs[0]:
            return ""
        text = f"{priced(r)} ({mine[0] / theirs[0] - 1:+.1%} for the winner"
        # cost and energy per request grow at least in proportion to the replicas (idle
        # power and price per GPU), so the runner-up matches the winner only at counts up
        # to this; it must have failed at one of them or above
        reach = math.floor(r.load * mine[0] / theirs[0])
        shown = reach < 1 or any(f >= reach for f in fails)
        clear = _clear_of(mine, theirs)
        if shown and clear:
            return text + ", beyond the noise)"
        if shown:
            return text + ", within the noise: the figures' intervals overlap)"
        at = f"{rec.search_key}={fmt_load(max(reach, 1))}"
        return text + f", within the noise: the runner-up was not shown to fail at {at})"
    if w.load == r.load:
        p99 = (w.metrics.get("latency_p99_ms"), r.metrics.get("latency_p99_ms"))
        if None not in p99 and _clear_of(*p99):
            return " (a tie on the load; the winner's p99 is lower, beyond the noise)"
        return " (a tie on the load, and their p99 intervals overlap: either will do)"
    if rec.direction == "max":
        text = f" ({w.load / r.load - 1:+.1%} for the winner"
        below = [f for f in fails if f <= w.load]
        if below:
            return text + f", beyond the noise: the runner-up failed at {fmt_load(min(below))})"
        above = sorted((e for e in runner.evaluations if e.load > r.load), key=lambda e: e.load)
        between = [e for e in above if e.load <= w.load]
        if between:  # uncertain where the winner passes
            return (
                text
                + f", within the noise: the runner-up was uncertain at {fmt_load(between[0].load)})"
            )
        limit = f"below {fmt_load(above[0].load)}" if above else "unknown"
        return text + f", within the search's resolution: the runner-up's limit is {limit})"
    text = f" ({r.load - w.load:g} more for the runner-up"
    if any(f >= w.load for f in fails):
        return text + f", beyond the noise: it failed at {fmt_load(max(fails))})"
    return text + f", within the noise: it was uncertain at {fmt_load(w.load)} or above)"


def _clear_of(mine: tuple, theirs: tuple) -> bool:
    """The winner's interval of the ranked figure lies wholly below the runner-up's."""
    hi, lo = mine[2], theirs[1]
    if hi is None or lo is None or math.isnan(hi) or math.isnan(lo):
        return mine[0] < theirs[0]  # one replication: the values alone
    return hi < lo


def explain(rec: Any, ranked: list[Any]) -> str:
    """The answer in one line: the winner, what it sustains (needs), its price, and its
    margin over the runner-up; or why no configuration is shown to meet the SLO."""
    what = {"max": "sustains", "min": "needs"}[rec.direction]
    unit = rec.search_key
    slo = " and ".join(str(t) for t in rec.slo)
    win = ranked[0] if ranked else None
    if win is None or win.best is None:
        loads = sorted({e.load for c in ranked for e in c.evaluations})
        if not loads:  # every configuration refused before any probe
            return f"no configuration meets {slo}: each was refused before any probe"
        tried = (
            fmt_load(loads[0])
            if len(loads) == 1
            else f"{fmt_load(loads[0])} to {fmt_load(loads[-1])}"
        )
        text = f"no configuration is shown to meet {slo} at the {unit} tried ({tried})"
        unsure = [(c, e) for c in ranked for e in c.evaluations if e.uncertain]
        if unsure:
            c, e = min(unsure, key=lambda pair: pair[1].shortfall)
            text += (
                f"; {named(c.config)} was uncertain at {fmt_load(e.load)} after "
                f"{e.replications} replications (raise --max-replications to decide it)"
            )
        return text
    text = f"winner {named(win.config)} {what} {unit}={fmt_load(win.best.load)} within {slo}"
    text += priced(win.best)
    if len(ranked) > 1 and ranked[1].best is not None:
        r = ranked[1]
        text += f"; runner-up {named(r.config)} {what} {fmt_load(r.best.load)}"
        text += margin(rec, win, r)
    return text


def infeasible_line(rec: Any, cand: Any) -> str:
    """One line on why a configuration has no load shown to meet the SLO."""
    near = cand.closest()
    if near is None:
        return cand.note or "no probe ran"
    text = (
        f"closest at {rec.search_key}={fmt_load(near.load)}: {describe_probe(near, rec.slo)}; "
        + verdict_text(near).replace("FAIL", "failed")
    )
    return text + (f"; {cand.note}" if cand.note else "")


def _figures(ev: Any) -> dict[str, Any]:
    return {
        k: {"mean": m, "lo": lo, "hi": hi, "ci95": (hi - lo) / 2}
        for k, (m, lo, hi) in ev.metrics.items()
    }


def _why_not(cand: Any) -> dict[str, Any]:
    """For a configuration with no load shown to meet the SLO: its nearest miss and the
    terms it failed (or straddled), or why no probe was run."""
    if cand.best is not None:
        return {}
    out: dict[str, Any] = {"why": cand.note}
    near = cand.closest()
    if near is not None:
        out["closest"] = {
            "load": near.load,
            "verdict": near.verdict,
            "failed": near.failed,
            "straddling": near.straddling,
            "replications": near.replications,
            "metrics": _figures(near),
            "shortfall": near.shortfall if math.isfinite(near.shortfall) else None,
        }
    return out


def report(rec: Any, ranked: list[Any]) -> dict[str, Any]:
    """recommend.json: the search, the answer, and each configuration's frontier entry."""
    return {
        "objective": rec.objective,
        "search_key": rec.search_key,
        "slo": [str(t) for t in rec.slo],
        "replications": rec.replications,
        "max_replications": rec.max_replications,
        "confidence": LEVEL,
        "method": METHOD,
        "explanation": explain(rec, ranked),
        "warnings": list(rec.warnings),
        "frontier": [
            {
                "config": c.config,
                "feasible": c.best is not None,
                "load": None if c.best is None else c.best.load,
                "metrics": {} if c.best is None else _figures(c.best),
                "replications": None if c.best is None else c.best.replications,
                "probes": len(c.evaluations),
                "uncertain_at": sorted(e.load for e in c.evaluations if e.uncertain),
                **_why_not(c),
            }
            for c in ranked
        ],
    }
