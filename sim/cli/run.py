"""`batchsim run` and `batchsim plot`: one simulated run, and the figures of a run or sweep."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import sim.api as api
from sim.cli.app import command, version
from sim.cli.options import QuietOption, ScenarioArg, SetOption
from sim.cli.render import err_console, out_console, summary_table


@command()
def run(
    scenario: ScenarioArg,
    out: Annotated[
        Path | None, typer.Option("--out", help="directory for summary.json and parquet files")
    ] = None,
    set_: SetOption = None,
    quiet: QuietOption = False,
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace",
            help="also write the batch timeline (and robot stalls) as a Perfetto/Chrome trace JSON",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="assert every named invariant (docs/semantics.md) on the run's records; "
            "exit 1 at the first that breaks",
        ),
    ] = False,
) -> None:
    """Simulate one scenario and print its summary."""
    run_log = {"argv": sys.argv[1:], "batchsim": version()}
    options = {"out": out, "trace": trace, "run_log": run_log, "check": check}
    if err_console.is_terminal and not quiet:
        with Progress(
            TextColumn("[bold]simulating[/] {task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}% of simulated time"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task(scenario.name, total=1.0)
            result = api.run(
                scenario, set_, progress=lambda f: bar.update(task, completed=f), **options
            )
    else:
        result = api.run(scenario, set_, **options)
    if quiet:
        return
    summary, records, warmup_s = result.summary, result.records, result.scenario.scenario.warmup_s
    out_console.print(summary_table(summary))
    note = f"{records.arrival_s.size:,} requests simulated in {result.wall_s:.2f} s"
    if warmup_s > 0:  # the table counts the window only; say both
        note += (
            f" ({summary['requests']['arrived']:,} after the {warmup_s:g} s warm-up, in the table)"
        )
    if out is not None:
        extra = ", robots.parquet" if records.robots is not None else ""
        note += f"; wrote {out}/summary.json, requests.parquet, batches.parquet{extra}, run.json"
    if trace is not None:
        note += f"; wrote {trace} (open it in ui.perfetto.dev)"
    out_console.print(note)
    if check:
        out_console.print(f"invariants hold: {', '.join(result.checked)}")


@command()
def plot(
    folder: Annotated[Path, typer.Argument(help="a run folder (run --out) or a sweep folder")],
    hue: Annotated[str | None, typer.Option("--hue", help="swept key: one line per value")] = None,
    load: Annotated[
        str | None, typer.Option("--load", help="swept key on the x axis of attainment")
    ] = None,
    x: Annotated[
        str | None, typer.Option("--x", help="sweep: a swept key (or metric) on the x axis")
    ] = None,
    y: Annotated[
        str | None,
        typer.Option("--y", help="sweep: a metric on the y axis, e.g. robots_stall_fraction"),
    ] = None,
) -> None:
    """Draw the figures of a run or a sweep into FOLDER/plots/ (one file per figure and parameters)."""
    for path in api.plot(folder, hue, load, x, y):
        out_console.print(f"wrote {path}")
