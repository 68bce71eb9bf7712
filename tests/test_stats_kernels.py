"""The three reductions of a layer's statistics (``chunked`` for CPU, ``fused`` and ``compiled`` for GPUs)
against each other and against a plain loop over (protein, head, query, key), with padding, specials and
attention exactly at theta. The fused kernels are run here on CPU; tests/test_gpu.py repeats the
comparison on CUDA. Tolerance: sums of float32 in another order, rtol 1e-5 / atol 1e-5 for ``received``
and ``mass``; ``count`` and ``total`` are integers and must be equal."""

from __future__ import annotations

import pytest
import torch

from allo_lightning.attention import AttentionExtractor
from allo_lightning.attention import stats as stats_mod
from allo_lightning.attention.stats import _one_pass, column_stats, stats_kernel
from allo_lightning.backbone import tokenize
from tests.conftest import random_proteins

NAMES = ("received", "count", "mass", "total")


def padded_batch(B=3, H=4, T=23, seed=0, scale=4.0):
    """Peaked softmax attention over a padded batch (padded keys exactly 0), residue and real masks."""
    g = torch.Generator().manual_seed(seed)
    real = torch.ones(B, T, dtype=torch.bool)
    if B > 1:
        real[1, T - 6 :] = False
    if B > 2:
        real[2, 9:] = False
    residue = real.clone()
    residue[:, 0] = False
    residue[torch.arange(B), real.sum(1) - 1] = False
    logits = torch.randn(B, H, T, T, generator=g) * scale
    probs = torch.softmax(logits.masked_fill(~real[:, None, None, :], float("-inf")), dim=-1)
    return probs, residue, real


def loop_reference(probs, residue, real, theta):
    """The definition, one (protein, head, query, key) at a time (float64 sums)."""
    B, H, T, _ = probs.shape
    out = {n: torch.zeros(B, H, T, dtype=torch.float64) for n in ("received", "count", "mass")}
    out["total"] = torch.zeros(B, H, dtype=torch.float64)
    theta32 = float(torch.tensor(theta, dtype=torch.float32))  # theta as the kernels compare it
    for b in range(B):
        for h in range(H):
            for i in range(T):
                if not residue[b, i]:
                    continue
                for j in range(T):
                    a = float(probs[b, h, i, j])
                    confident = a > theta32
                    if real[b, j] and confident:
                        out["total"][b, h] += 1
                    if residue[b, j]:
                        out["received"][b, h, j] += a
                        out["count"][b, h, j] += confident
                        out["mass"][b, h, j] += a if confident else 0.0
    return {k: v.float() for k, v in out.items()}


def assert_stats_close(got, ref):
    for n in ("received", "mass"):
        torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-5, msg=n)
    for n in ("count", "total"):
        assert torch.equal(got[n], ref[n]), n


