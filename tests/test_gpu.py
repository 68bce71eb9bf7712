"""Tests that need CUDA (marker ``gpu``; skipped where CUDA is absent, see tests/conftest.py). Run them on
a GPU machine with ``python -m pytest -q -m gpu`` (.ci/gpu-check does).

- the ``flash`` kernel (statistics from q and k) on CUDA, fp32 and bf16, equals a float64 softmax reduced on
  the CPU (tolerance of tests/test_flash_stats.py), and the extractor with it equals the probability path;
- the statistics kernels on CUDA (compiled, fused) equal the CPU's chunked kernel on the same attention
  probabilities: ``count`` and ``total`` exactly (the same float32 values compared with the same theta),
  ``received`` and ``mass`` within rtol 1e-5 / atol 1e-5 (float32 sums in another order);
- extraction on CUDA (Trainer, cache) equals extraction on CPU within a stated tolerance: the attention
  itself is computed by different kernels, so a weight within a few float32 ulps of theta may fall on the
  other side: at most 0.1 % of the confident pairs may move, received/mass within atol 1e-3;
- bf16 extraction on CUDA runs through the Trainer, its statistics are close to fp32's;
- the benchmarks run on CUDA (the plain-forward crash after ``extract``, bf16 predict, vs transformers).
"""

from __future__ import annotations

import pytest
import torch

from allo_lightning.attention import AttentionExtractor, extract
from allo_lightning.attention import stats as stats_mod
from allo_lightning.attention.stats import column_stats
from allo_lightning.backbone import tokenize
from tests.conftest import random_proteins
from tests.test_stats_kernels import assert_stats_close, padded_batch

