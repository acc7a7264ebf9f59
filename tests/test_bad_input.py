"""Bad input of every kind: exit 2, exactly one line on stderr, no traceback, bounded work.

Each case runs `batchsim` in a child forked from a preloaded server (tests/isolated.py)
under a memory cap and a timeout, so a memory blow-up or a hang is a failure of that case,
not of the suite. Two parts:
- a table of hand-written bad inputs, one or more for each class of issue 18 (files,
  numbers, bounded work, outputs, sweeps, recommend, profile, plot, messages), each with
  the words its line must hold;
- hypothesis mutations of valid scenarios, profiles and traces: whatever they produce
  must either run (exit 0) or be refused with one clear line.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from tests.isolated import Outcome, run_isolated

PROFILE = str(ROOT / "profiles" / "h100" / "pi0-cudagraph.csv")
MEM_MB = 2048  # far above what any case needs: a blow-up is caught, not survived
TIMEOUT_S = 30.0  # a hang guard only (these are refused in well under a second)

OPEN = {
    "name": "bad-input",
    "seed": 1,
    "duration_s": 5,
    "profile": {"path": PROFILE, "cameras": 1},
    "workload": {"kind": "poisson", "rate_rps": 100},
    "policy": {"kind": "dynamic", "max_batch": 8, "max_wait_ms": 5},
    "slo": {"latency_ms": 100},
}
FLEET = {
    **OPEN,
    "workload": {"kind": "robots", "count": 4, "control_hz": 50, "chunk": 50, "execute": 25},
}


def with_value(data: dict, key: str, value: Any) -> dict:
    out = copy.deepcopy(data)
    node = out
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def expect_one_clear_line(outcome: Outcome, *fragments: str) -> str:
    assert not outcome.timed_out, "hung (killed at the timeout)"
    assert outcome.exit_code == 2, outcome.describe()
    assert "Traceback" not in outcome.stderr + outcome.stdout, outcome.describe()
    assert len(outcome.lines) == 1, outcome.describe()
    line = outcome.lines[0]
    assert line.startswith("batchsim: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


# ---- the table ---------------------------------------------------------------------------
# name -> (make(tmp) -> argv, fragments the line must hold)
Case = tuple[Callable[[Path], list[str]], list[str]]


def scenario(data: dict | None = None, raw: bytes | None = None, *extra: str) -> Callable:
    def make(tmp: Path) -> list[str]:
        path = tmp / "scenario.yaml"
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        return ["run", str(path), "-q", *extra]

    return make


def with_file(name: str, content: bytes, build: Callable[[str], dict]) -> Callable:
    def make(tmp: Path) -> list[str]:
        (tmp / name).write_bytes(content)
        return scenario(build(str(tmp / name)))(tmp)

    return make


def command(*argv: str, setup: Callable[[Path], None] | None = None) -> Callable:
    """argv with {tmp} and {ok} (a valid scenario) filled in."""

    def make(tmp: Path) -> list[str]:
        (tmp / "ok.yaml").write_text(yaml.safe_dump(OPEN))
        (tmp / "afile").write_text("not a folder\n")
        if setup is not None:
            setup(tmp)
        return [a.format(tmp=tmp, ok=tmp / "ok.yaml") for a in argv]

    return make


GOOD_YAML = yaml.safe_dump(OPEN)
STAGE = {"name": "prefix", "batch_size": [1, 8], "latency_ms": [10, 12]}
INF, NAN = float("inf"), float("nan")
ALIAS_BOMB = b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n".encode()
    for p, c in zip("abcdefg", "bcdefgh", strict=True)
)

# the argv most sweep and recommend cases start from (a valid sweep; a valid SLO)
SWEEP = ("sweep", "{ok}", "--out", "{tmp}/sw", "--grid", "policy.max_batch=4,8")
RECOMMEND = ("recommend", "{ok}", "--slo", "p99_ms<=100")
ESTIMATE = ("estimate", "--from", PROFILE, "--out", "{tmp}/e.csv")
# an estimate of tmp/p.csv (which each case writes) for an L40S
ESTIMATE_COPY = ("estimate", "--from", "{tmp}/p.csv", "--gpu", "l40s", "--out", "{tmp}/e.csv")
GPU_SPEC = {
    "name": "mine",
    "bf16_dense_tflops": 100,
    "memory_bandwidth_gbs": 1000,
    "memory_gb": 24,
    "l2_cache_mb": 32,
    "source": "my datasheet",
}

TABLE: dict[str, Case] = {
    # 1. reading files
    "latin-1 scenario": (
        scenario(raw=("# café\n" + GOOD_YAML).encode("latin-1")),
        ["UTF-8", "line 1"],
    ),
    "utf-16 scenario": (scenario(raw=GOOD_YAML.encode("utf-16")), ["UTF-16"]),
    "binary scenario": (scenario(raw=bytes(range(256)) * 8), ["binary"]),
    "stray byte in a comment": (scenario(raw=GOOD_YAML.encode() + b"# \xff\n"), ["not UTF-8"]),
    "scenario is a directory": (
        lambda t: (t.joinpath("dir.yaml").mkdir(), ["run", str(t / "dir.yaml")])[1],
        ["is a directory"],
    ),
    "deeply nested yaml": (scenario(raw=b"a: " + b"[" * 5000 + b"]" * 5000), ["nested"]),
    "duplicate key": (scenario(raw=(GOOD_YAML + "seed: 2\n").encode()), ["duplicate key 'seed'"]),
    "alias bomb": (scenario(raw=ALIAS_BOMB), ["aliases"]),
    "recursive alias": (
        scenario(raw=GOOD_YAML.encode() + b"extra: &a [*a]\n"),
        ["recursive alias"],
    ),
    "recursive alias in --set": (
        command("run", "{ok}", "--set", "policy.max_batch=&a [*a]"),
        ["--set"],
    ),
    "latin-1 profile": (
        with_file(
            "p.csv",
            "batch_size,latency_ms\n1,2\n8,3 é\n".encode("latin-1"),
            lambda p: with_value(OPEN, "profile", p),
        ),  # fmt: skip
        ["p.csv", "UTF-8", "line 3"],
    ),
    "latin-1 sidecar": (
        lambda t: (
            t.joinpath("p.meta.json").write_bytes('{"gpu": "caf\xe9"}'.encode("latin-1")),
            with_file(
                "p.csv",
                b"batch_size,latency_ms\n1,2\n8,3\n",
                lambda p: with_value(OPEN, "profile", p),
            )(t),  # fmt: skip
        )[1],
        ["p.meta.json", "UTF-8"],
    ),
    "utf-16 trace": (
        with_file(
            "t.csv",
            "arrival_s\n0.1\n".encode("utf-16"),
            lambda p: with_value(OPEN, "workload", {"kind": "trace", "path": p}),
        ),  # fmt: skip
        ["t.csv", "UTF-16"],
    ),
    # 2. numbers
    "infinite duration": (scenario(with_value(OPEN, "duration_s", INF)), ["duration_s", "finite"]),
    "infinite rate": (scenario(with_value(OPEN, "workload.rate_rps", INF)), ["rate_rps", "finite"]),
    "nan rate": (scenario(with_value(OPEN, "workload.rate_rps", NAN)), ["rate_rps"]),
    "infinite wake latency": (
        scenario(with_value(OPEN, "cluster.wake_latency_ms", INF)),
        ["wake_latency_ms", "finite"],
    ),
    "infinite cv": (
        scenario(with_value(OPEN, "workload", {"kind": "gamma", "rate_rps": 100, "cv": INF})),
        ["workload.cv"],
    ),
    "underflowing cv": (
        scenario(with_value(OPEN, "workload", {"kind": "gamma", "rate_rps": 100, "cv": 1e-300})),
        ["workload.cv", "0.001"],
    ),
    "infinite sojourn": (
        scenario(
            with_value(
                OPEN,
                "workload",
                {
                    "kind": "mmpp",
                    "states": [{"rate_rps": 100, "mean_s": INF}, {"rate_rps": 0, "mean_s": 1}],
                },
            )
        ),  # fmt: skip
        ["workload.states.0.mean_s", "finite"],
    ),
    "infinite class share": (
        scenario({**OPEN, "classes": [{"name": "a", "share": INF}, {"name": "b", "share": 1}]}),
        ["classes.0.share", "finite"],
    ),
    "infinite robot jitter": (
        scenario(with_value(FLEET, "workload.jitter_ms", INF)),
        ["workload.jitter_ms", "finite"],
    ),
    "profile infinite memory": (
        with_file(
            "p.csv",
            b"batch_size,latency_ms,peak_mem_mb\n1,2,inf\n8,3,100\n",
            lambda p: with_value(OPEN, "profile", p),
        ),  # fmt: skip
        ["p.csv", "peak_mem_mb", "finite"],
    ),
    "profile infinite batch size": (
        with_file(
            "p.csv",
            b"batch_size,latency_ms\n1,2\ninf,3\n",
            lambda p: with_value(OPEN, "profile", p),
        ),  # fmt: skip
        ["p.csv", "batch_size", "integers"],
    ),
    "profile infinite idle level": (
        with_file(
            "p.csv",
            b"batch_size,latency_ms,idle_ms\n1,2,0\n8,3,0\n1,2,inf\n8,3,inf\n",
            lambda p: with_value(OPEN, "profile", p),
        ),  # fmt: skip
        ["p.csv", "idle_ms", "finite"],
    ),
    "boolean duration": (scenario(with_value(OPEN, "duration_s", True)), ["duration_s", "True"]),
    "string max_batch": (scenario(with_value(OPEN, "policy.max_batch", "8")), ["max_batch", "'8'"]),
    "float max_batch": (scenario(with_value(OPEN, "policy.max_batch", 8.0)), ["max_batch", "8.0"]),
    "string override": (
        command("run", "{ok}", "--set", "policy.max_batch='8'"),
        ["--set policy.max_batch='8'", "integer"],
    ),
    # 3. bounded work
    "huge rate": (
        scenario(with_value(OPEN, "workload.rate_rps", 1e12)),
        ["workload.rate_rps", "max_requests", "limits"],
    ),
    "huge request count": (
        scenario({**{k: v for k, v in OPEN.items() if k != "duration_s"}, "requests": 10**12}),
        ["requests", "max_requests"],
    ),
    "huge max_batch": (
        scenario(with_value(OPEN, "policy.max_batch", 10**9)),
        ["policy.max_batch", "max_batch = 4,096"],
    ),
    "huge replicas": (
        scenario(with_value(OPEN, "cluster.replicas", 10**9)),
        ["cluster.replicas", "max_replicas"],
    ),
    "huge fleet": (
        scenario(with_value(FLEET, "workload.count", 10**9)),
        ["workload.count", "max_clients"],
    ),
    "huge periodic sources": (
        scenario(
            with_value(OPEN, "workload", {"kind": "periodic", "sources": 10**9, "rate_hz": 10})
        ),
        ["workload.sources", "max_clients"],
    ),
    "fast switching mmpp": (
        scenario(
            with_value(
                OPEN,
                "workload",
                {
                    "kind": "mmpp",
                    "states": [
                        {"rate_rps": 100, "mean_s": 1e-300},
                        {"rate_rps": 0, "mean_s": 1e-300},
                    ],
                },
            )
        ),  # fmt: skip
        ["workload.states", "max_requests"],
    ),
    "profile with a huge batch size": (
        with_file(
            "p.csv",
            b"batch_size,latency_ms\n1,1\n100000000,2\n",
            lambda p: with_value(OPEN, "profile", p),
        ),  # fmt: skip
        ["p.csv", "batch_size", "max_batch"],
    ),
    "inline profile with a huge batch size": (
        scenario(with_value(OPEN, "profile", {"batch_size": [1, 10**8], "latency_ms": [1, 2]})),
        ["profile.batch_size.1", "max_batch"],
    ),
    "huge sweep grid": (
        command(
            "sweep",
            "{ok}",
            "--out",
            "{tmp}/sw",
            "-q",
            "--grid",
            "policy.max_batch=" + ",".join(map(str, range(1, 1001))),
            "--grid",
            "policy.max_wait_ms=" + ",".join(map(str, range(1000))),
        ),  # fmt: skip
        ["--grid", "1,000,000 sweep points", "max_points"],
    ),
    "huge recommend range": (
        command(
            *RECOMMEND,
            "--space",
            "policy.max_wait_ms=0:1000000000",
        ),
        ["--space", "max_points"],
    ),
    "limits lowered by --set": (
        command("run", "{ok}", "--set", "limits.max_requests=100"),
        ["max_requests = 100"],
    ),
    # 4. outputs checked first
    "run --out is a file": (command("run", "{ok}", "--out", "{tmp}/afile"), ["--out", "is a file"]),
    "run --out inside a file": (
        command("run", "{ok}", "--out", "{tmp}/afile/sub"),
        ["inside a file"],
    ),
    "run --out holds the user's files": (
        command(
            "run",
            "{ok}",
            "--out",
            "{tmp}/mine",
            setup=lambda t: (t / "mine").mkdir() or (t / "mine" / "notes.txt").write_text("x"),
        ),  # fmt: skip
        ["notes.txt", "new or empty folder"],
    ),
    "run --out holds a folder named summary.json": (
        command(
            "run",
            "{ok}",
            "--out",
            "{tmp}/r",
            setup=lambda t: (t / "r" / "summary.json").mkdir(parents=True),
        ),
        ["--out", "a folder named summary.json", "new or empty folder"],
    ),  # fmt: skip
    "run --out holds a file named plots": (
        command(
            "run",
            "{ok}",
            "--out",
            "{tmp}/r",
            setup=lambda t: (t / "r").mkdir() or (t / "r" / "plots").write_text("x"),
        ),
        ["--out", "a file named plots"],
    ),  # fmt: skip
    "sweep --out is a file": (
        command("sweep", "{ok}", "--out", "{tmp}/afile", "--grid", "policy.max_batch=4,8"),
        ["--out", "is a file"],
    ),
    "sweep --out holds a file named points": (
        command(
            *SWEEP, setup=lambda t: (t / "sw").mkdir() or (t / "sw" / "points").write_text("x")
        ),
        ["--out", "a file named 'points'", "new or empty folder"],
    ),
    "allowed_sizes above the profile": (
        scenario(
            with_value(
                OPEN, "policy", {"kind": "dynamic", "max_batch": 8, "allowed_sizes": [8, 128]}
            )
        ),
        ["policy.allowed_sizes", "size 128", "1..64", "never extrapolated"],
    ),
    "recommend --out is a file": (
        command(*RECOMMEND, "--out", "{tmp}/afile"),
        ["--out", "is a file"],
    ),
    "validate --out is a file": (
        command("validate", "{ok}", "--out", "{tmp}/afile"),
        ["--out", "is a file"],
    ),
    "scenario is a list": (scenario(raw=b"- 1\n- 2\n"), ["YAML mapping"]),
    "scenario is empty": (scenario(raw=b"# nothing\n"), ["empty"]),
    "profile --out is a folder": (
        command("profile", "--model", "act", "--out", "{tmp}", "--batch-sizes", "1"),
        ["--out", "is a folder"],
    ),
    # 5. sweeps
    "sweep grid not a mapping": (scenario({**OPEN, "sweep": {"grid": 5}}), ["sweep.grid"]),
    "sweep grid value not a list": (
        scenario({**OPEN, "sweep": {"grid": {"policy.max_batch": "48"}}}),
        ["sweep.grid.policy.max_batch", "list"],
    ),
    "sweep unknown key": (scenario({**OPEN, "sweep": {"grids": {}}}), ["sweep.grids", "unknown"]),
    "sweep replications 0": (
        command(*SWEEP, "--replications", "0"),
        ["--replications", ">= 1"],
    ),
    "sweep damaged record": (
        command(
            *SWEEP,
            setup=lambda t: (t / "sw").mkdir() or (t / "sw" / "sweep.json").write_text("{half"),
        ),  # fmt: skip
        ["sweep.json", "delete sweep.json"],
    ),
    "sweep malformed scheduler": (
        command(*SWEEP, "--scheduler", "not an address"),
        ["--scheduler", "not a scheduler address"],
    ),
    "sweep unreachable scheduler": (
        command(*SWEEP, "--scheduler", "tcp://127.0.0.1:1"),
        ["--scheduler", "cannot reach"],
    ),
    # 6. recommend
    "slo with two signs": (command("recommend", "{ok}", "--slo", "p99_ms<=--5"), ["--slo", "--5"]),
    "slo not a term": (command("recommend", "{ok}", "--slo", "1.2.3"), ["--slo", "1.2.3"]),
    "recommend workers 0": (
        command(*RECOMMEND, "--workers", "0"),
        ["--workers", ">= 1"],
    ),
    "recommend max replications below replications": (
        command(*RECOMMEND, "--replications", "5", "--max-replications", "3"),
        ["--max-replications", ">= --replications (5)"],
    ),
    "recommend space beyond the profile": (
        command(*RECOMMEND, "--space", "policy.max_batch=8,128"),
        ["--space policy.max_batch=128", "extrapolated"],
    ),
    "recommend space syntax": (
        command(*RECOMMEND, "--space", "policy.max_batch=[1,"),
        ["--space"],
    ),
    # 7. profile
    "profile negative warmup": (
        command("profile", "--model", "act", "--out", "{tmp}/p.csv", "--warmup", "-1"),
        ["--warmup", ">= 0"],
    ),
    "profile zero instruction tokens": (
        command("profile", "--model", "act", "--out", "{tmp}/p.csv", "--instruction-tokens", "0"),
        ["--instruction-tokens"],
    ),
    "profile nan budget": (
        command("profile", "--model", "act", "--out", "{tmp}/p.csv", "--budget-s", "nan"),
        ["--budget-s", "finite"],
    ),
    "profile infinite budget": (
        command("profile", "--model", "act", "--out", "{tmp}/p.csv", "--budget-s", "inf"),
        ["--budget-s", "finite"],
    ),
    "profile failing factory": (
        command("profile", "--model", "os:getcwd", "--out", "{tmp}/p.csv", "--batch-sizes", "1"),
        ["--model", "os:getcwd", "TypeError"],
    ),
    "profile append onto a foreign file": (
        command(
            "profile", "--model", "act", "--out", "{tmp}/afile", "--append", "--batch-sizes", "1"
        ),
        ["afile", "not a profile"],
    ),
    # 8. plot
    "plot a missing folder": (command("plot", "{tmp}/nothing"), ["neither a run folder"]),
    "plot a corrupt table": (
        command(
            "plot", "{tmp}/run", setup=lambda t: _run_folder(t, "requests.parquet", b"garbage")
        ),
        ["requests.parquet", "Parquet"],
    ),
    "plot a missing table": (
        command("plot", "{tmp}/run", setup=lambda t: _run_folder(t, "batches.parquet", None)),
        ["batches.parquet", "not found"],
    ),
    "plot a foreign table": (
        command("plot", "{tmp}/run", setup=lambda t: _run_folder(t, "batches.parquet", "foreign")),
        ["batches.parquet", "no column"],
    ),
    "plot a sweep without its summary": (
        command(
            "plot",
            "{tmp}/sw",
            setup=lambda t: (t / "sw").mkdir() or (t / "sw" / "sweep.json").write_text("{}"),
        ),
        ["summary.parquet", "not found"],
    ),
    "plot-profile of an empty file": (
        command("plot-profile", "{tmp}/p.csv", setup=lambda t: (t / "p.csv").write_text("")),
        ["p.csv", "CSV"],
    ),
    # 9. messages
    "inline latency not a number": (
        scenario(with_value(OPEN, "profile", {"batch_size": [1, 8], "latency_ms": [1, "x"]})),
        ["profile.latency_ms.1: ", "'x'"],
    ),
    "request shape key not a number": (
        scenario({**OPEN, "request_shapes": {"a": 1}}),
        ["request_shapes: key 'a'"],
    ),
    "profile nan cell": (
        with_file(
            "p.csv",
            b"batch_size,latency_ms\n1,2\n8,nan\n",
            lambda p: with_value(OPEN, "profile", p),
        ),  # fmt: skip
        ["latency_ms", "line 3"],
    ),
    "trace negative time": (
        with_file(
            "t.csv",
            b"arrival_s\n0.1\n-1\n",
            lambda p: with_value(OPEN, "workload", {"kind": "trace", "path": p}),
        ),  # fmt: skip
        ["arrival_s", "value -1 on line 3"],
    ),
    "trace header with a line break": (
        with_file(
            "t.csv",
            b'"rrival_s,robot\n0.00", r0\n1,2\n',
            lambda p: with_value(OPEN, "workload", {"kind": "trace", "path": p}),
        ),  # fmt: skip
        ["no column 'arrival_s'", "'rrival_s,robot\\n0.00'"],
    ),
    "grid error names --grid": (
        command("sweep", "{ok}", "--out", "{tmp}/sw", "--grid", "policy.max_batch=4,128"),
        ["--grid policy.max_batch=128"],
    ),
    # 10. staged models (issue 15)
    "no stages": (scenario(with_value(OPEN, "profile", {"stages": []})), ["at least one stage"]),
    "stage repeat 0": (
        scenario(with_value(OPEN, "profile", {"stages": [{**STAGE, "repeat": 0}]})),
        ["profile.stages.0.repeat", "greater than 0"],
    ),
    "stage too small for the policy": (
        scenario(with_value(OPEN, "profile", {"stages": [{**STAGE, "batch_size": [1, 4]}]})),
        ["size 8", "1..4"],
    ),
    "stage file not found": (
        scenario(with_value(OPEN, "profile", {"stages": [{"name": "a", "path": "nope.csv"}]})),
        ["nope.csv", "not found"],
    ),
    "floor above the steps": (
        scenario(with_value(OPEN, "policy.min_steps", 3)),
        ["policy.min_steps", "above the model's 1 steps"],
    ),
    "continuous batching live": (
        command(
            "validate",
            "{tmp}/c.yaml",
            setup=lambda t: (t / "c.yaml").write_text(
                yaml.safe_dump(
                    {
                        **OPEN,
                        "policy": {"kind": "continuous", "max_batch": 8},
                        "model": {"name": "pi0"},
                    }
                )
            ),
        ),  # fmt: skip
        ["live runner serves request-level policies"],
    ),
    # 11. estimate (issue 16)
    "estimate: unknown GPU": (
        command(*ESTIMATE, "--gpu", "h999"),
        ["--gpu", "unknown GPU 'h999'", "rtx4090"],
    ),
    "estimate: no sidecar": (
        command(
            *ESTIMATE_COPY,
            setup=lambda t: (t / "p.csv").write_bytes(Path(PROFILE).read_bytes()),
        ),  # fmt: skip
        ["p.csv", "no provenance sidecar"],
    ),
    "estimate: parameters disagree": (
        command(
            *ESTIMATE_COPY,
            setup=lambda t: _copy_profile(t, params=123),
        ),  # fmt: skip
        ["p.csv", "params (123)", "2,172,349,984"],
    ),
    "estimate: an estimate of an estimate": (
        command(
            *ESTIMATE_COPY,
            setup=lambda t: _copy_profile(t, estimate={"source_profile": "x.csv"}),
        ),  # fmt: skip
        ["is itself an estimate", "x.csv"],
    ),
    "estimate: CPU profile": (
        command(
            "estimate",
            "--from",
            str(ROOT / "profiles/cpu/pi0-tiny.csv"),
            "--gpu",
            "l40s",
            "--out",
            "{tmp}/e.csv",
        ),  # fmt: skip
        ["cpu: AMD EPYC", "not a GPU in the table", "--source-gpu"],
    ),
    "estimate: staged profile": (
        command(
            "estimate",
            "--from",
            str(ROOT / "profiles/cpu/pi0-tiny-staged.csv"),
            "--gpu",
            "l40s",
            "--out",
            "{tmp}/e.csv",
        ),  # fmt: skip
        ["'stage' column", "request-level"],
    ),
    "estimate: shape not a number": (
        command(*ESTIMATE, "--gpu", "l40s", "--shape", "cameras=three"),
        ["--shape", "must be an integer"],
    ),
    "estimate: shape over several rows": (
        command(*ESTIMATE, "--gpu", "l40s", "--shape", "cameras=2"),
        ["--shape", "cameras 1, 3", "--select cameras=N"],
    ),
    "estimate: unknown model": (
        command(*ESTIMATE, "--gpu", "l40s", "--model", "gr00t"),
        ["--model", "'gr00t'", "pi0-torch"],
    ),
    "estimate: spec file with an unknown key": (
        command(
            *ESTIMATE,
            "--gpu",
            "{tmp}/g.yaml",
            setup=lambda t: (t / "g.yaml").write_text(yaml.safe_dump({**GPU_SPEC, "tflops": 1})),
        ),  # fmt: skip
        ["g.yaml", "unknown key 'tflops'", "bf16_dense_tflops"],
    ),
    "estimate: spec file with a bad bandwidth": (
        command(
            *ESTIMATE,
            "--gpu",
            "{tmp}/g.yaml",
            setup=lambda t: (t / "g.yaml").write_text(
                yaml.safe_dump({**GPU_SPEC, "memory_bandwidth_gbs": -1})
            ),
        ),  # fmt: skip
        ["g.yaml", "memory_bandwidth_gbs", "above 0"],
    ),
    "estimate: out is the measured profile": (
        command(
            "estimate",
            "--from",
            "{tmp}/p.csv",
            "--gpu",
            "l40s",
            "--out",
            "{tmp}/p.csv",
            setup=lambda t: _copy_profile(t),
        ),  # fmt: skip
        ["--out", "overwrite the measured profile"],
    ),
    # 12. serve (issue 17)
    "serve: no model section": (command("serve", "{ok}", "--port", "0"), ["serve needs a model"]),
    "serve: port out of range": (command("serve", "{ok}", "--port", "70000"), ["--port", "65,535"]),
    # issue 30: serve's limits are flags too
    "serve: negative grace period": (
        command("serve", "{ok}", "--port", "0", "--grace-s", "-1"),
        ["--grace-s", "0 to 600 seconds"],
    ),
    "serve: frame limit of zero": (
        command("serve", "{ok}", "--port", "0", "--max-frame-mib", "0"),
        ["--max-frame-mib", "0.001 to 64 MiB"],
    ),
    "serve: frame limit past 64 MiB": (
        command("serve", "{ok}", "--port", "0", "--max-frame-mib", "1e9"),
        ["--max-frame-mib", "0.001 to 64 MiB"],
    ),
    "serve: two replicas": (
        command(
            "serve",
            "{ok}",
            "--port",
            "0",
            "--set",
            "model={{name: pi0}}",
            "--set",
            "cluster.replicas=2",
        ),  # fmt: skip
        ["one replica with a shared queue"],
    ),
    # issue 28: prices and power
    "cost: a price map without the profile's GPU": (
        scenario(with_value(OPEN, "cost", {"gpu_hour_usd": {"l40s": 1.1}})),
        ["cost.gpu_hour_usd", "no price for the profile's GPU 'h100'", "prices given: l40s"],
    ),
    "cost: a price for a GPU the table lacks": (
        scenario(with_value(OPEN, "cost", {"gpu_hour_usd": {"tpu-v5": 1.1}})),
        ["cost.gpu_hour_usd", "'tpu-v5' is not a GPU of the table"],
    ),
    "cost: a price map on an inline profile": (
        scenario(
            with_value(
                with_value(OPEN, "profile", {"batch_size": [1, 8], "latency_ms": [5, 9]}),
                "cost",
                {"gpu_hour_usd": {"h100": 2.5}},
            )
        ),
        ["cost.gpu_hour_usd", "give one number instead"],
    ),
    "cost: a negative price": (
        scenario(with_value(OPEN, "cost", {"gpu_hour_usd": -1})),
        ["cost.gpu_hour_usd"],
    ),
    "power: busy below idle": (
        scenario(with_value(OPEN, "power", {"idle_w": 100, "busy_w": 50})),
        ["power", "busy_w must be at least idle_w"],
    ),
    "recommend: min-cost without prices": (
        command("recommend", "{ok}", "--objective", "min-cost", "--slo", "p99_ms<=100"),
        ["min-cost needs prices", "cost"],
    ),
    "robots: threshold on sync robots": (
        scenario(with_value(FLEET, "workload.threshold", 0.3)),
        ["workload", "threshold applies to async robots", "mode: async"],
    ),
    "run: --trace is a folder": (
        command("run", "{ok}", "-q", "--trace", "{tmp}"),
        ["--trace"],
    ),
    # 13. observe and validate --records (issue 17)
    "observe: target not a websocket": (
        command("observe", "{ok}", "--target", "http://127.0.0.1:8000"),
        ["--target", "ws://HOST:PORT"],
    ),
    "observe: nothing listening": (
        command("observe", "{ok}", "--target", "ws://127.0.0.1:9"),
        ["--target ws://127.0.0.1:9", "connection refused"],
    ),
    "observe: no connections": (
        command("observe", "{ok}", "--connections", "0"),
        ["--connections", "1 to 1,024"],
    ),
    "observe: timeout out of range": (
        command("observe", "{ok}", "--timeout-s", "0"),
        ["--timeout-s", "0.1 to 3,600"],
    ),
    "observe: observation too big": (
        command(
            "observe",
            "{ok}",
            "--set",
            "observation={{cameras: 16, image_size: 2048}}",
            "--target",
            "ws://127.0.0.1:9",
        ),  # fmt: skip
        ["ok.yaml", "observation", "MiB", "at most 64"],
    ),
    "observe: a robot fleet by request count": (
        command(
            "observe",
            "{tmp}/fleet.yaml",
            setup=lambda t: (t / "fleet.yaml").write_text(
                yaml.safe_dump(
                    {**{k: v for k, v in FLEET.items() if k != "duration_s"}, "requests": 50}
                )
            ),
        ),  # fmt: skip
        ["fleet.yaml", "observe runs robot fleets for duration_s"],
    ),
    "validate records: a log without end times": (
        command(
            "validate",
            "{ok}",
            "--records",
            "{tmp}/r.csv",
            setup=lambda t: (t / "r.csv").write_text("arrival,start,batch\n0.1,0.2,0\n"),
        ),  # fmt: skip
        ["r.csv", "no column 'end'", "batch or batch_size"],
    ),
    "validate records: a log without batches": (
        command(
            "validate",
            "{ok}",
            "--records",
            "{tmp}/r.csv",
            setup=lambda t: (t / "r.csv").write_text("arrival,start,end\n0.1,0.2,0.3\n"),
        ),  # fmt: skip
        ["r.csv", "no column 'batch or batch_size'"],
    ),
    "validate records: start before arrival": (
        command(
            "validate",
            "{ok}",
            "--records",
            "{tmp}/r.csv",
            setup=lambda t: (t / "r.csv").write_text("arrival,start,end,batch\n0.5,0.2,0.3,0\n"),
        ),  # fmt: skip
        ["r.csv", "start", "before arrival", "row 1"],
    ),
    "validate records: an unknown outcome": (
        command(
            "validate",
            "{ok}",
            "--records",
            "{tmp}/r.csv",
            setup=lambda t: (t / "r.csv").write_text(
                "arrival,start,end,batch,outcome\n0.1,0.2,0.3,0,served\n"
            ),
        ),  # fmt: skip
        ["r.csv", "outcome", "unknown outcome 'served'", "completed"],
    ),
    "validate records: a folder with no run": (
        command("validate", "{ok}", "--records", "{tmp}"),
        ["holds no recorded run", "requests.csv"],
    ),
    "validate records: --repeats with --records": (
        command("validate", "{ok}", "--records", "{tmp}", "--repeats", "2"),
        ["--repeats", "--records compares runs already made"],
    ),
    "validate: --profile-from-records alone": (
        command("validate", "{ok}", "--profile-from-records"),
        ["--profile-from-records", "needs --records"],
    ),
    "validate: a second path without --records": (
        command("validate", "{ok}", "{tmp}/afile"),
        ["recorded runs follow --records"],
    ),
}


def _copy_profile(tmp: Path, **sidecar: Any) -> None:
    """The H100 CUDA-graph profile copied to tmp/p.csv, its sidecar changed by `sidecar`."""
    (tmp / "p.csv").write_bytes(Path(PROFILE).read_bytes())
    meta = json.loads(Path(PROFILE).with_suffix(".meta.json").read_text())
    (tmp / "p.meta.json").write_text(json.dumps({**meta, **sidecar}))


def _run_folder(tmp: Path, name: str, content: bytes | str | None) -> None:
    """A real run folder in tmp/run, then one of its tables damaged."""
    import pandas as pd

    from sim.cli import main

    (tmp / "s.yaml").write_text(yaml.safe_dump(with_value(OPEN, "duration_s", 1)))
    assert main(["run", str(tmp / "s.yaml"), "--out", str(tmp / "run"), "-q"]) == 0
    target = tmp / "run" / name
    if content is None:
        target.unlink()
    elif content == "foreign":
        pd.DataFrame({"a": [1]}).to_parquet(target)
    else:
        target.write_bytes(content)


@pytest.mark.parametrize("case", sorted(TABLE))
def test_bad_input_gets_one_clear_line(case, tmp_path):
    make, fragments = TABLE[case]
    argv = make(tmp_path)
    expect_one_clear_line(
        run_isolated(*argv, cwd=tmp_path, mem_mb=MEM_MB, timeout_s=TIMEOUT_S), *fragments
    )


def test_nothing_is_lost_when_a_run_is_refused(tmp_path):
    """A refused --out folder of the user's keeps every file."""
    (tmp_path / "ok.yaml").write_text(GOOD_YAML)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine\n")
    outcome = run_isolated("run", "ok.yaml", "--out", "mine", cwd=tmp_path)
    expect_one_clear_line(outcome, "notes.txt")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine\n"


