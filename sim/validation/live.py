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
from sim.metrics.registry import metric_value
from sim.metrics.summary import summarize
from sim.profiles import store
from sim.profiles.profile import Profile

# the figures compared, live against simulated (names of the metrics registry)
COMPARED = (
    "throughput_rps",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "queue_delay_mean_ms",
    "queue_delay_p99_ms",
    "batch_size_mean",
    "utilization_mean",
    "slo_attainment",
    "robots_stall_fraction",
    "robots_deadline_miss_rate",
    "robots_control_rate_ratio",
)


# idle waits before profiled calls: a model runs slower after the server has been idle
# (benchmarks/bench_idle.py), and the simulator draws each batch from the level reached
IDLE_LEVELS_MS = (0.0, 10.0, 200.0)

# each profiling pass's wall time (idle waits included), as a share of one live run's
# duration: a model with few batch sizes gets more rounds (20-odd samples per size and
# level left a 10% error in one level's median), one with many gets min_reps rounds
PASS_SHARE = 0.3
PASS_ROUNDS = (6, 60)

# simulations of the live traffic, each with its own draw of service times: the prediction
# is their median, as the live figure is the median live run (a fleet whose robots can
# settle into more than one phase pattern gives either, draw by draw, run by run)
SIM_DRAWS = 15

# the fidelity targets: the prediction's relative error against the live run
TARGETS = {"throughput_rps": 0.02, "latency_p50_ms": 0.05, "latency_p99_ms": 0.05}


def latencies_ms(records) -> np.ndarray:
    measured = (records.arrival_s >= records.warmup_s) & (records.outcome == 1)
    return (records.request_completion_s[measured] - records.arrival_s[measured]) * 1000


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


def noise_aware(
    rows: list[dict[str, Any]],
    lat_sim: np.ndarray,
    lat_live: np.ndarray,
    margin: float = 0.05,
    kind: str = "sim",
) -> dict[str, Any]:
    """The verdict that knows the live runs' own noise (sim.validation.verdict): per figure, whether
    the prediction is indistinguishable from a rerun (needs two or more live runs), and a
    TOST equivalence test of the mean latency within `margin`; `kind`: which simulation
    of the comparison rows is judged."""
    from sim.validation.verdict import indistinguishable, tost

    per_metric = {}
    for row in rows:
        runs, predicted = row.get("live_runs") or [], row.get(kind)
        if len(runs) >= 2 and predicted is not None and all(abs(v) > 1e-12 for v in runs):
            per_metric[row["metric"]] = indistinguishable(predicted, runs)
    enough = lat_sim.size >= 2 and lat_live.size >= 2
    return {
        "per_metric": per_metric,
        "tost_latency": tost(lat_sim, lat_live, margin) if enough else None,
    }


