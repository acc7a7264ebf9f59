"""Reference models build offline and run; the profiler's CSV feeds the simulator with its
provenance; stamps never mix; bad profiler input exits 2."""

from __future__ import annotations

import json

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from sim.errors import InputError  # noqa: E402
from sim.models import build  # noqa: E402
from sim.profiles import store  # noqa: E402
from sim.profiles.profiler import (  # noqa: E402
    ProfileOptions,
    Profiler,
    check_same_stamp,
    profile_model,
    write_profile,
)
from tests.conftest import ROOT, run_cli  # noqa: E402


@pytest.mark.parametrize("name", ["pi0", "openvla", "act"])
@pytest.mark.parametrize("batch", [1, 2, 4])
def test_tiny_models_run_with_the_documented_output_shape(name, batch):
    bundle = build(name, "tiny")
    cameras = 1 if name == "openvla" else 2
    out = bundle.module(**bundle.make_inputs(batch, cameras=cameras))
    assert tuple(out.shape) == bundle.output_shape(batch)
    expected = {"pi0": (batch, 50, 32), "openvla": (batch, 7), "act": (batch, 100, 14)}[name]
    assert tuple(out.shape) == expected


def test_full_sizes_are_the_architectures_measured_on_the_gpus():
    """Built on the meta device (no memory), the full-size models have exactly the parameter
    counts of the H100 runs shipped under profiles/h100/."""
    measured = {
        "pi0": json.loads((ROOT / "profiles/h100/pi0-hf-eager.meta.json").read_text())["params"],
        "openvla": json.loads((ROOT / "profiles/h100/openvla-hf-eager.meta.json").read_text())[
            "params"
        ],
    }
    with torch.device("meta"):
        for name, params in measured.items():
            assert build(name, "full").param_count == params


def test_param_count_follows_the_config():
    # ACT's transformer: doubling d_model roughly quadruples the transformer's weights
    small, tiny = build("act", "small"), build("act", "tiny")
    assert small.param_count > 100 * tiny.param_count
    assert build("pi0", "tiny").param_count == sum(
        p.numel() for p in build("pi0", "tiny").module.parameters()
    )


def test_profile_of_a_tiny_model_feeds_the_simulator(tmp_path):
    bundle = build("pi0", "tiny")
    opts = ProfileOptions(threads=1, warmup=1, min_reps=3, max_reps=4)
    frame, meta = profile_model(bundle, [1, 2, 4], [1, 2], options=opts)
    assert set(frame.batch_size) == {1, 2, 4} and set(frame.cameras) == {1, 2}
    assert (frame.latency_ms > 0).all() and (frame.peak_mem_mb > 0).all()
    path = write_profile(frame, meta, tmp_path / "pi0-tiny.csv")
    meta_back = json.loads((tmp_path / "pi0-tiny.meta.json").read_text())
    assert meta_back["model"] == "pi0" and meta_back["size"] == "tiny" and meta_back["threads"] == 1
    assert (
        meta_back["config_hash"] == bundle.config_hash and meta_back["params"] == bundle.param_count
    )
    profile = store.read(path, {"cameras": 2})
    assert profile.sizes == (1, 2, 4) and profile.provenance["model"] == "pi0"
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "duration_s: 5\n"
        f"profile: {{path: {path}, cameras: 2}}\n"
        "workload: {kind: poisson, rate_rps: 50}\n"
        "policy: {kind: dynamic, max_batch: 4, max_wait_ms: 2}\n"
    )
    assert run_cli("run", str(scenario), "-q").returncode == 0


