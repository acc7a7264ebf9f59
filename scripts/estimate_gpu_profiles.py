"""Write the shipped estimated profiles: the measured H100 CUDA-graph pi0 profile moved to
GPUs we have no measurement of, by `batchsim estimate`.

Usage: python scripts/estimate_gpu_profiles.py

Writes profiles/estimated/<gpu>-pi0-cudagraph.csv (cameras 1 and 3, every sample) with
its NAME.meta.json (marked as an estimate: source, target, fitted factors, assumptions).
The H200 is left out on purpose: its measured profile is the held-out check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "profiles/h100/pi0-cudagraph.csv"  # relative: the sidecars name it so
TARGETS = ("a100", "l40s", "l40", "rtx4090", "rtx5090", "b200", "orin")


def main() -> int:
    from sim.cli import main as batchsim

    os.chdir(ROOT)
    for gpu in TARGETS:
        path = f"profiles/estimated/{gpu}-pi0-cudagraph.csv"
        code = batchsim(["estimate", "--from", SOURCE, "--gpu", gpu, "--out", path])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
