"""The profiler's board-power sampling, on the CPU with a fake NVML: a model that holds a
flag while it runs, and a fake `nvmlDeviceGetPowerUsage` that reads 60 W idle and
100 + 50 x batch W while a batch runs. The profile gets a power_w column per size, the
sidecar its method and idle power, and the written CSV reads back with them."""

from __future__ import annotations

import json
import threading
import time

import pytest

from sim.profiles import store
from sim.profiles.power import PowerMeter

torch = pytest.importorskip("torch")

IDLE_W = 60.0


class FakeNVML:
    """pynvml's four functions, reading the model's flag: milliwatts, as NVML reports."""

    def __init__(self) -> None:
        self.running = 0  # the batch size in the model now (0: idle)
        self.lock = threading.Lock()
        self.shut = False

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's own names
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        return f"gpu{index}"

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:  # noqa: N802
        with self.lock:
            b = self.running
        return int(1000 * (IDLE_W if b == 0 else 100 + 50 * b))

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shut = True


def bundle(nvml: FakeNVML):
    from sim.models import ModelBundle

    class Flagged(torch.nn.Module):
        def forward(self, x):
            with nvml.lock:
                nvml.running = x.shape[0]
            time.sleep(0.03)  # long enough for several readings inside the call
            with nvml.lock:
                nvml.running = 0
            return x.sum(dim=1)

    def make_inputs(batch_size, cameras=1, instruction_tokens=None, device="cpu", dtype=None):
        return {"x": torch.zeros(batch_size, 4)}

    return ModelBundle("flagged", "tiny", Flagged(), make_inputs)


@pytest.mark.parametrize("interleave", [False, True])
def test_power_is_sampled_per_batch_size_during_the_timed_calls(tmp_path, interleave):
    from sim.profiles.profiler import ProfileOptions, profile_model, write_profile

    nvml = FakeNVML()
    meter = PowerMeter(nvml, interval_s=0.002, idle_s=0.1)
    options = ProfileOptions("cpu", warmup=1, min_reps=4, max_reps=4, interleave=interleave)
    frame, meta = profile_model(bundle(nvml), [1, 2, 4], (1,), None, options, meter=meter)
    assert nvml.shut
    per_size = frame.groupby("batch_size").power_w.first()
    # readings inside each size's calls: its busy power (an edge reading may be idle, and a
    # busy machine may delay the sampler: more than halfway from idle to busy, generously)
    for b, watts in per_size.items():
        busy = 100 + 50 * b
        assert IDLE_W + (busy - IDLE_W) / 2 < watts <= busy
    assert meta["power"]["idle_w"] == IDLE_W
    assert "nvmlDeviceGetPowerUsage" in meta["power"]["method"]
    path = write_profile(frame, meta, tmp_path / "flagged.csv")
    profile = store.read(path)
    assert profile.power_w == tuple(per_size.round(2))
    assert json.loads(store.meta_path_for(path).read_text())["power"]["idle_w"] == IDLE_W


def test_without_nvml_a_cuda_profile_says_why_power_is_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("no pynvml")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    meter, why = PowerMeter.open()
    assert meter is None and "nvidia-ml-py is not installed" in why


def test_on_a_machine_without_a_driver_nvml_fails_in_one_reason():
    pytest.importorskip("pynvml")
    meter, why = PowerMeter.open()
    if meter is not None:  # a machine with an NVIDIA driver: a real meter
        meter.stop()
        pytest.skip("this machine has NVML")
    assert why.startswith("not sampled: NVML failed")


def test_estimate_carries_measured_power_by_the_tables_ratio(tmp_path):
    """The shipped H100 profile with a power_w column (and idle power) added, estimated for
    the L40S: every power_w scales by 350 / 700 W (the table's maximum board powers), and
    the sidecar says so."""
    import pandas as pd

    from sim.profiles.estimate.gpus import GPUS
    from sim.profiles.estimate.roofline import estimate
    from tests.conftest import ROOT

    source = ROOT / "profiles/h100/pi0-cudagraph.csv"
    frame = pd.read_csv(source)
    frame["power_w"] = 300.0 + 5.0 * frame.batch_size
    path = tmp_path / "measured.csv"
    frame.to_csv(path, index=False)
    meta = json.loads(store.meta_path_for(source).read_text())
    meta["power"] = {"method": "NVML (test)", "idle_w": 72.0}
    store.meta_path_for(path).write_text(json.dumps(meta))
    est = estimate(path, GPUS["l40s"])
    ratio = GPUS["l40s"].max_w / GPUS["h100"].max_w
    assert (est.frame.power_w == (300.0 + 5.0 * est.frame.batch_size) * ratio).all()
    assert est.meta["power"]["idle_w"] == round(72.0 * ratio, 2)
    assert "maximum board power" in est.meta["power"]["method"]
    assert est.meta["power"]["source_method"] == "NVML (test)"
