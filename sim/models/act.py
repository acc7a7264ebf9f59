"""ACT-style visuomotor policy (Zhao et al., 2023): a convolutional backbone per camera, a
transformer encoder over image features and the robot state, and a decoder whose learned
queries predict a chunk of actions in one pass. The backbone is plain convolutions (ACT
uses a ResNet-18; torchvision is not available beside this torch)."""

from __future__ import annotations

import torch
from torch import nn

from sim.models import ModelBundle, reference_bundle

CONFIGS = {
    "full": dict(d_model=512, heads=8, encoder_layers=4, decoder_layers=7, feedforward=3200, channels=[64, 128, 256, 512], image_size=480, state_dim=14, action_dim=14, chunk=100),
    "small": dict(d_model=256, heads=8, encoder_layers=4, decoder_layers=4, feedforward=1024, channels=[32, 64, 128, 256], image_size=224, state_dim=14, action_dim=14, chunk=100),
    "tiny": dict(d_model=32, heads=2, encoder_layers=1, decoder_layers=1, feedforward=64, channels=[8, 16], image_size=64, state_dim=14, action_dim=14, chunk=100),
}  # fmt: skip


class ACTStyle(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        layers, c_in = [], 3
        for c in cfg["channels"]:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        self.backbone = nn.Sequential(*layers, nn.Conv2d(c_in, cfg["d_model"], 1))
        self.state_proj = nn.Linear(cfg["state_dim"], cfg["d_model"])
        self.transformer = nn.Transformer(
            cfg["d_model"],
            cfg["heads"],
            cfg["encoder_layers"],
            cfg["decoder_layers"],
            cfg["feedforward"],
            batch_first=True,
        )
        self.queries = nn.Parameter(torch.randn(cfg["chunk"], cfg["d_model"]))
        self.head = nn.Linear(cfg["d_model"], cfg["action_dim"])

    @torch.no_grad()
    def forward(self, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """images (B, cameras, 3, H, W), state (B, state_dim) -> actions (B, chunk, action_dim)."""
        b = images.shape[0]
        features = self.backbone(images.flatten(0, 1))  # (B*cams, d, h, w)
        tokens = features.flatten(2).transpose(1, 2).reshape(b, -1, self.cfg["d_model"])
        memory_in = torch.cat([self.state_proj(state)[:, None], tokens], dim=1)
        queries = self.queries[None].expand(b, -1, -1)
        return self.head(self.transformer(memory_in, queries))

    @torch.no_grad()
    def stages(self, images: torch.Tensor, state: torch.Tensor):
        """One stage: ACT decodes its whole chunk in one pass."""
        return [("model", 1, lambda: self.forward(images, state))]


def make_inputs(cfg: dict, batch_size: int, cameras: int, tokens: int | None, device, dtype):
    px = cfg["image_size"]
    return {
        "images": torch.randn(batch_size, cameras, 3, px, px, device=device, dtype=dtype),
        "state": torch.randn(batch_size, cfg["state_dim"], device=device, dtype=dtype),
    }


def build(size: str = "tiny", **_: object) -> ModelBundle:
    cfg = CONFIGS[size]
    output = (cfg["chunk"], cfg["action_dim"])
    return reference_bundle("act", size, ACTStyle(cfg), cfg, make_inputs, lambda b: (b, *output))
