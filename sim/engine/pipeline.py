"""The one run pipeline: load, build, simulate, summarise, write.

    resolved = sim.config.load(path, overrides)           # load: parse and resolve
    run = pipeline.run(resolved)                          # build, simulate, summarise
    run.write(out)                                        # write, whole

`build` makes what one run is made of, fresh each time (its random streams, traffic, a
server spec with its own policy objects); `simulate` drives it on the SimPy clock;
`summarise` is the one summary builder (the identity block and every figure). The live
runner and `batchsim serve` drive the same `build` on a real clock, and `observe` reads
the same traffic, so every command's records and summaries come from here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.config.resolve import ResolvedScenario, build_policy
from sim.core.records import RunRecords, write_parquet
from sim.core.server import ServerSpec
from sim.core.traffic import OpenTraffic
from sim.engine.engine import Engine, ProgressFn
from sim.engine.service import (
    AfterIdleService,
    GuidedService,
    PlainService,
    ServiceModel,
    ShapedService,
    StagedService,
)
from sim.metrics.registry import METRICS, metric_value
from sim.metrics.robots import robots_columns, robots_frame, round_trip_columns
from sim.metrics.summary import summarize
from sim.profiles.profile import Profile, ServiceSampler
from sim.profiles.staged import StagedModel, Variants
from sim.workload import build as workload
from sim.workload.traffic import Fleet

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Parts:
    """What one run is made of, built fresh from a resolved scenario."""

    rngs: dict[str, np.random.Generator]
    traffic: OpenTraffic | Fleet
    spec: ServerSpec


def build(
    resolved: ResolvedScenario,
    service_draw: int = 0,
    planned_with: Profile | None = None,
    log_stalls: bool = False,
) -> Parts:
    """One run's streams, traffic and server, with policy objects of its own (planning with
    `planned_with`, default the scenario's profile). `service_draw` k > 0: the same traffic
    with another draw of service times; `log_stalls`: robots keep each freeze (traces)."""
    rngs = workload.streams(resolved.scenario.seed, service_draw)
    traffic = workload.traffic(resolved, rngs, log_stalls)
    return Parts(rngs, traffic, server_spec(resolved, rngs, planned_with))


def server_spec(
    resolved: ResolvedScenario,
    rngs: dict[str, np.random.Generator],
    planned_with: Profile | None = None,
) -> ServerSpec:
    """The server of the scenario's cluster, admission and policy: one policy object shared
    by a shared queue's replicas, or one per replica queue (each with its own state)."""
    s = resolved.scenario
    dispatch = s.cluster.dispatcher
    replicas = s.cluster.replicas
    if dispatch is None:
        policies = (build_policy(resolved, planned_with),) * replicas
    else:
        policies = tuple(build_policy(resolved, planned_with) for _ in range(replicas))
    return ServerSpec(
        policies,
        resolved.profile,
        replicas,
        dispatch=dispatch,
        dispatch_rng=rngs["dispatch"],
        max_queue=s.admission.max_queue,
        timeout_s=None if s.admission.timeout_ms is None else s.admission.timeout_ms / 1000.0,
        memory_cap=resolved.memory_cap,
        shapes=None if resolved.shaped is None else tuple(sorted(resolved.shaped)),
        shape_name=resolved.shape_name,
        source=resolved.source,
        policy_kind=s.policy.kind,
        steps=resolved.steps,
        trusted=resolved.trusted,
        guided=resolved.guided_model is not None,
        step_level=resolved.step_level,
    )


def service_model(resolved: ResolvedScenario, service_rng: np.random.Generator) -> ServiceModel:
    """How long a simulated batch takes, chosen once: plain, by shape, or after idle; by
    stage where batches run a chosen number of steps or step by step. A fleet mixing
    RTC-guided and other robots runs a batch holding a guided request on the guided model
    (both draw from the one service stream)."""
    plain = _service_of(resolved, resolved.model, service_rng)
    if resolved.guided_model is None:
        return plain
    return GuidedService(plain, _service_of(resolved, resolved.guided_model, service_rng))


