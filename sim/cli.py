"""The `batchsim` command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sim.errors import InputError

app = typer.Typer(
    name="batchsim",
    help="Simulate batching schedulers for VLA robot-policy inference.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out_console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Simulate batching schedulers for VLA robot-policy inference."""


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def summary_table(summary: dict[str, Any]) -> Table:
    """The figures of one run as a rich table."""
    table = Table(
        title=f"batchsim run: {summary['scenario']}", show_header=True, header_style="bold"
    )
    table.add_column("metric")
    table.add_column("value")
    req = summary["requests"]
    table.add_row(
        "requests",
        f"{req['arrived']:,} arrived, {req['completed']:,} completed, {req['dropped']:,} dropped, "
        f"{req['rejected']:,} rejected, {req['unfinished']:,} unfinished",
    )
    table.add_row("throughput (req/s)", _fmt(summary["throughput_rps"]))
    table.add_row("goodput (req/s)", _fmt(summary["goodput_rps"]))
    for key, label in (("latency_ms", "latency (ms)"), ("queue_delay_ms", "queue delay (ms)")):
        d = summary[key]
        table.add_row(
            label,
            f"mean {_fmt(d['mean'])}  p50 {_fmt(d['p50'])}  p90 {_fmt(d['p90'])}  "
            f"p99 {_fmt(d['p99'])}  max {_fmt(d['max'])}",
        )
    b = summary["batch_size"]
    table.add_row(
        "batch size",
        f"mean {_fmt(b['mean'])}  padded {_fmt(b['padded_mean'])}  over {b['batches']:,} batches",
    )
    util = summary["utilization"]
    table.add_row(
        "utilization", f"{util['mean']:.1%} mean over {len(util['per_replica'])} replica(s)"
    )
    slo = summary["slo"]
    if slo["latency_ms"] is not None:
        att = slo["attainment"]
        table.add_row(
            f"SLO attainment (<= {slo['latency_ms']:g} ms)", "-" if att is None else f"{att:.2%}"
        )
    for name, block in summary.get("classes", {}).items():
        att = block["attainment"]
        table.add_row(
            f"class {name}",
            f"{block['requests']['arrived']:,} arrived, attainment "
            f"{'-' if att is None else f'{att:.2%}'}, p99 {_fmt(block['latency_ms']['p99'])} ms, "
            f"goodput {_fmt(block['goodput_rps'])} req/s",
        )
    if "fairness" in summary:
        table.add_row(
            "fairness (Jain, attainment)", _fmt(summary["fairness"]["jain_attainment"], 3)
        )
    if "robots" in summary:
        rb = summary["robots"]
        miss = rb["deadline_miss_rate"]
        table.add_row(
            f"robots ({rb['count']})",
            f"stall {rb['stall_fraction']:.1%} (worst {rb['stall_fraction_max']:.1%}), "
            f"deadline misses {'-' if miss is None else f'{miss:.1%}'}, "
            f"control rate {rb['control_rate_ratio']:.1%} of target "
            f"({rb['effective_control_hz']:.1f} Hz), chunks {rb['chunk_rate_hz']:.2f}/s, "
            f"stale actions {rb['stale_actions']:,}, Jain {_fmt(rb['jain_control_rate'], 3)}",
        )
        trip = rb["round_trip_ms"]
        table.add_row(
            "robot round trip (ms)",
            f"p50 {_fmt(trip['p50'])}  p90 {_fmt(trip['p90'])}  p99 {_fmt(trip['p99'])}  "
            f"max {_fmt(trip['max'])}",
        )
    if "memory" in summary:
        mem = summary["memory"]
        table.add_row(
            "memory",
            f"limit {mem['limit_mb']:,.0f} MB: batches up to {mem['largest_batch_in_memory']}",
        )
    return table


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    out: Annotated[
        Path | None, typer.Option("--out", help="directory for summary.json and parquet files")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a scenario field: KEY=VALUE (dotted key, YAML value)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print no table")] = False,
) -> None:
    """Simulate one scenario and print its summary."""
    from sim.scenario import load_scenario
    from sim.simulate import run_summary, simulate, write_outputs

    loaded = load_scenario(scenario, set_ or [])
    started = time.perf_counter()
    show_progress = err_console.is_terminal and not quiet
    if show_progress:
        with Progress(
            TextColumn("[bold]simulating[/] {task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}% of simulated time"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task(loaded.scenario.name, total=1.0)
            records = simulate(loaded, progress=lambda f: bar.update(task, completed=f))
    else:
        records = simulate(loaded)
    wall_s = time.perf_counter() - started
    summary = run_summary(loaded, records)
    summary["wall_s"] = wall_s
    if out is not None:
        write_outputs(out, summary, records, loaded.raw)
    if not quiet:
        out_console.print(summary_table(summary))
        note = f"{records.arrival_s.size:,} requests simulated in {wall_s:.2f} s"
        if out is not None:
            extra = ", robots.parquet" if records.robots is not None else ""
            note += f"; wrote {out}/summary.json, requests.parquet, batches.parquet{extra}"
        out_console.print(note)


def main(argv: list[str] | None = None) -> int:
    """Entry point: input errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except InputError as exc:
        err_console.print(f"batchsim: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except typer.Abort:
        err_console.print("batchsim: aborted")
        return 130
    except Exception as exc:
        # click's usage errors (typer may vendor click, so match by shape, not by class)
        if not hasattr(exc, "format_message") or getattr(exc, "exit_code", None) != 2:
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            return 0
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        message = exc.format_message().replace("\n", " ")
        err_console.print(
            f"batchsim: error: {where}{message}", markup=False, highlight=False, soft_wrap=True
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
