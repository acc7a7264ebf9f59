"""`batchsim serve` and `batchsim observe`: the scheduler as a real policy server, and a
scenario's traffic driven against any openpi server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import sim.api as api
from sim.cli.app import command
from sim.cli.options import ScenarioArg, SetOption
from sim.cli.render import err_console, fmt, out_console, summary_table


@command()
def serve(
    scenario: ScenarioArg,
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port (0: any free one)")] = 8000,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder for the records, written on SIGINT/SIGTERM")
    ] = None,
    set_: SetOption = None,
    grace_s: Annotated[
        float,
        typer.Option(
            "--grace-s", help="on SIGINT/SIGTERM: seconds to finish queued requests (then 1001)"
        ),
    ] = 5.0,
    max_frame_mib: Annotated[
        float | None,
        typer.Option(
            "--max-frame-mib",
            help="largest observation frame (default: twice the spec's arrays + 1 MiB)",
        ),
    ] = None,
) -> None:
    """Serve the scenario's model over openpi's websocket protocol, batching across robots."""

    def ready(bound: int) -> None:
        # one line a supervisor (or a test) can wait for
        print(f"batchsim serve: listening on ws://{host}:{bound}", flush=True)

    summary = api.serve(
        scenario,
        set_,
        host=host,
        port=port,
        out=out,
        ready=ready,
        grace_s=grace_s,
        max_frame_mib=max_frame_mib,
    )
    served = summary["serve"]
    out_console.print(
        f"served {summary['requests']['completed']:,} requests from {served['connections']} "
        f"connection(s) in {summary['batch_size']['batches']:,} batches after the warm-up "
        "(mean size "
        f"{fmt(summary['batch_size']['mean'])}); "
        f"{served['bad_observations']} bad observation(s), "
        f"{served['disconnected_mid_request']} disconnected mid-request, "
        f"{served['shut_out_on_stop']} failed on stopping, "
        f"{served['failure_count']} batch failure(s)"
        + (f"; wrote {out}" if out is not None else "")
    )


@command()
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
    result = api.observe(
        scenario,
        target,
        set_,
        out=out,
        connections=connections,
        timeout_s=timeout_s,
        stage=lambda m: err_console.print(f"[bold]observe[/] {m}", highlight=False),
    )
    summary = result.summary
    seen = summary["observe"]
    out_console.print(summary_table(summary, "observe"))
    out_console.print(
        f"observed {summary['requests']['completed']:,} answered requests after the warm-up over "
        f"{seen['connections']} connection(s); batches from {seen['batches_from']}; "
        f"{seen['problem_count']} problem(s)" + (f"; wrote {out}" if out is not None else "")
    )
    for line in seen["problems"][:5]:
        err_console.print(f"observe: {line}", markup=False, highlight=False)
