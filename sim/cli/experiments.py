"""`batchsim sweep` and `batchsim recommend`: experiments of many runs, on Dask."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

import sim.api as api
from sim.cli.app import command
from sim.cli.options import GridOption, QuietOption, ScenarioArg, SetOption, SloOption, SpaceOption
from sim.cli.render import err_console, new_table, out_console, sweep_table


@command()
def sweep(
    scenario: ScenarioArg,
    out: Annotated[Path, typer.Option("--out", help="sweep folder (created, or resumed)")],
    grid: GridOption = None,
    replications: Annotated[
        int | None,
        typer.Option("--replications", help="seeds per configuration (common random numbers)"),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="local Dask worker processes (default: all cores)"),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="address of an existing Dask scheduler")
    ] = None,
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Run a grid of scenario variants x replications on Dask; resumable."""
    from sim.experiments.sweep import parse_grid

    started = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]sweep[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} points"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,  # a log gets lines instead, below
    )
    resumed = {"n": 0, "said": 0}

    def on_result(point: Any, result: Any, finished: int, total: int) -> None:
        if point is None:
            resumed["n"] = finished
            progress.update(task, total=total, completed=finished)
            return
        elapsed = time.perf_counter() - started
        fresh = finished - resumed["n"]
        rate = f"{fresh / elapsed * 60:.1f} points/min"
        progress.update(task, completed=finished, rate=rate)
        tenth = finished * 10 // max(total, 1)
        if not err_console.is_terminal and not quiet and tenth > resumed["said"]:
            resumed["said"] = tenth  # off a terminal: a line at every tenth of the sweep
            err_console.print(f"sweep: {finished:,}/{total:,} points, {rate}", highlight=False)

    with progress:
        task = progress.add_task(scenario.name, total=None, rate="")
        summary = api.sweep(
            scenario,
            parse_grid(grid or []),
            out,
            replications=replications,
            workers=workers,
            scheduler=scheduler,
            overrides=set_ or [],
            on_result=on_result,
        )
    if not quiet:
        out_console.print(sweep_table(summary, summary.attrs["keys"]))
        out_console.print(
            f"{summary.attrs['points']} points ({resumed['n']} already done) in "
            f"{time.perf_counter() - started:.1f} s; wrote {out}/results.parquet, summary.csv"
        )


@command()
def recommend(
    scenario: ScenarioArg,
    slo: SloOption = None,
    objective: Annotated[
        str,
        typer.Option(
            "--objective", help="max-throughput | min-replicas | max-robots | min-cost | min-energy"
        ),
    ] = "max-throughput",
    space: SpaceOption = None,
    search: Annotated[
        str | None, typer.Option("--search", help="the load key to search (default by objective)")
    ] = None,
    replications: Annotated[
        int, typer.Option("--replications", help="seeds each probe starts with")
    ] = 2,
    max_replications: Annotated[
        int | None,
        typer.Option(
            "--max-replications",
            help="the most seeds a probe may run while an interval straddles a bound, before "
            "it is called uncertain (default 10, or --replications if more)",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="local Dask worker processes (default: all cores)"),
    ] = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="folder for recommend.json")] = None,
) -> None:
    """Find the best configuration that meets an SLO, by capacity search (resumable with --out)."""
    from sim.experiments.answer import describe_probe, fmt_interval, verdict_text, where
    from sim.experiments.sweep import label

    seen: dict[str, Any] = {}

    told: set[str] = set()  # each reason is printed once, however many configurations share it

    def on_refused(config: dict[str, Any], why: str) -> None:
        # refused before any probe, with the numbers
        if why not in told:
            told.add(why)
            err_console.print(f"recommend: refused before any probe: {why}", markup=False)

    def on_probe(config: dict[str, Any], ev: Any, reused: bool) -> None:
        # one line per probe, on a terminal or in a log: what ran, at what load, the result
        rec = seen["search"]
        runs = f"{ev.replications} run{'s' if ev.replications > 1 else ''}"
        err_console.print(
            f"probe {where(config)} {rec.search_key}={ev.load:g}: {describe_probe(ev, rec.slo)}, "
            f"{runs}: {verdict_text(ev)}{' (saved)' if reused else ''}",
            markup=False,
            highlight=False,
        )

    with Progress(
        TextColumn("[bold]recommend[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} configurations"),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("", total=None)

        def on_start(search: Any) -> None:
            seen["search"] = search
            bar.update(task, total=len(search.configs))

        found = api.recommend(
            scenario,
            slo or [],
            objective=objective,
            space=space or [],
            replications=replications,
            max_replications=max_replications,
            workers=workers,
            search=search,
            overrides=set_ or [],
            out=out,
            on_start=on_start,
            on_refused=on_refused,
            on_probe=on_probe,
            on_done=lambda candidate: bar.advance(task),
        )
    rec = found.search
    table = new_table(
        title=f"frontier: {objective}, {' and '.join(str(t) for t in rec.slo)} "
        "(mean [95% interval])",
        header_style="bold",
    )
    for key in rec.space:
        table.add_column(key, overflow="fold")
    table.add_column(rec.search_key, justify="right")
    shown = ["throughput_rps", "latency_p99_ms"]
    shown += [t.metric for t in rec.slo if t.metric not in shown]  # every constrained metric
    # a fleet's stall and round trip, and prices and energy, beside the SLO terms, where the
    # scenario has them
    priced = (
        "robots_stall_fraction",
        "robots_round_trip_p99_ms",
        "cost_usd_per_hour",
        "cost_usd_per_million_requests",
        "energy_joules_per_request",
    )
    shown += [
        m
        for m in priced
        if m not in shown and any(c.best and m in c.best.metrics for c in found.ranked)
    ]
    names = {
        **{t.metric: str(t) for t in rec.slo},
        "cost_usd_per_hour": "$/h",
        "cost_usd_per_million_requests": "$/M requests",
        "energy_joules_per_request": "J/request",
        "robots_stall_fraction": "stall",
        "robots_round_trip_p99_ms": "round trip p99 (ms)",
    }
    for metric in shown:
        table.add_column(names.get(metric, metric), justify="right")
    for cand in found.ranked:
        m = cand.best.metrics if cand.best else {}
        cells = []
        for metric in shown:
            mean, lo, hi = m.get(metric, (None, None, None))
            cells.append("-" if mean is None else fmt_interval(mean, lo, hi))
        table.add_row(
            *[str(label(cand.config[k])) for k in rec.space],
            _load_cell(cand),
            *cells,
        )
    out_console.print(table)
    # the infeasible configurations, grouped by their reason: each reason once
    by_reason: dict[str, list[str]] = {}
    for cand in found.ranked:
        if cand.best is None:
            by_reason.setdefault(rec.infeasible_line(cand), []).append(where(cand.config))
    for reason, configs in by_reason.items():
        shown_reason = "refused before any probe (the reason above)" if reason in told else reason
        out_console.print(f"infeasible {', '.join(configs)}: {shown_reason}")
    out_console.print(found.explanation)
    for line in found.warnings:
        err_console.print(f"batchsim: warning: {line}", markup=False, highlight=False)
    if not any(cand.best is not None for cand in found.ranked):
        raise typer.Exit(3)  # no configuration meets the SLO: an answer, but not a yes


def _load_cell(cand: Any) -> str:
    """A frontier row's load: the extreme shown to meet the SLO, or why there is none."""
    if cand.best is not None:
        return f"{cand.best.load:g}"
    return "uncertain" if any(e.uncertain for e in cand.evaluations) else "infeasible"
