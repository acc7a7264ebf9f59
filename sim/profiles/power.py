"""Board power, sampled through NVML while the profiler times a model (NVIDIA GPUs).

A thread reads `nvmlDeviceGetPowerUsage` (milliwatts) every `interval_s` from before the
first timed call to after the last; each timed call logs its window under its batch
size. A size's `power_w` is the mean of the readings taken inside its calls' windows
(NVML's own reading is averaged by the driver over a short window, so it lags a call of
a few ms: spread over many rounds, the mean is the size's draw). Idle power is the mean
of readings over `idle_s` before the first call, with nothing running.

`nvml` is the `pynvml` module of nvidia-ml-py (the `models` extra), or any object with
its four functions: tests pass a fake, so this is tested on CPU.

May import: errors (and pynvml on first use).
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

METHOD = (
    "NVML nvmlDeviceGetPowerUsage (board power) read every {interval_ms:g} ms in a thread "
    "through the timed rounds; power_w = the mean of the readings inside each batch size's "
    "timed calls; idle_w = the mean over {idle_s:g} s with nothing running, before them"
)


class PowerMeter:
    """Power readings of one GPU, in a background thread, with call windows per size."""

    def __init__(self, nvml: Any, index: int = 0, interval_s: float = 0.005, idle_s: float = 1.0):
        self.nvml, self.interval_s, self.idle_s = nvml, interval_s, idle_s
        nvml.nvmlInit()
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.times: list[float] = []
        self.watts: list[float] = []
        self.windows: dict[int, list[tuple[float, float]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.idle_w: float | None = None

    @classmethod
    def open(cls, index: int = 0) -> tuple[PowerMeter | None, str]:
        """A meter on GPU `index`, or None and the reason (no nvidia-ml-py, no driver)."""
        try:
            import pynvml
        except ImportError:
            return None, "not sampled: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        try:
            return cls(pynvml, index), "sampled"
        except Exception as exc:  # noqa: BLE001 - NVML's own errors: no driver, no GPU
            return None, f"not sampled: NVML failed ({type(exc).__name__})"

    def read_w(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.times.append(time.perf_counter())
            self.watts.append(self.read_w())
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        """Idle power first (nothing runs yet), then readings until `stop`."""
        readings = []
        end = time.perf_counter() + self.idle_s
        while time.perf_counter() < end:
            readings.append(self.read_w())
            time.sleep(self.interval_s)
        self.idle_w = sum(readings) / len(readings)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        with contextlib.suppress(Exception):  # shutting down: nothing left to measure
            self.nvml.nvmlShutdown()

    def timed(self, batch_size: int, call: Callable[[], float]) -> float:
        """Run `call` (a timed call returning its ms), logging its window for the size."""
        began = time.perf_counter()
        ms = call()
        self.windows.setdefault(batch_size, []).append((began, time.perf_counter()))
        return ms

    def per_size_w(self) -> dict[int, float]:
        """Each size's mean reading inside its calls' windows (the nearest reading after a
        window's start where none fell inside it)."""
        out = {}
        for size, windows in self.windows.items():
            inside: list[float] = []
            for began, ended in windows:
                lo = bisect.bisect_left(self.times, began)
                hi = bisect.bisect_right(self.times, ended)
                if hi > lo:
                    inside.extend(self.watts[lo:hi])
                elif lo < len(self.watts):
                    inside.append(self.watts[lo])
            if inside:
                out[size] = sum(inside) / len(inside)
        return out

    def provenance(self) -> dict[str, Any]:
        """The sidecar's `power` block."""
        return {
            "method": METHOD.format(interval_ms=self.interval_s * 1000, idle_s=self.idle_s),
            "idle_w": None if self.idle_w is None else round(self.idle_w, 2),
            "readings": len(self.watts),
        }
