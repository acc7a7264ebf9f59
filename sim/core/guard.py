"""The policy guard: what a policy returns is checked, and what it gets wrong (or raises)
becomes the scenario's error in one line, on `policy.kind`.

Every policy's Wait and Drop are checked (cheap, and a Wait in the past would hang a
clock). A trusted policy (a built-in: sim/policies/registry.py) launches its
`launch_sizes` only, checked once at load (INV-4); an untrusted one (a plug-in) also has
each Launch checked and each call's exceptions caught.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from sim.errors import InputError
from sim.policies.base import Launch


class PolicyGuard:
    """The checks on one server's policies; `trusted` says whether launches are checked."""

    def __init__(
        self,
        trusted: bool,
        label: str,
        source: str,
        min_size: int,
        max_size: int,
        memory_cap: int | None,
    ):
        self.trusted = trusted
        self.label, self.source = label, source
        self.min_size, self.max_size, self.memory_cap = min_size, max_size, memory_cap

    def refuse(self, what: str) -> NoReturn:
        """The policy did something it must not: the scenario's error, in one line."""
        raise InputError(f"{self.label} {what}", source=self.source, field="policy.kind")

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """The policy's method as the core calls it: as it is when trusted; else a call
        whose failures become the scenario's error."""
        if self.trusted:
            return method

        def call(*args: Any) -> Any:
            try:
                return method(*args)
            except InputError:
                raise
            except Exception as exc:
                self.refuse(f"raised {type(exc).__name__} in {method.__name__}(): {exc}")

        return call

    def launch(self, decision: Launch, queued: int) -> tuple[int, int]:
        """An untrusted policy's launch, checked: integers of another type are taken as they
        are; a count beyond the queue, a padding below it, a size the profile did not
        measure or the memory cap refuses is the policy's error."""
        count, padded = decision.count, decision.padded_size
        integral = all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (count, padded)
        )
        if not integral:
            self.refuse(f"returned {decision}: count and padded_size must be integers")
        count, padded = int(count), int(padded)
        if not 0 < count <= queued:
            self.refuse(f"returned {decision} with {queued} queued")
        if padded < count:
            self.refuse(f"returned {decision}: a batch is padded to at least its size")
        if not self.min_size <= padded <= self.max_size:
            self.refuse(
                f"launched a batch padded to {padded}, outside the profile's measured sizes "
                f"{self.min_size}..{self.max_size}"
            )
        cap = self.memory_cap
        if cap is not None and padded > cap:
            self.refuse(f"launched {padded}, above the memory limit ({cap})")
        return count, padded
