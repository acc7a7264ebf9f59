"""What the CLI prints: consoles that suit a terminal or a log, tables (rich box drawing on
a terminal, plain ASCII elsewhere) and the tables of each command's result."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table


def _console(stderr: bool = False) -> Console:
    """rich's console on a terminal; into a pipe or a file, one that never wraps at 80
    columns (lines as long as they are), without colour."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=10_000, no_color=True, highlight=False)


out_console = _console()
err_console = _console(stderr=True)


def new_table(**options: Any) -> Table:
    """A table: rich's box drawing on a terminal, plain ASCII columns elsewhere (a log, a
    pipe into grep), as wide as its content."""
    if not out_console.is_terminal:
        options["box"] = box.ASCII2 if options.get("box") is not box.SIMPLE else box.SIMPLE
        options["header_style"] = None
        options["title_style"] = None
        options["title_justify"] = "left"
    return Table(**options)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def summary_table(summary: dict[str, Any], command: str = "run") -> Table:
    """The figures of one run as a rich table (every figure read through the metrics
    registry, sim.metrics.summary)."""
    from sim.metrics.registry import metric_value

    def v(name: str) -> Any:
        return metric_value(summary, name)

    def dist(prefix: str) -> str:
        return "  ".join(
            f"{stat} {fmt(v(f'{prefix}_{stat}_ms'))}"
            for stat in ("mean", "p50", "p90", "p99", "max")
        )

    table = new_table(
        title=f"batchsim {command}: {summary['scenario']}", show_header=True, header_style="bold"
    )
    table.add_column("metric")
    table.add_column("value")
    # every count of batchsim is of the measured window: arrivals (batches) after the warm-up
    window = summary.get("window_s")
    table.add_row(
        "requests" + (f" (the {window:g} s after warm-up)" if window else ""),
        f"{v('requests_arrived'):,} arrived, {v('requests_completed'):,} completed, "
        f"{v('dropped'):,} dropped, {v('rejected'):,} rejected, "
        f"{v('requests_unfinished'):,} unfinished",
    )
    estimated = summary.get("profile", {}).get("provenance", {}).get("estimate")
    if estimated:  # say so where the figures are read: they rest on no measurement of this GPU
        table.add_row(
            "profile",
            f"ESTIMATED for {estimated['target_gpu']['name']} from "
            f"{estimated['source_profile']} (measured on {estimated['source_gpu']['name']}); "
            "not a measurement",
        )
    table.add_row("throughput (req/s)", fmt(v("throughput_rps")))
    # goodput counts requests answered by their deadline; without deadlines it is throughput
    has_deadlines = summary["slo"]["attainment"] is not None
    table.add_row(
        "goodput (req/s)" + (", by their deadline" if has_deadlines else ", no deadlines: all"),
        fmt(v("goodput_rps")),
    )
    table.add_row("latency (ms)", dist("latency"))
    table.add_row("queue delay (ms)", dist("queue_delay"))
    if v("batch_admitted_mean") is not None:  # step level: a batch is an iteration
        table.add_row(
            "iterations",
            f"{fmt(v('batch_size_mean'))} in flight, {fmt(v('batch_admitted_mean'))} "
            f"admitted, mean over {v('batches'):,} iterations",
        )
    else:
        table.add_row(
            "batch size",
            f"mean {fmt(v('batch_size_mean'))}  padded {fmt(v('batch_size_padded_mean'))}  "
            f"over {v('batches'):,} batches",
        )
    if "steps" in summary:
        steps = summary["steps"]
        floor = "" if steps["floor"] is None else f", floor {steps['floor']}"
        share = v("steps_degraded_share")
        table.add_row(
            "denoising steps",
            f"mean {fmt(v('steps_mean'))} of {steps['full']}{floor}; "
            f"{'-' if share is None else f'{share:.1%}'} of requests degraded",
        )
    table.add_row(
        "utilization",
        f"{v('utilization_mean'):.1%} mean over {len(summary['utilization']['per_replica'])} "
        "replica(s)",
    )
    slo = summary["slo"]
    if slo["latency_ms"] is not None:
        att = v("slo_attainment")
        table.add_row(
            f"SLO attainment (<= {slo['latency_ms']:g} ms)", "-" if att is None else f"{att:.2%}"
        )
    for name, block in summary.get("classes", {}).items():
        att = block["attainment"]
        table.add_row(
            f"class {name}",
            f"{block['requests']['arrived']:,} arrived, attainment "
            f"{'-' if att is None else f'{att:.2%}'}, p99 {fmt(block['latency_ms']['p99'])} ms, "
            f"goodput {fmt(block['goodput_rps'])} req/s",
        )
    if "fairness" in summary:
        table.add_row("fairness (Jain, attainment)", fmt(summary["fairness"]["jain_attainment"], 3))
    if "robots" in summary:
        miss = v("robots_deadline_miss_rate")
        table.add_row(
            f"robots ({summary['robots']['count']})",
            f"stall {v('robots_stall_fraction'):.1%} (worst {v('robots_stall_fraction_max'):.1%}), "
            f"control rate {v('robots_control_rate_ratio'):.1%} of target "
            f"({v('robots_effective_control_hz'):.1f} Hz), chunks {v('robots_chunk_rate_hz'):.2f}/s, "
            f"Jain {fmt(v('robots_jain_control_rate'), 3)}",
        )
        episodes = v("robots_stall_episodes")
        table.add_row(
            "robot stalls",
            f"{episodes:,} freezes, mean {fmt(v('robots_stall_episode_mean_ms'), 1)} ms, "
            f"longest {fmt(v('robots_stall_longest_ms'), 1)} ms"
            if episodes
            else "none",
        )
        if summary["robots"].get("rtc"):  # real-time chunking: what late chunks cost
            late = v("robots_rtc_late_share")
            table.add_row(
                "real-time chunking",
                f"{'-' if late is None else f'{late:.1%}'} of chunks late, "
                f"{fmt(v('robots_rtc_late_actions_per_chunk'))} late actions per chunk, "
                f"{v('robots_rtc_discarded_chunks'):,} discarded; delay d "
                f"{fmt(v('robots_rtc_delay_steps_mean'))} ticks on average; stalest action "
                f"{v('robots_rtc_staleness_max_actions')} ticks old",
            )
        stale = v("robots_stale_actions_per_chunk")
        table.add_row(
            "robot deadlines",
            ("none (sync robots without slo.latency_ms)" if miss is None else f"{miss:.1%} missed")
            + f"; stale actions {'-' if stale is None else f'{stale:.2f}'} per chunk",
        )
        table.add_row(
            "robot round trip (ms)",
            "  ".join(
                f"{stat} {fmt(v(f'robots_round_trip_{stat}_ms'))}"
                for stat in ("p50", "p90", "p99", "max")
            ),
        )
    if "memory" in summary:
        mem = summary["memory"]
        table.add_row(
            "memory",
            f"limit {mem['limit_mb']:,.0f} MB: batches up to {mem['largest_batch_in_memory']}",
        )
    if "cost" in summary:
        cost = summary["cost"]
        per_robot = v("cost_usd_per_robot_hour")
        table.add_row(
            "cost",
            f"${fmt(v('cost_usd_per_hour'))}/h ({len(summary['utilization']['per_replica'])} x "
            f"${cost['usd_per_gpu_hour']:g} per {cost['gpu'] or 'GPU'}-hour), "
            f"${fmt(v('cost_usd_per_million_requests'))} per million requests"
            + ("" if per_robot is None else f", ${per_robot:.3f} per robot-hour"),
        )
    if "energy" in summary:
        energy = summary["energy"]
        table.add_row(
            "energy",
            f"{fmt(v('energy_average_power_w'), 0)} W average, "
            f"{fmt(v('energy_joules_per_request'))} J per request "
            f"(busy {energy['busy_s']:,.1f} s, idle {energy['idle_s']:,.1f} s of replica time"
            + ("; the GPU table's maximum power while busy: an upper bound)"
               if energy["upper_bound"] else ")"),
        )  # fmt: skip
    else:
        table.caption = (
            "energy: none (no power known: the profile names no GPU; give the scenario "
            "power: {idle_w, busy_w})"
        )
    return table


