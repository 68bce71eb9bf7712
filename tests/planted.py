"""A known answer for the head analysis: plant, in an ESM-C backbone, a head that attends to one
residue type from every query.

How (layer l, head h, d_head = D, rotary pairs (i, i + D/2) turning with frequency 10000^(-2i/D)):
the last pair c = D/2 - 1 barely rotates over a few hundred positions, so a content signal there
survives rotary. The input of the attention's ``layernorm_qkv`` Linear is the LayerNorm of the
residual stream; at layer 0 that is LayerNorm(embed(token)), one vector per token type. Least
squares over those vectors gives Linear rows for
- q dim c: the same value A for every token (a constant query),
- k dim c: K for the chosen residue, 0 for every other token,
and a companion dim of the same head takes -A / -K so that the mean over the 64 q (k) dims, which
q_ln / k_ln subtract, stays 0; the other rows are re-centred for the same reason. q_ln gains of the
head's other dims and the k_ln gain of c's rotary partner are set to 0, so the head's logit is
``scale * gq * gk * q_c(i) * k_c(j) * cos(w (i - j))``: large for keys of the chosen residue, 0 for
every other key. ``strength`` is that logit gap for a typical query. For layers > 0 the same least
squares is fitted on hidden states of random calibration sequences (approximate).

Only meant for tests and demonstrations. The identity of the planted backbone is recomputed from
its weights (``<name>-planted-<hash>``) so its cached statistics never mix with the original's.
"""

from __future__ import annotations

import random

import torch

from allo_lightning.backbone.base import ESMC_ALPHABET, Backbone, hash_parameters, tokenize

VOCAB = ESMC_ALPHABET.tokens  # ESM-C's tokens (plant_residue_head works on ESM-C backbones)


def reidentify(backbone: Backbone, tag: str = "planted") -> Backbone:
    """Recompute ``backbone.identity`` from its (modified) weights."""
    base = backbone.name
    backbone.identity = f"{base}-{tag}-{hash_parameters(backbone.model)[:16]}"
    return backbone


def _calibration(n_tokens: int, seed: int, residue: str) -> list[str]:
    rng = random.Random(seed)
    letters = "ACDEFGHIKLMNPQRSTVWY"
    seqs = []
    while sum(len(s) for s in seqs) < n_tokens:
        seq = [rng.choice(letters) for _ in range(rng.randint(30, 120))]
        seq[rng.randrange(len(seq))] = residue
        seqs.append("".join(seq))
    return seqs


@torch.no_grad()
def _attention_inputs(backbone: Backbone, layer: int, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm'd inputs of layer ``layer``'s qkv Linear [N, d] and their token ids [N]."""
    attn = backbone.model.transformer.blocks[layer].attn
    if layer == 0:  # exact: one vector per token type
        ids = torch.tensor([i for i, t in enumerate(VOCAB) if t not in ("<pad>",)])
        x = attn.layernorm_qkv[0](backbone.model.embed(ids))
        return x, ids
    tokens, real = tokenize(sequences)
    grabbed = []
    handle = attn.layernorm_qkv[0].register_forward_hook(lambda _m, _i, out: grabbed.append(out))
    try:
        backbone.model(sequence_tokens=tokens, sequence_id=real)
    finally:
        handle.remove()
    return grabbed[0][real], tokens[real]


def _lstsq_row(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(x.double(), target.double()[:, None]).solution[:, 0].float()


@torch.no_grad()
def plant_residue_head(backbone: Backbone, layer: int, head: int, residue: str = "W", strength: float = 12.0,
                       seed: int = 0) -> Backbone:
    """Make head (``layer``, ``head``) (0-based) of an ESM-C backbone attend to residues of type
    ``residue`` from every query, IN PLACE; returns the backbone with a new identity."""
    from allo_lightning.backbone.esmc import ESMCBackbone

    if not isinstance(backbone, ESMCBackbone):
        raise TypeError(f"plant_residue_head needs an ESM-C backbone, got {type(backbone).__name__}")
    if residue not in VOCAB or len(residue) != 1:
        raise ValueError(f"unknown residue letter {residue!r}")
    blocks = backbone.model.transformer.blocks
    if not (0 <= layer < len(blocks) and 0 <= head < backbone.n_heads):
        raise ValueError(f"head ({layer}, {head}) does not exist ({len(blocks)} layers x {backbone.n_heads} heads)")
    attn = blocks[layer].attn
    d, dh = attn.d_model, attn.d_head
    x, ids = _attention_inputs(backbone, layer, _calibration(4000, seed, residue))
    is_res = (ids == VOCAB.index(residue)).float()

    weight = attn.layernorm_qkv[1].weight  # [3d, d]: q rows, k rows, v rows
    c = head * dh + dh // 2 - 1  # last rotary pair: (c, c + dh/2)
    partner = c + dh // 2
    companion = c - 1  # a first-half dim of the same head, rotary partner companion + dh/2
    for block_start, target in ((0, torch.ones(len(ids))), (d, is_res)):
        rows = weight[block_start : block_start + d]
        typical = (x @ rows.t()).std().item()
        amp = 2.0 * typical
        r = _lstsq_row(x, amp * target)
        others = [i for i in range(d) if i not in (c, companion)]
        rows[others] -= rows[others].mean(0, keepdim=True)  # LayerNorm subtracts this mean anyway
        rows[c] = r
        rows[companion] = -r
    # only dim c carries the query; key dim c's rotary partner carries nothing
    head_dims = torch.arange(head * dh, (head + 1) * dh)
    attn.q_ln.weight[head_dims] = 0.0
    attn.q_ln.weight[c] = 1.0
    attn.k_ln.weight[partner] = 0.0
    attn.k_ln.weight[c] = 1.0
    # gains from the normalised values: logit gap ~ strength for a typical query
    qkv = attn.layernorm_qkv[1](x)
    q_hat = attn.q_ln(qkv[:, :d])[:, c]
    k_hat = attn.k_ln(qkv[:, d : 2 * d])[:, c]
    k_res = k_hat[is_res.bool()].median().item()
    q_typ = q_hat.median().item()
    gain = (strength / (dh**-0.5 * q_typ * k_res)) ** 0.5
    attn.q_ln.weight[c] = gain
    attn.k_ln.weight[c] = gain
    return reidentify(backbone)
