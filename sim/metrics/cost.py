"""Cost and energy of a run, exact from its records (docs/semantics.md, "Cost and energy").

Over the window [warmup_s, end_s] of length W, each replica is busy while a batch of its
runs (the part of the batch inside the window) and idle otherwise:
- energy (J) = sum over batches of busy power x its time in the window
             + sum over replicas of idle power x (W - its busy time);
  busy power is the scenario's or table's constant, or the profile's measured power at the
  batch's padded size (linear between measured sizes, the end values beyond them);
- average_power_w = energy / W (all replicas together);
- joules_per_request = energy / completed measured requests;
- usd_per_hour = replicas x the GPU's hourly price;
- usd_per_million_requests = usd_per_hour x W / 3600 / completed x 10^6;
- usd_per_robot_hour = usd_per_hour / robots (fleets).

May import: core, config (for the Pricing values).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.config.pricing import Pricing
from sim.core.records import RunRecords


def busy_in_window(rec: RunRecords) -> np.ndarray:
    """Each batch's running time inside the window (s); the one definition utilisation and
    energy share."""
    return np.clip(
        np.minimum(rec.batch_end_s, rec.end_s) - np.maximum(rec.batch_start_s, rec.warmup_s),
        0.0,
        None,
    )


def energy_block(
    rec: RunRecords, pricing: Pricing, completed: int, busy: np.ndarray
) -> dict[str, Any] | None:
    """summary.json's `energy` block (`busy`: busy_in_window of the records), or None where
    no power is known."""
    if not pricing.has_energy:
        return None
    window_s = rec.end_s - rec.warmup_s
    if pricing.busy_w_by_size is not None:
        sizes, watts = pricing.busy_w_by_size
        busy_w = np.interp(rec.batch_padded.astype(float), sizes, watts)
    else:
        busy_w = np.full(busy.size, float(pricing.busy_w))
    busy_s = float(busy.sum())
    idle_s = rec.replicas * window_s - busy_s
    busy_j = float(np.dot(busy, busy_w))
    energy_j = busy_j + float(pricing.idle_w) * idle_s
    return {
        "joules": energy_j,
        "average_power_w": energy_j / window_s if window_s > 0 else None,
        "joules_per_request": energy_j / completed if completed else None,
        "busy_s": busy_s,
        "idle_s": idle_s,
        "idle_w": float(pricing.idle_w),
        "busy_w_mean": busy_j / busy_s if busy_s > 0 else None,
        "upper_bound": pricing.upper_bound,
        "source": pricing.power_source,
    }


def cost_block(
    rec: RunRecords, pricing: Pricing, completed: int, robots: int | None
) -> dict[str, Any] | None:
    """summary.json's `cost` block, or None without a price."""
    price = pricing.usd_per_gpu_hour
    if price is None:
        return None
    window_s = rec.end_s - rec.warmup_s
    per_hour = rec.replicas * price
    return {
        "gpu": pricing.gpu,
        "usd_per_gpu_hour": price,
        "usd_per_hour": per_hour,
        "usd_per_million_requests": (
            per_hour * window_s / 3600.0 / completed * 1e6 if completed else None
        ),
        "usd_per_robot_hour": per_hour / robots if robots else None,
    }
