"""batchsim's Python API: what notebooks, scripts and the CLI call (`import sim`; README,
"Python API"). Each `batchsim` command parses its flags, calls one function here (or one
the package exports) and renders what it returns.

    import sim
    scenario = sim.load("scenarios/quickstart.yaml", {"workload.rate_rps": 120})
    result = sim.run(scenario)
    result.summary["latency_ms"]["p99"], result.metric("slo_attainment")
    result.requests, result.batches, result.robots      # pandas DataFrames
    sim.sweep("scenarios/aloha-pi0-fleet.yaml", {"policy.max_batch": [4, 8]}, out="runs/s")
    sim.recommend("scenarios/quickstart.yaml", "p99_ms<=100", space={"policy.max_wait_ms": [0, 5]})

Every function takes a scenario as a path, a mapping (a scenario written in Python), or
one `load` returned, with overrides as a mapping {dotted key: value} or "KEY=VALUE"
strings. Bad input raises `sim.InputError` (its message is the CLI's one line; a bad
parameter is named as here, the CLI names its flag). Nothing here has a clock or a side
effect beyond the files asked for.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas and the scenario schema load on first use, not on `import sim`
    import pandas as pd

    from sim.config.resolve import ResolvedScenario
    from sim.engine.pipeline import Run

Overrides = Mapping[str, Any] | Sequence[str] | None

# what one profiling call may ask a model for (its inputs are allocated from these)
MAX_CAMERAS = 16
MAX_INSTRUCTION_TOKENS = 8192
MAX_IDLE_MS = 60_000.0


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


def run(
    scenario: Any,
    overrides: Overrides = None,
    *,
    out: str | Path | None = None,
    trace: str | Path | None = None,
    progress: Callable[[float], None] | None = None,
    run_log: Mapping[str, Any] | None = None,
    check: bool = False,
) -> Run:
    """Simulate a scenario once (its seed: the same result every time, however often it is
    run). A `Run` has the summary, `metric(name)`, the records as DataFrames and `write`.
    `out`: also write the run's files there (with `run_log` and the wall time in run.json);
    `trace`: a Perfetto/Chrome trace of its batches and robot stalls. Both are checked
    before anything is simulated; `progress(fraction of simulated time)` as it goes.
    `check`: assert every named invariant that applies (sim/core/invariants.py) on the
    records, after they are written; their names are in `Run.checked`, and one that breaks
    raises InvariantViolation."""
    from sim.engine import pipeline
    from sim.io.outputs import RUN_FILES, check_out_dir, check_out_file

    if out is not None:
        check_out_dir(Path(out), owned=RUN_FILES)
    if trace is not None:
        check_out_file(Path(trace), "trace")
    loaded = _loaded(scenario, overrides)
    started = time.perf_counter()
    result = pipeline.run(loaded, progress=progress, log_stalls=trace is not None)
    result.wall_s = time.perf_counter() - started
    if out is not None:
        # the wall time goes to run.json: summary.json is the same bytes on every rerun
        # (the folder was checked before the run: written here, not checked again)
        run_log = {"wall_s": result.wall_s, **(run_log or {})}
        pipeline.write_outputs(Path(out), result.summary, result.records, loaded.raw, run_log)
    if trace is not None:
        from sim.io.trace import write_trace

        write_trace(result.records, Path(trace), loaded.scenario.name)
    if check:
        result.checked = pipeline.check_invariants(result)
    return result


def plot(
    folder: str | Path,
    hue: str | None = None,
    load: str | None = None,
    x: str | None = None,
    y: str | None = None,
) -> list[Path]:
    """The figures of a run folder (`run --out`) or a sweep folder, into FOLDER/plots/
    (one file per figure and parameters); `x`/`y` a swept key or metric against a metric,
    `hue` a swept key drawn as one line per value, `load` the key on attainment's x axis.
    Returns the files written."""
    from sim.plots.folders import plot_dir

    return list(plot_dir(Path(folder), hue, load, x, y))


def plot_profile(path: str | Path) -> Path:
    """A profile CSV drawn beside it as NAME.png (latency and per-request latency against
    batch size, and memory), once it reads as a profile; returns the figure's path."""
    from sim.io.outputs import check_out_file
    from sim.plots.figures import profile_figure, save
    from sim.profiles import store

    path = Path(path)
    table = store.read_table(path)  # a readable profile, before its .png is named
    png = path.with_suffix(".png")
    check_out_file(png, "plot-profile")
    if "cameras" in table.frame.columns:
        store.by_shape(table, "cameras")  # checks every camera count's data
    else:
        store.selected(table)
    return save(profile_figure(table.frame, profile_title(path.stem, table.provenance)), png)


