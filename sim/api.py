"""batchsim's Python API: what notebooks and scripts call (`import sim`; README, "Python").

    import sim
    scenario = sim.load("scenarios/quickstart.yaml", {"workload.rate_rps": 120})
    result = sim.run(scenario)
    result.summary["latency_ms"]["p99"], result.metric("slo_attainment")
    result.requests, result.batches, result.robots      # pandas DataFrames
    sim.sweep("scenarios/aloha-pi0-fleet.yaml", {"policy.max_batch": [4, 8]}, out="runs/s")
    sim.recommend("scenarios/quickstart.yaml", "p99_ms<=100", space={"policy.max_wait_ms": [0, 5]})

Every function takes a scenario as a path, a mapping (a scenario written in Python), or
one `load` returned, with overrides as a mapping {dotted key: value} or "KEY=VALUE"
strings, exactly as `--set`. Bad input raises `sim.InputError` (its message is the
CLI's one line). Nothing here has a clock or a side effect beyond the files asked for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas and the scenario schema load on first use, not on `import sim`
    import pandas as pd

    from sim.config.resolve import ResolvedScenario
    from sim.engine.pipeline import Run

Overrides = Mapping[str, Any] | Sequence[str] | None


def project_dir() -> Path:
    """The checkout this package runs from, with its scenarios/ and profiles/ (so a notebook
    finds them from any folder)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "scenarios").is_dir() or not (root / "profiles").is_dir():
        from sim.errors import InputError

        raise InputError(
            "this batchsim is not run from its checkout (no scenarios/ and profiles/ beside "
            "the package); pass your own paths",
            source=str(root),
        )
    return root


def load(
    scenario: str | Path | Mapping[str, Any],
    overrides: Overrides = None,
    *,
    base: Path | None = None,
) -> ResolvedScenario:
    """A scenario, validated and resolved (its profile read and checked against its policy):
    from a YAML file, or a mapping written in Python (relative paths in it resolve against
    `base`, by default the current folder)."""
    from sim.config import load as load_scenario

    if isinstance(scenario, Mapping):
        return load_scenario(scenario, overrides or (), base=base or Path.cwd(), origin="<dict>")
    return load_scenario(scenario, overrides or ())


def _loaded(scenario: Any, overrides: Overrides) -> ResolvedScenario:
    from sim.config import ResolvedScenario

    if isinstance(scenario, ResolvedScenario):
        if overrides:
            from sim.errors import InputError

            raise InputError("overrides go to sim.load, not with a scenario it loaded")
        return scenario
    return load(scenario, overrides)


def run(scenario: Any, overrides: Overrides = None) -> Run:
    """Simulate a scenario once (its seed: the same result every time, however often it is
    run). A `Run` has the summary, `metric(name)`, the records as DataFrames and `write`."""
    from sim.engine import pipeline

    return pipeline.run(_loaded(scenario, overrides))


def sweep(
    scenario: str | Path,
    grid: Mapping[str, Sequence[Any]],
    out: str | Path,
    *,
    replications: int | None = None,
    workers: int | None = None,
    overrides: Sequence[str] = (),
) -> pd.DataFrame:
    """Every combination of `grid` ({dotted key: [values]}) x `replications` seeds, on a
    local Dask cluster (`workers` processes; 1 runs in this process's cluster too), each
    point persisted in `out` as it finishes (a rerun resumes). Returns the summary: per
    configuration, each metric's mean and 95% confidence interval over replications."""
    from sim.errors import InputError
    from sim.experiments.sweep import Sweep, run_sweep, summarize_sweep

    if not isinstance(grid, Mapping) or not grid:
        raise InputError("grid must map dotted keys to lists of values", source="sim.sweep")
    values = {str(k): list(v) for k, v in grid.items()}
    if any(not v for v in values.values()):
        raise InputError("every grid key needs at least one value", source="sim.sweep")
    plan = Sweep(scenario, values, replications, out, list(overrides))
    results = run_sweep(plan, workers)
    summary, _ = summarize_sweep(results, list(plan.grid))
    return summary


@dataclass
class Recommendation:
    """recommend's answer: every configuration ranked (best first), and the sentence the CLI
    prints about the winner."""

    ranked: list[
        Any
    ]  # sim.experiments.search.Candidate: config, best probe (None: infeasible), probes
    explanation: str
    warnings: list[str] = field(default_factory=list)  # e.g. an answer that rests on phase-locking

    @property
    def best(self) -> Any | None:
        return self.ranked[0] if self.ranked and self.ranked[0].best is not None else None


def recommend(
    scenario: str | Path,
    slo: str | Sequence[str],
    *,
    objective: str = "max-throughput",
    space: Mapping[str, Sequence[Any]] | Sequence[str] = (),
    replications: int = 2,
    workers: int = 1,
    overrides: Sequence[str] = (),
) -> Recommendation:
    """The configurations of `space` searched for the most load (or fewest replicas) that
    meets every SLO term ("p99_ms<=100", "stall<=0.05"), as `batchsim recommend`."""
    from sim.experiments.search import Recommender

    terms = [slo] if isinstance(slo, str) else list(slo)
    if isinstance(space, Mapping):  # as --space: KEY=V1,V2 with YAML (here JSON) values
        space = [f"{k}={','.join(json.dumps(v) for v in values)}" for k, values in space.items()]
    rec = Recommender(scenario, terms, objective, list(space), replications, None, list(overrides))
    ranked = rec.run(workers)
    return Recommendation(ranked, rec.explain(ranked), rec.phase_lock_warnings(ranked))