# ---- hypothesis mutations ----------------------------------------------------------------
WEIRD = st.sampled_from(
    [
        INF,
        -INF,
        NAN,
        -1,
        0,
        0.5,
        1e-300,
        1e300,
        10**9,
        2**63,
        True,
        False,
        None,
        "",
        "8",
        "x" * 300,
        [],
        [1, 2],
        {},
        {"kind": "x"},
        "2026-01-01",
        ".inf",
    ]  # fmt: skip
)


def _leaves(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths to every value of a nested mapping (lists by index)."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in [(*prefix, k), *_leaves(v, (*prefix, k))]]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in [(*prefix, i), *_leaves(v, (*prefix, i))]]
    return []


BASES = [
    OPEN,
    FLEET,
    with_value(OPEN, "workload", {"kind": "mmpp", "states": [
        {"rate_rps": 50, "mean_s": 1}, {"rate_rps": 0, "mean_s": 1}]}),
    {**OPEN, "policy": {"kind": "deadline", "max_batch": 8}, "classes": [
        {"name": "a", "share": 0.5, "latency_ms": 50, "priority": 1}, {"name": "b", "share": 0.5}]},
    {**OPEN, "policy": {"kind": "static", "batch_size": 4, "timeout_ms": 10},
     "cluster": {"replicas": 2, "queue": "per-replica", "dispatch": "least-work"},
     "admission": {"max_queue": 50, "timeout_ms": 200}},
    {**OPEN, "workload": {"kind": "periodic", "sources": 4, "rate_hz": 10, "jitter_ms": 1},
     "profile": {"path": PROFILE, "shape": "cameras"}, "request_shapes": {1: 0.5, 3: 0.5}},
    {**FLEET, "workload": {"kind": "robots", "groups": [
        {"count": 2, "control_hz": 50, "chunk": 50, "execute": 25, "mode": "async",
         "network_ms": {"uplink": 2, "downlink": 2, "jitter": 0.5}},
        {"count": 2, "control_hz": 30, "chunk": 10, "start": "random"}]},
     "policy": {"kind": "adaptive", "target_ms": 50, "max_batch": 8}},
    {**{k: v for k, v in OPEN.items() if k not in ("duration_s", "profile")}, "requests": 300,
     "profile": {"batch_size": [1, 2, 4, 8], "latency_ms": [10, [11, 12], 14, 20],
                 "peak_mem_mb": [100, 110, 130, 170]}, "cluster": {"memory_mb": 200}},
]  # fmt: skip


@st.composite
def mutated_scenarios(draw) -> dict:
    base = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _leaves(base)
        path = draw(st.sampled_from(paths))
        node = base
        for part in path[:-1]:
            node = node[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[path[-1]] = copy.deepcopy(draw(WEIRD))
        elif action == "delete" and isinstance(node, dict):
            del node[path[-1]]
        elif isinstance(node, dict):
            node[draw(st.sampled_from(["extra", "max_batch", "kind", "duration_s"]))] = (
                copy.deepcopy(draw(WEIRD))
            )
    # the runs a mutation leaves valid stay small (and a mutation cannot raise the limits)
    base["limits"] = {"max_requests": 50_000, "max_clients": 1000, "max_replicas": 64}
    return base


def _assert_runs_or_one_line(outcome: Outcome) -> None:
    assert not outcome.timed_out, "hung (killed at the timeout)"
    assert "Traceback" not in outcome.stderr + outcome.stdout, outcome.describe()
    if outcome.exit_code != 0:
        expect_one_clear_line(outcome)


FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(data=mutated_scenarios())
def test_mutated_scenarios_run_or_get_one_line(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "s.yaml")
        path.write_text(
            json.dumps(data, allow_nan=True).replace("NaN", ".nan").replace("Infinity", ".inf")
        )
        _assert_runs_or_one_line(
            run_isolated("run", str(path), "-q", cwd=Path(tmp), mem_mb=MEM_MB, timeout_s=TIMEOUT_S)
        )


CSV_TOKENS = st.sampled_from(
    ["", "nan", "inf", "-1", "0", "1e300", "100000000", "x", '"', "1,2", "é", "\x00", "\ufeff"]
)


@FUZZ
@given(
    cells=st.lists(st.tuples(st.integers(0, 40), CSV_TOKENS), min_size=1, max_size=4),
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]),
    which=st.sampled_from(["profile", "trace"]),
)
def test_mutated_profiles_and_traces_run_or_get_one_line(cells, encoding, which):
    if which == "profile":
        text = "batch_size,latency_ms,peak_mem_mb\n" + "".join(
            f"{b},{10 + b},{1000 + b}\n" for b in (1, 2, 4, 8) for _ in range(3)
        )
    else:
        text = "arrival_s,robot\n" + "".join(f"{i / 100:.3f},r{i % 3}\n" for i in range(30))
    chars = list(text)
    for position, token in cells:  # replace one character with a token
        at = min(position * 3, len(chars) - 1)
        chars[at] = token
    body = "".join(chars)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp, "data.csv")
        try:
            csv.write_bytes(body.encode(encoding))
        except UnicodeEncodeError:
            csv.write_bytes(body.encode("utf-8", errors="replace"))
        data = (
            with_value(OPEN, "profile", str(csv))
            if which == "profile"
            else with_value(
                OPEN, "workload", {"kind": "trace", "path": str(csv), "source_column": "robot"}
            )
        )
        data["limits"] = {"max_requests": 50_000}
        Path(tmp, "s.yaml").write_text(yaml.safe_dump(data))
        _assert_runs_or_one_line(
            run_isolated("run", "s.yaml", "-q", cwd=Path(tmp), mem_mb=MEM_MB, timeout_s=TIMEOUT_S)
        )


