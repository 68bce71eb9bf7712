"""Attention recomputation and statistics against reference computations."""

from __future__ import annotations

import pytest
import torch

from allo_lightning.attention import AttentionExtractor, column_stats, extract, reference_stats
from allo_lightning.backbone import tokenize
from allo_lightning.backbone.base import ESMC_ALPHABET
from tests.conftest import CPU, random_proteins

SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIKLMNPQRSTVWYXBZUO", "MVLSPADKTNVKAAW"]


def _capture_everything(backbone, tokens, real):
    """Per layer: our probabilities (capture run), and from a SEPARATE plain forward pass without any
    capture the model's own V and attention output (out_proj input, computed by ESM-C's
    scaled_dot_product_attention): the capture may replace the attention forward, so the reference
    must come from a run that does not use it."""
    probs, values, contexts = {}, {}, {}
    handles = []
    for i, block in enumerate(backbone.model.transformer.blocks):
        attn = block.attn
        handles.append(attn.layernorm_qkv.register_forward_hook(
            lambda m, inp, out, i=i: values.__setitem__(i, torch.chunk(out, 3, dim=-1)[2].detach().clone())))
        handles.append(attn.out_proj.register_forward_pre_hook(
            lambda m, inp, i=i: contexts.__setitem__(i, inp[0].detach().clone())))
    try:
        plain = backbone(tokens, real)
    finally:
        for h in handles:
            h.remove()
    captured = backbone(tokens, real, lambda layer, p: probs.__setitem__(layer, p.detach().clone()))
    # capturing must not change what the model computes for real tokens
    torch.testing.assert_close(captured[real], plain[real], rtol=1e-5, atol=1e-5)
    return probs, values, contexts


def test_recomputed_attention_times_v_equals_model_output(tiny):
    tokens, real = tokenize(SEQS)  # padded batch
    probs, values, contexts = _capture_everything(tiny, tokens, real)
    B, T = tokens.shape
    H, D = tiny.n_heads, tiny.d_model // tiny.n_heads
    assert sorted(probs) == list(range(tiny.n_layers))
    for layer in range(tiny.n_layers):
        v_BHLD = values[layer].view(B, T, H, D).transpose(1, 2)
        ours = (probs[layer] @ v_BHLD).transpose(1, 2).reshape(B, T, H * D)
        # compare on real query tokens (padded query rows are irrelevant and masked differently)
        torch.testing.assert_close(ours[real], contexts[layer][real], rtol=1e-5, atol=1e-5)


def test_rows_sum_to_one_over_real_tokens_and_padding_gets_nothing(tiny):
    tokens, real = tokenize(SEQS)
    probs, _, _ = _capture_everything(tiny, tokens, real)
    for p in probs.values():
        rows = p[real[:, None, :].expand(-1, tiny.n_heads, -1)]  # real query rows
        torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[0]), rtol=0, atol=1e-5)
        key_pad = ~real[:, None, None, :].expand_as(p)
        query_real = real[:, None, :, None].expand_as(p)
        assert p[key_pad & query_real].abs().max() == 0


def _stats_one(extractor, seqs):
    tokens, real = tokenize(seqs)
    return extractor(tokens, real, [len(s) for s in seqs])


def test_padded_and_unpadded_runs_give_same_statistics(tiny):
    ex = AttentionExtractor(tiny, theta=0.1, map_heads=[(0, 1), (1, 3)], embeddings=True)
    batched = _stats_one(ex, SEQS)
    for seq, b in zip(SEQS, batched):
        alone = _stats_one(ex, [seq])[0]
        for name in ("received", "count", "mass", "total", "maps", "embedding"):
            torch.testing.assert_close(getattr(b, name), getattr(alone, name), rtol=1e-5, atol=1e-5)


def _full_maps(backbone, seq):
    tokens, real = tokenize([seq])
    maps = {}
    backbone(tokens, real, lambda layer, p: maps.__setitem__(layer, p[0].detach().clone()))
    return torch.stack([maps[i] for i in range(backbone.n_layers)])  # [Ly, H, T, T]


@pytest.mark.parametrize("theta", [0.05, 0.3])
def test_streaming_statistics_equal_reference_from_full_maps(tiny, theta):
    ex = AttentionExtractor(tiny, theta=theta)
    got = _stats_one(ex, SEQS)
    for seq, s in zip(SEQS, got):
        ref = reference_stats(_full_maps(tiny, seq), theta)
        for name in ("received", "count", "mass", "total"):
            torch.testing.assert_close(getattr(s, name), ref[name], rtol=1e-5, atol=1e-4)
    assert sum(float(s.count.sum()) for s in got) > 0, "tiny model should have confident attention"


