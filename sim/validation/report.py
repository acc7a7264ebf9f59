"""validate's report.md, for live runs and for recorded runs: the comparison table, the
targets, the noise-aware verdicts and how the prediction was made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim.validation.compare import IDLE_LEVELS_MS


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


def render_records_report(result: dict[str, Any]) -> str:
    """validate --records as a markdown report."""
    second = any("sim_recorded_batches" in row for row in result["comparison"])
    runs = len(result["records"])
    lines = [
        f"# Validation against recorded runs: {result['scenario']}",
        "",
        f"Recorded: {runs} run(s): "
        + "; ".join(
            f"`{r['source']}` ({r['requests']:,} requests and {r['batches']:,} batches after "
            f"the {r['warmup_s']:g} s warm-up, as observe and summary.json count them)"
            for r in result["records"]
        )
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
        f"Recorded batch times: {made['batches']:,} batches (every one, warm-up included) at "
        f"sizes {made['recorded_sizes']}"
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
