"""The work one call of a model does, counted on torch's meta device: no weights, no GPU.

Every aten operation that launches a kernel is one row: its FLOPs (torch's own flop
formulas, torch.utils.flop_counter) and the bytes of the tensors it reads and writes,
of which how many are weights. Views launch nothing and are not counted. Fused
attention (F.scaled_dot_product_attention) is one kernel that reads q, k and v and
writes its output, as the flash and memory-efficient kernels a GPU runs do, not the
math decomposition the meta device would otherwise trace.

A model with stages (its module's `stages(**inputs)`) is counted per stage, each once
with its repeat (pi0: vision, prefix, step x 10); others as one stage, `model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import InputError, one_line

# shape columns a profile may carry, and the make_inputs keyword each sets
SHAPE_INPUTS = {"cameras": "cameras", "instruction_tokens": "instruction_tokens"}
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class StageWork:
    """One stage's kernels for one pass; the call runs the stage `repeat` times."""

    name: str
    repeat: int
    flops: np.ndarray  # per kernel
    weight_bytes: np.ndarray  # per kernel: weights read
    tensor_kernel: np.ndarray  # per activation tensor read or written: its kernel
    tensor_bytes: np.ndarray  # per activation tensor: its size
    grid: np.ndarray  # per kernel: (batch, rows, columns) of a matrix product's output, else 0s

    @property
    def kernels(self) -> int:
        return len(self.flops)

    def activation_bytes(self, cache_bytes: float = 0.0) -> np.ndarray:
        """Per kernel, the activation bytes (inputs, outputs, KV cache) that reach memory:
        a tensor of at most `cache_bytes` stays in the GPU's last-level cache between
        the kernel that writes it and the next that reads it."""
        spilled = np.where(self.tensor_bytes > cache_bytes, self.tensor_bytes, 0.0)
        return np.bincount(self.tensor_kernel, weights=spilled, minlength=self.kernels)


@dataclass(frozen=True)
class CallWork:
    """One call's work at one batch size and input shape."""

    batch_size: int
    shape: dict[str, int]
    stages: tuple[StageWork, ...]

    def totals(self) -> dict[str, float]:
        """FLOPs, bytes (of which weights, activations and KV cache) and kernel launches
        of one call, repeats included."""
        flops = sum(s.repeat * float(s.flops.sum()) for s in self.stages)
        weights = sum(s.repeat * float(s.weight_bytes.sum()) for s in self.stages)
        activations = sum(s.repeat * float(s.tensor_bytes.sum()) for s in self.stages)
        return {
            "gflop": flops / 1e9,
            "gb_weights": weights / 1e9,
            "gb_activations": activations / 1e9,
            "kernels": sum(s.repeat * s.kernels for s in self.stages),
        }


def torch_dtype(name: str) -> Any:
    """'bfloat16' or 'torch.bfloat16' (as sidecars write it) -> torch.bfloat16."""
    import torch

    short = str(name).removeprefix("torch.")
    if short not in DTYPES:
        raise InputError(f"dtype '{name}' is not one of {', '.join(DTYPES)}", field="dtype")
    return getattr(torch, short)


def meta_bundle(name: str, size: str):
    """The model built on the meta device: its structure and parameter count, no memory."""
    import torch

    from sim import models

    with torch.device("meta"):
        return models.build(name, size)


def count(bundle: Any, batch_size: int, shape: dict[str, int], dtype: Any) -> CallWork:
    """Count one call of `bundle` (built on the meta device) at this batch size and shape."""
    import torch

    kwargs = {SHAPE_INPUTS.get(k, k): int(v) for k, v in shape.items()}
    module = bundle.module.to(dtype)
    try:
        inputs = bundle.make_inputs(batch_size, device="meta", dtype=dtype, **kwargs)
    except TypeError as exc:
        raise InputError(
            f"model {bundle.name}'s inputs take no {', '.join(kwargs)} ({one_line(exc)})",
            option="shape",
        ) from None
    weights = {id(p) for p in module.parameters()}
    stages_of = getattr(module, "stages", None)
    counter = _Counter(weights)
    if callable(stages_of):
        with torch.no_grad():
            calls = list(stages_of(**inputs))  # builds each stage's inputs (not counted)
        found = []
        for name, repeat, call in calls:
            with torch.no_grad(), counter.counting():
                call()
            found.append(counter.take(name, int(repeat)))
    else:
        with torch.no_grad(), counter.counting():
            module(**inputs)
        found = [counter.take("model", 1)]
    return CallWork(batch_size, dict(shape), tuple(found))


