"""Per-head, per-residue attention statistics.

Everything downstream (head scores, probe features) needs only column statistics of each head's
attention map: how much (confident) attention each residue *receives*. They are computed layer by
layer from the attention probabilities and the L x L maps are dropped at once.

Conventions (shared by every function here and by the reference implementation in the tests):
- queries i and keys j that count are *residues*: BOS, EOS and padding are excluded on both sides,
  except for ``total``, whose keys are all real tokens (BOS/EOS included);
- ``theta`` is the confidence threshold: attention alpha_ij is confident when alpha_ij > theta.

Per protein of length L (residues), with layers x heads = Ly x H:
- ``received`` [Ly, H, L]: sum_i alpha_ij
- ``count``    [Ly, H, L]: sum_i 1[alpha_ij > theta]
- ``mass``     [Ly, H, L]: sum_i alpha_ij 1[alpha_ij > theta]
- ``total``    [Ly, H]:    sum_i sum_{j real token} 1[alpha_ij > theta]
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field

import torch

from ..errors import AlloError

STAT_NAMES = ("received", "count", "mass")


@dataclass
class ProteinStats:
    """Attention statistics of one protein (CPU tensors, float32)."""

    received: torch.Tensor  # [Ly, H, L]
    count: torch.Tensor  # [Ly, H, L]
    mass: torch.Tensor  # [Ly, H, L]
    total: torch.Tensor  # [Ly, H]
    maps: torch.Tensor | None = None  # [K, L, L] for ``map_heads``
    map_heads: list[tuple[int, int]] = field(default_factory=list)
    embedding: torch.Tensor | None = None  # [L, D] final-layer hidden states (or those of ``embedding_layer``)
    hidden: dict | None = None  # {layer: [L, D]} hidden states of chosen layers, attached by callers (report)
    # partial statistics (early exit): only these heads were computed; the tensors cover layers
    # 0..deepest and every other head is NaN (never a silent zero). None: every head of every layer.
    heads: list[tuple[int, int]] | None = None
    windows: int = 1  # > 1: a protein longer than the context, stitched from this many windows

    @property
    def windowed(self) -> bool:
        return self.windows > 1

    @property
    def partial(self) -> bool:
        return self.heads is not None

    @property
    def length(self) -> int:
        return int(self.received.shape[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.received.shape[0]), int(self.received.shape[1])

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"received": self.received, "count": self.count, "mass": self.mass, "total": self.total}
        return out


# How a layer's statistics are reduced (``ALLO_LIGHTNING_STATS_KERNEL``, default ``auto``):
# - ``chunked``: query rows in chunks of about CHUNK_ELEMENTS ([B, H, rows, L]): the thresholded temporary
#   stays in cache and small whatever the length (4 MiB of float32). Right on a CPU (``auto`` there).
# - ``fused``: the same operations, with chunks as large as the device's memory budget
#   (:func:`scratch_elements`): on a GPU usually the whole layer at once, a handful of kernels for all heads
#   instead of tens of thousands of tiny ones (``auto`` on MPS; on CUDA where Triton is missing or fails).
# - ``compiled``: one ``torch.compile``d pass that reads the probabilities once and reduces all three column
#   statistics together (no [B, H, L, L] temporary); on request only (measured slower than ``fused`` on an
#   H200); falls back to ``fused`` with a warning if compiling fails (no compiler, no Triton).
# - ``triton``: a hand-written Triton kernel doing the same in one read (:mod:`.triton_stats`); ``auto`` on
#   CUDA (faster than ``fused`` on an H200 in fp32 and bf16);
#   ``fused`` with a warning where Triton is missing or fails, and for ``rows=True`` (windows).
# - ``flash``: on request only (not yet measured on a GPU): the statistics straight from q and k in two Triton
#   kernels (:mod:`.flash_stats`, :func:`qk_column_stats`), flash-attention style: the extractor then never
#   materialises the probabilities and the model's own (fused) attention makes the layer's output. Where it
#   cannot run (no CUDA, no Triton, a failing kernel) the probability path with ``triton`` / ``fused``, with a
#   warning. Given probabilities (:func:`column_stats`), ``flash`` means ``triton`` on CUDA, ``chunked`` on CPU.
CHUNK_ELEMENTS = 1 << 20
KERNELS = ("auto", "chunked", "fused", "compiled", "triton", "flash")
# a device's scratch for one chunk: this fraction of its free memory, between these bounds (elements)
SCRATCH_FRACTION = 0.25
DEVICE_MIN_SCRATCH = 1 << 24  # 64 MiB of float32
DEVICE_MAX_SCRATCH = 1 << 30  # 4 GiB of float32
MPS_SCRATCH = 1 << 26  # 256 MiB: MPS reports no free memory


def stats_kernel(device: torch.device | str) -> str:
    """The reduction used on ``device``: ``ALLO_LIGHTNING_STATS_KERNEL`` when set (chunked, fused,
    compiled, triton, flash), else ``chunked`` on CPU, ``triton`` on CUDA (``fused`` where Triton is missing or
    fails) and ``fused`` on MPS. Measured on an H200 (80k residues, esmc_600m shape, forward + statistics):
    triton 4.03 s / fused 4.25 s in fp32, 1.87 s / 2.05 s in bf16; the compiled pass was slower than
    ``fused`` (5.26 s against 4.50 s for 100k residues, fp32)."""
    choice = os.environ.get("ALLO_LIGHTNING_STATS_KERNEL", "auto").strip().lower() or "auto"
    if choice not in KERNELS:
        raise AlloError(f"ALLO_LIGHTNING_STATS_KERNEL={choice!r}: choose one of {', '.join(KERNELS)}.")
    if choice != "auto":
        return choice
    kind = torch.device(device).type
    return "chunked" if kind == "cpu" else "triton" if kind == "cuda" else "fused"


def scratch_elements(device: torch.device | str) -> int:
    """Elements of float32 scratch one chunk of the ``fused`` kernel may use on ``device``: on CUDA a
    quarter of the free memory (the driver's free memory plus what torch's allocator holds unused),
    between 64 MiB and 4 GiB; 256 MiB on MPS; 64 MiB on a CPU (where ``chunked`` is the default)."""
    device = torch.device(device)
    if device.type == "cpu":
        return DEVICE_MIN_SCRATCH
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(min(DEVICE_MAX_SCRATCH, max(DEVICE_MIN_SCRATCH, free * SCRATCH_FRACTION // 4)))
    return MPS_SCRATCH


def column_stats(
    probs_BHLL: torch.Tensor, residue_BL: torch.Tensor, real_BL: torch.Tensor, theta: float, rows: bool = False,
    kernel: str | None = None,
) -> dict[str, torch.Tensor]:
    """Column statistics of one layer's attention probabilities for a padded batch.

    ``probs_BHLL``: softmax attention [B, H, L, L] (query, key); ``residue_BL``: True at residue
    tokens; ``real_BL``: True at every real token (residues, BOS, EOS). Returns float32 tensors
    ``received``/``count``/``mass`` of shape [B, H, L] (zero at non-residue keys) and ``total`` [B, H].

    The input is not modified. ``kernel`` (default :func:`stats_kernel` of the input's device):
    ``chunked`` / ``fused`` reduce query rows chunk by chunk (small chunks / as large as the device's
    memory budget): per chunk one batched matrix-vector product with the residue-query mask gives
    ``received``; one thresholded copy (``alpha if alpha > theta else 0``) gives ``mass`` the same way
    and, turned into its sign in place, ``count``. ``compiled``: one compiled pass computing the same
    sums (see :func:`_one_pass`). No per-layer host synchronisation. Confident means strictly
    ``alpha > theta`` with theta as a float32, in every kernel.

    ``rows=True`` adds ``row_count`` [B, H, L]: per residue query i, the number of real keys j with
    alpha_ij > theta (zero at non-residue queries); ``total`` is its sum. Windowed extraction needs it
    to take each query's share of ``total`` from the window where that query is most central.
    """
    if theta < 0:  # the sign trick needs alpha > theta >= 0 for every confident entry
        out = _column_stats_dense(probs_BHLL, residue_BL, real_BL, theta)
        if rows:
            query = residue_BL[:, None, :].to(out["total"].dtype)
            out["row_count"] = (probs_BHLL.float() > theta).sum(-1, dtype=torch.float32) * query
        return out
    kernel = kernel or stats_kernel(probs_BHLL.device)
    if kernel not in KERNELS[1:]:
        raise AlloError(f"kernel {kernel!r}: choose one of {', '.join(KERNELS[1:])}.")
    if kernel == "flash":  # it works from q and k (:func:`qk_column_stats`); from probabilities: the device's
        kernel = {"cuda": "triton", "cpu": "chunked"}.get(probs_BHLL.device.type, "fused")
    probs = probs_BHLL.float()
    query_BL = residue_BL.to(device=probs.device, dtype=torch.float32)
    key_B1L = residue_BL[:, None, :].to(device=probs.device, dtype=torch.float32)
    real_B1L = real_BL[:, None, :].to(device=probs.device, dtype=torch.float32)
    if kernel == "triton":
        got = None if rows else _triton_sums(probs, query_BL, theta)
        if got is not None:
            received, count_all, mass = got
            return {"received": received * key_B1L, "count": count_all * key_B1L, "mass": mass * key_B1L,
                    "total": (count_all * real_B1L).sum(dim=-1)}
        kernel = "fused"
    if kernel == "compiled":
        got = _compiled_sums(probs, query_BL, theta, rows)
        if got is not None:
            received, count_all, mass, row_count = got
            out = {"received": received * key_B1L, "count": count_all * key_B1L, "mass": mass * key_B1L,
                   "total": (count_all * real_B1L).sum(dim=-1)}
            if rows:
                out["row_count"] = row_count
            return out
        kernel = "fused"
    B, H, Lq, Lk = probs.shape
    received = torch.zeros(B, H, 1, Lk, device=probs.device)
    count = torch.zeros_like(received)
    mass = torch.zeros_like(received)
    row_count = torch.zeros(B, H, Lq, device=probs.device) if rows else None
    budget = CHUNK_ELEMENTS if kernel == "chunked" else scratch_elements(probs.device)
    chunk = max(1, min(Lq, budget // max(1, B * H * Lk)))
    for i0 in range(0, Lq, chunk):
        p_BHcL = probs[:, :, i0 : i0 + chunk]
        w_B11c = query_BL[:, None, None, i0 : i0 + chunk]
        received += torch.matmul(w_B11c, p_BHcL)
        confident = torch.nn.functional.threshold(p_BHcL, theta, 0.0)
        mass += torch.matmul(w_B11c, confident)
        count += torch.matmul(w_B11c, confident.sign_())
        if row_count is not None:  # padded keys have alpha = 0 exactly: never confident
            row_count[:, :, i0 : i0 + chunk] = confident.sum(-1) * w_B11c[:, :, 0]
    count_all = count[:, :, 0]
    out = {
        "received": received[:, :, 0] * key_B1L,
        "count": count_all * key_B1L,
        "mass": mass[:, :, 0] * key_B1L,
        "total": (count_all * real_B1L).sum(dim=-1),
    }
    if row_count is not None:
        out["row_count"] = row_count
    return out


def _one_pass(probs_BHLL: torch.Tensor, query_BL: torch.Tensor, theta_t: torch.Tensor, rows: bool):
    """The column sums of :func:`column_stats` written as one expression over the whole map, for
    ``torch.compile`` to turn into a single reduction that reads the probabilities once: per key j,
    sum_i w_i alpha_ij, sum_i w_i 1[alpha_ij > theta], sum_i w_i alpha_ij 1[alpha_ij > theta] (w: residue
    queries); ``rows``: per query i, w_i sum_j 1[alpha_ij > theta]. ``theta_t`` is a float32 scalar tensor
    (compared in float32 like the eager kernels; one compiled graph for every theta)."""
    w_B1L1 = query_BL[:, None, :, None]
    confident = probs_BHLL > theta_t
    weighted = probs_BHLL * w_B1L1
    received = weighted.sum(dim=2)
    count = torch.where(confident, w_B1L1, 0.0).sum(dim=2)
    mass = torch.where(confident, weighted, 0.0).sum(dim=2)
    row_count = confident.sum(dim=-1, dtype=torch.float32) * query_BL[:, None, :] if rows else None
    return received, count, mass, row_count


_TRITON_FAILED = False


def _triton_sums(probs: torch.Tensor, query_BL: torch.Tensor, theta: float):
    """:func:`.triton_stats.column_sums`, or None (and a warning, once per process) where Triton is missing
    or its kernel fails (then ``fused`` is used)."""
    global _TRITON_FAILED
    if _TRITON_FAILED:
        return None
    try:
        from .triton_stats import column_sums

        return column_sums(probs, query_BL, theta)
    except Exception as e:  # noqa: BLE001 - a missing or failing Triton: the eager kernel gives the same sums
        _TRITON_FAILED = True
        warnings.warn(f"attention statistics: the Triton kernel failed ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200] if str(e) else ''}); using the eager fused kernel.",
                      RuntimeWarning, stacklevel=3)
        return None


_FLASH_FAILED = False
_FLASH_WARNED = False


def _flash_warn(reason: str) -> None:
    global _FLASH_WARNED
    if not _FLASH_WARNED:
        _FLASH_WARNED = True
        warnings.warn(f"attention statistics: the flash kernel cannot run ({reason}); computing the "
                      "probabilities and reducing them instead.", RuntimeWarning, stacklevel=3)


def flash_usable(device: torch.device | str) -> bool:
    """Whether :func:`qk_column_stats` can run its Triton kernels on ``device``: CUDA with Triton installed
    (or a CPU under Triton's interpreter, ``TRITON_INTERPRET=1``: tests) and no earlier failure in this
    process. False (and one warning per process) otherwise: the caller then takes the probability path."""
    kind = torch.device(device).type
    if _FLASH_FAILED:
        return False
    if not (kind == "cuda" or (kind == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")):
        _flash_warn(f"it needs CUDA, not {kind}")
        return False
    try:
        from . import flash_stats  # noqa: F401
    except Exception as e:  # noqa: BLE001 - no Triton (or a broken one): the probability path
        _flash_warn(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        return False
    return True


def qk_probs(q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, real_BL: torch.Tensor, scale: float) -> torch.Tensor:
    """float32 softmax(scale * q k^T) [B, H, L, L] with padded keys (``real_BL`` False) exactly 0: the
    probabilities the flash kernel never writes (for map heads, and the fallback where it fails)."""
    scores = torch.matmul(q_BHLD.float() * scale, k_BHLD.float().transpose(-1, -2))
    scores.masked_fill_(~real_BL[:, None, None, :].to(scores.device), torch.finfo(torch.float32).min)
    return torch.softmax(scores, dim=-1, out=scores)


def qk_column_stats(
    q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, residue_BL: torch.Tensor, real_BL: torch.Tensor, scale: float,
    theta: float, rows: bool = False,
) -> dict[str, torch.Tensor]:
    """:func:`column_stats` of softmax(scale * q k^T) (padded keys masked), computed from q and k [B, H, L, D]
    (rotary applied, any dtype) by the flash kernel (:mod:`.flash_stats`) without materialising the
    probabilities. Where the kernel fails: a warning (once per process), then the probabilities are computed
    (:func:`qk_probs`) and reduced by :func:`column_stats` (``fused``); check :func:`flash_usable` first."""
    global _FLASH_FAILED
    if not _FLASH_FAILED:
        try:
            from .flash_stats import column_sums_qk

            received, count_all, mass, row_count = column_sums_qk(
                q_BHLD, k_BHLD, residue_BL, real_BL, scale, theta, rows)
        except Exception as e:  # noqa: BLE001 - a failing kernel: the probability path gives the same sums
            _FLASH_FAILED = True
            _flash_warn(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        else:
            key_B1L = residue_BL[:, None, :].to(device=received.device, dtype=torch.float32)
            real_B1L = real_BL[:, None, :].to(device=received.device, dtype=torch.float32)
            out = {"received": received * key_B1L, "count": count_all * key_B1L, "mass": mass * key_B1L,
                   "total": (count_all * real_B1L).sum(dim=-1)}
            if rows:
                out["row_count"] = row_count
            return out
    return column_stats(qk_probs(q_BHLD, k_BHLD, real_BL, scale), residue_BL, real_BL, theta, rows,
                        kernel="chunked" if q_BHLD.device.type == "cpu" else "fused")


_COMPILED: dict[bool, object] = {}
_THETAS: dict[tuple[str, float], torch.Tensor] = {}
_COMPILE_FAILED = False


def _compiled_sums(probs: torch.Tensor, query_BL: torch.Tensor, theta: float, rows: bool):
    """:func:`_one_pass` compiled (dynamic shapes: one compilation for every batch shape), or None (and
    a warning, once per process) when compiling or running the compiled code fails."""
    global _COMPILE_FAILED
    if _COMPILE_FAILED:
        return None
    key = (str(probs.device), float(theta))
    theta_t = _THETAS.get(key)
    if theta_t is None:  # once per device and theta: a host-to-device copy per layer would wait for the device
        theta_t = _THETAS[key] = torch.tensor(theta, dtype=torch.float32, device=probs.device)
    try:
        fn = _COMPILED.get(rows)
        if fn is None:
            fn = _COMPILED[rows] = torch.compile(functools.partial(_one_pass, rows=rows), dynamic=True)
        return fn(probs, query_BL, theta_t)
    except Exception as e:  # noqa: BLE001 - any compiler failure: the eager kernel gives the same sums
        _COMPILE_FAILED = True
        warnings.warn(f"attention statistics: torch.compile failed ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200] if str(e) else ''}); using the eager fused kernel "
                      "(set ALLO_LIGHTNING_STATS_KERNEL=fused to skip compiling).", RuntimeWarning, stacklevel=3)
        return None


def _column_stats_dense(
    probs_BHLL: torch.Tensor, residue_BL: torch.Tensor, real_BL: torch.Tensor, theta: float
) -> dict[str, torch.Tensor]:
    """Same as :func:`column_stats` with whole-map temporaries (any theta)."""
    probs = probs_BHLL.float()
    query_B1L1 = residue_BL[:, None, :, None].to(probs.dtype)
    key_B11L = residue_BL[:, None, None, :].to(probs.dtype)
    p = probs * query_B1L1  # only residue queries count
    confident = p > theta
    conf_p = torch.where(confident, p, torch.zeros((), dtype=p.dtype, device=p.device))
    count_all_BHL = confident.sum(dim=-2, dtype=torch.float32)
    real_B1L = real_BL[:, None, :].to(probs.dtype)
    return {
        "received": p.sum(dim=-2) * key_B11L[:, :, 0, :],
        "count": count_all_BHL * key_B11L[:, :, 0, :],
        "mass": conf_p.sum(dim=-2) * key_B11L[:, :, 0, :],
        "total": (count_all_BHL * real_B1L).sum(dim=-1),
    }


def reference_stats(maps_LyHLL: torch.Tensor, theta: float) -> dict[str, torch.Tensor]:
    """Plain reference: statistics from one protein's full maps over ALL tokens (BOS + L residues +
    EOS), shape [Ly, H, L+2, L+2]. Written as loops over layers/heads/queries on purpose: it is the
    slow, obvious computation the streaming version is tested against."""
    n_layers, n_heads, n_tok, _ = maps_LyHLL.shape
    L = n_tok - 2
    received = torch.zeros(n_layers, n_heads, L)
    count = torch.zeros(n_layers, n_heads, L)
    mass = torch.zeros(n_layers, n_heads, L)
    total = torch.zeros(n_layers, n_heads)
    for ly in range(n_layers):
        for h in range(n_heads):
            for i in range(1, L + 1):
                row = maps_LyHLL[ly, h, i].double()
                total[ly, h] += float((row > theta).sum())
                res = row[1 : L + 1]
                received[ly, h] += res.float()
                count[ly, h] += (res > theta).float()
                mass[ly, h] += (res * (res > theta)).float()
    return {"received": received, "count": count, "mass": mass, "total": total}