def sweep_table(summary: Any, keys: list[str]) -> Table:
    from sim.experiments.answer import fmt_interval
    from sim.metrics.registry import METRICS

    table = new_table(title="sweep: mean [95% interval] over replications", header_style="bold")
    for key in keys:
        table.add_column(key, overflow="fold")
    columns = ("throughput_rps", "latency_p99_ms", "slo_attainment", "batch_size_mean")
    rows = summary.to_dict("records")
    fleet = ("robots_stall_fraction", "robots_round_trip_p99_ms")
    if any(
        row.get(name) == row.get(name) and row.get(name) is not None
        for row in rows
        for name in fleet
    ):  # a fleet: what its robots feel
        columns += fleet
    for name in columns:
        metric = METRICS[name]
        table.add_column(f"{metric.label} ({metric.unit})", justify="right")

    def cell(row, metric, digits=1):
        mean = row.get(metric)
        if mean is None or mean != mean:
            return "-"
        spec = f".{digits}f"
        return fmt_interval(mean, row.get(f"{metric}_lo"), row.get(f"{metric}_hi"), spec, spec)

    digits = {"slo_attainment": 3, "batch_size_mean": 2, "robots_stall_fraction": 3}
    for row in rows:
        table.add_row(
            *[str(row[f"grid.{k}"]) for k in keys],
            *(cell(row, name, digits.get(name, 1)) for name in columns),
        )
    return table


