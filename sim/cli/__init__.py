"""The `batchsim` command line."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sim.config.limits import DEFAULT as DEFAULT_LIMITS
from sim.errors import InputError, Interrupted
from sim.io.outputs import RUN_FILES, check_out_dir, check_out_file, write_text

app = typer.Typer(
    name="batchsim",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Simulate batching schedulers for VLA robot-policy inference.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# options several commands share
ScenarioArg = Annotated[Path, typer.Argument(help="scenario YAML file")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a scenario field: KEY=VALUE (dotted key, YAML value)"),
]


QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="no table, no progress bar")]


def repeated(flag: str, help: str) -> Any:
    """An option that may be given several times (a list of strings)."""
    return Annotated[list[str] | None, typer.Option(flag, help=help)]


GridOption = repeated("--grid", "KEY=V1,V2,... (dotted key, YAML values); repeat for more keys")
SloOption = repeated("--slo", "METRIC<=VALUE, e.g. p99_ms<=100; repeat to AND")
SpaceOption = repeated(
    "--space", "KEY=V1,V2,... or KEY=LO:HI[:STEP]: the configurations to compare"
)


def _console(stderr: bool = False) -> Console:
    """rich's console on a terminal; into a pipe or a file, one that never wraps at 80
    columns (lines as long as they are), without colour."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=10_000, no_color=True, highlight=False)


out_console = _console()
err_console = _console(stderr=True)