# ---- outputs written whole ---------------------------------------------------------------
def _killed_while_writing(scenario_path: str, out: str, after: str) -> None:
    """In a forked child: run into `out`, killed (SIGKILL) right after `after` is staged."""
    import os
    import signal

    import sim.engine.pipeline as simulate
    from sim.cli import main

    real = simulate.write_parquet

    def write_then_die(columns, path):
        real(columns, path)
        if Path(path).name == after:
            os.kill(os.getpid(), signal.SIGKILL)

    simulate.write_parquet = write_then_die
    main(["run", scenario_path, "--out", out, "-q", "--set", "seed=2"])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("after", ["requests.parquet", "batches.parquet", "robots.parquet"])
def test_a_run_killed_while_writing_leaves_the_old_folder_whole(tmp_path, after):
    import multiprocessing as mp

    from sim.cli import main

    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(with_value(FLEET, "duration_s", 3)))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "-q"]) == 0
    old = _files(out)
    child = mp.get_context("fork").Process(
        target=_killed_while_writing, args=(str(path), str(out), after)
    )
    child.start()
    child.join(60)
    assert child.exitcode == -9  # killed mid-write, as planned
    assert _files(out) == old  # the old run, every file of it, and nothing of the new one
    assert main(["run", str(path), "--out", str(out), "-q", "--set", "seed=2"]) == 0
    new = _files(out)
    assert new["summary.json"] != old["summary.json"] and set(new) == set(old)
    assert not list(tmp_path.glob(".run.partial-*"))  # the killed run's staging is cleared


