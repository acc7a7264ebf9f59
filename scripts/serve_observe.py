"""Record runs of a scenario over real websockets, then validate the simulator against them.

One `batchsim serve` process serves the scenario's model; `batchsim observe` drives the
scenario's traffic against it `--runs` times (each run's records in RUN/observed-K); the
server's own records go to RUN/served when it is stopped (SIGTERM); then
`batchsim validate --records` compares the simulation with the observed runs
(RUN/validation). provenance.json says what ran where.

Usage (from the repository root):
    python scripts/serve_observe.py scenarios/serve-observe-cpu.yaml --out recorded/serve-observe-cpu
    python scripts/serve_observe.py SCENARIO --out DIR --runs 2 --set workload.count=128 ...

`--set` applies to serve, observe and validate alike; `--observe-set` only to observe and
validate (a fleet size, say: one server meets several fleets, see gpu_serve_observe.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCHSIM = [sys.executable, "-m", "sim.cli"]


def sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def start_server(scenario: Path, out: Path, overrides: list[str], wait_s: float):
    """`batchsim serve` on a free port; returns the process and the port once it listens."""
    process = subprocess.Popen(
        [*BATCHSIM, "serve", str(scenario), "--port", "0", "--out", str(out), *sets(overrides)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "listening on ws://" in line:
            return process, int(line.rsplit(":", 1)[1])
        if process.poll() is not None:
            raise SystemExit(
                f"serve_observe: the server exited ({process.returncode}) before listening"
            )
    process.kill()
    raise SystemExit(f"serve_observe: the server did not start within {wait_s:g} s")


def stop_server(process) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    return out.strip()


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def record(
    scenario: Path,
    out: Path,
    runs: int,
    overrides: list[str],
    observe_overrides: list[list[str]],
    wait_s: float,
    validate: bool = True,
) -> dict:
    """Serve once; observe each fleet in `observe_overrides` `runs` times; validate each."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    server, port = start_server(scenario, out / "served", overrides, wait_s)
    target = f"ws://127.0.0.1:{port}"
    folders: dict[str, list[str]] = {}
    try:
        for fleet in observe_overrides:
            tag = "-".join(v.replace("=", "_").split(".")[-1] for v in fleet) or "scenario"
            prefix = out if len(observe_overrides) == 1 else out / tag
            folders[tag] = []
            for k in range(runs):
                folder = prefix / f"observed-{k + 1}"
                run(
                    [*BATCHSIM, "observe", str(scenario), "--target", target, "--out",
                     str(folder), *sets(overrides + fleet)]
                )  # fmt: skip
                folders[tag].append(str(folder))
    finally:
        served = stop_server(server)
    print(served, flush=True)
    if validate:
        for fleet, tag in zip(observe_overrides, folders, strict=True):
            prefix = out if len(observe_overrides) == 1 else out / tag
            run(
                [*BATCHSIM, "validate", str(scenario), "--records", *folders[tag], "--out",
                 str(prefix / "validation"), *sets(overrides + fleet)]
            )  # fmt: skip
    return {
        "scenario": str(scenario),
        "overrides": overrides,
        "fleets": observe_overrides,
        "runs_per_fleet": runs,
        "observed": folders,
        "server": served,
        "wall_s": time.time() - started,
    }


def provenance(out: Path | None = None) -> dict:
    """Where and from what the recording ran; `git_dirty`: tracked files changed, the
    output folder itself aside."""
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "."]
        + (
            [f":(exclude){Path(out).resolve().relative_to(ROOT)}"]
            if out is not None and Path(out).resolve().is_relative_to(ROOT)
            else []
        ),
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    info = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_dirty": bool(dirty),  # the commit plus uncommitted changes
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--observe-set", action="append", default=[])
    parser.add_argument("--wait-s", type=float, default=300.0, help="for the server to listen")
    args = parser.parse_args(argv)
    result = record(
        args.scenario, args.out, args.runs, args.overrides, [args.observe_set], args.wait_s
    )
    result["provenance"] = provenance(args.out)
    (args.out / "provenance.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
