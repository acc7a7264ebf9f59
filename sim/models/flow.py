"""What the pi0-shaped reference models share (torch only): the flow-matching loop over a
prefix's cache, its stages, the time embedding and the inputs of one batch.

A model mixes in `FlowMatching` and defines `see` (vision), `fill` (prefix -> cache) and
`denoise` (one step of the action expert), plus `state_proj`, and a `cfg` with `chunk`,
`action_dim` and `flow_steps`.
"""

from __future__ import annotations

import torch


def time_embedding(t: torch.Tensor, width: int) -> torch.Tensor:
    """Sinusoidal embedding of the flow time t (B,) -> (B, width), in float32."""
    half = width // 2
    freqs = torch.exp(torch.linspace(0, -8, half, device=t.device, dtype=torch.float32))
    angles = t[:, None].float() * freqs[None, :] * 1000
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FlowMatching:
    """forward and stages of a pi0-shaped model, from its see / fill / denoise."""

    def _action_head(self, action_dim: int, width: int) -> None:
        """The action expert's ends: state and noisy actions in, the time MLP, velocity out."""
        from torch import nn

        self.state_proj = nn.Linear(action_dim, width)
        self.action_in = nn.Linear(action_dim, width)
        self.time_mlp = nn.Sequential(
            nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.action_out = nn.Linear(width, action_dim)

    def _start(self, images: torch.Tensor, state: torch.Tensor):
        b = images.shape[0]
        shape = (b, self.cfg["chunk"], self.cfg["action_dim"])
        x = torch.randn(shape, device=images.device, dtype=images.dtype)
        return x, torch.ones(b, device=images.device), self.state_proj(state)[:, None, :]

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, instruction: torch.Tensor, state: torch.Tensor
    ) -> torch.Tensor:
        """images (B, cameras, 3, H, W), instruction (B, L) token ids, state (B, action_dim)
        -> a chunk of actions (B, chunk, action_dim)."""
        cache = self.fill(self.see(images, instruction))
        x, t, state_token = self._start(images, state)
        steps = self.cfg["flow_steps"]
        dt = -1.0 / steps
        for _ in range(steps):
            x = x + dt * self.denoise(x, t, state_token, cache)
            t = t + dt
        return x

    @torch.no_grad()
    def stages(self, images: torch.Tensor, instruction: torch.Tensor, state: torch.Tensor):
        """(name, repeat, call) per stage, each call on its stage's inputs for this batch
        (built here by running the stages before it once): vision, prefix, one denoising
        step (run flow_steps times)."""
        embeds = self.see(images, instruction)
        cache = self.fill(embeds)
        x, t, state_token = self._start(images, state)
        return [
            ("vision", 1, lambda: self.see(images, instruction)),
            ("prefix", 1, lambda: self.fill(embeds)),
            ("step", self.cfg["flow_steps"], lambda: self.denoise(x, t, state_token, cache)),
        ]


def make_inputs(cfg: dict, batch_size: int, cameras: int, tokens: int | None, device, dtype):
    """One batch's inputs: images, instruction token ids and the robot's state."""
    tokens = tokens or cfg["instruction_tokens"]
    size_px = cfg["vision"]["image_size"]
    return {
        "images": torch.randn(batch_size, cameras, 3, size_px, size_px, device=device, dtype=dtype),
        "instruction": torch.randint(
            0, cfg["prefix"]["vocab_size"], (batch_size, tokens), device=device
        ),
        "state": torch.randn(batch_size, cfg["action_dim"], device=device, dtype=dtype),
    }
