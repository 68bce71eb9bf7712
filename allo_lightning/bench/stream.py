"""``allo-lightning bench --stream --checkpoint FILE --proteins 300 3000``: time and peak memory of ``predict``
against the number of proteins (random sequences, seeded by ``--seed``; a fresh cache and a fresh process per
size, so extraction is included). Memory should stay flat and time grow linearly.

Prints one line per size: proteins, residues, seconds, seconds per 1000 proteins, peak RSS (MiB)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import InputError, UserError
from .settings import BenchSettings


def emit(text: str = "") -> None:
    """A result line on stdout, as :func:`.common.emit` (not imported: it would import torch, which this
    benchmark leaves to the predict processes it times)."""
    print(text, flush=True)


def write_fasta(path: Path, n: int, lo: int, hi: int, seed: int) -> int:
    rng = random.Random(seed)
    residues = 0
    with open(path, "w") as f:
        for i in range(n):
            length = rng.randint(lo, hi)
            residues += length
            f.write(f">B{i}\n{''.join(rng.choice('ACDEFGHIKLMNPQRSTVWY') for _ in range(length))}\n")
    return residues


def run_one(checkpoint: str, n: int, lo: int, hi: int, seed: int, work: Path) -> dict:
    fasta = work / f"b{n}.fasta"
    residues = write_fasta(fasta, n, lo, hi, seed)
    cmd = [sys.executable, "-m", "allo_lightning.predict", "--checkpoint", checkpoint, "--fasta", str(fasta),
           "--out", str(work / f"out{n}"), "--model.cache_dir", str(work / f"cache{n}"),
           "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        last = err[-1] if err else f"exit status {os.waitstatus_to_exitcode(status)}"
        raise UserError(f"--stream: predict failed for {n} proteins: {last}")
    rss_mib = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    return {"proteins": n, "residues": residues, "seconds": seconds, "peak_rss_mib": rss_mib}


def run_stream(s: BenchSettings) -> None:
    checkpoint = Path(s.checkpoint or "").expanduser()
    if not checkpoint.is_file():
        raise InputError(f"--checkpoint {s.checkpoint}: file not found. Give a probe checkpoint (allo-lightning fit "
                         "--config configs/smoke.yaml writes checkpoints/smoke.tiny.safetensors).")
    with tempfile.TemporaryDirectory(prefix="allo_stream_bench_") as tmp:
        work = Path(s.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        emit("proteins residues seconds s_per_1000_proteins peak_rss_mib")
        for n in s.proteins or (300, 3000):
            r = run_one(str(checkpoint), n, s.min_length, s.max_length, s.seed, work)
            emit(f"{r['proteins']} {r['residues']} {r['seconds']:.1f} {1000 * r['seconds'] / n:.1f} "
                 f"{r['peak_rss_mib']:.0f}")
