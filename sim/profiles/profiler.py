"""Measure a model's latency and memory per batch size (and input shape), with provenance.

Per batch size and shape: warm-up calls first (first-call and new-shape costs are
large), then timed calls until the median of the samples is stable (the median of
all samples and of all but the last few agree within `tolerance`) or the time budget
is spent. On CUDA, CUDA events around each call on a synchronised device (optionally
a CUDA graph captured per batch size and replayed); on CPU, perf_counter with a fixed
thread count. Every sample is kept. Peak memory: torch.cuda.max_memory_allocated on
CUDA; on CPU, the peak resident memory of the process during the calls (weights and
interpreter included; Linux resets the peak through /proc/self/clear_refs). Batch sizes
run in increasing order, so memory an allocator keeps from a smaller batch never
inflates a larger one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sim.errors import InputError, one_line
from sim.io.files import read_csv, read_json
from sim.io.outputs import replacing, write_text
from sim.profiles.power import PowerMeter
from sim.profiles.store import meta_path_for

DTYPES = ("float32", "bfloat16", "float16")
# the provenance fields that must agree for two profiles to be combined
STAMP_FIELDS = (
    "device",
    "torch",
    "transformers",
    "dtype",
    "threads",
    "model",
    "size",
    "config_hash",
    "timing",
    "compile",
    "cuda_graphs",
)


@dataclass
class ProfileOptions:
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False
    cuda_graphs: bool = False
    threads: int | None = None
    warmup: int = 3
    min_reps: int = 5
    max_reps: int = 30
    budget_s: float = 10.0  # per batch size and shape, after warm-up
    tolerance: float = 0.02
    # interleaved: timed calls in shuffled rounds over every batch size, fresh inputs for
    # every call, as a server meets them (see Profiler.measure_interleaved)
    interleave: bool = False
    # with interleave: idle levels (ms) to wait before timed calls, e.g. (0, 10, 200); each
    # round times every (size, level); rows get an idle_ms column (see sim.profiles.profile)
    idle_ms: tuple[float, ...] = ()
    # with interleave: wall seconds of timed rounds (idle waits included), in place of
    # budget_s; rounds stop before they would overrun it, within min_reps..max_reps
    wall_budget_s: float | None = None
    # with idle levels: back-to-back calls per size in each round's busy block; they cost
    # no sleep, and most of a loaded server's batches run back to back
    busy_repeats: int = 1
    # with idle levels: untimed calls for this long before each round's busy block; the
    # first calls after an idle wait run slower for about 70 ms of work, and idle 0 means
    # a server that has been busy
    busy_lead_ms: float = 100.0
    # time each stage of the model (its `stages(**inputs)`) in interleaved rounds, not the
    # whole call: rows get a stage column and the sidecar lists the stages with repeats
    stages: bool = False

    def validate(self) -> None:
        """One clear error for options this machine cannot honour."""
        import torch

        if self.dtype not in DTYPES:
            raise InputError(
                f"unknown dtype '{self.dtype}'; one of {', '.join(DTYPES)}", option="dtype"
            )
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"unsupported device '{self.device}'; cpu or cuda", option="device")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InputError(
                "no CUDA device is available here; use {device} cpu",
                option="device",
                mentions=("device",),
            )
        if self.cuda_graphs and self.device != "cuda":
            raise InputError(
                "CUDA graphs need {device} cuda", option="cuda_graphs", mentions=("device",)
            )
        if self.threads is not None and self.threads < 1:
            raise InputError("must be >= 1", option="threads")
        if any(not level >= 0 for level in self.idle_ms):  # NaN is refused too
            raise InputError("idle levels must be >= 0 ms", option="idle_ms")
        if self.idle_ms and not self.interleave:
            raise InputError("idle levels are measured in interleaved rounds", option="idle_ms")
        if self.busy_repeats < 1:
            raise InputError("must be >= 1", source="busy_repeats")
        if self.busy_lead_ms < 0:
            raise InputError("must be >= 0 ms", source="busy_lead_ms")
        if self.warmup < 0:
            raise InputError(f"must be >= 0 (got {self.warmup})", option="warmup")
        if self.max_reps < 1:
            raise InputError(f"must be >= 1 (got {self.max_reps})", option="max_reps")
        if not (math.isfinite(self.budget_s) and self.budget_s >= 0):  # 0: min_reps calls
            raise InputError(
                f"must be a finite number of seconds >= 0 (got {self.budget_s:g})",
                option="budget_s",
            )
        if self.stages and self.compile:
            raise InputError(
                "stages are timed as the module defines them: {stages} with {compile} is not "
                "supported",
                option="stages",
                mentions=("stages", "compile"),
            )
        if self.stages and not self.interleave:
            raise InputError("stages are measured in interleaved rounds", option="stages")
        if self.wall_budget_s is not None and not (self.interleave and self.wall_budget_s > 0):
            raise InputError(
                "a wall budget (> 0 s) is for interleaved rounds", source="wall_budget_s"
            )


def _peak_rss_mb() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    # not Linux, or not allowed: the peak then spans the whole process
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def host_cpu() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def provenance(bundle: Any, options: ProfileOptions) -> dict[str, Any]:
    import torch

    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = None
    meta: dict[str, Any] = {
        "model": bundle.name,
        "size": bundle.size,
        "params": bundle.param_count,
        "config_hash": bundle.config_hash,
        "config": bundle.config,
        "torch": torch.__version__,
        "transformers": tf_version,
        "python": platform.python_version(),
        "dtype": options.dtype,
        "compile": options.compile,
        "cuda_graphs": options.cuda_graphs,
        "threads": torch.get_num_threads(),
        "host_cpu": host_cpu(),
        "date": dt.date.today().isoformat(),
        "warmup": options.warmup,
        "weights": "random (latency does not depend on weight values); built from configs",
    }
    if options.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        meta.update(
            device=props.name,
            cuda=torch.version.cuda,
            driver=_nvidia_driver(),
            timing="CUDA events around one call, device synchronised"
            + ("; CUDA graph replay" if options.cuda_graphs else ""),
            peak_mem_unit="MiB (torch.cuda.max_memory_allocated)",
        )
    else:
        meta.update(
            device=f"cpu: {host_cpu()}",
            timing=f"time.perf_counter around one call, {torch.get_num_threads()} threads",
            peak_mem_unit="MiB (peak resident memory of the whole process during the calls)",
        )
    if options.interleave:
        meta["timing"] += (
            "; interleaved: shuffled rounds over the batch sizes, fresh inputs per call"
        )
    if options.idle_ms:
        levels = ", ".join(f"{level:g}" for level in sorted(set(options.idle_ms)))
        meta["timing"] += f"; idle_ms: {levels} ms asleep before the call"
    return meta


def _nvidia_driver() -> str | None:
    path = Path("/proc/driver/nvidia/version")
    if path.exists():
        return path.read_text().split("Kernel Module")[-1].split()[0]
    return None


def stable(samples: Sequence[float], tolerance: float, window: int = 3) -> bool:
    """The median has settled: with and without the last `window` samples it agrees within tolerance."""
    if len(samples) < window + 2:
        return False
    full = statistics.median(samples)
    before = statistics.median(samples[:-window])
    return abs(full - before) <= tolerance * before


def capture_cuda_graph(call: Callable[[], Any]) -> Callable[[], Any]:
    """`call` captured once into a CUDA graph (after two calls on a side stream, as
    capture needs), returned as its replay: the graph reads the tensors `call` read at
    capture, so refill those to run it on new inputs (profile and serve both do)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


