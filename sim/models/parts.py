"""Building blocks the reference models share."""

from __future__ import annotations

from transformers import SiglipVisionConfig, SiglipVisionModel


def siglip(section: dict) -> SiglipVisionModel:
    """A SigLIP vision tower from its configuration keys (random weights, nothing downloaded)."""
    return SiglipVisionModel(SiglipVisionConfig(**section))
