"""The live runner: the server core driven by a real clock, against a real model.

The scenario's traffic (same seed, so the same open-loop arrivals, or the same robot
clients, as the simulation) reaches the server core as the real clock passes it; the
core admits, asks the policy and keeps the records exactly as in the simulator. This
driver keeps only the clock, the sleeping and the model call: on `Start` it builds the
batch's inputs and runs the model, synchronously (the replica is this thread). What the
real system adds around the model's forward (building the inputs, Python scheduling) is
measured per batch as `overhead_ms`, and how late each sleep ends as `wake_late_ms`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.config.resolve import ResolvedScenario
from sim.config.schema import Scenario
from sim.core.records import RunRecords
from sim.core.server import ServerCore, Start
from sim.errors import InputError
from sim.profiles.profile import Profile


@dataclass
class LiveResult:
    records: RunRecords
    forward_ms: np.ndarray  # per batch: the model call alone
    overhead_ms: np.ndarray  # per batch: the rest of the batch's time (inputs, bookkeeping)
    wake_late_ms: np.ndarray  # per sleep: how much later than asked the server woke
    failures: list[str] = field(default_factory=list)  # one line per failed batch


def check_servable(scenario: Scenario, source: str) -> None:
    """The live runner calls the model whole per batch: it cannot run step-level batching
    or a chosen number of steps (refused before anything is measured)."""
    from sim.config.policy import min_steps
    from sim.policies import registry

    policy = scenario.policy
    step_level = policy.kind in registry.BUILTIN and registry.is_step_level(
        registry.BUILTIN[policy.kind]
    )
    if step_level or min_steps(policy) is not None:
        raise InputError(
            "the live runner serves request-level policies that run the model whole "
            "(not continuous batching, not min_steps)",
            source=source,
            field="policy.kind" if step_level else "policy.min_steps",
        )


def run_live(
    loaded: ResolvedScenario,
    model: Callable[..., Any],
    make_inputs: Callable[[int], dict[str, Any]],
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    planned_with: Profile | None = None,
) -> LiveResult:
    """Serve the scenario's traffic in real time with `model`.

    `make_inputs(padded_size)` builds one batch's keyword arguments; `model(**inputs)` runs it.
    A batch whose model call raises is recorded as failed (its requests' outcome; robots get
    a failure notice) and the server goes on. `planned_with`: the profile the policy plans
    with (default: the scenario's).
    """
    from sim.engine import pipeline

    s = loaded.scenario
    if s.cluster.replicas != 1 or s.cluster.queue != "shared":
        raise InputError("the live runner serves one replica with a shared queue", field="cluster")
    check_servable(s, loaded.source)
    closed = s.workload.kind == "robots"
    if closed and s.duration_s is None:
        raise InputError("live robot fleets run for duration_s", field="requests")
    parts = pipeline.build(loaded, planned_with=planned_with)
    core = ServerCore(parts.traffic, parts.spec)
    horizon = s.duration_s
    forward_ms: list[float] = []
    overhead_ms: list[float] = []
    wake_late_ms: list[float] = []
    failures: list[str] = []
    t0 = clock()
    while True:
        now = clock() - t0
        if horizon is not None and now >= horizon:
            break
        action = core.decide(0, now)
        if type(action) is Start:
            inputs = make_inputs(action.padded)
            f0 = clock()
            try:
                model(**inputs)
                ok = True
            except Exception as exc:  # a failing batch must not stop the server
                ok = False
                failures.append(
                    f"batch {action.batch} ({action.count} requests): {type(exc).__name__}: {exc}"
                )
            f1 = clock()
            end = f1 - t0
            core.end(action.batch, end, ok)
            core.free(0, end, end - now)
            forward_ms.append((f1 - f0) * 1000)
            overhead_ms.append((end - now) * 1000 - forward_ms[-1])
            continue
        wake = action.until_s
        if wake is None:
            if horizon is None or not closed:
                break  # nothing will arrive and nothing is timed: done
            wake = horizon  # a robot fleet goes on acting until the end
        elif horizon is not None:
            wake = min(wake, horizon)
        delay = wake - (clock() - t0)
        if delay > 0:
            sleep(delay)
            wake_late_ms.append((clock() - t0 - wake) * 1000)
    end_s = horizon if horizon is not None else clock() - t0
    return LiveResult(
        core.records(float(end_s), s.warmup_s),
        np.asarray(forward_ms),
        np.asarray(overhead_ms),
        np.asarray(wake_late_ms),
        failures,
    )