class Profiler:
    """Times one model bundle on one device."""

    def __init__(self, bundle: Any, options: ProfileOptions):
        import torch

        options.validate()
        if options.threads is not None:
            torch.set_num_threads(options.threads)
        self.torch = torch
        self.bundle = bundle
        self.options = options
        self.dtype = getattr(torch, options.dtype)
        self.module = bundle.module.to(options.device, self.dtype).eval()
        self.call = torch.compile(self.module) if options.compile else self.module
        self.stage_list: list[tuple[str, int]] = []  # with stages: (name, repeat), as measured
        self.meter: PowerMeter | None = None  # sampling board power (CUDA, through NVML)

    def _runner(self, inputs: dict[str, Any]) -> Callable[[], Any]:
        """A zero-argument call for these inputs: plain, or a replayed CUDA graph."""
        if not self.options.cuda_graphs:
            return lambda: self.call(**inputs)
        return capture_cuda_graph(lambda: self.call(**inputs))

    def stage_calls(self, inputs: dict[str, Any]) -> list[tuple[str, int, Callable[[], Any]]]:
        """The model's stages on these inputs: (name, repeat, zero-argument call) each, from
        its `stages(**inputs)` (which runs the earlier stages once to build their inputs)."""
        stages = getattr(self.module, "stages", None)
        name = self.bundle.name
        if not callable(stages):
            raise InputError(
                f"model {name} exposes no stages: give its module a stages(**inputs) method "
                "returning (name, repeat, call) for each stage",
                option="stages",
            )
        try:
            calls = list(stages(**inputs))
        except Exception as exc:
            raise InputError(
                f"model {name}: stages() failed: {one_line(exc)}", option="stages"
            ) from None
        valid = bool(calls) and all(
            isinstance(c, tuple)
            and len(c) == 3
            and isinstance(c[0], str)
            and c[0]
            and type(c[1]) is int
            and c[1] >= 1
            and callable(c[2])
            for c in calls
        )
        if not valid or len({c[0] for c in calls}) != len(calls):
            raise InputError(
                f"model {name}: stages() must return (name, repeat >= 1, call) for each "
                "stage, with distinct names",
                option="stages",
            )
        return calls

    def inputs(self, batch_size: int, cameras: int, instruction_tokens: int | None) -> dict:
        return self.bundle.make_inputs(
            batch_size,
            cameras=cameras,
            instruction_tokens=instruction_tokens,
            device=self.options.device,
            dtype=self.dtype,
        )

    def time_call(self, run: Callable[[], Any]) -> float:
        """One timed call in ms: CUDA events on a synchronised device, or perf_counter."""
        torch = self.torch
        if self.options.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        run()
        return (time.perf_counter() - t0) * 1000

    def warm(
        self, batch_size: int, cameras: int, instruction_tokens: int | None
    ) -> tuple[Callable[[], Any], dict, float]:
        """Build inputs and the runner, make the warm-up calls: (runner, inputs, peak MiB)."""
        torch = self.torch
        inputs = self.inputs(batch_size, cameras, instruction_tokens)
        if self.options.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_peak_rss()
        run = self._runner(inputs)
        for _ in range(self.options.warmup):
            run()
        return run, inputs, self.peak_mb()

    def peak_mb(self) -> float:
        """Peak memory since the last reset (see the module's note)."""
        if self.options.device == "cuda":
            return self.torch.cuda.max_memory_allocated() / 2**20
        return _peak_rss_mb()

    def timed(self, batch_size: int, run: Callable[[], Any]) -> float:
        """time_call, with the call's window logged for the power meter (when sampling)."""
        if self.meter is None:
            return self.time_call(run)
        return self.meter.timed(batch_size, lambda: self.time_call(run))

    def measure(
        self, batch_size: int, cameras: int, instruction_tokens: int | None
    ) -> tuple[list[float], float]:
        """(latency samples in ms, peak memory in MiB) for one batch size and shape."""
        opts = self.options
        run, _, _ = self.warm(batch_size, cameras, instruction_tokens)
        samples: list[float] = []
        spent_s = 0.0
        while len(samples) < opts.max_reps:
            ms = self.timed(batch_size, run)
            samples.append(ms)
            spent_s += ms / 1000
            if len(samples) >= opts.min_reps and (
                stable(samples, opts.tolerance) or spent_s >= opts.budget_s
            ):
                break
        return samples, self.peak_mb()

    def measure_interleaved(
        self,
        batch_sizes: Sequence[int],
        cameras: int,
        instruction_tokens: int | None,
        seed: int = 0,
    ) -> dict[tuple[int, float], tuple[list[float], float]]:
        """Samples for every batch size at once, the way a server meets them.

        A serving loop runs batch sizes in no fixed order, on inputs it has just built,
        spread over the whole run (through the machine's slow spells as well as its quiet
        ones); one size timed back to back on the same inputs runs on warm caches in one
        moment of the machine's life, and comes out faster and narrower. So: warm up every
        size, then time rounds that run every size once, in a shuffled order, on fresh
        inputs (built untimed), until each size has `min_reps` samples and the budget
        (`budget_s` per size, or `wall_budget_s` for all rounds) is spent, or `max_reps`
        rounds are done. With CUDA graphs the captured graph's own input buffers are
        refilled instead. With idle levels, a round
        times every (size, level): first the back-to-back calls in one busy block (what
        idle 0 means is a server that has been busy: `busy_lead_ms` of untimed calls lead
        in; `busy_repeats` calls per size), then each call after its sleep.
        With `stages`, each call is the model's stages, each timed on its own (after the
        untimed calls that build their inputs), and the samples are {stage: samples}; with
        CUDA graphs each stage is captured once per size and replayed.
        Returns {(size, idle ms): (samples, peak memory)}.
        """
        import numpy as np

        opts = self.options
        sizes = sorted(set(batch_sizes))
        levels = sorted(set(opts.idle_ms)) or [0.0]
        warmed = {b: self.warm(b, cameras, instruction_tokens) for b in sizes}
        graphs: dict[int, list[tuple[str, int, Callable[[], Any]]]] = {}
        if opts.stages and opts.cuda_graphs:  # one graph per stage and size
            for b in sizes:
                calls = self.stage_calls(warmed[b][1])
                graphs[b] = [(name, rep, capture_cuda_graph(call)) for name, rep, call in calls]
        keys = [(b, level) for b in sizes for level in levels]
        samples: dict[tuple[int, float], Any] = {key: [] for key in keys}
        if opts.stages:
            samples = {key: {} for key in keys}
        order_rng = np.random.default_rng(seed)
        spent_s = 0.0
        budget_s = opts.budget_s * len(keys)
        started = time.perf_counter()
        busy = [key for key in keys if key[1] == 0] * opts.busy_repeats
        after_idle = [key for key in keys if key[1] > 0]
        for rounds in range(1, opts.max_reps + 1):
            # back-to-back calls in one busy block (as a loaded server runs them), then the
            # calls after idle waits; each block in a shuffled order
            block = [busy[i] for i in order_rng.permutation(len(busy))]
            block += [after_idle[i] for i in order_rng.permutation(len(after_idle))]
            if after_idle:  # the previous round ended in idle waits: get busy again first
                lead_ms = 0.0
                while lead_ms < opts.busy_lead_ms:
                    lead_ms += self.time_call(warmed[block[0][0]][0])
            for b, level in block:
                run, static_inputs, _ = warmed[b]
                fresh = self.inputs(b, cameras, instruction_tokens)
                if opts.cuda_graphs:  # a graph reads its captured buffers: refill them
                    for key, tensor in static_inputs.items():
                        tensor.copy_(fresh[key])
                    call = run
                else:
                    call = lambda inputs=fresh: self.call(**inputs)  # noqa: E731
                if opts.stages:
                    # untimed: each stage's inputs (graphs replay their captured ones)
                    calls = graphs[b] if graphs else self.stage_calls(fresh)
                    self.stage_list = [(name, repeat) for name, repeat, _ in calls]
                if level:
                    time.sleep(level / 1000)  # the server's idle wait before this batch
                if opts.stages:
                    for name, _, stage_call in calls:
                        ms = self.timed(b, stage_call)
                        samples[b, level].setdefault(name, []).append(ms)
                        spent_s += ms / 1000
                    continue
                ms = self.timed(b, call)
                samples[b, level].append(ms)
                spent_s += ms / 1000
            if rounds < opts.min_reps:
                continue
            if opts.wall_budget_s is None:
                if spent_s >= budget_s:
                    break
            elif (time.perf_counter() - started) * (rounds + 1) / rounds > opts.wall_budget_s:
                break  # one more round would overrun the wall budget
        return {(b, level): (samples[b, level], warmed[b][2]) for b, level in keys}