def print_validation(
    result: dict[str, Any], scenario: Path, out: Path, against: str, second: str
) -> None:
    """validate's table and verdicts: `against` the live or recorded runs; `second`, the
    simulation with the observed batch times (the queueing model alone)."""
    table = new_table(
        title=f"validate: {scenario.name}", header_style="bold", box=box.SIMPLE, pad_edge=False
    )
    for col in (
        "metric",
        against,
        "spread",
        "sim",
        "error",
        "batches",
        "error",
    ):
        table.add_column(
            col, justify="right" if col != "metric" else "left", no_wrap=col == "metric"
        )
    for row in result["comparison"]:
        table.add_row(
            row["metric"],
            fmt(row["live"]),
            "-" if row["live_spread"] is None else f"{row['live_spread']:.1%}",
            fmt(row["sim"]),
            "-" if row["sim_error"] is None else f"{row['sim_error']:+.1%}",
            fmt(row.get(second)),
            "-" if row.get(f"{second}_error") is None else f"{row[f'{second}_error']:+.1%}",
        )
    out_console.print(table)
    out_console.print(
        f"{against}: median of the {against} runs; sim: the prediction, median "
        f"of the simulations; batches: the {against} batch times (the queueing model alone); "
        "report.md has more"
    )
    if result["ks"]:
        out_console.print(f"KS statistic on latency: {result['ks']['statistic']:.3f}")
    out_console.print(
        "targets: "
        + ", ".join(
            f"{t['metric']} {'-' if t['error'] is None else format(t['error'], '+.1%')} "
            f"({'met' if t['met'] else 'NOT met'}, within {t['within']:.0%}"
            f"{'; inside the runs' if t['inside_live_range'] else ''})"
            for t in result["targets"].values()
        )
    )
    noise = result.get("noise_aware") or {}
    told = noise.get("per_metric") or {}
    if told:
        same = [name for name, v in told.items() if v["indistinguishable"]]
        out_console.print(
            f"noise-aware: {len(same)} of {len(told)} figures indistinguishable from a rerun"
        )
    if noise.get("tost_latency"):
        t = noise["tost_latency"]
        out_console.print(
            f"TOST on mean latency within {t['margin']:.0%}: p = {t['p']:.3g} "
            f"({'equivalent' if t['equivalent'] else 'not shown equivalent'})"
        )
    if result.get("failures"):
        out_console.print(
            f"{len(result['failures'])} batch(es) failed in the live run; see {out}/report.md"
        )
    out_console.print(f"wrote {out}/validation.json, report.md, latency_cdf.png")
