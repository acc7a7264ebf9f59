"""Latency-versus-batch-size profiles: measured data with provenance.

A profile holds, per measured batch size, every timed latency sample (ms) and
optionally the peak memory (MB). Service times for the simulator are drawn from
the empirical distribution of the batch size asked for; sizes between measured
ones interpolate the two neighbours' quantile functions linearly (so a profile
that is monotone in batch size stays monotone, and a deterministic profile is a
piecewise-linear curve). Sizes outside the measured range are an error: a
profile is never extrapolated. Reading and writing CSV files is in store.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.errors import InputError


@dataclass(frozen=True)
class Profile:
    """Measured latency samples per batch size, with optional peak memory and provenance."""

    sizes: tuple[int, ...]
    samples_ms: tuple[np.ndarray, ...]  # sorted samples, one array per size
    peak_mem_mb: tuple[float, ...] | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<inline>"
    # board power while a batch of each size runs (W, the median of its samples), where the
    # profiler measured it (NVML) or an estimate carried it over
    power_w: tuple[float, ...] | None = None

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
        for size, watts in zip(self.sizes, self.power_w or (), strict=False):
            if not (math.isfinite(watts) and watts > 0):
                raise InputError(
                    f"power for batch size {size} must be finite and > 0 (got {watts:g})",
                    source=self.source,
                    field="power_w",
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
        power_w: Mapping[int, float] | None = None,
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
        power = None if power_w is None else tuple(float(power_w[s]) for s in sizes)
        return cls(sizes, tuple(arrays), mem, dict(provenance or {}), source, power)

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

    def neighbours(self, size: int) -> tuple[int, int, float]:
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
        lo, hi, w = self.neighbours(size)
        q_lo = float(np.quantile(self.samples_ms[lo], quantile))
        q_hi = float(np.quantile(self.samples_ms[hi], quantile))
        return (1.0 - w) * q_lo + w * q_hi

    def mean_ms(self, size: int) -> float:
        """Mean service time at `size`: the mean of the interpolated distribution."""
        lo, hi, w = self.neighbours(size)
        return (1.0 - w) * float(self.samples_ms[lo].mean()) + w * float(self.samples_ms[hi].mean())

    def second_moment_ms2(self, size: int) -> float:
        """E[S^2] at `size` under the comonotone interpolation used by the sampler."""
        lo, hi, w = self.neighbours(size)
        u = _common_grid(self.samples_ms[lo].size, self.samples_ms[hi].size)
        q = (1.0 - w) * quantile_fn(self.samples_ms[lo], u) + w * quantile_fn(
            self.samples_ms[hi], u
        )
        return float(np.mean(q**2))

    def peak_memory_mb(self, size: int) -> float | None:
        """Peak memory at `size` (linear between measured sizes), or None if not measured."""
        if self.peak_mem_mb is None:
            return None
        lo, hi, w = self.neighbours(size)
        return (1.0 - w) * self.peak_mem_mb[lo] + w * self.peak_mem_mb[hi]

    def sampler(self, rng: np.random.Generator) -> ServiceSampler:
        """A fast draw of service times in seconds for padded batch sizes."""
        return ServiceSampler(self, rng)


def quantile_fn(sorted_samples: np.ndarray, u: np.ndarray) -> np.ndarray:
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
            lo, hi, w = profile.neighbours(size)
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
