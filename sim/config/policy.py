"""The scenario's `policy:` section: one schema per built-in kind (its keys are the class's
keyword arguments, sim/policies/registry.py), or a plug-in `MODULE:CLASS` with keys of its
own. Pure data: the registry builds the objects (`registry.build(config.kind,
config.params, ...)`)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Tag,
    field_validator,
    model_validator,
)

from sim.config.base import Strict
from sim.config.limits import BatchSize
from sim.policies import registry
from sim.policies.base import every_size_up_to

PLUGIN = registry.PLUGIN


class PolicyConfig(Strict):
    """A built-in policy's `policy:` section. `size_field` is the field an error about the
    sizes it launches names."""

    kind: str
    size_field: ClassVar[str] = "policy.max_batch"

    @property
    def params(self) -> dict[str, Any]:
        """The class's keyword arguments."""
        return self.model_dump(exclude={"kind"})

    @model_validator(mode="after")
    def _consistent(self) -> PolicyConfig:
        # the policy's own checks (min_batch <= max_batch, ...), reported as this field's
        # error; a policy that plans with the profile is checked when it is resolved
        if not registry.takes(registry.BUILTIN[self.kind], "profile"):
            registry.build(self.kind, self.params)
        return self

    def planned_sizes(self) -> set[int] | None:
        """The padded sizes it can launch when they are known without a profile (None:
        build the policy to ask it)."""
        return None


class StaticPolicyConfig(PolicyConfig):
    kind: Literal["static"]
    batch_size: BatchSize
    timeout_ms: NonNegativeFloat | None = None
    size_field: ClassVar[str] = "policy.batch_size"


class DynamicPolicyConfig(PolicyConfig):
    kind: Literal["dynamic"]
    max_batch: BatchSize
    max_wait_ms: NonNegativeFloat | None = 0.0
    min_batch: PositiveInt = 1
    preferred_sizes: list[BatchSize] | None = None
    allowed_sizes: list[BatchSize] | None = None
    min_steps: PositiveInt | None = None  # a staged model's steps may drop to this floor

    @property
    def size_field(self) -> str:  # type: ignore[override]
        return "policy.allowed_sizes" if self.allowed_sizes else "policy.max_batch"


class AdaptivePolicyConfig(PolicyConfig):
    kind: Literal["adaptive"]
    target_ms: PositiveFloat
    max_batch: BatchSize
    min_batch: PositiveInt = 1
    step: PositiveFloat = 1.0
    backoff: float = Field(0.9, gt=0, lt=1)
    max_wait_ms: NonNegativeFloat | None = 0.0
    initial_batch: BatchSize | None = None


class DeadlinePolicyConfig(PolicyConfig):
    kind: Literal["deadline"]
    max_batch: BatchSize
    quantile: float = Field(0.5, ge=0.5, le=0.99)
    on_miss: Literal["drop", "serve"] = "drop"
    min_steps: PositiveInt | None = None  # plans with this floor of steps, runs the most that fit

    def planned_sizes(self) -> set[int] | None:
        return every_size_up_to(self.max_batch)  # known before the profile is checked


class ContinuousPolicyConfig(PolicyConfig):
    kind: Literal["continuous"]
    max_batch: BatchSize
    max_admit: BatchSize | None = None  # chunked admission: new requests per iteration
    min_steps: PositiveInt | None = None


class LazyPolicyConfig(PolicyConfig):
    kind: Literal["lazy"]
    max_batch: BatchSize
    max_wait_ms: NonNegativeFloat


# kind -> its section: every built-in of the registry has one
SECTIONS: dict[str, type[PolicyConfig]] = {
    config.model_fields["kind"].annotation.__args__[0]: config
    for config in (
        StaticPolicyConfig,
        DynamicPolicyConfig,
        AdaptivePolicyConfig,
        DeadlinePolicyConfig,
        ContinuousPolicyConfig,
        LazyPolicyConfig,
    )
}
assert set(SECTIONS) == set(registry.BUILTIN), "every built-in policy needs its section"


class PluginPolicyConfig(BaseModel):
    """`policy: {kind: package.module:Class, ...}`: the other keys are the class's keyword
    arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str

    @field_validator("kind")
    @classmethod
    def _module_and_class(cls, kind: str) -> str:
        if not registry.PLUGIN_KIND.fullmatch(kind):
            raise ValueError(
                f"a plug-in policy is named {PLUGIN}, e.g. my_policies:OldestFirst (got {kind!r})"
            )
        return kind

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def size_field(self) -> str:
        return "policy.kind"

    def planned_sizes(self) -> set[int] | None:
        return None


def min_steps(config: Any) -> int | None:
    """The section's floor of denoising steps (None: none; plug-ins have none)."""
    return getattr(config, "min_steps", None)


def policy_tag(value: Any) -> str | None:
    """Which section validates a `policy:` mapping: the built-in of its kind, or a plug-in."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    if not isinstance(kind, str):
        return None
    return "plugin" if kind not in SECTIONS and ":" in kind else kind


# the `policy:` field of a scenario: one section per registered kind, or a plug-in
PolicySpec = Annotated[
    Union[  # noqa: UP007 (a union built from the registry)
        tuple(Annotated[config, Tag(kind)] for kind, config in SECTIONS.items())
        + (Annotated[PluginPolicyConfig, Tag("plugin")],)
    ],
    Discriminator(policy_tag),
]
