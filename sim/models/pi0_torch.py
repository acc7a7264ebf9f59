"""The pi0-shaped stack in plain PyTorch that profiles/h100 and profiles/h200 measured.

Its sidecars describe it: a ViT per camera (width 1152, 27 layers, 16 heads, 224 px,
patch 14: 256 tokens per camera), a prefix transformer over the image tokens and 48
language tokens (width 2048, 18 layers, 8 heads x 256) whose keys and values are
computed once, and an action expert (width 1024, 18 layers) that attends to them for
10 flow-matching steps over a 50-action chunk; 2,172,349,984 parameters at `full`.

Every block is pre-norm (LayerNorm), with biased linear layers and a 4x GELU MLP; the
language embedding is Gemma's 257,152-token table. Needs torch only (no transformers),
so its work can be counted on the meta device (sim.profiles.estimate.work) without weights or a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sim.models import ModelBundle, reference_bundle
from sim.models.flow import FlowMatching, make_inputs, time_embedding

CONFIGS = {
    "full": dict(
        vision=dict(width=1152, layers=27, heads=16, image_size=224, patch_size=14),
        prefix=dict(width=2048, layers=18, heads=8, head_dim=256, vocab_size=257152),
        expert=dict(width=1024),
        action_dim=32, chunk=50, flow_steps=10, instruction_tokens=48,
    ),
    "small": dict(
        vision=dict(width=384, layers=6, heads=6, image_size=224, patch_size=14),
        prefix=dict(width=512, layers=6, heads=4, head_dim=128, vocab_size=32000),
        expert=dict(width=256),
        action_dim=32, chunk=50, flow_steps=10, instruction_tokens=48,
    ),
    "tiny": dict(
        vision=dict(width=64, layers=2, heads=2, image_size=56, patch_size=14),
        prefix=dict(width=64, layers=2, heads=2, head_dim=32, vocab_size=256),
        expert=dict(width=32),
        action_dim=32, chunk=50, flow_steps=10, instruction_tokens=16,
    ),
}  # fmt: skip


class Block(nn.Module):
    """Pre-norm transformer block: attention (heads x head_dim) and a 4x GELU MLP.

    `context` (keys and values computed elsewhere, e.g. the prefix's) is attended to
    before the block's own tokens; `kv()` returns this block's keys and values."""

    def __init__(self, width: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k, self.v = (nn.Linear(width, inner) for _ in range(3))
        self.o = nn.Linear(inner, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU("tanh"), nn.Linear(4 * width, width)
        )

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def kv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split(self.k(h)), self._split(self.v(h))

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, tuple]:
        h = self.norm1(x)
        k, v = self.kv(h)
        if context is not None:
            k, v = torch.cat([context[0], k], 2), torch.cat([context[1], v], 2)
        attended = F.scaled_dot_product_attention(self._split(self.q(h)), k, v)
        x = x + self.o(attended.transpose(1, 2).flatten(2))
        return x + self.mlp(self.norm2(x)), (k, v)


class Pi0Torch(FlowMatching, nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        vis, pre, e_width = cfg["vision"], cfg["prefix"], cfg["expert"]["width"]
        patches = (vis["image_size"] // vis["patch_size"]) ** 2
        self.patch = nn.Conv2d(3, vis["width"], vis["patch_size"], vis["patch_size"])
        self.position = nn.Parameter(torch.zeros(1, patches, vis["width"]))
        vis_head = vis["width"] // vis["heads"]
        self.vision = nn.ModuleList(
            Block(vis["width"], vis["heads"], vis_head) for _ in range(vis["layers"])
        )
        self.image_proj = nn.Linear(vis["width"], pre["width"])
        self.embed = nn.Embedding(pre["vocab_size"], pre["width"])
        self.prefix = nn.ModuleList(
            Block(pre["width"], pre["heads"], pre["head_dim"]) for _ in range(pre["layers"])
        )
        # the expert shares depth, heads and head size with the prefix, to attend to its keys and values
        self.expert = nn.ModuleList(
            Block(e_width, pre["heads"], pre["head_dim"]) for _ in range(pre["layers"])
        )
        self._action_head(cfg["action_dim"], e_width)

    # the three stages of one call (see `stages`): forward runs them in order
    def see(self, images: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """Vision: every camera through the ViT, projected, with the instruction's embeddings."""
        tokens = [self.image_proj(self._vit(images[:, c])) for c in range(images.shape[1])]
        return torch.cat([*tokens, self.embed(instruction)], 1)

    def _vit(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch(image).flatten(2).transpose(1, 2) + self.position
        for block in self.vision:
            x, _ = block(x)
        return x

    def fill(self, embeds: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Prefix: the transformer over image and language tokens; its keys and values per layer."""
        cache, x = [], embeds
        for block in self.prefix:
            x, kv = block(x)
            cache.append(kv)
        return cache

    def denoise(self, x, t, state_token, cache) -> torch.Tensor:
        """One flow-matching step of the action expert against the prefix's keys and values."""
        b, chunk, e_width = x.shape[0], self.cfg["chunk"], self.cfg["expert"]["width"]
        time_emb = time_embedding(t, e_width).to(x.dtype)[:, None, :].expand(b, chunk, e_width)
        h = torch.cat([state_token, self.time_mlp(torch.cat([self.action_in(x), time_emb], -1))], 1)
        for block, context in zip(self.expert, cache, strict=True):
            h, _ = block(h, context)
        return self.action_out(h[:, 1:])


def build(size: str = "tiny", **_: object) -> ModelBundle:
    cfg = CONFIGS[size]
    output = (cfg["chunk"], cfg["action_dim"])
    return reference_bundle(
        "pi0-torch",
        size,
        Pi0Torch(cfg),
        cfg,
        make_inputs,
        lambda b: (b, *output),
        {"instruction": (0, cfg["prefix"]["vocab_size"])},
    )
