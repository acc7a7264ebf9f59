"""The model that `batchsim serve` runs: the scenario's model on its device, the admission
checks of every observation against its input spec (everything the model could fail on:
keys, shapes, dtypes, integer ranges, finiteness in the model's float type), batches
stacked and padded, CUDA graphs per padded size.

May import: errors, models, profiles (and torch on first use).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.errors import InputError


@dataclass
class ModelRunner:
    """The scenario's model on its device: observations stacked into batch inputs, the
    output split per request."""

    module: Any
    spec: dict[str, tuple[tuple[int, ...], str]]  # key -> (per-request shape, dtype)
    action_shape: tuple[int, ...]
    device: str
    dtype: Any
    # integer inputs' valid values [low, high) (token ids: the vocabulary)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    float_max: float = float(np.finfo(np.float32).max)  # the model's float type's largest
    # with CUDA graphs: per padded size, the captured inputs, the output and the replay
    graphs: dict[int, tuple[dict[str, Any], Any, Any]] = field(default_factory=dict)

    def spec_bytes(self) -> int:
        """One observation's arrays, in bytes, as the spec has them."""
        return sum(math.prod(s) * np.dtype(d).itemsize for s, d in self.spec.values())

    def check(self, observation: Any) -> dict[str, np.ndarray]:
        """The observation as arrays of the spec's shapes and dtypes (copies, owning their
        memory), or a ValueError naming what is wrong: whatever the model could fail on is
        refused here, before the request can join (and fail) a batch."""
        if not isinstance(observation, dict):
            raise ValueError("an observation must be a dict of arrays")
        missing = [k for k in self.spec if k not in observation]
        if missing:
            raise ValueError(f"observation lacks {', '.join(missing)}; expected {self.describe()}")
        out = {}
        for key, (shape, dtype) in self.spec.items():
            value = observation[key]
            if not isinstance(value, np.ndarray):  # plain numbers or lists: never objects
                if not isinstance(value, int | float | bool | list):
                    raise ValueError(f"observation['{key}'] must be an array")
                try:
                    value = np.asarray(value)
                except ValueError:
                    raise ValueError(f"observation['{key}'] is not a rectangular array") from None
            if value.dtype.kind not in "biuf":
                raise ValueError(f"observation['{key}'] must hold numbers, not {value.dtype}")
            if value.shape != shape:
                raise ValueError(f"observation['{key}'] has shape {value.shape}, expected {shape}")
            wanted = np.dtype(dtype)
            if wanted.kind in "iu":
                if value.dtype.kind == "f":
                    raise ValueError(f"observation['{key}'] must hold integers ({wanted})")
                low, high = self.ranges.get(key, (np.iinfo(wanted).min, np.iinfo(wanted).max + 1))
                if value.size and (value.min() < low or value.max() >= high):
                    raise ValueError(
                        f"observation['{key}'] must hold values from {low} to {high - 1}"
                    )
            elif wanted.kind == "f" and value.size:
                # finite in the model's own float type: 1e300 is finite, but inf in float32
                finite = value.dtype.kind != "f" or np.isfinite(value).all()
                if not finite or np.abs(value.astype(np.float64)).max() > self.float_max:
                    raise ValueError(
                        f"observation['{key}'] must hold finite numbers within "
                        f"±{self.float_max:.4g} (the model's float type)"
                    )
            out[key] = value.astype(wanted, copy=True)
        return out

    def describe(self) -> str:
        return ", ".join(f"{k} {list(s)} {d}" for k, (s, d) in self.spec.items())

    def run(
        self, observations: list[dict[str, np.ndarray]], padded: int
    ) -> tuple[np.ndarray, float]:
        """One batch: `observations` padded to `padded` rows (repeating the last), run once.
        Returns each request's actions and the model call's own time (ms), without the
        stacking and copying around it."""
        import torch

        rows = observations + [observations[-1]] * (padded - len(observations))
        inputs = {}
        for key in self.spec:
            stacked = torch.from_numpy(np.stack([r[key] for r in rows]))
            if stacked.is_floating_point():
                stacked = stacked.to(self.dtype)
            inputs[key] = stacked.to(self.device)
        if self.device == "cuda":
            torch.cuda.synchronize()  # the copies above are not the model's time
        began = time.perf_counter()
        if padded in self.graphs:  # refill the graph's own input buffers, then replay it
            static, out, replay = self.graphs[padded]
            for key, value in inputs.items():
                static[key].copy_(value)
            replay()
        else:
            with torch.no_grad():
                out = self.module(**inputs)
        if self.device == "cuda":
            torch.cuda.synchronize()
        model_ms = (time.perf_counter() - began) * 1000
        return out.float().cpu().numpy()[: len(observations)], model_ms

    def warm(self, sizes: list[int]) -> None:
        """One untimed batch per padded size before serving: a model's first call at a
        size is slow (allocation, kernel selection), and no robot should pay for it."""
        zeros = {key: np.zeros(shape, dtype=dt) for key, (shape, dt) in self.spec.items()}
        for size in sizes:
            self.run([zeros], size)

    def capture(self, sizes: list[int]) -> None:
        """A CUDA graph per padded size the policy can launch, captured before serving."""
        import torch

        from sim.profiles.profiler import capture_cuda_graph

        for size in sizes:
            static = {
                key: torch.zeros(
                    (size, *shape),
                    dtype=self.dtype if np.dtype(dt).kind == "f" else getattr(torch, dt),
                    device=self.device,
                )
                for key, (shape, dt) in self.spec.items()
            }
            holder: dict[str, Any] = {}

            def call(static=static, holder=holder) -> None:
                with torch.no_grad():
                    holder["out"] = self.module(**static)

            replay = capture_cuda_graph(call)
            self.graphs[size] = (static, holder["out"], replay)


def build_runner(model_section: Any) -> ModelRunner:
    """The scenario's `model:` built on its device, with its per-request input spec."""
    import torch

    from sim import models
    from sim.profiles.estimate.work import torch_dtype

    if model_section.device == "cuda" and not torch.cuda.is_available():
        raise InputError("is cuda, but this torch sees no CUDA device", field="model.device")
    if model_section.threads is not None:  # as the profile was measured (validate, profile)
        torch.set_num_threads(model_section.threads)
    bundle = models.build(model_section.name, model_section.size, model_section.device)
    dtype = torch_dtype(model_section.dtype)
    module = bundle.module.to(model_section.device).to(dtype).eval()
    sample = bundle.make_inputs(1, cameras=model_section.cameras, dtype=torch.float32)
    spec = {
        key: (tuple(value.shape[1:]), str(value.numpy().dtype)) for key, value in sample.items()
    }
    with torch.no_grad():
        out = module(**{k: v.to(model_section.device) for k, v in _cast(sample, dtype).items()})
    return ModelRunner(
        module,
        spec,
        tuple(out.shape[1:]),
        model_section.device,
        dtype,
        ranges=dict(bundle.input_ranges),
        float_max=float(torch.finfo(dtype).max),
    )


def _cast(inputs: dict, dtype: Any) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
