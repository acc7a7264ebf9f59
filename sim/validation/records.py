"""`batchsim validate --records`: the scenario's simulation against runs recorded elsewhere
(observe, serve, validate's live runs, or a user's log: sim/real/recorded.py), judged by
the same rules as a live validation (sim/validation/compare.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.config import ResolvedScenario, load, parse
from sim.core.records import RunRecords
from sim.errors import InputError
from sim.metrics.summary import summarize
from sim.profiles import store
from sim.profiles.profile import Profile
from sim.validation.compare import (
    SIM_DRAWS,
    comparison_rows,
    latencies_ms,
    noise_aware,
    target_verdicts,
)
from sim.validation.report import render_records_report

# what a robot group's records depend on, compared where the records name their scenario
GROUP_KEYS = ("count", "control_hz", "chunk", "actions_per_chunk", "mode", "shape")
OBSERVATION_KEYS = ("cameras", "image_size", "state_dim")


def _mismatch(run: Any, field: str, recorded: Any, scenario: Any) -> InputError:
    return InputError(
        f"the records were made with {field} {recorded} but the scenario has {scenario}; "
        "validate records against the scenario they were made with",
        source=run.source,
        field=field,
    )


def check_made_with(s: Any, run: Any) -> None:
    """A batchsim folder names the scenario it was made with (its scenario.yaml): its
    workload kind, each robot group's count, control rate, chunk, execute, mode and request
    shape, the model's cameras and the observation's shapes must be the scenario's."""
    if run.scenario is None:
        return
    from pydantic import TypeAdapter, ValidationError

    from sim.config.schema import ObservationSection, Workload

    try:
        workload = TypeAdapter(Workload).validate_python(run.scenario.get("workload"))
    except ValidationError:
        return  # not a workload this batchsim reads: nothing to compare it with
    if workload.kind != s.workload.kind:
        raise _mismatch(run, "workload.kind", workload.kind, s.workload.kind)
    if workload.kind == "robots":
        mine, theirs = workload.groups, s.workload.groups
        if len(mine) != len(theirs):
            raise _mismatch(run, "workload.groups", f"{len(mine)} groups", len(theirs))
        for k, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            for key in GROUP_KEYS:
                if getattr(a, key) != getattr(b, key):
                    where = f"groups[{k}]." if len(mine) > 1 else ""
                    name = "execute" if key == "actions_per_chunk" else key
                    raise _mismatch(
                        run, f"workload.{where}{name}", getattr(a, key), getattr(b, key)
                    )
    model = run.scenario.get("model")
    if isinstance(model, dict) and s.model is not None:  # the inputs observe sends, per camera
        cameras = model.get("cameras", 1)
        if cameras != s.model.cameras:
            raise _mismatch(run, "model.cameras", cameras, s.model.cameras)
    raw = run.scenario.get("observation")
    if raw is not None and s.observation is not None:
        try:
            observation = ObservationSection.model_validate(raw)
        except ValidationError:
            return
        for key in OBSERVATION_KEYS:
            if getattr(observation, key) != getattr(s.observation, key):
                field = f"observation.{key}"
                raise _mismatch(run, field, getattr(observation, key), getattr(s.observation, key))


def check_fits(s: Any, run: Any) -> None:
    """The records are of the scenario's fleet: the scenario they name, if any
    (check_made_with); as many robots (distinct sources); and sync robots that send no more
    often than their motion allows (execute / control_hz). Else one line naming the field
    and both values."""
    check_made_with(s, run)
    if s.workload.kind != "robots" or not run.has_sources:
        return  # open-loop sources are connections or clients; a log may name none
    records = run.records
    sources = np.unique(records.source)
    groups = s.workload.groups
    robots = sum(g.count for g in groups)
    if sources.size != robots:
        raise InputError(
            f"the records hold {sources.size} robots (distinct sources) but the scenario "
            f"has {robots}; validate records against the scenario they were made with",
            source=run.source,
            field="workload.count",
        )
    if any(g.mode != "sync" for g in groups):
        return  # an async robot's send interval depends on its round trips
    motion_s = min(g.actions_per_chunk / g.control_hz for g in groups)
    order = np.lexsort((records.arrival_s, records.source))
    arrival, source = records.arrival_s[order], records.source[order]
    same = source[1:] == source[:-1]
    gaps = np.diff(arrival)[same]
    if gaps.size and float(np.median(gaps)) < 0.8 * motion_s:
        raise InputError(
            f"the records' robots send every {np.median(gaps) * 1000:.0f} ms (median), but "
            f"the scenario's sync robots execute {motion_s * 1000:.0f} ms of actions per "
            "chunk before they send again (execute / control_hz); the records are of "
            "another fleet",
            source=run.source,
            field="workload.control_hz",
        )


