"""Options several commands share, and the parsing of flag text into plain values."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sim.errors import InputError

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


def integers(text: str, option: str) -> list[int]:
    """`1,2,4,8` as integers (their range is the API's to check)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(
            f"'{text}' is not a comma-separated list of integers", option=option
        ) from None


def milliseconds(text: str | None, option: str) -> tuple[float, ...]:
    """`0,10,200` as milliseconds (their range is the API's to check)."""
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(
            f"'{text}' is not a comma-separated list of milliseconds", option=option
        ) from None
    if not values:
        raise InputError(f"'{text}' names no level", option=option)
    return values


def column_values(items: list[str] | None, option: str) -> dict[str, int]:
    """COLUMN=VALUE pairs (integers) as a dict."""
    out: dict[str, int] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"'{item}' is not COLUMN=VALUE (e.g. cameras=3)", option=option)
        try:
            out[key] = int(value)
        except ValueError:
            raise InputError(f"'{item}': the value must be an integer", option=option) from None
    return out
