"""`batchsim profile`, `plot-profile`, `estimate` and `gpus`: measuring a model's profile,
drawing it, and moving it to a GPU you have not measured."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import sim.api as api
from sim.cli.app import command
from sim.cli.options import column_values, integers, milliseconds, repeated
from sim.cli.render import err_console, fmt, new_table, out_console


@command()
def profile(
    model: Annotated[
        str,
        typer.Option("--model", help="pi0 | pi0-torch | openvla | act, or package.module:factory"),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="profile CSV to write (NAME.meta.json beside it)")
    ],
    size: Annotated[str, typer.Option("--size", help="tiny | small | full")] = "tiny",
    device: Annotated[str, typer.Option("--device", help="cpu | cuda")] = "cpu",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="e.g. 1,2,4,8")] = "1,2,4,8",
    cameras: Annotated[
        str, typer.Option("--cameras", help="camera counts to measure, e.g. 1,3")
    ] = "1",
    instruction_tokens: Annotated[
        int | None,
        typer.Option("--instruction-tokens", help="instruction length (default: the model's)"),
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float32 | bfloat16 | float16")] = "float32",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model")] = False,
    cuda_graphs: Annotated[
        bool, typer.Option("--cuda-graphs", help="capture a CUDA graph per batch size")
    ] = False,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (recorded)")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed calls per batch size")] = 3,
    max_reps: Annotated[
        int, typer.Option("--max-reps", help="timed calls at most per batch size")
    ] = 30,
    budget_s: Annotated[
        float, typer.Option("--budget-s", help="timed seconds at most per batch size")
    ] = 10.0,
    append: Annotated[
        bool, typer.Option("--append", help="add to an existing profile of the same stamp")
    ] = False,
    plot_: Annotated[bool, typer.Option("--plot", help="also draw NAME.png")] = False,
    interleave: Annotated[
        bool,
        typer.Option(
            "--interleave",
            help="time shuffled rounds over the batch sizes on fresh inputs, as a server meets them",
        ),
    ] = False,
    idle_ms: Annotated[
        str | None,
        typer.Option(
            "--idle-ms",
            help="also time calls after these idle waits, e.g. 0,10,200 (implies --interleave)",
        ),
    ] = None,
    stages: Annotated[
        bool,
        typer.Option(
            "--stages",
            help="time each stage of the model (pi0: vision, prefix, step; OpenVLA: prefill, "
            "decode) and write a staged profile (implies --interleave)",
        ),
    ] = False,
) -> None:
    """Measure a model's latency and memory per batch size into a profile CSV."""
    sizes, cams = integers(batch_sizes, "batch_sizes"), integers(cameras, "cameras")
    # the bar starts with the first measurement: a refused plan prints its one line only
    bar = Progress(
        TextColumn("[bold]profile[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batch sizes"),
        TimeElapsedColumn(),
        console=err_console,
    )
    task = bar.add_task(f"{model}-{size} on {device}", total=len(sizes) * len(cams))

    def step(b: int, c: int, samples: list[float]) -> None:
        if not bar.live.is_started:
            bar.start()
        median = sorted(samples)[len(samples) // 2]
        bar.console.print(
            f"  batch {b:>3}, cameras {c}: median {median:9.2f} ms over {len(samples)} calls"
        )
        bar.advance(task)

    try:
        path, meta = api.profile(
            model,
            out,
            size=size,
            device=device,
            batch_sizes=sizes,
            cameras=cams,
            instruction_tokens=instruction_tokens,
            append=append,
            on_size=step,
            dtype=dtype,
            compile=compile_,
            cuda_graphs=cuda_graphs,
            threads=threads,
            warmup=warmup,
            max_reps=max_reps,
            budget_s=budget_s,
            interleave=interleave,
            idle_ms=milliseconds(idle_ms, "idle_ms"),
            stages=stages,
        )
    finally:
        bar.stop()
    out_console.print(
        f"wrote {path} and {path.with_suffix('').with_suffix('.meta.json').name}"
        + (" (interrupted: partial)" if meta.get("interrupted") else "")
    )
    if plot_:
        out_console.print(f"wrote {api.plot_profile(path)}")


@command("plot-profile")
def plot_profile(path: Annotated[Path, typer.Argument(help="a profile CSV")]) -> None:
    """Draw a profile: latency and per-request latency vs batch size, and memory."""
    out_console.print(f"wrote {api.plot_profile(path)}")


@command()
def estimate(
    source: Annotated[
        Path, typer.Option("--from", help="a measured profile CSV (with its NAME.meta.json)")
    ],
    gpu: Annotated[
        str, typer.Option("--gpu", help="target GPU: a name from `batchsim gpus`, or a spec file")
    ],
    out: Annotated[Path, typer.Option("--out", help="estimated profile CSV to write")],
    shape: repeated(
        "--shape", "COLUMN=VALUE: re-target the input shape too (e.g. cameras=3); repeatable"
    ) = None,
    select: repeated(
        "--select", "COLUMN=VALUE: calibrate on these rows of the measured profile only"
    ) = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="the profile's architecture, NAME[:SIZE] (default: its sidecar's)"
        ),
    ] = None,
    source_gpu: Annotated[
        str | None,
        typer.Option("--source-gpu", help="the GPU it was measured on (default: its sidecar's)"),
    ] = None,
) -> None:
    """Estimate a profile on a GPU you don't own: a calibrated roofline transfer of a measured one."""
    with err_console.status("counting the model's work on the meta device and fitting"):
        est = api.estimate_profile(
            source,
            gpu,
            out,
            shape=column_values(shape, "shape"),
            select=column_values(select, "select"),
            model=model,
            source_gpu=source_gpu,
        )
    path = out
    info = est.meta["estimate"]
    f = info["factors"]
    table = new_table(
        title=f"batchsim estimate: {source} ({info['source_gpu']['name']}) -> {info['target_gpu']['name']}",
        header_style="bold",
    )
    for column in ("batch", "shape", "measured ms", "estimate ms", "compute", "memory", "fixed"):
        table.add_column(column, justify="right" if column != "shape" else "left")
    for row in est.rows:
        shape_text = ", ".join(f"{k}={row[k]}" for k in row if k not in _ESTIMATE_ROW_KEYS)
        t = row["target"]
        table.add_row(
            str(row["batch_size"]),
            shape_text or "-",
            fmt(row["measured_ms"], 1),
            fmt(row["estimate_ms"], 1) + (" (left out)" if row.get("left_out") else ""),
            fmt(t["compute_ms"], 1),
            fmt(t["memory_ms"], 1),
            fmt(max(t["fixed_ms"], t["host_ms"]), 1),
        )
    out_console.print(table)
    out_console.print(
        "compute / memory / fixed: the target's modelled parts (ms); the estimate is the "
        "measured time x modelled(target) / modelled(source)"
    )
    host = f", host {f['host_kernel_us']:.2f} us/kernel" if f["host_kernel_us"] else ""
    out_console.print(
        f"fitted on {info['source_gpu']['name']}: compute {f['compute_efficiency']:.0%} of peak, "
        f"memory {f['memory_efficiency']:.0%} of bandwidth, {f['kernel_us']:.2f} us per kernel"
        f"{host}; RMS log error {info['fit']['rms_log_error']:.3f}"
        + (
            f" (at a bound: {', '.join(info['fit']['at_bounds'])})"
            if info["fit"]["at_bounds"]
            else ""
        )
    )
    if info["launch_bound"]:
        out_console.print(
            "launch-bound (eager) profile: the host's part was carried over unchanged; it "
            "depends on the host CPU, not the GPU"
        )
    for left in info["left_out"]:
        out_console.print(
            f"left out: batch {left['batch_size']} needs {left['peak_mem_mb']:,.0f} MiB, more "
            f"than the {info['target_gpu']['name']}'s {info['memory_limit_mb']:,.0f} MiB"
        )
    out_console.print(f"wrote {path} and {path.with_suffix('').name}.meta.json (an estimate)")


