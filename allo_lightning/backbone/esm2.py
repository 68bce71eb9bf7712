"""ESM-2 (the Allo-Allo paper's model) through transformers' ``EsmModel``, as a frozen backbone.

During capture every layer's ``EsmSelfAttention.forward`` is replaced by :func:`esm2_fused_forward`,
which computes the attention probabilities once: they feed both the layer's output and the
statistics (as for ESM-C), instead of transformers computing them and a hook recomputing them."""

from __future__ import annotations

import torch
from torch import nn

from .base import ESM2_ALPHABET, Backbone, LayerCallback
from .registry import ESM2_MAX_LENGTH, REGISTRY, BackboneSpec

ESM2_HUB = {name: s.hub for name, s in REGISTRY.items() if s.family == "esm2" and s.hub}


def esm2_config(spec: BackboneSpec):
    """transformers' ``EsmConfig`` of an ESM-2 shape (as the hub's configs; tiny: a 2x MLP)."""
    from transformers import EsmConfig

    return EsmConfig(
        vocab_size=33, hidden_size=spec.d_model, num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads, intermediate_size=(2 if spec.tiny else 4) * spec.d_model,
        max_position_embeddings=spec.max_length + 4, position_embedding_type="rotary", pad_token_id=1,
        mask_token_id=32, token_dropout=True, emb_layer_norm_before=False, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12 if spec.tiny else 1e-5,
    )


def tiny_esm2_config():
    return esm2_config(REGISTRY["esm2_tiny"])


def build_esm2(spec: BackboneSpec, device: str | torch.device = "cpu") -> nn.Module:
    from transformers import EsmModel

    with torch.device(device):
        return EsmModel(esm2_config(spec), add_pooling_layer=False)


def esm2_fused_forward(attn: nn.Module, layer: int, probs_of, on_layer: LayerCallback,
                       hidden_states: torch.Tensor, attention_mask=None, head_mask=None,
                       encoder_hidden_states=None, encoder_attention_mask=None, past_key_value=None,
                       output_attentions: bool = False):
    """``transformers``' ``EsmSelfAttention.forward`` (rotary, encoder self-attention) with the
    attention computed once as probabilities: they go to ``on_layer`` and, times V, make the layer's
    output. Padded keys are masked to exactly 0, as transformers' additive mask does."""
    if head_mask is not None or encoder_hidden_states is not None or past_key_value is not None:
        raise NotImplementedError("fused ESM-2 capture supports plain self-attention only")
    query_BHLD = attn.transpose_for_scores(attn.query(hidden_states)) * attn.attention_head_size**-0.5
    key_BHLD = attn.transpose_for_scores(attn.key(hidden_states))
    value_BHLD = attn.transpose_for_scores(attn.value(hidden_states))
    query_BHLD, key_BHLD = attn.rotary_embeddings(query_BHLD, key_BHLD)
    probs_BHLL = probs_of(query_BHLD, key_BHLD)
    on_layer(layer, probs_BHLL)  # before the output: an early exit after this layer skips it
    context_BHLD = torch.matmul(probs_BHLL.to(value_BHLD.dtype), value_BHLD)
    B, H, L, D = context_BHLD.shape
    context_BLD = context_BHLD.permute(0, 2, 1, 3).reshape(B, L, H * D)
    return (context_BLD, probs_BHLL) if output_attentions else (context_BLD,)


class ESM2Backbone(Backbone):
    alphabet = ESM2_ALPHABET

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

    def _fused_attention_modules(self) -> list[nn.Module] | None:
        import transformers
        from transformers.models.esm.modeling_esm import EsmSelfAttention

        major = int(transformers.__version__.split(".")[0])
        if major >= 5:  # its EsmSelfAttention takes other arguments (position_embeddings, ...): not supported
            from ..errors import BackboneError

            raise BackboneError(
                f"ESM-2 attention capture needs transformers 4.x (installed: {transformers.__version__}; this "
                "package is tested with >=4.40,<4.48.2). Install it with: pip install 'transformers>=4.40,<4.48.2'."
            )

        attns = [layer.attention.self for layer in self.model.encoder.layer]
        ok = all(type(a) is EsmSelfAttention and a.position_embedding_type == "rotary" and not a.is_decoder
                 for a in attns)
        return attns if ok else None

    _fused_forward = staticmethod(esm2_fused_forward)

    def _qk_to_BHLD(self, q, k):
        return q, k

    def blocks(self) -> list[nn.Module]:
        """The transformer layers, in order (their first output is the hidden states of each layer)."""
        return list(self.model.encoder.layer)

    def _run(self, tokens: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens, attention_mask=real.long()).last_hidden_state