def _service_of(
    resolved: ResolvedScenario, model: StagedModel, service_rng: np.random.Generator
) -> ServiceModel:
    shaped, after_idle = model.whole.shaped, model.whole.after_idle
    if resolved.steps is not None:
        shapes = sorted(shaped) if shaped is not None else None
        prefix = None if model.prefix is None else _by_variant(model.prefix, shapes)
        return StagedService(prefix, _by_variant(model.step, shapes), model.steps, service_rng)
    if shaped is not None:
        return ShapedService(dict(_split_samplers(shaped.items(), service_rng)))
    if after_idle is not None:
        levels = _split_samplers(sorted(after_idle.items()), service_rng)
        return AfterIdleService(levels, resolved.scenario.cluster.replicas)
    return PlainService(model.whole.profile.sampler(service_rng))


def simulate(
    resolved: ResolvedScenario,
    progress: ProgressFn | None = None,
    service_draw: int = 0,
    log_stalls: bool = False,
    planned_with: Profile | None = None,
) -> RunRecords:
    """Build the run and drive it on the simulated clock; deterministic under the seed, and
    the same every time it is called (nothing carries over from an earlier run)."""
    s = resolved.scenario
    parts = build(resolved, service_draw, planned_with, log_stalls)
    engine = Engine(
        parts.traffic,
        parts.spec,
        service_model(resolved, parts.rngs["service"]),
        horizon_s=s.duration_s,
        warmup_s=s.warmup_s,
        wake_latency_s=s.cluster.wake_latency_ms / 1000.0,
        progress=progress,
    )
    return engine.run()


def identity(resolved: ResolvedScenario) -> dict[str, Any]:
    """What produced a run: the scenario's name and seed, the policy and the profile."""
    profile = resolved.profile
    return {
        "scenario": resolved.scenario.name,
        "seed": resolved.scenario.seed,
        "policy": resolved.policy_description,
        "profile": {"source": profile.source, "provenance": dict(profile.provenance)},
    }


def summarise(resolved: ResolvedScenario, records: RunRecords) -> dict[str, Any]:
    """summary.json: the identity block, every figure of the records, and the limits the
    scenario set (memory)."""
    s = resolved.scenario
    steps = resolved.steps
    figures = summarize(
        records,
        s.slo.latency_ms,
        None if steps is None else (steps.full, steps.floor),
        resolved.pricing,
    )
    summary = {**identity(resolved), **figures}
    if s.cluster.memory_mb is not None:
        summary["memory"] = {
            "limit_mb": s.cluster.memory_mb,
            "largest_batch_in_memory": resolved.memory_cap,
            # step level the same bound applies to the requests in flight (their KV cache)
            **({"largest_in_flight": resolved.memory_cap} if resolved.step_level else {}),
        }
    return summary


@dataclass
class Run:
    """One run: its scenario, records and summary (summary.json's contents)."""

    scenario: ResolvedScenario
    records: RunRecords
    summary: dict[str, Any] = field(repr=False)
    wall_s: float | None = None  # how long it took, where the caller timed it
    checked: list[str] = field(default_factory=list)  # invariants asserted on its records

    def metric(self, name: str) -> float | None:
        """A figure by its registry name (sim/metrics/registry.py: latency_p99_ms, robots_stall_fraction, ...)."""
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
        return None if self.records.robots is None else robots_frame(self.records)

    def write(self, out: str | Path, run_log: dict[str, Any] | None = None) -> list[Path]:
        """The files `batchsim run --out` writes, into `out` (written whole; a folder holding
        anything else is refused)."""
        from sim.io.outputs import RUN_FILES, check_out_dir

        check_out_dir(Path(out), owned=RUN_FILES)
        return write_outputs(Path(out), self.summary, self.records, self.scenario.raw, run_log)


def run(resolved: ResolvedScenario, **options: Any) -> Run:
    """Build, simulate and summarise one run (`options`: those of `simulate`)."""
    records = simulate(resolved, **options)
    return Run(resolved, records, summarise(resolved, records))


