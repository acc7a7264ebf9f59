"""User-facing input errors: one line, exit code 2, never a traceback."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (scenario, profile, trace, CLI flag).

    The message is one line that names the file, the field and what is allowed; each
    part is also kept as data (`source`, `field`, `message`), so nothing re-parses it.
    """

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message  # what is wrong and what is allowed, without file or field
        self.source = source
        self.field = field
        parts = [p for p in (source, field) if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class Interrupted(Exception):
    """Ctrl-C stopped long work; the message says what was kept and how to go on."""

    exit_code = 130


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): how
    a library's error is quoted inside one InputError line."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """`Type: first line` of a user's code's exception (a plug-in's, a factory's)."""
    name = type(exc).__name__
    return f"{name}: {first_line(exc)}" if str(exc).strip() else name
