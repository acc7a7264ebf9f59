"""What the core answers a driver that asks a replica what to do: Start a batch, or Sleep.

Plain values (not frozen: made once per decision on the hottest path, never changed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Start:
    """Run batch `batch` on its replica: `count` requests padded to `padded` (shape `variant`).

    A request-level batch runs every stage, its last `steps` times (None: the model's K).
    A step-level iteration (`admitted` not None) runs the prefix of the `admitted` newly
    admitted requests (shape `admitted_variant`) and one step of the `count` in flight.
    """

    batch: int
    count: int
    padded: int
    variant: int | None = None
    steps: int | None = None
    admitted: int | None = None
    admitted_variant: int | None = None
    guided: bool = False  # it holds an RTC-guided request: the guided model's cost


@dataclass(slots=True)
class Sleep:
    """Nothing to run: decide again at `until_s`, or (None) when something else happens.

    `parked`: another idle replica of the same queue waits on the same condition and will
    hand the turn on (the core lists it in `rewakes`); until then this one sleeps with no
    wake of its own, whatever the clock.
    """

    until_s: float | None
    parked: bool = False
