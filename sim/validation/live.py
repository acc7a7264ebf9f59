"""`batchsim validate`: the simulator's prediction checked against a live run of the model.

Steps: (1) profile the scenario's `model:` on its device for every batch size the
policy can launch, the way the live server meets batches (shuffled rounds over the
sizes, fresh inputs per call, after idle waits of IDLE_LEVELS_MS, so each simulated
batch draws from the idle level its replica reached), in passes before, between and
after the live runs, or take `--profile` when its provenance matches the model; (2)
replay the scenario's traffic live against the model, `repeats` times (the live figure
is the median over runs; their spread is the machine's own noise); (3) simulate the
same traffic (same seed, same arrivals, a policy planning with the same profile)
`sim_draws` times, each with its own draw of service times, and take the median, three
ways: with the live runs' per-batch overhead outside the model's forward (building
inputs, Python scheduling) added to every sample of the profile, by batch size (the
prediction); with the profile as measured; and with the live runs' own batch times
(the queueing model alone); (4) report them side by side with the live runs:
throughput, latency and queue-delay percentiles, batch size, utilisation, robot
figures, relative errors, the issue's targets, a two-sample Kolmogorov-Smirnov
statistic on latency, and a figure of the latency CDFs.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.config import ParsedScenario, ResolvedScenario, load, parse
from sim.core.records import RunRecords
from sim.errors import InputError
from sim.metrics.summary import summarize
from sim.profiles import store
from sim.profiles.profile import Profile
from sim.validation.compare import (
    IDLE_LEVELS_MS,
    SIM_DRAWS,
    comparison_rows,
    latencies_ms,
    noise_aware,
    target_verdicts,
)
from sim.validation.report import render_report

# each profiling pass's wall time (idle waits included), as a share of one live run's
# duration: a model with few batch sizes gets more rounds (20-odd samples per size and
# level left a 10% error in one level's median), one with many gets min_reps rounds
PASS_SHARE = 0.3
PASS_ROUNDS = (6, 60)


def normalise_drift(samples: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, float]]:
    """Pool profiling passes taken at different moments of a drifting machine.

    Each pass's speed is the median, over batch sizes, of its back-to-back median over
    the median of all passes (1.2: 20% slower). The live figure is the median live run,
    so the prediction wants the machine at its median speed: every pass's samples are
    scaled by median speed / its speed. What varies within a pass (the tail, short slow
    spells) is kept; what differs between passes is not pooled into a mixture that no
    single run saw. Returns the scaled samples (column `latency_ms`, the measured value
    in `measured_ms`) and each pass's speed.
    """
    busy = samples[samples.idle_ms == 0] if "idle_ms" in samples else samples
    overall = busy.groupby("batch_size").latency_ms.median()
    per_pass = busy.groupby(["run", "batch_size"]).latency_ms.median().unstack("batch_size")
    speed = (per_pass / overall).median(axis=1)
    typical = float(speed.median())
    scaled = samples.copy()
    scaled["measured_ms"] = scaled.latency_ms
    scaled["latency_ms"] = scaled.latency_ms * typical / scaled.run.map(speed)
    return scaled, {int(k): float(v) for k, v in speed.items()}


def with_overhead(profile: Profile, overhead_ms: pd.Series, fallback_ms: float) -> Profile:
    """The profile with the live per-batch overhead (mean per padded size) added to every sample."""
    samples = {
        size: s + float(overhead_ms.get(size, fallback_ms))
        for size, s in zip(profile.sizes, profile.samples_ms, strict=True)
    }
    mem = (
        dict(zip(profile.sizes, profile.peak_mem_mb, strict=True)) if profile.peak_mem_mb else None
    )
    meta = {
        **profile.provenance,
        "overhead_added_ms": {int(k): float(v) for k, v in overhead_ms.items()},
    }
    return Profile.from_samples(samples, mem, meta, profile.source + " + live overhead")


@dataclass
class Setup:
    """Step 0, what is validated: the scenario (its `model:` section), where the outputs
    go, and how many live runs and simulations."""

    parsed: ParsedScenario
    out: Path
    repeats: int
    sim_draws: int

    @property
    def scenario(self) -> Any:
        return self.parsed.scenario

    def with_profile(self, profile: Any, wake_latency_ms: float | None = None) -> ResolvedScenario:
        """The scenario with `profile:` set (the same traffic, seed and policy settings);
        `wake_latency_ms`: how late the server wakes from its waits (measured live)."""
        raw = self.parsed.data
        data = {**raw, "profile": profile}
        if wake_latency_ms is not None:
            data["cluster"] = {**(raw.get("cluster") or {}), "wake_latency_ms": wake_latency_ms}
        return load(data, base=self.parsed.base, origin=self.parsed.source)


@dataclass
class Measured:
    """Step 1, the real model: profiling passes bracketing the live runs, and the runs."""

    profile_file: Path  # the pooled profile (or --profile)
    planning: Profile  # what the live policy planned with: the first pass
    passes: list[pd.DataFrame]
    speeds: dict[int, float]  # each pass's speed relative to all of them
    lives: list[Any]  # LiveResult per live run
    model: dict[str, Any]


@dataclass
class Predicted:
    """Step 2, the simulator: the live traffic simulated `sim_draws` times, three ways."""

    sims: dict[str, list[RunRecords]]  # sim, sim_raw_profile, sim_live_service
    overhead: dict[str, Any]


def validate(
    scenario_path: str | Path,
    out: str | Path,
    overrides: list[str] | None = None,
    profile_path: str | Path | None = None,
    stage: Callable[[str], None] = lambda message: None,
    repeats: int = 3,
    sim_draws: int = SIM_DRAWS,
) -> dict[str, Any]:
    """Check the simulator against live runs of the real model: set up, measure (profile
    and live runs), predict (simulate the same traffic), compare (and write the report)."""
    setup = set_up(scenario_path, out, overrides, repeats, sim_draws)
    measured = measure(setup, profile_path, stage)
    predicted = predict(setup, measured, stage)
    return compare(setup, measured, predicted)


def set_up(
    scenario_path: str | Path,
    out: str | Path,
    overrides: list[str] | None,
    repeats: int,
    sim_draws: int,
) -> Setup:
    """The plan checked before anything is measured: outputs, counts, the scenario."""
    from sim.io.outputs import check_out_dir

    check_out_dir(Path(out))  # before the live runs, which take minutes
    if repeats < 1:
        raise InputError("must be >= 1 (live runs of the same traffic)", option="repeats")
    if sim_draws < 1:
        raise InputError("must be >= 1 (simulations of the same traffic)", option="sim_draws")
    parsed = parse(scenario_path, overrides or ())
    if parsed.scenario.model is None:
        raise InputError(
            "validate needs a model: section (the real model to run)",
            source=parsed.source,
            field="model",
        )
    from sim.real.live import check_servable

    check_servable(parsed.scenario, parsed.source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return Setup(parsed, out, repeats, sim_draws)


def measure(
    setup: Setup, profile_path: str | Path | None, stage: Callable[[str], None]
) -> Measured:
    """Profile the model in interleaved passes before, between and after the live runs
    (or take `profile_path`), and replay the traffic live `repeats` times."""
    from sim import models
    from sim.engine import pipeline
    from sim.profiles.profiler import (
        ProfileOptions,
        Profiler,
        provenance,
        sample_rows,
        write_profile,
    )
    from sim.real.live import run_live

    scenario, out, repeats = setup.scenario, setup.out, setup.repeats
    spec = scenario.model
    stage(f"building {spec.name} ({spec.size}) on {spec.device}")
    bundle = models.build(spec.name, spec.size, spec.device)
    options = ProfileOptions(
        spec.device,
        spec.dtype,
        threads=spec.threads,
        warmup=3,
        min_reps=PASS_ROUNDS[0],  # rounds per pass; the passes are pooled
        max_reps=PASS_ROUNDS[1],
        wall_budget_s=PASS_SHARE * (scenario.duration_s or 30.0),
        busy_repeats=3,  # back-to-back samples cost no idle wait; most live batches are such
        interleave=True,  # as the live server meets batches: mixed sizes, fresh inputs
        idle_ms=IDLE_LEVELS_MS,  # and after the server's idle waits
    )
    profiler = Profiler(bundle, options)
    # the batch sizes the policy can launch, from a stand-in profile over a wide range
    stand_in = setup.with_profile({"batch_size": [1, 1024], "latency_ms": [1, 2]})
    sizes = sorted(stand_in.launch_sizes | {1})
    bracketing = profile_path is None
    passes: list[pd.DataFrame] = []

    def profile_pass() -> pd.DataFrame:
        """One interleaved pass over every size; passes bracket the live runs, so the
        profile sees the machine in the same spells as the live runs do."""
        k = len(passes)
        stage(f"profiling batch sizes {sizes}, interleaved (pass {k + 1} of {repeats + 1})")
        gc.collect()  # every timed phase starts from a collected heap
        measured = profiler.measure_interleaved(sizes, spec.cameras, None, seed=k)
        frame = pd.DataFrame(
            [
                row
                for (b, idle), (samples, peak) in measured.items()
                for row in sample_rows(b, spec.cameras, samples, peak, idle_ms=idle, run=k)
            ]
        )
        passes.append(frame)
        return frame

    if bracketing:
        meta = {
            **provenance(bundle, options),
            "passes": f"{repeats + 1} interleaved passes: before, between and after the live runs",
        }
        profile_file = write_profile(profile_pass(), meta, out / "profile-before-live.csv")
    else:
        profile_file = Path(profile_path)
        meta_file = store.meta_path_for(profile_file)
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        expected = {
            "model": bundle.name,
            "size": bundle.size,
            "config_hash": bundle.config_hash,
            "dtype": spec.dtype,
        }
        differ = [k for k, v in expected.items() if meta.get(k) != v]
        if differ:
            raise InputError(
                f"its provenance does not match the model ({', '.join(differ)} differ)",
                source=str(profile_file),
            )
    loaded = setup.with_profile({"path": str(profile_file.resolve()), "cameras": spec.cameras})
    # what the live policy plans with (deadline policies predict batch times from it)
    planning = loaded.profile
    dtype = profiler.dtype

    def make_inputs(padded: int) -> dict[str, Any]:
        return bundle.make_inputs(padded, cameras=spec.cameras, device=spec.device, dtype=dtype)

    # the same traffic replayed `repeats` times: on a shared machine one run can meet a
    # slow spell, so the live figure is the median over runs and their spread is reported
    lives = []
    for k in range(repeats):
        run_label = f" {k + 1}/{repeats}" if repeats > 1 else ""
        stage(f"live run{run_label} ({scenario.duration_s or 'all'} s of traffic in real time)")
        gc.collect()
        lives.append(run_live(loaded, profiler.call, make_inputs))  # a fresh policy each run
        if bracketing:
            profile_pass()
    # each run's records as `batchsim run --out` writes them (batchsim plot reads them),
    # once every timed phase is over
    for k, live in enumerate(lives):
        records = live.records  # the run's scenario: `loaded`, the profile its policy planned with
        summary = pipeline.summarise(loaded, records)
        pipeline.write_outputs(out / f"live-run-{k + 1}", summary, records, setup.parsed.data)
    speeds: dict[int, float] = {}
    if bracketing:
        pooled, speeds = normalise_drift(pd.concat(passes, ignore_index=True))
        meta = {**meta, "pass_speed": speeds}
        profile_file = write_profile(pooled, meta, out / "profile.csv")
    model = {
        "name": bundle.name,
        "size": bundle.size,
        "device": spec.device,
        "dtype": spec.dtype,
        "threads": spec.threads,
    }
    return Measured(profile_file, planning, passes, speeds, lives, model)


def predict(setup: Setup, measured: Measured, stage: Callable[[str], None]) -> Predicted:
    """Simulate the live traffic `sim_draws` times three ways: with the live per-batch
    overhead and wake lateness fed back (the prediction), with the profile as measured,
    and with the live runs' own batch times (the queueing model alone)."""
    from sim.engine import pipeline

    out, sim_draws, lives = setup.out, setup.sim_draws, measured.lives
    cameras = setup.scenario.model.cameras
    live_batches = pd.concat(
        [
            pd.DataFrame(
                {
                    "padded": r.records.batch_padded,
                    "overhead_ms": r.overhead_ms,
                    "ms": (r.records.batch_end_s - r.records.batch_start_s) * 1000,
                }
            )
            for r in lives
        ],
        ignore_index=True,
    )
    stage(f"simulating the same traffic ({sim_draws} draws of service times, three ways)")

    def simulations(
        profile: Any, wake_latency_ms: float | None = None
    ) -> tuple[ResolvedScenario, list]:
        """The scenario with this profile, loaded once, and `sim_draws` runs of the live
        traffic through it, each with its own policy object planning with the live
        policy's profile."""
        loaded_sim = setup.with_profile(profile, wake_latency_ms)
        runs = [
            pipeline.simulate(loaded_sim, service_draw=k, planned_with=measured.planning)
            for k in range(sim_draws)
        ]
        return loaded_sim, runs

    measured_spec = {"path": str(measured.profile_file.resolve()), "cameras": cameras}
    as_measured, sims_raw = simulations(measured_spec)
    per_size = live_batches.groupby("padded")["overhead_ms"].mean()
    # the live server's sleeps end late (timer slack, scheduling): the median, in every
    # simulation but the raw profile's
    wakes = np.concatenate([r.wake_late_ms for r in lives])
    wake_late_ms = max(float(np.median(wakes)), 0.0) if wakes.size else 0.0
    fallback = float(live_batches.overhead_ms.mean()) if len(live_batches) else 0.0
    # the overhead added at every idle level (back to back only, without levels)
    levels = {
        level_s: with_overhead(variant, per_size, fallback)
        for level_s, variant in (as_measured.after_idle or {0.0: as_measured.profile}).items()
    }
    adjusted_profile = levels[min(levels)]
    adjusted_path = out / "profile-with-overhead.csv"
    store.write_levels(levels, adjusted_path)
    adjusted, sims_adj = simulations(str(adjusted_path.resolve()), wake_late_ms)
    pipeline.write_outputs(
        out / "sim-draw-1", pipeline.summarise(adjusted, sims_adj[0]), sims_adj[0], adjusted.raw
    )
    # the queueing model alone: the live runs' own batch times as the profile
    observed = {int(k): g.ms.to_numpy() for k, g in live_batches.groupby("padded")}
    service = {
        size: observed.get(size, samples)
        for size, samples in zip(adjusted_profile.sizes, adjusted_profile.samples_ms, strict=True)
    }
    live_profile = Profile.from_samples(
        service, None, {"source": "live batch times"}, "live batch times"
    )
    live_profile_path = out / "profile-live-batches.csv"
    store.write(live_profile, live_profile_path)
    _, sims_live = simulations(str(live_profile_path.resolve()), wake_late_ms)
    forward = np.concatenate([r.forward_ms for r in lives])
    overhead = {
        "handling": "measured per batch in the live run (batch time minus the model's forward) and added "
        "to the profile by padded size for the 'sim' prediction, with the live server's median "
        "wake-up lateness as cluster.wake_latency_ms; 'sim_raw_profile' leaves both out",
        "wake_late_ms": {
            "median": wake_late_ms,
            "p90": float(np.percentile(wakes, 90)) if wakes.size else None,
            "sleeps": int(wakes.size),
        },
        "mean_ms": fallback,
        "per_padded_size_ms": {int(k): float(v) for k, v in per_size.items()},
        "forward_mean_ms": float(forward.mean()) if forward.size else None,
    }
    sims = {"sim": sims_adj, "sim_raw_profile": sims_raw, "sim_live_service": sims_live}
    return Predicted(sims, overhead)


