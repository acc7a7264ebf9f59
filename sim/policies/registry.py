"""The policy registry: each built-in policy's scenario config and class, in one place, and
plug-in policies named `MODULE:CLASS`.

A scenario's `policy:` section is validated by the config registered for its `kind`; the
config builds the policy object and says which padded sizes it can launch (checked
against the profile when the scenario loads). A plug-in (`kind: package.module:Class`)
is imported from the scenario's folder or the working directory; its other keys are its
class's keyword arguments (and `profile`, the scenario's Profile, when the class takes
one). It must follow the protocol of sim/policies/base.py; anything it gets wrong is one
clear InputError on `policy.kind`.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from functools import cache
from pathlib import Path
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

from sim.config.limits import BatchSize
from sim.errors import InputError, one_line
from sim.policies.adaptive import AdaptivePolicy
from sim.policies.base import Policy, every_size_up_to
from sim.policies.continuous import ContinuousPolicy
from sim.policies.deadline import DeadlinePolicy
from sim.policies.dynamic import DynamicPolicy
from sim.policies.pathological import LazyPolicy
from sim.policies.static import StaticPolicy
from sim.profiles.profile import Profile

PLUGIN = "MODULE:CLASS"  # how a plug-in's kind is written, in error lines


class Strict(BaseModel):
    """Every configuration section: unknown keys are errors, values never change, types are
    strict (`'8'` and `true` are not numbers, `8.0` is not an integer) and numbers are
    finite (`.inf` and `.nan` are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


@cache
def takes(cls: type, argument: str) -> bool:
    """Whether a policy class is built with `argument` (profile, floor_profile)."""
    try:
        return argument in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a class with no signature to read takes none
        return False


def takes_profile(cls: type) -> bool:
    """Whether a policy class is built with the scenario's profile (a `profile` argument)."""
    return takes(cls, "profile")


def is_step_level(config: Any) -> bool:
    """Whether a `policy:` section's built-in batches step by step (its class says so)."""
    return bool(getattr(getattr(type(config), "policy_class", None), "step_level", False))


class PolicyConfig(Strict):
    """A built-in policy's `policy:` section: its keys are its class's keyword arguments.

    `build` makes the policy object (a fresh one each call: policies may learn);
    `launch_sizes` are the padded sizes it can launch; `size_field` is the field an error
    about those sizes names."""

    kind: str
    policy_class: ClassVar[type]
    size_field: ClassVar[str] = "policy.max_batch"

    @model_validator(mode="after")
    def _consistent(self) -> PolicyConfig:
        if not takes_profile(self.policy_class):
            self.build()  # the policy's own checks, reported as this field's error
        return self

    def build(
        self,
        profile: Profile | None = None,
        base: Path | None = None,
        floor_profile: Profile | None = None,
    ) -> Policy:
        """The policy object; `floor_profile`: the model run at `min_steps`, for a policy
        that plans what degraded batches can still meet."""
        params = self.model_dump(exclude={"kind"})
        if takes_profile(self.policy_class):
            if profile is None:
                raise ValueError(f"the {self.kind} policy plans with the profile")
            params["profile"] = profile
            if takes(self.policy_class, "floor_profile"):
                params["floor_profile"] = floor_profile
        return self.policy_class(**params)

    def launch_sizes(self, profile: Profile | None = None, base: Path | None = None) -> set[int]:
        return self.build(profile, base).launch_sizes()


class StaticPolicyConfig(PolicyConfig):
    kind: Literal["static"]
    batch_size: BatchSize
    timeout_ms: NonNegativeFloat | None = None
    policy_class: ClassVar[type] = StaticPolicy
    size_field: ClassVar[str] = "policy.batch_size"


class DynamicPolicyConfig(PolicyConfig):
    kind: Literal["dynamic"]
    max_batch: BatchSize
    max_wait_ms: NonNegativeFloat | None = 0.0
    min_batch: PositiveInt = 1
    preferred_sizes: list[BatchSize] | None = None
    allowed_sizes: list[BatchSize] | None = None
    min_steps: PositiveInt | None = None  # a staged model's steps may drop to this floor
    policy_class: ClassVar[type] = DynamicPolicy

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
    policy_class: ClassVar[type] = AdaptivePolicy


class DeadlinePolicyConfig(PolicyConfig):
    kind: Literal["deadline"]
    max_batch: BatchSize
    quantile: float = Field(0.5, ge=0.5, le=0.99)
    on_miss: Literal["drop", "serve"] = "drop"
    min_steps: PositiveInt | None = None  # plans with this floor of steps, runs the most that fit
    policy_class: ClassVar[type] = DeadlinePolicy

    def launch_sizes(self, profile: Profile | None = None, base: Path | None = None) -> set[int]:
        return every_size_up_to(self.max_batch)  # known before the profile is checked


class ContinuousPolicyConfig(PolicyConfig):
    kind: Literal["continuous"]
    max_batch: BatchSize
    max_admit: BatchSize | None = None  # chunked admission: new requests per iteration
    min_steps: PositiveInt | None = None
    policy_class: ClassVar[type] = ContinuousPolicy


class LazyPolicyConfig(PolicyConfig):
    kind: Literal["lazy"]
    max_batch: BatchSize
    max_wait_ms: NonNegativeFloat
    policy_class: ClassVar[type] = LazyPolicy


# kind -> config: the one list of built-in policies
BUILTIN: dict[str, type[PolicyConfig]] = {
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


class PluginPolicyConfig(BaseModel):
    """`policy: {kind: package.module:Class, ...}`: the other keys are the class's keyword
    arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str

    @field_validator("kind")
    @classmethod
    def _module_and_class(cls, kind: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", kind):
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

    def policy_class(self, base: Path | None = None) -> type:
        """The plug-in's class, imported from `base` (the scenario's folder) or the working
        directory."""
        module_name, _, class_name = self.kind.partition(":")
        for place in (base, Path.cwd()):
            if place is not None and str(place) not in sys.path:
                sys.path.insert(0, str(place))
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # an import error, or the module's own failure
            raise _error(self.kind, f"cannot import '{module_name}' ({one_line(exc)})") from None
        cls = getattr(module, class_name, None)
        if not inspect.isclass(cls):
            raise _error(self.kind, f"'{module_name}' has no class '{class_name}'")
        return cls

    def build(
        self,
        profile: Profile | None = None,
        base: Path | None = None,
        floor_profile: Profile | None = None,
    ) -> Policy:
        cls = self.policy_class(base)
        kwargs = self.params
        if takes_profile(cls):
            kwargs["profile"] = profile
        try:
            policy = cls(**kwargs)
        except Exception as exc:
            raise _error(self.kind, f"{cls.__name__}(...) failed: {one_line(exc)}") from None
        check_protocol(policy, self.kind)
        return policy

    def launch_sizes(self, profile: Profile | None = None, base: Path | None = None) -> set[int]:
        return self.build(profile, base).launch_sizes()


def check_protocol(policy: Any, kind: str) -> None:
    """A plug-in must be a policy of sim/policies/base.py: name, order, max_batch,
    launch_sizes(), decide(now_s, queue), and optionally on_batch_done(...)."""
    missing = [
        attr
        for attr in ("name", "order", "max_batch", "launch_sizes", "decide")
        if not hasattr(policy, attr)
    ]
    if missing:
        raise _error(kind, f"the policy has no {', '.join(missing)} (see sim/policies/base.py)")
    for method in ("decide", "launch_sizes", "on_batch_done"):
        if hasattr(policy, method) and not callable(getattr(policy, method)):
            raise _error(kind, f"{method} must be a method")
    if policy.order not in ("fifo", "edf"):
        raise _error(kind, f"order is {policy.order!r}; it must be 'fifo' or 'edf'")
    max_batch = policy.max_batch
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise _error(kind, f"max_batch is {max_batch!r}; it must be an integer >= 1")
    try:
        sizes = policy.launch_sizes()
    except Exception as exc:
        raise _error(kind, f"launch_sizes() failed: {one_line(exc)}") from None
    try:
        valid = bool(sizes) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
        )
    except TypeError:
        valid = False
    if not valid:
        raise _error(kind, f"launch_sizes() returned {sizes!r}; it must be a set of integers >= 1")


def _error(kind: str, message: str) -> InputError:
    return InputError(f"plug-in policy {kind}: {message}", field="policy.kind")


def policy_tag(value: Any) -> str | None:
    """Which config validates a `policy:` mapping: the built-in of its kind, or a plug-in."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    if not isinstance(kind, str):
        return None
    return "plugin" if kind not in BUILTIN and ":" in kind else kind


# the `policy:` field of a scenario: one config per registered kind, or a plug-in
PolicySpec = Annotated[
    Union[  # noqa: UP007 (a union built from the registry)
        tuple(Annotated[config, Tag(kind)] for kind, config in BUILTIN.items())
        + (Annotated[PluginPolicyConfig, Tag("plugin")],)
    ],
    Discriminator(policy_tag),
]