def profile_title(name: str, meta: Mapping[str, Any]) -> str:
    """A profile figure's title: measured on what, or ESTIMATED for which GPU from which."""
    estimate = meta.get("estimate") if isinstance(meta.get("estimate"), dict) else None
    if estimate is not None:  # no GPU of this kind was measured: the title says so
        target = (estimate.get("target_gpu") or {}).get("name", meta.get("gpu", "?"))
        source_gpu = (estimate.get("source_gpu") or {}).get("name", "?")
        return f"{name}: ESTIMATED for the {target} from a measurement on the {source_gpu}"
    device = meta.get("device") or meta.get("gpu") or "an unknown device"
    return f"{name}: measured on {device}" + (f", {meta['dtype']}" if meta.get("dtype") else "")


def sweep(
    scenario: str | Path,
    grid: Mapping[str, Sequence[Any]],
    out: str | Path,
    *,
    replications: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    overrides: Sequence[str] = (),
    on_result: Callable[..., None] | None = None,
) -> pd.DataFrame:
    """Every combination of `grid` ({dotted key: [values]}, added to the scenario's own
    `sweep:` section) x `replications` seeds, on a local Dask cluster (`workers`
    processes, default every core) or the one at `scheduler`, each point persisted in
    `out` as it finishes (a rerun resumes). Returns the summary: per configuration, each
    metric's mean and 95% confidence interval over replications (`attrs`: points, keys).
    `on_result(point, result, finished, total)` as points end (first with point None)."""
    from sim.errors import InputError
    from sim.experiments.sweep import Sweep, connect, run_sweep, summarize_sweep

    if not isinstance(grid, Mapping):
        raise InputError("must map dotted keys to lists of values", option="grid")
    values = {str(k): list(v) for k, v in grid.items()}
    if any(not v for v in values.values()):
        raise InputError("every key needs at least one value", option="grid")
    if workers is not None and scheduler is not None:
        raise InputError("give workers or a scheduler, not both", option="scheduler")
    if workers is not None and workers < 1:
        raise InputError("must be >= 1", option="workers")
    plan = Sweep(scenario, values, replications, out, list(overrides))
    if not plan.grid:
        raise InputError(
            "nothing to sweep: give a grid (KEY=V1,V2,...) or a sweep: section",
            source=str(scenario),
        )
    plan.prepare_out()  # a damaged or different sweep in `out` is refused before any work
    client = connect(scheduler) if scheduler is not None else None  # reachable, or one line
    results = run_sweep(plan, workers, client, on_result)
    summary, _ = summarize_sweep(results, list(plan.grid))
    summary.attrs.update(points=len(results), keys=list(plan.grid))
    return summary


@dataclass
class Recommendation:
    """recommend's answer: every configuration ranked (best first), the sentence about the
    winner, warnings, and the search itself (its space, load key and SLO terms)."""

    # sim.experiments.search.Candidate: config, best probe (None: infeasible), probes
    ranked: list[Any]
    explanation: str
    warnings: list[str] = field(default_factory=list)  # e.g. an answer that rests on phase-locking
    search: Any = field(default=None, repr=False)  # the sim.experiments.search.Recommender

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
    max_replications: int | None = None,
    workers: int | None = None,
    search: str | None = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    on_start: Callable[[Any], None] | None = None,
    on_refused: Callable[[dict[str, Any], str], None] | None = None,
    on_probe: Callable[..., None] | None = None,
    on_done: Callable[..., None] | None = None,
) -> Recommendation:
    """The configurations of `space` searched for the most load (or fewest replicas) that
    meets every SLO term ("p99_ms<=100", "stall<=0.05"), on `workers` processes (default
    every core). Each probe runs `replications` seeds, and more while an SLO term's 95%
    interval straddles its bound, up to `max_replications` (default 10), else it is
    uncertain (sim.experiments.stats). `search`: the load key (default by objective). `out`: every probe kept in
    probes.jsonl as it ends (a rerun reuses them) and recommend.json at the end.
    `on_start(search)` once the search is set up (its configs, load key and SLO terms, a
    sim.experiments.search.Recommender); `on_refused(config, why)` for
    configurations no load can serve, before any probe;
    `on_probe(config, evaluation, reused)` per probe; `on_done(candidate)` per config."""
    from sim.errors import InputError
    from sim.experiments.search import ProbeLog, Recommender
    from sim.io.outputs import check_out_dir, write_text

    if workers is not None and workers < 1:
        raise InputError("must be >= 1", option="workers")
    workers = workers or os.cpu_count() or 1
    if out is not None:
        check_out_dir(Path(out))
    terms = [slo] if isinstance(slo, str) else list(slo)
    if isinstance(space, Mapping):  # KEY=V1,V2 with YAML (here JSON) values
        space = [f"{k}={','.join(json.dumps(v) for v in values)}" for k, values in space.items()]
    rec = Recommender(
        scenario, terms, objective, list(space), replications, search, overrides,
        max_replications=max_replications,
    )  # fmt: skip
    log = ProbeLog(Path(out) / "probes.jsonl", rec.identity()) if out is not None else None
    if on_start is not None:
        on_start(rec)
    for config in rec.configs:
        why = rec.floor_of(config)
        if why and on_refused is not None:
            on_refused(config, why)
    ranked = rec.run(workers, on_done=on_done, on_probe=on_probe, log=log)
    rec.warnings = rec.phase_lock_warnings(ranked)
    if out is not None:
        report = json.dumps(rec.report(ranked), indent=2, default=str) + "\n"
        write_text(Path(out) / "recommend.json", report)
    return Recommendation(ranked, rec.explain(ranked), list(rec.warnings), rec)


