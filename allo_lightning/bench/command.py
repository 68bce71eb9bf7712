"""``allo-lightning bench`` (``python -m allo_lightning.bench``): speed and memory benchmarks, on the one
shell of every command (:func:`allo_lightning.shell.command`). The flags are parsed and the settings
(:class:`.settings.BenchSettings`) checked before torch is imported, so ``--help`` and a flag error answer
at once; the benchmarks themselves (:mod:`.extraction`, :mod:`.inference`, :mod:`.table`) are imported
only to run."""

from __future__ import annotations

import argparse
from typing import Literal, Optional

from ..shell import command
from .settings import KERNELS, BenchSettings

DESCRIPTION = ("Benchmarks: extraction against its floor (the plain forward pass) and the original approach, "
               "head scoring, early-exit predict, bf16, loading memory, transformers' output_attentions.")


def _flags(parser) -> None:
    add = parser.add_argument
    add("--quick", action="store_true", help="esmc_300m shape, length 400 only")
    add("--scoring", action="store_true", help="only the head-scoring benchmark (36 x 18, 20 proteins)")
    add("--scale", action="store_true", help="with --quick: add the batching / padding section")
    add("--shapes", nargs="+", default=None, metavar="SHAPE",
        help="model shapes: any --model.backbone name (default: esmc_300m esmc_600m; tiny and esm2_tiny for "
             "smoke runs)")
    add("--lengths", nargs="+", type=int, default=None, metavar="N", help="protein lengths")
    add("--repeats", type=Optional[int], default=None, help="interleaved repeats (best is kept)")
    add("--original-heads", type=Optional[int], default=None,
        help="time the original scoring loop on this many heads and extrapolate (default: all)")
    add("--clock", type=Literal["wall", "cpu"], default="wall",
        help="clock of the ratios: wall (default) or this process's CPU time, steadier when other work shares "
             "the cores (use with --threads 1); CPU devices only")
    add("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add("--threads", type=Optional[int], default=None, help="torch CPU threads (default: torch's)")
    add("--predict", action="store_true",
        help="early-exit predict vs full extraction (heads at a shallow, middle and last layer), loading + "
             "predict peak memory; with --quick the esmc_300m shape only")
    add("--bf16", action="store_true", help="with --predict: fp32 vs bf16 time and how much the statistics move")
    add("--vs-transformers", action="store_true",
        help="ESM-2 (esm2_t33_650m shape): ours vs transformers' output_attentions=True + thresholded count")
    add("--table", action="store_true",
        help="extraction vs the plain forward over the bundled proteins' real lengths, esmc_600m shape, fp32 "
             "and bf16, same batches (see allo_lightning/bench/table.py)")
    add("--max-tokens", type=int, default=16384, help="with --table: token budget of a batch")
    add("--residues", type=Optional[int], default=None,
        help="with --table: only the first proteins, up to about this many residues")
    add("--kernels", nargs="+", default=None, metavar="KERNEL",
        help=f"with --table: statistics kernels to time ({', '.join(KERNELS)}; default: the device's; on CUDA "
             "fused and triton)")
    add("--stream", action="store_true",
        help="time and peak memory of predict against the number of proteins (random sequences, a fresh cache "
             "and process per size); needs --checkpoint")
    add("--checkpoint", type=Optional[str], default=None,
        help="with --stream: a probe checkpoint on the tiny backbone (fit --config configs/smoke.yaml writes "
             "checkpoints/smoke.tiny.safetensors)")
    add("--proteins", nargs="+", type=int, default=None, metavar="N",
        help="with --stream: numbers of proteins, one predict run each (default: 300 3000)")
    add("--min-length", "--min_length", type=int, default=50, help="with --stream: shortest random sequence")
    add("--max-length", "--max_length", type=int, default=400, help="with --stream: longest random sequence")
    add("--work", type=Optional[str], default=None,
        help="with --stream: folder for the FASTA files, caches and outputs (default: a temporary folder, removed)")
    add("--out", type=Optional[str], default=None,
        help="folder for the run's record: config.yaml (every setting, replayable with --config) and run.log (the "
             "tables printed); default: the terminal only")
    add("--overwrite", action="store_true", help="with --out: replace the record of an earlier bench run there")
    # internal: the benchmarks start fresh processes of this command for one measurement each
    add("--memory-child", nargs=4, default=None, metavar=("METHOD", "SHAPE", "LENGTH", "DEVICE"),
        help=argparse.SUPPRESS)
    add("--child", nargs="+", default=None, help=argparse.SUPPRESS)


def settings(cfg) -> BenchSettings:
    """The run's settings from the parsed flags (refused values are an ``InputError``; ``--seed`` is a
    setting of ``--stream`` only)."""
    return BenchSettings.from_values({**cfg.values, "seed": cfg.seed})


@command("bench", DESCRIPTION, sections=(), flags=_flags, check=settings)
def main(cfg) -> None:
    s = settings(cfg)
    if s.out is not None:  # the record, like every command's: config.yaml now, run.log when the run ends
        from ..outputs import claim_out_files, prepare_out_dir
        from ..records import RUN_FILES, record_run

        overwrite = bool(cfg.get("overwrite"))
        out = prepare_out_dir(s.out, overwrite, "run.log", flag="--out")
        claim_out_files(out, "run.log", overwrite, RUN_FILES, flag="--out")  # no link, no user's file replaced
        record_run(cfg, out)
    if s.stream:
        from .stream import run_stream

        run_stream(s)
        return
    from .extraction import run  # torch from here on

    run(s)