def test_column_stats_handles_specials_and_padding():
    # one protein of 2 residues in a batch padded to 6 tokens: BOS r1 r2 EOS PAD PAD
    real = torch.tensor([[True, True, True, True, False, False]])
    residue = torch.tensor([[False, True, True, False, False, False]])
    p = torch.zeros(1, 1, 6, 6)
    p[0, 0, :, 0] = 0.5  # every query: 0.5 to BOS
    p[0, 0, :, 1] = 0.4  # 0.4 to r1
    p[0, 0, :, 2] = 0.1  # 0.1 to r2
    s = column_stats(p, residue, real, theta=0.3)
    assert s["received"][0, 0].tolist() == pytest.approx([0, 0.8, 0.2, 0, 0, 0])
    assert s["count"][0, 0].tolist() == [0, 2, 0, 0, 0, 0]
    assert s["mass"][0, 0].tolist() == pytest.approx([0, 0.8, 0, 0, 0, 0])
    assert s["total"][0, 0].item() == 4  # two residue queries x (BOS, r1)


def test_tokenizer_matches_esm_tokenizer():
    from esm.tokenization import EsmSequenceTokenizer

    tok = EsmSequenceTokenizer()
    tokens, real = tokenize(SEQS)
    for b, seq in enumerate(SEQS):
        assert tokens[b, : len(seq) + 2].tolist() == tok.encode(seq)
        assert real[b].sum() == len(seq) + 2
    assert tokens[0, 0] == ESMC_ALPHABET.bos and tokens[0, len(SEQS[0]) + 1] == ESMC_ALPHABET.eos


def test_esm2_path_matches_transformers_attentions(tiny_esm2):
    tokens, real = tokenize(SEQS)
    ours = {}
    tiny_esm2(tokens, real, lambda layer, p: ours.__setitem__(layer, p.clone()))
    with torch.no_grad():
        out = tiny_esm2.model(input_ids=tokens, attention_mask=real.long(), output_attentions=True)
    q = real[:, None, :, None] & real[:, None, None, :]
    for layer, ref in enumerate(out.attentions):
        mask = q.expand_as(ref)
        torch.testing.assert_close(ours[layer][mask], ref[mask], rtol=1e-5, atol=1e-6)
    ex = AttentionExtractor(tiny_esm2, theta=0.05)
    got = _stats_one(ex, SEQS)
    for b, seq in enumerate(SEQS):
        n = len(seq) + 2
        full = torch.stack([a[b, :, :n, :n] for a in out.attentions])
        ref = reference_stats(full, 0.05)
        torch.testing.assert_close(got[b].count, ref["count"])
        torch.testing.assert_close(got[b].received, ref["received"], rtol=1e-5, atol=1e-5)


def test_backbone_is_frozen(tiny):
    ex = AttentionExtractor(tiny)
    assert not any(p.requires_grad for p in ex.parameters())
    ex.train()
    assert not tiny.training and not tiny.model.training


def test_extract_through_trainer_predict_and_cache(tiny, tmp_path):
    proteins = random_proteins(7, lo=15, hi=70, seed=3)
    kw = {**CPU, "default_root_dir": str(tmp_path / "out")}
    first = extract(proteins, tiny, theta=0.3, cache_dir=tmp_path / "c", trainer_kwargs=kw, max_tokens=200)
    assert sorted(first.computed) == sorted(p.id for p in proteins)
    ex = AttentionExtractor(tiny, theta=0.3)
    for p, s in first:
        direct = _stats_one(ex, [p.sequence])[0]
        assert s.length == p.length and s.shape == (tiny.n_layers, tiny.n_heads)
        torch.testing.assert_close(s.count, direct.count)
        torch.testing.assert_close(s.received, direct.received, rtol=1e-5, atol=1e-5)
    again = extract(proteins, tiny, theta=0.3, cache_dir=tmp_path / "c", trainer_kwargs=kw, max_tokens=200)
    assert again.computed == []
    other_theta = extract(proteins[:2], tiny, theta=0.2, cache_dir=tmp_path / "c", trainer_kwargs=kw)
    assert len(other_theta.computed) == 2  # theta is part of the cache key