def profile(
    model: str,
    out: str | Path,
    *,
    size: str = "tiny",
    device: str = "cpu",
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    cameras: Sequence[int] = (1,),
    instruction_tokens: int | None = None,
    append: bool = False,
    on_size: Callable[[int, int, list[float]], None] | None = None,
    **options: Any,
) -> tuple[Path, dict[str, Any]]:
    """Measure a model's latency and memory per batch size (and camera count) into a profile
    CSV with its provenance sidecar; returns the path and the provenance. `options`: those
    of sim.profiles.profiler.ProfileOptions (dtype, compile, cuda_graphs, threads, warmup,
    max_reps, budget_s, interleave, idle_ms, stages). Needs torch."""
    from sim.config.limits import DEFAULT
    from sim.errors import InputError
    from sim.io.outputs import check_out_file

    _within(batch_sizes, 1, DEFAULT.max_batch, "batch_sizes", "every value must be an integer")
    _within(cameras, 1, MAX_CAMERAS, "cameras", "every value must be an integer")
    if instruction_tokens is not None:
        _within([instruction_tokens], 1, MAX_INSTRUCTION_TOKENS, "instruction_tokens", "must be")
    idle = tuple(options.get("idle_ms") or ())
    if any(not 0 <= v <= MAX_IDLE_MS for v in idle):  # nan and inf fail this too
        raise InputError(f"every level must be from 0 to {MAX_IDLE_MS:,.0f} ms", option="idle_ms")
    check_out_file(Path(out))
    try:
        from sim import models
        from sim.profiles.profiler import (
            ProfileOptions,
            check_append_target,
            profile_model,
            write_profile,
        )
    except ImportError as exc:
        raise InputError(
            f"profiling needs torch and transformers ({exc}); run make test", option="model"
        ) from None
    if idle or options.get("stages"):
        options["interleave"] = True  # idle levels and stages are timed in shuffled rounds
    opts = ProfileOptions(device, **options)
    opts.validate()
    if append:
        check_append_target(Path(out))
    bundle = models.build(model, size, device)
    frame, meta = profile_model(
        bundle, list(batch_sizes), list(cameras), instruction_tokens, opts, on_size
    )
    if frame.empty:
        raise InputError("nothing was measured", option="batch_sizes")
    return write_profile(frame, meta, Path(out), append), meta


def _within(values: Sequence[int], lo: int, hi: int, option: str, what: str) -> None:
    from sim.errors import InputError

    if not values or any(not lo <= v <= hi for v in values):
        shown = ",".join(str(v) for v in values)
        raise InputError(f"'{shown}': {what} from {lo} to {hi:,}", option=option)


