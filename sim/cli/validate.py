"""`batchsim validate`: the simulator against live runs of the real model, or against runs
recorded elsewhere (`--records`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sim.cli.app import command
from sim.cli.options import SetOption
from sim.cli.render import err_console, print_validation
from sim.errors import InputError


@command()
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
        from sim.validation.records import validate_records

        result = validate_records(
            scenario,
            [*records, *(more_records or [])],
            out,
            set_ or [],
            profile_from_records,
            sim_draws,
            stage=lambda m: err_console.print(f"[bold]validate[/] {m}", highlight=False),
        )
        print_validation(result, scenario, out, "recorded", "sim_recorded_batches")
        return
    if profile_from_records:
        raise InputError("needs --records", source="--profile-from-records")
    repeats = 3 if repeats is None else repeats
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
    print_validation(result, scenario, out, "live", "sim_live_service")
