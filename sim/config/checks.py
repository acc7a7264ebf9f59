"""The checks a scenario passes against its profile before anything is simulated, one
function each: the work it asks for is within `limits:`, request shapes were measured, the
memory cap holds a batch, the policy launches only measured sizes, and the steps floor is
one the model can run. Each refuses with one InputError line; each takes plain values."""

from __future__ import annotations

from sim.config.limits import check
from sim.config.schema import InlineProfile, RobotGroup, Scenario
from sim.core.steps import Steps
from sim.errors import InputError
from sim.profiles.profile import Profile
from sim.profiles.staged import StagedModel


def group_requests_per_s(group: RobotGroup, min_service_s: float) -> float:
    """The most requests a second a robot group can send: each robot has one request in
    flight at a time, answered no sooner than the fastest batch, and a sync robot also
    moves through its executed actions before it asks again."""
    motion_s = group.actions_per_chunk / group.control_hz
    gap_s = min_service_s + (motion_s if group.mode == "sync" else 0.0)
    return group.count / gap_s


def expected_events(scenario: Scenario, min_service_s: float) -> tuple[float, str]:
    """An upper estimate of the requests (and other events) the workload makes in
    `duration_s`, and the field that sets it."""
    w, duration_s = scenario.workload, scenario.duration_s
    if w.kind in ("poisson", "gamma"):
        return w.rate_rps * duration_s, "workload.rate_rps"
    if w.kind == "periodic":
        return w.sources * w.rate_hz * duration_s, "workload.rate_hz"
    if w.kind == "mmpp":
        # arrivals at the highest rate, plus the chain's switches (n states / total mean sojourn)
        sojourn_s = sum(s.mean_s for s in w.states)
        switches = duration_s * len(w.states) / sojourn_s
        return max(s.rate_rps for s in w.states) * duration_s + switches, "workload.states"
    if w.kind == "trace":
        return 0.0, "workload.path"  # a trace holds what it holds: its file is read in full
    rate = sum(group_requests_per_s(g, min_service_s) for g in w.groups)
    return rate * duration_s, "workload.count"


def check_requests(scenario: Scenario, source: str, min_service_s: float) -> None:
    """The requests the traffic would make are within limits.max_requests (a fleet's
    estimate needs the fastest batch of the profile, `min_service_s`)."""
    if scenario.requests is not None:
        estimate, field = scenario.requests, "requests"
    else:
        estimate, field = expected_events(scenario, min_service_s)
    check(
        "max_requests", estimate, scenario.limits, "about {n} requests", source=source, field=field
    )


def check_work(scenario: Scenario, source: str, profile: Profile) -> None:
    """Refuse a profile or fleet larger than the scenario's limits, before anything is
    drawn: the profile's largest batch and the robots."""
    inline = isinstance(scenario.profile, InlineProfile)
    where, field = (source, "profile.batch_size") if inline else (profile.source, "batch_size")
    check(
        "max_batch",
        profile.max_size,
        scenario.limits,
        "a batch of {n} (its largest profiled size)",
        source=where,
        field=field,
    )
    if scenario.workload.kind == "robots":
        robots = sum(g.count for g in scenario.workload.groups)
        check(
            "max_clients",
            robots,
            scenario.limits,
            "{n} robots",
            source=source,
            field="workload.count",
        )


def check_shapes(
    scenario: Scenario, source: str, profile: Profile, shaped: dict[int, Profile] | None
) -> None:
    """Request shapes need a shape-aware profile that measured a shape at least as large."""
    asked = set(scenario.request_shapes or {})
    if scenario.workload.kind == "robots":
        asked |= {g.shape for g in scenario.workload.groups if g.shape is not None}
    field = "request_shapes" if scenario.request_shapes else "workload.shape"
    if shaped is None:
        if asked:
            raise InputError(
                "request shapes need a shape-aware profile: profile: {path: ..., shape: COLUMN}",
                source=source,
                field=field,
            )
        return
    too_big = [v for v in sorted(asked) if v > max(shaped)]
    if too_big:
        raise InputError(
            f"request shape {too_big[0]} is larger than any measured ({', '.join(map(str, shaped))})",
            source=source,
            field=field,
        )
    for variant in shaped.values():
        if variant.sizes != profile.sizes:
            raise InputError(
                "every shape must be measured at the same batch sizes", source=variant.source
            )


def memory_mb(scenario: Scenario, profile: Profile, in_flight: int) -> float:
    """The memory `in_flight` requests need (a request-level batch of that size, or that
    many in flight step by step): the profile's peak memory at that size, or with
    `kv_mb_per_request` the peak at its smallest size plus that much per request more."""
    kv = getattr(scenario.profile, "kv_mb_per_request", None)
    if kv is None:
        return profile.peak_memory_mb(in_flight)
    return profile.peak_memory_mb(profile.min_size) + (in_flight - profile.min_size) * kv


