"""How fast over-limit work is refused: each case of issue 18's "bounded work" class as a
real `batchsim` process, median wall time of 3, next to the process start-up alone.

    python benchmarks/bench_refusal.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = str(ROOT / "profiles" / "h100" / "pi0-cudagraph.csv")
BASE = {
    "name": "refusal",
    "duration_s": 5,
    "profile": {"path": PROFILE, "cameras": 1},
    "workload": {"kind": "poisson", "rate_rps": 100},
    "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 5},
}
FLEET = {"kind": "robots", "count": 10**9, "control_hz": 50, "chunk": 50, "execute": 25}


def scenario(folder: Path, name: str, **changes) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, **changes}))
    return str(path)


def cases(folder: Path) -> dict[str, list[str]]:
    (folder / "huge.csv").write_text("batch_size,latency_ms\n1,1\n100000000,2\n")
    ok = scenario(folder, "ok")
    return {
        "rate_rps: 1e12": ["run", scenario(folder, "rate", workload={"kind": "poisson", "rate_rps": 1e12})],
        "max_batch: 10**9": ["run", scenario(folder, "batch", policy={"kind": "dynamic", "max_batch": 10**9})],
        "replicas: 10**9": ["run", scenario(folder, "replicas", cluster={"replicas": 10**9})],
        "10**9 robots": ["run", scenario(folder, "fleet", workload=FLEET)],
        "profile sizes 1 and 10**8": ["run", scenario(folder, "profile", profile=str(folder / "huge.csv"))],
        "1000 x 1000 grid": ["sweep", ok, "--out", str(folder / "sw"), "-q",
                             "--grid", "policy.max_batch=" + ",".join(map(str, range(1, 1001))),
                             "--grid", "policy.max_wait_ms=" + ",".join(map(str, range(1000)))],
        "--space 0:10**9": ["recommend", ok, "--slo", "p99_ms<=100", "--space", "policy.max_wait_ms=0:1000000000"],
    }  # fmt: skip


def wall_s(argv: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "sim.cli", *argv], capture_output=True).returncode
    return time.perf_counter() - started, code


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start_up = statistics.median(wall_s(["--help"])[0] for _ in range(3))
        print(
            f"{'case':28s} {'median s':>9s} {'exit':>5s}  (process start-up alone: {start_up:.2f} s)"
        )
        for name, argv in cases(folder).items():
            runs = [wall_s(argv) for _ in range(3)]
            print(f"{name:28s} {statistics.median(r[0] for r in runs):9.2f} {runs[0][1]:5d}")


if __name__ == "__main__":
    main()
