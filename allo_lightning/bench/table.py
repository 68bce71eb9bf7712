"""Extraction against the plain forward pass over a set of real protein lengths, side by side in one run:

    python -m allo_lightning.bench --table [--device cuda] [--max-tokens 16384] [--residues N]

Random weights of the esmc_600m shape (sharpened attention, as in the rest of the bench) over the bundled
ASD + GPCR proteins up to the context length (their real lengths; ``--residues``: the first proteins up to
about that many residues), in the same token-budget batches for every row:

- ``plain``: the backbone's own forward pass (fp32; bf16 with the model cast);
- ``probs``: the forward pass with the attention probabilities of every layer materialised (the capture
  path, statistics skipped): the floor of any method that looks at the attention;
- ``stats``: :class:`AttentionExtractor` over the same pre-tokenised batches (forward + statistics, no
  Trainer, no cache), per statistics kernel;
- ``extract``: :func:`extract` end to end (``trainer.predict``, batches from the data module, cache
  writes into a fresh folder), fp32 and ``--model.dtype bf16``.

Every row is timed once after a warm-up over a few batches (CUDA context, cuBLAS, torch.compile). The
summary gives ``extract / plain`` and ``extract / probs`` at the same dtype and ``bf16 vs fp32`` end to end.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

from ..errors import Interrupted
from .common import THETA, emit, extract_on, make_backbone, sync


def ratio(a: float, b: float, digits: int) -> str:
    """``a / b`` as ``1.234x``, or ``n/a`` where either row failed (was ``nanx``)."""
    return f"{a / b:.{digits}f}x" if a == a and b == b and b > 0 else "n/a"


def secs(a: float) -> str:
    return f"{a:.2f} s" if a == a else "failed"


def table_proteins(max_length: int = 2048, residues: int | None = None):
    from ..data import bundled_path, read_proteins

    proteins, seen = [], set()
    for name in ("asd", "gpcr"):
        for p in read_proteins(bundled_path(name)):
            if p.length <= max_length and p.sequence not in seen:
                seen.add(p.sequence)
                proteins.append(p)
    if residues:
        kept, n = [], 0
        for p in proteins:
            if n >= residues:
                break
            kept.append(p)
            n += p.length
        proteins = kept
    return proteins


def run_table(device: torch.device, max_tokens: int = 16384, residues: int | None = None,
              shape: str = "esmc_600m", kernels: tuple[str, ...] | None = None, repeats: int = 1) -> dict:
    from ..attention import AttentionExtractor
    from ..attention.stats import stats_kernel
    from ..data.batching import token_budget_batches

    proteins = table_proteins(residues=residues)
    lengths = [p.length for p in proteins]
    n_res = sum(lengths)
    if not kernels:
        kernels = (stats_kernel(device), "fused", "triton") if device.type == "cuda" else (stats_kernel(device),)
    kernels = tuple(dict.fromkeys(kernels))
    backbone = make_backbone(shape, device)
    batches = token_budget_batches(lengths, max_tokens, True, n_special=backbone.alphabet.n_special)
    tok = [tuple(t.to(device) for t in backbone.alphabet.tokenize([proteins[i].sequence for i in b])) for b in batches]
    lens = [[proteins[i].length for i in b] for b in batches]
    accel = {"cuda": "gpu", "mps": "mps"}.get(device.type, "cpu")
    trainer_kwargs = {"accelerator": accel, "devices": 1, "enable_progress_bar": False, "enable_model_summary": False}
    emit(f"table: {shape} shape (random weights, sharpened attention), {len(proteins)} proteins of the bundled "
         f"ASD + GPCR sets, {n_res:,} residues, max_tokens={max_tokens} ({len(batches)} batches), theta={THETA}, "
         f"device {device}, torch {torch.__version__}; best of {repeats}")
    warm = sorted({0, len(batches) // 2, len(batches) - 1})
    results: dict[str, float] = {}

    def timed(label: str, fn, warm_fn=None) -> float:
        try:
            if warm_fn is not None:
                warm_fn()
            best = float("inf")
            for _ in range(repeats):
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                best = min(best, time.perf_counter() - t0)
        except Interrupted:  # a signal stops the whole table (its summary would time nothing)
            raise
        except Exception as e:  # noqa: BLE001 - one failed row must not lose the others
            emit(f"  {label:44s} FAILED: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
            return float("nan")
        results[label] = best
        emit(f"  {label:44s}{best:9.2f} s {n_res / best:12,.0f} residues/s")
        return best

    def over(fn, which=None):
        return lambda: [fn(*tok[k], lens[k]) for k in (which if which is not None else range(len(tok)))]

    def noop(_layer, _probs):
        return None

    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        backbone.to(dtype)
        plain = over(lambda t, r, _n: backbone(t, r))
        timed(f"plain forward {dtype_name}", plain, over(lambda t, r, _n: backbone(t, r), warm))
        probs = over(lambda t, r, _n: backbone(t, r, noop, reuse_probs=True))
        timed(f"forward + probabilities {dtype_name}", probs,
              over(lambda t, r, _n: backbone(t, r, noop, reuse_probs=True), warm))
        backbone.to(torch.float32)
        for kernel in kernels:
            os.environ["ALLO_LIGHTNING_STATS_KERNEL"] = kernel
            ext = AttentionExtractor(backbone, THETA, dtype=dtype_name)
            ext.to(device)

            def start(ext=ext):
                ext.on_predict_start()  # casts the backbone for bf16, as trainer.predict does
                over(lambda t, r, n: ext(t, r, n), warm)()

            try:
                timed(f"forward + statistics {dtype_name} [{kernel}]", over(lambda t, r, n, ext=ext: ext(t, r, n)),
                      start)
            finally:
                ext.on_predict_end()
            with tempfile.TemporaryDirectory(prefix="allo_table_") as tmp:
                counter = iter(range(1000))

                def e2e(tmp=tmp, dtype_name=dtype_name, counter=counter):
                    extract_on(device, backbone, proteins, THETA, f"{tmp}/{next(counter)}", trainer_kwargs,
                               max_tokens=max_tokens, dtype=dtype_name)

                def e2e_warm(tmp=tmp, dtype_name=dtype_name):
                    extract_on(device, backbone, [proteins[i] for k in warm for i in batches[k]], THETA,
                               f"{tmp}/warm", trainer_kwargs, max_tokens=max_tokens, dtype=dtype_name)

                timed(f"extract {dtype_name} [{kernel}]", e2e, e2e_warm)
        os.environ.pop("ALLO_LIGHTNING_STATS_KERNEL", None)

    emit("summary (same batches, same dtype):")
    for dtype_name in ("fp32", "bf16"):
        for kernel in kernels:
            e = results.get(f"extract {dtype_name} [{kernel}]", float("nan"))
            s = results.get(f"forward + statistics {dtype_name} [{kernel}]", float("nan"))
            p = results.get(f"plain forward {dtype_name}", float("nan"))
            q = results.get(f"forward + probabilities {dtype_name}", float("nan"))
            emit(f"  {dtype_name} [{kernel}]: extract / plain {ratio(e, p, 3)}, extract / probs {ratio(e, q, 3)}, "
                 f"statistics / plain {ratio(s, p, 3)}, statistics / probs {ratio(s, q, 3)}")
    for kernel in kernels:
        a = results.get(f"extract fp32 [{kernel}]", float("nan"))
        b = results.get(f"extract bf16 [{kernel}]", float("nan"))
        emit(f"  bf16 vs fp32 end to end [{kernel}]: {ratio(a, b, 2)} (extract fp32 {secs(a)}, bf16 {secs(b)})")
    return results
