"""Reading a scenario: the YAML file (or a mapping), `--set`-style overrides, and validation
of every section against the schema, with one clear line on failure. What it returns is
data (`ParsedScenario`); resolve.py reads its files and checks it against its profile."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from pydantic import ValidationError

from sim.config.limits import Limits
from sim.config.messages import format_error
from sim.config.schema import Scenario
from sim.errors import InputError
from sim.io import files


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate a scenario mapping; one InputError line on failure."""
    if not isinstance(data, dict):
        raise InputError("a scenario must be a YAML mapping of keys to values", source=source)
    try:
        return Scenario.model_validate(data, context={"limits": _limits_of(data)})
    except ValidationError as exc:
        field, message = format_error(exc)
        workload = data.get("workload")
        if isinstance(workload, dict) and "groups" not in workload:
            # a one-group fleet written inline: name its keys as the user wrote them
            field = field.replace("workload.groups.0.", "workload.").replace(
                "workload.groups.0", "workload"
            )
        raise InputError(message, source=source, field=field or None) from None


def _limits_of(data: dict[str, Any]) -> Limits:
    """The scenario's `limits:`, which every other field is checked against (a malformed
    section is reported as the scenario's own error, under the default limits meanwhile)."""
    try:
        return Limits.model_validate(data.get("limits") or {})
    except ValidationError:
        return Limits()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A scenario file's mapping (sim.io.files reads it: UTF-8, unique keys, bounded)."""
    path = Path(path)
    data = files.read_yaml(path, "scenario")
    if data is None:
        raise InputError("the scenario file is empty", source=str(path))
    return data


def apply_overrides(
    data: dict[str, Any], overrides: list[str], option: str = "set"
) -> dict[str, Any]:
    """Apply `KEY=VALUE` overrides (dotted key, YAML value) to a raw scenario mapping."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"'{item}' is not KEY=VALUE (e.g. policy.max_batch=8)", option=option)
        try:
            value = files.parse_yaml(raw, option) if raw.strip() else None
        except InputError:
            raise InputError(
                f"the value '{raw}' is not valid YAML", option=option, field=key
            ) from None
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise InputError(f"'{prefix}' is a value, not a section", option=option, field=key)
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


Overrides = Sequence[str] | Mapping[str, Any]


@dataclass(frozen=True)
class ParsedScenario:
    """A scenario validated section by section, before its files are resolved."""

    scenario: Scenario
    data: dict[str, Any]  # the mapping as written, overrides applied
    base: Path  # where relative paths are looked up first
    source: str  # the file (or mapping) in error lines


def parse(
    source: str | Path | Mapping[str, Any],
    overrides: Overrides = (),
    *,
    base: Path | None = None,
    origin: str | None = None,
    option: str = "set",
) -> ParsedScenario:
    """Read a file (or take a mapping), apply overrides and validate every section.

    `overrides`: `--set`-style "KEY=VALUE" strings (YAML values), or {dotted key: value}.
    `base`: where relative paths are looked up first (default: the file's folder, or the
    working directory for a mapping); `origin`: the file a mapping came from, for error
    lines; `option`: how the overrides were given (set, grid, space). An error that an
    override caused names it.
    """
    if isinstance(source, Mapping):
        data, label = _deep_copy(dict(source)), origin or "<dict>"
        base_dir = Path(base) if base is not None else Path.cwd()
    else:
        path = Path(source)
        data, label = read_yaml(path), origin or str(path)
        base_dir = Path(base) if base is not None else path.resolve().parent
        if not isinstance(data, dict):
            raise InputError("a scenario must be a YAML mapping of keys to values", source=label)
    items = override_items(overrides)
    data = apply_overrides(data, [text for _, text in items], option)
    with blaming(items, label, option):
        return ParsedScenario(parse_scenario(data, label), data, base_dir, label)


class Where(TypedDict, total=False):
    """Where a scenario comes from, for parse and load: see parse."""

    base: Path | None
    origin: str | None
    option: str


@contextmanager
def blaming(items: list[tuple[str, str]], label: str, option: str) -> Iterator[None]:
    """An error in the scenario's own fields that an override caused names the override."""
    try:
        yield
    except InputError as exc:
        culprit = _override_for(exc.field, items)
        if culprit is None or exc.source not in (label, None):
            raise
        raise exc.located(source=label, option=option, given=culprit) from None


def override_items(overrides: Overrides) -> list[tuple[str, str]]:
    """(dotted key, KEY=VALUE text) of each override."""
    if isinstance(overrides, Mapping):
        return [(str(k), f"{k}={json.dumps(v)}") for k, v in overrides.items()]
    return [(item.partition("=")[0].strip(), item) for item in overrides]


def _override_for(field: str | None, items: list[tuple[str, str]]) -> str | None:
    """The override that an error's field came from, if any."""
    if not field:
        return None
    for key, text in items:
        section = key.rpartition(".")[0]
        same_section = bool(section) and field.rpartition(".")[0] == section
        if (
            field == key
            or field.startswith(key + ".")
            or key.startswith(field + ".")
            or same_section
        ):
            return text
    return None
