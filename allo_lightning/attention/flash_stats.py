"""The column statistics of one layer straight from q and k, flash-attention style
(``ALLO_LIGHTNING_STATS_KERNEL=flash``): the [B, H, L, L] probabilities are never written to memory.

Two Triton kernels per layer, both recomputing the scores s_ij = scale * q_i . k_j block by block from q and
k as the model's attention uses them (after q_ln/k_ln and rotary; read in their own dtype, bf16 included,
products accumulated in float32; float32 inputs in IEEE float32, not TF32):

1. per (protein x head, block of queries): the online row maximum and log-sum-exp over the blocks of keys,
   padded keys (``real_BL`` False) left out, as the model's key padding mask does: lse_i; with ``rows``, a
   second sweep over the keys counts each query's confident real keys (``row_count``, for windows);
2. per (protein x head, block of keys): a loop over the blocks of queries, alpha_ij = exp(s_ij - lse_i)
   (0 at padded keys), and the three column sums of the block's keys accumulated in float32 registers (no
   atomics): ``received`` = sum_i w_i alpha_ij, ``count`` = sum_i w_i 1[alpha_ij > theta], ``mass`` =
   sum_i w_i alpha_ij 1[alpha_ij > theta], with w_i the residue-query weight (``query_BL``).

Same definitions as :func:`allo_lightning.attention.stats.column_stats` (strict ``alpha > theta`` with theta
as a float32), which applies the key masks and sums ``total`` (:func:`.stats.qk_column_stats`). The
probabilities differ from a float32 softmax by float32 rounding (exp(s - lse) instead of exp(s - max) / sum):
``count`` can differ only where alpha is within about 1e-6 of theta. Tested on CPU with Triton's interpreter
(``TRITON_INTERPRET=1``) against a float64 softmax, and on CUDA (tests/test_gpu.py)."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..errors import AlloError

BLOCK_M = 64  # queries per block
BLOCK_N = 64  # keys per block
NUM_WARPS = 4


@triton.jit
def _tile(base, offs, mask, s_l, s_d, offs_d, dmask, UPCAST: tl.constexpr):
    """Rows ``offs`` of one (protein, head)'s q or k [L, D] (0 beyond L and D), upcast to float32 with UPCAST."""
    t = tl.load(base + offs[:, None] * s_l + offs_d[None, :] * s_d, mask=mask[:, None] & dmask[None, :], other=0.0)
    if UPCAST:
        t = t.to(tl.float32)
    return t


@triton.jit
def _scores(q, k, scale, IEEE: tl.constexpr):
    """scale * q k^T of a block of queries and a block of keys, accumulated in float32 (IEEE: not TF32)."""
    if IEEE:
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    return s * scale


@triton.jit
def _real_keys(real_ptr, b, L, offs_n, nmask):
    """The keys of the block that exist (below L) and are real tokens of protein b (not padding)."""
    return nmask & (tl.load(real_ptr + b * L + offs_n, mask=nmask, other=0) != 0)


