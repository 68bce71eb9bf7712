"""Inference at scale: early exit (partial statistics), long proteins as windows, fused ESM-2 capture,
weights loaded without a second copy, bf16 on CPU."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from allo_lightning.attention import (
    AttentionExtractor,
    column_stats,
    extract,
    window_plan,
)
from allo_lightning.attention.cache import StatsCache
from allo_lightning.backbone import Backbone, load_backbone, tokenize
from allo_lightning.backbone.base import ESMC_ALPHABET
from allo_lightning.data import Protein, read_proteins
from allo_lightning.errors import BackboneError
from tests.conftest import CPU, random_proteins

STATS = ("received", "count", "mass", "total")


def _seq(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(n))


# -- early exit -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["tiny", "tiny_esm2"])
def test_partial_stats_equal_the_slice_of_full_stats(fixture, request):
    bb = request.getfixturevalue(fixture)
    seqs = [_seq(37, 1), _seq(52, 2)]
    tokens, real = tokenize(seqs)
    full = AttentionExtractor(bb, 0.1)(tokens, real, [len(s) for s in seqs])
    heads = [(0, 1), (0, 3)]  # layer 0 only: layer 1 must never run
    partial = AttentionExtractor(bb, 0.1, heads=heads)(tokens, real, [len(s) for s in seqs])
    for f, p in zip(full, partial):
        assert p.partial and p.heads == heads and p.shape == (1, bb.n_heads)
        for name in STATS:
            got, want = getattr(p, name), getattr(f, name)
            for ly, h in heads:  # counts exactly; sums up to the order of float additions
                if name in ("count", "total"):
                    assert torch.equal(got[ly, h], want[ly, h]), name
                else:
                    torch.testing.assert_close(got[ly, h], want[ly, h], rtol=1e-6, atol=1e-6)
            other = [h for h in range(bb.n_heads) if (0, h) not in heads]
            assert torch.isnan(got[0, other]).all()  # not computed: NaN, never a silent 0


def test_early_exit_runs_only_the_layers_needed(tiny):
    calls = []
    handles = [b.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, b in
               enumerate(tiny.model.transformer.blocks)]
    try:
        tokens, real = tokenize([_seq(30)])
        AttentionExtractor(tiny, 0.3, heads=[(0, 2)])(tokens, real, [30])
        assert calls == []  # the exit happens inside block 0's attention: no block finishes
        AttentionExtractor(tiny, 0.3)(tokens, real, [30])
        assert calls == [0, 1]  # negative control: the full extraction runs both blocks
    finally:
        for h in handles:
            h.remove()


def test_partial_cache_entry_is_never_served_as_a_full_one(tiny, tmp_path):
    proteins = random_proteins(3, seed=5)
    cache_dir = str(tmp_path / "c")
    heads = [(1, 0), (0, 2)]
    part = extract(proteins, tiny, 0.2, cache_dir, CPU, heads=heads)
    assert len(part.computed) == 3
    p0 = part.stats(proteins[0])
    assert p0.partial and p0.shape == (2, tiny.n_heads)
    # a full request does not take the partial entries
    full = extract(proteins, tiny, 0.2, cache_dir, CPU)
    assert sorted(full.computed) == sorted(p.id for p in proteins)
    for p in proteins:
        f, q = full.stats(p), part.cache.load(p.sequence, heads=heads)
        assert not f.partial
        for name in STATS:
            for ly, h in heads:
                torch.testing.assert_close(getattr(q, name)[ly, h], getattr(f, name)[ly, h], rtol=1e-6, atol=1e-6)
    # ... and a full entry serves a partial request (nothing is run)
    again = extract(proteins, tiny, 0.2, cache_dir, CPU, heads=[(0, 0)])
    assert again.computed == [] and not again.stats(proteins[0]).partial
    # a partial file renamed to the full name is rejected by its metadata
    c = StatsCache(cache_dir, tiny.identity, 0.2)
    s = proteins[1].sequence
    c.stats_path(s).unlink()
    c.partial_path(s, heads).rename(c.stats_path(s))
    assert not c.complete(s)


# -- long proteins --------------------------------------------------------------------------------------
def test_window_plan_covers_every_residue_from_its_most_central_window():
    starts, assign = window_plan(1000, 300, 64)
    assert starts[0] == 0 and starts[-1] == 700 and all(b - a <= 300 - 64 for a, b in itertools.pairwise(starts))
    for j in range(1000):
        k = int(assign[j])
        s = starts[k]
        assert s <= j < s + 300
    assert window_plan(50, 300, 64) == ([0], pytest.approx(torch.zeros(50, dtype=torch.long)))


def test_short_protein_gives_identical_stats_through_the_windowed_path(tiny):
    seq = _seq(80, 3)
    module = AttentionExtractor(tiny, 0.2, window_overlap=16)
    tokens, real = tokenize([seq])
    direct = module(tokens, real, [80])[0]
    windowed = module.windowed(seq)
    assert windowed.windows == 1 and not windowed.windowed
    for name in STATS:
        assert torch.equal(getattr(direct, name), getattr(windowed, name))


class BandBackbone(Backbone):
    """An artificial model whose attention is local: token t attends only to tokens within ``radius``
    (logits from the tokens' letters and their distance, so a window sees exactly the same rows as the
    whole protein for queries far enough from its cut edges)."""

    alphabet = ESMC_ALPHABET  # its token ids are ESM-C's (``tokenize``)

    def __init__(self, radius: int = 3, n_layers: int = 2, n_heads: int = 3, max_length: int = 40) -> None:
        super().__init__()
        self.name, self.n_layers, self.n_heads, self.d_model = "band", n_layers, n_heads, 8
        self.max_length, self.scale, self.radius = max_length, 1.0, radius
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(n_layers, n_heads, 40, 40, generator=g) * 2  # token id x token id
        self.dist = torch.randn(n_layers, n_heads, 2 * radius + 1, generator=g)
        self.identity = "band-test"

    @torch.no_grad()
    def forward(self, tokens, real, on_layer=None, reuse_probs=False, until_layer=None):
        T = tokens.shape[1]
        pos = torch.arange(T)
        d = pos[None, :] - pos[:, None]
        band = d.abs() <= self.radius
        for ly in range(self.n_layers if until_layer is None else until_layer + 1):
            logits = self.table[ly][:, tokens[:, :, None], tokens[:, None, :]].permute(1, 0, 2, 3)
            logits = logits + self.dist[ly][:, (d.clamp(-self.radius, self.radius) + self.radius)][None]
            mask = band[None, None] & real[:, None, None, :]
            probs = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
            on_layer(ly, probs)


def test_windows_are_exact_for_a_model_with_local_attention():
    band = BandBackbone(radius=3, max_length=40)
    seq = _seq(130, 7)
    module = AttentionExtractor(band, 0.2, window_overlap=12)
    stitched = module.windowed(seq)
    assert stitched.windows > 2 and stitched.windowed
    band.max_length = 1000  # the whole protein at once: the reference
    tokens, real = tokenize([seq])
    whole = AttentionExtractor(band, 0.2)(tokens, real, [130])[0]
    for name in STATS:
        torch.testing.assert_close(getattr(stitched, name), getattr(whole, name), rtol=0, atol=1e-5)
    # negative control: with too little overlap, residues near the cuts see the window's BOS/EOS
    band.max_length = 40
    rough = AttentionExtractor(band, 0.2, window_overlap=2).windowed(seq)
    assert not torch.allclose(rough.received, whole.received, atol=1e-3)


def test_partial_stats_through_windows_equal_full_windowed_stats():
    band = BandBackbone(radius=3, max_length=40)
    seq = _seq(100, 8)
    full = AttentionExtractor(band, 0.2, window_overlap=12).windowed(seq)
    part = AttentionExtractor(band, 0.2, window_overlap=12, heads=[(0, 1)]).windowed(seq)
    for name in STATS:
        torch.testing.assert_close(getattr(part, name)[0, 1], getattr(full, name)[0, 1], rtol=1e-6, atol=1e-6)
        assert torch.isnan(getattr(part, name)[0, 0]).all()


@pytest.mark.slow
@pytest.mark.parametrize("context", [512, None])
def test_table_with_a_4092_residue_protein_extracts_by_default(context, tmp_path):
    """The tiny backbone's context is lowered to 512 residues to keep the test fast (any backbone's
    ``max_length`` may be lowered like this; windows then get shorter); the slow case uses ESM-C's 2048."""
    tiny = load_backbone("tiny")
    if context:
        tiny.max_length = context
    table = tmp_path / "in.tsv"
    table.write_text(f"id\tsequence\tsites\nok\tMKTAYIAKQR\t2\nhuge\t{_seq(4092, 9)}\t3,4000\n")
    proteins = read_proteins(table)
    res = extract(proteins, tiny, 0.3, str(tmp_path / "c"), CPU)
    assert res.windowed == ["huge"]
    s = res.stats(proteins[1])
    assert s.length == 4092 and s.windows == len(window_plan(4092, tiny.max_length, 256)[0]) > 1 and s.windowed
    assert torch.isfinite(s.received).all() and float(s.total.sum()) > 0
    assert not res.stats(proteins[0]).windowed