def validate_records(
    scenario_path: str | Path,
    record_paths: list[str | Path],
    out: str | Path,
    overrides: list[str] | None = None,
    profile_from_records: bool = False,
    sim_draws: int = SIM_DRAWS,
    stage: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Compare the scenario's simulation with recorded runs of the same traffic (observe,
    serve, validate's live runs, or a user's log: sim.real.recorded). The prediction draws its
    service times from the scenario's profile, or, with `profile_from_records` or when the
    scenario has none, from the records' own batch times (the model and everything the
    server did around it, per batch); with both at hand both are reported."""
    from sim.engine import pipeline
    from sim.io.outputs import check_out_dir
    from sim.plots.figures import latency_cdf_of, save, titles
    from sim.real.recorded import batch_times_ms, describe, read_recorded
    from sim.validation.verdict import ks as two_sample_ks

    check_out_dir(Path(out))
    if sim_draws < 1:
        raise InputError("must be >= 1 (simulations of the same traffic)", option="sim_draws")
    if not record_paths:
        raise InputError("give one or more recorded runs (folders or files)", option="records")
    parsed = parse(scenario_path, overrides or ())
    s = parsed.scenario
    recorded = [read_recorded(Path(p), s.warmup_s) for p in record_paths]
    for run in recorded:  # records of another fleet would be compared without a word
        check_fits(s, run)
    observed = batch_times_ms(recorded)
    if not observed:
        raise InputError("the records hold no batch with a start and an end", option="records")
    slo_ms = s.slo.latency_ms
    live_summaries = []
    for r in recorded:
        summary = summarize(r.records, slo_ms)
        if r.robots is not None:
            summary["robots"] = r.robots
        live_summaries.append(summary)
    stage(
        f"read {len(recorded)} recorded run(s): "
        + "; ".join(
            f"{x['requests']['arrived']:,} requests and {x['batch_size']['batches']:,} batches"
            for x in live_summaries
        )
        + f" after the {s.warmup_s:g} s warm-up (as observe counts them); the recorded "
        f"batch-time profile takes every batch, {sum(v.size for v in observed.values()):,}"
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scenario_loaded = load(scenario_path, overrides or ()) if s.profile is not None else None
    fill: dict[int, np.ndarray] = {}
    if scenario_loaded is not None:  # sizes never recorded keep the scenario's profile
        prof = scenario_loaded.profile
        fill = dict(zip(prof.sizes, prof.samples_ms, strict=True))
    filled = sorted(set(fill) - set(observed))
    from_records = Profile.from_samples(
        {**fill, **observed},
        None,
        {
            "source": "recorded batch times (end - start of every recorded batch)",
            "records": [r.source for r in recorded],
            "sizes_from_scenario_profile": filled,
        },
        "recorded batch times",
    )
    records_profile = out / "profile-from-records.csv"
    store.write(from_records, records_profile)

    def simulations(loaded: ResolvedScenario) -> list[RunRecords]:
        return [pipeline.simulate(loaded, service_draw=k) for k in range(sim_draws)]

    def with_recorded_profile() -> ResolvedScenario:
        data = {**parsed.data, "profile": str(records_profile.resolve())}
        try:
            return load(data, base=parsed.base, origin=parsed.source)
        except InputError as exc:
            raise InputError(
                f"the recorded batch times (sizes {sorted(observed)}) cannot serve this "
                f"scenario: {exc.message}; give the scenario a profile: for the sizes the "
                "records lack",
                option="records",
            ) from None

    kinds: dict[str, ResolvedScenario] = {}
    primary = (
        "recorded batch times" if profile_from_records or scenario_loaded is None else "scenario"
    )
    if primary == "scenario":
        kinds["sim"] = scenario_loaded
        try:
            kinds["sim_recorded_batches"] = with_recorded_profile()
        except InputError as exc:
            stage(f"not simulated with the recorded batch times: {exc.message}")
    else:
        kinds["sim"] = with_recorded_profile()
    stage(f"simulating the scenario ({sim_draws} draws of service times, {len(kinds)} way(s))")
    sims = {key: simulations(loaded) for key, loaded in kinds.items()}
    sim_summaries = {key: [summarize(x, slo_ms) for x in runs] for key, runs in sims.items()}
    rows = comparison_rows(live_summaries, sim_summaries)
    lat_live = np.concatenate([latencies_ms(r.records) for r in recorded])
    lat_sim = np.concatenate([latencies_ms(x) for x in sims["sim"]])
    ks = two_sample_ks(lat_live, lat_sim) if lat_live.size and lat_sim.size else None
    label = "recorded" if len(recorded) == 1 else "recorded run {k}"
    # the samples the KS compares: completed requests that arrived after the warm-up; every
    # simulation, its draws pooled
    way = {"sim": f"{primary} profile", "sim_recorded_batches": "recorded batch times"}
    fig = latency_cdf_of(
        {
            **{label.format(k=k + 1): latencies_ms(r.records) for k, r in enumerate(recorded)},
            **{
                f"simulated ({way[key]}, {sim_draws} draws)": np.concatenate(
                    [latencies_ms(x) for x in runs]
                )
                for key, runs in sims.items()
            },
        }
    )
    titles(
        fig.axes[0],
        f"latency CDF: {len(recorded)} recorded run(s) vs the simulations, after the "
        f"{s.warmup_s:g} s warm-up",
        Path(parsed.source).name,
    )
    figure = save(fig, out / "latency_cdf.png")
    first = kinds["sim"]
    first_summary = pipeline.summarise(first, sims["sim"][0])
    pipeline.write_outputs(out / "sim-draw-1", first_summary, sims["sim"][0], first.raw)
    overhead = _outside_model(recorded)
    result = {
        "scenario": parsed.source,
        "records": [describe(r, x) for r, x in zip(recorded, live_summaries, strict=True)],
        "prediction_profile": primary,
        "profile": str(records_profile) if primary != "scenario" else first.profile.source,
        "profile_from_records": {
            "file": str(records_profile),
            "recorded_sizes": sorted(observed),
            "sizes_from_scenario_profile": filled,
            "batches": int(sum(v.size for v in observed.values())),  # warm-up included
        },
        "outside_model_ms": overhead,
        "sim_draws": sim_draws,
        "comparison": rows,
        "targets": target_verdicts(rows),
        "noise_aware": noise_aware(rows, lat_sim, lat_live),
        **(
            {
                "noise_aware_recorded_batches": noise_aware(
                    rows,
                    np.concatenate([latencies_ms(x) for x in sims["sim_recorded_batches"]]),
                    lat_live,
                    kind="sim_recorded_batches",
                )
            }
            if "sim_recorded_batches" in sims
            else {}
        ),
        "ks": ks,
        "requests": {
            **{f"recorded_{k + 1}": v["requests"] for k, v in enumerate(live_summaries)},
            **{k: v[0]["requests"] for k, v in sim_summaries.items()},
        },
        "figure": str(figure),
    }
    (out / "validation.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (out / "report.md").write_text(render_records_report(result))
    return result


def _outside_model(recorded: list[Any]) -> dict[str, Any] | None:
    """Where the records carry the model call's own time per request (observe against
    batchsim serve records server_timing.model_ms), the mean per-batch time outside it,
    by padded size."""
    parts = []
    for r in recorded:
        if r.model_ms is None:
            continue
        rec = r.records
        served = rec.request_batch >= 0
        batch = rec.request_batch[served]
        batch_ms = (rec.batch_end_s[batch] - rec.batch_start_s[batch]) * 1000
        parts.append(
            pd.DataFrame(
                {"padded": rec.batch_padded[batch], "outside_ms": batch_ms - r.model_ms[served]}
            )
        )
    if not parts:
        return None
    frame = pd.concat(parts).dropna()
    if frame.empty:
        return None
    return {
        "mean_ms": float(frame.outside_ms.mean()),
        "per_padded_size_ms": {
            int(k): float(v) for k, v in frame.groupby("padded").outside_ms.mean().items()
        },
    }
