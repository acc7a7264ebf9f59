"""Reference VLA-style architectures in PyTorch, built offline from configuration objects.

Latency does not depend on weight values, so randomly initialised weights of a real
architecture give real timings; nothing is downloaded. Each model comes in sizes
`tiny` (tests), `small` (CPU profiles) and `full` (the published dimensions, for GPUs).

`build(name, size)` returns a ModelBundle: the module, an input builder for a batch
size (and number of cameras, instruction length), the shape of one output, and the
configuration (hashed into the profile's provenance). A user's own model plugs in as
`package.module:factory`, where factory(size) returns a ModelBundle or a tuple
(module, make_inputs).

May import: errors (and torch, transformers). Imported by profiles (the profiler and the
work count), real, validation, api and cli, always on first use: the simulator never
imports torch.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.errors import InputError, one_line

MODELS = ("pi0", "pi0-torch", "openvla", "act")
SIZES = ("tiny", "small", "full")


@dataclass
class ModelBundle:
    """A model ready to profile."""

    name: str
    size: str
    module: Any  # torch.nn.Module
    make_inputs: Callable[
        ..., dict[str, Any]
    ]  # (batch_size, cameras=, instruction_tokens=, device=, dtype=)
    output_shape: Callable[[int], tuple[int, ...]] | None = None  # batch size -> output shape
    config: dict[str, Any] = field(default_factory=dict)
    # integer inputs' valid values, [low, high): token ids against the vocabulary. serve
    # refuses a request outside them at admission, so it never reaches (and fails) a batch
    input_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def param_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(
            json.dumps(self.config, sort_keys=True, default=str).encode()
        ).hexdigest()[:12]


def reference_bundle(
    name: str,
    size: str,
    module: Any,
    cfg: dict[str, Any],
    inputs: Callable[..., dict[str, Any]],
    output_shape: Callable[[int], tuple[int, ...]],
    input_ranges: dict[str, tuple[int, int]] | None = None,
) -> ModelBundle:
    """A reference model's bundle; `inputs(cfg, batch_size, cameras, instruction_tokens,
    device, dtype)` builds one batch's keyword arguments; `input_ranges` bounds its integer
    inputs."""

    def make_inputs(
        batch_size: int,
        cameras: int = 1,
        instruction_tokens: int | None = None,
        device: str = "cpu",
        dtype: Any = None,
    ) -> dict[str, Any]:
        import torch

        return inputs(cfg, batch_size, cameras, instruction_tokens, device, dtype or torch.float32)

    return ModelBundle(
        name, size, module.eval(), make_inputs, output_shape, cfg, dict(input_ranges or {})
    )


def build(name: str, size: str = "tiny", device: str | None = None, **options: Any) -> ModelBundle:
    """A reference model by name, or a plug-in `package.module:factory`; with `device`,
    its weights are made there (random init of billions of weights on the host takes
    minutes, on a GPU seconds)."""
    if device is not None and device != "cpu":
        import torch

        with torch.device(device):
            return build(name, size, **options)
    if ":" in name:
        return _plugin(name, size)
    if name not in MODELS:
        raise InputError(
            f"unknown model '{name}'; one of {', '.join(MODELS)}, or package.module:factory",
            option="model",
        )
    if size not in SIZES:
        raise InputError(f"unknown size '{size}'; one of {', '.join(SIZES)}", option="size")
    module = importlib.import_module(f"sim.models.{name.replace('-', '_')}")
    return module.build(size, **options)


def _plugin(spec: str, size: str) -> ModelBundle:
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # a user's own package, beside where they run batchsim
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error, or the module's own failure
        raise InputError(
            f"cannot import '{module_name}' ({one_line(exc)})", option="model"
        ) from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise InputError(f"'{module_name}' has no callable '{attr}'", option="model")
    try:
        made = factory(size)
    except Exception as exc:  # the plug-in's own failure: name it, not our traceback
        raise InputError(
            f"the factory {spec}({size!r}) failed: {one_line(exc)}", option="model"
        ) from None
    if isinstance(made, ModelBundle):
        return made
    if isinstance(made, tuple) and len(made) == 2:
        return ModelBundle(spec, size, made[0], made[1], config={"plugin": spec, "size": size})
    raise InputError(
        f"{spec}({size!r}) must return a ModelBundle or (module, make_inputs)", option="model"
    )
