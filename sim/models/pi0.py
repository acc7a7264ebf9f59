"""pi0-style VLA: SigLIP per camera + Gemma prefix over image and language tokens, and a
flow-matching action expert that attends to the prefix's key/value cache for 10 steps
over a 50-action chunk (Black et al., 2024; openpi)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import GemmaConfig, GemmaModel

from sim.models import ModelBundle, reference_bundle
from sim.models.flow import FlowMatching, make_inputs, time_embedding
from sim.models.parts import siglip

CONFIGS = {
    # full: SigLIP So400m/14 at 224 px, Gemma 2B prefix, Gemma-300M-sized expert (PaliGemma)
    "full": dict(
        vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=224, patch_size=14),
        prefix=dict(vocab_size=257152, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1, head_dim=256),
        expert=dict(hidden_size=1024, intermediate_size=4096),
        action_dim=32, chunk=50, flow_steps=10, instruction_tokens=48,
    ),
    "small": dict(
        vision=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6, image_size=224, patch_size=14),
        prefix=dict(vocab_size=32000, hidden_size=512, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=1, head_dim=64),
        expert=dict(hidden_size=256, intermediate_size=1024),
        action_dim=32, chunk=50, flow_steps=10, instruction_tokens=48,
    ),
    "tiny": dict(
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14),
        prefix=dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32),
        expert=dict(hidden_size=32, intermediate_size=64),
        action_dim=32, chunk=50, flow_steps=10, instruction_tokens=16,
    ),
}  # fmt: skip


class Pi0Style(FlowMatching, nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        self.vision = siglip(cfg["vision"])
        prefix = GemmaConfig(**cfg["prefix"])
        self.prefix = GemmaModel(prefix)
        # the expert shares depth, heads and head size with the prefix, so it can attend to its cache
        expert = {**cfg["prefix"], **cfg["expert"], "vocab_size": 8}
        self.expert = GemmaModel(GemmaConfig(**expert))
        width, e_width, a_dim = prefix.hidden_size, cfg["expert"]["hidden_size"], cfg["action_dim"]
        self.image_proj = nn.Linear(cfg["vision"]["hidden_size"], width)
        self._action_head(a_dim, e_width)

    # the three stages of one call (see `stages`): forward runs them in order
    def see(self, images: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """Vision: every camera through SigLIP, projected, with the instruction's embeddings."""
        b = images.shape[0]
        patches = self.vision(pixel_values=images.flatten(0, 1)).last_hidden_state
        image_tokens = self.image_proj(patches).reshape(b, -1, self.prefix.config.hidden_size)
        return torch.cat([image_tokens, self.prefix.embed_tokens(instruction)], 1)

    def fill(self, embeds: torch.Tensor):
        """Prefix: the VLM over image and language tokens, filling the KV cache."""
        return self.prefix(inputs_embeds=embeds, use_cache=True).cache

    def denoise(self, x, t, state_token, cache) -> torch.Tensor:
        """One flow-matching step of the action expert against the prefix's cache."""
        b, chunk, e_width = x.shape[0], self.cfg["chunk"], self.cfg["expert"]["hidden_size"]
        time_emb = time_embedding(t, e_width).to(x.dtype)[:, None, :].expand(b, chunk, e_width)
        tokens = self.time_mlp(torch.cat([self.action_in(x), time_emb], dim=-1))
        suffix = torch.cat([state_token, tokens], dim=1)
        out = self.expert(inputs_embeds=suffix, cache=cache, use_cache=True).last_hidden_state
        cache.crop(-suffix.shape[1])  # keep only the prefix for the next step
        return self.action_out(out[:, 1:])


def build(size: str = "tiny", **_: object) -> ModelBundle:
    cfg = CONFIGS[size]
    output = (cfg["chunk"], cfg["action_dim"])
    tokens = {"instruction": (0, cfg["prefix"]["vocab_size"])}
    return reference_bundle(
        "pi0", size, Pi0Style(cfg), cfg, make_inputs, lambda b: (b, *output), tokens
    )
