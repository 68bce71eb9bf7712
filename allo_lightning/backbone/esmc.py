"""ESM-C (EvolutionaryScale ``esm`` package) as a frozen backbone.

During capture every layer's ``MultiHeadAttention.forward`` is replaced by :func:`esmc_fused_forward`,
which computes the attention once, as probabilities that feed both the layer output and the
statistics."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import ESMC_ALPHABET, Backbone, LayerCallback
from .registry import ESMC_MAX_LENGTH, REGISTRY


def build_esmc(d_model: int, n_heads: int, n_layers: int, device: str | torch.device = "cpu") -> nn.Module:
    from esm.models.esmc import ESMC
    from esm.tokenization import EsmSequenceTokenizer

    with torch.device(device):
        return ESMC(d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                    tokenizer=EsmSequenceTokenizer(), use_flash_attn=False)


def restore_buffers(model: nn.Module) -> None:
    """Recompute the rotary buffers, which are not in the state dict (after a build on the meta
    device and ``load_state_dict(assign=True)``)."""
    from esm.layers.rotary import RotaryEmbedding

    for m in model.modules():
        if isinstance(m, RotaryEmbedding):
            m.device = None
            m.reset_parameters()
            m._seq_len_cached, m._cos_cached, m._sin_cached = 0, None, None


def esmc_fused_forward(attn: nn.Module, layer: int, probs_of, on_layer: LayerCallback,
                       x: torch.Tensor, seq_id: torch.Tensor | None) -> torch.Tensor:
    """``esm.layers.attention.MultiHeadAttention.forward`` with the attention computed once, as
    probabilities: they go to ``on_layer`` and, times V, make the layer's output (in place of
    ``scaled_dot_product_attention``, which would compute them a second time). Keys are masked by
    padding only: real query rows are exactly the model's; padded query rows differ from ESM-C's
    pad-to-pad mask but never reach a real token (real queries never attend to padding)."""
    qkv_BLD3 = attn.layernorm_qkv(x)
    query_BLD, key_BLD, value_BLD = torch.chunk(qkv_BLD3, 3, dim=-1)
    query_BLD, key_BLD = attn.q_ln(query_BLD).to(query_BLD.dtype), attn.k_ln(key_BLD).to(query_BLD.dtype)
    query_BLD, key_BLD = attn._apply_rotary(query_BLD, key_BLD)
    B, L, D = query_BLD.shape
    H = attn.n_heads
    query_BHLD, key_BHLD, value_BHLD = (t.reshape(B, L, H, D // H).transpose(1, 2)
                                        for t in (query_BLD, key_BLD, value_BLD))
    probs_BHLL = probs_of(query_BHLD, key_BHLD)
    on_layer(layer, probs_BHLL)  # before the output: an early exit after this layer skips it
    context_BHLD = torch.matmul(probs_BHLL.to(value_BHLD.dtype), value_BHLD)
    return attn.out_proj(context_BHLD.transpose(1, 2).reshape(B, L, D))


class ESMCBackbone(Backbone):
    alphabet = ESMC_ALPHABET

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

    _fused_forward = staticmethod(esmc_fused_forward)

    def _qk_to_BHLD(self, q_BLHD, k_BLHD):
        return q_BLHD.transpose(1, 2), k_BLHD.transpose(1, 2)

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks, in order (their outputs are the hidden states of each layer)."""
        return list(self.model.transformer.blocks)

    def _run(self, tokens: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return self.model(sequence_tokens=tokens, sequence_id=real).embeddings


def hub_weights_path(name: str) -> Path:
    """Download (first use) or find in the Hugging Face cache the official ESM-C weights."""
    from esm.utils.constants.esm3 import data_root

    spec = REGISTRY[name]
    return data_root(spec.hub) / spec.weights_file