def memory_cap(scenario: Scenario, source: str, profile: Profile) -> int | None:
    """The most requests in memory at once under cluster.memory_mb (None: no limit): the
    largest batch (step level: the most in flight) whose memory fits."""
    limit = scenario.cluster.memory_mb
    if limit is None:
        return None
    if profile.peak_mem_mb is None:
        raise InputError(
            f"memory_mb needs a profile with a peak_mem_mb column ({profile.source} has none)",
            source=source,
            field="cluster.memory_mb",
        )
    sizes = range(profile.min_size, profile.max_size + 1)
    fits = [b for b in sizes if memory_mb(scenario, profile, b) <= limit]
    if not fits:
        needs = memory_mb(scenario, profile, profile.min_size)
        raise InputError(
            f"{limit:g} MB holds no batch: the smallest needs {needs:,.0f} MB",
            source=source,
            field="cluster.memory_mb",
        )
    return max(fits)


def check_policy_sizes(
    scenario: Scenario,
    source: str,
    model: StagedModel,
    sizes: set[int],
    cap: int | None,
    step_level: bool,
) -> None:
    """The policy launches only sizes every stage measured (profiles are never
    extrapolated) and, request level, that fit in memory."""
    profile = model.whole.profile
    field = scenario.policy.size_field
    for stage in model.stages if len(model.stages) > 1 else ():
        own = stage.variants.profile
        outside = [b for b in sorted(sizes) if not own.min_size <= b <= own.max_size]
        if outside:
            raise InputError(
                f"the policy can run batches of size {outside[-1]} but stage "
                f"'{stage.name}' ({own.source}) measures sizes {own.min_size}..{own.max_size}; "
                "profiles are never extrapolated",
                source=source,
                field=field,
            )
    declared = sorted(getattr(scenario.policy, "allowed_sizes", None) or [])
    unmeasured = [s for s in declared if not profile.min_size <= s <= profile.max_size]
    if unmeasured:
        raise InputError(
            f"size {unmeasured[-1]} is outside the sizes the profile ({profile.source}) "
            f"measures, {profile.min_size}..{profile.max_size}; profiles are never "
            "extrapolated",
            source=source,
            field="policy.allowed_sizes",
        )
    too_big = [s for s in sorted(sizes) if s > profile.max_size]
    too_small = [s for s in sorted(sizes) if s < profile.min_size]
    if too_big or too_small:
        bad = too_big[-1] if too_big else too_small[0]
        raise InputError(
            f"the policy can launch batches of size {bad} but the profile ({profile.source}) "
            f"measures sizes {profile.min_size}..{profile.max_size}; profiles are never "
            "extrapolated",
            source=source,
            field=field,
        )
    # step level, memory bounds the requests in flight instead (they hold their KV cache)
    if cap is not None and max(sizes) > cap and not step_level:
        limit = scenario.cluster.memory_mb
        raise InputError(
            f"the policy can launch batches of size {max(sizes)}, which need "
            f"{memory_mb(scenario, profile, max(sizes)):,.0f} MB, above cluster.memory_mb "
            f"{limit:g}; the largest batch that fits is {cap}",
            source=source,
            field=field,
        )


def steps_rule(
    scenario: Scenario,
    source: str,
    model: StagedModel,
    floor: int | None,
    step_level: bool,
) -> Steps | None:
    """Denoising steps per request, for step-level batching or a policy with a floor
    (`min_steps`); None: every batch runs the model whole. Refused where the model cannot
    run them: a floor above its steps, or idle levels."""
    if floor is None and not step_level:
        return None
    field = "policy.min_steps" if floor is not None else "policy.kind"
    if floor is not None and floor > model.steps:
        raise InputError(
            f"min_steps {floor} is above the model's {model.steps} steps (the last "
            f"stage's repeat; a plain profile is one stage run once)",
            source=source,
            field=field,
        )
    if model.whole.after_idle is not None:
        raise InputError(
            f"{'continuous batching' if step_level else 'min_steps'} does not model "
            "idle levels; choose one with profile: {path: ..., idle_ms: VALUE}",
            source=source,
            field=field,
        )
    top = model.whole.profile.max_size

    def medians(profile: Profile | None) -> list[float]:
        if profile is None:
            return [0.0] * (top + 1)
        return [0.0] * profile.min_size + [
            profile.latency_ms(b) / 1000.0 for b in range(profile.min_size, top + 1)
        ]

    prefix = None if model.prefix is None else model.prefix.profile
    return Steps(model.steps, floor, medians(prefix), medians(model.step.profile))
