"""Plug-in policies (policy.kind MODULE:CLASS): the README's worked example gives exactly the
built-in policy's figures in `run`, `sweep` and the live runner, and every way a plug-in
can be broken is one clear line on policy.kind with exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, run_cli

EXAMPLE = ROOT / "examples" / "plugin"
DYNAMIC = "policy={kind: dynamic, max_batch: 16, max_wait_ms: 5}"


def copy_example(tmp_path: Path) -> Path:
    """The example scenario and its module in a folder of their own (with its profile)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(EXAMPLE / "size_or_timeout.py", folder)
    data = yaml.safe_load((EXAMPLE / "plugin-policy.yaml").read_text())
    data["profile"]["path"] = str(ROOT / "profiles/h100/pi0-cudagraph.csv")
    data["duration_s"] = 40
    path = folder / "plugin-policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def figures(folder: Path) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("policy")
    return summary


def test_the_worked_example_gives_the_built_in_policys_figures(tmp_path):
    path = copy_example(tmp_path)
    elsewhere = tmp_path / "cwd"  # imported from the scenario's folder, not the working one
    elsewhere.mkdir()
    plug, built = tmp_path / "plug", tmp_path / "built"
    first = run_cli("run", str(path), "--out", str(plug), "-q", cwd=elsewhere)
    assert first.returncode == 0, first.stderr
    second = run_cli("run", str(path), "--out", str(built), "-q", "--set", DYNAMIC, cwd=elsewhere)
    assert second.returncode == 0, second.stderr
    assert figures(plug) == figures(built)
    for name in ("requests.parquet", "batches.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(plug / name), pd.read_parquet(built / name))
    policy = json.loads((plug / "summary.json").read_text())["policy"]
    assert policy == "size_or_timeout:SizeOrTimeout(max_batch=16, max_wait_ms=5)"


def test_the_plugin_runs_in_a_sweep_on_dask_workers(tmp_path):
    path = copy_example(tmp_path)
    out = tmp_path / "sweep"
    result = run_cli(
        "sweep", str(path), "--grid", "policy.max_batch=4,16", "--workers", "2", "--out", str(out),
        "-q", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plug = pd.read_parquet(out / "results.parquet").sort_values("config")
    run_cli("run", str(path), "--out", str(tmp_path / "b4"), "-q", "--set", DYNAMIC,
            "--set", "policy.max_batch=4")  # fmt: skip
    assert plug.latency_p99_ms.iloc[0] == figures(tmp_path / "b4")["latency_ms"]["p99"]


def test_the_plugin_runs_in_recommend(tmp_path):
    path = copy_example(tmp_path)
    result = run_cli(
        "recommend", str(path), "--slo", "p99_ms<=80", "--space", "policy.max_batch=8,16",
        "--replications", "1", "--set", "duration_s=20", "--out", str(tmp_path / "rec"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "rec" / "recommend.json").read_text())
    assert report["frontier"][0]["feasible"]


def test_the_plugin_runs_in_the_live_runner_as_the_built_in_does(tmp_path):
    pytest.importorskip("torch")
    from sim.config import load
    from sim.real.live import run_live
    from tests.test_validate import FakeClock

    path = copy_example(tmp_path)
    runs = []
    for overrides in ([], [DYNAMIC]):
        loaded = load(path, ["duration_s=10", *overrides])
        clock = FakeClock()

        def model(batch, clock=clock):
            clock.t += (10 + 2 * batch) / 1000

        runs.append(run_live(loaded, model, lambda p: {"batch": p}, clock, clock.sleep).records)
    plug, built = runs
    assert plug.batch_size.size > 100
    assert np.array_equal(plug.batch_start_s, built.batch_start_s)
    assert np.array_equal(plug.request_batch, built.request_batch)


BROKEN = {
    "import error": ("no_such_module:Policy", "", "cannot import 'no_such_module'"),
    "module fails to import": ("broken:Policy", "raise RuntimeError('boom')\n", "boom"),
    "no such class": ("mod:Nope", "class Other: pass\n", "'mod' has no class 'Nope'"),
    "missing decide": (
        "mod:P",
        "class P:\n    name = 'p'\n    order = 'fifo'\n    max_batch = 4\n"
        "    def launch_sizes(self): return {4}\n",
        "has no decide",
    ),
    "bad order": (
        "mod:P",
        "from examples_base import *\nclass P(Base):\n    order = 'lifo'\n",
        "order is 'lifo'",
    ),
    "bad constructor keys": (
        "mod:P",
        "from examples_base import *\nclass P(Base): pass\n",
        "P(...) failed: TypeError",
    ),  # fmt: skip
    "wrong return type": (
        "mod:P",
        "from examples_base import *\nclass P(Base):\n    def decide(self, now_s, queue): return 3\n",
        "must return Launch, Wait or Drop",
    ),
    "launch beyond the queue": (
        "mod:P",
        "from examples_base import *\nclass P(Base):\n"
        "    def decide(self, now_s, queue): return Launch(len(queue) + 1, 4)\n",
        "queued",
    ),
    "launch beyond the profile": (
        "mod:P",
        "from examples_base import *\nclass P(Base):\n"
        "    def decide(self, now_s, queue):\n"
        "        return Launch(1, 99) if len(queue) else Wait(until_queue_len=1)\n",
        "outside the profile's measured sizes 1..8",
    ),
    "an exception in decide": (
        "mod:P",
        "from examples_base import *\nclass P(Base):\n"
        "    def decide(self, now_s, queue): return 1 / 0\n",
        "raised ZeroDivisionError in decide()",
    ),
    "a wait in the past": (
        "mod:P",
        "from examples_base import *\nclass P(Base):\n"
        "    def decide(self, now_s, queue): return Wait(until_s=now_s)\n",
        "a Wait must name a later time",
    ),
}

BASE = (
    "from sim.policies import Launch, Wait, Drop\n"
    "class Base:\n    name = 'base'\n    order = 'fifo'\n    max_batch = 4\n"
    "    def __init__(self, max_batch=4): self.max_batch = max_batch\n"
    "    def launch_sizes(self): return {1, 2, 3, 4}\n"
    "    def decide(self, now_s, queue):\n"
    "        return Launch(min(len(queue), 4), min(len(queue), 4)) if queue else Wait(until_queue_len=1)\n"
)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_on_policy_kind(case, tmp_path):
    kind, module, expected = BROKEN[case]
    name = kind.partition(":")[0]
    if module:
        (tmp_path / f"{name}.py").write_text(module)
    (tmp_path / "examples_base.py").write_text(BASE)
    policy = {"kind": kind, **({"bogus": 1} if case == "bad constructor keys" else {})}
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "duration_s": 5,
                "profile": {"batch_size": [1, 8], "latency_ms": [5, 9]},
                "workload": {"kind": "poisson", "rate_rps": 100},
                "policy": policy,
            }
        )
    )
    result = run_cli("run", str(path), "-q", cwd=ROOT)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"batchsim: error: {path}: policy.kind: "), lines[0]
    assert expected in lines[0], lines[0]


def test_the_readme_shows_the_example_that_the_tests_run():
    readme = (ROOT / "README.md").read_text()
    source = (EXAMPLE / "size_or_timeout.py").read_text()
    code = source[source.index("class SizeOrTimeout") :].strip()
    assert code in readme
    assert 'kind: "size_or_timeout:SizeOrTimeout"' in readme
