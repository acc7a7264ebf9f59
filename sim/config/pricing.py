"""Prices and power, resolved: what a replica costs per hour and what it draws busy and
idle, from the scenario's `cost:` and `power:` sections, the profile's measured power and
the GPU table (docs/semantics.md, "Cost and energy").

Power, first found wins:
1. the scenario's `power: {idle_w, busy_w}`;
2. the profile's measured `power_w` per batch size (and its sidecar's idle power; else the
   table's idle figure for its GPU);
3. the GPU table's figures for the profile's GPU: idle when idle, the maximum board power
   while busy, an upper bound;
4. none (a CPU or inline profile): no energy block, and the reason says why.

May import: errors, profiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sim.errors import InputError
from sim.profiles.estimate.gpus import GPUS, GpuSpec, gpu_for_device, profile_gpu
from sim.profiles.profile import Profile


@dataclass(frozen=True)
class Pricing:
    """One run's prices and power, as plain values."""

    gpu: str | None  # the profile's GPU, as the table names it (None: CPU or inline)
    usd_per_gpu_hour: float | None  # None: no cost: section
    idle_w: float | None
    busy_w: float | None  # constant while busy (scenario, or the table's maximum)
    # measured busy power per batch size: (sizes, watts), interpolated for other sizes
    busy_w_by_size: tuple[tuple[int, ...], tuple[float, ...]] | None
    power_source: str | None  # where the power figures came from (None: no energy block)
    no_energy: str | None = None  # why there is no energy block
    upper_bound: bool = False  # the GPU table's maximum while busy: energy at most this

    @property
    def has_energy(self) -> bool:
        return self.idle_w is not None and (
            self.busy_w is not None or self.busy_w_by_size is not None
        )


def _price(cost: Any, gpu: GpuSpec | None, source: str) -> float | None:
    if cost is None:
        return None
    price = cost.gpu_hour_usd
    if not isinstance(price, dict):
        return float(price)
    given = ", ".join(sorted(price)) or "none"
    if gpu is None:
        raise InputError(
            f"prices per GPU ({given}) need a profile measured on, or estimated for, a GPU "
            "(this one is a CPU or inline profile); give one number instead",
            source=source,
            field="cost.gpu_hour_usd",
        )
    for key, value in price.items():
        spec = gpu_for_device(str(key))
        if spec is None:
            raise InputError(
                f"'{key}' is not a GPU of the table; one of {', '.join(GPUS)} "
                "(batchsim gpus lists them)",
                source=source,
                field="cost.gpu_hour_usd",
            )
        if spec.name == gpu.name:
            return float(value)
    raise InputError(
        f"has no price for the profile's GPU '{gpu.name}' (prices given: {given})",
        source=source,
        field="cost.gpu_hour_usd",
    )


def resolve_pricing(scenario: Any, profile: Profile, source: str) -> Pricing:
    """The scenario's prices and power for `profile`, or one line naming what is wrong."""
    gpu = profile_gpu(profile.provenance)
    price = _price(scenario.cost, gpu, source)
    name = None if gpu is None else gpu.name
    power = scenario.power
    if power is not None:
        return Pricing(name, price, power.idle_w, power.busy_w, None, "the scenario's power:")
    measured = profile.provenance.get("power")
    if profile.power_w is not None:
        idle = measured.get("idle_w") if isinstance(measured, dict) else None
        if type(idle) in (int, float) and math.isfinite(idle) and idle >= 0:
            idle_from = "its measured idle power"
        elif gpu is not None and gpu.idle_w is not None:
            idle, idle_from = gpu.idle_w, f"the GPU table's idle figure for the {gpu.name}"
        else:
            return Pricing(name, price, None, None, None, None, "no idle power is known")
        how = measured.get("method", "") if isinstance(measured, dict) else ""
        return Pricing(
            name,
            price,
            float(idle),
            None,
            (profile.sizes, profile.power_w),
            f"the profile's measured power_w per batch size ({how or 'measured'}); idle: "
            f"{idle_from}",
        )
    if gpu is not None and gpu.max_w is not None:
        return Pricing(
            name,
            price,
            gpu.idle_w,
            gpu.max_w,
            None,
            f"the GPU table's {gpu.name}: {gpu.max_w:g} W while busy (its maximum board "
            f"power: an upper bound) and {gpu.idle_w:g} W idle ({gpu.idle_source})",
            upper_bound=True,
        )
    why = "the profile names no GPU (a CPU or inline profile) and the scenario gives no power:"
    return Pricing(name, price, None, None, None, None, why)
