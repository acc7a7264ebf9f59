"""Profile files, read and written in one place: a CSV of timed samples (one row per
sample: batch_size, latency_ms, optional peak_mem_mb, shape columns such as cameras, an
idle_ms level, a stage) and its NAME.meta.json provenance sidecar.

A file is read once (`read_table`), and every profile the scenario needs is selected from
that table: a variant (`select`), one profile per request shape (`by_shape`), one per idle
level (`by_idle_level`), and the stages its sidecar lists (`ProfileTable.stages`).

A process keeps the tables it read, keyed by the bytes of the CSV and its sidecar (not a
modification time: a file rewritten within the same second is read again), and each
table the profiles selected from it: a recommend search or a sweep loads every
configuration, and would otherwise parse the same CSV for each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a CSV or a frame is handled, not to simulate
    import pandas as pd

from sim.errors import InputError
from sim.io.files import (
    MAX_CONFIG_MB,
    MAX_TABLE_MB,
    cell,
    column_list,
    parse_csv,
    parse_json,
    read_bytes,
)
from sim.profiles.profile import Profile

REQUIRED_COLUMNS = ("batch_size", "latency_ms")
MEMORY_COLUMN = "peak_mem_mb"
# board power (W) sampled while the timed call ran (NVML); per size, the median is used
POWER_COLUMN = "power_w"
MEASURED_COLUMNS = (MEMORY_COLUMN, POWER_COLUMN)  # measured with each sample: never variants
# bookkeeping columns of a measurement that never select a variant
IGNORED_COLUMNS = frozenset({"rep", "run", "sample", "timestamp", "measured_ms"})
# idle time (ms) before the timed call: a model may run slower after the server has been
# idle. Levels are not variants to choose: unselected, the profile is the smallest level
# (back to back) and the simulator draws each batch from the level its idle time reached
IDLE_COLUMN = "idle_ms"


def meta_path_for(csv_path: Path) -> Path:
    """Where the provenance sidecar of a profile CSV lives: NAME.meta.json."""
    return csv_path.with_suffix("").with_suffix(".meta.json")


def _matches(column: pd.Series, value: Any) -> pd.Series:
    """Rows whose value is `value`: by number for a numeric column (idle_ms: 0 picks 0.0)."""
    import pandas as pd

    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric and pd.api.types.is_numeric_dtype(column):
        return column.astype(float) == float(value)
    return column.astype(str) == str(value)


def _idle_levels(frame: pd.DataFrame, source: str) -> pd.Series:
    """The idle_ms column as numbers, each >= 0."""
    import pandas as pd

    idle = pd.to_numeric(frame[IDLE_COLUMN], errors="coerce")
    if idle.isna().any() or (idle < 0).any() or not np.isfinite(idle).all():
        raise InputError("idle_ms must hold finite numbers >= 0", source=source, field=IDLE_COLUMN)
    return idle


@dataclass(frozen=True)
class ProfileTable:
    """A profile CSV as read: its rows and its provenance sidecar ({"provenance":
    "unknown"} without one), read once whatever is selected from it. Shared by every
    load of the same bytes in a process: nothing changes its frame (selections copy)."""

    path: Path
    frame: pd.DataFrame
    provenance: dict[str, Any]
    # what was selected from it, by (kind, selection): Profiles are values
    selections: dict[tuple, Any] = field(default_factory=dict, repr=False, compare=False)

    def memo(self, key: tuple, make: Any) -> Any:
        """`make()` once per key for this table (a selection is a pure function of it)."""
        if key not in self.selections:
            self.selections[key] = make()
        return self.selections[key]

    def stages(self) -> list[tuple[str, int]] | None:
        """The stages the sidecar lists (`"stages": [{"name", "repeat"}, ...]`, as `batchsim
        profile --stages` writes them), or None for a one-stage profile."""
        stages = self.provenance.get("stages")
        if stages is None:
            return None
        valid = (
            isinstance(stages, list)
            and stages
            and all(
                isinstance(s, dict)
                and isinstance(s.get("name"), str)
                and s["name"]
                and type(s.get("repeat", 1)) is int
                and s.get("repeat", 1) >= 1
                for s in stages
            )
        )
        if not valid:
            raise InputError(
                'stages must be a list of {"name": TEXT, "repeat": INTEGER >= 1}',
                source=str(meta_path_for(self.path)),
                field="stages",
            )
        return [(s["name"], s.get("repeat", 1)) for s in stages]


_TABLES: dict[tuple[str, bytes], ProfileTable] = {}
_MAX_TABLES = 64  # distinct profile files kept per process


def read_table(path: str | Path) -> ProfileTable:
    """A profile CSV's rows and its provenance sidecar (once per distinct content)."""
    path = Path(path)
    data = read_bytes(path, "profile", MAX_TABLE_MB)
    meta = meta_path_for(path)
    meta_data = read_bytes(meta, "provenance sidecar", MAX_CONFIG_MB) if meta.exists() else None
    digest = hashlib.sha256(data + b"\0" + (meta_data if meta_data is not None else b"-"))
    key = (str(path), digest.digest())  # as the caller names it: error lines quote it
    table = _TABLES.get(key)
    if table is None:
        frame = parse_csv(data, path, "profile")
        provenance: dict[str, Any] = {"provenance": "unknown"}
        if meta_data is not None:
            provenance = parse_json(meta_data, meta, "provenance sidecar")
            if not isinstance(provenance, dict):
                raise InputError("provenance must be a JSON object", source=str(meta))
        if len(_TABLES) >= _MAX_TABLES:
            _TABLES.pop(next(iter(_TABLES)))
        table = _TABLES[key] = ProfileTable(path, frame, provenance)
    return table


