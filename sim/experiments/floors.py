"""What recommend knows about a configuration before any probe: why it cannot meet an SLO
at any load or replica count (no request is answered faster than the profile's fastest
batch, and a sync robot stalls for at least that plus its network delays every chunk),
and whether the cost and energy objectives can rank it (a price, a power).

May import: errors (the loaded scenario and the SLO terms are passed in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sim.errors import InputError


def check_priced(objective: str, pricing: Any, where: str, source: str) -> None:
    """min-cost needs a price and min-energy a power for every configuration."""
    if objective == "min-cost" and pricing.usd_per_gpu_hour is None:
        raise InputError(
            "min-cost needs prices: the scenario's cost: {gpu_hour_usd: N}, or a price per "
            f"GPU, {{gpu_hour_usd: {{h100: 2.5, l40s: 1.1}}}}{where}",
            source=source,
            field="cost",
        )
    if objective == "min-energy" and not pricing.has_energy:
        raise InputError(
            f"min-energy needs power figures{where}: {pricing.no_energy}; give the "
            "scenario's power: {idle_w, busy_w}",
            source=source,
            field="power",
        )


def slo_floor(loaded: Any, slo: Sequence[Any]) -> str | None:
    """Why this configuration cannot meet the SLO at any load or replica count, or None:
    no request is served faster than the profile's fastest batch, and a sync robot
    stalls for at least that plus its network delays every chunk."""
    fastest_ms = loaded.profile.min_latency_s * 1000.0
    workload = loaded.scenario.workload
    for term in slo:
        upper = term.op in ("<=", "<")

        def beaten(floor: float, term: Any = term) -> bool:
            return floor > term.bound if term.op == "<=" else floor >= term.bound

        if upper and term.metric.startswith(("latency_", "robots_round_trip_")):
            network_ms = 0.0
            if term.metric.startswith("robots_") and workload.kind == "robots":
                network_ms = min(
                    g.network_ms.uplink + g.network_ms.downlink for g in workload.groups
                )
            floor_ms = fastest_ms + network_ms
            if beaten(floor_ms):
                return (
                    f"{term} cannot be met: no request is answered faster than the profile's "
                    f"fastest batch, {fastest_ms:.1f} ms"
                    + (f", plus {network_ms:g} ms of network" if network_ms else "")
                )
        # the worst robot stalls at least as much as the fleet on average
        stall_terms = ("robots_stall_fraction", "robots_stall_fraction_max")
        if upper and term.metric in stall_terms and workload.kind == "robots":
            groups = workload.groups
            if any(g.mode != "sync" for g in groups):
                continue  # an async robot can hide its round trip
            parts, details = [], []
            for g in groups:
                trip_ms = fastest_ms + g.network_ms.uplink + g.network_ms.downlink
                motion_ms = g.actions_per_chunk / g.control_hz * 1000.0
                parts.append((g.count, trip_ms / (trip_ms + motion_ms)))
                budget_ms = (
                    term.bound * motion_ms / (1 - term.bound) if term.bound < 1 else math.inf
                )
                details.append((trip_ms, motion_ms, budget_ms, g))
            floor = sum(n * f for n, f in parts) / sum(n for n, _ in parts)
            if beaten(floor):
                trip_ms, motion_ms, budget_ms, g = details[0]
                network = g.network_ms.uplink + g.network_ms.downlink
                return (
                    f"{term} cannot be met: a sync robot stalls for every round trip, at "
                    f"least {trip_ms:.1f} ms (the profile's fastest batch {fastest_ms:.1f} ms"
                    + (f" + {network:g} ms of network" if network else "")
                    + f") per {motion_ms:.0f} ms of motion, a stall of at least {floor:.1%}; "
                    f"{term.bound:g} allows {budget_ms:.1f} ms per round trip"
                )
    return None
