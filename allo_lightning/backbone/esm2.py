"""ESM-2 (the Allo-Allo paper's model) through transformers' ``EsmModel``, as a frozen backbone."""

from __future__ import annotations

import torch
from torch import nn

from .base import Backbone

ESM2_HUB = {
    "esm2_t6_8m": "facebook/esm2_t6_8M_UR50D",
    "esm2_t12_35m": "facebook/esm2_t12_35M_UR50D",
    "esm2_t30_150m": "facebook/esm2_t30_150M_UR50D",
    "esm2_t33_650m": "facebook/esm2_t33_650M_UR50D",
}
ESM2_MAX_LENGTH = 1022  # 1024 positions minus BOS/EOS


def tiny_esm2_config():
    from transformers import EsmConfig

    return EsmConfig(
        vocab_size=33, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=1026, position_embedding_type="rotary", pad_token_id=1, mask_token_id=32,
        token_dropout=True, emb_layer_norm_before=False, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


class ESM2Backbone(Backbone):
    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        cfg = model.config
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.d_model = cfg.hidden_size
        self.scale = 1.0  # transformers' ESM scales q by d_head**-0.5 before rotary
        self.max_length = ESM2_MAX_LENGTH

    def _rotary_modules(self) -> list[nn.Module]:
        return [layer.attention.self.rotary_embeddings for layer in self.model.encoder.layer]

    def _qk_to_BHLD(self, q, k):
        return q, k

    def _run(self, tokens: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens, attention_mask=real.long()).last_hidden_state