def read(path: str | Path, select: Mapping[str, Any] | None = None) -> Profile:
    """The profile in a CSV (with `select`: the rows of one variant)."""
    return selected(read_table(path), select)


def selected(table: ProfileTable, select: Mapping[str, Any] | None = None) -> Profile:
    """The profile of the rows `select` picks (every row: one variant, or the smallest idle
    level), with the sidecar's provenance."""

    def make() -> Profile:
        provenance = table.provenance
        if select:
            provenance = {**provenance, "selected": dict(select)}
        return from_frame(table.frame, select, provenance, str(table.path))

    return table.memo(("select", _key(select)), make)


def by_shape(
    table: ProfileTable, shape: str, select: Mapping[str, Any] | None = None
) -> dict[int, Profile]:
    """One profile per value of the numeric shape column (e.g. cameras), for batches whose
    cost depends on the largest request shape in them."""

    return table.memo(("shape", shape, _key(select)), lambda: _by_shape(table, shape, select))


def _by_shape(
    table: ProfileTable, shape: str, select: Mapping[str, Any] | None
) -> dict[int, Profile]:
    import pandas as pd

    frame, path = table.frame, table.path
    if shape not in frame.columns:
        raise InputError(
            f"no column '{shape}' to take request shapes from (columns: {column_list(frame.columns)})",
            source=str(path),
            field=shape,
        )
    values = pd.to_numeric(frame[shape], errors="coerce")
    if values.isna().any() or (values != values.round()).any():
        raise InputError(f"column '{shape}' must hold integers", source=str(path), field=shape)
    variants = {}
    for v in sorted(values.unique()):
        chosen = {**(select or {}), shape: int(v)}
        meta = {**table.provenance, "selected": chosen}
        variants[int(v)] = from_frame(frame, chosen, meta, str(path))
    return variants


def by_idle_level(
    table: ProfileTable, select: Mapping[str, Any] | None = None
) -> dict[float, Profile] | None:
    """One profile per idle level (seconds idle before the call -> samples), or None when
    the file measured one level only or the scenario selected one."""
    return table.memo(("idle", _key(select)), lambda: _by_idle_level(table, select))


def _key(select: Mapping[str, Any] | None) -> tuple:
    return tuple(sorted((str(k), repr(v)) for k, v in (select or {}).items()))


def _by_idle_level(
    table: ProfileTable, select: Mapping[str, Any] | None
) -> dict[float, Profile] | None:
    frame, path = table.frame, table.path
    if IDLE_COLUMN not in frame.columns or IDLE_COLUMN in (select or {}):
        return None
    idle = _idle_levels(frame, str(path))
    levels = np.unique(idle)
    if levels.size < 2:
        return None
    return {
        level / 1000.0: from_frame(
            frame[idle == level], select, {**table.provenance, IDLE_COLUMN: level}, str(path)
        )
        for level in levels.tolist()
    }


