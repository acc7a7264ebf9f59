"""Convert the measured H100/H200 runs in shared/gpu-profiles/ into batchsim profiles.

Usage: python scripts/import_gpu_profiles.py [SHARED_GPU_PROFILES_DIR]

Writes profiles/<gpu>/<model>-<mode>.csv (one row per timed run: batch_size,
latency_ms, peak_mem_mb, cameras) and the provenance sidecar NAME.meta.json.
peak_mem_mb holds torch's max_memory_allocated in MiB (2**20 bytes), as measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
# stated in shared/gpu-profiles/README.md for all three files
COMMON = {
    "driver": "580.159.04",
    "cuda": "13.0",
    "torch": "2.11.0+cu130",
    "transformers": "5.17.0",
    "python": "3.12.3",
    "date": "2026-11-25",
    "timing": "CUDA events around one full inference call, device synchronised; "
    "3 warm-up calls per batch size, then 10 or 15 timed calls",
    "weights": "random (latency does not depend on weight values); models built from configs",
    "peak_mem_unit": "MiB (torch.cuda.max_memory_allocated)",
}
GPU_DIR = {"NVIDIA H100 80GB HBM3": "h100", "NVIDIA H200": "h200"}


def write(frame: pd.DataFrame, meta: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.rename(columns={"peak_mem_mib": "peak_mem_mb"})
    out = out[["batch_size", "latency_ms", "peak_mem_mb", "cameras"]].sort_values(
        ["cameras", "batch_size"], kind="stable"
    )
    out.to_csv(path, index=False)
    path.with_suffix("").with_suffix(".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({len(out)} samples)")


def main(src: Path) -> None:
    for name in (
        "h100-torch-pi0-eager-vs-cudagraph.json",
        "h200-torch-pi0-eager-vs-cudagraph.json",
    ):
        data = json.loads((src / name).read_text())
        rows = pd.DataFrame(data["rows"])
        gpu = GPU_DIR[data["meta"]["gpu"]]
        for mode, group in rows.groupby("mode"):
            meta = {
                **COMMON,
                **data["meta"],
                "device": data["meta"]["gpu"],
                "mode": mode,
                "compile": "cuda graph captured per batch size"
                if mode == "cuda_graph"
                else "eager",
                "source_file": f"shared/gpu-profiles/{name}",
                # the architecture in sim/models whose work `batchsim estimate` counts
                "reference_model": "pi0-torch:full",
            }
            write(group, meta, ROOT / "profiles" / gpu / f"pi0-{mode.replace('_', '')}.csv")
    name = "h100-hf-eager-pi0-openvla.json"
    data = json.loads((src / name).read_text())
    rows = pd.DataFrame(data["rows"])
    for model, group in rows.groupby("model"):
        meta = {
            **COMMON,
            **{k: v for k, v in data["meta"].items() if not k.startswith(("pi0_", "openvla_"))},
            "params": data["meta"][f"{model}_params"],
            "model": {
                "pi0": "PaliGemma (SigLIP So400m/14 @224 + Gemma 2B) prefix, Gemma-300M-sized action "
                "expert, 10 flow steps, chunk 50, 48 language tokens (transformers, eager)",
                "openvla": "SigLIP So400m/14 + DINOv2-L/14 fused, MLP projector, Llama-2 7B "
                "generating 7 action tokens with generate (transformers, eager)",
            }[model],
            "device": data["meta"]["gpu"],
            "mode": "eager",
            "source_file": f"shared/gpu-profiles/{name}",
        }
        write(group, meta, ROOT / "profiles" / "h100" / f"{model}-hf-eager.csv")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "gpu-profiles")