_ESTIMATE_ROW_KEYS = frozenset(
    {
        "batch_size",
        "measured_ms",
        "estimate_ms",
        "ratio",
        "source",
        "target",
        "work",
        "peak_mem_mb",
        "left_out",
    }
)


@command()
def gpus() -> None:
    """The GPU table `batchsim estimate` uses: dense bf16 TFLOPS, bandwidth, memory, sources."""
    from sim.profiles.estimate.gpus import GPUS, IDLE_SOURCE

    table = new_table(title="GPUs (dense bf16; a spec file adds others)", header_style="bold")
    columns = ("name", "bf16 TFLOPS", "GB/s", "memory GB", "L2 MB", "max W", "idle W", "source")
    for column in columns:
        table.add_column(column)
    for spec in GPUS.values():
        table.add_row(
            spec.name,
            f"{spec.bf16_dense_tflops:g}",
            f"{spec.memory_bandwidth_gbs:g}",
            f"{spec.memory_gb:g}",
            f"{spec.l2_cache_mb:g}",
            f"{spec.max_w:g}" if spec.max_w else "-",
            f"{spec.idle_w:g}" if spec.idle_w else "-",
            spec.source
            + (f" ({spec.note})" if spec.note else "")
            + (f"; power: {spec.power_source}" if spec.power_source else ""),
        )
    out_console.print(table)
    out_console.print(f"idle W: {IDLE_SOURCE}; measure it, or give the scenario power: {{idle_w}}")
