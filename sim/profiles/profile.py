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
from sim.io.files import cell, column_list, read_csv, read_json

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
        frame, provenance = read_with_provenance(Path(path))
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

        frame, provenance = read_with_provenance(Path(path))
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
            meta = {**provenance, "selected": chosen}
            variants[int(v)] = cls.from_frame(frame, chosen, meta, str(path))
        return variants

    @classmethod
    def after_idle_from_csv(
        cls, path: str | Path, select: Mapping[str, Any] | None = None
    ) -> dict[float, Profile] | None:
        """One profile per idle level (seconds idle before the call -> samples), or None when
        the file measured one level only or the scenario selected one."""
        frame, provenance = read_with_provenance(Path(path))
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


def read_with_provenance(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
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
        return self.at(padded_size, self.uniform())

    def uniform(self) -> float:
        """The next uniform of this sampler's stream (drawn in blocks)."""
        if self._i >= len(self._u):
            self._u = self._rng.random(self._BLOCK).tolist()
            self._i = 0
        u = self._u[self._i]
        self._i += 1
        return u

    def at(self, padded_size: int, u: float) -> float:
        """The draw at `padded_size` for the uniform `u` (its quantile function at u)."""
        s_lo, n_lo, s_hi, n_hi, w = self._mix[padded_size]
        x = s_lo[int(u * n_lo)]
        if w:
            x = (1.0 - w) * x + w * s_hi[int(u * n_hi)]
        return x


# ---- staged models --------------------------------------------------------------------------
# the sidecar keys that say which model ran where: the stages of one model must agree on them
IDENTITY_KEYS = (
    "model",
    "size",
    "params",
    "config_hash",
    "device",
    "gpu",
    "host_cpu",
    "dtype",
    "torch",
    "mode",
    "compile",
    "cuda_graphs",
    "threads",
)
# the largest quantile grid a combined size is built on; past it the grid is approximate
_EXACT_GRID = 4096


@dataclass(frozen=True)
class Variants:
    """A profile with its variants, when the file has them: per request shape (`shaped`),
    or per idle level in seconds (`after_idle`), never both."""

    profile: Profile
    shaped: dict[int, Profile] | None = None
    after_idle: dict[float, Profile] | None = None


@dataclass(frozen=True)
class Stage:
    """One stage of a staged model: its measured variants, run `repeat` times per batch."""

    name: str
    variants: Variants
    repeat: int = 1


@dataclass(frozen=True)
class StagedModel:
    """A model as stages (a plain profile is one stage run once).

    `whole`: a request-level batch through every stage; `prefix`: every stage but the last
    (None for one stage), what continuous batching runs once per newly admitted request;
    `step`: the last stage, run once per iteration; `steps`: its repeat, K.
    """

    stages: tuple[Stage, ...]
    whole: Variants
    prefix: Variants | None
    step: Variants

    @property
    def steps(self) -> int:
        return self.stages[-1].repeat

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def at_steps(self, steps: int) -> Profile:
        """A request-level batch through every stage with the last run `steps` times."""
        parts = [(s.variants.profile, s.repeat) for s in self.stages[:-1]]
        parts.append((self.step.profile, steps))
        whole = self.whole.profile
        return combined(parts, whole.provenance, whole.source)

    @classmethod
    def single(cls, variants: Variants) -> StagedModel:
        """A plain profile: one stage, run once."""
        return cls((Stage("model", variants, 1),), variants, None, variants)

    @classmethod
    def of(cls, stages: Sequence[Stage], source: str) -> StagedModel:
        """Stages combined (their provenance must agree): see `combined`."""
        stages = tuple(stages)
        provenance = agreed_provenance(stages, source)
        whole = combine_variants(stages, provenance, source)
        prefix = None
        if len(stages) > 1:
            prefix = combine_variants(stages[:-1], provenance, source)
        return cls(stages, whole, prefix, stages[-1].variants)


def combined(
    parts: Sequence[tuple[Profile, int]], provenance: Mapping[str, Any], source: str
) -> Profile:
    """The cost of one call through every part: at batch size b, the sum over parts of
    `repeat` x one draw of that part at b.

    A call's parts share one uniform (comonotone: a slow call is slow throughout, as its
    stages share the host and GPU state), so the sum's quantiles are the sums of the parts'
    quantiles; the result is a plain profile whose draws, medians and plans are exactly
    those of the stages. Its sizes are every part's measured size within the range all
    parts measured (between them each part is linear, so the sum is too); its samples are
    the sum's quantile function on a grid fine enough to be exact (the lcm of the sample
    counts, up to 4096 points; beyond that a 4096-point grid, noted in the provenance).
    Peak memory is the largest part's, where any part measured it.
    """
    if len(parts) == 1 and parts[0][1] == 1:
        return parts[0][0]
    lo = max(p.min_size for p, _ in parts)
    hi = min(p.max_size for p, _ in parts)
    if lo > hi:
        ranges = ", ".join(f"{p.min_size}..{p.max_size}" for p, _ in parts)
        raise InputError(
            f"the stages measure no batch size in common ({ranges})",
            source=source,
            field="profile.stages",
        )
    sizes = sorted({s for p, _ in parts for s in p.sizes if lo <= s <= hi})
    samples: dict[int, np.ndarray] = {}
    memory: dict[int, float] = {}
    approximate = False
    for size in sizes:
        counts = [len(p.samples_ms[i]) for p, _ in parts for i in set(p._neighbours(size)[:2])]
        n = math.lcm(*counts)
        if n > _EXACT_GRID:
            n, approximate = _EXACT_GRID, True
        u = (np.arange(n) + 0.5) / n
        total = np.zeros(n)
        for profile, repeat in parts:
            i_lo, i_hi, w = profile._neighbours(size)
            q = _quantile_fn(profile.samples_ms[i_lo], u)
            if w:
                q = (1.0 - w) * q + w * _quantile_fn(profile.samples_ms[i_hi], u)
            total += repeat * q
        samples[size] = total
        measured = [p.peak_memory_mb(size) for p, _ in parts if p.peak_mem_mb is not None]
        if measured:
            memory[size] = max(measured)
    meta = dict(provenance)
    if approximate:
        meta["stage_grid"] = f"approximate ({_EXACT_GRID} quantiles per size)"
    return Profile.from_samples(samples, memory or None, meta, source)


def combine_variants(
    stages: Sequence[Stage], provenance: Mapping[str, Any], source: str
) -> Variants:
    """`combined` for each variant: per shape (a stage without the shape column costs the
    same at every shape), or per idle level (a stage uses the largest of its own levels at
    or below the level, else its smallest; a stage without levels, its profile)."""
    whole = combined([(s.variants.profile, s.repeat) for s in stages], provenance, source)
    shaped = [s.variants.shaped for s in stages if s.variants.shaped is not None]
    idle = [s.variants.after_idle for s in stages if s.variants.after_idle is not None]
    if shaped and idle:
        raise InputError(
            "a staged profile with shapes and several idle_ms levels is not supported; "
            "choose one level with idle_ms: VALUE",
            source=source,
            field="profile.shape",
        )
    if shaped:
        values = set(shaped[0])
        for other in shaped[1:]:
            if set(other) != values:
                raise InputError(
                    f"the stages measure different shapes ({sorted(values)} and {sorted(other)})",
                    source=source,
                    field="profile.shape",
                )
        per_shape = {
            v: combined(
                [((s.variants.shaped or {}).get(v, s.variants.profile), s.repeat) for s in stages],
                provenance,
                source,
            )
            for v in sorted(values)
        }
        return Variants(per_shape[max(per_shape)], shaped=per_shape)
    if idle:
        levels = sorted({level for own in idle for level in own})

        def at(variants: Variants, level: float) -> Profile:
            own = variants.after_idle
            if own is None:
                return variants.profile
            below = [x for x in own if x <= level]
            return own[max(below) if below else min(own)]

        per_level = {
            level: combined([(at(s.variants, level), s.repeat) for s in stages], provenance, source)
            for level in levels
        }
        return Variants(per_level[levels[0]], after_idle=per_level)
    return Variants(whole)


def agreed_provenance(stages: Sequence[Stage], source: str) -> dict[str, Any]:
    """The provenance of a staged model: its measured stages must agree on every identity
    key both name (inline stages are the user's own figures and are not checked); the
    result is the first measured stage's sidecar with the list of stages."""
    measured = [s for s in stages if s.variants.profile.provenance.get("source") != "inline"]
    known = [s for s in measured if s.variants.profile.provenance.get("provenance") != "unknown"]
    if known and len(known) < len(measured):
        bare = next(s for s in measured if s not in known)
        raise InputError(
            f"stage '{bare.name}' ({bare.variants.profile.source}) has no provenance sidecar "
            f"but stage '{known[0].name}' has: the stages of one model must come from one "
            "measurement setup",
            source=source,
            field="profile.stages",
        )
    first = known[0] if known else None
    for other in known[1:]:
        a, b = first.variants.profile.provenance, other.variants.profile.provenance
        for key in IDENTITY_KEYS:
            if key in a and key in b and a[key] != b[key]:
                raise InputError(
                    f"the stages' provenance disagrees on {key}: stage '{first.name}' has "
                    f"{a[key]!r}, stage '{other.name}' has {b[key]!r}",
                    source=source,
                    field="profile.stages",
                )
    base = dict(first.variants.profile.provenance) if first else {"source": "inline"}
    base.pop("selected", None)
    base.pop("stage", None)
    base["stages"] = [
        {"name": s.name, "repeat": s.repeat, "source": s.variants.profile.source} for s in stages
    ]
    return base


def sidecar_stages(path: Path) -> list[tuple[str, int]] | None:
    """The stages a profile CSV's sidecar lists (`"stages": [{"name", "repeat"}, ...]`, as
    `batchsim profile --stages` writes them), or None for a one-stage profile."""
    meta = meta_path_for(path)
    if not meta.exists():
        return None
    provenance = read_json(meta, "provenance sidecar")
    stages = provenance.get("stages") if isinstance(provenance, dict) else None
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
            source=str(meta),
            field="stages",
        )
    return [(s["name"], s.get("repeat", 1)) for s in stages]
