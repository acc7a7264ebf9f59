"""One simulation run of a loaded scenario, and its output files."""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sim.config.scenario import LoadedScenario
from sim.core.records import RunRecords, write_parquet
from sim.core.server import ServerSpec
from sim.engine.engine import Engine, ProgressFn
from sim.engine.service import (
    AfterIdleService,
    PlainService,
    ServiceModel,
    ShapedService,
    StagedService,
)
from sim.metrics.summary import (
    robots_columns,
    robots_summary,
    round_trip_columns,
    steps_summary,
    summarize,
)
from sim.profiles.profile import Profile, ServiceSampler, Variants
from sim.workload.traffic import Fleet, OpenTraffic


def traffic_of(loaded: LoadedScenario, rngs: dict[str, np.random.Generator]) -> OpenTraffic | Fleet:
    """The scenario's traffic: open-loop requests drawn up front, or the robot fleet."""
    s = loaded.scenario
    if s.workload.kind == "robots":
        clients = s.workload.clients(rngs["robots"], s.warmup_s, s.slo.latency_ms)
        return Fleet(clients, s.duration_s, s.requests)
    arrivals = loaded.arrivals(rngs["arrivals"])
    attributes = loaded.request_attributes(arrivals, rngs["classes"])
    return OpenTraffic(
        arrivals,
        deadline_s=attributes["deadline_s"],
        priority=attributes.get("priority"),
        class_id=attributes.get("class_id"),
        class_names=attributes.get("class_names"),
        shape=loaded.request_shapes(len(arrivals), rngs["shapes"]),
    )


def server_spec(loaded: LoadedScenario, rngs: dict[str, np.random.Generator]) -> ServerSpec:
    """The server of the scenario's cluster, admission and policy (the scenario's own policy
    object; per-replica queues get a fresh one for every further replica)."""
    s = loaded.scenario
    dispatch = s.cluster.dispatcher
    replicas = s.cluster.replicas
    if dispatch is None:
        policies = (loaded.policy,) * replicas
    else:  # one batcher per replica queue, each with its own state
        policies = (loaded.policy, *(loaded.build_policy() for _ in range(replicas - 1)))
    return ServerSpec(
        policies,
        loaded.profile,
        replicas,
        dispatch=dispatch,
        dispatch_rng=rngs["dispatch"],
        max_queue=s.admission.max_queue,
        timeout_s=None if s.admission.timeout_ms is None else s.admission.timeout_ms / 1000.0,
        memory_cap=loaded.max_size_in_memory,
        shapes=None if loaded.shaped is None else tuple(sorted(loaded.shaped)),
        shape_name=loaded.shape_name,
        source=loaded.source,
        policy_kind=s.policy.kind,
        steps=loaded.steps(),
    )


def service_model(loaded: LoadedScenario, service_rng: np.random.Generator) -> ServiceModel:
    """How long a simulated batch takes, chosen once: plain, by shape, or after idle; by
    stage where batches run a chosen number of steps or step by step."""
    if loaded.steps() is not None:
        model = loaded.model
        shapes = sorted(loaded.shaped) if loaded.shaped is not None else None
        prefix = None if model.prefix is None else _by_variant(model.prefix, shapes)
        return StagedService(prefix, _by_variant(model.step, shapes), model.steps, service_rng)
    if loaded.shaped is not None:
        return ShapedService(dict(_split_samplers(loaded.shaped.items(), service_rng)))
    if loaded.after_idle is not None:
        levels = _split_samplers(sorted(loaded.after_idle.items()), service_rng)
        return AfterIdleService(levels, loaded.scenario.cluster.replicas)
    return PlainService(loaded.profile.sampler(service_rng))


def simulate(
    loaded: LoadedScenario,
    progress: ProgressFn | None = None,
    service_draw: int = 0,
    log_stalls: bool = False,
) -> RunRecords:
    """Generate the scenario's traffic and run it through the engine; deterministic under the seed.

    `service_draw` k > 0: the same traffic with another draw of service times.
    `log_stalls`: every robot also keeps each freeze's start and end (for a trace).
    """
    s = loaded.scenario
    rngs = loaded.rngs(service_draw)
    traffic = traffic_of(loaded, rngs)
    if log_stalls and isinstance(traffic, Fleet):
        for client in traffic.clients:
            client.stall_log = array("d")
    engine = Engine(
        traffic,
        server_spec(loaded, rngs),
        service_model(loaded, rngs["service"]),
        horizon_s=s.duration_s,
        warmup_s=s.warmup_s,
        wake_latency_s=s.cluster.wake_latency_ms / 1000.0,
        progress=progress,
    )
    records = engine.run()
    records.meta.update(
        scenario=s.name,
        seed=s.seed,
        policy=loaded.policy_description,
        profile=loaded.profile.source,
        profile_provenance=dict(loaded.profile.provenance),
    )
    return records


def run_summary(loaded: LoadedScenario, records: RunRecords) -> dict[str, Any]:
    """summary.json: the contract's figures plus what produced them."""
    summary = summarize(records, loaded.scenario.slo.latency_ms)
    steps = loaded.steps()
    if steps is not None:  # the core kept each request's steps
        summary["steps"] = steps_summary(records, steps.full, steps.floor)
    if records.robots is not None:
        summary["robots"] = robots_summary(records)
    if loaded.scenario.cluster.memory_mb is not None:
        summary["memory"] = {
            "limit_mb": loaded.scenario.cluster.memory_mb,
            "largest_batch_in_memory": loaded.max_size_in_memory,
            # step level the same bound applies to the requests in flight (their KV cache)
            **({"largest_in_flight": loaded.max_size_in_memory} if loaded.step_level else {}),
        }
    return {
        "scenario": loaded.scenario.name,
        "seed": loaded.scenario.seed,
        "policy": loaded.policy_description,
        "profile": {"source": loaded.profile.source, "provenance": dict(loaded.profile.provenance)},
        **summary,
    }


def write_outputs(
    out: Path,
    summary: dict[str, Any],
    records: RunRecords,
    scenario: dict[str, Any],
    run_log: dict[str, Any] | None = None,
) -> list[Path]:
    """summary.json, requests.parquet, batches.parquet, the resolved scenario.yaml (and
    robots.parquet for a fleet, run.json for `run_log`), written whole: the folder is
    staged and swapped in (sim.io.outputs), so a killed run leaves the old one or the new."""
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