def test_interleaved_profile_times_every_size_in_shuffled_rounds_on_fresh_inputs():
    """The server-like profile: every round runs each size once, in a shuffled order, each
    call on inputs built for it; the order is recorded in the provenance's timing."""
    bundle = build("act", "tiny")
    built, order = [], []
    make_inputs = bundle.make_inputs

    def tracking(batch_size, **kwargs):
        inputs = make_inputs(batch_size, **kwargs)
        built.append(batch_size)
        return inputs

    bundle.make_inputs = tracking
    opts = ProfileOptions(threads=1, warmup=1, min_reps=4, max_reps=4, budget_s=0, interleave=True)
    profiler = Profiler(bundle, opts)
    call = profiler.call
    profiler.call = lambda **inputs: order.append(len(inputs["state"])) or call(**inputs)
    measured = profiler.measure_interleaved([1, 2, 3], cameras=1, instruction_tokens=None)
    assert {key: len(samples) for key, (samples, _) in measured.items()} == {
        (1, 0.0): 4,
        (2, 0.0): 4,
        (3, 0.0): 4,
    }
    rounds = [order[i : i + 3] for i in range(0, 12, 3)]
    assert all(sorted(r) == [1, 2, 3] for r in rounds)  # every size once per round
    assert len({tuple(r) for r in rounds}) > 1  # in shuffled orders
    assert built.count(2) == 1 + 4  # the warm-up's inputs, then fresh ones for every timed call
    assert all(peak > 0 for _, peak in measured.values())
    frame, meta = profile_model(bundle, [1, 2], options=opts)
    assert frame.groupby("batch_size").size().to_dict() == {1: 4, 2: 4}
    assert "interleaved" in meta["timing"]


def test_idle_levels_sleep_right_before_their_timed_calls(tmp_path, monkeypatch):
    """With idle levels each round times every (size, level): the back-to-back calls first,
    then each call straight after a sleep of its level; the rows carry idle_ms and load as
    a profile with idle levels."""
    import sim.profiles.profiler

    bundle = build("act", "tiny")
    events = []
    monkeypatch.setattr(sim.profiles.profiler.time, "sleep", lambda s: events.append(("sleep", s)))
    opts = ProfileOptions(
        threads=1, warmup=1, min_reps=3, max_reps=3, budget_s=0, interleave=True, idle_ms=(0, 20),
        busy_lead_ms=0,
    )  # fmt: skip
    profiler = Profiler(bundle, opts)
    call = profiler.call
    profiler.call = lambda **inputs: events.append(("call", len(inputs["state"]))) or call(**inputs)
    warmups = 2  # one per size, before any round
    measured = profiler.measure_interleaved([1, 2], cameras=1, instruction_tokens=None)
    assert set(measured) == {(1, 0.0), (1, 20.0), (2, 0.0), (2, 20.0)}
    timed = events[warmups:]
    calls = [i for i, e in enumerate(timed) if e[0] == "call"]
    assert len(calls) == 4 * 3
    after_sleep = [i > 0 and timed[i - 1] == ("sleep", 0.02) for i in calls]
    # each round: the back-to-back calls in one busy block, then each call straight after
    # its 20 ms sleep
    assert after_sleep == [False, False, True, True] * 3
    frame, meta = profile_model(bundle, [1, 2], options=opts)
    assert frame.groupby(["batch_size", "idle_ms"]).size().to_dict() == {
        (1, 0.0): 3,
        (1, 20.0): 3,
        (2, 0.0): 3,
        (2, 20.0): 3,
    }
    assert "idle_ms: 0, 20 ms" in meta["timing"]
    path = write_profile(frame, meta, tmp_path / "idle.csv")
    assert sorted(_idle_levels(path)) == [0.0, 0.02]
    with pytest.raises(InputError, match="interleaved"):
        ProfileOptions(idle_ms=(0, 20)).validate()


