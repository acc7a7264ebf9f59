"""Work limits: how much one scenario may ask for, checked before anything is allocated.

A typo such as `rate_rps: 1e12` or `max_batch: 1000000000` must be refused in a second,
not discovered as a 24 TiB allocation or a machine that swaps for an hour. Each limit has
a default that covers every realistic study; a scenario that really means more raises it
in its `limits:` section, or with the override `limits.NAME=VALUE`.

Scenario fields that size an allocation (`max_batch`, `replicas`, robot `count`,
`sources`, ...) carry their limit in their type (`BatchSize`, `ReplicaCount`,
`ClientCount`), so the check runs as the field is validated, before any policy is built.
The derived estimates (requests, sweep points, recommend configurations) are checked
by their loaders with `check`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, PositiveInt, ValidationInfo

from sim.errors import InputError


class Limits(BaseModel):
    """`limits:` in a scenario: the most work it may ask for (defaults in the README)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    # requests (and other simulated events) in one run: a run holds about 120 B each
    max_requests: PositiveInt = 20_000_000
    # the largest batch size a policy may form or a profile may measure
    max_batch: PositiveInt = 4096
    max_replicas: PositiveInt = 1024
    # robots, or periodic sources, in one scenario
    max_clients: PositiveInt = 100_000
    # sweep points (grid x replications), or recommend configurations
    max_points: PositiveInt = 10_000


DEFAULT = Limits()


def active(info: ValidationInfo | None) -> Limits:
    """The limits a validation runs under: the scenario's `limits:`, passed as context."""
    context = info.context if info is not None else None
    if isinstance(context, dict) and isinstance(context.get("limits"), Limits):
        return context["limits"]
    return DEFAULT


def over(name: str, value: float, limit: int, what: str) -> str:
    """The message for work over a limit: the estimate, the limit and how to raise it.
    `what` names the work, with {n} where the estimate goes ("{n} requests")."""
    n = f"{value:,.0f}" if value < 1e15 else f"{value:.3g}"
    return (
        f"asks for {what.format(n=n)}, above the work limit {name} = {limit:,}; "
        f"if you mean it, raise it in the scenario's limits: section (override limits.{name}=N)"
    )


def check(name: str, value: float, limits: Limits, what: str, **where: str | None) -> None:
    """Refuse `value` (an estimate of work) when it is over the limit `name` (`where`: the
    error's source, field, option and given)."""
    limit = getattr(limits, name)
    if value > limit:
        raise InputError(over(name, value, limit, what), **where)


def _within(name: str, what: str) -> AfterValidator:
    def checked(value: int, info: ValidationInfo) -> int:
        limit = getattr(active(info), name)
        if value > limit:
            raise ValueError(over(name, value, limit, what))
        return value

    return AfterValidator(checked)


BatchSize = Annotated[PositiveInt, _within("max_batch", "a batch of {n}")]
ReplicaCount = Annotated[PositiveInt, _within("max_replicas", "{n} replicas")]
ClientCount = Annotated[PositiveInt, _within("max_clients", "{n} robots or sources")]
