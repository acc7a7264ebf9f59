"""Open-loop arrival processes.

Open-loop arrivals do not depend on how the server answers, so a whole run's
arrival times are generated up front as one sorted array. The engine exploits
that: it never schedules an event per arrival. Every generator stops at
`duration_s` (arrivals in [0, duration_s)) or after `count` arrivals, whichever
the caller gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import InputError
from sim.io.files import cell, column_list, read_csv
from sim.workload.phases import phase_offsets_s


@dataclass(frozen=True)
class Arrivals:
    """Sorted arrival times (s) and the stream (source) each request came from."""

    time_s: np.ndarray
    source: np.ndarray
    source_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.time_s.shape != self.source.shape:
            raise ValueError("time_s and source must have the same length")

    def __len__(self) -> int:
        return int(self.time_s.size)


def _check_stop(duration_s: float | None, count: int | None) -> None:
    if (duration_s is None) == (count is None):
        raise ValueError("give exactly one of duration_s and count")


def _renewal(
    draw_gaps: Callable[[int], np.ndarray],
    mean_gap_s: float,
    duration_s: float | None,
    count: int | None,
) -> Arrivals:
    """Cumulative sums of i.i.d. gaps, drawn in blocks until the stop rule is met."""
    _check_stop(duration_s, count)
    if count is not None:
        times = np.cumsum(draw_gaps(count))
    else:
        chunks, t_end = [], 0.0
        block = max(1024, int(1.1 * duration_s / mean_gap_s) + 64)
        while t_end < duration_s:
            gaps = draw_gaps(block)
            chunk = t_end + np.cumsum(gaps)
            chunks.append(chunk)
            t_end = float(chunk[-1])
        times = np.concatenate(chunks)
        times = times[: int(np.searchsorted(times, duration_s, side="left"))]
    return Arrivals(times, np.zeros(times.size, dtype=np.int32))


def poisson_arrivals(
    rng: np.random.Generator,
    rate_rps: float,
    duration_s: float | None = None,
    count: int | None = None,
) -> Arrivals:
    """A Poisson process: exponential gaps with mean 1/rate_rps."""
    return _renewal(lambda n: rng.exponential(1.0 / rate_rps, n), 1.0 / rate_rps, duration_s, count)


def gamma_arrivals(
    rng: np.random.Generator,
    rate_rps: float,
    cv: float,
    duration_s: float | None = None,
    count: int | None = None,
) -> Arrivals:
    """A gamma renewal process: mean gap 1/rate_rps, coefficient of variation `cv`."""
    shape = 1.0 / cv**2
    scale = cv**2 / rate_rps
    return _renewal(lambda n: rng.gamma(shape, scale, n), 1.0 / rate_rps, duration_s, count)


def staggered_phases_s(
    sources: int, rate_hz: float, phase: str, rng: np.random.Generator
) -> np.ndarray:
    """First-request offsets of `sources` periodic streams within one period (phase rules:
    sim.workload.phases)."""
    return phase_offsets_s(phase, sources, 1.0 / rate_hz, rng)


def periodic_arrivals(
    rng: np.random.Generator,
    sources: int,
    rate_hz: float,
    phases_s: Sequence[float] | np.ndarray,
    jitter_s: float = 0.0,
    duration_s: float | None = None,
    count: int | None = None,
) -> Arrivals:
    """`sources` streams, each sending at `rate_hz` from its phase, with Gaussian jitter."""
    _check_stop(duration_s, count)
    phases = np.asarray(phases_s, dtype=float)
    period_s = 1.0 / rate_hz
    if count is not None:
        periods = -(-count // sources) + 2
    else:
        periods = int(np.ceil(duration_s * rate_hz)) + 2
    k = np.arange(periods, dtype=float)
    times = (phases[None, :] + k[:, None] * period_s).ravel()
    source = np.tile(np.arange(sources, dtype=np.int32), periods)
    if jitter_s > 0:
        times = np.maximum(times + rng.normal(0.0, jitter_s, times.size), 0.0)
    order = np.argsort(times, kind="stable")
    times, source = times[order], source[order]
    stop = count if count is not None else int(np.searchsorted(times, duration_s, side="left"))
    return Arrivals(times[:stop], source[:stop])


# a sojourn expected to hold more arrivals than this (a mean_s of hours at a high rate) is
# drawn only up to the horizon or the count; below it, every sojourn is drawn whole
_MAX_SOJOURN_ARRIVALS = 10_000_000


def _poisson_process(
    rng: np.random.Generator, rate_rps: float, window_s: float, needed: int | None
) -> np.ndarray:
    """Arrival times of a Poisson process in [0, window_s): all of them, or the first
    `needed` (exponential gaps), whichever ends first."""
    if needed is None:
        return np.sort(rng.uniform(0.0, window_s, rng.poisson(rate_rps * window_s)))
    times = np.cumsum(rng.exponential(1.0 / rate_rps, needed))
    return times[times < window_s]


def mmpp_arrivals(
    rng: np.random.Generator,
    rates_rps: Sequence[float],
    mean_sojourn_s: Sequence[float],
    duration_s: float | None = None,
    count: int | None = None,
) -> Arrivals:
    """A Markov-modulated Poisson process.

    The modulating chain stays in state i for an exponential time of mean
    mean_sojourn_s[i], then jumps to one of the other states uniformly. It starts
    in its stationary distribution (time share proportional to the mean sojourn),
    so the process is stationary from t = 0. Within a state, arrivals are Poisson
    at that state's rate.
    """
    _check_stop(duration_s, count)
    rates = np.asarray(rates_rps, dtype=float)
    means = np.asarray(mean_sojourn_s, dtype=float)
    n_states = rates.size
    state = int(rng.choice(n_states, p=means / means.sum()))
    t, chunks, total = 0.0, [], 0
    while True:
        stay = rng.exponential(means[state])
        expected = rates[state] * stay
        if expected <= _MAX_SOJOURN_ARRIVALS:
            n = rng.poisson(expected)
            if n:
                chunks.append(t + np.sort(rng.uniform(0.0, stay, n)))
        else:  # a sojourn with more arrivals than a run can hold: draw only those it uses
            window = stay if duration_s is None else min(stay, duration_s - t)
            needed = None if count is None else count - total
            chunks.append(t + _poisson_process(rng, rates[state], window, needed))
            n = chunks[-1].size
        total += n
        t += stay
        if (duration_s is not None and t >= duration_s) or (count is not None and total >= count):
            break
        others = [s for s in range(n_states) if s != state]
        state = others[int(rng.integers(len(others)))]
    times = np.concatenate(chunks) if chunks else np.zeros(0)
    stop = count if count is not None else int(np.searchsorted(times, duration_s, side="left"))
    times = times[:stop]
    return Arrivals(times, np.zeros(times.size, dtype=np.int32))


def trace_arrivals(
    path: str | Path,
    time_column: str = "arrival_s",
    source_column: str | None = None,
    duration_s: float | None = None,
    count: int | None = None,
) -> Arrivals:
    """Arrival times (seconds) from a CSV trace, sorted; an optional source column."""
    import pandas as pd

    _check_stop(duration_s, count)
    path = Path(path)
    frame = read_csv(path, "trace")
    for column in (time_column, source_column):
        if column is not None and column not in frame.columns:
            raise InputError(
                f"no column '{column}' (columns: {column_list(frame.columns)})",
                source=str(path),
            )
    times = pd.to_numeric(frame[time_column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(times) | (times < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{cell(frame, time_column, row)} is not a finite time >= 0 in seconds",
            source=str(path),
            field=time_column,
        )
    names = None
    if source_column is None:
        source = np.zeros(times.size, dtype=np.int32)
    else:
        codes, uniques = pd.factorize(frame[source_column], sort=True)
        source = codes.astype(np.int32)
        names = tuple(str(u) for u in uniques)
    order = np.argsort(times, kind="stable")
    times, source = times[order], source[order]
    stop = count if count is not None else int(np.searchsorted(times, duration_s, side="left"))
    if count is not None and times.size < count:
        raise InputError(
            f"the trace has {times.size} arrivals but the scenario asks for requests: {count}",
            source=str(path),
        )
    return Arrivals(times[:stop], source[:stop], names)
