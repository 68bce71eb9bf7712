"""``python -m allo_lightning.bench.stream --checkpoint FILE --proteins 300 3000``: time and peak memory of
``predict`` against the number of proteins (random sequences, seeded; a fresh cache and a fresh process per
size, so extraction is included). Memory should stay flat and time grow linearly.

Prints one line per size: proteins, residues, seconds, seconds per 1000 proteins, peak RSS (MiB)."""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_fasta(path: Path, n: int, lo: int, hi: int, seed: int) -> int:
    rng = random.Random(seed)
    residues = 0
    with open(path, "w") as f:
        for i in range(n):
            length = rng.randint(lo, hi)
            residues += length
            f.write(f">B{i}\n{''.join(rng.choice('ACDEFGHIKLMNPQRSTVWY') for _ in range(length))}\n")
    return residues


def run(checkpoint: str, n: int, lo: int, hi: int, seed: int, work: Path, extra: list[str]) -> dict:
    fasta = work / f"b{n}.fasta"
    residues = write_fasta(fasta, n, lo, hi, seed)
    cmd = [sys.executable, "-m", "allo_lightning.predict", "--checkpoint", checkpoint, "--fasta", str(fasta),
           "--out", str(work / f"out{n}"), "--model.cache_dir", str(work / f"cache{n}"),
           "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict failed for {n} proteins: {proc.stderr.read().decode()[-2000:]}")
    rss_mib = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    return {"proteins": n, "residues": residues, "seconds": seconds, "peak_rss_mib": rss_mib}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m allo_lightning.bench.stream", description=__doc__)
    ap.add_argument("--checkpoint", required=True, help="a probe checkpoint on the tiny backbone (fit --config "
                                                        "configs/smoke.yaml writes checkpoints/smoke.tiny.safetensors)")
    ap.add_argument("--proteins", type=int, nargs="+", default=[300, 3000])
    ap.add_argument("--min_length", type=int, default=50)
    ap.add_argument("--max_length", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for the FASTA files, caches and outputs (default: a "
                                                 "temporary folder, removed)")
    args, extra = ap.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="allo_stream_bench_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print("proteins residues seconds s_per_1000_proteins peak_rss_mib")
        for n in args.proteins:
            r = run(args.checkpoint, n, args.min_length, args.max_length, args.seed, work, extra)
            print(f"{r['proteins']} {r['residues']} {r['seconds']:.1f} {1000 * r['seconds'] / n:.1f} "
                  f"{r['peak_rss_mib']:.0f}", flush=True)


if __name__ == "__main__":
    main()
