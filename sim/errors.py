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
