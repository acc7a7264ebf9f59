"""`batchsim estimate`: a measured profile moved to another GPU, or another input shape.

A calibrated roofline, per kernel. sim.profiles.estimate.work counts every kernel of one call on the meta
device (FLOPs; bytes of weights, and of activations and KV cache). On a GPU a kernel
takes

    max(FLOPs / (e_compute x dense bf16 peak), bytes / (e_memory x bandwidth)) + t_kernel

where weights always come from memory and an activation tensor of at most half the L2
cache stays in cache between the kernel that writes it and the next that reads it. A
call is the sum over its kernels; an eager (launch-bound) call takes at least
kernels x t_host, the host's time to issue one kernel. The factors (e_compute,
e_memory, t_kernel, and t_host when eager) are fitted to the measured medians on the
measured GPU's specs, then carried to the target, and each batch size's residual
carries too: estimate = measured x modelled(target) / modelled(source), for every
sample, so the spread carries over in proportion. The sidecar states all of this.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.io.files import column_list
from sim.profiles.estimate.gpus import GpuSpec, gpu_for_device, load_gpu

MIB = 2**20
# factors a fit may reach (efficiencies are shares of the peak; times in microseconds)
EFFICIENCY_BOUNDS = (1e-3, 1.0)
KERNEL_US_BOUNDS = (1e-3, 1e3)
MAX_PAIRS = 64  # (shape, batch size) pairs counted per estimate: each takes about a second


@dataclass(frozen=True)
class Factors:
    compute_efficiency: float  # share of the dense bf16 peak a kernel's FLOPs run at
    memory_efficiency: float  # share of the peak bandwidth a kernel's bytes move at
    kernel_us: float  # fixed GPU time per kernel (launch, ramp-up, tail)
    host_kernel_us: float | None = None  # eager: host time to issue one kernel


@dataclass(frozen=True)
class Parts:
    """One call's modelled time (ms), split as the estimate's sidecar reports it."""

    compute_ms: float  # kernels whose FLOPs bound them
    memory_ms: float  # kernels whose bytes bound them
    fixed_ms: float  # kernels x t_kernel
    host_ms: float  # eager: kernels x t_host (0 with CUDA graphs)

    @property
    def total_ms(self) -> float:
        return max(self.compute_ms + self.memory_ms + self.fixed_ms, self.host_ms)

    def as_dict(self) -> dict[str, float]:
        return {
            **{k: round(v, 4) for k, v in asdict(self).items()},
            "total_ms": round(self.total_ms, 4),
        }


def parts(work: Any, gpu: GpuSpec, factors: Factors) -> Parts:
    """The roofline time of one call (sim.profiles.estimate.work.CallWork) on `gpu` with these factors."""
    peak_flops = factors.compute_efficiency * gpu.bf16_dense_tflops * 1e12
    bandwidth = factors.memory_efficiency * gpu.memory_bandwidth_gbs * 1e9
    cache_bytes = gpu.l2_cache_mb * 1e6 / 2
    compute = memory = 0.0
    kernels = 0
    for stage in work.stages:
        c = stage.flops / peak_flops
        m = (stage.weight_bytes + stage.activation_bytes(cache_bytes)) / bandwidth
        compute += stage.repeat * float(c[c >= m].sum())
        memory += stage.repeat * float(m[m > c].sum())
        kernels += stage.repeat * stage.kernels
    host = kernels * (factors.host_kernel_us or 0.0) / 1e3
    return Parts(compute * 1e3, memory * 1e3, kernels * factors.kernel_us / 1e3, host)


def fit(
    works: list[Any], medians_ms: np.ndarray, gpu: GpuSpec, launch_bound: bool
) -> tuple[Factors, float, list[str]]:
    """Factors minimising the squared log error of the modelled medians; also the fit's
    RMS log error and the names of any factors that ended at a bound."""
    from scipy.optimize import least_squares

    target = np.log(np.asarray(medians_ms, dtype=float))

    def factors_of(x: np.ndarray) -> Factors:
        e = np.exp(x)
        return Factors(e[0], e[1], e[2], e[3] if launch_bound else None)

    def residuals(x: np.ndarray) -> np.ndarray:
        modelled = [parts(w, gpu, factors_of(x)).total_ms for w in works]
        return np.log(modelled) - target

    lo = [EFFICIENCY_BOUNDS[0]] * 2 + [KERNEL_US_BOUNDS[0]] * (2 if launch_bound else 1)
    hi = [EFFICIENCY_BOUNDS[1]] * 2 + [KERNEL_US_BOUNDS[1]] * (2 if launch_bound else 1)
    bounds = (np.log(lo), np.log(hi))
    # several starts: the roofline's max makes the error surface piecewise
    starts = itertools.product(
        (0.2, 0.6), (0.2, 0.6), (1.0, 5.0), *([(5.0, 30.0)] if launch_bound else [])
    )
    best = None
    for start in starts:
        result = least_squares(residuals, np.log(start), bounds=bounds, method="trf")
        if best is None or result.cost < best.cost:
            best = result
    names = ["compute_efficiency", "memory_efficiency", "kernel_us", "host_kernel_us"]
    at_bounds = [
        names[i]
        for i, value in enumerate(best.x)
        if math.isclose(value, bounds[0][i], abs_tol=1e-6)
        or math.isclose(value, bounds[1][i], abs_tol=1e-6)
    ]
    rms = float(np.sqrt(np.mean(best.fun**2)))
    return factors_of(best.x), rms, at_bounds


@lru_cache(maxsize=256)
def _bundle(model: str, size: str) -> Any:
    from sim.profiles.estimate.work import meta_bundle

    return meta_bundle(model, size)


@lru_cache(maxsize=1024)
def _count(model: str, size: str, batch_size: int, shape: tuple, dtype: str) -> Any:
    from sim.profiles.estimate.work import count, torch_dtype

    return count(_bundle(model, size), batch_size, dict(shape), torch_dtype(dtype))


@dataclass
class Estimate:
    frame: Any  # pandas.DataFrame: the estimated profile's rows
    meta: dict[str, Any]  # its sidecar
    rows: list[dict[str, Any]]  # per shape and batch size: measured, estimate, parts


def _model_of(provenance: dict[str, Any], model: str | None, source: str) -> tuple[str, str]:
    """(model, size) to count: a reference model NAME[:SIZE], or a plug-in
    package.module:factory (its size from the sidecar)."""
    from sim.models import MODELS, SIZES

    spec = model or provenance.get("reference_model")
    if spec is None and provenance.get("model") in MODELS:
        spec = f"{provenance['model']}:{provenance.get('size', 'full')}"
    if spec is None and _is_plugin(str(provenance.get("model", ""))):
        spec = provenance["model"]
    if spec is None:
        raise InputError(
            f"its sidecar names no model batchsim can count ({provenance.get('model')!r}); "
            "give {model} NAME[:SIZE] (e.g. pi0-torch:full) or package.module:factory",
            source=source,
            mentions=("model",),
        )
    spec = str(spec)
    if _is_plugin(spec):  # the factory is called with the size the profile was made at
        return spec, str(provenance.get("size", "full"))
    name, _, size = spec.partition(":")
    size = size or "full"
    if name not in MODELS or size not in SIZES:
        raise InputError(
            f"'{spec}' is not a model to count: NAME[:SIZE] with NAME one of "
            f"{', '.join(MODELS)} and SIZE one of {', '.join(SIZES)}, or package.module:factory",
            option="model" if model else source,
        )
    return name, size


def _is_plugin(spec: str) -> bool:
    module, sep, _ = spec.partition(":")
    return bool(sep) and "." in module


def _launch_bound(provenance: dict[str, Any], source: str) -> bool:
    if provenance.get("compile") is True:
        raise InputError(
            "was measured with torch.compile, whose fused kernels are not the ones the "
            "meta device counts; estimate from an eager or CUDA-graph profile",
            source=source,
        )
    return not (provenance.get("mode") == "cuda_graph" or provenance.get("cuda_graphs") is True)


def estimate(
    path: Path,
    target: GpuSpec,
    shape: dict[str, int] | None = None,
    select: dict[str, int] | None = None,
    model: str | None = None,
    source_gpu: str | None = None,
) -> Estimate:
    """Estimate the profile at `path` on `target` (and at `shape`, if given)."""
    import pandas as pd

    from sim.profiles.store import (
        IDLE_COLUMN,
        IGNORED_COLUMNS,
        MEASURED_COLUMNS,
        MEMORY_COLUMN,
        POWER_COLUMN,
        REQUIRED_COLUMNS,
        from_frame,
        read_table,
    )

    source = str(path)
    table = read_table(path)
    frame, provenance = table.frame, table.provenance
    if provenance.get("provenance") == "unknown":
        raise InputError(
            f"has no provenance sidecar ({Path(path).with_suffix('').name}.meta.json): an "
            "estimate needs the model, its parameter count, dtype and GPU it was measured on",
            source=source,
        )
    if provenance.get("estimate"):
        raise InputError(
            "is itself an estimate; estimate from the measured profile it names "
            f"({provenance['estimate'].get('source_profile')})",
            source=source,
        )
    for column in ("stage", IDLE_COLUMN):
        if column in frame.columns:
            raise InputError(
                f"has a '{column}' column; estimate takes a request-level profile "
                "(one latency per call, no stages or idle levels)",
                source=source,
            )
    name, size = _model_of(provenance, model, source)
    dtype = provenance.get("dtype")
    if dtype is None:
        raise InputError("the sidecar names no dtype", source=source)
    if source_gpu is not None:
        measured_on = load_gpu(source_gpu, "source_gpu")
    else:
        device = str(provenance.get("gpu") or provenance.get("device") or "")
        found = gpu_for_device(device)
        if found is None:
            raise InputError(
                f"was measured on '{device}', which is not a GPU in the table; give its "
                "specs with {source_gpu} NAME|SPEC.yaml",
                source=source,
                mentions=("source_gpu",),
            )
        measured_on = found
    launch_bound = _launch_bound(provenance, source)

    select = dict(select or {})
    shape_columns = [
        c
        for c in frame.columns
        if c not in (*REQUIRED_COLUMNS, *MEASURED_COLUMNS) and c not in IGNORED_COLUMNS
    ]
    for column, value in select.items():
        if column not in frame.columns:
            raise InputError(
                f"no column '{column}' to select on (shape columns: "
                f"{column_list(shape_columns) or 'none'})",
                option="select",
            )
        frame = frame[pd.to_numeric(frame[column], errors="coerce") == value]
        if frame.empty:
            raise InputError(f"no rows with {column}={value}", option="select")
    shape = dict(shape or {})
    for column in shape:
        if column in frame.columns and frame[column].nunique() > 1:
            values = ", ".join(map(str, sorted(frame[column].unique())))
            raise InputError(
                f"the profile holds {column} {values}; choose the rows to calibrate on with "
                f"{{select}} {column}=N",
                option="shape",
                mentions=("select",),
            )

    for column in shape_columns:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.isna().any() or (numbers != numbers.round()).any() or (numbers < 1).any():
            raise InputError(
                "a shape column must hold integers >= 1 (the model's inputs are counted at each)",
                source=source,
                field=column,
            )
    pairs = frame.groupby([*shape_columns, "batch_size"]).ngroups
    if pairs > MAX_PAIRS:
        raise InputError(
            f"holds {pairs:,} (shape, batch size) pairs; estimate counts at most {MAX_PAIRS} "
            "(about a second each): select fewer with {select}",
            source=source,
            mentions=("select",),
        )
    params = provenance.get("params")
    if isinstance(params, bool) or not isinstance(params, int):
        raise InputError(
            f"the sidecar's 'params' must be the model's parameter count (got {params!r})",
            source=source,
        )
    # the model is built (on the meta device) only once the cheap checks have passed
    bundle = _bundle(name, size)
    if params != bundle.param_count:
        raise InputError(
            f"the sidecar's params ({params:,}) disagree with {name}:{size}'s counted "
            f"parameters ({bundle.param_count:,}): the profile is of another model",
            source=source,
        )
    groups = frame.groupby(shape_columns, sort=True) if shape_columns else [((), frame)]
    works, medians, profiles = [], [], []
    for key, group in groups:
        values = key if isinstance(key, tuple) else (key,)
        src_shape = tuple(zip(shape_columns, (int(v) for v in values), strict=True))
        profile = from_frame(group.drop(columns=shape_columns), None, provenance, source)
        for b in profile.sizes:
            works.append(_count(name, size, b, src_shape, str(dtype)))
            medians.append(profile.latency_ms(b))
        profiles.append((src_shape, profile, group))
    factors, rms, at_bounds = fit(works, np.array(medians), measured_on, launch_bound)

    weights_mb = bundle.param_count * _itemsize(str(dtype)) / MIB
    limit_mb = target.memory_gb * 1e9 / MIB
    out_frames, rows, left_out = [], [], []
    # measured board power carries to the target by the table's ratio of maximum board power
    power_ratio = None
    if measured_on.max_w and target.max_w:
        power_ratio = target.max_w / measured_on.max_w
    for src_shape, profile, group in profiles:
        tgt_shape = tuple(sorted({**dict(src_shape), **shape}.items()))
        for b in profile.sizes:
            src_work = _count(name, size, b, src_shape, str(dtype))
            tgt_work = _count(name, size, b, tgt_shape, str(dtype))
            src_parts = parts(src_work, measured_on, factors)
            tgt_parts = parts(tgt_work, target, factors)
            ratio = tgt_parts.total_ms / src_parts.total_ms
            rows_b = group[group["batch_size"].astype(int) == b].copy()
            rows_b["latency_ms"] = rows_b["latency_ms"].astype(float) * ratio
            peak = None
            if MEMORY_COLUMN in rows_b:
                act_src = src_work.totals()["gb_activations"]
                act_tgt = tgt_work.totals()["gb_activations"]
                measured_peak = rows_b[MEMORY_COLUMN].astype(float)
                rows_b[MEMORY_COLUMN] = weights_mb + (measured_peak - weights_mb).clip(lower=0) * (
                    act_tgt / act_src
                )
                peak = float(rows_b[MEMORY_COLUMN].max())
            if POWER_COLUMN in rows_b:
                if power_ratio is None:  # no ratio to carry it by: left out, not guessed
                    rows_b = rows_b.drop(columns=POWER_COLUMN)
                else:
                    rows_b[POWER_COLUMN] = rows_b[POWER_COLUMN].astype(float) * power_ratio
            for column, value in shape.items():
                rows_b[column] = value
            row = {
                **dict(tgt_shape),
                "batch_size": b,
                "measured_ms": round(profile.latency_ms(b), 4),
                "estimate_ms": round(profile.latency_ms(b) * ratio, 4),
                "ratio": round(ratio, 5),
                "source": src_parts.as_dict(),
                "target": tgt_parts.as_dict(),
                "work": _work_summary(tgt_work),
                **({"peak_mem_mb": round(peak, 1)} if peak is not None else {}),
            }
            if peak is not None and peak > limit_mb:
                left_out.append({**dict(tgt_shape), "batch_size": b, "peak_mem_mb": round(peak, 1)})
                row["left_out"] = True
            else:
                out_frames.append(rows_b)
            rows.append(row)
    if not out_frames:
        raise InputError(
            f"no batch size fits the {target.name}'s {target.memory_gb:g} GB "
            f"({', '.join(str(r['batch_size']) for r in left_out)} all exceed it)",
            option="gpu",
        )
    out = pd.concat(out_frames, ignore_index=True)
    power = None
    if isinstance(provenance.get("power"), dict):
        power = carried_power(provenance["power"], power_ratio, path, measured_on, target)
    meta = _sidecar(
        provenance,
        path,
        measured_on,
        target,
        f"{name}:{size}",
        factors,
        rms,
        at_bounds,
        launch_bound,
        shape,
        select,
        rows,
        left_out,
        limit_mb,
    )
    if power is not None:
        meta["power"] = power
    return Estimate(out, meta, rows)


def carried_power(measured: dict, ratio: float | None, path, source, target) -> dict | None:
    """The source profile's measured power block, carried to the target GPU by the table's
    ratio of maximum board power (None where either GPU has no maximum in the table)."""
    if ratio is None:
        return None
    idle = measured.get("idle_w")
    return {
        "method": (
            f"estimated: {path}'s measured power_w (and idle) x {ratio:.4g}, the GPU table's "
            f"maximum board power of the {target.name} ({target.max_w:g} W) over the "
            f"{source.name}'s ({source.max_w:g} W)"
        ),
        "source_method": measured.get("method"),
        **({"idle_w": round(float(idle) * ratio, 2)} if isinstance(idle, int | float) else {}),
    }


def _work_summary(work: Any) -> dict[str, Any]:
    """The counted work of one call, in all and per stage (one pass, and its repeat)."""
    stages = {
        stage.name: {
            "repeat": stage.repeat,
            "gflop": round(float(stage.flops.sum()) / 1e9, 3),
            "gb_weights": round(float(stage.weight_bytes.sum()) / 1e9, 4),
            "gb_activations": round(float(stage.tensor_bytes.sum()) / 1e9, 4),
            "kernels": stage.kernels,
        }
        for stage in work.stages
    }
    return {**{k: round(v, 4) for k, v in work.totals().items()}, "stages": stages}


def _itemsize(dtype: str) -> int:
    return 4 if dtype.removeprefix("torch.") == "float32" else 2


# the source's measurement-specific keys: kept under estimate.source_provenance, not at top level
_MEASUREMENT_KEYS = ("device", "gpu", "driver", "cuda", "host_cpu", "date", "timing", "source_file")


def _sidecar(
    provenance, path, source_gpu, target, model, factors, rms, at_bounds, launch_bound, shape,
    select, rows, left_out, limit_mb,
) -> dict[str, Any]:  # fmt: skip
    assumptions = [
        "each kernel takes max(FLOPs / (compute efficiency x dense bf16 peak), bytes / "
        "(memory efficiency x bandwidth)) plus a fixed time per kernel; the efficiencies and "
        "the fixed time are fitted to the measured medians and carried to the target unchanged",
        "weights are read from memory on every pass (times the steps where a stage repeats); "
        "an activation tensor of at most half the L2 cache stays in cache between kernels",
        "the fixed time per kernel (launch, ramp-up, tail) is carried over: the target's "
        "clocks, SM count and launch latency do not enter",
        "the fitted model's error at each batch size carries to the target: estimate = "
        "measured x modelled(target) / modelled(source), every sample scaled alike",
        "peak memory carries over; with a new shape, the measured activation memory (peak "
        "minus weights) scales with the counted activation bytes",
    ]
    if launch_bound:
        assumptions.append(
            "the profile is launch-bound (eager): a call takes at least kernels x the host's "
            "time to issue one; that fixed part depends on the host CPU, not the GPU, and was "
            "carried over unchanged"
        )
    carried = {k: v for k, v in provenance.items() if k not in _MEASUREMENT_KEYS}
    return {
        **carried,
        "device": f"{target.name} (estimated)",
        "gpu": target.name,
        "date": datetime.date.today().isoformat(),  # of the estimate; the source's is below
        "timing": f"not timed: estimated from {path} by batchsim estimate",
        "reference_model": model,
        "estimate": {
            "source_profile": str(path),
            "source_gpu": source_gpu.as_dict(),
            "target_gpu": target.as_dict(),
            "model": model,
            "launch_bound": launch_bound,
            "shape": shape,
            "select": select,
            "factors": asdict(factors),
            "fit": {"rms_log_error": round(rms, 5), "at_bounds": at_bounds},
            "assumptions": assumptions,
            "left_out": left_out,
            "memory_limit_mb": round(limit_mb, 1),
            "per_size": rows,
            "source_provenance": {k: provenance[k] for k in _MEASUREMENT_KEYS if k in provenance},
        },
    }


def write(est: Estimate, out: Path) -> Path:
    """The estimated profile CSV and its NAME.meta.json, each written whole."""
    from sim.io.outputs import replacing, write_text
    from sim.profiles.store import meta_path_for

    with replacing(out) as tmp:
        est.frame.to_csv(tmp, index=False)
    write_text(meta_path_for(out), json.dumps(est.meta, indent=2, default=str) + "\n")
    return out