def from_frame(
    frame: pd.DataFrame,
    select: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    source: str = "<frame>",
) -> Profile:
    """Build from one row per sample: batch_size, latency_ms[, peak_mem_mb, shape columns]."""
    import pandas as pd

    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)}; a profile CSV needs "
            f"columns batch_size,latency_ms (optional peak_mem_mb and shape columns)",
            source=source,
        )
    if frame.empty:
        raise InputError("the profile has no rows", source=source)
    frame = frame.copy()
    for name, value in (select or {}).items():
        if name not in frame.columns:
            variants = [c for c in frame.columns if c not in (*REQUIRED_COLUMNS, *MEASURED_COLUMNS)]
            raise InputError(
                f"no column '{name}' to select on (columns: {column_list(variants) or 'none'})",
                source=source,
                field=name,
            )
        col = frame[name]
        mask = _matches(col, value)
        if not mask.any():
            choices = ", ".join(sorted(map(str, col.unique())))
            raise InputError(
                f"no rows with {name}={value} (values present: {choices})",
                source=source,
                field=name,
            )
        frame = frame[mask]
    if IDLE_COLUMN in frame.columns and IDLE_COLUMN not in (select or {}):
        idle = _idle_levels(frame, source)
        frame = frame[idle == idle.min()]
    for name in frame.columns:
        if name in (*REQUIRED_COLUMNS, *MEASURED_COLUMNS) or name in IGNORED_COLUMNS:
            continue
        values = frame[name].unique()
        if len(values) > 1:
            choices = ", ".join(sorted(map(str, values)))
            raise InputError(
                f"column '{name}' has several values ({choices}); choose one with "
                f"profile: {{path: ..., {name}: VALUE}}",
                source=source,
                field=name,
            )
    for name in (*REQUIRED_COLUMNS, *(c for c in MEASURED_COLUMNS if c in frame)):
        numeric = pd.to_numeric(frame[name], errors="coerce")
        bad = numeric.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{cell(frame, name, row)} is not a number",
                source=source,
                field=name,
            )
        frame[name] = numeric
    sizes = frame["batch_size"].to_numpy()
    if not np.all(np.isfinite(sizes)) or np.any(sizes != np.round(sizes)) or np.any(sizes < 1):
        raise InputError("batch sizes must be integers >= 1", source=source, field="batch_size")
    frame["batch_size"] = frame["batch_size"].astype(int)
    groups = frame.groupby("batch_size", sort=True)
    samples = {int(s): g["latency_ms"].to_numpy(dtype=float) for s, g in groups}
    mem = None
    if MEMORY_COLUMN in frame:
        mem = {int(s): float(g[MEMORY_COLUMN].max()) for s, g in groups}
    power = None
    if POWER_COLUMN in frame:
        power = {int(s): float(g[POWER_COLUMN].median()) for s, g in groups}
    return Profile.from_samples(samples, mem, provenance, source, power)


def rows(profile: Profile) -> pd.DataFrame:
    """One row per sample: batch_size, latency_ms[, peak_mem_mb]."""
    import pandas as pd

    out = []
    for i, (size, samples) in enumerate(zip(profile.sizes, profile.samples_ms, strict=True)):
        for value in samples:
            row = {"batch_size": size, "latency_ms": float(value)}
            if profile.peak_mem_mb is not None:
                row[MEMORY_COLUMN] = profile.peak_mem_mb[i]
            if profile.power_w is not None:
                row[POWER_COLUMN] = profile.power_w[i]
            out.append(row)
    return pd.DataFrame(out)


def write(profile: Profile, path: str | Path) -> None:
    """Write one row per sample and the provenance sidecar."""
    write_levels({0.0: profile}, path)


def write_levels(levels: Mapping[float, Profile], path: str | Path) -> None:
    """Write idle levels (seconds -> profile) as one CSV with an idle_ms column (one level:
    none), and the smallest level's provenance sidecar."""
    import pandas as pd

    path = Path(path)
    frames = []
    for level_s, profile in levels.items():
        frame = rows(profile)
        if len(levels) > 1:
            frame[IDLE_COLUMN] = round(level_s * 1000.0, 6)
        frames.append(frame)
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)
    first = levels[min(levels)]
    meta_path_for(path).write_text(json.dumps(dict(first.provenance), indent=2) + "\n")
