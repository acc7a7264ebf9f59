"""An example plug-in for `batchsim profile --model examples.tiny_mlp_policy:build`.

A factory receives the size name and returns (module, make_inputs), or a
sim.models.ModelBundle for richer provenance. make_inputs(batch_size, cameras=,
instruction_tokens=, device=, dtype=) returns the keyword arguments of one forward call.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTH = {"tiny": 64, "small": 512, "full": 2048}


def build(size: str = "tiny"):
    width = WIDTH.get(size, 64)
    model = nn.Sequential(nn.Linear(128, width), nn.ReLU(), nn.Linear(width, 50 * 7)).eval()

    def make_inputs(
        batch_size, cameras=1, instruction_tokens=None, device="cpu", dtype=torch.float32
    ):
        return {"input": torch.randn(batch_size, 128, device=device, dtype=dtype)}

    return model, make_inputs
