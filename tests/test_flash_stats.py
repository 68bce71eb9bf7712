"""The ``flash`` statistics kernel (allo_lightning/attention/flash_stats.py): column statistics straight from q
and k, never materialising the probabilities. Run here on CPU by Triton's interpreter (``TRITON_INTERPRET=1``;
skipped where Triton is not installed); tests/test_gpu.py repeats the comparison on CUDA.

Reference: the probabilities from a float64 softmax of scale * q k^T (q and k as given, bf16 upcast exactly),
reduced by :func:`column_stats` (``chunked``). Tolerance: ``received`` and ``mass`` within rtol 1e-5 / atol
1e-5 x L (float32 exp(s - lse) against float64, sums of up to L terms); ``count``, ``total`` and ``row_count``
exactly, with theta chosen so that no reference probability lies within 1e-5 of it (a weight closer to theta
than float32 rounding may fall on either side; see :func:`clear_theta`). At the long lengths of the CUDA test
no such theta may exist: there each weight within 1e-5 of theta may move its own column's count by one."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allo_lightning.attention import AttentionExtractor
from allo_lightning.attention import stats as stats_mod
from allo_lightning.attention.stats import column_stats, qk_column_stats, stats_kernel
from allo_lightning.backbone import tokenize
from tests.conftest import random_proteins

NAME = "allo_lightning.attention.flash_stats"
MARGIN = 1e-5  # no reference probability this close to theta (count may then differ by float32 rounding)


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton decides when it is first imported


@pytest.fixture
def flash(monkeypatch):
    """flash_stats under Triton's interpreter: only in a process started with TRITON_INTERPRET=1 (Triton makes
    its own library's kernels interpreted or compiled when it is first imported, which torch may do early);
    :func:`test_interpreted_in_a_fresh_process` runs this file so from the inner loop."""
    pytest.importorskip("triton")
    if not INTERPRETED:
        pytest.skip("needs TRITON_INTERPRET=1 from the start (run by test_interpreted_in_a_fresh_process)")
    monkeypatch.setattr(stats_mod, "_FLASH_FAILED", False)
    monkeypatch.setattr(stats_mod, "_FLASH_WARNED", False)
    return importlib.import_module(NAME)


def qk_batch(B, H, T, D, dtype, seed, sharp=3.0):
    """Random q, k [B, H, T, D] (strided as the model hands them: a transposed [B, T, H, D]), a padded
    batch: protein 0 fills T (BOS, residues, EOS), the others end earlier (PAD after EOS)."""
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, T, H, D, generator=g) * sharp).to(dtype).transpose(1, 2)
    k = torch.randn(B, T, H, D, generator=g).to(dtype).transpose(1, 2)
    lengths = [T] + [max(3, T - 5 - 7 * b) for b in range(1, B)]
    real = torch.zeros(B, T, dtype=torch.bool)
    for b, n in enumerate(lengths):
        real[b, :n] = True
    residue = real.clone()
    residue[:, 0] = False  # BOS
    residue[torch.arange(B), torch.tensor(lengths) - 1] = False  # EOS
    return q, k, residue, real


def reference_probs(q, k, real, scale):
    s = torch.matmul(q.double() * scale, k.double().transpose(-1, -2))
    s = s.masked_fill(~real[:, None, None, :], float("-inf"))
    return torch.softmax(s, dim=-1)


def near_theta(probs, residue, real, theta):
    """[B, H, L, L]: the weights of residue queries at real keys within MARGIN of theta (as a float32): the
    only ones that float32 rounding may put on the other side of theta."""
    t32 = float(torch.tensor(theta, dtype=torch.float32))
    counted = residue[:, None, :, None] & real[:, None, None, :]
    return ((probs - t32).abs() <= MARGIN) & counted


def clear_theta(probs, residue, real, target, steps=50):
    """The theta in target, target + 1e-4, ... (``steps`` of them) with the fewest weights near it (none, at
    the sizes of the interpreter tests; a few at long lengths, see :func:`assert_close_to_reference`)."""
    best = None
    for step in range(steps):
        theta = target + step * 1e-4
        n = int(near_theta(probs, residue, real, theta).sum())
        if best is None or n < best[0]:
            best = (n, theta)
        if n == 0:
            break
    return best[1]


def assert_close_to_reference(got, ref, T, rows=False, near=None):
    """received within rtol 1e-5 / atol 1e-5 x T; count, total (and row_count) exactly, except that each
    weight in ``near`` (:func:`near_theta`) may move its column's / row's count by one and its mass by theta."""
    torch.testing.assert_close(got["received"], ref["received"], rtol=1e-5, atol=1e-5 * T, msg="received")
    if near is None or not near.any():
        torch.testing.assert_close(got["mass"], ref["mass"], rtol=1e-5, atol=1e-5 * T, msg="mass")
        for n in ("count", "total") + (("row_count",) if rows else ()):
            assert torch.equal(got[n], ref[n]), n
        return
    col, row = near.sum(2).float(), near.sum(3).float()
    assert ((got["count"] - ref["count"]).abs() <= col).all(), "count"
    assert ((got["total"] - ref["total"]).abs() <= col.sum(-1)).all(), "total"
    if rows:
        assert ((got["row_count"] - ref["row_count"]).abs() <= row).all(), "row_count"
    slack = 1e-5 * T + 1e-5 * ref["mass"].abs() + (MARGIN + 1.0) * col  # a moved weight: at most ~theta <= 1
    assert ((got["mass"] - ref["mass"]).abs() <= slack).all(), "mass"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T,D,target,blocks", [(23, 16, 0.3, (16, 16)), (70, 24, 0.1, (16, 32)),
                                               (101, 32, 0.05, (32, 16))])
def test_flash_equals_float64_softmax_reference(flash, dtype, T, D, target, blocks):
    """Lengths that are no multiple of the blocks (several blocks of queries and keys, a partial last one),
    a head size that is no power of two (24), padding, BOS/EOS; fp32 and bf16 q/k."""
    B, H = 3, 2
    q, k, residue, real = qk_batch(B, H, T, D, dtype, seed=T)
    scale = D**-0.5
    probs = reference_probs(q, k, real, scale)
    theta = clear_theta(probs, residue, real, target)
    ref = column_stats(probs, residue, real, theta, rows=True, kernel="chunked")
    received, count, mass, row_count = flash.column_sums_qk(q, k, residue, real, scale, theta, rows=True,
                                                            block_m=blocks[0], block_n=blocks[1])
    key, realf = residue[:, None, :].float(), real[:, None, :].float()
    got = {"received": received * key, "count": count * key, "mass": mass * key,
           "total": (count * realf).sum(-1), "row_count": row_count}
    assert_close_to_reference(got, ref, T, rows=True)
    pairs = H * (residue.sum(1) * residue.sum(1)).sum()  # (residue query, residue key) pairs
    assert 0 < ref["count"].sum() < pairs / 2  # theta splits the weights
    # padded keys get nothing; the raw count at them is 0 too (their weight is exactly 0)
    assert float(count[~real[:, None, :].expand_as(count)].abs().sum()) == 0.0


def test_flash_with_sharp_scores_and_default_blocks(flash):
    """Scores up to ~100 (exp would overflow float32 without the max shift), the default 64 x 64 blocks over
    a length that spans three of them, through :func:`qk_column_stats` (key masks and ``total`` applied)."""
    T, D = 150, 16
    q, k, residue, real = qk_batch(2, 2, T, D, torch.float32, seed=1, sharp=20.0)
    scale = D**-0.5
    probs = reference_probs(q, k, real, scale)
    s = torch.matmul(q * scale, k.transpose(-1, -2))
    assert s.abs().max() > 90  # exp(s) is inf in float32: only exp(s - max) is finite
    theta = clear_theta(probs, residue, real, 0.3)
    ref = column_stats(probs, residue, real, theta, rows=True, kernel="chunked")
    got = qk_column_stats(q, k, residue, real, scale, theta, rows=True)
    assert not stats_mod._FLASH_FAILED
    assert_close_to_reference(got, ref, T, rows=True)


def test_strict_threshold(flash):
    """alpha > theta, not >=: one query, two keys with equal scores get exactly 0.5 each; at theta = 0.5
    neither is confident, at the float32 just below both are."""
    q = torch.zeros(1, 1, 3, 16)
    k = torch.zeros(1, 1, 3, 16)
    real = torch.tensor([[True, True, False]])
    residue = torch.tensor([[True, True, False]])
    received, count, _mass, _ = flash.column_sums_qk(q, k, residue, real, 1.0, 0.5)
    assert received[0, 0, :2].tolist() == [1.0, 1.0] and count[0, 0].tolist() == [0.0, 0.0, 0.0]
    below = float(torch.nextafter(torch.tensor(0.5), torch.tensor(0.0)))
    _received, count, mass, _ = flash.column_sums_qk(q, k, residue, real, 1.0, below)
    assert count[0, 0].tolist() == [2.0, 2.0, 0.0] and mass[0, 0].tolist() == [1.0, 1.0, 0.0]


def extractor_outputs(tiny, proteins, kernel, monkeypatch, theta=0.3, **kw):
    monkeypatch.setenv("ALLO_LIGHTNING_STATS_KERNEL", kernel)
    tokens, real = tokenize([p.sequence for p in proteins])
    return AttentionExtractor(tiny, theta=theta, **kw)(tokens, real, [p.length for p in proteins])


def assert_extractions_agree(a, b):
    """The model's float32 softmax against exp(s - lse): received/mass within 1e-4, at most 0.1 % of the
    confident pairs on the other side of theta (weights within float32 rounding of it)."""
    for x, y in zip(a, b):
        for n in ("received", "mass"):
            torch.testing.assert_close(getattr(y, n), getattr(x, n), rtol=1e-4, atol=1e-4, equal_nan=True, msg=n)
        moved = (x.count - y.count).nan_to_num().abs().sum()
        assert moved <= 1e-3 * x.count.nan_to_num().sum(), float(moved)
        assert x.count.nan_to_num().sum() > 0


def no_probabilities(*_a, **_k):
    raise AssertionError("the probability capture ran under the flash kernel")


def test_extractor_flash_equals_probability_path(flash, tiny, monkeypatch):
    """The extractor with ``flash``: q and k from the rotary hooks, the model's own attention for the output,
    no probabilities: the same statistics as the probability path; early exit (``heads``), map heads and
    embeddings too."""
    proteins = random_proteins(3, lo=20, hi=45, seed=3)
    for kw in ({}, {"heads": [(0, 1), (1, 3), (1, 0)], "map_heads": [(1, 2)], "embeddings": True}):
        ref = extractor_outputs(tiny, proteins, "chunked", monkeypatch, **kw)
        with monkeypatch.context() as m:
            m.setattr(type(tiny), "_capture", no_probabilities)
            got = extractor_outputs(tiny, proteins, "flash", m, **kw)
        assert not stats_mod._FLASH_FAILED
        assert_extractions_agree(ref, got)
        for x, y in zip(ref, got):
            assert x.heads == y.heads
            if kw:
                torch.testing.assert_close(y.maps, x.maps, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(y.embedding, x.embedding, rtol=1e-4, atol=1e-4)


def test_esm2_extractor_flash_equals_probability_path(flash, tiny_esm2, monkeypatch):
    """ESM-2 (transformers; q scaled before rotary, so its scale is 1): the same through the rotary hooks."""
    proteins = random_proteins(2, lo=20, hi=40, seed=6)
    ref = extractor_outputs(tiny_esm2, proteins, "chunked", monkeypatch, theta=0.026)  # flat attention (max 0.029)
    with monkeypatch.context() as m:
        m.setattr(type(tiny_esm2), "_capture", no_probabilities)
        got = extractor_outputs(tiny_esm2, proteins, "flash", m, theta=0.026)
    assert not stats_mod._FLASH_FAILED
    assert_extractions_agree(ref, got)


def test_windowed_protein_with_flash_uses_row_counts(flash, tiny, monkeypatch):
    """A protein longer than the context: windows need each query's confident keys (``row_count``), which the
    flash kernel's first pass gives."""
    monkeypatch.setattr(tiny, "max_length", 40)
    seq = random_proteins(1, lo=90, hi=90, seed=8)[0].sequence
    out = {}
    for kernel in ("chunked", "flash"):
        monkeypatch.setenv("ALLO_LIGHTNING_STATS_KERNEL", kernel)
        out[kernel] = AttentionExtractor(tiny, theta=0.3, window_overlap=16).windowed(seq)
    assert out["flash"].windows == out["chunked"].windows > 1
    assert not stats_mod._FLASH_FAILED
    assert_extractions_agree([out["chunked"]], [out["flash"]])
    moved = (out["chunked"].total - out["flash"].total).abs().sum()
    assert moved <= 1e-3 * out["chunked"].total.sum()


