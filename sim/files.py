"""Reading the user's files: every failure is one InputError line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sim.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


def read_csv(path: Path, what: str) -> pd.DataFrame:
    """A CSV file of the user's (a profile, a trace) as a frame; `what` names it in errors."""
    import pandas as pd

    if not path.is_file():
        raise InputError(f"{what} file not found", source=str(path))
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a readable CSV ({reason})", source=str(path)) from None