def test_a_run_killed_at_any_moment_leaves_one_whole_run(tmp_path):
    """A real `batchsim run` process, killed at spread moments: the folder is always all old
    or all new."""
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**with_value(OPEN, "duration_s", 600), "seed": 1}))
    out, reference = tmp_path / "run", tmp_path / "new"
    argv = [sys.executable, "-m", "sim.cli", "run", str(path), "-q", "--set", "seed=2"]
    subprocess.run([*argv[:-2], "--out", str(out)], check=True, cwd=ROOT)
    started = time.perf_counter()
    subprocess.run([*argv, "--out", str(reference)], check=True, cwd=ROOT)
    full_s = time.perf_counter() - started
    old, new = _files(out), _files(reference)
    new.pop("run.json"), old.pop("run.json")  # its wall time differs run to run
    for fraction in (0.5, 0.7, 0.8, 0.9, 0.95, 1.0):
        proc = subprocess.Popen([*argv, "--out", str(out)], cwd=ROOT)
        time.sleep(full_s * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = _files(out)
        now.pop("run.json", None)
        assert now in (old, new), f"killed at {fraction:.0%}: a mix of two runs"
        if now == new:
            subprocess.run([*argv[:-2], "--out", str(out)], check=True, cwd=ROOT)  # old again
            old = _files(out)
            old.pop("run.json")


def test_a_rerun_leaves_no_stale_file_of_the_earlier_run(tmp_path):
    from sim.cli import main

    fleet, open_loop = tmp_path / "fleet.yaml", tmp_path / "open.yaml"
    fleet.write_text(yaml.safe_dump(with_value(FLEET, "duration_s", 2)))
    open_loop.write_text(yaml.safe_dump(with_value(OPEN, "duration_s", 2)))
    out = tmp_path / "run"
    assert main(["run", str(fleet), "--out", str(out), "-q"]) == 0
    assert (out / "robots.parquet").exists()
    assert main(["run", str(open_loop), "--out", str(out), "-q"]) == 0
    assert not (out / "robots.parquet").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "batches.parquet", "requests.parquet", "run.json", "scenario.yaml", "summary.json"
    ]  # fmt: skip


