"""The scenario schema: every section as pure data (pydantic models that validate and hold
values; nothing here reads a file or makes a runtime object).

Every key carries its unit (`_s`, `_ms`, `_hz`, `_rps`, `_mb`). Unknown keys are errors
(a typo must not silently fall back to a default). docs/semantics.md defines the keys;
sim/config/parse.py turns a failure into one line naming the file, the field and what
is allowed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

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
    field_validator,
    model_validator,
)

from sim.config.base import Strict
from sim.config.limits import BatchSize, ClientCount, Limits, ReplicaCount
from sim.config.policy import PolicySpec


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


class GammaWorkload(Strict):
    kind: Literal["gamma"]
    rate_rps: PositiveFloat
    # the coefficient of variation of the gaps (1 = Poisson); beyond these bounds the gamma
    # draws underflow to 0 or overflow
    cv: float = Field(ge=0.001, le=1000.0)


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


class TraceWorkload(Strict):
    kind: Literal["trace"]
    path: str
    time_column: str = "arrival_s"
    source_column: str | None = None


class NetworkMs(Strict):
    """One-way network delays added to every request (ms); jitter is a Gaussian std, clipped at 0."""

    uplink: NonNegativeFloat = 0.0
    downlink: NonNegativeFloat = 0.0
    jitter: NonNegativeFloat = 0.0


# the keys of a robot group that only real-time chunking robots read
RTC_KEYS = ("delay_steps", "initial_delay_steps", "guidance", "guidance_step_factor")


class RobotGroup(Strict):
    """Robots that share one control loop configuration."""

    name: str | None = None
    count: ClientCount
    shape: PositiveInt | None = None  # request shape (e.g. cameras) with a shape-aware profile
    control_hz: PositiveFloat
    chunk: PositiveInt
    execute: PositiveInt | None = None  # default: the whole chunk
    mode: Literal["sync", "async", "rtc"] = "sync"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    # rtc (real-time chunking; docs/semantics.md): the frozen prefix d in control ticks, a
    # number or auto (LeRobot's: the largest round trip so far, in ticks), where auto starts
    # (kept, unread, with a number: a sweep of delay_steps over an auto scenario must load)
    delay_steps: int | Literal["auto"] = Field("auto", union_mode="left_to_right")
    initial_delay_steps: int = Field(0, ge=0, le=100_000)
    guidance: Literal["inference", "training", "none"] = "inference"
    # inference-time guidance: the denoising stage's cost factor (the paper: ~3)
    guidance_step_factor: float = Field(1.0, ge=1.0, le=100.0)
    start: Literal["synchronized", "staggered", "random"] = "staggered"
    jitter_ms: NonNegativeFloat = 0.0
    network_ms: NetworkMs = NetworkMs()

    @field_validator("network_ms", mode="before")
    @classmethod
    def _no_network(cls, value: Any) -> Any:
        return {} if value is None else value  # null: no network, as "none" means elsewhere

    @field_validator("delay_steps", mode="before")
    @classmethod
    def _ticks_or_auto(cls, value: Any) -> Any:
        # one line naming both spellings (the union's own errors name its int branch)
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise ValueError(f"a whole number of control ticks, or auto (got {value!r})")

    @model_validator(mode="after")
    def _execute_within_chunk(self) -> RobotGroup:
        if self.execute is not None and self.execute > self.chunk:
            raise ValueError(f"execute ({self.execute}) cannot exceed chunk ({self.chunk})")
        if self.mode != "async" and "threshold" in self.model_fields_set:
            # a key that would do nothing is refused, not silently ignored
            raise ValueError(
                "threshold applies to async robots (when they ask for the next chunk); a "
                f"{self.mode} robot asks "
                + ("when its chunk runs out" if self.mode == "sync" else "every execute actions")
                + ": drop threshold or set mode: async"
            )
        rtc_keys = sorted(set(RTC_KEYS) & self.model_fields_set)
        if self.mode != "rtc" and rtc_keys:
            raise ValueError(f"{', '.join(rtc_keys)} apply to mode: rtc only")
        if self.mode == "rtc":
            self._check_rtc()
        return self

    def _check_rtc(self) -> None:
        """d <= s <= H - d (Black et al.): the frozen prefix fits in what the robot executes,
        and the chunk still covers s actions after it."""
        h, s = self.chunk, self.actions_per_chunk
        if isinstance(self.delay_steps, int):
            d = self.delay_steps
            if not 0 <= d <= s <= h - d:
                raise ValueError(
                    f"rtc needs delay_steps <= execute <= chunk - delay_steps; delay_steps {d}, "
                    f"execute {s}, chunk {h}"
                )
        elif not self.initial_delay_steps <= s <= h - self.initial_delay_steps:
            raise ValueError(
                f"rtc needs initial_delay_steps <= execute <= chunk - initial_delay_steps; "
                f"initial_delay_steps {self.initial_delay_steps}, execute {s}, chunk {h}"
            )
        if self.guidance != "inference" and self.guidance_step_factor != 1.0:
            raise ValueError("guidance_step_factor applies to guidance: inference only")

    @property
    def max_delay_steps(self) -> int:
        """The largest frozen prefix d <= s <= H - d allows (auto delays stop there)."""
        return min(self.actions_per_chunk, self.chunk - self.actions_per_chunk)

    @property
    def actions_per_chunk(self) -> int:
        return self.execute if self.execute is not None else self.chunk


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


class Cost(Strict):
    """What a GPU costs: one price for the profile's GPU, or a price per GPU name (as
    `batchsim gpus` names them) so one scenario prices every profile it is swept over."""

    gpu_hour_usd: PositiveFloat | dict[str, PositiveFloat]


class Power(Strict):
    """Each replica's board power: `busy_w` while a batch runs, `idle_w` otherwise."""

    idle_w: NonNegativeFloat
    busy_w: PositiveFloat

    @model_validator(mode="after")
    def _order(self) -> Power:
        if self.busy_w < self.idle_w:
            raise ValueError("power: busy_w must be at least idle_w")
        return self


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
    cost: Cost | None = None  # prices: summary.json's cost block
    power: Power | None = None  # board power per replica: the energy block
    classes: list[RequestClass] | None = Field(None, min_length=1)
    # open loop with a shape-aware profile: {VALUE: share}, e.g. {1: 0.7, 3: 0.3} cameras
    request_shapes: dict[PositiveInt, PositiveFloat] | None = Field(None, min_length=1)
    sweep: SweepSection | None = None  # used by `batchsim sweep`, ignored by `run`
    limits: Limits = Limits()  # the most work the scenario may ask for (sim/config/limits.py)

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
