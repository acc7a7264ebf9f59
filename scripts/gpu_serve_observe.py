"""The whole loop on a CUDA machine, in one folder to commit (issue 17's prepared GPU check,
under 8 minutes on an H100 or H200):

1. profile full-size pi0 (pi0-torch, bfloat16) with a CUDA graph per batch size;
2. serve it with `batchsim serve` (CUDA graphs, dynamic batching padded to the sizes);
3. drive it with `batchsim observe`: 64 and then 128 synchronized sync robots at 50 Hz,
   executing 25 of 50 actions, each fleet `--runs` times (30 s each);
4. `batchsim validate --records` each fleet's runs against the simulation.

Usage (on the GPU machine, from the repository root, after `make .venv/.installed-stamp`
with a CUDA build of torch, TORCH_SPEC=...):
    .venv/bin/python scripts/gpu_serve_observe.py [--out recorded/h200-serve-observe-pi0]
    .venv/bin/python scripts/gpu_serve_observe.py --smoke --out /tmp/x   # CPU, tiny, seconds

Writes OUT/profile/pi0-torch-cudagraph.csv (+ sidecar), OUT/served/, OUT/count_64/ and
OUT/count_128/ (observed-K/ and validation/ each) and OUT/provenance.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from serve_observe import BATCHSIM, provenance, record  # noqa: E402

SCENARIO = ROOT / "scenarios" / "gpu-serve-observe-pi0.yaml"
SIZES = "1,2,4,8,16,32,64"
FLEETS = (64, 128)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=2, help="observe runs per fleet")
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 4 s runs")
    args = parser.parse_args(argv)
    started = time.time()
    if args.smoke:  # the same steps, small: a check of the script itself
        model = ["--size", "tiny", "--device", "cpu"]
        sizes, fleets, duration = "1,2,4,8", (4, 8), 4.0
        overrides = [
            "model={name: pi0-torch, size: tiny, device: cpu, cameras: 1}",
            "policy.max_batch=8",
            "policy.allowed_sizes=[1,2,4,8]",
            "warmup_s=1",
        ]
    else:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_serve_observe: no CUDA device (use --smoke to test on a CPU)")
        model = ["--size", "full", "--device", "cuda", "--dtype", "bfloat16", "--cuda-graphs"]
        sizes, fleets, duration = SIZES, FLEETS, args.duration_s
        overrides = []
    out = args.out
    if out is None:
        import torch

        name = torch.cuda.get_device_name(0).lower() if torch.cuda.is_available() else "cpu"
        gpu = next((g for g in ("h100", "h200", "a100", "l40s", "b200") if g in name), "gpu")
        out = ROOT / "recorded" / f"{gpu}-serve-observe-pi0"
    out.mkdir(parents=True, exist_ok=True)
    profile = out / "profile" / "pi0-torch-cudagraph.csv"
    step = time.time()
    subprocess.run(
        [*BATCHSIM, "profile", "--model", "pi0-torch", *model, "--batch-sizes", sizes,
         "--cameras", "1", "--budget-s", "4", "--max-reps", "30", "--out", str(profile)],
        check=True,
        cwd=ROOT,
    )  # fmt: skip
    profile_s = time.time() - step
    overrides += [f"profile.path={profile.resolve()}", f"duration_s={duration}"]
    result = record(
        SCENARIO,
        out,
        args.runs,
        overrides,
        [[f"workload.count={n}"] for n in fleets],
        wait_s=300,
    )
    sidecar = json.loads(profile.with_suffix(".meta.json").read_text())
    # board power through NVML (batchsim profile samples it on CUDA): its method, idle
    # power and each size's mean, or why it was not sampled
    power = sidecar.get("power", {"method": "not recorded"})
    frame = pd.read_csv(profile)
    if "power_w" in frame:
        power["power_w_by_size"] = frame.groupby("batch_size").power_w.median().round(1).to_dict()
    result["profile"] = {"file": str(profile), "wall_s": profile_s, "power": power}
    print(f"board power: {json.dumps(power)}")
    result["provenance"] = provenance(out)
    result["wall_s"] = time.time() - started
    (out / "provenance.json").write_text(json.dumps(result, indent=2) + "\n")
    for n in fleets:
        report = out / f"count_{n}" / "validation" / "validation.json"
        if report.exists():
            rows = {r["metric"]: r for r in json.loads(report.read_text())["comparison"]}
            line = ", ".join(
                f"{m} recorded {rows[m]['live']:.3g} sim {rows[m]['sim']:.3g} "
                f"({rows[m]['sim_error']:+.1%})"
                for m in ("latency_p50_ms", "latency_p99_ms", "robots_stall_fraction")
                if m in rows and rows[m]["live"] is not None and rows[m]["sim_error"] is not None
            )
            print(f"{n} robots: {line}", flush=True)
    print(f"wrote {out} in {result['wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
