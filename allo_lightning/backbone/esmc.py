"""ESM-C (EvolutionaryScale ``esm`` package) as a frozen backbone."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import Backbone

# name -> (d_model, n_heads, n_layers, hub folder name, weights file inside the hub snapshot)
ESMC_SHAPES = {
    "esmc_300m": (960, 15, 30, "esmc-300", "data/weights/esmc_300m_2024_12_v0.pth"),
    "esmc_600m": (1152, 18, 36, "esmc-600", "data/weights/esmc_600m_2024_12_v0.pth"),
    "tiny": (64, 4, 2, None, None),
}
ESMC_MAX_LENGTH = 2048  # residues; ESM-C was trained on sequences up to 2048 tokens


def build_esmc(d_model: int, n_heads: int, n_layers: int, device: str | torch.device = "cpu") -> nn.Module:
    from esm.models.esmc import ESMC
    from esm.tokenization import EsmSequenceTokenizer

    with torch.device(device):
        return ESMC(d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                    tokenizer=EsmSequenceTokenizer(), use_flash_attn=False)


class ESMCBackbone(Backbone):

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        blocks = model.transformer.blocks
        attn = blocks[0].attn
        self.n_layers = len(blocks)
        self.n_heads = attn.n_heads
        self.d_model = attn.d_model
        self.scale = attn.d_head**-0.5
        self.max_length = ESMC_MAX_LENGTH

    def _rotary_modules(self) -> list[nn.Module]:
        return [b.attn.rotary for b in self.model.transformer.blocks]

    def _fused_attention_modules(self) -> list[nn.Module] | None:
        """ESM-C's plain ``MultiHeadAttention`` (not the flash-attention variant) gets the fused
        capture forward: one attention computation per layer instead of two."""
        from esm.layers.attention import MultiHeadAttention

        attns = [b.attn for b in self.model.transformer.blocks]
        return attns if all(type(a) is MultiHeadAttention for a in attns) else None

    def _qk_to_BHLD(self, q_BLHD, k_BLHD):
        return q_BLHD.transpose(1, 2), k_BLHD.transpose(1, 2)

    def _run(self, tokens: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return self.model(sequence_tokens=tokens, sequence_id=real).embeddings


def hub_weights_path(name: str) -> Path:
    """Download (first use) or find in the Hugging Face cache the official ESM-C weights."""
    from esm.utils.constants.esm3 import data_root

    return data_root(ESMC_SHAPES[name][3]) / ESMC_SHAPES[name][4]