@triton.jit
def _row_lse(q_ptr, k_ptr, real_ptr, w_ptr, lse_ptr, rows_ptr,
             sq_b, sq_h, sq_l, sq_d, sk_b, sk_h, sk_l, sk_d,
             H, L, D, scale, theta,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
             IEEE: tl.constexpr, UPCAST: tl.constexpr):
    bh = tl.program_id(0)  # (protein, head)
    mb = tl.program_id(1)  # block of queries
    b = bh // H
    h = bh % H
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mmask = offs_m < L
    dmask = offs_d < D
    q_base = q_ptr + b.to(tl.int64) * sq_b + h.to(tl.int64) * sq_h
    k_base = k_ptr + b.to(tl.int64) * sk_b + h.to(tl.int64) * sk_h
    q = _tile(q_base, offs_m, mmask, sq_l, sq_d, offs_d, dmask, UPCAST)
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)  # finite: a fully padded block gives exp(-inf) = 0
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for n0 in tl.range(0, L, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        nmask = offs_n < L
        k = _tile(k_base, offs_n, nmask, sk_l, sk_d, offs_d, dmask, UPCAST)
        s = tl.where(_real_keys(real_ptr, b, L, offs_n, nmask)[None, :], _scores(q, k, scale, IEEE), float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m_i = m_new
    lse = m_i + tl.log(l_i)
    out = bh.to(tl.int64) * L + offs_m
    tl.store(lse_ptr + out, lse, mask=mmask)
    if ROWS:  # per query: its confident real keys (a second sweep, now that lse is known)
        w = tl.load(w_ptr + b * L + offs_m, mask=mmask, other=0.0)
        n_conf = tl.zeros([BLOCK_M], dtype=tl.float32)
        for n0 in tl.range(0, L, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            nmask = offs_n < L
            k = _tile(k_base, offs_n, nmask, sk_l, sk_d, offs_d, dmask, UPCAST)
            p = tl.exp(_scores(q, k, scale, IEEE) - lse[:, None])
            confident = (p > theta) & _real_keys(real_ptr, b, L, offs_n, nmask)[None, :]
            n_conf += tl.sum(tl.where(confident, 1.0, 0.0), axis=1)
        tl.store(rows_ptr + out, n_conf * w, mask=mmask)


@triton.jit
def _column_sums(q_ptr, k_ptr, real_ptr, w_ptr, lse_ptr, received_ptr, count_ptr, mass_ptr,
                 sq_b, sq_h, sq_l, sq_d, sk_b, sk_h, sk_l, sk_d,
                 H, L, D, scale, theta,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
                 UPCAST: tl.constexpr):
    bh = tl.program_id(0)  # (protein, head)
    nb = tl.program_id(1)  # block of keys
    b = bh // H
    h = bh % H
    offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    nmask = offs_n < L
    dmask = offs_d < D
    q_base = q_ptr + b.to(tl.int64) * sq_b + h.to(tl.int64) * sq_h
    k_base = k_ptr + b.to(tl.int64) * sk_b + h.to(tl.int64) * sk_h
    k = _tile(k_base, offs_n, nmask, sk_l, sk_d, offs_d, dmask, UPCAST)
    valid = _real_keys(real_ptr, b, L, offs_n, nmask)
    acc_received = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_count = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_mass = tl.zeros([BLOCK_N], dtype=tl.float32)
    row_base = bh.to(tl.int64) * L
    for m0 in tl.range(0, L, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mmask = offs_m < L
        q = _tile(q_base, offs_m, mmask, sq_l, sq_d, offs_d, dmask, UPCAST)
        lse = tl.load(lse_ptr + row_base + offs_m, mask=mmask, other=0.0)
        w = tl.load(w_ptr + b * L + offs_m, mask=mmask, other=0.0)  # 0 beyond L and at non-residue queries
        p = tl.where(valid[None, :], tl.exp(_scores(q, k, scale, IEEE) - lse[:, None]), 0.0)
        wp = p * w[:, None]
        confident = p > theta
        acc_received += tl.sum(wp, axis=0)
        acc_count += tl.sum(tl.where(confident, w[:, None], 0.0), axis=0)
        acc_mass += tl.sum(tl.where(confident, wp, 0.0), axis=0)
    out = row_base + offs_n
    tl.store(received_ptr + out, acc_received, mask=nmask)
    tl.store(count_ptr + out, acc_count, mask=nmask)
    tl.store(mass_ptr + out, acc_mass, mask=nmask)


def column_sums_qk(q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, query_BL: torch.Tensor, real_BL: torch.Tensor,
                   scale: float, theta: float, rows: bool = False, block_m: int = BLOCK_M, block_n: int = BLOCK_N):
    """``received``, ``count`` (over all keys, padded keys 0) and ``mass`` [B, H, L] float32 of the softmax
    attention softmax(scale * q k^T) with padded keys (``real_BL`` False) masked, residue queries weighted by
    ``query_BL`` (0/1); with ``rows`` also ``row_count`` [B, H, L] (per query, its confident real keys times
    its weight), else None. ``q_BHLD`` / ``k_BHLD``: any strides, float32 / bf16 / fp16 (the same dtype)."""
    if q_BHLD.dtype != k_BHLD.dtype:
        raise AlloError(f"q and k dtypes differ: {q_BHLD.dtype} and {k_BHLD.dtype}")
    B, H, L, D = q_BHLD.shape
    if k_BHLD.shape != (B, H, L, D):
        raise AlloError(f"q {tuple(q_BHLD.shape)} and k {tuple(k_BHLD.shape)}: self-attention shapes differ")
    dev = q_BHLD.device
    real = real_BL.to(device=dev, dtype=torch.int8).contiguous()
    w = query_BL.to(device=dev, dtype=torch.float32).contiguous()
    lse = torch.empty(B, H, L, dtype=torch.float32, device=dev)
    row_count = torch.empty_like(lse) if rows else lse  # (unused pointer without rows)
    received = torch.empty_like(lse)
    count = torch.empty_like(lse)
    mass = torch.empty_like(lse)
    theta32 = float(torch.tensor(theta, dtype=torch.float32))  # theta as a float32, as every kernel compares
    block_d = max(16, triton.next_power_of_2(D))  # tl.dot needs an inner dimension of at least 16
    # Triton's interpreter (CPU tests) gets bf16 x bf16 dots wrong: there the tiles are upcast first (the
    # products of half-precision numbers are exact in float32: the same sums)
    upcast = q_BHLD.dtype != torch.float32 and os.environ.get("TRITON_INTERPRET") == "1"
    ieee = q_BHLD.dtype == torch.float32 or upcast
    strides = (*q_BHLD.stride(), *k_BHLD.stride())
    _row_lse[(B * H, triton.cdiv(L, block_m))](
        q_BHLD, k_BHLD, real, w, lse, row_count, *strides, H, L, D, float(scale), theta32,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, ROWS=rows, IEEE=ieee, UPCAST=upcast, num_warps=NUM_WARPS)
    _column_sums[(B * H, triton.cdiv(L, block_n))](
        q_BHLD, k_BHLD, real, w, lse, received, count, mass, *strides, H, L, D, float(scale), theta32,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, IEEE=ieee, UPCAST=upcast, num_warps=NUM_WARPS)
    return received, count, mass, (row_count if rows else None)
