"""One simulation run of a loaded scenario, and its output files."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sim.engine import Engine, RunRecords
from sim.engine.core import ProgressFn
from sim.metrics import robots_frame, robots_summary, summarize
from sim.profile import Profile, ServiceSampler
from sim.scenario import LoadedScenario


def simulate(
    loaded: LoadedScenario, progress: ProgressFn | None = None, service_draw: int = 0
) -> RunRecords:
    """Generate the scenario's traffic and run it through the engine; deterministic under the seed.

    `service_draw` k > 0: the same traffic with another draw of service times.
    """
    s = loaded.scenario
    rngs = loaded.rngs(service_draw)
    closed_loop = s.workload.kind == "robots"
    if closed_loop:
        arrivals = None
        traffic = {
            "clients": s.workload.clients(rngs["robots"], s.warmup_s, s.slo.latency_ms),
            "max_requests": s.requests,
        }
    else:
        arrivals = loaded.arrivals(rngs["arrivals"])
        traffic = loaded.request_attributes(arrivals, rngs["classes"])
        traffic["shape"] = loaded.request_shapes(len(arrivals), rngs["shapes"])
    if loaded.shaped is not None:
        traffic["shaped_service"] = dict(_split_samplers(loaded.shaped.items(), rngs["service"]))
        traffic["shape_name"] = loaded.scenario.profile.shape
    if loaded.after_idle is not None:
        traffic["after_idle"] = _split_samplers(sorted(loaded.after_idle.items()), rngs["service"])
    dispatch = s.cluster.dispatcher
    if dispatch is None:
        policy = loaded.policy
    else:  # one batcher per replica queue, each with its own state
        policy = [loaded.policy, *(loaded.build_policy() for _ in range(s.cluster.replicas - 1))]
    engine = Engine(
        arrivals,
        policy,
        loaded.profile.sampler(rngs["service"]),
        replicas=s.cluster.replicas,
        max_queue=s.admission.max_queue,
        timeout_s=None if s.admission.timeout_ms is None else s.admission.timeout_ms / 1000.0,
        horizon_s=s.duration_s,
        warmup_s=s.warmup_s,
        progress=progress,
        dispatch=dispatch,
        profile=loaded.profile,
        dispatch_rng=rngs["dispatch"],
        max_padded_size=loaded.max_size_in_memory,
        wake_latency_s=s.cluster.wake_latency_ms / 1000.0,
        **traffic,
    )
    records = engine.run()
    records.meta.update(
        scenario=s.name,
        seed=s.seed,
        policy=repr(loaded.policy),
        profile=loaded.profile.source,
        profile_provenance=dict(loaded.profile.provenance),
    )
    return records


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


def run_summary(loaded: LoadedScenario, records: RunRecords) -> dict[str, Any]:
    """summary.json: the contract's figures plus what produced them."""
    summary = summarize(records, loaded.scenario.slo.latency_ms)
    if records.robots is not None:
        summary["robots"] = robots_summary(records)
    if loaded.scenario.cluster.memory_mb is not None:
        summary["memory"] = {
            "limit_mb": loaded.scenario.cluster.memory_mb,
            "largest_batch_in_memory": loaded.max_size_in_memory,
        }
    return {
        "scenario": loaded.scenario.name,
        "seed": loaded.scenario.seed,
        "policy": repr(loaded.policy),
        "profile": {"source": loaded.profile.source, "provenance": dict(loaded.profile.provenance)},
        **summary,
    }


def write_outputs(
    out: Path, summary: dict[str, Any], records: RunRecords, scenario: dict[str, Any]
) -> list[Path]:
    """summary.json, requests.parquet, batches.parquet and the resolved scenario.yaml."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    paths = [
        out / "summary.json",
        out / "requests.parquet",
        out / "batches.parquet",
        out / "scenario.yaml",
    ]
    paths[0].write_text(json.dumps(summary, indent=2) + "\n")
    records.requests_frame().to_parquet(paths[1], index=False)
    records.batches_frame().to_parquet(paths[2], index=False)
    paths[3].write_text(yaml.safe_dump(scenario, sort_keys=False))
    if records.robots is not None:
        paths.append(out / "robots.parquet")
        robots_frame(records).to_parquet(paths[-1], index=False)
    return paths
