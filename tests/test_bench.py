"""bench and the original approach it times: flag misuses are one-line refusals (exit 2), a tiny
smoke run works, and the original per-head loop agrees with the package's statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from allo_lightning.bench import main as bench_main

MISUSES = [
    (["--lengths", "0"], "--lengths 0"),
    (["--lengths", "50", "-5"], "--lengths -5"),
    (["--repeats", "0"], "--repeats 0"),
    (["--threads", "-1"], "--threads -1"),
    (["--threads", "0"], "--threads 0"),
    (["--original-heads", "-1"], "--original-heads -1"),
    (["--device", "bogus"], "--device 'bogus'"),
    (["--device", "cuda:99"], "no such CUDA device"),
    (["--lengths", "100000000"], "context of 2048"),
    (["--bf16"], "--bf16 works with --predict only"),
    (["--scale"], "--scale adds"),
    (["--scoring", "--predict"], "--scoring runs"),
    (["--memory-child", "ours", "esmc_300m", "x", "cpu"], "internal flag"),
    (["--table", "--max-tokens", "0"], "--max-tokens 0"),
    (["--table", "--residues", "-3"], "--residues -3"),
    (["--table", "--predict"], "--table runs"),
]


@pytest.mark.parametrize("argv,phrase", MISUSES, ids=[" ".join(a) for a, _ in MISUSES])
def test_bench_flag_misuse_is_one_line(argv, phrase, capsys, monkeypatch):
    """Each of these was a traceback (or silently ignored) before; now refused before any work."""
    import allo_lightning.bench.extraction as ex

    def boom(*a, **k):
        raise AssertionError("work started before the refusal")

    monkeypatch.setattr(ex, "run_point", boom)
    monkeypatch.setattr(ex, "make_backbone", boom)
    with pytest.raises(SystemExit) as e:
        bench_main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert phrase in err, err


@pytest.mark.slow
def test_bench_smoke_tiny(capsys):
    """The extraction benchmark end to end on the tiny shape (seconds; its numbers mean nothing)."""
    bench_main(["--quick", "--shapes", "tiny", "--lengths", "24", "--repeats", "1", "--device", "cpu",
                "--original-heads", "2"])
    out = capsys.readouterr().out
    assert "worst case over the grid" in out and "overhead=" in out and "vs_original=" in out


def test_original_loop_matches_the_statistics(tiny):
    """original.py (the seed scripts' approach, the benchmark's baseline): full maps of every head, then
    the per-head loop. Its observed score equals sum over sites of the confident mass / total from the
    package's own ProteinStats (the benchmark checks this too); its p-value is a valid Monte-Carlo one."""
    from allo_lightning.attention import AttentionExtractor
    from allo_lightning.backbone import tokenize
    from allo_lightning.original import full_attention_maps, original_head_scores

    from .conftest import random_proteins

    p = random_proteins(1, lo=40, hi=40, seed=3)[0]
    tokens, real = tokenize([p.sequence])
    maps = full_attention_maps(tiny, tokens, real)
    assert maps.shape == (tiny.n_layers, tiny.n_heads, p.length + 2, p.length + 2)
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]), rtol=1e-5, atol=1e-5)
    sites0 = [s - 1 for s in p.sites]
    out = original_head_scores(maps, sites0, 0.3, n_draws=200, seed=0)
    stats = AttentionExtractor(tiny, 0.3)(tokens, real, [p.length])[0]
    y = torch.as_tensor(p.labels()).bool()
    seed_score = (stats.mass[..., y].sum(-1) / stats.total.clamp_min(1)).numpy()
    np.testing.assert_allclose(out["observed"], seed_score, rtol=1e-4, atol=1e-6)
    assert np.all((out["pvalue"] >= 1 / 201) & (out["pvalue"] <= 1))
    part = original_head_scores(maps, sites0, 0.3, n_draws=50, seed=0, heads=[(1, 2)])
    assert np.isnan(part["observed"][0, 0]) and part["observed"][1, 2] == pytest.approx(out["observed"][1, 2])
