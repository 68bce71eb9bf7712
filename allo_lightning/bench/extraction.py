"""Benchmark of extraction against its floor (the plain forward pass) and the original approach.

    python -m allo_lightning.bench            # esmc_300m and esmc_600m shapes x lengths 128, 400, 1000
    python -m allo_lightning.bench --quick    # esmc_300m shape, length 400 (a few minutes on 2 CPU cores)
    python -m allo_lightning.bench --scoring  # head scoring only: 36 x 18 heads, 20 proteins

Side by side, per model shape and length, on the device present (CUDA, else MPS, else CPU), with
random weights (timing does not depend on them):

1. ``plain``     the backbone's forward pass alone (the floor);
2. ``ours``      forward + attention recomputation + column statistics (:class:`AttentionExtractor`);
   ``ours e2e``  the same through :func:`extract` (``trainer.predict``, cache writes), first run;
3. ``original``  all layers' full maps kept for the protein (forward + stacking), then the Python loop
   per head with 1000 random site draws (:mod:`allo_lightning.original`); its scoring part alone is
   ``orig scoring``, set against ``our scoring`` (:func:`allo_lightning.analysis.score_heads` with
   as many permutations);
4. ``cached``    :func:`extract` again over the same proteins: every protein comes from the cache.

Times are the best of ``--repeats`` interleaved runs (wall clock; the process CPU time is shown too,
it is less sensitive to other load on a shared machine). Peak memory is the extra peak over the
memory in use before the call: on CPU the peak resident set of a fresh subprocess per measurement
(Linux ``VmHWM`` reset through ``/proc/self/clear_refs``), on CUDA the allocator's peak.

The last line summarises the grid by its worst case:
``overhead=<2/1>x  scoring_speedup=<3 scoring / ours>x  vs_original=<3/2>x  cache=<2e/4>x  peak_extra_mb=<2 - 1>``
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbone.registry import REGISTRY
from ..errors import InputError
from .common import (
    DEFAULT_SHAPES,
    N_DRAWS,
    SHAPES,
    THETA,
    Timing,
    best,
    best_of,
    emit,
    extract_on,
    labels_of,
    make_backbone,
    pick_device,
    random_protein,
    status_kb,
    sync,
)
from .settings import BenchSettings

log = logging.getLogger(__name__)


# -- memory --------------------------------------------------------------------------------------------
class PeakMemory:
    """Extra peak memory (MiB) of the code inside the ``with`` block over what was in use before it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.extra_mb = float("nan")
        self.method = ""

    def __enter__(self) -> "PeakMemory":
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "CUDA allocator peak"
        elif self.device.type == "cpu" and Path("/proc/self/clear_refs").exists():
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self._base = status_kb("VmRSS") * 1024
            self.method = "RSS peak (VmHWM)"
        else:  # macOS / MPS: sample the resident set (or the MPS driver) every millisecond
            import psutil

            proc = psutil.Process()
            read = (lambda: torch.mps.driver_allocated_memory()) if self.device.type == "mps" else (
                lambda: proc.memory_info().rss)
            self._base, self._peak, self._stop = read(), read(), threading.Event()

            def sample() -> None:
                while not self._stop.wait(0.001):
                    self._peak = max(self._peak, read())

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
            self.method = "sampled every 1 ms"
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("RSS"):
            peak = status_kb("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            peak = self._peak
        self.extra_mb = (peak - self._base) / 2**20


def memory_child(method: str, shape: str, length: int, device_name: str) -> dict:
    """One measurement in this (fresh) process: the extra peak of one call of ``method``."""
    from ..attention import AttentionExtractor
    from ..original import full_attention_maps

    device = pick_device(device_name)
    backbone = make_backbone(shape, device)
    protein = random_protein(length, seed=length)
    tokens, real = (t.to(device) for t in backbone.alphabet.tokenize([protein.sequence]))
    extractor = AttentionExtractor(backbone, THETA).to(device)
    calls = {
        "plain": lambda: backbone(tokens, real),
        "ours": lambda: extractor(tokens, real, [protein.length]),
        "original": lambda: full_attention_maps(backbone, tokens, real),
    }
    kept = calls[method]()  # warm-up: one-time set-up (thread pools, kernels, caches) is not measured
    del kept
    with PeakMemory(device) as peak:
        kept = calls[method]()
    del kept
    return {"extra_mb": peak.extra_mb, "how": peak.method}


def measure_memory(method: str, shape: str, length: int, device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":  # the allocator's own peak needs no fresh process
        return memory_child(method, shape, length, str(device))["extra_mb"], "CUDA allocator peak"
    cmd = [sys.executable, "-m", "allo_lightning.bench", "--memory-child", method, shape, str(length), str(device)]
    # glibc: large blocks mmapped and freed memory given back at once, so the resident set follows
    # the memory in use (otherwise the warm-up's freed heap hides the measured call's peak)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MALLOC_MMAP_THRESHOLD_": "65536",
           "MALLOC_TRIM_THRESHOLD_": "65536"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        log.warning("memory measurement (%s, %s, L=%d) failed: %s", method, shape, length, res.stderr[-2000:])
        return float("nan"), "failed"
    info = json.loads(res.stdout.strip().splitlines()[-1])
    return info["extra_mb"], info["how"] + ", fresh process"


# -- one grid point -------------------------------------------------------------------------------------
@dataclass
class Point:
    shape: str
    length: int
    rows: dict  # name -> Timing
    mem: dict  # name -> extra peak MiB
    map_mb: float  # one layer's attention maps of the batch (float32)
    orig_scoring_heads: int
    check: float  # max |original observed - our mass score| over the timed heads
    clock: str  # the clock of the ratios (--clock; "cpu" on a CPU device only)

    def ratio(self, a: str, b: str) -> float:
        if self.clock == "cpu":
            return self.rows[a].cpu / self.rows[b].cpu
        return self.rows[a].wall / self.rows[b].wall


def run_point(shape: str, length: int, device: torch.device, repeats: int, orig_heads: int | None,
              trainer_kwargs: dict, *, clock: str) -> Point:
    from ..analysis import score_heads
    from ..attention import AttentionExtractor
    from ..original import full_attention_maps, original_head_scores

    backbone = make_backbone(shape, device)
    n_layers, n_heads = backbone.n_layers, backbone.n_heads
    protein = random_protein(length, seed=length)
    tokens, real = (t.to(device) for t in backbone.alphabet.tokenize([protein.sequence]))
    extractor = AttentionExtractor(backbone, THETA).to(device)
    y = labels_of(protein)
    sites0 = [s - 1 for s in protein.sites]
    workdir = Path(tempfile.mkdtemp(prefix="allo_bench_"))

    t: dict[str, list[Timing]] = {k: [] for k in ("plain", "ours", "original maps", "ours e2e", "cached")}
    for _ in range(2):  # warm-up: first calls page the weights in and set up kernels
        backbone(tokens, real)
        extractor(tokens, real, [protein.length])
    extract_on(device, backbone, [protein], THETA, str(workdir / "warm"), trainer_kwargs)  # Trainer's first use
    for rep in range(repeats):
        best_of(lambda: backbone(tokens, real), device, t["plain"])
        stats = best_of(lambda: extractor(tokens, real, [protein.length]), device, t["ours"])[0]
        maps = best_of(lambda: full_attention_maps(backbone, tokens, real), device, t["original maps"])
        maps = maps.cpu()
        def run_e2e(cache_dir=str(workdir / f"cache{rep}")):
            return extract_on(device, backbone, [protein], THETA, cache_dir, trainer_kwargs)

        best_of(run_e2e, device, t["ours e2e"])
        again = best_of(run_e2e, device, t["cached"])  # the same cache: every protein comes from it
        assert again.computed == [], "the second run should come from the cache"
        list(again)  # read the statistics back, as any consumer would
        if rep < repeats - 1:
            del maps

    # 3: the original scoring loop (once: it is the slow part); optionally on a sample of heads
    all_heads = [(ly, h) for ly in range(n_layers) for h in range(n_heads)]
    heads = all_heads
    if orig_heads and orig_heads < len(all_heads):
        heads = random.Random(0).sample(all_heads, orig_heads)
    c0, w0 = time.process_time(), time.perf_counter()
    orig = original_head_scores(maps, sites0, THETA, N_DRAWS, seed=0, heads=heads, alphabet=backbone.alphabet)
    scale = len(all_heads) / len(heads)
    orig_scoring = Timing((time.perf_counter() - w0) * scale, (time.process_time() - c0) * scale)
    del maps

    ours_scoring: list[Timing] = []
    for _ in range(3):
        best_of(lambda: score_heads([(stats, y)], n_layers, n_heads, N_DRAWS, 0), torch.device("cpu"), ours_scoring)
    sel = torch.tensor([ly * n_heads + h for ly, h in heads])
    # the seed's observed score = confident mass to sites / confident count over ALL real keys (our ``mass``
    # score divides by residue-to-residue pairs only, as p_alpha does), so compare with that quotient
    seed_score = stats.mass[..., y].sum(-1) / stats.total.clamp_min(1)
    ours_mass = seed_score.reshape(-1)[sel].numpy()
    orig_mass = orig["observed"].reshape(-1)[sel.numpy()]
    ok = ~(torch.isnan(torch.as_tensor(orig_mass)).numpy())
    check = float(abs(ours_mass[ok] - orig_mass[ok]).max()) if ok.any() else 0.0

    rows = {k: best(v) for k, v in t.items()}
    rows["orig scoring"] = orig_scoring
    rows["original"] = Timing(rows["original maps"].wall + orig_scoring.wall,
                              rows["original maps"].cpu + orig_scoring.cpu)
    rows["our scoring"] = best(ours_scoring)

    mem = {}
    for method in ("plain", "ours", "original"):
        mem[method], how = measure_memory(method, shape, length, device)
    map_mb = n_heads * (length + backbone.alphabet.n_special) ** 2 * 4 / 2**20
    return Point(shape, length, rows, mem, map_mb, len(heads), check, clock)


def print_point(p: Point) -> None:
    n = p.length
    order = [("1 plain", "plain", "plain"), ("2 ours", "ours", "ours"), ("2 ours e2e", "ours e2e", None),
             ("3 original", "original", "original"), ("3 orig maps", "original maps", None),
             ("3 orig scoring", "orig scoring", None), ("  our scoring", "our scoring", None),
             ("4 cached", "cached", None)]
    extrapolated = "" if p.orig_scoring_heads == SHAPES[p.shape][1] * SHAPES[p.shape][2] else ", extrapolated"
    emit(f"\n{p.shape}  L={n}  (one layer's maps: {p.map_mb:.1f} MiB; original scoring timed on "
         f"{p.orig_scoring_heads} heads{extrapolated}; "
         f"|original - ours| on the mass score: {p.check:.1e})")
    emit(f"  {'':16s}{'seconds':>10s}{'cpu s':>10s}{'residues/s':>12s}{'extra peak MiB':>16s}")
    for label, key, mkey in order:
        r = p.rows[key]
        mem = f"{p.mem[mkey]:16.1f}" if mkey else f"{'':16s}"
        emit(f"  {label:16s}{r.wall:10.3f}{r.cpu:10.3f}{n / r.wall:12.1f}{mem}")
    emit(f"  overhead {p.ratio('ours', 'plain'):.3f}x (wall {p.rows['ours'].wall / p.rows['plain'].wall:.3f}x, "
         f"cpu {p.rows['ours'].cpu / p.rows['plain'].cpu:.3f}x)  "
         f"scoring_speedup {p.ratio('orig scoring', 'our scoring'):.0f}x  "
         f"vs_original {p.ratio('original', 'ours'):.2f}x  "
         f"cache {p.ratio('ours e2e', 'cached'):.1f}x  peak_extra {p.mem['ours'] - p.mem['plain']:.1f} MiB "
         f"({(p.mem['ours'] - p.mem['plain']) / p.map_mb:.2f} layer maps)")


def final_line(points: list[Point]) -> str:
    overhead = max(p.ratio("ours", "plain") for p in points)
    scoring = min(p.ratio("orig scoring", "our scoring") for p in points)
    vs_orig = min(p.ratio("original", "ours") for p in points)
    cache = min(p.ratio("ours e2e", "cached") for p in points)
    peak = max(p.mem["ours"] - p.mem["plain"] for p in points)
    return (f"overhead={overhead:.3f}x  scoring_speedup={scoring:.0f}x  vs_original={vs_orig:.2f}x  "
            f"cache={cache:.1f}x  peak_extra_mb={peak:.1f}")


# -- scale: batching and padding ---------------------------------------------------------------------------
def run_scale(device: torch.device, trainer_kwargs: dict, *, clock: str, n: int = 24,
              shape: str = "esmc_300m") -> None:
    from ..backbone.base import ESMC_ALPHABET
    from ..data import bundled_path, read_proteins
    from ..data.batching import padding_fraction, token_budget_batches

    n_special = ESMC_ALPHABET.n_special  # BOS and EOS, as ESM-C (and ESM-2) add them

    emit("\nPadding fraction (token budget 4096 tokens per batch), with vs without length bucketing:")
    rng = random.Random(1)
    synthetic = [random_protein(rng.randint(50, 450), seed=100 + i, pid=f"S{i}") for i in range(n)]
    sets = [(f"synthetic ({n} proteins, 50-450 residues)", synthetic)]
    try:
        asd = read_proteins(bundled_path("asd"))
        sets.append((f"bundled ASD set ({len(asd)} proteins)", asd))
    except Exception as e:  # noqa: BLE001 - the bundled set is optional here
        log.warning("bundled ASD set not read: %s", e)
    for name, prots in sets:
        lengths = [p.length for p in prots]
        for budget in (4096, 16384):
            fr = {b: padding_fraction(lengths, token_budget_batches(lengths, budget, b, n_special=n_special),
                                       n_special=n_special)
                  for b in (True, False)}
            nb = len(token_budget_batches(lengths, budget, True, n_special=n_special))
            emit(f"  {name}, max_tokens={budget}: bucketed {fr[True]:.1%} ({nb} batches), "
                 f"unbucketed {fr[False]:.1%}")

    emit(f"\nThroughput of extract() on the synthetic set ({shape} shape, {sum(p.length for p in synthetic)} "
         "residues), token-budget batches vs batch size 1:")
    backbone = make_backbone(shape, device)
    residues = sum(p.length for p in synthetic)
    results = {}
    with tempfile.TemporaryDirectory(prefix="allo_bench_scale_") as tmp:
        extract_on(device, backbone, synthetic[:2], THETA, f"{tmp}/warm", trainer_kwargs)
        for rep in range(2):
            for label, kw in (("batch size 1", dict(max_tokens=1)),
                              ("max_tokens=4096, bucketed", dict(max_tokens=4096, bucket=True)),
                              ("max_tokens=4096, unbucketed", dict(max_tokens=4096, bucket=False))):
                w0, c0 = time.perf_counter(), time.process_time()
                extract_on(device, backbone, synthetic, THETA, f"{tmp}/{rep}{label}", trainer_kwargs, **kw)
                results.setdefault(label, []).append(Timing(time.perf_counter() - w0, time.process_time() - c0))
    base = best(results["batch size 1"])
    for label, ts in results.items():
        b = best(ts)
        speed = base.cpu / b.cpu if clock == "cpu" else base.wall / b.wall
        emit(f"  {label:30s}{b.wall:8.2f} s (cpu {b.cpu:7.2f} s)  {residues / b.wall:8.1f} residues/s  "
             f"{speed:.2f}x ({clock} clock)")


# -- scoring benchmark (issue 3) ---------------------------------------------------------------------------
def run_scoring(n_proteins: int = 20, shape: str = "esmc_600m", heads_timed: int = 18, seed: int = 0) -> str:
    """Every head of a 36 x 18 model over ``n_proteins`` proteins, from their statistics, against the
    original loop (timed on ``heads_timed`` heads per protein and extrapolated to all of them)."""
    from ..analysis import score_heads
    from ..attention.stats import ProteinStats, column_stats
    from ..backbone.base import ESMC_ALPHABET as alphabet
    from ..original import original_head_scores

    d_model, n_heads, n_layers = SHAPES[shape]
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    items, orig_wall, orig_cpu, diffs = [], 0.0, 0.0, []
    all_heads = [(ly, h) for ly in range(n_layers) for h in range(n_heads)]
    emit(f"Scoring benchmark: {n_layers} x {n_heads} heads, {n_proteins} proteins (lengths 300-500), "
         f"{N_DRAWS} random site sets per head; original loop timed on {heads_timed} heads per protein "
         "and extrapolated to all heads.")
    for i in range(n_proteins):
        protein = random_protein(rng.randint(300, 500), seed=1000 + i, pid=f"G{i}")
        T = protein.length + alphabet.n_special  # the maps are laid out as ESM-C's tokens (BOS, residues, EOS)
        # peaked random attention (softmax of scaled noise), one layer at a time: [Ly, H, T, T] at once
        # is what the original kept, and what this benchmark avoids holding for 20 proteins
        maps = torch.empty(n_layers, n_heads, T, T)
        for ly in range(n_layers):
            maps[ly] = torch.softmax(torch.randn(n_heads, T, T, generator=gen) * 3.0, dim=-1)
        real = torch.ones(1, T, dtype=torch.bool)
        residue = alphabet.residue_mask(real)
        parts = [column_stats(maps[ly][None], residue, real, THETA) for ly in range(n_layers)]
        stats = ProteinStats(**{k: torch.stack([p[k][0, :, alphabet.residues(protein.length)] for p in parts])
                                for k in ("received", "count", "mass")},
                             total=torch.stack([p["total"][0] for p in parts]))
        y = labels_of(protein)
        items.append((stats, y))
        heads = rng.sample(all_heads, heads_timed)
        w0, c0 = time.perf_counter(), time.process_time()
        orig = original_head_scores(maps, [s - 1 for s in protein.sites], THETA, N_DRAWS, seed=i, heads=heads,
                                    alphabet=alphabet)
        orig_wall += (time.perf_counter() - w0) * len(all_heads) / heads_timed
        orig_cpu += (time.process_time() - c0) * len(all_heads) / heads_timed
        # the seed's observed score = confident mass to sites / confident count over ALL real keys
        seed_score = stats.mass[..., torch.as_tensor(y).bool()].sum(-1) / stats.total.clamp_min(1)
        diffs += [abs(float(seed_score[ly, h]) - orig["observed"][ly, h]) for ly, h in heads]
        del maps
    ours, runs = {}, {}
    # default settings (null permutation, min_confident 100, escalation of heads at the floor up to
    # 10^6 draws, exact p where cheap); "no adaptive B": the same without escalation or exact p
    variants = {f"{N_DRAWS} permutations": dict(n_permutations=N_DRAWS),
                "2000 permutations (default)": dict(n_permutations=2000),
                "2000, no adaptive B / exact": dict(n_permutations=2000, max_permutations=2000, exact=False)}
    for name, kw in variants.items():
        ts = []
        for _ in range(3):
            w0, c0 = time.perf_counter(), time.process_time()
            runs[name] = score_heads(items, n_layers, n_heads, seed=0, **kw)
            ts.append(Timing(time.perf_counter() - w0, time.process_time() - c0))
        ours[name] = best(ts)
    emit(f"  original loop (extrapolated)          {orig_wall:10.2f} s   (cpu {orig_cpu:.2f} s)")
    for name, t in ours.items():
        emit(f"  score_heads, {name:28s} {t.wall:8.4f} s   (cpu {t.cpu:.4f} s)   speed-up {orig_wall / t.wall:.0f}x")
    d = runs["2000 permutations (default)"]
    extra = [int((st.pvalue_draws > 2000).sum()) for st in (d.p_alpha, d.mass)]
    exact = [int((st.pvalue_draws == 0).sum()) for st in (d.p_alpha, d.mass)]
    adaptive = ours["2000 permutations (default)"].cpu - ours["2000, no adaptive B / exact"].cpu
    emit(f"  adaptive B: {extra[0]} p_alpha and {extra[1]} mass heads got more draws (up to "
         f"{int(max(d.p_alpha.pvalue_draws.max(), d.mass.pvalue_draws.max()))}), {exact[0]} exact p-values; "
         f"cost {adaptive:+.3f} s cpu; {int(d.testable.sum())} of {d.testable.numel()} heads testable")
    emit(f"  max |original observed - seed score from the statistics| over the timed heads: {max(diffs):.1e}")
    default = ours["2000 permutations (default)"]
    return (f"scoring_speedup={orig_wall / default.wall:.0f}x  (score_heads {default.wall:.3f} s, "
            f"cpu {default.cpu:.3f} s, vs original {orig_wall:.1f} s)")


# -- main -------------------------------------------------------------------------------------------------
def load_line() -> str:
    try:
        la = os.getloadavg()
        return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} cores"
    except OSError:
        return ""


def check_settings(s: BenchSettings) -> torch.device:
    """Refuse settings that would end in a traceback (or be ignored without a word), before any work: what
    needs the model table or torch (the rest is checked when :class:`.settings.BenchSettings` is made, before
    torch is imported). Returns the device to run on."""
    unknown = [shape for shape in s.shapes or () if shape not in SHAPES]
    if unknown:
        raise InputError(f"--shapes {unknown[0]}: not a model shape. Choose from: {', '.join(SHAPES)}.")
    for shape in s.shapes or ["esmc_300m"]:
        limit = REGISTRY[shape].max_length
        long = [n for n in s.lengths or () if n > limit]
        if long:
            raise InputError(f"--lengths {long[0]}: longer than the {shape} shape's context of {limit} residues. "
                             "Give shorter lengths.")
    if s.memory_child and s.memory_child[1] not in SHAPES:
        raise InputError(f"--memory-child {' '.join(s.memory_child)}: an internal flag (METHOD SHAPE LENGTH "
                         "DEVICE); do not use it directly.")
    return pick_device(s.device)  # an unknown or absent device


def run(s: BenchSettings) -> None:
    """Run the benchmark the checked settings name (see :mod:`.command`)."""
    device = check_settings(s)
    if s.threads:
        torch.set_num_threads(s.threads)
    if s.child:
        from .inference import child_main

        emit(json.dumps(child_main(list(s.child))))
        return
    if s.memory_child:
        method, shape, length, child_device = s.memory_child
        emit(json.dumps(memory_child(method, shape, int(length), child_device)))
        return
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.ERROR)

    clock = s.clock_on(device.type)
    if s.table:
        from .table import run_table

        run_table(device, s.max_tokens, s.residues, shape=(s.shapes or ["esmc_600m"])[0], kernels=s.kernels,
                  repeats=s.repeats or 1)
        return
    if s.scoring:
        emit(load_line())
        emit(run_scoring())
        emit(load_line())
        return
    if s.predict or s.vs_transformers:
        from . import inference

        emit(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; {load_line()}; "
             f"ratios on the {clock} clock")
        if s.vs_transformers:
            esm2 = [shape for shape in s.shapes or () if REGISTRY[shape].family == "esm2"]
            inference.run_vs_transformers(device, list(s.lengths or [1000]), clock, *(esm2[:1] or ["esm2_t33_650m"]))
        if s.predict:
            inference.run_predict(device, quick=s.quick, clock=clock, shapes=s.shapes and list(s.shapes),
                                  lengths=s.lengths and list(s.lengths), repeats=s.repeats or 3, bf16=s.bf16)
        return

    shapes = s.shapes or (["esmc_300m"] if s.quick else DEFAULT_SHAPES)
    lengths = s.lengths or ([400] if s.quick else [128, 400, 1000])
    repeats = s.repeats or (2 if s.quick else 3)
    accel = {"cuda": "gpu", "mps": "mps"}.get(device.type, "cpu")
    trainer_kwargs = {"accelerator": accel, "devices": 1, "enable_progress_bar": False,
                      "enable_model_summary": False}
    emit(f"device: {device} ({torch.get_num_threads()} torch threads), torch {torch.__version__}; {load_line()}")
    emit(f"theta={THETA}, {N_DRAWS} random draws per head in the original, batch of 1 protein, best of {repeats}; "
         f"ratios on the {clock} clock")
    t0 = time.perf_counter()
    points = []
    for shape in shapes:
        for length in lengths:
            p = run_point(shape, length, device, repeats, s.original_heads, trainer_kwargs, clock=clock)
            print_point(p)
            points.append(p)
    if not s.quick or s.scale:
        run_scale(device, trainer_kwargs, clock=clock)
    emit(f"\ntotal {time.perf_counter() - t0:.0f} s; {load_line()}")
    emit("worst case over the grid: max overhead, min speed-ups, max extra peak:")
    emit(final_line(points))
