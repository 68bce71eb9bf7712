"""The column statistics of one layer in a single Triton kernel (``ALLO_LIGHTNING_STATS_KERNEL=triton``):
each program reads a [queries x 128 keys] strip of one head's probabilities once, coalesced along the keys,
and accumulates ``received``, ``count`` and ``mass`` of those keys in float32 registers: one read of the
probabilities instead of the ``fused`` kernel's five passes. Same definitions as
:func:`allo_lightning.attention.stats.column_stats` (strict ``alpha > theta`` with theta as a float32; residue
queries only, weighted by ``query_BL``). Tested on CPU with Triton's interpreter (``TRITON_INTERPRET=1``) and on
CUDA against the CPU kernel (tests/test_gpu.py)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_Q = 32
BLOCK_K = 128


@triton.jit
def _column_sums(p_ptr, w_ptr, received_ptr, count_ptr, mass_ptr, H, Lq, Lk, theta,
                 BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr):
    bh = tl.program_id(0)  # (protein, head)
    kb = tl.program_id(1)  # block of keys
    b = bh // H
    offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = offs_k < Lk
    acc_received = tl.zeros([BLOCK_K], dtype=tl.float32)
    acc_count = tl.zeros([BLOCK_K], dtype=tl.float32)
    acc_mass = tl.zeros([BLOCK_K], dtype=tl.float32)
    base = p_ptr + bh.to(tl.int64) * Lq * Lk
    for q0 in tl.range(0, Lq, BLOCK_Q):
        offs_q = q0 + tl.arange(0, BLOCK_Q)
        qmask = offs_q < Lq
        w = tl.load(w_ptr + b * Lq + offs_q, mask=qmask, other=0.0)
        x = tl.load(base + offs_q[:, None] * Lk + offs_k[None, :], mask=qmask[:, None] & kmask[None, :], other=0.0)
        wx = x * w[:, None]
        confident = x > theta
        acc_received += tl.sum(wx, axis=0)
        acc_count += tl.sum(tl.where(confident, w[:, None], 0.0), axis=0)
        acc_mass += tl.sum(tl.where(confident, wx, 0.0), axis=0)
    out = bh.to(tl.int64) * Lk + offs_k
    tl.store(received_ptr + out, acc_received, mask=kmask)
    tl.store(count_ptr + out, acc_count, mask=kmask)
    tl.store(mass_ptr + out, acc_mass, mask=kmask)


def column_sums(probs_BHLL: torch.Tensor, query_BL: torch.Tensor, theta: float):
    """``received``, ``count`` (over all keys) and ``mass`` [B, H, L] of float32 probabilities, residue
    queries weighted by ``query_BL`` (float32 0/1)."""
    probs = probs_BHLL if probs_BHLL.is_contiguous() else probs_BHLL.contiguous()
    w = query_BL.to(torch.float32).contiguous()
    B, H, Lq, Lk = probs.shape
    received = torch.empty(B, H, Lk, dtype=torch.float32, device=probs.device)
    count = torch.empty_like(received)
    mass = torch.empty_like(received)
    theta32 = float(torch.tensor(theta, dtype=torch.float32))  # the float32 theta, passed as fp32 to the kernel
    grid = (B * H, triton.cdiv(Lk, BLOCK_K))
    _column_sums[grid](probs, w, received, count, mass, H, Lq, Lk, theta32, BLOCK_Q=BLOCK_Q, BLOCK_K=BLOCK_K)
    return received, count, mass