pytestmark = pytest.mark.gpu
CUDA = {"accelerator": "gpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False}


@pytest.mark.parametrize("kernel", ["compiled", "fused", "triton"])
@pytest.mark.parametrize("theta", [0.05, 0.3])
def test_cuda_kernels_equal_cpu_chunked_on_the_same_probabilities(kernel, theta):
    rows = kernel != "triton"  # the Triton kernel has no row counts (windows use fused)
    for seed, (B, H, T) in enumerate([(3, 4, 23), (4, 18, 257), (1, 18, 700)]):
        probs, residue, real = padded_batch(B=B, H=H, T=T, seed=seed)
        ref = column_stats(probs, residue, real, theta, rows=rows, kernel="chunked")
        got = column_stats(probs.cuda(), residue.cuda(), real.cuda(), theta, rows=rows, kernel=kernel)
        assert not stats_mod._COMPILE_FAILED, "torch.compile failed on this machine (the fallback was used)"
        assert not stats_mod._TRITON_FAILED, "the Triton kernel failed on this machine (the fallback was used)"
        got = {k: v.cpu() for k, v in got.items()}
        assert_stats_close(got, ref)
        if rows:
            assert torch.equal(got["row_count"], ref["row_count"])


def test_exactly_theta_is_not_confident_on_cuda():
    t32 = torch.tensor(0.3, dtype=torch.float32)
    real = torch.ones(1, 6, dtype=torch.bool)
    residue = torch.tensor([[False, True, True, True, True, False]])
    p = torch.zeros(1, 1, 6, 6)
    p[0, 0, :, 1] = t32
    p[0, 0, :, 2] = torch.nextafter(t32, torch.tensor(1.0))
    for kernel in ("compiled", "fused", "triton"):
        s = column_stats(p.cuda(), residue.cuda(), real.cuda(), 0.3, kernel=kernel)
        assert s["count"][0, 0, 1].item() == 0 and s["count"][0, 0, 2].item() == 4, kernel


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flash_kernel_on_cuda_equals_float64_reference(dtype, monkeypatch):
    """The ``flash`` kernel (statistics straight from q and k, compiled Triton, bf16 q/k on the tensor cores)
    against a float64 softmax reduced on the CPU, with the tolerance of tests/test_flash_stats.py: received/mass
    rtol 1e-5 / atol 1e-5 x L, count/total/row_count exactly but for weights within 1e-5 of theta (the longest
    lengths have some: each may move its own column's count by one)."""
    from tests.test_flash_stats import assert_close_to_reference, clear_theta, near_theta, qk_batch, reference_probs

    monkeypatch.setattr(stats_mod, "_FLASH_FAILED", False)
    for seed, (B, H, T, D, target) in enumerate([(3, 4, 23, 16, 0.3), (4, 18, 257, 64, 0.1),
                                                 (1, 18, 700, 64, 0.05)]):
        q, k, residue, real = qk_batch(B, H, T, D, dtype, seed=seed)
        scale = D**-0.5
        probs = reference_probs(q, k, real, scale)
        theta = clear_theta(probs, residue, real, target)
        ref = column_stats(probs, residue, real, theta, rows=True, kernel="chunked")
        got = stats_mod.qk_column_stats(q.cuda(), k.cuda(), residue.cuda(), real.cuda(), scale, theta, rows=True)
        assert not stats_mod._FLASH_FAILED, "the flash kernel failed on this machine (the fallback was used)"
        near = near_theta(probs, residue, real, theta)
        assert near.sum() <= 1e-4 * near.numel()  # the weights within 1e-5 of theta: few
        assert_close_to_reference({n: v.cpu() for n, v in got.items()}, ref, T, rows=True, near=near)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_flash_extraction_on_cuda_equals_the_probability_path(tiny, dtype, monkeypatch):
    """The extractor with ``flash`` (q/k from the rotary hooks, the model's own attention, no probabilities)
    against the same extractor with ``triton`` (probabilities materialised), same device and dtype: at most
    0.1 % of the confident pairs move, received/mass within 1e-4 (float32 exp(s - lse) against softmax)."""
    proteins = random_proteins(6, lo=40, hi=300, seed=12)
    tokens, real = (t.cuda() for t in tokenize([p.sequence for p in proteins]))
    lengths = [p.length for p in proteins]
    monkeypatch.setattr(stats_mod, "_FLASH_FAILED", False)
    tiny.cuda()
    out = {}
    try:
        for kernel in ("triton", "flash"):
            monkeypatch.setenv("ALLO_LIGHTNING_STATS_KERNEL", kernel)
            ext = AttentionExtractor(tiny, 0.3, dtype=dtype, map_heads=[(1, 2)]).to("cuda")
            ext.on_predict_start()
            try:
                out[kernel] = ext(tokens, real, lengths)
            finally:
                ext.on_predict_end()
    finally:
        tiny.to(torch.float32).to("cpu")
    assert not stats_mod._FLASH_FAILED, "the flash kernel failed on this machine (the fallback was used)"
    for a, b in zip(out["triton"], out["flash"]):
        assert _flip_share(a, b) <= 1e-3
        for n in ("received", "mass"):
            torch.testing.assert_close(getattr(b, n), getattr(a, n), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b.maps, a.maps, rtol=1e-4, atol=1e-5)


def _flip_share(a, b) -> float:
    return float((a.count - b.count).abs().sum() / a.count.sum().clamp_min(1))


def test_extract_on_cuda_equals_cpu(tiny, tmp_path):
    proteins = random_proteins(12, lo=30, hi=300, seed=7)
    cpu = extract(proteins, tiny, 0.3, str(tmp_path / "cpu"), {"accelerator": "cpu", "devices": 1,
                                                               "enable_progress_bar": False}, max_tokens=2048)
    gpu = extract(proteins, tiny, 0.3, str(tmp_path / "gpu"), CUDA, max_tokens=2048)
    for (p, a), (_, b) in zip(cpu, gpu):
        assert _flip_share(a, b) <= 1e-3, p.id
        torch.testing.assert_close(b.received, a.received, rtol=1e-4, atol=1e-3)
        same = a.count == b.count  # where no pair crossed theta, the confident mass agrees too
        assert same.float().mean() > 0.99
        torch.testing.assert_close(b.mass[same], a.mass[same], rtol=1e-4, atol=1e-3)
    tiny.to("cpu")


def test_backbone_is_given_back_where_the_caller_keeps_it(tiny, tmp_path):
    """Lightning moves the module to the CPU after trainer.predict: a backbone the caller keeps on the GPU
    stays there (the bench's plain forward crashed on it), one kept on the CPU goes back to the CPU."""
    proteins = random_proteins(3, lo=20, hi=40, seed=11)
    tiny.to("cpu")
    extract(proteins, tiny, 0.3, str(tmp_path / "a"), CUDA)
    assert next(tiny.parameters()).device.type == "cpu"
    tiny.to("cuda")
    try:
        extract(proteins, tiny, 0.3, str(tmp_path / "b"), CUDA)
        assert next(tiny.parameters()).device.type == "cuda"
        tokens, real = (t.cuda() for t in tokenize([p.sequence for p in proteins]))
        tiny(tokens, real)  # the call that crashed in bench --device cuda
    finally:
        tiny.to("cpu")


def test_bf16_extract_on_cuda(tiny, tmp_path):
    proteins = random_proteins(8, lo=40, hi=200, seed=8)
    fp32 = extract(proteins, tiny, 0.3, str(tmp_path), CUDA, max_tokens=2048)
    bf16 = extract(proteins, tiny, 0.3, str(tmp_path), CUDA, max_tokens=2048, dtype="bf16")
    assert sorted(bf16.computed) == sorted(p.id for p in proteins), "bf16 entries are their own"
    assert next(tiny.parameters()).dtype == torch.float32, "the backbone is given back in fp32"
    for (p, a), (_, b) in zip(fp32, bf16):
        assert torch.isfinite(b.received).all() and torch.equal(b.count, b.count.round())
        torch.testing.assert_close(b.received.sum(-1), a.received.sum(-1), rtol=0.05, atol=0.5)
        assert _flip_share(a, b) < 0.1, p.id
    tiny.to("cpu")


def test_extractor_direct_on_cuda_bf16_matches_fp32_ranks(tiny):
    proteins = random_proteins(4, lo=50, hi=120, seed=9)
    tokens, real = (t.cuda() for t in tokenize([p.sequence for p in proteins]))
    lengths = [p.length for p in proteins]
    tiny.cuda()
    try:
        a = AttentionExtractor(tiny, 0.3)(tokens, real, lengths)
        tiny.to(torch.bfloat16)
        b = AttentionExtractor(tiny, 0.3)(tokens, real, lengths)
    finally:
        tiny.to(torch.float32).to("cpu")
    for x, y in zip(a, b):
        r = torch.corrcoef(torch.stack([x.received.flatten(), y.received.flatten()]))[0, 1]
        assert r > 0.99


def test_half_precision_scores_equal_upcast_scores(tiny, monkeypatch):
    """bf16 q.k^T on the tensor cores with float32 output gives the probabilities of upcasting q and k
    first (float32 products of bf16 numbers are exact; only the order of the sums differs)."""
    from allo_lightning.backbone import base

    proteins = random_proteins(3, lo=50, hi=120, seed=10)
    tokens, real = (t.cuda() for t in tokenize([p.sequence for p in proteins]))
    tiny.cuda().to(torch.bfloat16)
    try:
        got, ref = {}, {}
        tiny(tokens, real, lambda ly, p: got.__setitem__(ly, p.clone()))
        assert base._HALF_SCORES["ok"], "bmm(out_dtype=float32) is not available on this torch"
        monkeypatch.setitem(base._HALF_SCORES, "ok", False)
        tiny(tokens, real, lambda ly, p: ref.__setitem__(ly, p.clone()))
    finally:
        tiny.to(torch.float32).to("cpu")
    for ly in ref:
        assert got[ly].dtype == torch.float32
        torch.testing.assert_close(got[ly], ref[ly], rtol=1e-4, atol=1e-5)


def test_bench_smoke_on_cuda(capsys):
    from allo_lightning.bench import main

    main(["--quick", "--device", "cuda", "--shapes", "tiny", "--lengths", "64", "--repeats", "1",
          "--original-heads", "4"])
    out = capsys.readouterr().out
    assert "overhead=" in out and "nan" not in out.split("overhead=")[-1]


def test_bench_predict_bf16_on_cuda(capsys):
    from allo_lightning.bench import main

    main(["--predict", "--quick", "--bf16", "--device", "cuda", "--shapes", "tiny", "--lengths", "64",
          "--repeats", "1"])
    out = capsys.readouterr().out
    assert "bf16 vs fp32" in out and "speed-up" in out and "predict_vs_full=" in out


def test_bench_table_on_cuda(capsys):
    from allo_lightning.bench import main

    main(["--table", "--device", "cuda", "--shapes", "tiny", "--residues", "2000", "--max-tokens", "2048"])
    out = capsys.readouterr().out
    assert "FAILED" not in out and "bf16 vs fp32 end to end" in out