def _table(**options: Any) -> Table:
    """A table: rich's box drawing on a terminal, plain ASCII columns elsewhere (a log, a
    pipe into grep), as wide as its content."""
    if not out_console.is_terminal:
        options["box"] = box.ASCII2 if options.get("box") is not box.SIMPLE else box.SIMPLE
        options["header_style"] = None
        options["title_style"] = None
        options["title_justify"] = "left"
    return Table(**options)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batchsim")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        out_console.print(f"batchsim {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Simulate batching schedulers for VLA robot-policy inference."""


def _fmt(value: Any, digits: int = 2) -> str:
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
            f"{stat} {_fmt(v(f'{prefix}_{stat}_ms'))}"
            for stat in ("mean", "p50", "p90", "p99", "max")
        )

    table = _table(
        title=f"batchsim {command}: {summary['scenario']}", show_header=True, header_style="bold"
    )
    table.add_column("metric")
    table.add_column("value")
    table.add_row(
        "requests",
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
    table.add_row("throughput (req/s)", _fmt(v("throughput_rps")))
    # goodput counts requests answered by their deadline; without deadlines it is throughput
    has_deadlines = summary["slo"]["attainment"] is not None
    table.add_row(
        "goodput (req/s)" + (", by their deadline" if has_deadlines else ", no deadlines: all"),
        _fmt(v("goodput_rps")),
    )
    table.add_row("latency (ms)", dist("latency"))
    table.add_row("queue delay (ms)", dist("queue_delay"))
    if v("batch_admitted_mean") is not None:  # step level: a batch is an iteration
        table.add_row(
            "iterations",
            f"{_fmt(v('batch_size_mean'))} in flight, {_fmt(v('batch_admitted_mean'))} "
            f"admitted, mean over {v('batches'):,} iterations",
        )
    else:
        table.add_row(
            "batch size",
            f"mean {_fmt(v('batch_size_mean'))}  padded {_fmt(v('batch_size_padded_mean'))}  "
            f"over {v('batches'):,} batches",
        )
    if "steps" in summary:
        steps = summary["steps"]
        floor = "" if steps["floor"] is None else f", floor {steps['floor']}"
        share = v("steps_degraded_share")
        table.add_row(
            "denoising steps",
            f"mean {_fmt(v('steps_mean'))} of {steps['full']}{floor}; "
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
            f"{'-' if att is None else f'{att:.2%}'}, p99 {_fmt(block['latency_ms']['p99'])} ms, "
            f"goodput {_fmt(block['goodput_rps'])} req/s",
        )
    if "fairness" in summary:
        table.add_row(
            "fairness (Jain, attainment)", _fmt(summary["fairness"]["jain_attainment"], 3)
        )
    if "robots" in summary:
        miss = v("robots_deadline_miss_rate")
        table.add_row(
            f"robots ({summary['robots']['count']})",
            f"stall {v('robots_stall_fraction'):.1%} (worst {v('robots_stall_fraction_max'):.1%}), "
            f"control rate {v('robots_control_rate_ratio'):.1%} of target "
            f"({v('robots_effective_control_hz'):.1f} Hz), chunks {v('robots_chunk_rate_hz'):.2f}/s, "
            f"Jain {_fmt(v('robots_jain_control_rate'), 3)}",
        )
        episodes = v("robots_stall_episodes")
        table.add_row(
            "robot stalls",
            f"{episodes:,} freezes, mean {_fmt(v('robots_stall_episode_mean_ms'), 1)} ms, "
            f"longest {_fmt(v('robots_stall_longest_ms'), 1)} ms"
            if episodes
            else "none",
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
                f"{stat} {_fmt(v(f'robots_round_trip_{stat}_ms'))}"
                for stat in ("p50", "p90", "p99", "max")
            ),
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
) -> None:
    """Simulate one scenario and print its summary."""
    from sim.config import load
    from sim.engine import pipeline

    if out is not None:
        check_out_dir(out, owned=RUN_FILES)
    if trace is not None:
        check_out_file(trace, "--trace")
    loaded = load(scenario, set_ or [])
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
            result = pipeline.run(
                loaded,
                progress=lambda f: bar.update(task, completed=f),
                log_stalls=trace is not None,
            )
    else:
        result = pipeline.run(loaded, log_stalls=trace is not None)
    wall_s = time.perf_counter() - started
    summary, records = result.summary, result.records
    if out is not None:
        # the wall time goes to run.json: summary.json is the same bytes on every rerun
        run_log = {"wall_s": wall_s, "argv": sys.argv[1:], "batchsim": _version()}
        result.write(out, run_log)
    if trace is not None:
        from sim.io.trace import write_trace

        write_trace(records, trace, loaded.scenario.name)
    if not quiet:
        out_console.print(summary_table(summary))
        note = f"{records.arrival_s.size:,} requests simulated in {wall_s:.2f} s"
        if loaded.scenario.warmup_s > 0:  # the table counts the window only; say both
            note += (
                f" ({summary['requests']['arrived']:,} after the {loaded.scenario.warmup_s:g} s "
                "warm-up, in the table)"
            )
        if out is not None:
            extra = ", robots.parquet" if records.robots is not None else ""
            note += (
                f"; wrote {out}/summary.json, requests.parquet, batches.parquet{extra}, run.json"
            )
        if trace is not None:
            note += f"; wrote {trace} (open it in ui.perfetto.dev)"
        out_console.print(note)


@app.command()
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
    from sim.experiments.sweep import Sweep, connect, parse_grid, run_sweep, summarize_sweep

    if workers is not None and scheduler is not None:
        raise InputError("give --workers or --scheduler, not both", source="--scheduler")
    if workers is not None and workers < 1:
        raise InputError("must be >= 1", source="--workers")
    plan = Sweep(scenario, parse_grid(grid or []), replications, out, set_ or [])
    if not plan.grid:
        raise InputError(
            "nothing to sweep: give --grid KEY=V1,V2,... or a sweep: section", source=str(scenario)
        )
    plan.prepare_out()  # a damaged or different sweep in --out is refused before any output
    client = connect(scheduler) if scheduler is not None else None  # reachable, or one line
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

    def on_result(point, result, finished, total):
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
        task = progress.add_task(plan.scenario_path.name, total=len(plan.points()), rate="")
        results = run_sweep(plan, workers, client, on_result)
    summary, _ = summarize_sweep(results, list(plan.grid))
    if not quiet:
        out_console.print(sweep_table(summary, list(plan.grid)))
        out_console.print(
            f"{len(results)} points ({resumed['n']} already done) in {time.perf_counter() - started:.1f} s; "
            f"wrote {out}/results.parquet, summary.csv"
        )


def sweep_table(summary: Any, keys: list[str]) -> Table:
    from sim.metrics.registry import METRICS

    table = _table(title="sweep: mean ± 95% CI over replications", header_style="bold")
    for key in keys:
        table.add_column(key, overflow="fold")
    columns = ("throughput_rps", "latency_p99_ms", "slo_attainment", "batch_size_mean")
    for name in columns:
        metric = METRICS[name]
        table.add_column(f"{metric.label} ({metric.unit})", justify="right")

    def cell(row, metric, digits=1):
        mean = row.get(metric)
        if mean is None or mean != mean:
            return "-"
        half = row.get(f"{metric}_ci95")
        return f"{mean:.{digits}f}" + (
            "" if half is None or half != half else f" ± {half:.{digits}f}"
        )

    for row in summary.to_dict("records"):
        table.add_row(
            *[str(row[f"grid.{k}"]) for k in keys],
            *(
                cell(row, name, {"slo_attainment": 3, "batch_size_mean": 2}.get(name, 1))
                for name in columns
            ),
        )
    return table


@app.command()
def recommend(
    scenario: ScenarioArg,
    slo: SloOption = None,
    objective: Annotated[
        str, typer.Option("--objective", help="max-throughput | min-replicas | max-robots")
    ] = "max-throughput",
    space: SpaceOption = None,
    search: Annotated[
        str | None, typer.Option("--search", help="the load key to search (default by objective)")
    ] = None,
    replications: Annotated[int, typer.Option("--replications", help="seeds per probe")] = 2,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="local Dask worker processes (default: all cores)"),
    ] = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="folder for recommend.json")] = None,
) -> None:
    """Find the best configuration that meets an SLO, by capacity search (resumable with --out)."""
    from sim.experiments.search import ProbeLog, Recommender, describe_probe
    from sim.experiments.sweep import label

    if workers is not None and workers < 1:
        raise InputError("must be >= 1", source="--workers")
    workers = workers or os.cpu_count() or 1  # as sweep: every core
    if out is not None:
        check_out_dir(out)
    rec = Recommender(scenario, slo or [], objective, space or [], replications, search, set_ or [])
    log = ProbeLog(out / "probes.jsonl", rec.identity()) if out is not None else None
    for config, why in ((c, rec.floor_of(c)) for c in rec.configs):
        if why:  # refused before any probe, with the numbers
            err_console.print(f"recommend: {config or '(scenario)'}: {why}", markup=False)
    terminal = err_console.is_terminal

    def on_probe(config, ev, reused):
        # one line per probe, on a terminal or in a log: what ran, at what load, the result
        verdict = "pass" if ev.feasible else "FAIL " + ", ".join(ev.failed)
        where = " ".join(f"{k}={label(v)}" for k, v in config.items()) or "(scenario)"
        err_console.print(
            f"probe {where} {rec.search_key}={ev.load:g}: {describe_probe(ev, rec.slo)}: "
            f"{verdict}{' (saved)' if reused else ''}",
            markup=False,
            highlight=False,
        )

    with Progress(
        TextColumn("[bold]recommend[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} configurations"),
        TimeElapsedColumn(),
        console=err_console,
        disable=not terminal,
    ) as bar:
        task = bar.add_task("", total=len(rec.configs))
        ranked = rec.run(workers, on_done=lambda c: bar.advance(task), on_probe=on_probe, log=log)
    table = _table(
        title=f"frontier: {objective}, {' and '.join(str(t) for t in rec.slo)}", header_style="bold"
    )
    for key in rec.space:
        table.add_column(key, overflow="fold")
    table.add_column(rec.search_key, justify="right")
    shown = ["throughput_rps", "latency_p99_ms"]
    shown += [t.metric for t in rec.slo if t.metric not in shown]  # every constrained metric
    names = {t.metric: str(t) for t in rec.slo}
    for metric in shown:
        table.add_column(names.get(metric, metric), justify="right")
    for cand in ranked:
        m = cand.best.metrics if cand.best else {}
        cells = []
        for metric in shown:
            mean, half = m.get(metric, (None, None))
            ci = "" if half is None or half != half or half == 0 else f" ± {half:.2g}"
            cells.append("-" if mean is None else f"{mean:.4g}{ci}")
        table.add_row(
            *[str(label(cand.config[k])) for k in rec.space],
            "infeasible" if cand.best is None else f"{cand.best.load:g}",
            *cells,
        )
    out_console.print(table)
    for cand in ranked:
        if cand.best is None:
            where = " ".join(f"{k}={label(v)}" for k, v in cand.config.items()) or "(scenario)"
            out_console.print(f"infeasible {where}: {rec.infeasible_line(cand)}")
    out_console.print(rec.explain(ranked))
    rec.warnings = rec.phase_lock_warnings(ranked)
    for line in rec.warnings:
        err_console.print(f"batchsim: warning: {line}", markup=False, highlight=False)
    if out is not None:
        import json

        write_text(
            out / "recommend.json", json.dumps(rec.report(ranked), indent=2, default=str) + "\n"
        )


@app.command()
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
    from sim.io.plots import plot_dir

    for path in plot_dir(folder, hue, load, x, y):
        out_console.print(f"wrote {path}")


@app.command()
def validate(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML with a model: section")],
    more_records: Annotated[
        list[Path] | None,
        typer.Argument(help="further recorded runs, after --records DIR", show_default=False),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="folder for validation.json, report.md, figure")
    ] = Path("runs/validate"),
    records: Annotated[
        list[Path] | None,
        typer.Option(
            "--records",
            help="recorded runs (observe/serve/run folders, or CSV/Parquet logs: "
            "docs/records.md) to compare with, instead of live runs",
        ),
    ] = None,
    profile_from_records: Annotated[
        bool,
        typer.Option(
            "--profile-from-records", help="with --records: simulate with the recorded batch times"
        ),
    ] = False,
    profile_: Annotated[
        Path | None,
        typer.Option("--profile", help="use this profile (its provenance must match the model)"),
    ] = None,
    set_: SetOption = None,
    repeats: Annotated[
        int | None,
        typer.Option("--repeats", help="live runs of the same traffic (median compared; 3)"),
    ] = None,
    sim_draws: Annotated[
        int,
        typer.Option(
            "--sim-draws", help="simulations of that traffic, each its own service draw (median)"
        ),
    ] = 15,
) -> None:
    """Check the simulator against live runs of the real model, or against recorded runs."""
    if more_records and not records:
        raise InputError(
            f"unexpected argument {str(more_records[0])[:80]!r}; recorded runs follow --records",
            source="validate",
        )
    if records:
        for flag, given in (("--profile", profile_), ("--repeats", repeats)):
            if given is not None:
                raise InputError(
                    "is for live runs; --records compares runs already made", source=flag
                )
        check_out_dir(out)
        from sim.validation.live import validate_records

        result = validate_records(
            scenario,
            [*records, *(more_records or [])],
            out,
            set_ or [],
            profile_from_records,
            sim_draws,
            stage=lambda m: err_console.print(f"[bold]validate[/] {m}", highlight=False),
        )
        _print_validation(result, scenario, out, "recorded", "sim_recorded_batches")
        return
    if profile_from_records:
        raise InputError("needs --records", source="--profile-from-records")
    repeats = 3 if repeats is None else repeats
    check_out_dir(out)  # before the live runs, which take minutes
    try:
        from sim.validation.live import validate as run_validation
    except ImportError as exc:
        raise InputError(
            f"validate needs torch and transformers ({exc})", source="validate"
        ) from None
    result = run_validation(
        scenario,
        out,
        set_ or [],
        profile_,
        stage=lambda m: err_console.print(f"[bold]validate[/] {m}"),
        repeats=repeats,
        sim_draws=sim_draws,
    )
    _print_validation(result, scenario, out, "live", "sim_live_service")


def _print_validation(
    result: dict[str, Any], scenario: Path, out: Path, against: str, second: str
) -> None:
    """validate's table and verdicts: `against` the live or recorded runs; `second`, the
    simulation with the observed batch times (the queueing model alone)."""
    table = _table(
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
            _fmt(row["live"]),
            "-" if row["live_spread"] is None else f"{row['live_spread']:.1%}",
            _fmt(row["sim"]),
            "-" if row["sim_error"] is None else f"{row['sim_error']:+.1%}",
            _fmt(row.get(second)),
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


# what one profiling command may ask a model for (inputs are allocated from these)
MAX_CAMERAS = 16
MAX_INSTRUCTION_TOKENS = 8192
MAX_IDLE_MS = 60_000.0


def _int_list(text: str, flag: str, most: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(
            f"'{text}' is not a comma-separated list of integers", source=flag
        ) from None
    if not values or any(not 1 <= v <= most for v in values):
        raise InputError(
            f"'{text}': every value must be an integer from 1 to {most:,}", source=flag
        )
    return values


def _ms_list(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(
            f"'{text}' is not a comma-separated list of milliseconds", source="--idle-ms"
        ) from None
    if not values:
        raise InputError(f"'{text}' names no level", source="--idle-ms")
    if any(not 0 <= v <= MAX_IDLE_MS for v in values):  # nan and inf fail this too
        raise InputError(
            f"'{text}': every level must be from 0 to {MAX_IDLE_MS:,.0f} ms", source="--idle-ms"
        )
    return values  # ProfileOptions.validate checks each level


@app.command()
def profile(
    model: Annotated[
        str,
        typer.Option("--model", help="pi0 | pi0-torch | openvla | act, or package.module:factory"),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="profile CSV to write (NAME.meta.json beside it)")
    ],
    size: Annotated[str, typer.Option("--size", help="tiny | small | full")] = "tiny",
    device: Annotated[str, typer.Option("--device", help="cpu | cuda")] = "cpu",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="e.g. 1,2,4,8")] = "1,2,4,8",
    cameras: Annotated[
        str, typer.Option("--cameras", help="camera counts to measure, e.g. 1,3")
    ] = "1",
    instruction_tokens: Annotated[
        int | None,
        typer.Option("--instruction-tokens", help="instruction length (default: the model's)"),
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float32 | bfloat16 | float16")] = "float32",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model")] = False,
    cuda_graphs: Annotated[
        bool, typer.Option("--cuda-graphs", help="capture a CUDA graph per batch size")
    ] = False,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (recorded)")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed calls per batch size")] = 3,
    max_reps: Annotated[
        int, typer.Option("--max-reps", help="timed calls at most per batch size")
    ] = 30,
    budget_s: Annotated[
        float, typer.Option("--budget-s", help="timed seconds at most per batch size")
    ] = 10.0,
    append: Annotated[
        bool, typer.Option("--append", help="add to an existing profile of the same stamp")
    ] = False,
    plot_: Annotated[bool, typer.Option("--plot", help="also draw NAME.png")] = False,
    interleave: Annotated[
        bool,
        typer.Option(
            "--interleave",
            help="time shuffled rounds over the batch sizes on fresh inputs, as a server meets them",
        ),
    ] = False,
    idle_ms: Annotated[
        str | None,
        typer.Option(
            "--idle-ms",
            help="also time calls after these idle waits, e.g. 0,10,200 (implies --interleave)",
        ),
    ] = None,
    stages: Annotated[
        bool,
        typer.Option(
            "--stages",
            help="time each stage of the model (pi0: vision, prefix, step; OpenVLA: prefill, "
            "decode) and write a staged profile (implies --interleave)",
        ),
    ] = False,
) -> None:
    """Measure a model's latency and memory per batch size into a profile CSV."""
    sizes = _int_list(batch_sizes, "--batch-sizes", most=DEFAULT_LIMITS.max_batch)
    cams = _int_list(cameras, "--cameras", most=MAX_CAMERAS)
    if instruction_tokens is not None and not 1 <= instruction_tokens <= MAX_INSTRUCTION_TOKENS:
        raise InputError(
            f"must be between 1 and {MAX_INSTRUCTION_TOKENS:,} (got {instruction_tokens:,})",
            source="--instruction-tokens",
        )
    check_out_file(out)
    try:
        from sim import models
        from sim.profiles.profiler import (
            ProfileOptions,
            check_append_target,
            profile_model,
            write_profile,
        )
    except ImportError as exc:
        raise InputError(
            f"profiling needs torch and transformers ({exc}); run make demo or make test",
            source="--model",
        ) from None
    options = ProfileOptions(
        device,
        dtype,
        compile_,
        cuda_graphs,
        threads,
        warmup,
        max_reps=max_reps,
        budget_s=budget_s,
        interleave=interleave or bool(idle_ms) or stages,
        idle_ms=_ms_list(idle_ms),
        stages=stages,
    )
    options.validate()
    if append:
        check_append_target(out)
    bundle = models.build(model, size, device)
    with Progress(
        TextColumn("[bold]profile[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batch sizes"),
        TimeElapsedColumn(),
        console=err_console,
    ) as bar:
        task = bar.add_task(
            f"{bundle.name}-{bundle.size} on {device}", total=len(sizes) * len(cams)
        )

        def step(b, c, samples):
            median = sorted(samples)[len(samples) // 2]
            bar.console.print(
                f"  batch {b:>3}, cameras {c}: median {median:9.2f} ms over {len(samples)} calls"
            )
            bar.advance(task)

        frame, meta = profile_model(bundle, sizes, cams, instruction_tokens, options, step)
    if frame.empty:
        raise InputError("nothing was measured", source="--batch-sizes")
    path = write_profile(frame, meta, out, append)
    out_console.print(
        f"wrote {path} and {path.with_suffix('').with_suffix('.meta.json').name}"
        + (" (interrupted: partial)" if meta.get("interrupted") else "")
    )
    if plot_:
        _plot_profile(path)


def _plot_profile(path: Path) -> None:
    from sim.io.files import read_csv
    from sim.io.plots import profile_figure, save

    frame = read_csv(path, "profile")
    png = save(profile_figure(frame, path.stem), path.with_suffix(".png"))
    out_console.print(f"wrote {png}")


@app.command("plot-profile")
def plot_profile(path: Annotated[Path, typer.Argument(help="a profile CSV")]) -> None:
    """Draw a profile: latency and per-request latency vs batch size, and memory."""
    from sim.io.files import read_csv
    from sim.profiles import store

    columns = read_csv(path, "profile").columns  # a readable file, before its .png is named
    check_out_file(path.with_suffix(".png"), "plot-profile")
    table = store.read_table(path)
    if "cameras" in columns:
        store.by_shape(table, "cameras")  # checks every camera count's data
    else:
        store.selected(table)
    _plot_profile(path)


@app.command()
def estimate(
    source: Annotated[
        Path, typer.Option("--from", help="a measured profile CSV (with its NAME.meta.json)")
    ],
    gpu: Annotated[
        str, typer.Option("--gpu", help="target GPU: a name from `batchsim gpus`, or a spec file")
    ],
    out: Annotated[Path, typer.Option("--out", help="estimated profile CSV to write")],
    shape: repeated(
        "--shape", "COLUMN=VALUE: re-target the input shape too (e.g. cameras=3); repeatable"
    ) = None,
    select: repeated(
        "--select", "COLUMN=VALUE: calibrate on these rows of the measured profile only"
    ) = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="the profile's architecture, NAME[:SIZE] (default: its sidecar's)"
        ),
    ] = None,
    source_gpu: Annotated[
        str | None,
        typer.Option("--source-gpu", help="the GPU it was measured on (default: its sidecar's)"),
    ] = None,
) -> None:
    """Estimate a profile on a GPU you don't own: a calibrated roofline transfer of a measured one."""
    from sim.profiles.estimate.gpus import load_gpu
    from sim.profiles.estimate.roofline import estimate as run_estimate
    from sim.profiles.estimate.roofline import parse_shape, write

    target = load_gpu(gpu)
    shapes = parse_shape(shape, "--shape")
    selected = parse_shape(select, "--select")
    check_out_file(out)
    if out.resolve() == source.resolve():
        raise InputError(
            "would overwrite the measured profile; choose another path", source="--out"
        )
    try:
        import torch  # noqa: F401  (the work is counted on torch's meta device)
    except ImportError:
        raise InputError(
            "estimate counts the model's work with torch; run make test (or pip install -e .[models])",
            source="--from",
        ) from None
    with err_console.status("counting the model's work on the meta device and fitting"):
        est = run_estimate(source, target, shapes, selected, model, source_gpu)
    path = write(est, out)
    info = est.meta["estimate"]
    f = info["factors"]
    table = _table(
        title=f"batchsim estimate: {source} ({info['source_gpu']['name']}) -> {target.name}",
        header_style="bold",
    )
    for column in ("batch", "shape", "measured ms", "estimate ms", "compute", "memory", "fixed"):
        table.add_column(column, justify="right" if column != "shape" else "left")
    for row in est.rows:
        shape_text = ", ".join(f"{k}={row[k]}" for k in row if k not in _ESTIMATE_ROW_KEYS)
        t = row["target"]
        table.add_row(
            str(row["batch_size"]),
            shape_text or "-",
            _fmt(row["measured_ms"], 1),
            _fmt(row["estimate_ms"], 1) + (" (left out)" if row.get("left_out") else ""),
            _fmt(t["compute_ms"], 1),
            _fmt(t["memory_ms"], 1),
            _fmt(max(t["fixed_ms"], t["host_ms"]), 1),
        )
    out_console.print(table)
    out_console.print(
        "compute / memory / fixed: the target's modelled parts (ms); the estimate is the "
        "measured time x modelled(target) / modelled(source)"
    )
    host = f", host {f['host_kernel_us']:.2f} us/kernel" if f["host_kernel_us"] else ""
    out_console.print(
        f"fitted on {info['source_gpu']['name']}: compute {f['compute_efficiency']:.0%} of peak, "
        f"memory {f['memory_efficiency']:.0%} of bandwidth, {f['kernel_us']:.2f} us per kernel"
        f"{host}; RMS log error {info['fit']['rms_log_error']:.3f}"
        + (
            f" (at a bound: {', '.join(info['fit']['at_bounds'])})"
            if info["fit"]["at_bounds"]
            else ""
        )
    )
    if info["launch_bound"]:
        out_console.print(
            "launch-bound (eager) profile: the host's part was carried over unchanged; it "
            "depends on the host CPU, not the GPU"
        )
    for left in info["left_out"]:
        out_console.print(
            f"left out: batch {left['batch_size']} needs {left['peak_mem_mb']:,.0f} MiB, more "
            f"than the {target.name}'s {info['memory_limit_mb']:,.0f} MiB"
        )
    out_console.print(f"wrote {path} and {path.with_suffix('').name}.meta.json (an estimate)")