def estimate_profile(
    source: str | Path,
    gpu: str,
    out: str | Path,
    *,
    shape: Mapping[str, int] | None = None,
    select: Mapping[str, int] | None = None,
    model: str | None = None,
    source_gpu: str | None = None,
) -> Any:
    """`sim.estimate` of a measured profile on `gpu` (a name from the GPU table, or a spec
    file), written to `out` with its sidecar; returns the Estimate. Needs torch."""
    from sim.errors import InputError
    from sim.io.outputs import check_out_file
    from sim.profiles.estimate.gpus import load_gpu
    from sim.profiles.estimate.roofline import estimate, write

    for option, values in (("shape", shape), ("select", select)):
        for column, value in (values or {}).items():
            if not 1 <= value <= 4096:
                raise InputError(
                    f"'{column}={value}': the value must be from 1 to 4,096", option=option
                )
    target = load_gpu(gpu)
    check_out_file(Path(out))
    if Path(out).resolve() == Path(source).resolve():
        raise InputError("would overwrite the measured profile; choose another path", option="out")
    try:
        import torch  # noqa: F401  (the work is counted on torch's meta device)
    except ImportError:
        raise InputError(
            "estimate counts the model's work with torch; run make test (or pip install "
            "-e .[models])",
            option="source",
        ) from None
    est = estimate(Path(source), target, dict(shape or {}), dict(select or {}), model, source_gpu)
    write(est, Path(out))
    return est


def serve(
    scenario: str | Path,
    overrides: Overrides = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    out: str | Path | None = None,
    ready: Callable[[int], None] = lambda port: None,
    grace_s: float = 5.0,
    max_frame_mib: float | None = None,
) -> dict[str, Any]:
    """Serve the scenario's model over openpi's websocket protocol, batching across
    connections with its policy, until SIGINT or SIGTERM; then drain the queue for up to
    `grace_s`, write the records (to `out`) and return the summary. `ready(port)` once
    listening. `max_frame_mib`: the largest observation frame (default: twice the
    observation spec's arrays plus 1 MiB)."""
    import math

    from sim.errors import InputError
    from sim.io.outputs import RUN_FILES, check_out_dir

    if not 0 <= port <= 65535:
        raise InputError(f"must be from 0 to 65,535 (got {port})", option="port")
    if not (math.isfinite(grace_s) and 0 <= grace_s <= 600):
        raise InputError(f"must be from 0 to 600 seconds (got {grace_s:g})", option="grace_s")
    max_frame_bytes = None
    if max_frame_mib is not None:
        if not (math.isfinite(max_frame_mib) and 0.001 <= max_frame_mib <= 64):
            raise InputError(
                f"must be from 0.001 to 64 MiB (got {max_frame_mib:g})", option="max_frame_mib"
            )
        max_frame_bytes = int(max_frame_mib * 2**20)
    if out is not None:
        check_out_dir(Path(out), owned=RUN_FILES)
    loaded = _loaded(scenario, overrides)
    try:
        from sim.real.serve import serve_scenario
    except ImportError as exc:
        raise InputError(
            f"serve needs websockets, msgpack and openpi-client ({exc}); run make test",
            source="serve",
        ) from None
    return serve_scenario(
        loaded,
        host,
        port,
        None if out is None else Path(out),
        ready,
        grace_s=grace_s,
        max_frame_bytes=max_frame_bytes,
    )


def observe(
    scenario: str | Path,
    target: str,
    overrides: Overrides = None,
    *,
    out: str | Path | None = None,
    connections: int | None = None,
    timeout_s: float = 30.0,
    stage: Callable[[str], None] = lambda message: None,
) -> Run:
    """Drive the scenario's traffic (its robots, or its arrivals over `connections`
    connections) against the openpi policy server at `target`, and record it in the
    simulator's columns (written to `out`); a request unanswered after `timeout_s` is
    dropped. The summary's `observe` block says what the client saw."""
    from sim.engine.pipeline import Run, write_outputs
    from sim.errors import InputError
    from sim.io.outputs import RUN_FILES, check_out_dir
    from sim.real.observe import MAX_CONNECTIONS, check_target, load_for_observe

    check_target(target)
    if connections is not None and not 1 <= connections <= MAX_CONNECTIONS:
        raise InputError(f"must be from 1 to {MAX_CONNECTIONS:,}", option="connections")
    if not 0.1 <= timeout_s <= 3600:
        raise InputError("must be from 0.1 to 3,600 seconds", option="timeout_s")
    if out is not None:
        check_out_dir(Path(out), owned=RUN_FILES)
    loaded = load_for_observe(scenario, list(overrides or ()))
    try:
        from sim.real.observe import observe as drive
    except ImportError as exc:  # pragma: no cover - the serve extra is missing
        raise InputError(
            f"observe needs websockets, msgpack and openpi-client ({exc}); run make test",
            source="observe",
        ) from None
    records, summary = drive(loaded, target, connections, timeout_s, stage)
    if out is not None:
        write_outputs(Path(out), summary, records, loaded.raw)
    return Run(loaded, records, summary)
