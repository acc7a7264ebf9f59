"""`batchsim estimate`'s fidelity: the two held-out checks, per batch size, and its
batch-1 estimates beside published figures for other stacks.

    python benchmarks/bench_estimate.py

1. Another GPU: calibrated on the H100 CUDA-graph profile alone, the H200 estimate
   against the measured H200 profile (cameras 1 and 3, batch 1 to 64; target: 5%).
2. Another shape: calibrated on the H100's 1-camera rows alone, --shape cameras=3
   against the measured 3-camera rows (target: 10%).
3. Batch-1 estimates of the plain-torch pi0 stack (CUDA graphs) per GPU and camera count,
   with the published figures the README sets beside them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from sim.profiles.estimate.gpus import GPUS
from sim.profiles.estimate.roofline import estimate

ROOT = Path(__file__).resolve().parents[1]
H100 = ROOT / "profiles/h100/pi0-cudagraph.csv"
BY = ["cameras", "batch_size"]


def medians(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby(BY).latency_ms.median()


def main() -> None:
    start = time.perf_counter()
    measured_h100 = medians(pd.read_csv(H100))
    h200 = medians(estimate(H100, GPUS["h200"]).frame)
    truth = medians(pd.read_csv(ROOT / "profiles/h200/pi0-cudagraph.csv"))
    error = (100 * (h200 / truth - 1)).unstack("batch_size")
    print("1. H200 estimated from the H100 alone: error vs measured (%), by batch size")
    print(error.round(1).to_string())
    print(f"   worst {error.abs().max().max():.1f}% (target 5%)\n")

    three = estimate(H100, GPUS["h100"], shape={"cameras": 3}, select={"cameras": 1})
    est3 = medians(three.frame).loc[3]
    err3 = 100 * (est3 / measured_h100.loc[3] - 1)
    copied = 100 * (measured_h100.loc[1] / measured_h100.loc[3] - 1)
    table = pd.DataFrame({"estimate error %": err3, "copying 1 camera %": copied}).T
    print("2. 3 cameras estimated from the H100's 1-camera rows: error vs measured (%)")
    print(table.round(1).to_string())
    print(f"   worst {err3.abs().max():.1f}% (target 10%)\n")

    print("3. batch-1 estimates (ms) of the plain-torch pi0 stack with CUDA graphs")
    rows = {}
    for gpu in ("h100", "a100", "l40", "l40s", "rtx4090", "rtx5090", "b200", "orin"):
        views = {}
        for cameras in (1, 2, 3):
            if gpu == "h100" and cameras != 2:
                views[cameras] = measured_h100.loc[(cameras, 1)]
                continue
            shape = {"cameras": cameras} if cameras == 2 else None
            select = {"cameras": 1} if cameras == 2 else None
            est = estimate(H100, GPUS[gpu], shape=shape, select=select).frame
            views[cameras] = medians(est).loc[(cameras, 1)]
        rows[gpu + (" (measured; 2: estimated)" if gpu == "h100" else "")] = views
    print(pd.DataFrame(rows).T.rename(columns=lambda c: f"{c} camera(s)").round(1).to_string())
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