_ESTIMATE_ROW_KEYS = frozenset(
    {
        "batch_size",
        "measured_ms",
        "estimate_ms",
        "ratio",
        "source",
        "target",
        "work",
        "peak_mem_mb",
        "left_out",
    }
)


@app.command()
def serve(
    scenario: ScenarioArg,
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port (0: any free one)")] = 8000,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder for the records, written on SIGINT/SIGTERM")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Serve the scenario's model over openpi's websocket protocol, batching across robots."""
    from sim.config import load

    if not 0 <= port <= 65535:
        raise InputError(f"must be from 0 to 65,535 (got {port})", source="--port")
    if out is not None:
        check_out_dir(out, owned=RUN_FILES)
    loaded = load(scenario, set_ or [])
    try:
        from sim.real.serve import serve_scenario
    except ImportError as exc:
        raise InputError(
            f"serve needs websockets, msgpack and openpi-client ({exc}); run make test",
            source="serve",
        ) from None

    def ready(bound: int) -> None:
        # one line a supervisor (or a test) can wait for
        print(f"batchsim serve: listening on ws://{host}:{bound}", flush=True)

    summary = serve_scenario(loaded, host, port, out, ready)
    served = summary["serve"]
    out_console.print(
        f"served {summary['requests']['completed']:,} requests from {served['connections']} "
        f"connection(s) in {summary['batch_size']['batches']:,} batches (mean size "
        f"{_fmt(summary['batch_size']['mean'])}); "
        f"{served['bad_observations']} bad observation(s), "
        f"{served['disconnected_mid_request']} disconnected mid-request"
        + (f"; wrote {out}" if out is not None else "")
    )


@app.command()
def observe(
    scenario: ScenarioArg,
    target: Annotated[
        str, typer.Option("--target", help="the policy server, ws://HOST:PORT")
    ] = "ws://127.0.0.1:8000",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="folder for summary.json, requests/batches/robots.parquet"),
    ] = None,
    set_: SetOption = None,
    connections: Annotated[
        int | None,
        typer.Option("--connections", help="open loop: connections sending (default 32)"),
    ] = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="a request unanswered this long is dropped")
    ] = 30.0,
) -> None:
    """Drive the scenario's traffic (robots or arrivals) against an openpi policy server."""
    from sim.real.observe import MAX_CONNECTIONS, check_target, load_for_observe

    check_target(target)
    if connections is not None and not 1 <= connections <= MAX_CONNECTIONS:
        raise InputError(f"must be from 1 to {MAX_CONNECTIONS:,}", source="--connections")
    if not 0.1 <= timeout_s <= 3600:
        raise InputError("must be from 0.1 to 3,600 seconds", source="--timeout-s")
    if out is not None:
        check_out_dir(out, owned=RUN_FILES)
    loaded = load_for_observe(scenario, set_ or [])
    try:
        from sim.real.observe import observe as drive
    except ImportError as exc:  # pragma: no cover - the serve extra is missing
        raise InputError(
            f"observe needs websockets, msgpack and openpi-client ({exc}); run make test",
            source="observe",
        ) from None
    from sim.engine.pipeline import write_outputs

    records, summary = drive(
        loaded,
        target,
        connections,
        timeout_s,
        stage=lambda m: err_console.print(f"[bold]observe[/] {m}", highlight=False),
    )
    if out is not None:
        write_outputs(out, summary, records, loaded.raw)
    seen = summary["observe"]
    out_console.print(summary_table(summary, "observe"))
    out_console.print(
        f"observed {summary['requests']['completed']:,} answered requests over "
        f"{seen['connections']} connection(s); batches from {seen['batches_from']}; "
        f"{seen['problem_count']} problem(s)" + (f"; wrote {out}" if out is not None else "")
    )
    for line in seen["problems"][:5]:
        err_console.print(f"observe: {line}", markup=False, highlight=False)