# ---- permissions (as an ordinary user: root reads everything) ----------------------------
@pytest.fixture
def shared_dir():
    """A folder an unprivileged child can use (pytest's tmp_path is root's alone)."""
    import os

    with tempfile.TemporaryDirectory(prefix="batchsim-perm-") as tmp:
        os.chmod(tmp, 0o777)
        yield Path(tmp)


@pytest.mark.parametrize(
    "case",
    ["unreadable scenario", "unreadable folder", "unreadable profile", "unwritable --out"],
)
def test_permission_problems_get_one_clear_line(case, shared_dir):
    import os

    ok = shared_dir / "ok.yaml"
    ok.write_text(GOOD_YAML)
    ok.chmod(0o644)
    argv, fragments = ["run", str(ok), "-q"], ["permission denied"]
    if case == "unreadable scenario":
        ok.chmod(0o000)
        fragments = ["ok.yaml", "not readable"]  # click checks the argument first
    elif case == "unreadable folder":
        (shared_dir / "locked").mkdir(mode=0o000)
        argv = ["run", str(shared_dir / "locked" / "s.yaml")]
    elif case == "unreadable profile":
        profile = shared_dir / "p.csv"
        profile.write_text("batch_size,latency_ms\n1,2\n8,3\n")
        profile.chmod(0o000)
        ok.write_text(yaml.safe_dump(with_value(OPEN, "profile", str(profile))))
        fragments = ["p.csv", "permission denied"]
    else:
        (shared_dir / "ro").mkdir(mode=0o555)
        argv = ["run", str(ok), "--out", str(shared_dir / "ro" / "run")]
        fragments = ["--out", "not writable"]
    if os.geteuid() != 0:
        os.chmod(shared_dir, 0o755)
    outcome = run_isolated(*argv, cwd=shared_dir, unprivileged=True, mem_mb=MEM_MB)
    line = expect_one_clear_line(outcome)
    assert all(f.lower() in line.lower() for f in fragments), (fragments, line)


