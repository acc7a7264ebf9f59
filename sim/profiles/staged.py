"""Staged models: a model run as stages (vision, prefix, denoising steps), each measured
as a profile, combined into the cost of a request-level batch, of a prefix, or of one
step. A plain profile is one stage run once."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.profiles.profile import Profile, quantile_fn

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


def scaled_stage(stage: Stage, factor: float) -> Stage:
    """A stage whose every sample (of every variant) costs `factor` times as much."""

    def scaled(profile: Profile) -> Profile:
        return replace(
            profile,
            samples_ms=tuple(samples * factor for samples in profile.samples_ms),
            provenance={**profile.provenance, "cost_factor": factor},
        )

    v = stage.variants
    return Stage(
        stage.name,
        Variants(
            scaled(v.profile),
            None if v.shaped is None else {k: scaled(p) for k, p in v.shaped.items()},
            None if v.after_idle is None else {k: scaled(p) for k, p in v.after_idle.items()},
        ),
        stage.repeat,
    )


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
        counts = [len(p.samples_ms[i]) for p, _ in parts for i in set(p.neighbours(size)[:2])]
        n = math.lcm(*counts)
        if n > _EXACT_GRID:
            n, approximate = _EXACT_GRID, True
        u = (np.arange(n) + 0.5) / n
        total = np.zeros(n)
        for profile, repeat in parts:
            i_lo, i_hi, w = profile.neighbours(size)
            q = quantile_fn(profile.samples_ms[i_lo], u)
            if w:
                q = (1.0 - w) * q + w * quantile_fn(profile.samples_ms[i_hi], u)
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