def _nbytes(t: Any) -> int:
    # an expanded view reads its storage, not every broadcast element
    return min(t.numel() * t.element_size(), t.untyped_storage().nbytes())


class _Counter:
    """Records kernels while counting (a dispatch mode under a function mode)."""

    def __init__(self, weights: set[int]):
        self.weights = weights
        self.rows: list[tuple[float, float, float, float, float]] = []
        # per kernel: flops, weight bytes, and a matrix product's output grid (batch, rows,
        # columns; zeros for other kernels), which sets how many of the GPU's SMs it fills
        self.tensors: list[tuple[int, float]] = []  # per activation tensor: (kernel, bytes)

    def counting(self):
        from contextlib import ExitStack

        stack = ExitStack()
        stack.enter_context(_fused_attention(self))
        stack.enter_context(_dispatch(self))
        return stack

    def record(
        self, flops: float, inputs: list, outputs: list, gathered: list = (), grid=(0, 0, 0)
    ) -> None:
        """`gathered`: weights read by a lookup, counted as the rows it returns."""
        kernel = len(self.rows)
        weight = float(sum(_nbytes(t) for t in gathered))
        for t in inputs:
            base = t._base if t._base is not None else t
            if id(base) in self.weights or id(t) in self.weights:
                weight += _nbytes(t)
            else:
                self.tensors.append((kernel, float(_nbytes(t))))
        self.tensors.extend((kernel, float(_nbytes(t))) for t in outputs)
        self.rows.append((float(flops), weight, *map(float, grid)))

    def take(self, name: str, repeat: int) -> StageWork:
        rows = np.array(self.rows, dtype=float).reshape(-1, 5)
        tensors = np.array(self.tensors, dtype=float).reshape(-1, 2)
        self.rows, self.tensors = [], []
        return StageWork(
            name,
            repeat,
            rows[:, 0],
            rows[:, 1],
            tensors[:, 0].astype(np.int64),
            tensors[:, 1],
            rows[:, 2:5],
        )


# ops that allocate or relabel memory without a kernel of their own
_NO_KERNEL = {"empty", "empty_strided", "detach", "lift_fresh", "alias", "_unsafe_view"}


def _tensors(value: Any) -> list:
    import torch
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


def _dispatch(counter: _Counter):
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Dispatch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            packet = func._overloadpacket
            if func.is_view or packet.__name__ in _NO_KERNEL or _Suppress.active:
                return out
            formula = flop_registry.get(packet)
            flops = formula(*args, **kwargs, out_val=out) if formula else 0
            inputs = _tensors((args, kwargs))
            if packet.__name__ == "embedding":  # a lookup reads only the rows it gathers
                counter.record(flops, inputs[1:], _tensors(out), gathered=_tensors(out))
            else:
                counter.record(flops, inputs, _tensors(out), grid=_grid(packet.__name__, out))
            return out

    return Dispatch()


_MATMULS = {"mm", "addmm", "bmm", "baddbmm", "convolution"}


def _grid(op: str, out: Any) -> tuple[int, int, int]:
    """A matrix product's output as (batch, rows, columns); a convolution's as the GEMM it
    lowers to (images x pixels, channels)."""
    if op not in _MATMULS:
        return (0, 0, 0)
    shape = tuple(out.shape)
    if op == "convolution":
        return (1, shape[0] * math.prod(shape[2:]), shape[1])
    if op in ("bmm", "baddbmm"):
        return shape
    return (1, *shape)


class _Suppress:
    active = False


def _fused_attention(counter: _Counter):
    """One kernel per F.scaled_dot_product_attention: 4*B*H*Lq*Lk*D FLOPs (QK^T and PV),
    q, k, v read and the output written."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class Attention(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is not F.scaled_dot_product_attention or _Suppress.active:
                return func(*args, **kwargs)
            _Suppress.active = True
            try:
                out = func(*args, **kwargs)
            finally:
                _Suppress.active = False
            q, k, v = args[:3]
            flops = 2 * math.prod(q.shape) * k.shape[-2] + 2 * math.prod(v.shape[:-2]) * (
                q.shape[-2] * k.shape[-2] * v.shape[-1]
            )
            grid = (math.prod(q.shape[:-2]), q.shape[-2], v.shape[-1])
            counter.record(
                flops, [q, k, v], [out] if isinstance(out, torch.Tensor) else [], grid=grid
            )
            return out

    return Attention()