def test_busy_repeats_time_more_back_to_back_calls_per_round(monkeypatch):
    import sim.profiles.profiler

    bundle = build("act", "tiny")
    events = []
    monkeypatch.setattr(sim.profiles.profiler.time, "sleep", lambda s: events.append("sleep"))
    opts = ProfileOptions(
        threads=1, warmup=1, min_reps=2, max_reps=2, interleave=True, idle_ms=(0, 20),
        busy_repeats=3, busy_lead_ms=0,
    )  # fmt: skip
    profiler = Profiler(bundle, opts)
    call = profiler.call
    profiler.call = lambda **inputs: events.append("call") or call(**inputs)
    measured = profiler.measure_interleaved([1, 2], cameras=1, instruction_tokens=None)
    counts = {key: len(samples) for key, (samples, _) in measured.items()}
    assert counts == {(1, 0.0): 6, (2, 0.0): 6, (1, 20.0): 2, (2, 20.0): 2}
    # each round: six back-to-back calls, then two calls each straight after a sleep
    round_ = ["call"] * 6 + ["sleep", "call"] * 2
    assert events[2:] == round_ * 2  # after one warm-up call per size
    with pytest.raises(InputError, match=">= 1"):
        ProfileOptions(busy_repeats=0).validate()


def test_untimed_calls_lead_into_each_busy_block_after_idle_waits(monkeypatch):
    """The first calls after an idle wait run slower for a while, so each round's busy
    block starts after busy_lead_ms of untimed calls; the samples are the same in number."""
    import sim.profiles.profiler

    bundle = build("act", "tiny")
    events = []
    monkeypatch.setattr(sim.profiles.profiler.time, "sleep", lambda s: events.append("sleep"))
    opts = ProfileOptions(
        threads=1, warmup=1, min_reps=2, max_reps=2, interleave=True, idle_ms=(0, 20),
        busy_lead_ms=5,
    )  # fmt: skip
    profiler = Profiler(bundle, opts)
    call = profiler.call
    profiler.call = lambda **inputs: events.append("call") or call(**inputs)
    measured = profiler.measure_interleaved([1, 2], cameras=1, instruction_tokens=None)
    assert {len(samples) for samples, _ in measured.values()} == {2}
    # between round 1's last idle call and round 2's first sleep: lead-in calls, then the
    # two back-to-back timed calls
    sleeps = [i for i, e in enumerate(events) if e == "sleep"]
    between = events[sleeps[1] + 2 : sleeps[2]]
    assert between == ["call"] * len(between) and len(between) > 2
    first_round = events[2 : sleeps[0]]  # after the warm-up calls: a lead-in too
    assert len(first_round) > 2
    with pytest.raises(InputError, match=">= 0 ms"):
        ProfileOptions(busy_lead_ms=-1).validate()


def test_a_wall_budget_bounds_the_rounds_idle_waits_included():
    """Each round sleeps 50 ms, so a 0.5 s wall budget fits at most 10 rounds, never fewer
    than min_reps; a budget smaller than one round still gives min_reps."""
    bundle = build("act", "tiny")

    def rounds(wall_s: float, min_reps: int) -> int:
        opts = ProfileOptions(
            threads=1, warmup=1, min_reps=min_reps, max_reps=100, interleave=True,
            idle_ms=(0, 50), wall_budget_s=wall_s,
        )  # fmt: skip
        measured = Profiler(bundle, opts).measure_interleaved([1], 1, None)
        counts = {len(samples) for samples, _ in measured.values()}
        assert len(counts) == 1  # every (size, level) gets every round
        return counts.pop()

    assert 2 <= rounds(0.5, 2) <= 10
    assert rounds(0.001, 3) == 3
    with pytest.raises(InputError, match="interleaved"):
        ProfileOptions(wall_budget_s=5).validate()


def test_profiles_of_different_stamps_never_combine(tmp_path):
    bundle = build("act", "tiny")
    opts = ProfileOptions(threads=1, warmup=1, min_reps=3, max_reps=3)
    frame, meta = profile_model(bundle, [1, 2], options=opts)
    path = write_profile(frame, meta, tmp_path / "act.csv")
    more, meta3 = profile_model(bundle, [4], [3], options=opts)
    write_profile(more, meta3, path, append=True)  # same stamp: added
    assert set(pd.read_csv(path).cameras) == {1, 3}
    other = {**meta3, "dtype": "bfloat16"}
    with pytest.raises(InputError, match="dtype differ"):
        write_profile(more, other, path, append=True)
    with pytest.raises(InputError, match="never combined"):
        check_same_stamp([meta, {**meta, "threads": 64}], ["a.csv", "b.csv"])