def compare(setup: Setup, measured: Measured, predicted: Predicted) -> dict[str, Any]:
    """The live runs against the predictions: comparison rows and target verdicts, the KS
    statistic on latency, the CDF figure, validation.json and report.md."""
    from sim.plots.figures import latency_cdf_of, save, titles
    from sim.validation.verdict import ks as two_sample_ks

    out, repeats, sim_draws, lives = setup.out, setup.repeats, setup.sim_draws, measured.lives
    slo_ms = setup.scenario.slo.latency_ms
    live_summaries = [summarize(r.records, slo_ms) for r in lives]
    sim_summaries = {
        key: [summarize(r, slo_ms) for r in records] for key, records in predicted.sims.items()
    }
    rows = comparison_rows(live_summaries, sim_summaries)
    sims_adj, sims_raw = predicted.sims["sim"], predicted.sims["sim_raw_profile"]
    lat_live = np.concatenate([latencies_ms(r.records) for r in lives])
    lat_sim = np.concatenate([latencies_ms(r) for r in sims_adj])
    ks = two_sample_ks(lat_live, lat_sim) if lat_live.size and lat_sim.size else None
    # the samples the KS compares (completed, after the warm-up); each way, its draws pooled
    fig = latency_cdf_of(
        {
            **{
                f"live{f' (run {k + 1})' if repeats > 1 else ''}": latencies_ms(r.records)
                for k, r in enumerate(lives)
            },
            f"simulated (profile + overhead, {sim_draws} draws)": lat_sim,
            f"simulated (profile as measured, {sim_draws} draws)": np.concatenate(
                [latencies_ms(r) for r in sims_raw]
            ),
            f"simulated (live batch times, {sim_draws} draws)": np.concatenate(
                [latencies_ms(r) for r in predicted.sims["sim_live_service"]]
            ),
        }
    )
    titles(
        fig.axes[0],
        f"latency CDF: {repeats} live run(s) vs the simulations, after the "
        f"{setup.scenario.warmup_s:g} s warm-up",
        Path(setup.parsed.source).name,
    )
    figure = save(fig, out / "latency_cdf.png")
    passes = measured.passes
    result = {
        "scenario": setup.parsed.source,
        "model": measured.model,
        "profile": str(measured.profile_file),
        "overhead": predicted.overhead,
        "repeats": repeats,
        "sim_draws": sim_draws,
        "profile_passes": [
            {
                "run": int(k),
                "median_ms": {
                    int(b): float(v) for b, v in g.groupby("batch_size").latency_ms.median().items()
                },
                "speed": measured.speeds.get(int(k)),
            }
            for k, g in (pd.concat(passes).query("idle_ms == 0").groupby("run") if passes else [])
        ],
        "comparison": rows,  # None where a figure is undefined (no NaN in the JSON)
        "targets": target_verdicts(rows),
        "noise_aware": noise_aware(rows, lat_sim, lat_live),
        "ks": ks,
        "failures": [
            f"run {k + 1}: {line}" if repeats > 1 else line
            for k, r in enumerate(lives)
            for line in r.failures
        ],
        "requests": {
            **{f"live_run_{k + 1}": v["requests"] for k, v in enumerate(live_summaries)},
            **{k: v[0]["requests"] for k, v in sim_summaries.items()},
        },
        "figure": str(figure),
    }
    (out / "validation.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (out / "report.md").write_text(render_report(result))
    return result
