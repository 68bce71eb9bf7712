"""The backbone declares its alphabet (special-token ids, what is prepended/appended); tokenizing, masking
and residue positions read it. ESM-C's declared alphabet is its real tokenizer's, and a toy backbone with
another alphabet (pad = 0, BOS but no EOS; or no special token at all) gets the same residue statistics as
with the standard one, equal to a plain loop over its attention maps."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from allo_lightning.attention import AttentionExtractor, extract
from allo_lightning.backbone import ESM2Backbone, ESMCBackbone, tokenize
from allo_lightning.backbone.base import ESM2_ALPHABET, ESM_TOKENS, ESMC_ALPHABET, Alphabet, Backbone
from allo_lightning.data import Protein
from tests.conftest import CPU, random_proteins

LETTERS = "LAGVSERTIDPKQNFYMHWCXBUZO.-"
# pad = 0, BOS = 1, no EOS; residue letters at other ids than ESM's
BOS_ONLY = Alphabet(("<pad>", "<cls>", "<unk>", *LETTERS), pad=0, unk=2, bos=1)
# nothing added around the residues; the padding id last
BARE = Alphabet((*reversed(LETTERS), "<unk>", "<pad>"), pad=len(LETTERS) + 1, unk=len(LETTERS))


def test_esmc_alphabet_is_its_tokenizers():
    from esm.tokenization import EsmSequenceTokenizer

    tok = EsmSequenceTokenizer()
    a = ESMCBackbone.alphabet
    assert a is ESMC_ALPHABET and (a.bos, a.pad, a.eos, a.unk) == (
        tok.cls_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id)
    assert a.prepend_bos and a.append_eos and a.n_special == 2 and a.first == 1
    assert tuple(tok.convert_ids_to_tokens(list(range(len(a.tokens))))) == a.tokens == ESM_TOKENS
    seqs = ["MKTAYIAK", "ACDEFGHIKLMNPQRSTVWYXBUZO", "LL"]
    tokens, real = tokenize(seqs)
    enc = tok(seqs, padding=True)
    assert tokens.tolist() == enc["input_ids"] and real.long().tolist() == enc["attention_mask"]
    # ESM-2: the same specials (fair-esm's alphabet; transformers' EsmConfig pads with 1)
    from allo_lightning.backbone import tiny_esm2_config

    assert ESM2Backbone.alphabet is ESM2_ALPHABET and ESM2_ALPHABET.pad == tiny_esm2_config().pad_token_id
    assert (ESM2_ALPHABET.bos, ESM2_ALPHABET.eos) == (0, 2)


def test_alphabet_tokenize_and_residue_mask_by_plain_loop():
    seqs = ["ACDE", "K", "MKTAYQ"]
    for a in (ESMC_ALPHABET, BOS_ONLY, BARE):
        tokens, real = a.tokenize(seqs)
        residue = a.residue_mask(real)
        assert tokens.shape == (3, 6 + a.n_special)
        for b, s in enumerate(seqs):
            want = ([a.bos] if a.bos is not None else []) + [a.tokens.index(c) for c in s]
            want += [a.eos] if a.eos is not None else []
            want += [a.pad] * (tokens.shape[1] - len(want))
            assert tokens[b].tolist() == want, a
            assert real[b].tolist() == [t != a.pad for t in want]
            assert residue[b].tolist() == [a.first <= t < a.first + len(s) for t in range(tokens.shape[1])]
            assert [a.tokens[t] for t in tokens[b, a.residues(len(s))].tolist()] == list(s)
    with pytest.raises(ValueError, match="distinct"):
        Alphabet(("<pad>", "A"), pad=0, unk=0)


class _QK(nn.Module):
    def forward(self, q, k):
        return q, k


class ToyBackbone(Backbone):
    """Attention that depends only on the residue letters and their relative positions, with zero attention
    to special tokens: the residue statistics do not depend on the alphabet. Any alphabet."""

    def __init__(self, alphabet: Alphabet, max_length: int = 100) -> None:
        super().__init__()
        self.alphabet, self.name, self.identity = alphabet, f"toy-{id(alphabet)}", f"toy-{abs(hash(alphabet.tokens))}"
        self.n_layers, self.n_heads, self.d_model, self.scale, self.max_length = 2, 3, 8, 1.0, max_length
        g = torch.Generator().manual_seed(0)
        self.letters = sorted({t for t in alphabet.tokens if len(t) == 1} | {"<s>"})
        self.q = torch.randn(2, 3, len(self.letters), 4, generator=g) * 1.5
        self.k = torch.randn(2, 3, len(self.letters), 4, generator=g) * 1.5
        self.qk = nn.ModuleList([_QK(), _QK()])
        self.model = self.qk

    def _rotary_modules(self):
        return list(self.qk)

    def _qk_to_BHLD(self, q, k):
        return q, k

    def _run(self, tokens, real):
        a = self.alphabet
        special = {a.bos, a.eos, a.pad} - {None}
        idx = torch.tensor([[self.letters.index(a.tokens[t] if t not in special else "<s>") for t in row]
                            for row in tokens.tolist()])
        B, T = tokens.shape
        pos = torch.arange(T, dtype=torch.float32)
        cos, sin = torch.cos(0.4 * pos), torch.sin(0.4 * pos)  # a rotation: logits depend on i - j only
        is_special = torch.tensor([[t in special for t in row] for row in tokens.tolist()])
        for layer in range(self.n_layers):
            q, k = self.q[layer][:, idx].transpose(0, 1), self.k[layer][:, idx].transpose(0, 1)  # [B, H, T, 4]

            def rot(x):
                return torch.cat([x[..., :2] * cos[:, None] + x[..., 2:] * sin[:, None],
                                  x[..., 2:] * cos[:, None] - x[..., :2] * sin[:, None]], -1)

            q, k = rot(q), rot(k)
            q = torch.cat([q, torch.ones(B, 3, T, 1)], -1)
            k = torch.cat([k, (-1e4 * is_special.float())[:, None, :, None].expand(B, 3, T, 1)], -1)
            self.qk[layer](q, k)
        return torch.zeros(B, T, self.d_model)


def _loop_stats(backbone: ToyBackbone, seq: str, theta: float) -> dict[str, torch.Tensor]:
    """Residue statistics of one protein by a plain loop over its full maps (queries and keys at the
    residue positions the alphabet declares; ``total``: keys at every real token)."""
    a = backbone.alphabet
    tokens, real = a.tokenize([seq])
    maps = []
    backbone(tokens, real, lambda layer, p: maps.append(p[0].clone()))
    L, pos = len(seq), list(range(a.first, a.first + len(seq)))
    out = {n: torch.zeros(2, 3, L, dtype=torch.float64) for n in ("received", "count", "mass")}
    out["total"] = torch.zeros(2, 3, dtype=torch.float64)
    for ly in range(2):
        for h in range(3):
            for i in pos:
                out["total"][ly, h] += sum(float(maps[ly][h, i, j]) > theta for j in range(tokens.shape[1]))
                for jj, j in enumerate(pos):
                    alpha = float(maps[ly][h, i, j])
                    out["received"][ly, h, jj] += alpha
                    out["count"][ly, h, jj] += alpha > theta
                    out["mass"][ly, h, jj] += alpha if alpha > theta else 0.0
    return out


def test_other_alphabets_give_the_same_residue_statistics():
    seqs = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIK", "GGSWWPLLK"]
    theta = 0.2
    by_alphabet = {}
    for a in (ESMC_ALPHABET, BOS_ONLY, BARE):
        toy = ToyBackbone(a)
        module = AttentionExtractor(toy, theta)
        tokens, real = a.tokenize(seqs)
        stats = module(tokens, real, [len(s) for s in seqs])  # one padded batch
        by_alphabet[a] = stats
        for s, st in zip(seqs, stats):
            ref = _loop_stats(toy, s, theta)
            for n in ("received", "count", "mass", "total"):
                torch.testing.assert_close(getattr(st, n).double(), ref[n], rtol=1e-5, atol=1e-5)
            assert 0 < st.count.sum() <= st.total.sum() and st.received.std() > 0.1  # not trivial
    for a in (BOS_ONLY, BARE):
        for st, std in zip(by_alphabet[a], by_alphabet[ESMC_ALPHABET]):
            for n in ("received", "count", "mass", "total"):
                torch.testing.assert_close(getattr(st, n), getattr(std, n), rtol=1e-5, atol=1e-5)


def test_other_alphabet_through_extract_and_windows(tmp_path):
    """The whole extraction (batches made with the backbone's n_special, its tokenizer in the data module,
    windows of a protein longer than the context) gives the standard alphabet's statistics."""
    proteins = random_proteins(3, lo=8, hi=14, seed=4) + [Protein("long", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIE")]
    got = {}
    for a in (ESMC_ALPHABET, BOS_ONLY, BARE):
        toy = ToyBackbone(a, max_length=16)
        res = extract(proteins, toy, 0.2, str(tmp_path / str(len(got))), CPU, max_tokens=40, window_overlap=8)
        got[a] = [res.stats(p) for p in proteins]
    assert got[ESMC_ALPHABET][-1].windows == math.ceil((31 - 16) / 8) + 1
    assert all(st.count.sum() > 0 for st in got[ESMC_ALPHABET])
    for a in (BOS_ONLY, BARE):
        for st, std in zip(got[a], got[ESMC_ALPHABET]):
            for n in ("received", "count", "mass", "total"):
                torch.testing.assert_close(getattr(st, n), getattr(std, n), rtol=1e-5, atol=1e-5)