@app.command()
def gpus() -> None:
    """The GPU table `batchsim estimate` uses: dense bf16 TFLOPS, bandwidth, memory, sources."""
    from sim.profiles.estimate.gpus import GPUS

    table = _table(title="GPUs (dense bf16; a spec file adds others)", header_style="bold")
    for column in ("name", "bf16 TFLOPS", "GB/s", "memory GB", "L2 MB", "source"):
        table.add_column(column)
    for spec in GPUS.values():
        table.add_row(
            spec.name,
            f"{spec.bf16_dense_tflops:g}",
            f"{spec.memory_bandwidth_gbs:g}",
            f"{spec.memory_gb:g}",
            f"{spec.l2_cache_mb:g}",
            spec.source + (f" ({spec.note})" if spec.note else ""),
        )
    out_console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point: input errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except InputError as exc:
        err_console.print(
            f"batchsim: error: {exc}", markup=False, highlight=False, soft_wrap=True, emoji=False
        )
        return 2
    except Interrupted as exc:
        err_console.print(
            f"batchsim: interrupted: {exc}", markup=False, highlight=False, soft_wrap=True
        )
        return 130
    except (typer.Abort, KeyboardInterrupt):
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
            f"batchsim: error: {where}{message}",
            markup=False,
            highlight=False,
            soft_wrap=True,
            emoji=False,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