def test_flash_where_it_cannot_run_falls_back_with_a_warning(tiny, monkeypatch):
    """``flash`` on a CPU without Triton's interpreter: one warning, the probability path, same statistics."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(stats_mod, "_FLASH_WARNED", False)
    monkeypatch.setattr(stats_mod, "_FLASH_FAILED", False)
    proteins = random_proteins(2, lo=20, hi=30, seed=4)
    ref = extractor_outputs(tiny, proteins, "chunked", monkeypatch)
    with pytest.warns(RuntimeWarning, match="flash kernel cannot run") as caught:
        got = extractor_outputs(tiny, proteins, "flash", monkeypatch)
    assert len([w for w in caught if w.category is RuntimeWarning]) == 1  # then the CPU's own kernel, no more
    for x, y in zip(ref, got):
        for n in ("received", "count", "mass", "total"):
            torch.testing.assert_close(getattr(y, n), getattr(x, n), rtol=1e-5, atol=1e-5)


def test_failing_flash_kernel_falls_back_with_a_warning(flash, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("no such GPU feature")

    monkeypatch.setattr(flash, "column_sums_qk", broken)
    q, k, residue, real = qk_batch(2, 2, 30, 16, torch.float32, seed=2)
    with pytest.warns(RuntimeWarning, match="no such GPU feature"):
        got = qk_column_stats(q, k, residue, real, 0.25, 0.2, rows=True)
    assert stats_mod._FLASH_FAILED
    probs = reference_probs(q, k, real, 0.25)
    assert_close_to_reference(got, column_stats(probs, residue, real, 0.2, rows=True, kernel="chunked"), 30)


def test_flash_is_selectable_not_default(monkeypatch):
    monkeypatch.delenv("ALLO_LIGHTNING_STATS_KERNEL", raising=False)
    assert stats_kernel("cuda") == "triton"  # flash is not yet measured on a GPU
    monkeypatch.setenv("ALLO_LIGHTNING_STATS_KERNEL", "flash")
    assert stats_kernel("cuda") == "flash" and stats_kernel("cpu") == "flash"


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="this process is the fresh one")
def test_interpreted_in_a_fresh_process():
    """The tests above that need Triton's interpreter, in a process started with TRITON_INTERPRET=1 (about
    40 s: the interpreter runs every block of the kernels in numpy)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not gpu",
                          "-W", "ignore::DeprecationWarning", str(Path(__file__).relative_to(root))],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " skipped" not in run.stdout.splitlines()[-1], run.stdout[-2000:]  # nothing skipped but this test
