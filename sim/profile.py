"""Latency-versus-batch-size profiles: measured data with provenance.

A profile holds, per measured batch size, every timed latency sample (ms) and
optionally the peak memory (MB). Service times for the simulator are drawn from
the empirical distribution of the batch size asked for; sizes between measured
ones interpolate the two neighbours' quantile functions linearly (so a profile
that is monotone in batch size stays monotone, and a deterministic profile is a
piecewise-linear curve). Sizes outside the measured range are an error: a
profile is never extrapolated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a CSV or a frame is handled, not to simulate
    import pandas as pd

from sim.errors import InputError
from sim.files import cell, read_csv, read_json

REQUIRED_COLUMNS = ("batch_size", "latency_ms")
MEMORY_COLUMN = "peak_mem_mb"
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


@dataclass(frozen=True)
class Profile:
    """Measured latency samples per batch size, with optional peak memory and provenance."""

    sizes: tuple[int, ...]
    samples_ms: tuple[np.ndarray, ...]  # sorted samples, one array per size
    peak_mem_mb: tuple[float, ...] | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<inline>"

    def __post_init__(self) -> None:
        if not self.sizes:
            raise InputError("a profile needs at least one batch size", source=self.source)
        if list(self.sizes) != sorted(set(self.sizes)):
            raise InputError("batch sizes must be distinct", source=self.source, field="batch_size")
        if self.sizes[0] < 1:
            raise InputError(
                f"batch sizes must be >= 1 (got {self.sizes[0]})",
                source=self.source,
                field="batch_size",
            )
        for size, mem in zip(self.sizes, self.peak_mem_mb or (), strict=False):
            if not (math.isfinite(mem) and mem >= 0):
                raise InputError(
                    f"peak memory for batch size {size} must be finite and >= 0 (got {mem:g})",
                    source=self.source,
                    field="peak_mem_mb",
                )
        for size, samples in zip(self.sizes, self.samples_ms, strict=True):
            if samples.size == 0 or not np.all(np.isfinite(samples)) or np.any(samples <= 0):
                raise InputError(
                    f"latencies for batch size {size} must be finite and > 0",
                    source=self.source,
                    field="latency_ms",
                )

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_samples(
        cls,
        samples: Mapping[int, Sequence[float] | float],
        peak_mem_mb: Mapping[int, float] | None = None,
        provenance: Mapping[str, Any] | None = None,
        source: str = "<inline>",
    ) -> Profile:
        """Build from {batch_size: latency_ms or [samples...]}."""
        sizes = tuple(sorted(int(s) for s in samples))
        arrays = []
        for s in sizes:
            value = samples[s]
            arr = np.sort(np.atleast_1d(np.asarray(value, dtype=float)))
            arrays.append(arr)
        mem = None
        if peak_mem_mb is not None:
            mem = tuple(float(peak_mem_mb[s]) for s in sizes)
        return cls(sizes, tuple(arrays), mem, dict(provenance or {}), source)

    @classmethod
    def from_inline(
        cls,
        batch_size: Sequence[int],
        latency_ms: Sequence[float | Sequence[float]],
        peak_mem_mb: Sequence[float] | None = None,
    ) -> Profile:
        """The scenario's inline form: parallel lists, a value or a list of samples per size."""
        if len(batch_size) != len(latency_ms):
            raise InputError(
                f"batch_size has {len(batch_size)} entries but latency_ms has {len(latency_ms)}",
                field="profile",
            )
        if peak_mem_mb is not None and len(peak_mem_mb) != len(batch_size):
            raise InputError("peak_mem_mb needs one value per batch size", field="profile")
        if len(set(batch_size)) != len(batch_size):
            raise InputError("batch_size values must be distinct", field="profile.batch_size")
        samples = dict(zip(batch_size, latency_ms, strict=True))
        mem = dict(zip(batch_size, peak_mem_mb, strict=True)) if peak_mem_mb else None
        return cls.from_samples(samples, mem, {"source": "inline"}, "<inline profile>")

    @classmethod
    def from_frame(
        cls,
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
                variants = [c for c in frame.columns if c not in (*REQUIRED_COLUMNS, MEMORY_COLUMN)]
                raise InputError(
                    f"no column '{name}' to select on (columns: {', '.join(variants) or 'none'})",
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
            if name in (*REQUIRED_COLUMNS, MEMORY_COLUMN) or name in IGNORED_COLUMNS:
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
        for name in (*REQUIRED_COLUMNS, *([MEMORY_COLUMN] if MEMORY_COLUMN in frame else [])):
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
        return cls.from_samples(samples, mem, provenance, source)

    @classmethod
    def from_csv(cls, path: str | Path, select: Mapping[str, Any] | None = None) -> Profile:
        """Load a profile CSV and its NAME.meta.json provenance sidecar, if any."""
        frame, provenance = _read_csv(Path(path))
        if select:
            provenance = {**provenance, "selected": dict(select)}
        return cls.from_frame(frame, select, provenance, str(path))

    @classmethod
    def variants_from_csv(
        cls, path: str | Path, shape: str, select: Mapping[str, Any] | None = None
    ) -> dict[int, Profile]:
        """One profile per value of the numeric shape column (e.g. cameras), for batches whose
        cost depends on the largest request shape in them."""
        import pandas as pd

        frame, provenance = _read_csv(Path(path))
        if shape not in frame.columns:
            raise InputError(
                f"no column '{shape}' to take request shapes from (columns: {', '.join(frame.columns)})",
                source=str(path),
                field=shape,
            )
        values = pd.to_numeric(frame[shape], errors="coerce")
        if values.isna().any() or (values != values.round()).any():
            raise InputError(f"column '{shape}' must hold integers", source=str(path), field=shape)
        variants = {}
        for v in sorted(values.unique()):
            chosen = {**(select or {}), shape: int(v)}
            meta = {**provenance, "selected": chosen}
            variants[int(v)] = cls.from_frame(frame, chosen, meta, str(path))
        return variants

    @classmethod
    def after_idle_from_csv(
        cls, path: str | Path, select: Mapping[str, Any] | None = None
    ) -> dict[float, Profile] | None:
        """One profile per idle level (seconds idle before the call -> samples), or None when
        the file measured one level only or the scenario selected one."""
        frame, provenance = _read_csv(Path(path))
        if IDLE_COLUMN not in frame.columns or IDLE_COLUMN in (select or {}):
            return None
        idle = _idle_levels(frame, str(path))
        levels = np.unique(idle)
        if levels.size < 2:
            return None
        return {
            level / 1000.0: cls.from_frame(
                frame[idle == level], select, {**provenance, IDLE_COLUMN: level}, str(path)
            )
            for level in levels.tolist()
        }

    @staticmethod
    def levels_to_csv(levels: Mapping[float, Profile], path: str | Path) -> None:
        """Write idle levels (seconds -> profile) as one CSV with an idle_ms column (one
        level: none), and the smallest level's provenance sidecar."""
        import pandas as pd

        path = Path(path)
        frames = []
        for level_s, profile in levels.items():
            frame = profile.frame()
            if len(levels) > 1:
                frame[IDLE_COLUMN] = round(level_s * 1000.0, 6)
            frames.append(frame)
        pd.concat(frames, ignore_index=True).to_csv(path, index=False)
        first = levels[min(levels)]
        meta_path_for(path).write_text(json.dumps(dict(first.provenance), indent=2) + "\n")

    def frame(self) -> pd.DataFrame:
        """One row per sample: batch_size, latency_ms[, peak_mem_mb]."""
        import pandas as pd

        rows = []
        for i, (size, samples) in enumerate(zip(self.sizes, self.samples_ms, strict=True)):
            for value in samples:
                row = {"batch_size": size, "latency_ms": float(value)}
                if self.peak_mem_mb is not None:
                    row[MEMORY_COLUMN] = self.peak_mem_mb[i]
                rows.append(row)
        return pd.DataFrame(rows)

    def to_csv(self, path: str | Path) -> None:
        """Write one row per sample and the provenance sidecar."""
        Profile.levels_to_csv({0.0: self}, path)

    # ---- queries ------------------------------------------------------------------------
    @property
    def min_latency_s(self) -> float:
        """The fastest measured call, in seconds (a bound on how soon any batch ends)."""
        return min(float(samples[0]) for samples in self.samples_ms) / 1000.0

    @property
    def min_size(self) -> int:
        return self.sizes[0]

    @property
    def max_size(self) -> int:
        return self.sizes[-1]

    @property
    def deterministic(self) -> bool:
        """True when every size has a single value (or identical values)."""
        return all(s[0] == s[-1] for s in self.samples_ms)

    def check_size(self, size: int) -> None:
        """Raise InputError when `size` lies outside the measured range."""
        if not self.min_size <= size <= self.max_size:
            raise InputError(
                f"batch size {size} is outside the measured range "
                f"{self.min_size}..{self.max_size}; profiles are never extrapolated",
                source=self.source,
            )

    def _neighbours(self, size: int) -> tuple[int, int, float]:
        """Indices of the measured sizes around `size` and the weight of the upper one."""
        self.check_size(size)
        hi = int(np.searchsorted(self.sizes, size, side="left"))
        if self.sizes[hi] == size:
            return hi, hi, 0.0
        lo = hi - 1
        w = (size - self.sizes[lo]) / (self.sizes[hi] - self.sizes[lo])
        return lo, hi, w

    def latency_ms(self, size: int, quantile: float = 0.5) -> float:
        """The `quantile` of the latency distribution at `size` (interpolated between sizes)."""
        lo, hi, w = self._neighbours(size)
        q_lo = float(np.quantile(self.samples_ms[lo], quantile))
        q_hi = float(np.quantile(self.samples_ms[hi], quantile))
        return (1.0 - w) * q_lo + w * q_hi

    def mean_ms(self, size: int) -> float:
        """Mean service time at `size`: the mean of the interpolated distribution."""
        lo, hi, w = self._neighbours(size)
        return (1.0 - w) * float(self.samples_ms[lo].mean()) + w * float(self.samples_ms[hi].mean())

    def second_moment_ms2(self, size: int) -> float:
        """E[S^2] at `size` under the comonotone interpolation used by the sampler."""
        lo, hi, w = self._neighbours(size)
        u = _common_grid(self.samples_ms[lo].size, self.samples_ms[hi].size)
        q = (1.0 - w) * _quantile_fn(self.samples_ms[lo], u) + w * _quantile_fn(
            self.samples_ms[hi], u
        )
        return float(np.mean(q**2))

    def peak_memory_mb(self, size: int) -> float | None:
        """Peak memory at `size` (linear between measured sizes), or None if not measured."""
        if self.peak_mem_mb is None:
            return None
        lo, hi, w = self._neighbours(size)
        return (1.0 - w) * self.peak_mem_mb[lo] + w * self.peak_mem_mb[hi]

    def sampler(self, rng: np.random.Generator) -> ServiceSampler:
        """A fast draw of service times in seconds for padded batch sizes."""
        return ServiceSampler(self, rng)

    def table(self) -> pd.DataFrame:
        """Per-size summary: samples, median, p99, peak memory."""
        import pandas as pd

        rows = []
        for i, (size, s) in enumerate(zip(self.sizes, self.samples_ms, strict=True)):
            rows.append(
                {
                    "batch_size": size,
                    "samples": s.size,
                    "p50_ms": float(np.median(s)),
                    "p99_ms": float(np.quantile(s, 0.99)),
                    "peak_mem_mb": None if self.peak_mem_mb is None else self.peak_mem_mb[i],
                }
            )
        return pd.DataFrame(rows)


def _idle_levels(frame: pd.DataFrame, source: str) -> pd.Series:
    """The idle_ms column as numbers, each >= 0."""
    import pandas as pd

    idle = pd.to_numeric(frame[IDLE_COLUMN], errors="coerce")
    if idle.isna().any() or (idle < 0).any() or not np.isfinite(idle).all():
        raise InputError("idle_ms must hold finite numbers >= 0", source=source, field=IDLE_COLUMN)
    return idle


def _read_csv(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A profile CSV's rows and its provenance sidecar ({"provenance": "unknown"} without one)."""
    frame = read_csv(path, "profile")
    provenance: dict[str, Any] = {"provenance": "unknown"}
    meta = meta_path_for(path)
    if meta.exists():
        provenance = read_json(meta, "provenance sidecar")
        if not isinstance(provenance, dict):
            raise InputError("provenance must be a JSON object", source=str(meta))
    return frame, provenance


def _quantile_fn(sorted_samples: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The empirical quantile function: drawing u ~ U[0,1) gives a uniform pick of a sample."""
    n = sorted_samples.size
    return sorted_samples[np.minimum((u * n).astype(np.int64), n - 1)]


def _common_grid(n_lo: int, n_hi: int) -> np.ndarray:
    """Midpoints of a grid fine enough to integrate both step quantile functions exactly."""
    n = math.lcm(n_lo, n_hi)
    n = min(n, 1_000_000)
    return (np.arange(n) + 0.5) / n


class ServiceSampler:
    """Draws service times (seconds) per padded batch size; one uniform per draw.

    Measured sizes pick a sample uniformly; interpolated sizes mix the two
    neighbours' quantile functions at the same uniform (comonotone), so the draw is
    exactly the measured distribution at measured sizes and a linear blend between.
    """

    _BLOCK = 8192

    def __init__(self, profile: Profile, rng: np.random.Generator):
        self._rng = rng
        self.deterministic = profile.deterministic
        self._fixed_s: list[float] = [math.nan] * (profile.max_size + 1)
        # per size: (samples_lo, n_lo, samples_hi, n_hi, w), samples as seconds lists
        self._mix: list[tuple[list[float], int, list[float], int, float] | None] = [None] * (
            profile.max_size + 1
        )
        secs = [list(s / 1000.0) for s in profile.samples_ms]
        for size in range(profile.min_size, profile.max_size + 1):
            lo, hi, w = profile._neighbours(size)
            self._fixed_s[size] = ((1 - w) * secs[lo][0] + w * secs[hi][0]) if w else secs[lo][0]
            self._mix[size] = (secs[lo], len(secs[lo]), secs[hi], len(secs[hi]), w)
        self._u: list[float] = []
        self._i = 0

    def __call__(self, padded_size: int) -> float:
        if self.deterministic:
            return self._fixed_s[padded_size]
        if self._i >= len(self._u):
            self._u = self._rng.random(self._BLOCK).tolist()
            self._i = 0
        u = self._u[self._i]
        self._i += 1
        s_lo, n_lo, s_hi, n_hi, w = self._mix[padded_size]
        x = s_lo[int(u * n_lo)]
        if w:
            x = (1.0 - w) * x + w * s_hi[int(u * n_hi)]
        return x