YAML_VALUES = st.sampled_from(
    [
        ".inf",
        "-.inf",
        ".nan",
        "[",
        "{a: 1}",
        "'8'",
        "1e400",
        "-0",
        "~",
        "",
        "yes",
        "0x10",
        "1_000",
        "2026-01-01",
        "!!python/object/apply:os.system ['true']",
        "&a [*a]",
        "*b",
        "[1, 2]",
        "10000000000",
        "0.0001",
        "robots",
        "MODULE:CLASS",
        "os:system",
        "a:b:c",
    ]  # fmt: skip
)


@FUZZ
@given(
    base=st.sampled_from([OPEN, FLEET]),
    picks=st.lists(st.tuples(st.integers(0, 100), YAML_VALUES), min_size=1, max_size=3),
    extra=st.sampled_from(["", ".x", ".0", "..", ".kind"]),
)
def test_mutated_overrides_run_or_get_one_line(base, picks, extra):
    keys = [".".join(map(str, p)) for p in _leaves(base)] + ["limits.max_requests", "sweep.grid"]
    overrides = []
    for index, value in picks:
        overrides += ["--set", f"{keys[index % len(keys)]}{extra}={value}"]
    with tempfile.TemporaryDirectory() as tmp:
        data = {**base, "limits": {"max_requests": 50_000}}
        Path(tmp, "s.yaml").write_text(yaml.safe_dump(data))
        outcome = run_isolated(
            "run", "s.yaml", "-q", *overrides, cwd=Path(tmp), mem_mb=MEM_MB, timeout_s=TIMEOUT_S
        )
        _assert_runs_or_one_line(outcome)


def test_an_unwritable_matplotlib_folder_adds_no_line(tmp_path):
    """matplotlib notes in several lines that it cannot write its config folder (and uses a
    temporary one); that is not the user's error, so a refused plot is still one line."""
    import os
    import subprocess

    from tests.conftest import BATCHSIM

    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "afile" / "mpl")}
    (tmp_path / "afile").write_text("not a folder\n")
    done = subprocess.run(
        [*BATCHSIM, "plot", str(tmp_path / "missing")],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchsim: error: "), done.stderr
