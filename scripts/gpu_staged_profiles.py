"""Measure staged profiles of the full-size pi0 reference model on a GPU, eager and with
CUDA graphs, in bfloat16: the prepared GPU check of issue 15 (under 8 minutes on an H100
or H200, model build included).

Usage (on the GPU machine, from the repository root):
    python scripts/gpu_staged_profiles.py [--out profiles/GPU] [--wall-s 150]
    python scripts/gpu_staged_profiles.py --device cpu --size tiny --out /tmp/x   # smoke test

Writes OUT/pi0-staged-eager.csv and OUT/pi0-staged-cudagraph.csv (one row per timed
stage call: batch_size, latency_ms, peak_mem_mb, cameras, stage, rep) with their
provenance sidecars, as `batchsim profile --stages` does, and prints each stage's
median per size. OUT defaults to profiles/<gpu> (h100, h200, ...). The model is
sim/models/pi0.py at size full (SigLIP So400m + Gemma 2B prefix + 300M expert, 3.25B
parameters), built on the device from its configs with random weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = (1, 2, 4, 8, 16, 32, 64)
CAMERAS = (1, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--size", default="full", choices=("tiny", "small", "full"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--wall-s", type=float, default=150.0, help="timed rounds per mode")
    parser.add_argument("--batch-sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args(argv)

    import torch

    from sim import models
    from sim.errors import InputError
    from sim.profiles.profiler import ProfileOptions, profile_model, write_profile

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_staged_profiles: error: no CUDA device here", file=sys.stderr)
        return 2
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    started = time.perf_counter()
    # build on the device: random init of 3.25B weights on the host would take minutes
    with torch.device(args.device):
        bundle = models.build("pi0", args.size)
    print(f"built pi0-{args.size}: {bundle.param_count:,} parameters in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    out = args.out
    if out is None:
        name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
        gpu = next((g for g in ("h100", "h200", "a100", "l40s", "b200") if g in name.lower()), None)
        out = ROOT / "profiles" / (gpu or name.lower().replace(" ", "-"))
    out.mkdir(parents=True, exist_ok=True)
    modes = [("eager", False), ("cudagraph", True)] if args.device == "cuda" else [("eager", False)]
    for mode, graphs in modes:
        options = ProfileOptions(
            args.device, dtype, cuda_graphs=graphs, warmup=3, min_reps=5, max_reps=15,
            interleave=True, wall_budget_s=args.wall_s, stages=True,
        )  # fmt: skip
        t0 = time.perf_counter()
        try:
            frame, meta = profile_model(bundle, sizes, CAMERAS, None, options)
        except InputError as exc:
            print(f"gpu_staged_profiles: error: {exc}", file=sys.stderr)
            return 2
        meta["derived"] = False  # measured stage by stage, not split from a whole profile
        path = write_profile(frame, meta, out / f"pi0-staged-{mode}.csv")
        medians = frame.groupby(["cameras", "stage", "batch_size"]).latency_ms.median()
        print(f"{mode}: wrote {path} in {time.perf_counter() - t0:.0f} s")
        print(medians.unstack("batch_size").round(2).to_string())
        # board power through NVML (profile_model samples it on CUDA), or why not
        print(f"power: {json.dumps(meta.get('power', {'method': 'not recorded'}))}")
        if "power_w" in frame:
            print(frame.groupby("batch_size").power_w.median().round(1).to_string())
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
