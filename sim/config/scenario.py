"""Scenario YAML: the pydantic schema, loading, `--set` overrides and clear errors.

Every key carries its unit (`_s`, `_ms`, `_hz`, `_rps`, `_mb`). Unknown keys are
errors (a typo must not silently fall back to a default). Every failure becomes
one `InputError` line naming the file, the dotted field and what is allowed.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict, Unpack

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from sim.config.limits import BatchSize, ClientCount, Limits, ReplicaCount, check
from sim.core.steps import Steps
from sim.errors import InputError
from sim.io import files
from sim.policies import Policy
from sim.policies.registry import PLUGIN, PluginPolicyConfig, PolicySpec, Strict, is_step_level
from sim.profiles.profile import Profile, Stage, StagedModel, Variants, sidecar_stages
from sim.workload import open as open_loop
from sim.workload.open import Arrivals
from sim.workload.phases import phase_offset_s
from sim.workload.robots import RobotClient, RobotParams


# ---- profile -----------------------------------------------------------------------------
class ProfileFile(BaseModel):
    """`profile: {path: FILE.csv, COLUMN: VALUE, ...}`: a CSV with a variant selected, or with
    `shape: COLUMN`, every value of that column kept: each batch then costs the variant of the
    largest request shape in it. A CSV whose sidecar lists `stages` (and has a `stage`
    column) is a staged model, unless a `stage: NAME` selects one of them."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True, allow_inf_nan=False)
    path: str
    shape: str | None = None
    # memory each request in flight holds (its KV cache), in place of the peak_mem_mb slope
    kv_mb_per_request: NonNegativeFloat | None = None

    @property
    def select(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class InlineProfile(Strict):
    """`profile: {batch_size: [...], latency_ms: [...]}`: a value or a list of samples per size."""

    batch_size: list[BatchSize] = Field(min_length=1)
    latency_ms: list[PositiveFloat | list[PositiveFloat]] = Field(min_length=1)
    peak_mem_mb: list[NonNegativeFloat] | None = None
    kv_mb_per_request: NonNegativeFloat | None = None


def _no_stage_kv(stage: Any) -> Any:
    if stage.kv_mb_per_request is not None:
        raise ValueError("kv_mb_per_request belongs to the profile, not to one stage")
    return stage


class FileStage(ProfileFile):
    """A stage measured in a CSV: `{name, path, repeat, shape: COLUMN, COLUMN: VALUE, ...}`
    (a CSV with a `stage` column selects `stage: NAME` unless the entry selects otherwise)."""

    name: str = Field(min_length=1)
    repeat: PositiveInt = 1
    check_kv = model_validator(mode="after")(_no_stage_kv)


class InlineStage(InlineProfile):
    """A stage written inline: `{name, batch_size: [...], latency_ms: [...], repeat}`."""

    name: str = Field(min_length=1)
    repeat: PositiveInt = 1
    check_kv = model_validator(mode="after")(_no_stage_kv)


def _stage_tag(value: Any) -> str:
    return "file" if isinstance(value, dict) and "path" in value else "inline"


StageSpec = Annotated[
    Annotated[FileStage, Tag("file")] | Annotated[InlineStage, Tag("inline")],
    Discriminator(_stage_tag),
]


class StagedProfile(Strict):
    """`profile: {stages: [...]}`: a model run as stages, in order. A request-level batch of b
    costs the sum over stages of `repeat` x one draw of that stage at b; continuous batching
    runs the last stage once per iteration (docs/semantics.md, "Staged models")."""

    stages: list[StageSpec]
    kv_mb_per_request: NonNegativeFloat | None = None

    @field_validator("stages")
    @classmethod
    def _named(cls, stages: list[Any]) -> list[Any]:
        if not stages:
            raise ValueError("a staged profile needs at least one stage")
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be distinct (got {', '.join(names)})")
        return stages


def _profile_tag(value: Any) -> str:
    if isinstance(value, dict):
        if "stages" in value:
            return "staged"
        return "file" if "path" in value else "inline"
    return "file_path"


ProfileSpec = Annotated[
    Annotated[str, Tag("file_path")]
    | Annotated[ProfileFile, Tag("file")]
    | Annotated[InlineProfile, Tag("inline")]
    | Annotated[StagedProfile, Tag("staged")],
    Discriminator(_profile_tag),
]


# ---- workloads ---------------------------------------------------------------------------
class PoissonWorkload(Strict):
    kind: Literal["poisson"]
    rate_rps: PositiveFloat

    def arrivals(
        self, rng: np.random.Generator, duration_s: float | None, count: int | None, base: Path
    ) -> Arrivals:
        return open_loop.poisson_arrivals(rng, self.rate_rps, duration_s, count)

    def events(self, duration_s: float, min_service_s: float) -> tuple[float, str]:
        return self.rate_rps * duration_s, "workload.rate_rps"


class GammaWorkload(Strict):
    kind: Literal["gamma"]
    rate_rps: PositiveFloat
    # the coefficient of variation of the gaps (1 = Poisson); beyond these bounds the gamma
    # draws underflow to 0 or overflow
    cv: float = Field(ge=0.001, le=1000.0)

    def arrivals(
        self, rng: np.random.Generator, duration_s: float | None, count: int | None, base: Path
    ) -> Arrivals:
        return open_loop.gamma_arrivals(rng, self.rate_rps, self.cv, duration_s, count)

    def events(self, duration_s: float, min_service_s: float) -> tuple[float, str]:
        return self.rate_rps * duration_s, "workload.rate_rps"


class PeriodicWorkload(Strict):
    kind: Literal["periodic"]
    sources: ClientCount = 1
    rate_hz: PositiveFloat
    phases_ms: list[NonNegativeFloat] | None = None
    phase: Literal["staggered", "synchronized", "random"] = "staggered"
    jitter_ms: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _phases(self) -> PeriodicWorkload:
        if self.phases_ms is not None:
            if "phase" in self.model_fields_set:
                raise ValueError("give phases_ms or phase, not both")
            if len(self.phases_ms) != self.sources:
                raise ValueError(
                    f"phases_ms needs one value per source ({self.sources}), got {len(self.phases_ms)}"
                )
        return self

    def arrivals(
        self, rng: np.random.Generator, duration_s: float | None, count: int | None, base: Path
    ) -> Arrivals:
        if self.phases_ms is not None:
            phases_s = np.asarray(self.phases_ms) / 1000.0
        else:
            phases_s = open_loop.staggered_phases_s(self.sources, self.rate_hz, self.phase, rng)
        return open_loop.periodic_arrivals(
            rng, self.sources, self.rate_hz, phases_s, self.jitter_ms / 1000.0, duration_s, count
        )

    def events(self, duration_s: float, min_service_s: float) -> tuple[float, str]:
        return self.sources * self.rate_hz * duration_s, "workload.rate_hz"


class MmppState(Strict):
    rate_rps: NonNegativeFloat
    mean_s: PositiveFloat = Field(description="mean sojourn in this state")


class MmppWorkload(Strict):
    kind: Literal["mmpp"]
    states: list[MmppState] = Field(min_length=2)

    @model_validator(mode="after")
    def _some_traffic(self) -> MmppWorkload:
        if all(s.rate_rps == 0 for s in self.states):
            raise ValueError("at least one state needs rate_rps > 0")
        return self

    def arrivals(
        self, rng: np.random.Generator, duration_s: float | None, count: int | None, base: Path
    ) -> Arrivals:
        return open_loop.mmpp_arrivals(
            rng,
            [s.rate_rps for s in self.states],
            [s.mean_s for s in self.states],
            duration_s,
            count,
        )

    def events(self, duration_s: float, min_service_s: float) -> tuple[float, str]:
        # arrivals at the highest rate, plus the chain's switches (n states / total mean sojourn)
        sojourn_s = sum(s.mean_s for s in self.states)
        switches = duration_s * len(self.states) / sojourn_s
        return max(s.rate_rps for s in self.states) * duration_s + switches, "workload.states"


class TraceWorkload(Strict):
    kind: Literal["trace"]
    path: str
    time_column: str = "arrival_s"
    source_column: str | None = None

    def arrivals(
        self, rng: np.random.Generator, duration_s: float | None, count: int | None, base: Path
    ) -> Arrivals:
        path = resolve_path(self.path, base, "workload.path")
        return open_loop.trace_arrivals(
            path, self.time_column, self.source_column, duration_s, count
        )

    def events(self, duration_s: float, min_service_s: float) -> tuple[float, str]:
        return 0.0, "workload.path"  # a trace holds what it holds: its file is read in full


class NetworkMs(Strict):
    """One-way network delays added to every request (ms); jitter is a Gaussian std, clipped at 0."""

    uplink: NonNegativeFloat = 0.0
    downlink: NonNegativeFloat = 0.0
    jitter: NonNegativeFloat = 0.0


class RobotGroup(Strict):
    """Robots that share one control loop configuration."""

    name: str | None = None
    count: ClientCount
    shape: PositiveInt | None = None  # request shape (e.g. cameras) with a shape-aware profile
    control_hz: PositiveFloat
    chunk: PositiveInt
    execute: PositiveInt | None = None  # default: the whole chunk
    mode: Literal["sync", "async"] = "sync"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    start: Literal["synchronized", "staggered", "random"] = "staggered"
    jitter_ms: NonNegativeFloat = 0.0
    network_ms: NetworkMs = NetworkMs()

    @model_validator(mode="after")
    def _execute_within_chunk(self) -> RobotGroup:
        if self.execute is not None and self.execute > self.chunk:
            raise ValueError(f"execute ({self.execute}) cannot exceed chunk ({self.chunk})")
        if self.mode == "sync" and "threshold" in self.model_fields_set:
            # a key that would do nothing is refused, not silently ignored
            raise ValueError(
                "threshold applies to async robots (when they ask for the next chunk); a "
                "sync robot asks when its chunk runs out: drop threshold or set mode: async"
            )
        return self

    @property
    def actions_per_chunk(self) -> int:
        return self.execute if self.execute is not None else self.chunk

    def requests_per_s(self, min_service_s: float) -> float:
        """The most requests a second this group can send: each robot has one request in
        flight at a time, answered no sooner than the fastest batch, and a sync robot
        also moves through its executed actions before it asks again."""
        motion_s = self.actions_per_chunk / self.control_hz
        gap_s = min_service_s + (motion_s if self.mode == "sync" else 0.0)
        return self.count / gap_s


class RobotsWorkload(Strict):
    """A closed-loop fleet: one group's keys inline, or `groups: [...]` (inline keys then act
    as every group's defaults)."""

    kind: Literal["robots"]
    groups: list[RobotGroup] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _inline_group(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        defaults = {k: v for k, v in data.items() if k not in ("kind", "groups")}
        groups = data.get("groups")
        if groups is None:
            return {"kind": data.get("kind"), "groups": [defaults]}
        if not isinstance(groups, list):
            return data
        merged = [{**defaults, **g} if isinstance(g, dict) else g for g in groups]
        return {"kind": data.get("kind"), "groups": merged}

    def clients(
        self, rng: np.random.Generator, warmup_s: float, slo_ms: float | None
    ) -> list[RobotClient]:
        """One RobotClient per robot, numbered across groups in order."""
        clients: list[RobotClient] = []
        for g_index, group in enumerate(self.groups):
            execute = group.actions_per_chunk
            motion_s = execute / group.control_hz  # one period of the robot's loop
            for r in range(group.count):
                start_s = phase_offset_s(group.start, r, group.count, motion_s, rng)
                params = RobotParams(
                    control_hz=group.control_hz,
                    chunk=group.chunk,
                    execute=execute,
                    mode=group.mode,
                    threshold=group.threshold,
                    start_s=start_s,
                    jitter_s=group.jitter_ms / 1000.0,
                    uplink_s=group.network_ms.uplink / 1000.0,
                    downlink_s=group.network_ms.downlink / 1000.0,
                    network_jitter_s=group.network_ms.jitter / 1000.0,
                    slo_s=None if slo_ms is None else slo_ms / 1000.0,
                    group=group.name or f"group{g_index}",
                    shape=group.shape,
                )
                child = np.random.default_rng(rng.integers(2**63))
                clients.append(RobotClient(len(clients), params, child, warmup_s))
        return clients

    def events(self, duration_s: float, min_service_s: float) -> tuple[float, str]:
        rate = sum(g.requests_per_s(min_service_s) for g in self.groups)
        return rate * duration_s, "workload.count"


Workload = Annotated[
    PoissonWorkload
    | GammaWorkload
    | PeriodicWorkload
    | MmppWorkload
    | TraceWorkload
    | RobotsWorkload,
    Field(discriminator="kind"),
]


# ---- cluster, policy, admission, slo -----------------------------------------------------
class Cluster(Strict):
    replicas: ReplicaCount = 1
    queue: Literal["shared", "per-replica"] = "shared"
    dispatch: Literal["round-robin", "shortest-queue", "least-work", "power-of-two"] | None = None
    memory_mb: PositiveFloat | None = None
    # how late a waiting server wakes: timers and event waits of a real server fire late
    # (batchsim validate measures it in the live run)
    wake_latency_ms: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _dispatch_needs_queues(self) -> Cluster:
        if self.dispatch is not None and self.queue != "per-replica":
            raise ValueError("dispatch applies to queue: per-replica only")
        return self

    @property
    def dispatcher(self) -> str | None:
        """The dispatcher in use: None for a shared queue, round-robin by default."""
        if self.queue == "shared":
            return None
        return self.dispatch or "round-robin"


class Admission(Strict):
    max_queue: PositiveInt | None = None
    timeout_ms: PositiveFloat | None = None


class Slo(Strict):
    latency_ms: PositiveFloat | None = None


class RequestClass(Strict):
    """A class of requests: its share of the traffic, latency SLO and priority (higher first)."""

    name: str = Field(min_length=1)
    share: PositiveFloat
    latency_ms: PositiveFloat | None = None
    priority: int = 0


class ModelSection(Strict):
    """`model:` the real model behind the profile, for `batchsim validate` (live replay)."""

    name: str = Field(min_length=1)  # pi0 | openvla | act | package.module:factory
    size: Literal["tiny", "small", "full"] = "tiny"
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    cameras: PositiveInt = 1
    threads: PositiveInt | None = 1
    cuda_graphs: bool = False  # batchsim serve: replay a CUDA graph per batch size

    @model_validator(mode="after")
    def _graphs_on_cuda(self) -> ModelSection:
        if self.cuda_graphs and self.device != "cuda":
            raise ValueError("cuda_graphs needs device: cuda")
        return self


class ObservationSection(Strict):
    """`observation:` what `batchsim observe` sends each request, laid out as openpi's ALOHA
    examples are: `images` (one uint8 [3, H, W] array per camera), `state` and `prompt`."""

    cameras: int = Field(1, ge=0, le=16)
    image_size: int = Field(224, ge=1, le=2048)  # H = W, pixels
    state_dim: int = Field(14, ge=1, le=65_536)
    prompt: str = Field("pick up the cube", max_length=10_000)


class SweepSection(Strict):
    """`sweep:` in a scenario: the grid (dotted key -> values) and replications of `batchsim
    sweep` (`run` validates it too, and ignores it)."""

    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    replications: PositiveInt = 1


class Scenario(Strict):
    """A whole simulation: traffic, cluster, policy, admission and SLO."""

    name: str = "scenario"
    seed: NonNegativeInt = 0
    duration_s: PositiveFloat | None = None
    requests: PositiveInt | None = None
    warmup_s: NonNegativeFloat = 0.0
    profile: ProfileSpec | None = None  # required, unless `model` lets validate measure one
    model: ModelSection | None = None
    observation: ObservationSection | None = None  # what `batchsim observe` sends
    workload: Workload
    cluster: Cluster = Cluster()
    policy: PolicySpec
    admission: Admission = Admission()
    slo: Slo = Slo()
    classes: list[RequestClass] | None = Field(None, min_length=1)
    # open loop with a shape-aware profile: {VALUE: share}, e.g. {1: 0.7, 3: 0.3} cameras
    request_shapes: dict[PositiveInt, PositiveFloat] | None = Field(None, min_length=1)
    sweep: SweepSection | None = None  # used by `batchsim sweep`, ignored by `run`
    limits: Limits = Limits()  # the most work the scenario may ask for (sim/limits.py)

    @model_validator(mode="after")
    def _classes(self) -> Scenario:
        if self.classes is not None:
            names = [c.name for c in self.classes]
            if len(set(names)) != len(names):
                raise ValueError("classes: names must be distinct")
        closed_loop = self.workload.kind == "robots"
        if closed_loop and self.request_shapes is not None:
            raise ValueError("request_shapes is for open-loop workloads; robot groups set shape")
        if closed_loop and self.classes is not None:
            raise ValueError("classes apply to open-loop workloads; robots set their own deadlines")
        if self.policy.kind == "deadline":
            has_slo = self.slo.latency_ms is not None or any(
                c.latency_ms is not None for c in self.classes or []
            )
            if not (has_slo or closed_loop):
                raise ValueError(
                    "the deadline policy needs slo.latency_ms or classes with latency_ms"
                )
        return self

    @model_validator(mode="after")
    def _profile_or_model(self) -> Scenario:
        if self.profile is None and self.model is None:
            raise ValueError(
                "profile: required field is missing (or give model: for batchsim validate)"
            )
        return self

    @model_validator(mode="after")
    def _stop_rule(self) -> Scenario:
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("give exactly one of duration_s and requests")
        if self.duration_s is not None and self.warmup_s >= self.duration_s:
            raise ValueError(
                f"warmup_s ({self.warmup_s}) must be shorter than duration_s ({self.duration_s})"
            )
        return self


# ---- loading -----------------------------------------------------------------------------
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


_UNION_FIELDS = frozenset({"profile", "workload", "policy"})


def _visible_loc(loc: tuple[Any, ...]) -> list[Any]:
    """The field path as the user wrote it: without the union tag pydantic inserts after
    profile/workload/policy (policy.dynamic), the labels of union members it tried
    (latency_ms.0.constrained-float, list[constrained-float]) and its [key] marker."""
    if len(loc) > 1 and loc[0] in _UNION_FIELDS:
        tags = {_tag_of(c) for c in _model_classes(Scenario.model_fields[loc[0]].annotation)}
        if loc[1] in tags | {"file_path"}:
            loc = (loc[0], *loc[2:])
    if loc[:2] == ("profile", "stages") and len(loc) > 3 and loc[3] in ("file", "inline"):
        loc = (*loc[:3], *loc[4:])  # the stage's own union tag
    return [p for p in loc if not (isinstance(p, str) and re.search(r"[\[\]()-]", p))]


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class whose fields an error location points into (to list the allowed keys)."""
    model: Any = Scenario
    parts = list(loc[:-1])
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(part, int):
            i += 1
            continue
        if model is None or part not in model.model_fields:
            return None
        candidates = _model_classes(model.model_fields[part].annotation)
        if len(candidates) > 1 and i + 1 < len(parts):
            tagged = [c for c in candidates if _tag_of(c) == parts[i + 1]]
            if tagged:
                candidates = tagged
                i += 1
        model = candidates[0] if candidates else None
        i += 1
    return model


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [c for arg in typing.get_args(annotation) for c in _model_classes(arg)]


def _tag_of(cls: type[BaseModel]) -> str | None:
    if cls is PluginPolicyConfig:
        return "plugin"
    field = cls.model_fields.get("kind")
    if field is not None:
        return typing.get_args(field.annotation)[0]
    return {
        ProfileFile: "file",
        InlineProfile: "inline",
        StagedProfile: "staged",
        FileStage: "file",
        InlineStage: "inline",
    }.get(cls)


def _format_error(exc: ValidationError) -> tuple[str, str]:
    """(dotted field, message) for the first error, in words a user can act on."""
    errors = exc.errors()
    # a misspelt key often also leaves a required one missing: name the typo first
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    field = ".".join(str(p) for p in _visible_loc(loc))
    etype = err["type"]
    if len(loc) > 1 and loc[-1] == "[key]":  # a mapping key of the wrong type: name the key
        field = ".".join(str(p) for p in _visible_loc(loc[:-2]))
        return field, f"key {loc[-2]!r}: {err['msg']}"
    if etype == "extra_forbidden":
        model = _model_at(loc)
        allowed = ", ".join(model.model_fields) if model else "see DESIGN.md"
        return field, f"unknown field; allowed here: {allowed}"
    if etype == "missing":
        return field, "required field is missing"
    if etype in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        kinds = _model_classes(Scenario.model_fields[loc[0]].annotation) if loc else []
        expected = ctx.get("expected_tags") or ", ".join(repr(_tag_of(c)) for c in kinds)
        expected = expected.replace("'plugin'", f"or {PLUGIN} (a plug-in policy)")
        if etype == "union_tag_not_found":
            return f"{field}.kind", f"required field is missing; one of {expected}"
        return f"{field}.kind", f"unknown kind {ctx.get('tag')!r}; one of {expected}"
    message = err["msg"].removeprefix("Value error, ")
    if etype != "value_error" and not isinstance(err.get("input"), dict | list):
        message += f" (got {repr(err.get('input'))[:60]})"
    return field, message


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate a scenario mapping; one InputError line on failure."""
    if not isinstance(data, dict):
        raise InputError("a scenario must be a YAML mapping of keys to values", source=source)
    try:
        return Scenario.model_validate(data, context={"limits": _limits_of(data)})
    except ValidationError as exc:
        field, message = _format_error(exc)
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
    data: dict[str, Any], overrides: list[str], source: str = "--set"
) -> dict[str, Any]:
    """Apply `KEY=VALUE` overrides (dotted key, YAML value) to a raw scenario mapping."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(
                f"'{item}' is not KEY=VALUE (e.g. --set policy.max_batch=8)", source=source
            )
        try:
            value = files.parse_yaml(raw, source) if raw.strip() else None
        except InputError:
            raise InputError(
                f"the value '{raw}' is not valid YAML", source=source, field=key
            ) from None
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise InputError(f"'{prefix}' is a value, not a section", source=source, field=key)
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


class LoadedScenario:
    """A validated scenario with its file resolved: the profile loaded and checked against the policy."""

    def __init__(self, scenario: Scenario, base: Path, source: str, raw: dict[str, Any]):
        self.scenario = scenario
        self.raw = raw  # the mapping as written (overrides applied), for scenario.yaml outputs
        self.base = base
        self.source = source
        self.shaped: dict[int, Profile] | None = None
        # seconds idle before a batch -> the samples measured after that much idle
        self.after_idle: dict[float, Profile] | None = None
        self.model: StagedModel  # the profile as stages (a plain profile is one stage)
        self.shape_name = "shape"  # the column request shapes come from
        open_loop = scenario.workload.kind != "robots"
        if open_loop:
            self._check_requests(0.0)  # open loop needs no profile: refused before it is read
        self.profile = self._load_profile()
        self._check_work()
        if not open_loop:
            self._check_requests(self.profile.min_latency_s)
        self._check_shapes()
        self.max_size_in_memory = self._memory_cap()
        self._check_policy_against_profile()
        self._steps = self._check_steps()
        self.policy = self.build_policy()

    def build_policy(self, planned_with: Profile | None = None) -> Policy:
        """A fresh policy object (per-replica queues get one each: policies may learn),
        planning with `planned_with` (default: the scenario's profile; with a floor of
        steps, also the model run at that floor, what a late request can be cut to)."""
        floor = getattr(self.scenario.policy, "min_steps", None)
        floor_profile = None if floor is None else self.model.at_steps(floor)
        return self._policy_call("build", planned_with or self.profile, floor_profile)

    def steps(self) -> Steps | None:
        """Denoising steps per request, for step-level batching or a policy with a floor
        (`min_steps`); None: every batch runs the model whole."""
        return self._steps

    @property
    def step_level(self) -> bool:
        """Whether the policy batches step by step (continuous batching)."""
        return is_step_level(self.scenario.policy)

    def _check_steps(self) -> Steps | None:
        floor = getattr(self.scenario.policy, "min_steps", None)
        if floor is None and not self.step_level:
            return None
        model, field = self.model, "policy.min_steps" if floor is not None else "policy.kind"
        if floor is not None and floor > model.steps:
            raise InputError(
                f"min_steps {floor} is above the model's {model.steps} steps (the last "
                f"stage's repeat; a plain profile is one stage run once)",
                source=self.source,
                field=field,
            )
        if self.after_idle is not None:
            raise InputError(
                f"{'continuous batching' if self.step_level else 'min_steps'} does not model "
                "idle levels; choose one with profile: {path: ..., idle_ms: VALUE}",
                source=self.source,
                field=field,
            )
        top = self.profile.max_size

        def medians(profile: Profile | None) -> list[float]:
            if profile is None:
                return [0.0] * (top + 1)
            return [0.0] * profile.min_size + [
                profile.latency_ms(b) / 1000.0 for b in range(profile.min_size, top + 1)
            ]

        prefix = None if model.prefix is None else model.prefix.profile
        return Steps(model.steps, floor, medians(prefix), medians(model.step.profile))

    @property
    def policy_description(self) -> str:
        """The policy as summaries name it: its repr, or for a plug-in without one of its
        own, its kind and keys."""
        config = self.scenario.policy
        if (
            not isinstance(config, PluginPolicyConfig)
            or type(self.policy).__repr__ is not object.__repr__
        ):
            return repr(self.policy)
        keys = ", ".join(f"{k}={v!r}" for k, v in config.params.items())
        return f"{config.kind}({keys})"

    def launch_sizes(self) -> set[int]:
        """Every padded size the scenario's policy can launch (from the policy registry)."""
        return self._policy_call("launch_sizes", self.profile)

    def _policy_call(self, method: str, profile: Profile, *more: Any) -> Any:
        try:
            return getattr(self.scenario.policy, method)(profile, self.base, *more)
        except InputError as exc:
            raise InputError(exc.message, source=self.source, field=exc.field) from None

    def memory_mb(self, in_flight: int) -> float:
        """The memory `in_flight` requests need (a request-level batch of that size, or that
        many in flight step by step): the profile's peak memory at that size, or with
        `kv_mb_per_request` the peak at its smallest size plus that much per request more."""
        prof = self.profile
        kv = getattr(self.scenario.profile, "kv_mb_per_request", None)
        if kv is None:
            return prof.peak_memory_mb(in_flight)
        return prof.peak_memory_mb(prof.min_size) + (in_flight - prof.min_size) * kv

    def _memory_cap(self) -> int | None:
        """The most requests in memory at once under cluster.memory_mb (None: no limit): the
        largest batch (step level: the most in flight) whose memory fits."""
        limit = self.scenario.cluster.memory_mb
        if limit is None:
            return None
        prof = self.profile
        if prof.peak_mem_mb is None:
            raise InputError(
                f"memory_mb needs a profile with a peak_mem_mb column ({prof.source} has none)",
                source=self.source,
                field="cluster.memory_mb",
            )
        fits = [b for b in range(prof.min_size, prof.max_size + 1) if self.memory_mb(b) <= limit]
        if not fits:
            raise InputError(
                f"{limit:g} MB holds no batch: the smallest needs {self.memory_mb(prof.min_size):,.0f} MB",
                source=self.source,
                field="cluster.memory_mb",
            )
        return max(fits)

    def _load_profile(self) -> Profile:
        """The scenario's profile: its stages (a plain profile is one) combined into the
        cost of a request-level batch, with its variants (`shaped`, `after_idle`)."""
        spec = self.scenario.profile
        if spec is None:
            raise InputError(
                "profile: none given; batchsim validate measures one from model:, or set profile:",
                source=self.source,
            )
        if isinstance(spec, StagedProfile):
            stages = [
                Stage(stage.name, self._variants(stage, f"profile.stages.{i}"), stage.repeat)
                for i, stage in enumerate(spec.stages)
            ]
            self.model = StagedModel.of(stages, self.source)
        else:
            self.model = self._file_stages(spec) or StagedModel.single(self._variants(spec))
        declared = spec.stages if isinstance(spec, StagedProfile) else [spec]
        columns = sorted({s.shape for s in declared if getattr(s, "shape", None)})
        if len(columns) > 1:
            raise InputError(
                f"the stages take request shapes from different columns ({', '.join(columns)})",
                source=self.source,
                field="profile.stages",
            )
        self.shape_name = columns[0] if columns else "shape"
        whole = self.model.whole
        self.shaped, self.after_idle = whole.shaped, whole.after_idle
        return whole.profile

    def _file_stages(self, spec: Any) -> StagedModel | None:
        """A CSV whose sidecar lists its stages (and no `stage:` selected): a staged model."""
        if isinstance(spec, InlineProfile):
            return None
        path, select = (spec, {}) if isinstance(spec, str) else (spec.path, spec.select)
        if "stage" in select:
            return None
        resolved = self._resolve(path, "profile")
        listed = sidecar_stages(resolved)
        if not listed:
            return None
        shape = None if isinstance(spec, str) else spec.shape
        stages = []
        for name, repeat in listed:
            entry = FileStage.model_validate(
                {
                    **select,
                    "stage": name,
                    "name": name,
                    "path": path,
                    "repeat": repeat,
                    "shape": shape,
                }
            )
            stages.append(Stage(name, self._variants(entry), repeat))
        return StagedModel.of(stages, self.source)

    def _resolve(self, path: str, field: str) -> Path:
        try:
            return resolve_path(path, self.base, field)
        except InputError as exc:
            raise InputError(str(exc), source=self.source) from None

    def _variants(self, spec: Any, field: str = "profile") -> Variants:
        """One profile source (a path, a file with selections, inline figures) with its
        variants: per shape, or per idle level."""
        if isinstance(spec, InlineProfile):
            try:
                profile = Profile.from_inline(spec.batch_size, spec.latency_ms, spec.peak_mem_mb)
            except InputError as exc:
                inner = (exc.field or "profile").removeprefix("profile")
                raise InputError(exc.message, source=self.source, field=field + inner) from None
            return Variants(profile)
        path, select = (spec, {}) if isinstance(spec, str) else (spec.path, spec.select)
        resolved = self._resolve(path, field)
        after_idle = Profile.after_idle_from_csv(resolved, select)
        if isinstance(spec, ProfileFile) and spec.shape is not None:
            if after_idle is not None:
                raise InputError(
                    "a shape-aware profile with several idle_ms levels is not supported; "
                    "choose one level with profile: {path: ..., idle_ms: VALUE}",
                    source=self.source,
                    field=f"{field}.shape",
                )
            shaped = Profile.variants_from_csv(resolved, spec.shape, select)
            # plans, memory and checks use the largest shape: the costliest batches
            return Variants(shaped[max(shaped)], shaped=shaped)
        # with idle levels, plans and checks use the smallest (back to back)
        profile = Profile.from_csv(resolved, select)
        for level_s, variant in (after_idle or {}).items():
            if variant.sizes != profile.sizes:
                raise InputError(
                    f"idle_ms {level_s * 1000:g} measured batch sizes {list(variant.sizes)}, "
                    f"not the same as the other levels ({list(profile.sizes)})",
                    source=str(resolved),
                    field="idle_ms",
                )
        return Variants(profile, after_idle=after_idle)

    def _check_work(self) -> None:
        """Refuse a profile or fleet larger than the scenario's limits, before anything is
        drawn: the profile's largest batch and the robots."""
        s, limits, prof = self.scenario, self.scenario.limits, self.profile
        inline = isinstance(s.profile, InlineProfile)
        source, field = (
            (self.source, "profile.batch_size") if inline else (prof.source, "batch_size")
        )
        check(
            "max_batch",
            prof.max_size,
            limits,
            "a batch of {n} (its largest profiled size)",
            source=source,
            field=field,
        )
        if s.workload.kind == "robots":
            robots = sum(g.count for g in s.workload.groups)
            check(
                "max_clients",
                robots,
                limits,
                "{n} robots",
                source=self.source,
                field="workload.count",
            )

    def _check_requests(self, min_service_s: float) -> None:
        """The requests the traffic would make are within limits.max_requests (a fleet's
        estimate needs the fastest batch of the profile, `min_service_s`)."""
        s = self.scenario
        if s.requests is not None:
            estimate, field = s.requests, "requests"
        else:
            estimate, field = s.workload.events(s.duration_s, min_service_s)
        check(
            "max_requests",
            estimate,
            s.limits,
            "about {n} requests",
            source=self.source,
            field=field,
        )

    def _check_shapes(self) -> None:
        """Request shapes need a shape-aware profile that measured a shape at least as large."""
        s = self.scenario
        asked = set(s.request_shapes or {})
        if s.workload.kind == "robots":
            asked |= {g.shape for g in s.workload.groups if g.shape is not None}
        if self.shaped is None:
            if asked:
                raise InputError(
                    "request shapes need a shape-aware profile: profile: {path: ..., shape: COLUMN}",
                    source=self.source,
                    field="request_shapes" if s.request_shapes else "workload.shape",
                )
            return
        too_big = [v for v in sorted(asked) if v > max(self.shaped)]
        if too_big:
            raise InputError(
                f"request shape {too_big[0]} is larger than any measured ({', '.join(map(str, self.shaped))})",
                source=self.source,
                field="request_shapes" if s.request_shapes else "workload.shape",
            )
        for variant in self.shaped.values():
            if variant.sizes != self.profile.sizes:
                raise InputError(
                    "every shape must be measured at the same batch sizes", source=variant.source
                )

    def _check_policy_against_profile(self) -> None:
        sizes = self.launch_sizes()
        prof = self.profile
        field = self.scenario.policy.size_field
        for stage in self.model.stages if len(self.model.stages) > 1 else ():
            own = stage.variants.profile
            outside = [b for b in sorted(sizes) if not own.min_size <= b <= own.max_size]
            if outside:
                raise InputError(
                    f"the policy can run batches of size {outside[-1]} but stage "
                    f"'{stage.name}' ({own.source}) measures sizes {own.min_size}..{own.max_size}; "
                    "profiles are never extrapolated",
                    source=self.source,
                    field=field,
                )
        too_big = [s for s in sorted(sizes) if s > prof.max_size]
        too_small = [s for s in sorted(sizes) if s < prof.min_size]
        if too_big or too_small:
            bad = too_big[-1] if too_big else too_small[0]
            raise InputError(
                f"the policy can launch batches of size {bad} but the profile ({prof.source}) "
                f"measures sizes {prof.min_size}..{prof.max_size}; profiles are never extrapolated",
                source=self.source,
                field=field,
            )
        cap = self.max_size_in_memory
        # step level, memory bounds the requests in flight instead (they hold their KV cache)
        if cap is not None and max(sizes) > cap and not self.step_level:
            limit = self.scenario.cluster.memory_mb
            raise InputError(
                f"the policy can launch batches of size {max(sizes)}, which need "
                f"{self.memory_mb(max(sizes)):,.0f} MB, above cluster.memory_mb {limit:g}; "
                f"the largest batch that fits is {cap}",
                source=self.source,
                field=field,
            )

    def rngs(self, service_draw: int = 0) -> dict[str, np.random.Generator]:
        """Independent named streams from the seed: the same arrivals whatever the policy.

        Streams are spawned by position, so adding one never changes the others.
        `service_draw` k > 0: the same traffic with the k-th other draw of service times
        (validate's replications of one live run's traffic).
        """
        names = ("arrivals", "service", "classes", "dispatch", "robots", "shapes")
        seeds = np.random.SeedSequence(self.scenario.seed).spawn(len(names))
        if service_draw:
            seeds[1] = np.random.SeedSequence([self.scenario.seed, service_draw])
        return {name: np.random.default_rng(seed) for name, seed in zip(names, seeds, strict=True)}

    def request_shapes(self, n: int, rng: np.random.Generator) -> np.ndarray | None:
        """Open loop: each request's shape drawn by share (all the largest when none is given)."""
        if self.shaped is None:
            return None
        shares = self.scenario.request_shapes or {max(self.shaped): 1.0}
        values = np.array(sorted(shares), dtype=np.int32)
        p = np.array([shares[v] for v in values], dtype=float)
        return values[rng.choice(values.size, size=n, p=p / p.sum())]

    def request_attributes(self, arrivals: Arrivals, rng: np.random.Generator) -> dict[str, Any]:
        """Per-request class, deadline and priority: classes drawn by share, deadline = arrival + SLO."""
        s = self.scenario
        n = len(arrivals)
        if not s.classes:
            slo_s = np.inf if s.slo.latency_ms is None else s.slo.latency_ms / 1000.0
            return {"deadline_s": arrivals.time_s + slo_s}
        shares = np.array([c.share for c in s.classes], dtype=float)
        class_id = rng.choice(len(s.classes), size=n, p=shares / shares.sum()).astype(np.int16)
        default_ms = s.slo.latency_ms
        slo_s = np.array(
            [
                np.inf
                if (c.latency_ms or default_ms) is None
                else (c.latency_ms or default_ms) / 1000.0
                for c in s.classes
            ]
        )
        return {
            "deadline_s": arrivals.time_s + slo_s[class_id],
            "priority": np.array([c.priority for c in s.classes])[class_id],
            "class_id": class_id,
            "class_names": tuple(c.name for c in s.classes),
        }

    def arrivals(self, rng: np.random.Generator) -> Arrivals:
        s = self.scenario
        try:
            return s.workload.arrivals(rng, s.duration_s, s.requests, self.base)
        except InputError as exc:
            if exc.source is None:
                raise InputError(str(exc), source=self.source) from None
            raise


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
    flag: str = "--set",
) -> ParsedScenario:
    """Read a file (or take a mapping), apply overrides and validate every section.

    `overrides`: `--set`-style "KEY=VALUE" strings (YAML values), or {dotted key: value}.
    `base`: where relative paths are looked up first (default: the file's folder, or the
    working directory for a mapping); `origin`: the file a mapping came from, for error
    lines; `flag`: how the overrides were given (--set, --grid, --space). An error that an
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
    items = _override_items(overrides)
    data = apply_overrides(data, [text for _, text in items], source=flag)
    with _blaming(items, label, flag):
        return ParsedScenario(parse_scenario(data, label), data, base_dir, label)


class Where(TypedDict, total=False):
    """Where a scenario comes from, for parse and load: see parse."""

    base: Path | None
    origin: str | None
    flag: str


def load(
    source: str | Path | Mapping[str, Any], overrides: Overrides = (), **where: Unpack[Where]
) -> LoadedScenario:
    """The one way a scenario is loaded (run, sweep, recommend, validate, notebooks): parse
    it (see parse), then resolve it (profile loaded and checked against the policy, policy
    built)."""
    parsed = parse(source, overrides, **where)
    with _blaming(_override_items(overrides), parsed.source, where.get("flag", "--set")):
        return LoadedScenario(parsed.scenario, parsed.base, parsed.source, parsed.data)


@contextmanager
def _blaming(items: list[tuple[str, str]], label: str, flag: str):
    """An error in the scenario's own fields that an override caused names the override."""
    try:
        yield
    except InputError as exc:
        culprit = _override_for(exc.field, items)
        if culprit is None or exc.source not in (label, None):
            raise
        raise InputError(exc.message, source=f"{label} {flag} {culprit}", field=exc.field) from None


def load_scenario(path: str | Path, overrides: Sequence[str] | None = None) -> LoadedScenario:
    """A scenario file with `--set` overrides (the same as load)."""
    return load(path, overrides or ())


def scenario_from_dict(
    data: Mapping[str, Any], base: Path | None = None, source: str = "<dict>"
) -> LoadedScenario:
    """A scenario built in Python (notebooks, tests); the same as load."""
    return load(data, base=base, origin=source)


def _override_items(overrides: Overrides) -> list[tuple[str, str]]:
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
