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
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas and the scenario schema load on first use, not on `import sim`
    import pandas as pd

    from sim.config.scenario import LoadedScenario
    from sim.core.records import RunRecords

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
) -> LoadedScenario:
    """A scenario, validated and resolved (its profile read, its policy built): from a YAML
    file, or a mapping written in Python (relative paths in it resolve against `base`, by
    default the current folder)."""
    from sim.config.scenario import load as load_scenario

    if isinstance(scenario, Mapping):
        return load_scenario(scenario, overrides or (), base=base or Path.cwd(), origin="<dict>")
    return load_scenario(scenario, overrides or ())


def _loaded(scenario: Any, overrides: Overrides) -> LoadedScenario:
    from sim.config.scenario import LoadedScenario

    if isinstance(scenario, LoadedScenario):
        if overrides:
            from sim.errors import InputError

            raise InputError("overrides go to sim.load, not with a scenario it loaded")
        return scenario
    return load(scenario, overrides)


@dataclass
class Run:
    """One simulated run: its scenario, records and summary (summary.json's contents)."""

    scenario: LoadedScenario
    records: RunRecords
    summary: dict[str, Any] = field(repr=False)

    def metric(self, name: str) -> float | None:
        """A figure by its registry name (sim.metrics.summary: latency_p99_ms, robots_stall_fraction, ...)."""
        from sim.metrics.summary import METRICS, metric_value

        if name not in METRICS:
            from sim.errors import InputError

            raise InputError(f"unknown metric '{name}'; one of {', '.join(METRICS)}")
        return metric_value(self.summary, name)

    @cached_property
    def requests(self) -> pd.DataFrame:
        """One row per request, the columns of requests.parquet."""
        return self.records.requests_frame()

    @cached_property
    def batches(self) -> pd.DataFrame:
        """One row per batch, the columns of batches.parquet."""
        return self.records.batches_frame()

    @cached_property
    def robots(self) -> pd.DataFrame | None:
        """One row per robot (robots.parquet), for a fleet; None for open-loop traffic."""
        from sim.metrics.summary import robots_frame

        return None if self.records.robots is None else robots_frame(self.records)

    def write(self, out: str | Path) -> list[Path]:
        """The files `batchsim run --out` writes, into `out` (written whole)."""
        from sim.engine.pipeline import write_outputs
        from sim.io.outputs import RUN_FILES, check_out_dir

        check_out_dir(Path(out), owned=RUN_FILES)
        return write_outputs(Path(out), self.summary, self.records, self.scenario.raw)


def run(scenario: Any, overrides: Overrides = None) -> Run:
    """Simulate a scenario once (its seed: the same result every time)."""
    from sim.engine.pipeline import run_summary, simulate

    loaded = _loaded(scenario, overrides)
    records = simulate(loaded)
    return Run(loaded, records, run_summary(loaded, records))


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
