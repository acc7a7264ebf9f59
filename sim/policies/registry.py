"""The policy registry: each built-in policy's class under its kind, and plug-in policies
named `MODULE:CLASS`; the one place a policy object is built and trust is decided.

A built-in is trusted: the core checks its launches once, at load (INV-4). A plug-in is
imported from the scenario's folder or the working directory, built with its keys (and
`profile`, the scenario's Profile, when its class takes one), checked against the
protocol of sim/policies/base.py, and guarded by the core at every call; anything it gets
wrong is one clear InputError on `policy.kind`. The scenario's `policy:` sections (their
keys are these classes' keyword arguments) are declared in sim/config/policy.py.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

from sim.errors import InputError, one_line
from sim.policies.adaptive import AdaptivePolicy
from sim.policies.base import Policy, StepLevelPolicy
from sim.policies.continuous import ContinuousPolicy
from sim.policies.deadline import DeadlinePolicy
from sim.policies.dynamic import DynamicPolicy
from sim.policies.pathological import LazyPolicy
from sim.policies.static import StaticPolicy
from sim.profiles.profile import Profile

PLUGIN = "MODULE:CLASS"  # how a plug-in's kind is written, in error lines
PLUGIN_KIND = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")

# kind -> class: the one list of built-in policies
BUILTIN: dict[str, type] = {
    "static": StaticPolicy,
    "dynamic": DynamicPolicy,
    "adaptive": AdaptivePolicy,
    "deadline": DeadlinePolicy,
    "continuous": ContinuousPolicy,
    "lazy": LazyPolicy,
}


def is_builtin(kind: str) -> bool:
    """Whether `kind` names a built-in policy (trusted), not a plug-in."""
    return kind in BUILTIN


@cache
def takes(cls: type, argument: str) -> bool:
    """Whether a policy class is built with `argument` (profile, floor_profile)."""
    try:
        return argument in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a class with no signature to read takes none
        return False


def is_step_level(cls: type) -> bool:
    """Whether a policy class batches step by step (it declares StepLevelPolicy's
    `step_level = True` and answers `admit`)."""
    return getattr(cls, "step_level", False) is True and callable(getattr(cls, "admit", None))


def policy_class(kind: str, base: Path | None = None) -> type:
    """The class behind `kind`: a built-in, or a plug-in imported from `base` (the
    scenario's folder) or the working directory."""
    if kind in BUILTIN:
        return BUILTIN[kind]
    module_name, _, class_name = kind.partition(":")
    for place in (base, Path.cwd()):
        if place is not None and str(place) not in sys.path:
            sys.path.insert(0, str(place))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error, or the module's own failure
        raise _error(kind, f"cannot import '{module_name}' ({one_line(exc)})") from None
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls):
        raise _error(kind, f"'{module_name}' has no class '{class_name}'")
    return cls


def build(
    kind: str,
    params: dict[str, Any],
    profile: Profile | None = None,
    base: Path | None = None,
    floor_profile: Profile | None = None,
) -> Policy:
    """A fresh policy object (policies may learn, so every run builds its own): the class
    of `kind` with `params`, and `profile` (and `floor_profile`, the model run at
    `min_steps`) when the class plans with them. A built-in's own ValueErrors propagate
    (its config reports them); a plug-in's failures are one line on policy.kind."""
    cls = policy_class(kind, base)
    params = dict(params)
    if takes(cls, "profile"):
        if profile is None and kind in BUILTIN:
            raise ValueError(f"the {kind} policy plans with the profile")
        params["profile"] = profile
        if kind in BUILTIN and takes(cls, "floor_profile"):
            params["floor_profile"] = floor_profile
    if kind in BUILTIN:
        return cls(**params)
    try:
        policy = cls(**params)
    except Exception as exc:
        raise _error(kind, f"{cls.__name__}(...) failed: {one_line(exc)}") from None
    check_protocol(policy, kind)
    return policy


def check_protocol(policy: Any, kind: str) -> None:
    """A plug-in must be a policy of sim/policies/base.py: name, order, max_batch,
    launch_sizes(), decide(now_s, queue) (or, step level, admit(now_s, queue, in_flight)),
    and optionally on_batch_done(...)."""
    decides = "admit" if is_step_level(type(policy)) else "decide"
    missing = [
        attr
        for attr in ("name", "order", "max_batch", "launch_sizes", decides)
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


def describe(policy: Policy, kind: str, params: dict[str, Any]) -> str:
    """The policy as summaries name it: its repr, or for a plug-in without one of its own,
    its kind and keys."""
    if kind in BUILTIN or type(policy).__repr__ is not object.__repr__:
        return repr(policy)
    keys = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return f"{kind}({keys})"


def _error(kind: str, message: str) -> InputError:
    return InputError(f"plug-in policy {kind}: {message}", field="policy.kind")


__all__ = [
    "BUILTIN",
    "PLUGIN",
    "StepLevelPolicy",
    "build",
    "check_protocol",
    "describe",
    "is_builtin",
    "is_step_level",
    "policy_class",
]
