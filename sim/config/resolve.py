"""Resolving a parsed scenario: its files read (each profile CSV once) and checked against
its policy, into plain values. A resolved scenario holds no policy object and no traffic:
every run builds its own (sim/engine/pipeline.py), so two runs of it are the same run.

`load` is the one loader: parse (sim/config/parse.py), then resolve. run, sweep (every
point, on every Dask worker), recommend, validate, serve, observe, the API and the
notebooks all use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

from sim.config import checks
from sim.config.parse import Overrides, ParsedScenario, Where, blaming, override_items, parse
from sim.config.policy import min_steps
from sim.config.pricing import Pricing, resolve_pricing
from sim.config.schema import FileStage, InlineProfile, ProfileFile, Scenario, StagedProfile
from sim.core.steps import Steps
from sim.errors import InputError
from sim.policies import registry
from sim.policies.base import Policy
from sim.profiles import store
from sim.profiles.profile import Profile
from sim.profiles.staged import Stage, StagedModel, Variants, scaled_stage


@dataclass(frozen=True)
class ResolvedScenario:
    """A validated scenario with its files read and its checks passed, as plain values."""

    scenario: Scenario
    raw: dict[str, Any]  # the mapping as written (overrides applied), for scenario.yaml
    base: Path  # where relative paths are looked up first
    source: str  # the file (or mapping) in error lines
    model: StagedModel  # the profile as stages (a plain profile is one stage)
    shape_name: str  # the column request shapes come from
    memory_cap: int | None  # the most requests in memory at once (None: no limit)
    launch_sizes: frozenset[int]  # every padded size the policy can launch
    step_level: bool  # the policy batches step by step (continuous batching)
    trusted: bool  # a built-in policy (a plug-in is guarded at every call)
    policy_description: str  # the policy as summaries name it
    floor_profile: Profile | None  # the model run at min_steps, what a policy plans a floor with
    steps: Steps | None  # steps per request, where they are chosen or run one by one
    pricing: Pricing | None = None  # prices and power (summary.json's cost and energy)
    # a fleet mixing inference-time-guided and other robots: what a batch holding a guided
    # request runs (the last stage scaled); None: every batch runs `model`
    guided_model: StagedModel | None = None

    @property
    def profile(self) -> Profile:
        """The cost of a request-level batch (for shape-aware profiles, the largest
        shape's; with idle levels, back to back)."""
        return self.model.whole.profile

    @property
    def shaped(self) -> dict[int, Profile] | None:
        """The profile per request shape, for a shape-aware profile."""
        return self.model.whole.shaped

    @property
    def after_idle(self) -> dict[float, Profile] | None:
        """The profile per idle level (seconds idle before a batch), where measured."""
        return self.model.whole.after_idle

    def path(self, path: str, field: str) -> Path:
        """A file the scenario names, found beside it or in the working directory."""
        return _scenario_file(path, self.base, self.source, field)


def build_policy(resolved: ResolvedScenario, planned_with: Profile | None = None) -> Policy:
    """A fresh policy object of the scenario's `policy:` (policies may learn: every run, and
    every per-replica queue, gets its own), planning with `planned_with` (default: the
    scenario's profile)."""
    profile = planned_with or resolved.profile
    return _new_policy(
        resolved.scenario, resolved.base, resolved.source, profile, resolved.floor_profile
    )


def load(
    source: str | Path | Mapping[str, Any], overrides: Overrides = (), **where: Unpack[Where]
) -> ResolvedScenario:
    """The one way a scenario is loaded: parse it (sim.config.parse.parse), then resolve it."""
    return resolve(parse(source, overrides, **where), override_items(overrides), where)


def resolve(
    parsed: ParsedScenario,
    overrides: list[tuple[str, str]] | None = None,
    where: Mapping[str, Any] | None = None,
) -> ResolvedScenario:
    """Read the scenario's profile (each file once), check the scenario against it, and
    return the plain values a run is built from. An error an override caused names it."""
    option = (where or {}).get("option", "set")
    with blaming(overrides or [], parsed.source, option):
        return _resolve(parsed)


def _resolve(parsed: ParsedScenario) -> ResolvedScenario:
    s, source, base = parsed.scenario, parsed.source, parsed.base
    open_loop = s.workload.kind != "robots"
    if open_loop:  # open loop needs no profile: refused before it is read
        checks.check_requests(s, source, 0.0)
    model, shape_name = _load_model(s, base, source)
    model, guided_model = guided(model, s, source)
    profile = model.whole.profile
    checks.check_work(s, source, profile)
    if not open_loop:
        checks.check_requests(s, source, profile.min_latency_s)
    checks.check_shapes(s, source, profile, model.whole.shaped)
    cap = checks.memory_cap(s, source, profile)
    config = s.policy
    floor = min_steps(config)
    floor_profile = None if floor is None else model.at_steps(floor)
    planned = config.planned_sizes()
    policy = None
    if planned is None:  # the policy says which sizes it launches (a plug-in is built here)
        policy = _new_policy(s, base, source, profile, floor_profile)
        planned = policy.launch_sizes()
    cls = registry.policy_class(config.kind, base)
    step_level = registry.is_step_level(cls)
    checks.check_policy_sizes(s, source, model, set(planned), cap, step_level)
    steps = checks.steps_rule(s, source, model, floor, step_level)
    if policy is None:
        policy = _new_policy(s, base, source, profile, floor_profile)
    return ResolvedScenario(
        scenario=s,
        raw=parsed.data,
        base=base,
        source=source,
        model=model,
        shape_name=shape_name,
        memory_cap=cap,
        launch_sizes=frozenset(planned),
        step_level=step_level,
        trusted=registry.is_builtin(config.kind),
        policy_description=registry.describe(policy, config.kind, config.params),
        floor_profile=floor_profile,
        steps=steps,
        pricing=resolve_pricing(s, profile, source),
        guided_model=guided_model,
    )


def _new_policy(
    s: Scenario, base: Path, source: str, profile: Profile, floor_profile: Profile | None
) -> Policy:
    config = s.policy
    try:
        return registry.build(config.kind, config.params, profile, base, floor_profile)
    except InputError as exc:
        raise InputError(exc.message, source=source, field=exc.field) from None


# ---- the profile ---------------------------------------------------------------------------
def resolve_path(path: str, base: Path, field: str) -> Path:
    """A relative path is looked up beside the scenario file, then in the working directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    places = list(dict.fromkeys([base, Path.cwd()]))
    for place in places:
        try:
            if (place / p).exists():
                return place / p
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise InputError(
                f"'{path[:80]}' is not a usable path ({exc.strerror})", field=field
            ) from None
    looked = " and ".join(str(place) for place in places)
    raise InputError(f"file '{path}' not found (looked in {looked})", field=field)


def _scenario_file(path: str, base: Path, source: str, field: str) -> Path:
    """resolve_path, its error a line of the scenario (`source`)."""
    try:
        return resolve_path(path, base, field)
    except InputError as exc:
        raise InputError(str(exc), source=source) from None


class _Tables:
    """The profile CSVs of one scenario, each read once however many stages select from it."""

    def __init__(self, base: Path, source: str):
        self.base, self.source = base, source
        self._read: dict[Path, store.ProfileTable] = {}

    def find(self, path: str, field: str) -> Path:
        return _scenario_file(path, self.base, self.source, field)

    def table(self, path: Path) -> store.ProfileTable:
        if path not in self._read:
            self._read[path] = store.read_table(path)
        return self._read[path]


def guided(model: StagedModel, s: Scenario, source: str) -> tuple[StagedModel, StagedModel | None]:
    """Inference-time RTC guidance (a backward pass per denoising step): the last stage of a
    staged profile costs `guidance_step_factor` times as much in a batch holding any guided
    request. Returns the model batches run (scaled when every robot is guided alike) and,
    for a fleet mixing guided and unguided robots, the guided model its guided batches run."""
    if s.workload.kind != "robots":
        return model, None
    factors = {
        g.guidance_step_factor if g.mode == "rtc" and g.guidance == "inference" else 1.0
        for g in s.workload.groups
    }
    if factors == {1.0}:
        return model, None
    if len(factors - {1.0}) > 1:
        raise InputError(
            "the guided robot groups must share guidance_step_factor (got "
            f"{', '.join(f'{f:g}' for f in sorted(factors - {1.0}))}): a batch pays one "
            "guided cost",
            source=source,
            field="workload.guidance_step_factor",
        )
    if len(model.stages) == 1:
        raise InputError(
            "guidance_step_factor needs a staged profile (profile: {stages: [...]}), whose "
            "last stage is the denoising step it multiplies; this profile is one stage",
            source=source,
            field="workload.guidance_step_factor",
        )
    (factor,) = factors - {1.0}
    *first, last = model.stages
    scaled = StagedModel.of([*first, scaled_stage(last, factor)], source)
    return (scaled, None) if len(factors) == 1 else (model, scaled)


def _load_model(s: Scenario, base: Path, source: str) -> tuple[StagedModel, str]:
    """The scenario's profile as stages (a plain profile is one), combined into the cost
    of a request-level batch with its variants (per shape, per idle level), and the column
    request shapes come from."""
    spec = s.profile
    if spec is None:
        raise InputError(
            "profile: none given; batchsim validate measures one from model:, or set profile:",
            source=source,
        )
    tables = _Tables(base, source)
    if isinstance(spec, StagedProfile):
        stages = [
            Stage(stage.name, _variants(stage, tables, f"profile.stages.{i}"), stage.repeat)
            for i, stage in enumerate(spec.stages)
        ]
        model = StagedModel.of(stages, source)
    else:
        model = _file_stages(spec, tables) or StagedModel.single(_variants(spec, tables))
    declared = spec.stages if isinstance(spec, StagedProfile) else [spec]
    columns = sorted({d.shape for d in declared if getattr(d, "shape", None)})
    if len(columns) > 1:
        raise InputError(
            f"the stages take request shapes from different columns ({', '.join(columns)})",
            source=source,
            field="profile.stages",
        )
    return model, columns[0] if columns else "shape"


def _file_stages(spec: Any, tables: _Tables) -> StagedModel | None:
    """A CSV whose sidecar lists its stages (and no `stage:` selected): a staged model."""
    if isinstance(spec, InlineProfile):
        return None
    path, select = (spec, {}) if isinstance(spec, str) else (spec.path, spec.select)
    if "stage" in select:
        return None
    listed = tables.table(tables.find(path, "profile")).stages()
    if not listed:
        return None
    shape = None if isinstance(spec, str) else spec.shape
    stages = []
    for name, repeat in listed:
        entry = FileStage.model_validate(
            {**select, "stage": name, "name": name, "path": path, "repeat": repeat, "shape": shape}
        )
        stages.append(Stage(name, _variants(entry, tables), repeat))
    return StagedModel.of(stages, tables.source)


def _variants(spec: Any, tables: _Tables, field: str = "profile") -> Variants:
    """One profile source (a path, a file with selections, inline figures) with its
    variants: per shape, or per idle level."""
    source = tables.source
    if isinstance(spec, InlineProfile):
        try:
            profile = Profile.from_inline(spec.batch_size, spec.latency_ms, spec.peak_mem_mb)
        except InputError as exc:
            inner = (exc.field or "profile").removeprefix("profile")
            raise InputError(exc.message, source=source, field=field + inner) from None
        return Variants(profile)
    path, select = (spec, {}) if isinstance(spec, str) else (spec.path, spec.select)
    table = tables.table(tables.find(path, field))
    after_idle = store.by_idle_level(table, select)
    if isinstance(spec, ProfileFile) and spec.shape is not None:
        if after_idle is not None:
            raise InputError(
                "a shape-aware profile with several idle_ms levels is not supported; "
                "choose one level with profile: {path: ..., idle_ms: VALUE}",
                source=source,
                field=f"{field}.shape",
            )
        shaped = store.by_shape(table, spec.shape, select)
        # plans, memory and checks use the largest shape: the costliest batches
        return Variants(shaped[max(shaped)], shaped=shaped)
    # with idle levels, plans and checks use the smallest (back to back)
    profile = store.selected(table, select)
    for level_s, variant in (after_idle or {}).items():
        if variant.sizes != profile.sizes:
            raise InputError(
                f"idle_ms {level_s * 1000:g} measured batch sizes {list(variant.sizes)}, "
                f"not the same as the other levels ({list(profile.sizes)})",
                source=str(table.path),
                field="idle_ms",
            )
    return Variants(profile, after_idle=after_idle)


__all__ = ["ResolvedScenario", "build_policy", "load", "resolve", "resolve_path"]