def test_long_policy_skip_and_error(tiny):
    from allo_lightning.attention import split_long
    from allo_lightning.errors import InputError

    proteins = [Protein("a", "MKT"), Protein("b", "A" * (tiny.max_length + 1))]
    kept, skipped = split_long(proteins, tiny.max_length, "skip", tiny.name)
    assert [p.id for p in kept] == ["a"] and [p.id for p in skipped] == ["b"]
    with pytest.raises(InputError, match="'b'"):
        split_long(proteins, tiny.max_length, "error", tiny.name)
    assert split_long(proteins, tiny.max_length, "window", tiny.name) == (proteins, [])


# -- ESM-2 fused capture ----------------------------------------------------------------------------------
def test_fused_esm2_matches_transformers_outputs(tiny_esm2):
    seqs = [_seq(33, 4), _seq(20, 5)]
    tokens, real = tokenize(seqs)
    assert tiny_esm2._fused_attention_modules() is not None
    got: dict[int, torch.Tensor] = {}
    hidden = tiny_esm2(tokens, real, lambda ly, p: got.__setitem__(ly, p.clone()))
    with torch.no_grad():
        ref = tiny_esm2.model(input_ids=tokens, attention_mask=real.long(), output_attentions=True)
    torch.testing.assert_close(hidden, ref.last_hidden_state, rtol=1e-5, atol=1e-5)
    for ly, att in enumerate(ref.attentions):
        for b, n in enumerate(len(s) + 2 for s in seqs):  # real query rows
            torch.testing.assert_close(got[ly][b, :, :n], att[b, :, :n], rtol=1e-5, atol=1e-6)
    # the forward was restored: the plain model gives the same hidden states
    torch.testing.assert_close(tiny_esm2(tokens, real), ref.last_hidden_state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "tiny_esm2"])