def check_invariants(run: Run) -> list[str]:
    """Every named invariant of sim/core/invariants.py that applies to the run's scenario,
    checked on its records; returns their names, or raises InvariantViolation at the first
    that breaks (`batchsim run --check`)."""
    from sim.core import invariants as inv

    resolved, records = run.scenario, run.records
    s = resolved.scenario
    max_batch = max(resolved.launch_sizes)
    timeout_s = None if s.admission.timeout_ms is None else s.admission.timeout_ms / 1000.0
    checks: list[tuple[Any, tuple]] = []
    if resolved.step_level:
        max_admit = getattr(s.policy, "max_admit", None)
        checks += [(inv.iterations_conserve, ()), (inv.iteration_causality, ()),
                   (inv.one_batch_per_replica, ()), (inv.in_flight_counts, ()),
                   (inv.steps_one_per_iteration, ()),
                   (inv.iteration_bounds, (max_batch, max_admit))]  # fmt: skip
    else:
        checks += [(inv.conservation, ()), (inv.causality, ()), (inv.one_batch_per_replica, ()),
                   (inv.sizes_and_padding, (max_batch, resolved.launch_sizes))]  # fmt: skip
        one_order = not any(c.priority != s.classes[0].priority for c in s.classes or [])
        shared = s.cluster.queue == "shared" and s.workload.kind != "robots"
        if shared and one_order and build_policy(resolved).order == "fifo":
            checks.append((inv.fifo_order, ()))
    checks.append((inv.admission, (timeout_s, s.admission.max_queue)))
    if records.robots is not None:
        checks.append((inv.actions_conserved, ()))
    for invariant, args in checks:
        invariant(records, *args)
    return [inv.name_of(invariant) for invariant, _ in checks]


def write_outputs(
    out: Path,
    summary: dict[str, Any],
    records: RunRecords,
    scenario: dict[str, Any],
    run_log: dict[str, Any] | None = None,
) -> list[Path]:
    """summary.json, requests.parquet, batches.parquet, the resolved scenario.yaml (and
    robots.parquet and round_trips.parquet for a fleet, run.json for `run_log`), written
    whole: the folder is staged and swapped in (sim.io.outputs), so a killed run leaves the
    old one or the new."""
    import yaml

    from sim.io.outputs import staged_dir

    names = ["summary.json", "requests.parquet", "batches.parquet", "scenario.yaml"]
    if records.robots is not None:
        names += ["robots.parquet", "round_trips.parquet"]
    if run_log is not None:
        names.append("run.json")
    with staged_dir(out) as stage:
        (stage / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_parquet(records.request_columns(), stage / "requests.parquet")
        write_parquet(records.batch_columns(), stage / "batches.parquet")
        (stage / "scenario.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
        if records.robots is not None:
            write_parquet(robots_columns(records), stage / "robots.parquet")
            write_parquet(round_trip_columns(records), stage / "round_trips.parquet")
        if run_log is not None:
            (stage / "run.json").write_text(json.dumps(run_log, indent=2) + "\n")
    return [out / name for name in names]


def _split_samplers(
    variants: Iterable[tuple[Any, Profile]], service_rng: np.random.Generator
) -> list[tuple[Any, ServiceSampler]]:
    """One draw stream per profile variant (shape, idle level), split from the service stream."""
    variants = list(variants)
    seeds = service_rng.bit_generator.seed_seq.spawn(len(variants))
    return [
        (key, variant.sampler(np.random.default_rng(seed)))
        for (key, variant), seed in zip(variants, seeds, strict=True)
    ]


def _by_variant(variants: Variants, shapes: list[int] | None) -> dict[int | None, Profile]:
    """A stage's profile per shape variant of the scenario (None: unshaped); a stage that
    did not measure shapes costs the same at every one."""
    if shapes is None:
        return {None: variants.profile}
    return {v: (variants.shaped or {}).get(v, variants.profile) for v in shapes}
