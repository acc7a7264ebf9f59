"""Reading the user's files: every failure is one InputError line naming the file.

Scenarios, profiles, sidecars, traces and run outputs are all read here, so one set of
rules covers them: a missing file, a directory, a file we may not read, a file too big to
be what it claims, text that is not UTF-8, YAML with duplicate keys or nested without
end, and CSV, JSON or Parquet that does not parse.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from sim.errors import InputError, first_line

if TYPE_CHECKING:
    import pandas as pd

# a scenario or a sidecar is a few kB; megabytes of YAML would take minutes to parse
MAX_CONFIG_MB = 4
# a trace of a week at 1000 requests/s is about 10 GB; this is a file read whole
MAX_TABLE_MB = 1024
MAX_YAML_DEPTH = 64  # nesting levels: a scenario uses 4
MAX_YAML_VALUES = 1_000_000  # values once aliases are expanded ("billion laughs")


def check_readable(path: Path, what: str) -> None:
    """The path is a file this process may read, or one clear line says why not."""
    try:
        if path.is_dir():  # (is_dir raises PermissionError from a folder we may not enter)
            raise IsADirectoryError
        with path.open("rb"):
            pass
    except IsADirectoryError:
        raise InputError(f"is a directory, not a {what} file", source=str(path)) from None
    except FileNotFoundError:
        raise InputError(f"{what} file not found", source=str(path)) from None
    except PermissionError:
        raise InputError(
            f"the {what} file cannot be read (permission denied)", source=str(path)
        ) from None
    except OSError as exc:  # a name too long, a loop of links, a component not a folder
        raise InputError(
            f"the {what} file cannot be read ({exc.strerror})", source=str(path)[:200]
        ) from None


def read_bytes(path: Path, what: str, max_mb: float) -> bytes:
    """A file's bytes, refused when it is not a readable file or is over max_mb."""
    check_readable(path, what)
    size = path.stat().st_size
    if size > max_mb * 2**20:
        raise InputError(
            f"the {what} file is {size / 2**20:,.1f} MB; a {what} file is at most {max_mb:,} MB",
            source=str(path),
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"the {what} file cannot be read ({exc.strerror})", source=str(path)
        ) from None


def decode(data: bytes, what: str, source: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is allowed), or a line saying where it is not."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"the {what} file is UTF-16; save it as UTF-8", source=source)
    if b"\x00" in data:
        raise InputError(f"the {what} file is binary, not UTF-8 text", source=source)
    try:
        return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")  # a BOM is no text
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"the {what} file is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, "
            f"column {column}); save it as UTF-8",
            source=source,
        ) from None


def read_text(path: Path, what: str, max_mb: float = MAX_CONFIG_MB) -> str:
    """A text file of the user's as a string; `what` names it in errors."""
    return decode(read_bytes(path, what, max_mb), what, str(path))


def read_csv(path: Path, what: str) -> pd.DataFrame:
    """A CSV file of the user's (a profile, a trace) as a frame; `what` names it in errors."""
    return parse_csv(read_bytes(path, what, MAX_TABLE_MB), path, what)


def parse_csv(data: bytes, path: Path, what: str) -> pd.DataFrame:
    """The bytes of a CSV file (read_bytes) as a frame, or one line saying why not."""
    import pandas as pd

    text = decode(data, what, str(path))
    try:
        return pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise InputError(f"not a readable CSV ({first_line(exc)})", source=str(path)) from None


def read_json(path: Path, what: str) -> Any:
    """A JSON file of the user's or of an earlier run (a sidecar, sweep.json, summary.json)."""
    return parse_json(read_bytes(path, what, MAX_CONFIG_MB), path, what)


def parse_json(data: bytes, path: Path, what: str) -> Any:
    """The bytes of a JSON file (read_bytes) as data, or one line saying why not."""
    text = decode(data, what, str(path))
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = (
            f"{exc.msg}, line {exc.lineno}"
            if isinstance(exc, json.JSONDecodeError)
            else "nested too deeply"
        )
        raise InputError(f"invalid JSON ({reason})", source=str(path)) from None


def read_parquet(path: Path, what: str) -> pd.DataFrame:
    """A Parquet file a run or a sweep wrote, or one line naming it when it is not one."""
    import pandas as pd
    import pyarrow

    read_bytes(path, what, MAX_TABLE_MB)  # exists, is a file, may be read, is not huge
    try:
        return pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise InputError(
            f"not a readable Parquet file ({first_line(exc).split('. ')[0]})", source=str(path)
        ) from None


# ---- YAML --------------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (YAML says keys are unique; PyYAML keeps the
    last) and nesting deeper than MAX_YAML_DEPTH (PyYAML recurses without bound)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` may be overridden: that is what it is for
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first_seen.get(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, "a mapping key must be a plain value", key_node.start_mark
                    ) from None
                if seen is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first given on line {seen})",
                        key_node.start_mark,
                    )
                first_seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str, what: str = "YAML") -> Any:
    """YAML text as Python values, under the strict rules above; `source` names it."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"invalid {what} ({where}{problem})", source=source) from None
    _check_expanded_size(data, source)
    return data


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file of the user's as Python values (None when it is empty)."""
    return parse_yaml(read_text(path, what), str(path))


def run_scenario(folder: Path) -> dict[str, Any] | None:
    """The scenario a run folder was made with (the scenario.yaml `run`, `observe` and
    `serve` write beside their records), as written; None when the folder has none."""
    path = folder / "scenario.yaml"
    if not path.is_file():
        return None
    data = read_yaml(path, "scenario")
    return data if isinstance(data, dict) else None


def warmup_of(scenario: dict[str, Any] | None) -> float | None:
    """A written scenario's warm-up (s; 0 when it sets none), None when it cannot say."""
    if scenario is None:
        return None
    value = scenario.get("warmup_s", 0.0)
    return float(value) if isinstance(value, int | float) else None


def _check_expanded_size(data: Any, source: str) -> None:
    """Aliases share one object, but everything that walks the data expands them: refuse
    data that would expand past MAX_YAML_VALUES."""
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if not isinstance(value, dict | list):
            return 1
        known = sizes.get(id(value))
        if known == -1:  # reached again while still inside it: `&a [*a]`
            raise InputError("the YAML refers to itself (a recursive alias)", source=source)
        if known is not None:
            return known
        sizes[id(value)] = -1
        items = value.values() if isinstance(value, dict) else value
        total = 1 + sum(size(item) for item in items)
        if total > MAX_YAML_VALUES:
            raise InputError(
                f"the YAML expands to over {MAX_YAML_VALUES:,} values (through its aliases)",
                source=source,
            )
        sizes[id(value)] = total
        return total

    size(data)


def column_list(columns: Any) -> str:
    """A file's column names in an error line: as written, but quoted where a name holds a
    line break or another unprintable character (the line stays one line)."""
    return ", ".join(str(c) if str(c).isprintable() else repr(str(c)) for c in columns)


def cell(frame: pd.DataFrame, column: str, position: int) -> str:
    """A CSV cell in an error line: its value as the user wrote it (a plain number, not
    np.float64(...)) and the file line it is on (the header is line 1)."""
    value = frame[column].iloc[position]
    label = frame.index[position]
    line = int(label) + 2 if isinstance(label, int | np.integer) else position + 2
    if isinstance(value, str):
        return f"value {value!r} on line {line}"
    if isinstance(value, float | np.floating) and np.isnan(value):
        return f"a missing or nan value on line {line}"  # pandas reads both as NaN
    text = format(float(value), "g") if isinstance(value, int | float | np.number) else repr(value)
    return f"value {text} on line {line}"