def sample_rows(
    batch_size: int, cameras: int, samples: Sequence[float], peak_mb: float, **columns: Any
) -> list[dict[str, Any]]:
    """One profile CSV row per latency sample (`columns`: idle_ms, run, ... as measured)."""
    return [
        {
            "batch_size": batch_size,
            "latency_ms": ms,
            "peak_mem_mb": peak_mb,
            "cameras": cameras,
            **columns,
            "rep": i,
        }  # fmt: skip
        for i, ms in enumerate(samples)
    ]


def profile_model(
    bundle: Any,
    batch_sizes: Sequence[int],
    cameras: Sequence[int] = (1,),
    instruction_tokens: int | None = None,
    options: ProfileOptions | None = None,
    on_step: Callable[[int, int, list[float]], None] | None = None,
    meter: PowerMeter | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Measure every (cameras, batch size); returns one row per sample and the provenance.

    On CUDA, board power is sampled through NVML during the timed rounds (sim.profiles.
    power): a `power_w` column per size and the sidecar's `power` block (`meter` gives a
    meter of the caller's, e.g. a fake NVML's in tests). Interrupted (Ctrl-C), it returns
    what it measured so far, with `interrupted` set in the provenance.
    """
    options = options or ProfileOptions()
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise InputError("batch sizes must be integers >= 1", option="batch_sizes")
    if any(c < 1 for c in cameras):
        raise InputError("cameras must be >= 1", option="cameras")
    profiler = Profiler(bundle, options)
    meta = provenance(bundle, options)
    if meter is None and options.device == "cuda":
        meter, how = PowerMeter.open()
        if meter is None:
            meta["power"] = {"method": how}
    profiler.meter = meter
    if meter is not None:
        meter.start()
    rows: list[dict[str, Any]] = []
    power: dict[tuple[int, int], float] = {}  # (cameras, batch size) -> mean board power
    try:
        for cams in cameras:
            if options.interleave:
                measured = profiler.measure_interleaved(batch_sizes, cams, instruction_tokens)
            for b in sorted(set(batch_sizes)):
                if options.interleave:
                    per_level = {lv: v for (size, lv), v in measured.items() if size == b}
                else:
                    per_level = {0.0: profiler.measure(b, cams, instruction_tokens)}
                for level, (samples, peak) in per_level.items():
                    idle = {"idle_ms": level} if options.idle_ms else {}
                    for stage, stage_samples in _by_stage(samples):
                        named = {"stage": stage} if stage else {}
                        rows.extend(sample_rows(b, cams, stage_samples, peak, **named, **idle))
                if on_step is not None:
                    # a staged call's time: the sum of its stages, each run its repeat times
                    on_step(b, cams, _call_ms(per_level, profiler.stage_list))
            if meter is not None:  # each camera count's power apart
                power.update({(cams, b): w for b, w in meter.per_size_w().items()})
                meter.windows.clear()
    except KeyboardInterrupt:
        meta["interrupted"] = True
    finally:
        if meter is not None:
            meter.stop()
    if power and all((r["cameras"], r["batch_size"]) in power for r in rows):
        meta["power"] = meter.provenance()
        for row in rows:
            row["power_w"] = round(power[row["cameras"], row["batch_size"]], 2)
    else:
        power = {}  # none, or not for every size measured: no column
    if options.stages and profiler.stage_list:
        meta["stages"] = [{"name": name, "repeat": repeat} for name, repeat in profiler.stage_list]
        meta["timing"] += "; each stage timed on its own, on inputs its earlier stages built"
    columns = [
        "batch_size",
        "latency_ms",
        "peak_mem_mb",
        *(["power_w"] if power else []),
        "cameras",
    ]
    columns += ["stage"] if options.stages else []
    columns += ["idle_ms", "rep"] if options.idle_ms else ["rep"]
    return pd.DataFrame(rows, columns=columns), meta


def _by_stage(samples: Any) -> list[tuple[str | None, list[float]]]:
    """(stage, samples) of one measurement: one (None, samples) for a whole call."""
    if isinstance(samples, dict):
        return list(samples.items())
    return [(None, samples)]


def _call_ms(per_level: dict[float, Any], stage_list: list[tuple[str, int]]) -> list[float]:
    """The times of whole calls (staged: per round, the sum of repeat x each stage)."""
    out: list[float] = []
    for samples, _ in per_level.values():
        if not isinstance(samples, dict):
            out.extend(samples)
            continue
        repeat = dict(stage_list)
        rounds = min(len(v) for v in samples.values())
        out.extend(
            sum(repeat.get(name, 1) * v[i] for name, v in samples.items()) for i in range(rounds)
        )
    return out


def stamp(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in STAMP_FIELDS}


def write_profile(
    frame: pd.DataFrame, meta: dict[str, Any], path: Path, append: bool = False
) -> Path:
    """Write NAME.csv and NAME.meta.json; with `append`, add to an existing profile of the same stamp."""
    path = Path(path)
    meta_path = meta_path_for(path)
    if append and path.exists():
        old_meta = read_json(meta_path, "provenance sidecar") if meta_path.exists() else {}
        if stamp(old_meta) != stamp(meta):
            differ = [k for k in STAMP_FIELDS if old_meta.get(k) != meta.get(k)]
            raise InputError(
                f"was measured with a different stamp ({', '.join(differ)} differ); "
                "profiles of different stamps are never combined",
                source=str(path),
            )
        old = read_csv(path, "profile")
        keys = set(zip(frame.batch_size, frame.cameras, strict=True))
        keep = old[[k not in keys for k in zip(old.batch_size, old.cameras, strict=True)]]
        frame = pd.concat([keep, frame], ignore_index=True)
    with replacing(path) as tmp:  # the CSV whole, then its sidecar whole
        order = ["cameras", "batch_size", *(["stage"] if "stage" in frame else []), "rep"]
        frame.sort_values(order, kind="stable").to_csv(tmp, index=False)
    write_text(meta_path, json.dumps(meta, indent=2, default=str) + "\n")
    return path


def check_append_target(path: Path) -> None:
    """`--append` onto PATH: it is absent, or a profile this command wrote (checked before
    anything is measured)."""
    if not path.exists():
        return
    frame = read_csv(path, "profile")
    missing = [c for c in ("batch_size", "latency_ms", "cameras", "rep") if c not in frame.columns]
    if missing:
        raise InputError(
            f"is not a profile written by batchsim profile (no {', '.join(missing)} column); "
            "appending adds to one of those",
            source=str(path),
        )
    meta_path = meta_path_for(path)
    if not meta_path.exists():
        raise InputError(
            f"has no provenance sidecar {meta_path.name}; {{append}} needs it to check the stamp",
            source=str(path),
            mentions=("append",),
        )
    if not isinstance(read_json(meta_path, "provenance sidecar"), dict):
        raise InputError("provenance must be a JSON object", source=str(meta_path))


def check_same_stamp(metas: Sequence[dict[str, Any]], sources: Sequence[str]) -> None:
    """Refuse to combine profiles whose provenance stamps differ."""
    first = stamp(metas[0])
    for meta, source in zip(metas[1:], sources[1:], strict=True):
        if stamp(meta) != first:
            differ = [k for k in STAMP_FIELDS if meta.get(k) != first.get(k)]
            raise InputError(
                f"differs from {sources[0]} in {', '.join(differ)}; profiles of different stamps are never combined",
                source=source,
            )
