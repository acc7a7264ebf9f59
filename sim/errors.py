"""User-facing input errors: one line, exit code 2, never a traceback."""

from __future__ import annotations

from collections.abc import Callable


class InputError(Exception):
    """Bad user input (scenario, profile, trace, a plan's parameter).

    The message is one line that names the file, the field and what is allowed; each
    part is also kept as data (`source`, `field`, `message`), so nothing re-parses it.
    `option` names the parameter of a plan at fault as the API calls it ("replications",
    "grid"), with `given`, what was given for it when the line should quote it; the CLI
    names it by its flag (`render`), so flag names live only there.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        option: str | None = None,
        given: str | None = None,
        mentions: tuple[str, ...] = (),
    ):
        self.message = message  # what is wrong and what is allowed, without file or field
        self.source = source
        self.field = field
        self.option = option
        self.given = given
        # other parameters the message names as {name} (a hint: "choose with {select}")
        self.mentions = mentions
        super().__init__(self.render())

    def render(self, name: Callable[[str], str] = str) -> str:
        """The one line: `source option given: field: message`, the option named by `name`
        (the CLI passes its flag of each option)."""
        where = None if self.option is None else name(self.option)
        head = " ".join(p for p in (self.source, where, self.given) if p)
        prefix = ": ".join(p for p in (head, self.field) if p)
        message = self.message
        for mentioned in self.mentions:  # {name} tokens only: a message may hold other braces
            message = message.replace("{" + mentioned + "}", name(mentioned))
        return f"{prefix}: {message}" if prefix else message

    def located(self, **where: str | None) -> InputError:
        """The same error with `source`, `field`, `option` or `given` replaced."""
        parts = {"source": self.source, "field": self.field, "option": self.option,
                 "given": self.given, **where}  # fmt: skip
        return InputError(self.message, mentions=self.mentions, **parts)


class InvariantViolation(AssertionError):
    """A run broke a named invariant (docs/semantics.md; sim/core/invariants.py): `name`
    (e.g. "INV-3 one batch per replica") and what broke. A bug, not bad input: exit 1."""

    def __init__(self, name: str, what: str):
        self.name, self.what = name, what
        super().__init__(f"{name}: {what}")


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
