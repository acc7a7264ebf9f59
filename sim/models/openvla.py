"""OpenVLA-style VLA: fused SigLIP + DINOv2 patch features projected into a Llama decoder
that generates 7 action tokens autoregressively with a key/value cache (Kim et al., 2024)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlamaForCausalLM,
)

from sim.models import ModelBundle, reference_bundle
from sim.models.parts import siglip

CONFIGS = {
    # full: SigLIP So400m/14 + DINOv2-L/14 at 224 px, Llama-2 7B
    "full": dict(
        siglip=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=224, patch_size=14),
        dino=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=14),
        llm=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
        action_tokens=7, instruction_tokens=32,
    ),
    "small": dict(
        siglip=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6, image_size=224, patch_size=14),
        dino=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6, image_size=224, patch_size=14),
        llm=dict(vocab_size=32064, hidden_size=512, intermediate_size=1408, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8),
        action_tokens=7, instruction_tokens=32,
    ),
    "tiny": dict(
        siglip=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14),
        dino=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14),
        llm=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
        action_tokens=7, instruction_tokens=16,
    ),
}  # fmt: skip


class OpenVLAStyle(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        self.siglip = siglip(cfg["siglip"])
        self.dino = Dinov2Model(Dinov2Config(**cfg["dino"]))
        self.llm = LlamaForCausalLM(LlamaConfig(**cfg["llm"]))
        fused = cfg["siglip"]["hidden_size"] + cfg["dino"]["hidden_size"]
        width = cfg["llm"]["hidden_size"]
        self.projector = nn.Sequential(
            nn.Linear(fused, 4 * fused),
            nn.GELU(),
            nn.Linear(4 * fused, width),
            nn.GELU(),
            nn.Linear(width, width),
        )

    # the two stages of one call (see `stages`): forward runs them in order
    def prefill(self, images: torch.Tensor, instruction: torch.Tensor):
        """Prefill: both vision towers, the projector and the LLM over image and language
        tokens: (KV cache, first action token)."""
        sig = self.siglip(pixel_values=images).last_hidden_state
        dino = self.dino(pixel_values=images).last_hidden_state[:, 1:]  # patch tokens, no CLS
        visual = self.projector(torch.cat([sig, dino], dim=-1))
        text = self.llm.get_input_embeddings()(instruction)
        out = self.llm(inputs_embeds=torch.cat([visual, text], dim=1), use_cache=True)
        return out.cache, out.logits[:, -1].argmax(-1)

    def decode(self, token: torch.Tensor, cache) -> torch.Tensor:
        """Decode: one action token from the cache (which grows by it)."""
        return (
            self.llm(input_ids=token[:, None], cache=cache, use_cache=True).logits[:, -1].argmax(-1)
        )

    @torch.no_grad()
    def forward(self, images: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W), instruction (B, L) -> 7 action token ids (B, 7), greedy."""
        cache, token = self.prefill(images, instruction)
        tokens = []
        for _ in range(self.cfg["action_tokens"]):
            tokens.append(token)
            token = self.decode(token, cache)
        return torch.stack(tokens, dim=1)

    @torch.no_grad()
    def stages(self, images: torch.Tensor, instruction: torch.Tensor):
        """(name, repeat, call) per stage: prefill, and one decode step (run action_tokens
        times; timed at the prefill's length, the cache cropped back after each call)."""
        cache, token = self.prefill(images, instruction)

        def decode_once():
            out = self.decode(token, cache)
            cache.crop(-1)
            return out

        return [
            ("prefill", 1, lambda: self.prefill(images, instruction)),
            ("decode", self.cfg["action_tokens"], decode_once),
        ]


def make_inputs(cfg: dict, batch_size: int, cameras: int, tokens: int | None, device, dtype):
    # OpenVLA sees one third-person camera; more cameras are not part of the architecture
    size_px = cfg["siglip"]["image_size"]
    tokens = tokens or cfg["instruction_tokens"]
    return {
        "images": torch.randn(batch_size, 3, size_px, size_px, device=device, dtype=dtype),
        "instruction": torch.randint(
            0, cfg["llm"]["vocab_size"], (batch_size, tokens), device=device
        ),
    }


def build(size: str = "tiny", **_: object) -> ModelBundle:
    cfg = CONFIGS[size]
    output = (cfg["action_tokens"],)
    return reference_bundle(
        "openvla",
        size,
        OpenVLAStyle(cfg),
        cfg,
        make_inputs,
        lambda b: (b, *output),
        {"instruction": (0, cfg["llm"]["vocab_size"])},
    )