def test_rotary_hook_capture_equals_the_fused_capture(name, request, monkeypatch):
    """A backbone without fused attention modules is captured by hooks on its rotary modules (q and k as the
    attention uses them); its probabilities equal the fused capture's."""
    bb = request.getfixturevalue(name)
    seqs = [_seq(30, 6), _seq(17, 7)]
    tokens, real = tokenize(seqs)
    fused: dict[int, torch.Tensor] = {}
    bb(tokens, real, lambda ly, p: fused.__setitem__(ly, p.clone()))
    monkeypatch.setattr(bb, "_fused_attention_modules", lambda: None)
    hooked: dict[int, torch.Tensor] = {}
    bb(tokens, real, lambda ly, p: hooked.__setitem__(ly, p.clone()))
    assert sorted(hooked) == sorted(fused) == list(range(bb.n_layers))
    for ly in fused:
        for b, n in enumerate(len(s) + 2 for s in seqs):  # the real query rows (padded rows are not defined)
            torch.testing.assert_close(hooked[ly][b, :, :n], fused[ly][b, :, :n], rtol=1e-5, atol=1e-6)


# -- loading ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "esm2_tiny"])
def test_weights_loaded_by_assignment_give_the_same_model(name, tmp_path):
    from safetensors.torch import save_file

    ref = load_backbone(name, seed=3)
    torch.save(ref.model.state_dict(), tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in ref.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    tokens, real = tokenize([_seq(25, 6)])
    want = ref(tokens, real)
    for f in ("w.pth", "w.safetensors"):
        bb = load_backbone(name, tmp_path / f)
        assert bb.identity == ref.identity
        assert not any(t.is_meta for t in list(bb.model.parameters()) + list(bb.model.buffers()))
        torch.testing.assert_close(bb(tokens, real), want, rtol=0, atol=0)
    # a bf16 file becomes an fp32 model
    torch.save({k: v.to(torch.bfloat16) for k, v in ref.model.state_dict().items()}, tmp_path / "b.pth")
    bf = load_backbone(name, tmp_path / "b.pth")
    assert all(p.dtype == torch.float32 for p in bf.model.parameters())


# -- bf16 -------------------------------------------------------------------------------------------------
def test_bf16_on_cpu_is_refused_without_support_and_cached_apart_with_it(tiny, tmp_path, monkeypatch):
    import allo_lightning.attention.extractor as ex

    proteins = random_proteins(2, seed=9)
    monkeypatch.setattr(ex, "cpu_bf16_supported", lambda: False)
    with pytest.raises(BackboneError, match="--model.dtype bf16: the cpu device here has no bfloat16 support"):
        extract(proteins, tiny, 0.3, str(tmp_path / "c"), CPU, dtype="bf16")
    monkeypatch.setattr(ex, "cpu_bf16_supported", lambda: True)
    res = extract(proteins, tiny, 0.3, str(tmp_path / "c"), CPU, dtype="bf16")
    assert res.cache.dir.name == tiny.identity + "-bf16" and len(res.computed) == 2
    assert next(tiny.parameters()).dtype == torch.float32  # the caller's backbone is given back in fp32
    fp32 = extract(proteins, tiny, 0.3, str(tmp_path / "c"), CPU)
    assert len(fp32.computed) == 2  # its own key
    a, b = res.stats(proteins[0]), fp32.stats(proteins[0])
    assert not torch.equal(a.received, b.received) and torch.allclose(a.received, b.received, atol=0.5)


def test_column_stats_row_counts_sum_to_total():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, 12, 12, generator=g) * 3, dim=-1)
    real = torch.ones(2, 12, dtype=torch.bool)
    residue = real.clone()
    residue[:, 0] = residue[:, -1] = False
    out = column_stats(probs, residue, real, 0.3, rows=True)
    torch.testing.assert_close(out["row_count"].sum(-1), out["total"])
    want = ((probs > 0.3).sum(-1).float() * residue[:, None].float())
    torch.testing.assert_close(out["row_count"], want)
    assert ESMC_ALPHABET.bos != ESMC_ALPHABET.eos


def test_probe_features_from_partial_stats_equal_those_from_full_stats(tiny, tmp_path):
    """What predict does: features of the probe's heads from an early-exit extraction."""
    from allo_lightning.probe import FeatureSpec

    proteins = random_proteins(3, seed=12)
    heads = [(0, 1), (1, 3)]
    full = list(extract(proteins, tiny, 0.3, str(tmp_path / "a"), CPU))
    part = list(extract(proteins, tiny, 0.3, str(tmp_path / "b"), CPU, heads=heads))
    assert all(s.partial for _, s in part)
    spec = FeatureSpec("heads", heads, window=1).fit(full)
    for (p, f), (_, q) in zip(full, part):
        torch.testing.assert_close(spec(p, q), spec(p, f), rtol=1e-6, atol=1e-6)
    # negative control: a head that was not computed gives NaN features, never silent zeros
    other = FeatureSpec("heads", [(0, 0)]).fit(full)
    assert torch.isnan(other.raw(proteins[0], part[0][1])).all()