def test_extract_refuses_protein_longer_than_context(tiny, tmp_path):
    from allo_lightning.data import Protein

    long = Protein(id="LONG1", sequence="A" * (tiny.max_length + 1), source="x.tsv:7")
    with pytest.raises(ValueError, match=r"x\.tsv, line 7, id 'LONG1'.*limit of 2048"):
        extract([long], tiny, cache_dir=tmp_path, trainer_kwargs=CPU, long="error")


def test_resume_after_losing_entries_is_bit_identical(tiny, tmp_path):
    """Several proteins per batch: a resumed run re-forms the original batches, so padding (and every
    float) is the same as in the uninterrupted run."""
    proteins = random_proteins(9, lo=15, hi=70, seed=11)
    kw = {**CPU, "default_root_dir": str(tmp_path / "out")}
    first = extract(proteins, tiny, theta=0.1, cache_dir=tmp_path / "c", trainer_kwargs=kw, max_tokens=250)
    before = {p.id: s for p, s in first}
    lost = [proteins[1], proteins[4], proteins[7]]
    for p in lost:
        first.cache.stats_path(p.sequence).unlink()
    again = extract(proteins, tiny, theta=0.1, cache_dir=tmp_path / "c", trainer_kwargs=kw, max_tokens=250)
    assert sorted(again.computed) == sorted(p.id for p in lost)
    for p, s in again:
        for name in ("received", "count", "mass", "total"):
            assert torch.equal(getattr(s, name), getattr(before[p.id], name)), (p.id, name)


def test_chunked_column_stats_equal_dense(monkeypatch):
    """Small chunks (several per map) give the same statistics as the whole-map computation."""
    from allo_lightning.attention import stats as stats_mod

    torch.manual_seed(0)
    B, H, T = 3, 4, 37
    real = torch.ones(B, T, dtype=torch.bool)
    real[1, 30:] = False
    real[2, 12:] = False
    residue = real.clone()
    residue[:, 0] = False
    residue[torch.arange(B), real.sum(1) - 1] = False
    logits = torch.randn(B, H, T, T) * 4
    probs = torch.softmax(logits.masked_fill(~real[:, None, None, :], -1e9), dim=-1)
    monkeypatch.setattr(stats_mod, "CHUNK_ELEMENTS", B * H * T * 5)  # 5 query rows per chunk
    for theta in (0.0, 0.1, 0.3):
        got = stats_mod.column_stats(probs, residue, real, theta)
        ref = stats_mod._column_stats_dense(probs, residue, real, theta)
        for name in ("received", "count", "mass", "total"):
            torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "esm2_tiny"])
def test_hidden_states_of_one_layer_are_that_blocks_output_and_cached_apart(name, tmp_path):
    """``embedding_layer=l``: the embedding is the output of block l (the report's best-layer baseline),
    equal to a plain forward hook's capture, cached as its own entry (never served as the final layer's)."""
    from allo_lightning.attention import StatsCache
    from allo_lightning.backbone import load_backbone

    bb = load_backbone(name)
    proteins = random_proteins(3, lo=15, hi=30, seed=4)
    for layer in range(bb.n_layers):
        got = extract(proteins, bb, 0.3, str(tmp_path), CPU, embeddings=True, embedding_layer=layer)
        for p, s in got:
            tokens, real = tokenize([p.sequence])
            seen = []
            handle = bb.blocks()[layer].register_forward_hook(
                lambda _m, _i, out, seen=seen: seen.append(out[0] if isinstance(out, tuple) else out))
            try:
                final = bb(tokens, real)
            finally:
                handle.remove()
            want = seen[0][0, 1 : p.length + 1].float()
            assert torch.allclose(s.embedding, want, atol=1e-5)
            if layer < bb.n_layers - 1:  # negative control: not the final hidden states
                assert not torch.allclose(s.embedding, final[0, 1 : p.length + 1].float(), atol=1e-3)
    final_cache = StatsCache(tmp_path, bb.identity, 0.3)
    layer_cache = StatsCache(tmp_path, bb.identity, 0.3, embedding_layer=0)
    p = proteins[0]
    assert layer_cache.complete(p.sequence, embedding=True) and not final_cache.complete(p.sequence, embedding=True)
    layer_cache.emb_path(p.sequence).rename(final_cache.emb_path(p.sequence))  # a swapped file is refused
    assert not final_cache.complete(p.sequence, embedding=True)