def comparison_rows(
    live_summaries: list[dict[str, Any]], sim_summaries: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One row per COMPARED metric: the median live run and its runs' spread, and for each
    simulation kind (sim, sim_raw_profile, sim_live_service) the median draw and its error.
    Robot figures only for robot runs; None where a figure is undefined (no NaN in JSON)."""
    rows = []
    for name in COMPARED:
        runs = [metric_value(summary, name) for summary in live_summaries]
        if any(v is None for v in runs):
            if name.startswith("robots"):
                continue
            runs = []
        live_v = float(np.median(runs)) if runs else None
        row = {"metric": name, "live": live_v, "live_runs": runs}
        # how far the live runs themselves lie apart: what no prediction can do better than
        row["live_spread"] = (
            (max(runs) - min(runs)) / abs(live_v) if runs and live_v and len(runs) > 1 else None
        )
        for key, summaries in sim_summaries.items():
            draws = [metric_value(summary, name) for summary in summaries]
            v = None if any(d is None for d in draws) else float(np.median(draws))
            row[key] = v
            if key == "sim":
                row["sim_draws"] = draws
            measurable = live_v is not None and v is not None and abs(live_v) > 1e-12
            row[f"{key}_error"] = (v - live_v) / live_v if measurable else None
        rows.append(row)
    return rows


def target_verdicts(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's TARGETS against the comparison rows: met, and inside the live runs' range."""
    by_metric = {row["metric"]: row for row in rows}
    verdicts = {}
    for metric, within in TARGETS.items():
        row = by_metric.get(metric, {})
        error, runs, predicted = row.get("sim_error"), row.get("live_runs"), row.get("sim")
        verdicts[metric] = {
            "metric": metric,
            "error": error,
            "within": within,
            "met": error is not None and abs(error) <= within,
            # no worse than the machine's own noise: inside the live runs' range
            "inside_live_range": bool(runs and predicted is not None)
            and min(runs) <= predicted <= max(runs),
        }
    return verdicts


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
    if repeats < 1:
        raise InputError("must be >= 1 (live runs of the same traffic)", source="--repeats")
    if sim_draws < 1:
        raise InputError("must be >= 1 (simulations of the same traffic)", source="--sim-draws")
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
        meta_file = profile_file.with_suffix("").with_suffix(".meta.json")
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
    from sim.io.plots import latency_cdfs, save
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
    figure = save(
        latency_cdfs(
            {
                **{
                    f"live{f' (run {k + 1})' if repeats > 1 else ''}": r.records.requests_frame()
                    for k, r in enumerate(lives)
                },
                # every draw pooled: the distribution the simulator predicts
                f"simulated (profile + overhead, {sim_draws} draws)": pd.concat(
                    [r.requests_frame() for r in sims_adj]
                ),
                f"simulated (profile as measured, {sim_draws} draws)": pd.concat(
                    [r.requests_frame() for r in sims_raw]
                ),
            }
        ),
        out / "latency_cdf.png",
    )
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


def _cell(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{v:+.1%}" if pct else f"{v:,.2f}"


def _passes_line(passes: list[dict[str, Any]]) -> list[str]:
    """How the machine drifted over the session: each profiling pass's median at the largest size."""
    if not passes:
        return []
    largest = max(int(b) for b in passes[0]["median_ms"])
    medians = ", ".join(f"{p['median_ms'][largest]:.2f}" for p in passes)
    speeds = ", ".join(f"{p['speed']:.3f}" for p in passes if p.get("speed") is not None)
    return [
        f"Profile: {len(passes)} interleaved passes (shuffled sizes, fresh inputs, idle waits "
        f"of {', '.join(f'{v:g}' for v in IDLE_LEVELS_MS)} ms before calls), one before "
        f"the live runs and one after each, pooled; the live policy planned with the first. "
        f"Median at batch {largest} back to back, pass by pass: {medians} ms; speeds "
        f"(relative to all passes) {speeds}: each pass is scaled to the median speed before "
        "pooling (sim.validation.live.normalise_drift).",
        "",
    ]


def noise_lines(noise: dict[str, Any], against: str) -> list[str]:
    """The noise-aware verdict in the report: per figure, the prediction's error against
    `against` beside a rerun's own (leave-one-out), and the TOST on mean latency."""
    lines = []
    if noise.get("per_metric"):
        told = ", ".join(
            f"{name} {v['error']:+.1%} vs a rerun's {v['spread']:.1%}: "
            f"{'indistinguishable' if v['indistinguishable'] else 'distinguishable'}"
            for name, v in noise["per_metric"].items()
        )
        lines += ["", f"Noise-aware, prediction vs {against} (leave-one-out spread): {told}."]
    if noise.get("tost_latency"):
        t = noise["tost_latency"]
        lines += [
            "",
            f"TOST on mean latency within {t['margin']:.0%}: p = {t['p']:.3g}, "
            f"{'equivalent' if t['equivalent'] else 'not shown equivalent'} at alpha {t['alpha']}.",
        ]
    return lines


def render_report(result: dict[str, Any]) -> str:
    """The validation as a markdown report."""
    m = result["model"]
    lines = [
        f"# Validation: {result['scenario']}",
        "",
        f"Model `{m['name']}` ({m['size']}) on {m['device']}, {m['dtype']}, {m['threads']} thread(s); profile `{result['profile']}`.",
        "",
        "Simulated: the profile plus the live per-batch overhead (the prediction). Raw: the profile as "
        "measured. Live batches: the live run's own batch times as the profile, which isolates the "
        "queueing model from profiling error.",
        "",
        f"Live: the median of {result.get('repeats', 1)} live run(s) of the same traffic; spread: "
        "(largest - smallest) / median over those runs, the machine's own run-to-run noise. "
        f"Each simulated figure is the median of {result.get('sim_draws', 1)} simulations of "
        "that traffic, each with its own draw of service times from the profile.",
        "",
        "| metric | live | spread | simulated | error | raw profile | error | live batches | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["comparison"]:
        spread = row.get("live_spread")
        lines.append(
            f"| {row['metric']} | {_cell(row['live'])} | {'-' if spread is None else f'{spread:.1%}'} "
            f"| {_cell(row['sim'])} | {_cell(row['sim_error'], True)} "
            f"| {_cell(row['sim_raw_profile'])} | {_cell(row['sim_raw_profile_error'], True)} "
            f"| {_cell(row['sim_live_service'])} | {_cell(row['sim_live_service_error'], True)} |"
        )
    ks = result["ks"]
    ov = result["overhead"]
    targets = result.get("targets") or {}
    if targets:
        verdict = ", ".join(
            f"{t['metric']} {_cell(t['error'], True)} (within {t['within']:.0%}: {'yes' if t['met'] else 'no'}; "
            f"inside the live runs' range: {'yes' if t['inside_live_range'] else 'no'})"
            for t in targets.values()
        )
        lines += ["", f"Targets, prediction vs live: {verdict}."]
    lines += noise_lines(result.get("noise_aware") or {}, "the live runs")
    lines += [
        "",
        f"Latency distributions, live vs simulated: two-sample KS statistic {ks['statistic']:.3f} (p = {ks['pvalue']:.3g})."
        if ks
        else "No latencies to compare.",
        "",
        *_passes_line(result.get("profile_passes") or []),
        f"Per-batch overhead outside the model's forward: {ov['mean_ms']:.2f} ms on average "
        f"(forward {ov['forward_mean_ms'] or 0:.2f} ms); {ov['handling']}.",
        "",
    ]
    wake = ov.get("wake_late_ms")
    if wake and wake.get("sleeps"):
        lines += [
            f"The live server woke {wake['median'] * 1000:.0f} us late from its waits at the median "
            f"(p90 {wake['p90'] * 1000:.0f} us, {wake['sleeps']:,} sleeps).",
            "",
        ]
    if result["failures"]:
        lines += [
            f"**{len(result['failures'])} batch(es) failed in the live run**; their requests are recorded as failed:",
            "",
        ]
        lines += [f"- {f}" for f in result["failures"]]
    else:
        lines.append("No batch failed in the live run.")
    lines += [
        "",
        "Records, in the files `batchsim run --out` writes (summary.json, requests.parquet, "
        "batches.parquet): `live-run-K/` for each live run, `sim-draw-1/` for the first "
        "simulation of the prediction.",
        "",
        f"![latency CDFs]({Path(result['figure']).name})",
        "",
    ]
    return "\n".join(lines)


# ---- validate --records: the simulation against runs recorded elsewhere -------------------
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
    from sim.io.plots import latency_cdfs, save
    from sim.real.recorded import batch_times_ms, describe, read_recorded
    from sim.validation.verdict import ks as two_sample_ks

    if sim_draws < 1:
        raise InputError("must be >= 1 (simulations of the same traffic)", source="--sim-draws")
    if not record_paths:
        raise InputError("give one or more recorded runs (folders or files)", source="--records")
    parsed = parse(scenario_path, overrides or ())
    s = parsed.scenario
    recorded = [read_recorded(Path(p), s.warmup_s) for p in record_paths]
    observed = batch_times_ms(recorded)
    if not observed:
        raise InputError("the records hold no batch with a start and an end", source="--records")
    stage(
        f"read {len(recorded)} recorded run(s), {sum(v.size for v in observed.values()):,} batches"
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
                source="--records",
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
    slo_ms = s.slo.latency_ms
    live_summaries = []
    for r in recorded:
        summary = summarize(r.records, slo_ms)
        if r.robots is not None:
            summary["robots"] = r.robots
        live_summaries.append(summary)
    sim_summaries = {key: [summarize(x, slo_ms) for x in runs] for key, runs in sims.items()}
    rows = comparison_rows(live_summaries, sim_summaries)
    lat_live = np.concatenate([latencies_ms(r.records) for r in recorded])
    lat_sim = np.concatenate([latencies_ms(x) for x in sims["sim"]])
    ks = two_sample_ks(lat_live, lat_sim) if lat_live.size and lat_sim.size else None
    label = "recorded" if len(recorded) == 1 else "recorded run {k}"
    figure = save(
        latency_cdfs(
            {
                **{
                    label.format(k=k + 1): r.records.requests_frame()
                    for k, r in enumerate(recorded)
                },
                f"simulated ({primary} profile, {sim_draws} draws)": pd.concat(
                    [x.requests_frame() for x in sims["sim"]]
                ),
            }
        ),
        out / "latency_cdf.png",
    )
    first = kinds["sim"]
    first_summary = pipeline.summarise(first, sims["sim"][0])
    pipeline.write_outputs(out / "sim-draw-1", first_summary, sims["sim"][0], first.raw)
    overhead = _outside_model(recorded)
    result = {
        "scenario": parsed.source,
        "records": [describe(r) for r in recorded],
        "prediction_profile": primary,
        "profile": str(records_profile) if primary != "scenario" else first.profile.source,
        "profile_from_records": {
            "file": str(records_profile),
            "recorded_sizes": sorted(observed),
            "sizes_from_scenario_profile": filled,
            "batches": int(sum(v.size for v in observed.values())),
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


def render_records_report(result: dict[str, Any]) -> str:
    """validate --records as a markdown report."""
    second = any("sim_recorded_batches" in row for row in result["comparison"])
    runs = len(result["records"])
    lines = [
        f"# Validation against recorded runs: {result['scenario']}",
        "",
        f"Recorded: {runs} run(s): "
        + "; ".join(f"`{r['source']}` ({r['requests']:,} requests)" for r in result["records"])
        + ". The recorded figure is their median; spread: (largest - smallest) / median.",
        "",
        f"Simulated: the median of {result['sim_draws']} simulations of the scenario, with the "
        f"{result['prediction_profile']} profile (`{result['profile']}`)"
        + (
            "; 'recorded batches' draws service times from the records' own batch times "
            "(the queueing model alone)."
            if second
            else "."
        ),
        "",
        "| metric | recorded | spread | simulated | error |"
        + (" recorded batches | error |" if second else ""),
        "|---|---|---|---|---|" + ("---|---|" if second else ""),
    ]
    for row in result["comparison"]:
        spread = row.get("live_spread")
        line = (
            f"| {row['metric']} | {_cell(row['live'])} | "
            f"{'-' if spread is None else f'{spread:.1%}'} | {_cell(row['sim'])} | "
            f"{_cell(row['sim_error'], True)} |"
        )
        if second:
            line += (
                f" {_cell(row.get('sim_recorded_batches'))} | "
                f"{_cell(row.get('sim_recorded_batches_error'), True)} |"
            )
        lines.append(line)
    verdict = ", ".join(
        f"{t['metric']} {_cell(t['error'], True)} (within {t['within']:.0%}: "
        f"{'yes' if t['met'] else 'no'})"
        for t in result["targets"].values()
    )
    lines += ["", f"Fixed targets, prediction vs recorded: {verdict}."]
    lines += noise_lines(result["noise_aware"], "the recorded runs")
    if not result["noise_aware"]["per_metric"]:
        lines += ["", "Noise-aware: one recorded run gives no spread; record two or more."]
    if "noise_aware_recorded_batches" in result:
        lines += noise_lines(
            result["noise_aware_recorded_batches"],
            "the recorded runs, simulated with their own batch times",
        )
    ks = result["ks"]
    if ks:
        lines += [
            "",
            f"Latency distributions: two-sample KS statistic {ks['statistic']:.3f} "
            f"(p = {ks['pvalue']:.3g}).",
        ]
    outside = result.get("outside_model_ms")
    if outside:
        lines += [
            "",
            f"Per-batch time outside the server's model call: {outside['mean_ms']:.2f} ms on "
            "average (batch time minus the server's model_ms: stacking the observations, "
            "copying in and out); the recorded batch times include it.",
        ]
    made = result["profile_from_records"]
    lines += [
        "",
        f"Recorded batch times: {made['batches']:,} batches at sizes {made['recorded_sizes']}"
        + (
            f"; sizes {made['sizes_from_scenario_profile']} from the scenario's profile"
            if made["sizes_from_scenario_profile"]
            else ""
        )
        + f" (`{made['file']}`).",
        "",
        f"![latency CDFs]({Path(result['figure']).name})",
        "",
    ]
    return "\n".join(lines)
