"""Inference benchmarks: early-exit predict against a full extraction, fp32 against bf16, peak memory
of loading + predict, and ESM-2 against transformers' ``output_attentions=True``.

    python -m allo_lightning.bench --predict [--quick] [--bf16] [--clock cpu --threads 1]
    python -m allo_lightning.bench --vs-transformers

``--predict``: per model shape (esmc_300m, esmc_600m; ``--quick``: esmc_300m) and length, the
statistics of a probe's heads sitting in a shallow (n_layers // 6), the middle and the last layer,
computed with early exit (the backbone stops after that layer, statistics of those heads only),
against a full extraction (every layer, every head). Ideal: ``predict / full = depth fraction``
((layer + 1) / n_layers). Fixed costs that do not shrink with depth: the embedding and, in the full
run only, the final norm and ESM-C's sequence head (so the ratio can fall below the depth fraction),
plus the statistics of all heads (full) against a few (predict). The last line is the case with the
largest ratio / depth fraction: ``predict_vs_full=<ratio>x  depth_fraction=<needed layers / all>``.
Then, per shape, the peak resident memory of a fresh process that loads the backbone from a bf16
state dict (random weights of the real shape, as ESM-C's files are bf16) and predicts one
1000-residue protein, against the fp32 parameter bytes (and the old way: random init + a full
``torch.load`` + ``load_state_dict`` copy).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .common import THETA, Timing, best, emit, labels_of, make_backbone, random_protein, status_kb, sync

log = logging.getLogger(__name__)

PREDICT_SHAPES = ["esmc_300m", "esmc_600m"]


def _timed(fn, times: list[Timing], device: torch.device | None = None):
    """Time ``fn()`` (on a GPU: from an idle device until its queued work is done)."""

    if device is not None:
        sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if device is not None:
        sync(device)
    times.append(Timing(time.perf_counter() - w0, time.process_time() - c0))
    return out


def _val(t: Timing, clock: str) -> float:
    return t.cpu if clock == "cpu" else t.wall


def cases(n_layers: int, n_heads: int) -> dict[str, list[tuple[int, int]]]:
    """A probe's heads in one layer: shallow, middle, last (three heads each)."""
    out = {}
    for label, layer in (("shallow", n_layers // 6), ("middle", n_layers // 2), ("last", n_layers - 1)):
        out[f"{label} L{layer}"] = [(layer, 0), (layer, n_heads // 2), (layer, n_heads - 1)]
    return out


def run_predict(device: torch.device, quick: bool, clock: str, shapes=None, lengths=None, repeats: int = 3,
                bf16: bool = False) -> None:
    from ..attention import AttentionExtractor

    shapes = shapes or (["esmc_300m"] if quick else PREDICT_SHAPES)
    lengths = lengths or [400]
    rows = []
    for shape in shapes:
        bb = make_backbone(shape, device)
        Ly, H = bb.n_layers, bb.n_heads
        for length in lengths:
            protein = random_protein(length, seed=length)
            tokens, real = (t.to(device) for t in bb.alphabet.tokenize([protein.sequence]))
            full = AttentionExtractor(bb, THETA).to(device)
            mods = {name: AttentionExtractor(bb, THETA, heads=heads).to(device) for name, heads in cases(Ly, H).items()}
            times: dict[str, list[Timing]] = {"plain": [], "full": [], **{k: [] for k in mods}}
            bb(tokens, real)
            full(tokens, real, [length])  # warm-up
            args = (tokens, real, [length])
            for _ in range(repeats):
                _timed(lambda bb=bb, a=args: bb(*a[:2]), times["plain"], device)
                _timed(lambda full=full, a=args: full(*a), times["full"], device)
                for name, m in mods.items():
                    _timed(lambda m=m, a=args: m(*a), times[name], device)
            b = {k: best(v) for k, v in times.items()}
            emit(f"\n{shape} ({Ly} layers x {H} heads)  L={length}  best of {repeats}")
            emit(f"  {'':16s}{'seconds':>10s}{'cpu s':>10s}{'vs full':>10s}{'depth':>8s}{'ratio/depth':>13s}")
            for k in ("plain", "full"):
                emit(f"  {k:16s}{b[k].wall:10.3f}{b[k].cpu:10.3f}{_val(b[k], clock) / _val(b['full'], clock):10.3f}")
            for name, heads in cases(Ly, H).items():
                ratio = _val(b[name], clock) / _val(b["full"], clock)
                depth = (heads[0][0] + 1) / Ly
                rows.append((shape, length, name, ratio, depth))
                emit(f"  {'predict ' + name:16s}{b[name].wall:10.3f}{b[name].cpu:10.3f}{ratio:10.3f}{depth:8.3f}"
                     f"{ratio / depth:13.3f}")
        if bf16:
            run_bf16(bb, device, 400, clock)
    for shape in shapes:
        run_memory(shape, 1000, device, compare_old=not quick)
    worst = max(rows, key=lambda r: r[3] / r[4])
    emit(f"\nworst case (largest ratio / depth fraction): {worst[0]} L={worst[1]} heads in {worst[2]}")
    emit(f"predict_vs_full={worst[3]:.3f}x  depth_fraction={worst[4]:.3f}")


# -- bf16 ------------------------------------------------------------------------------------------------
def _ranks(x: torch.Tensor) -> torch.Tensor:
    r = torch.empty_like(x, dtype=torch.float64)
    r[torch.argsort(x)] = torch.arange(len(x), dtype=torch.float64)
    return r


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ok = torch.isfinite(a) & torch.isfinite(b)
    ra, rb = _ranks(a[ok]), _ranks(b[ok])
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def run_bf16(bb, device: torch.device, length: int, clock: str, repeats: int = 2,
             n_proteins: int | None = None) -> dict:
    """fp32 vs bf16: time of a full extraction of a batch of ``n_proteins`` proteins of ``length``
    residues (default: 1 on a CPU; 32 on a GPU, where one protein only measures kernel launches), the
    share of the (query, key) pairs confident (alpha > theta) in fp32 or in bf16 (all layers and heads
    of the first protein) that are confident in only one of them, the rank correlation of the head scores (p_alpha, the
    batch with its random sites) and the overlap of the top-10 heads."""
    from ..analysis import score_heads
    from ..attention import AttentionExtractor, cpu_bf16_supported

    if n_proteins is None:
        n_proteins = 1 if device.type == "cpu" else 32
    proteins = [random_protein(length, seed=length + 1 + k, pid=f"B{k}") for k in range(n_proteins)]
    tokens, real = (t.to(device) for t in bb.alphabet.tokenize([p.sequence for p in proteins]))
    lengths = [p.length for p in proteins]
    ys = [labels_of(p) for p in proteins]
    first_tokens, first_real = tokens[:1], real[:1]
    masks: dict[int, torch.Tensor] = {}
    bb(first_tokens, first_real, lambda ly, p: masks.__setitem__(ly, p[0] > THETA))
    ext = AttentionExtractor(bb, THETA)
    res: dict[str, list[Timing]] = {"fp32": [], "bf16": []}
    stats = {}

    def run():
        return ext(tokens, real, lengths)

    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        bb.to(dtype)
        run()  # warm-up
        for _ in range(repeats):
            stats[name] = _timed(run, res[name], device)
    flips, confident = 0, 0  # pairs on different sides of theta; pairs confident in fp32 or in bf16

    def compare(ly: int, p: torch.Tensor) -> None:
        nonlocal flips, confident
        m = p[0] > THETA
        flips += int((m ^ masks[ly]).sum())
        confident += int((m | masks[ly]).sum())

    bb(first_tokens, first_real, compare)
    bb.to(torch.float32)
    Ly, H = bb.n_layers, bb.n_heads
    scores = {k: score_heads(list(zip(s, ys)), Ly, H, 10, 0)["p_alpha"].reshape(-1).double()
              for k, s in stats.items()}
    rho = spearman(scores["fp32"], scores["bf16"])
    top = {k: set(torch.argsort(torch.nan_to_num(v, nan=-1.0), descending=True)[:10].tolist())
           for k, v in scores.items()}
    overlap = len(top["fp32"] & top["bf16"])
    t32, t16 = best(res["fp32"]), best(res["bf16"])
    native = device.type == "cuda" or (device.type == "cpu" and cpu_bf16_supported())
    how = "native" if native else "EMULATED: this CPU has no bf16 instructions"
    speedup = _val(t32, clock) / _val(t16, clock)
    emit(f"  bf16 vs fp32 ({bb.name}, {n_proteins} x L={length} in one batch, full extraction; bf16 {how}):"
         f" fp32 {t32.wall:.3f} s (cpu {t32.cpu:.3f}), bf16 {t16.wall:.3f} s (cpu {t16.cpu:.3f}), "
         f"speed-up {speedup:.2f}x; {n_proteins * length / t32.wall:,.0f} / {n_proteins * length / t16.wall:,.0f} "
         "residues/s")
    emit(f"    pairs confident in only one of fp32 / bf16 (theta={THETA}), share of the pairs confident in either: "
         f"{flips / max(confident, 1):.2%} ({flips} of {confident}); "
         f"head-score rank correlation (Spearman, p_alpha) {rho:.4f}; top-10 heads shared {overlap}/10")
    return {"flip": flips / max(confident, 1), "spearman": rho, "top10": overlap, "speedup": speedup}


# -- memory: loading + predict in a fresh process ----------------------------------------------------------
def _vm(key: str) -> float:
    return status_kb(key) / 2**10  # MiB


def child_main(argv: list[str]) -> dict:
    kind = argv[0]
    if kind == "memory":
        _, shape, length, weights, how = argv
        return memory_child(shape, int(length), weights, how)
    if kind == "vs":
        _, method, shape, length, *device = argv
        return vs_child(method, shape, int(length), device[0] if device else "cpu")
    raise SystemExit(f"unknown child {kind}")


def memory_child(shape: str, length: int, weights: str, how: str) -> dict:
    import esm.models.esmc  # noqa: F401 - imports are not the model's memory
    import transformers.models.esm.modeling_esm  # noqa: F401

    from ..attention import AttentionExtractor
    from ..backbone import load_backbone
    from ..backbone.builders import build_model, wrap
    from ..backbone.registry import REGISTRY

    base = _vm("VmRSS")
    t0 = time.perf_counter()
    if how == "new":
        bb = load_backbone(shape, weights)
    else:  # the previous way: random init, a full torch.load, then a copy into the parameters
        spec = REGISTRY[shape]
        model = build_model(spec)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        bb = wrap(spec, model).freeze()
    load_s = time.perf_counter() - t0
    after_load_peak = _vm("VmHWM") - base
    param_mb = sum(p.numel() * 4 for p in bb.model.parameters()) / 2**20
    Ly, H = bb.n_layers, bb.n_heads
    protein = random_protein(length, seed=length)
    tokens, real = bb.alphabet.tokenize([protein.sequence])
    AttentionExtractor(bb, THETA, heads=cases(Ly, H)[f"last L{Ly - 1}"])(tokens, real, [length])
    peak = _vm("VmHWM") - base
    return {"param_mb": param_mb, "load_peak_mb": after_load_peak, "peak_mb": peak, "load_s": load_s}


def run_memory(shape: str, length: int, device: torch.device, compare_old: bool = True) -> None:
    """Peak RSS of loading ``shape`` from a bf16 state dict + predicting one protein, in a fresh process;
    ``compare_old``: also the previous way of loading (random init + full torch.load + copy)."""
    if device.type != "cpu" or not Path("/proc/self/status").exists():
        log.info("memory of loading %s: measured on Linux CPU only", shape)
        return
    from ..backbone.builders import build_model
    from ..backbone.registry import REGISTRY

    with tempfile.TemporaryDirectory(prefix="allo_bench_mem_") as tmp:
        path = Path(tmp) / f"{shape}_bf16.pth"
        torch.manual_seed(0)
        model = build_model(REGISTRY[shape])
        torch.save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, path)
        del model
        out = {}
        for how in ("new", "old") if compare_old else ("new",):
            cmd = [sys.executable, "-m", "allo_lightning.bench", "--child", "memory", shape, str(length), str(path),
                   how]
            # glibc gives freed memory back at once (as in the extraction grid's memory children), so the
            # resident set follows the memory in use, not what the allocator keeps cached
            env = {**os.environ, "PYTHONWARNINGS": "ignore", "MALLOC_MMAP_THRESHOLD_": "65536",
                   "MALLOC_TRIM_THRESHOLD_": "65536"}
            r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if r.returncode != 0:
                log.warning("memory child (%s, %s) failed: %s", shape, how, r.stderr[-1500:])
                continue
            out[how] = json.loads(r.stdout.strip().splitlines()[-1])
    if "new" in out:
        n = out["new"]
        emit(f"\n  memory, {shape}: load a bf16 state dict ({n['param_mb'] / 2:.0f} MiB on disk) + predict one "
             f"{length}-residue protein (heads in the last layer), fresh process, peak RSS over the imports:")
        emit(f"    ours (meta device, mmap, assign): load {n['load_peak_mb']:.0f} MiB, load + predict "
             f"{n['peak_mb']:.0f} MiB = {n['peak_mb'] / n['param_mb']:.2f}x the fp32 parameter bytes "
             f"({n['param_mb']:.0f} MiB); load {n['load_s']:.1f} s")
    if "old" in out:
        o = out["old"]
        emit(f"    before (random init + torch.load + copy): load {o['load_peak_mb']:.0f} MiB, load + predict "
             f"{o['peak_mb']:.0f} MiB = {o['peak_mb'] / o['param_mb']:.2f}x; load {o['load_s']:.1f} s")


# -- ESM-2: ours vs transformers' output_attentions --------------------------------------------------------
def vs_child(method: str, shape: str, length: int, device_name: str = "cpu") -> dict:
    """One method, one protein, in this fresh process: wall and CPU seconds of the second call (the first
    is a warm-up) and its extra peak memory (CPU: resident set, Linux ``VmHWM``; CUDA: the allocator's
    peak)."""
    from ..attention import AttentionExtractor

    device = torch.device(device_name)
    bb = make_backbone(shape, device)
    protein = random_protein(length, seed=length)
    tokens, real = (t.to(device) for t in bb.alphabet.tokenize([protein.sequence]))
    ours = AttentionExtractor(bb, THETA)

    def hf():
        out = bb.model(input_ids=tokens, attention_mask=real.long(), output_attentions=True)
        return [(a > THETA).sum(-2) for a in out.attentions]  # thresholded count per key, every layer/head

    calls = {"plain": lambda: bb(tokens, real), "ours": lambda: ours(tokens, real, [length]), "transformers": hf}
    cuda = device.type == "cuda"
    with torch.no_grad():
        calls[method]()  # warm-up
        sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device) / 2**20
        else:
            Path("/proc/self/clear_refs").write_text("5")
            base = _vm("VmRSS")
        w0, c0 = time.perf_counter(), time.process_time()
        calls[method]()
        sync(device)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return {"wall": wall, "cpu": cpu, "extra_mb": peak - base, "rss_mb": peak}
    return {"wall": wall, "cpu": cpu, "extra_mb": _vm("VmHWM") - base, "rss_mb": _vm("VmHWM")}


def run_vs_transformers(device: torch.device, lengths: list[int], clock: str, shape: str = "esm2_t33_650m") -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MALLOC_MMAP_THRESHOLD_": "65536",
           "MALLOC_TRIM_THRESHOLD_": "65536"}
    where = "GPU allocator" if device.type == "cuda" else "RSS"
    for length in lengths:
        res = {}
        for method in ("plain", "ours", "transformers"):
            cmd = [sys.executable, "-m", "allo_lightning.bench", "--child", "vs", method, shape, str(length),
                   str(device)]
            if torch.get_num_threads():
                cmd[3:3] = ["--threads", str(torch.get_num_threads())]
            r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if r.returncode != 0:
                log.warning("%s child (%s, L=%d) failed: %s", method, shape, length, r.stderr[-1500:])
                continue
            res[method] = json.loads(r.stdout.strip().splitlines()[-1])
        emit(f"\n{shape} shape, L={length}, one protein on {device}, fresh process per method (random weights; "
             f"memory: {where}):")
        emit(f"  {'':34s}{'seconds':>10s}{'cpu s':>10s}{'extra peak MiB':>16s}{'peak MiB':>14s}")
        labels = {"plain": "plain forward", "ours": "ours (fused capture + statistics)",
                  "transformers": "transformers output_attentions"}
        for m, r in res.items():
            emit(f"  {labels[m]:34s}{r['wall']:10.3f}{r['cpu']:10.3f}{r['extra_mb']:16.0f}{r['rss_mb']:14.0f}")
        if {"plain", "ours", "transformers"} <= set(res):
            k = "cpu" if clock == "cpu" else "wall"
            emit(f"  ours / plain {res['ours'][k] / res['plain'][k]:.3f}x; transformers / ours "
                 f"{res['transformers'][k] / res['ours'][k]:.2f}x time, "
                 f"{res['transformers']['extra_mb'] / max(res['ours']['extra_mb'], 1):.1f}x extra memory")


__all__ = ["cases", "run_bf16", "run_memory", "run_predict", "run_vs_transformers", "spearman"]
