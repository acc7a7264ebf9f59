"""A resolved scenario's traffic: its random streams, open-loop arrivals with their classes,
deadlines and shapes, or its robots. Deterministic under the seed, and the same whatever
the policy (common random numbers, INV-10)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.config.resolve import ResolvedScenario
from sim.config.schema import RobotsWorkload
from sim.core.traffic import OpenTraffic
from sim.errors import InputError
from sim.workload import open as open_loop
from sim.workload.open import Arrivals
from sim.workload.phases import phase_offset_s
from sim.workload.robots import RobotClient, RobotParams
from sim.workload.sync_robot import SyncRobot
from sim.workload.traffic import Fleet

# the run's named random streams, spawned by position: adding one never changes the others
STREAMS = ("arrivals", "service", "classes", "dispatch", "robots", "shapes")


def streams(seed: int, service_draw: int = 0) -> dict[str, np.random.Generator]:
    """Independent named streams from the seed: the same arrivals whatever the policy.
    `service_draw` k > 0: the same traffic with the k-th other draw of service times
    (validate's replications of one live run's traffic)."""
    seeds = np.random.SeedSequence(seed).spawn(len(STREAMS))
    if service_draw:
        seeds[1] = np.random.SeedSequence([seed, service_draw])
    return {name: np.random.default_rng(s) for name, s in zip(STREAMS, seeds, strict=True)}


def traffic(
    resolved: ResolvedScenario, rngs: dict[str, np.random.Generator], log_stalls: bool = False
) -> OpenTraffic | Fleet:
    """The scenario's traffic: open-loop requests drawn up front, or the robot fleet
    (`log_stalls`: every robot also keeps each freeze's start and end, for a trace)."""
    s = resolved.scenario
    if s.workload.kind == "robots":
        clients = robots(resolved, rngs["robots"], log_stalls)
        return Fleet(clients, s.duration_s, s.requests)
    times = arrivals(resolved, rngs["arrivals"])
    attributes = request_attributes(resolved, times, rngs["classes"])
    return OpenTraffic(
        times,
        deadline_s=attributes["deadline_s"],
        priority=attributes.get("priority"),
        class_id=attributes.get("class_id"),
        class_names=attributes.get("class_names"),
        shape=request_shapes(resolved, len(times), rngs["shapes"]),
    )


def robots(
    resolved: ResolvedScenario, rng: np.random.Generator, log_stalls: bool = False
) -> list[RobotClient]:
    """One client per robot (client_class), numbered across groups in order."""
    s = resolved.scenario
    workload: RobotsWorkload = s.workload
    slo_ms = s.slo.latency_ms
    clients: list[RobotClient] = []
    for g_index, group in enumerate(workload.groups):
        execute = group.actions_per_chunk
        motion_s = execute / group.control_hz  # one period of the robot's loop
        for r in range(group.count):
            start_s = phase_offset_s(group.start, r, group.count, motion_s, rng)
            params = RobotParams(
                control_hz=group.control_hz,
                chunk=group.chunk,
                execute=execute,
                mode=group.mode,
                threshold=group.threshold,
                start_s=start_s,
                jitter_s=group.jitter_ms / 1000.0,
                uplink_s=group.network_ms.uplink / 1000.0,
                downlink_s=group.network_ms.downlink / 1000.0,
                network_jitter_s=group.network_ms.jitter / 1000.0,
                slo_s=None if slo_ms is None else slo_ms / 1000.0,
                group=group.name or f"group{g_index}",
                shape=group.shape,
                **_rtc_params(group),
            )
            child = np.random.default_rng(rng.integers(2**63))
            client = client_class(params)
            clients.append(client(len(clients), params, child, s.warmup_s, log_stalls))
    return clients


def _rtc_params(group: Any) -> dict[str, Any]:
    if group.mode != "rtc":
        return {}
    return {
        "delay_steps": None if group.delay_steps == "auto" else group.delay_steps,
        "initial_delay_steps": group.initial_delay_steps,
        "max_delay_steps": group.max_delay_steps,
        "guidance": group.guidance,
        "guided": group.guidance == "inference" and group.guidance_step_factor > 1.0,
    }


def client_class(params: RobotParams) -> type:
    """The lean SyncRobot for a sync robot (its figures are derived after the run), RtcRobot
    for real-time chunking, else RobotClient, which counts them on the way."""
    if params.mode == "rtc":
        from sim.workload.rtc import RtcRobot

        return RtcRobot
    return SyncRobot if params.mode == "sync" else RobotClient


def arrivals(resolved: ResolvedScenario, rng: np.random.Generator) -> Arrivals:
    """Open loop: every arrival of the run, drawn up front (or read from the trace)."""
    s = resolved.scenario
    w, duration_s, count = s.workload, s.duration_s, s.requests
    if w.kind == "poisson":
        return open_loop.poisson_arrivals(rng, w.rate_rps, duration_s, count)
    if w.kind == "gamma":
        return open_loop.gamma_arrivals(rng, w.rate_rps, w.cv, duration_s, count)
    if w.kind == "periodic":
        if w.phases_ms is not None:
            phases_s = np.asarray(w.phases_ms) / 1000.0
        else:
            phases_s = open_loop.staggered_phases_s(w.sources, w.rate_hz, w.phase, rng)
        jitter_s = w.jitter_ms / 1000.0
        return open_loop.periodic_arrivals(
            rng, w.sources, w.rate_hz, phases_s, jitter_s, duration_s, count
        )
    if w.kind == "mmpp":
        rates = [state.rate_rps for state in w.states]
        sojourns = [state.mean_s for state in w.states]
        return open_loop.mmpp_arrivals(rng, rates, sojourns, duration_s, count)
    if w.kind == "trace":
        path = resolved.path(w.path, "workload.path")
        try:
            return open_loop.trace_arrivals(path, w.time_column, w.source_column, duration_s, count)
        except InputError as exc:
            if exc.source is None:
                raise InputError(str(exc), source=resolved.source) from None
            raise
    raise ValueError(f"{w.kind} is closed-loop traffic, not arrivals")


def request_shapes(
    resolved: ResolvedScenario, n: int, rng: np.random.Generator
) -> np.ndarray | None:
    """Open loop: each request's shape drawn by share (all the largest when none is given)."""
    shaped = resolved.shaped
    if shaped is None:
        return None
    shares = resolved.scenario.request_shapes or {max(shaped): 1.0}
    values = np.array(sorted(shares), dtype=np.int32)
    p = np.array([shares[v] for v in values], dtype=float)
    return values[rng.choice(values.size, size=n, p=p / p.sum())]


def request_attributes(
    resolved: ResolvedScenario, times: Arrivals, rng: np.random.Generator
) -> dict[str, Any]:
    """Per-request class, deadline and priority: classes drawn by share, deadline = arrival
    + SLO."""
    s = resolved.scenario
    n = len(times)
    if not s.classes:
        slo_s = np.inf if s.slo.latency_ms is None else s.slo.latency_ms / 1000.0
        return {"deadline_s": times.time_s + slo_s}
    shares = np.array([c.share for c in s.classes], dtype=float)
    class_id = rng.choice(len(s.classes), size=n, p=shares / shares.sum()).astype(np.int16)
    default_ms = s.slo.latency_ms
    slo_s = np.array(
        [
            np.inf
            if (c.latency_ms or default_ms) is None
            else (c.latency_ms or default_ms) / 1000.0
            for c in s.classes
        ]
    )
    return {
        "deadline_s": times.time_s + slo_s[class_id],
        "priority": np.array([c.priority for c in s.classes])[class_id],
        "class_id": class_id,
        "class_names": tuple(c.name for c in s.classes),
    }