@pytest.mark.parametrize("theta", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("kernel", ["chunked", "fused"])
def test_kernels_equal_plain_loop(kernel, theta, monkeypatch):
    probs, residue, real = padded_batch()
    if kernel == "chunked":  # several chunks per map
        monkeypatch.setattr(stats_mod, "CHUNK_ELEMENTS", probs.shape[0] * probs.shape[1] * probs.shape[-1] * 4)
    got = column_stats(probs, residue, real, theta, kernel=kernel)
    assert_stats_close(got, loop_reference(probs, residue, real, theta))
    assert got["count"].sum() > 0


@pytest.mark.parametrize("theta", [0.0, 0.3])
def test_one_pass_expression_equals_chunked(theta):
    """The expression that torch.compile turns into one kernel (run eagerly here) gives the chunked
    kernel's sums, row counts included."""
    probs, residue, real = padded_batch(seed=1)
    ref = column_stats(probs, residue, real, theta, rows=True, kernel="chunked")
    w = residue.float()
    received, count, mass, rows = _one_pass(probs, w, torch.tensor(theta, dtype=torch.float32), True)
    key, realf = residue[:, None, :].float(), real[:, None, :].float()
    got = {"received": received * key, "count": count * key, "mass": mass * key,
           "total": (count * realf).sum(-1)}
    assert_stats_close(got, ref)
    assert torch.equal(rows, ref["row_count"])


def test_attention_exactly_at_theta_is_not_confident():
    """Strict alpha > theta in every kernel: a weight equal to theta (as float32) never counts, the next
    float32 above it does."""
    theta = 0.3
    t32 = torch.tensor(theta, dtype=torch.float32)
    above = torch.nextafter(t32, torch.tensor(1.0))
    real = torch.ones(1, 6, dtype=torch.bool)
    residue = torch.tensor([[False, True, True, True, True, False]])
    p = torch.zeros(1, 1, 6, 6)
    p[0, 0, :, 1] = t32  # exactly theta: never confident
    p[0, 0, :, 2] = above  # just above: confident
    p[0, 0, :, 3] = 1 - t32 - above
    expect = {"chunked", "fused"}
    for kernel in expect:
        s = column_stats(p, residue, real, theta, kernel=kernel)
        assert s["count"][0, 0].tolist() == [0, 0, 4, 4 * float(1 - t32 - above > t32), 0, 0], kernel
        assert s["mass"][0, 0, 1] == 0 and s["total"][0, 0] == s["count"][0, 0].sum(), kernel
    received, count, mass, _ = _one_pass(p, residue.float(), t32, False)
    assert count[0, 0, 1] == 0 and count[0, 0, 2] == 4 and mass[0, 0, 1] == 0


def test_kernel_choice(monkeypatch):
    monkeypatch.delenv("ALLO_LIGHTNING_STATS_KERNEL", raising=False)
    assert stats_kernel("cpu") == "chunked"
    assert stats_kernel("mps") == "fused"
    assert stats_kernel("cuda") == "triton"  # measured faster than fused on an H200 (README, GPU)
    monkeypatch.setenv("ALLO_LIGHTNING_STATS_KERNEL", "fused")
    assert stats_kernel("cpu") == "fused"
    monkeypatch.setenv("ALLO_LIGHTNING_STATS_KERNEL", "fastest")
    with pytest.raises(ValueError, match="ALLO_LIGHTNING_STATS_KERNEL"):
        stats_kernel("cpu")


def test_compile_failure_falls_back_to_fused_with_a_warning(monkeypatch):
    probs, residue, real = padded_batch(seed=2)

    def broken(*_a, **_k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(stats_mod, "_COMPILED", {})
    monkeypatch.setattr(stats_mod, "_COMPILE_FAILED", False)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        got = column_stats(probs, residue, real, 0.3, kernel="compiled")
    assert_stats_close(got, column_stats(probs, residue, real, 0.3, kernel="chunked"))
    assert stats_mod._COMPILE_FAILED and stats_kernel("cuda") == "triton"


def test_extractor_statistics_do_not_depend_on_the_kernel(tiny, monkeypatch):
    proteins = random_proteins(4, lo=20, hi=50, seed=5)
    tokens, real = tokenize([p.sequence for p in proteins])
    lengths = [p.length for p in proteins]
    out = {}
    for kernel in ("chunked", "fused"):
        monkeypatch.setenv("ALLO_LIGHTNING_STATS_KERNEL", kernel)
        out[kernel] = AttentionExtractor(tiny, theta=0.3)(tokens, real, lengths)
    for a, b in zip(out["chunked"], out["fused"]):
        assert_stats_close(a.tensors(), b.tensors())


@pytest.mark.slow
def test_compiled_kernel_on_cpu_equals_chunked(monkeypatch):
    """torch.compile's C++ code for the one-pass reduction (the same graph Triton compiles on CUDA), over
    two batch shapes (dynamic shapes: no recompilation per shape needed for equality)."""
    monkeypatch.setattr(stats_mod, "_COMPILED", {})
    monkeypatch.setattr(stats_mod, "_COMPILE_FAILED", False)
    for seed, (B, T) in enumerate([(3, 23), (2, 31)]):
        probs, residue, real = padded_batch(B=B, T=T, seed=seed)
        for rows in (False, True):
            got = column_stats(probs, residue, real, 0.3, rows=rows, kernel="compiled")
            assert not stats_mod._COMPILE_FAILED, "compilation failed on this machine"
            ref = column_stats(probs, residue, real, 0.3, rows=rows, kernel="chunked")
            assert_stats_close(got, ref)
            if rows:
                assert torch.equal(got["row_count"], ref["row_count"])


def test_token_budget_from_free_cuda_memory(monkeypatch):
    """CPU: 4096. CUDA: half the free memory over 12 bytes x heads x T per token, a power of two, within
    [4096, 65536] and never below one protein; an explicit CPU accelerator keeps the CPU budget."""
    from allo_lightning.attention.extractor import token_budget

    assert token_budget({"accelerator": "cpu"}, 18, 500, n_special=2) == 4096
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    free = {"bytes": 20 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free["bytes"], 80 * 2**30))
    assert token_budget({"accelerator": "cpu"}, 18, 500, n_special=2) == 4096
    raw = int(0.5 * free["bytes"]) // (12 * 18 * 502)  # 99,020 tokens -> 65,536 (the cap)
    assert raw > 65536 and token_budget({"accelerator": "gpu"}, 18, 500, n_special=2) == 65536
    free["bytes"] = 4 * 2**30  # 19,804 -> 16,384
    assert token_budget({"accelerator": "gpu"}, 18, 500, n_special=2) == 16384
    assert token_budget({"accelerator": "auto"}, 18, 500, n_special=2) == 16384
    assert token_budget(None, 18, 2048, n_special=2) == 4096  # 4,844 -> 4,096
    free["bytes"] = 2**20  # almost nothing free: still one protein per batch, and the CPU floor
    assert token_budget({"accelerator": "gpu"}, 18, 6000, n_special=2) == 6002
    assert token_budget({"accelerator": "gpu"}, 18, 500, n_special=2) == 4096


def test_triton_failure_falls_back_to_fused_with_a_warning(monkeypatch):
    """``triton`` is the default on CUDA: where its kernel cannot run (here: CPU tensors, or no Triton), the
    eager fused kernel gives the same statistics, with one warning."""
    probs, residue, real = padded_batch(seed=3)
    monkeypatch.setattr(stats_mod, "_TRITON_FAILED", False)
    with pytest.warns(RuntimeWarning, match="Triton kernel failed"):
        got = column_stats(probs, residue, real, 0.3, kernel="triton")
    assert_stats_close(got, column_stats(probs, residue, real, 0.3, kernel="chunked"))
    assert stats_mod._TRITON_FAILED
