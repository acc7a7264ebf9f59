"""The `batchsim` application: the typer app, `--version`, the `command` decorator every
command registers with (its errors name its own flags), and `main`, which turns input
errors into one line and exit code 2."""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from sim.cli.render import err_console, out_console
from sim.errors import InputError, Interrupted, InvariantViolation

app = typer.Typer(
    name="batchsim",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Simulate batching schedulers for VLA robot-policy inference.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("batchsim")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        out_console.print(f"batchsim {version()}")
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


def flags_of(fn: Callable[..., Any]) -> dict[str, str]:
    """Each option of a command by its parameter name (a trailing _ dropped): its flag. An
    error about a plan's parameter (InputError.option, the API's name) is named by it."""
    hints = typing.get_type_hints(fn, include_extras=True)
    flags = {}
    for name, hint in hints.items():
        infos = [
            m for m in getattr(hint, "__metadata__", ()) if isinstance(m, typer.models.OptionInfo)
        ]
        if not infos:
            continue
        decls = [d for d in (infos[0].param_decls or ()) if d.startswith("--")]
        bare = name.rstrip("_")
        flags[bare] = decls[0] if decls else "--" + bare.replace("_", "-")
    return flags


def command(name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command (registered in order by sim/cli/__init__.py, `name` where it differs from
    the function's), its input errors naming its flags: an error about the API parameter
    `replications` reads `--replications`."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except InputError as exc:
                exc.flags = flags_of(fn)
                raise

        run.command_name = name  # type: ignore[attr-defined]
        return run

    return wrap


def register(*commands: Callable[..., Any]) -> None:
    """Add the commands to the app, in this order (`batchsim --help` lists them so)."""
    for fn in commands:
        app.command(getattr(fn, "command_name", None))(fn)


def _named(exc: InputError) -> str:
    """The error's line, a plan's parameter named by the command's flag where it has one."""
    flags = getattr(exc, "flags", {})
    return exc.render(lambda name: "/".join(flags.get(part, part) for part in name.split("/")))


def main(argv: list[str] | None = None) -> int:
    """Entry point: input errors become one line on stderr and exit code 2."""
    try:
        code = app(args=argv, standalone_mode=False)
    except InputError as exc:
        err_console.print(
            f"batchsim: error: {_named(exc)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
            emoji=False,
        )
        return 2
    except InvariantViolation as exc:  # a bug (or a plug-in's), not bad input: exit 1
        err_console.print(
            f"batchsim: invariant violated: {exc}", markup=False, highlight=False, soft_wrap=True
        )
        return 1
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
    # a command's own exit code (typer.Exit: recommend's 3, no configuration meets the SLO)
    return code if type(code) is int else 0