def test_interrupted_profile_keeps_what_was_measured():
    bundle = build("act", "tiny")
    calls = []

    def stop_after_first(b, c, samples):
        calls.append(b)
        raise KeyboardInterrupt

    frame, meta = profile_model(
        bundle,
        [1, 2, 4],
        options=ProfileOptions(warmup=1, min_reps=3, max_reps=3),
        on_step=stop_after_first,
    )
    assert meta["interrupted"] is True
    assert set(frame.batch_size) == {1} and calls == [1]


def test_cli_profiles_a_plugin_model(tmp_path):
    out = tmp_path / "mlp.csv"
    result = run_cli(
        "profile", "--model", "examples.tiny_mlp_policy:build", "--batch-sizes", "1,2",
        "--max-reps", "5", "--threads", "1", "--out", str(out), "--plot",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert store.read(out).sizes == (1, 2)
    assert out.with_suffix(".png").stat().st_size > 10_000
    interleaved = tmp_path / "mlp-interleaved.csv"
    result = run_cli(
        "profile", "--model", "examples.tiny_mlp_policy:build", "--batch-sizes", "1,2",
        "--max-reps", "5", "--threads", "1", "--interleave", "--out", str(interleaved),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert pd.read_csv(interleaved).groupby("batch_size").size().to_dict() == {1: 5, 2: 5}
    after_idle = tmp_path / "mlp-idle.csv"
    result = run_cli(
        "profile", "--model", "examples.tiny_mlp_policy:build", "--batch-sizes", "1,2",
        "--max-reps", "3", "--threads", "1", "--idle-ms", "0,5", "--out", str(after_idle),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(after_idle).query("idle_ms == 5")) == 2 * 3
    meta = json.loads(interleaved.with_suffix(".meta.json").read_text())
    assert "interleaved" in meta["timing"]


def test_compiled_model_profiles_and_never_mixes_with_an_eager_profile(tmp_path):
    """--compile runs the model through torch.compile (inductor, on this CPU); the stamp
    records it, so an eager profile of the same model is refused by --append."""
    out = tmp_path / "mlp.csv"
    args = ["profile", "--model", "examples.tiny_mlp_policy:build", "--batch-sizes", "1,2",
            "--max-reps", "3", "--threads", "1", "--out", str(out)]  # fmt: skip
    result = run_cli(*args, "--compile")
    assert result.returncode == 0, result.stderr
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["compile"] is True and store.read(out).sizes == (1, 2)
    eager = run_cli(*args, "--append")
    assert eager.returncode == 2 and "compile differ" in eager.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "pi7"], ["--model", "unknown model 'pi7'", "pi0"]),
        (["--model", "pi0", "--batch-sizes", "0,2"], ["--batch-sizes", "from 1 to 4,096"]),
        (["--model", "pi0", "--batch-sizes", "a"], ["--batch-sizes", "integers"]),
        (["--model", "pi0", "--device", "tpu"], ["--device", "unsupported device 'tpu'"]),
        (["--model", "pi0", "--device", "cuda"], ["--device", "no CUDA device"]),
        (["--model", "pi0", "--size", "huge"], ["--size", "unknown size 'huge'"]),
        (["--model", "nosuchpkg.mod:build"], ["--model", "cannot import 'nosuchpkg.mod'"]),
        (["--model", "examples.tiny_mlp_policy:nothing"], ["--model", "no callable 'nothing'"]),
        (["--model", "pi0", "--dtype", "int8"], ["--dtype", "unknown dtype 'int8'"]),
        (["--model", "pi0", "--idle-ms", "0,x"], ["--idle-ms", "milliseconds"]),
        (["--model", "pi0", "--idle-ms", "0,-5"], ["--idle-ms", "from 0 to 60,000 ms"]),
    ],
)
def test_bad_profiler_input_exits_2(args, expected, tmp_path):
    result = run_cli("profile", *args, "--out", str(tmp_path / "x.csv"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert "Traceback" not in line and len(line.splitlines()) == 1
    for fragment in expected:
        assert fragment in line, (fragment, line)


class FakeEvent:
    """Stands in for torch.cuda.Event: a clock that advances 5 ms per recorded call pair."""

    clock_ms = 0.0

    def __init__(self, enable_timing=True):
        self.t = None

    def record(self):
        FakeEvent.clock_ms += 2.5
        self.t = FakeEvent.clock_ms

    def elapsed_time(self, other):
        return other.t - self.t


class FakeGraph:
    def __init__(self):
        self.replays = 0
        self.captured = None

    def replay(self):
        self.replays += 1


def test_cuda_code_paths_with_a_mocked_device(monkeypatch):
    """No GPU here: the CUDA bookkeeping (events, synchronisation, peak memory, graph capture
    and replay, provenance) runs against fakes, so its shapes and records are checked."""
    import contextlib
    from types import SimpleNamespace

    from torch import nn

    from sim.models import ModelBundle
    from sim.profiles.profiler import Profiler, provenance

    class HostOnly(nn.Linear):
        def to(self, *args, **kwargs):  # keep the weights on the CPU whatever device is asked
            return super().to(
                kwargs.get("dtype", args[1] if len(args) > 1 else None) or torch.float32
            )

    calls = {"sync": 0, "captures": 0}
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "synchronize", lambda: calls.__setitem__("sync", calls["sync"] + 1))
    monkeypatch.setattr(cuda, "reset_peak_memory_stats", lambda: None)
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda: 3 * 2**20 * 1024)
    monkeypatch.setattr(cuda, "Event", FakeEvent)
    monkeypatch.setattr(cuda, "get_device_properties", lambda i: SimpleNamespace(name="Fake H100"))
    monkeypatch.setattr(cuda, "Stream", lambda: SimpleNamespace(wait_stream=lambda s: None))
    monkeypatch.setattr(cuda, "current_stream", lambda: SimpleNamespace(wait_stream=lambda s: None))
    monkeypatch.setattr(cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(cuda, "CUDAGraph", FakeGraph)

    @contextlib.contextmanager
    def capture(graph):
        calls["captures"] += 1
        yield

    monkeypatch.setattr(cuda, "graph", capture)
    module = HostOnly(8, 4)
    bundle = ModelBundle(
        "fake", "tiny", module,
        lambda b, cameras=1, instruction_tokens=None, device="cpu", dtype=torch.float32: {"input": torch.randn(b, 8)},
        config={"width": 8},
    )  # fmt: skip
    for graphs in (False, True):
        opts = ProfileOptions(
            device="cuda", dtype="float32", cuda_graphs=graphs, warmup=2, min_reps=4, max_reps=6
        )
        samples, peak = Profiler(bundle, opts).measure(4, 1, None)
        assert samples and all(ms == pytest.approx(2.5) for ms in samples)
        assert peak == 3 * 1024  # MiB
    assert calls["captures"] == 1  # one graph per batch size, when asked
    # interleaved with graphs: one capture per size, fresh inputs copied into its buffers
    opts = ProfileOptions(
        device="cuda", cuda_graphs=True, warmup=1, min_reps=3, max_reps=3, interleave=True
    )
    profiler = Profiler(bundle, opts)
    measured = profiler.measure_interleaved([1, 2], 1, None)
    assert calls["captures"] == 3
    assert {key: len(samples) for key, (samples, _) in measured.items()} == {
        (1, 0.0): 3,
        (2, 0.0): 3,
    }
    # staged with graphs: each stage captured once per size, and replayed in the rounds
    module.stages = lambda input: [("a", 1, lambda: module(input)), ("b", 3, lambda: module(input))]
    opts = ProfileOptions(
        device="cuda", cuda_graphs=True, warmup=1, min_reps=2, max_reps=2, interleave=True,
        stages=True,
    )  # fmt: skip
    measured = Profiler(bundle, opts).measure_interleaved([1, 2], 1, None)
    assert calls["captures"] == 3 + 2 + 2 * 2  # whole calls, and two stages at two sizes
    assert {
        key: {s: len(v) for s, v in samples.items()} for key, (samples, _) in measured.items()
    } == {
        (1, 0.0): {"a": 2, "b": 2},
        (2, 0.0): {"a": 2, "b": 2},
    }
    meta = provenance(bundle, ProfileOptions(device="cuda", cuda_graphs=True))
    assert (
        meta["device"] == "Fake H100"
        and "CUDA events" in meta["timing"]
        and "graph" in meta["timing"]
    )


def test_staged_profile_of_a_tiny_model_loads_as_stages(tmp_path):
    """profile --stages times each stage of pi0 (vision, prefix, one step run flow_steps
    times); the CSV's stage column and the sidecar's stage list make it a staged model."""
    out = tmp_path / "pi0-staged.csv"
    result = run_cli(
        "profile", "--model", "pi0", "--size", "tiny", "--batch-sizes", "1,2", "--stages",
        "--max-reps", "3", "--budget-s", "0", "--threads", "1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out)
    assert frame.groupby(["stage", "batch_size"]).size().to_dict() == {
        (stage, b): 3 for stage in ("prefix", "step", "vision") for b in (1, 2)
    }
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["stages"] == [
        {"name": "vision", "repeat": 1}, {"name": "prefix", "repeat": 1},
        {"name": "step", "repeat": 10},
    ]  # fmt: skip
    from sim.config import load

    loaded = load({"requests": 10, "profile": str(out), "workload": {"kind": "poisson", "rate_rps": 10},
                   "policy": {"kind": "continuous", "max_batch": 2}})  # fmt: skip
    assert loaded.model.names == ("vision", "prefix", "step") and loaded.model.steps == 10
    medians = {s: frame.query(f"stage == '{s}' and batch_size == 1").latency_ms.median()
               for s in ("vision", "prefix", "step")}  # fmt: skip
    # three samples per stage, comonotone: the whole's median is the sum of the medians
    whole = medians["vision"] + medians["prefix"] + 10 * medians["step"]
    assert loaded.profile.latency_ms(1) == pytest.approx(whole)


def test_every_reference_model_exposes_its_stages():
    from sim.models import build

    expected = {"pi0": [("vision", 1), ("prefix", 1), ("step", 10)],
                "openvla": [("prefill", 1), ("decode", 7)], "act": [("model", 1)]}  # fmt: skip
    for name, stages in expected.items():
        bundle = build(name, "tiny")
        calls = bundle.module.stages(**bundle.make_inputs(2))
        assert [(n, r) for n, r, _ in calls] == stages
        for _, _, call in calls:
            call()  # each runs on its own inputs, again and again
            call()


def test_the_prepared_gpu_script_runs_its_cpu_smoke_test(tmp_path):
    """scripts/gpu_staged_profiles.py is run on a GPU when one is lent; here its CPU mode
    checks that it still builds, measures and writes staged profiles that load."""
    import subprocess
    import sys

    script = ROOT / "scripts" / "gpu_staged_profiles.py"
    args = ["--device", "cpu", "--size", "tiny", "--out", str(tmp_path), "--wall-s", "1",
            "--batch-sizes", "1,2"]  # fmt: skip
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "pi0-staged-eager.csv"
    from sim.config import load

    loaded = load({"requests": 5, "profile": {"path": str(path), "cameras": 3},
                   "workload": {"kind": "poisson", "rate_rps": 5},
                   "policy": {"kind": "continuous", "max_batch": 2}})  # fmt: skip
    assert loaded.model.names == ("vision", "prefix", "step")
    assert json.loads(path.with_suffix(".meta.json").read_text())["derived"] is False


def _idle_levels(path, select=None):
    """A profile CSV's idle levels (seconds -> profile), as the loader reads them."""
    return store.by_idle_level(store.read_table(path), select)
