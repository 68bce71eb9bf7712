"""The flags of ``allo-lightning bench`` (``python -m allo_lightning.bench``): parsed and checked here,
before torch is imported, so ``--help`` and a flag error answer at once; the benchmarks themselves
(:mod:`.extraction`, :mod:`.inference`, :mod:`.table`) are imported only to run. A flag error is one
line on stderr and exit status 2, as for every other command."""

from __future__ import annotations

import argparse

from ..errors import InputError, UserError

DESCRIPTION = ("Benchmarks: extraction against its floor (the plain forward pass) and the original approach, "
               "head scoring, early-exit predict, bf16, loading memory, transformers' output_attentions.")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as :class:`InputError` (one line, exit 2) instead of usage + message."""

    def error(self, message: str):
        raise InputError(self._one_line(message))

    def _one_line(self, message: str) -> str:
        if message.startswith("unrecognized arguments: "):
            import difflib

            flag = message.split(": ", 1)[1].split()[0].split("=", 1)[0]
            known = [s for a in self._actions if a.help != argparse.SUPPRESS
                     for s in a.option_strings if s.startswith("--")]
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            return f"unknown flag {flag}." + (f" Did you mean {close[0]}?" if close else " See --help for the flags.")
        return message[:1].lower() + message[1:] + "."


def build_parser(prog: str = "python -m allo_lightning.bench") -> argparse.ArgumentParser:
    ap = _Parser(prog=prog, description=DESCRIPTION)
    ap.add_argument("--quick", action="store_true", help="esmc_300m shape, length 400 only")
    ap.add_argument("--scoring", action="store_true", help="only the head-scoring benchmark (36 x 18, 20 proteins)")
    ap.add_argument("--scale", action="store_true", help="with --quick: add the batching / padding section")
    ap.add_argument("--shapes", nargs="+", default=None, metavar="SHAPE",
                    help="model shapes: any --model.backbone name (default: esmc_300m esmc_600m; tiny and "
                         "esm2_tiny for smoke runs)")
    ap.add_argument("--lengths", nargs="+", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (best is kept)")
    ap.add_argument("--original-heads", type=int, default=None,
                    help="time the original scoring loop on this many heads and extrapolate (default: all)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="clock of the ratios: wall (default) or this process's CPU time, steadier when "
                         "other work shares the cores (use with --threads 1); CPU devices only")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--predict", action="store_true",
                    help="early-exit predict vs full extraction (heads at a shallow, middle and last layer), "
                         "loading + predict peak memory; with --quick the esmc_300m shape only")
    ap.add_argument("--bf16", action="store_true",
                    help="with --predict: fp32 vs bf16 time and how much the statistics move")
    ap.add_argument("--vs-transformers", action="store_true",
                    help="ESM-2 (esm2_t33_650m shape): ours vs transformers' output_attentions=True "
                         "+ thresholded count")
    ap.add_argument("--table", action="store_true",
                    help="extraction vs the plain forward over the bundled proteins' real lengths, esmc_600m "
                         "shape, fp32 and bf16, same batches (see allo_lightning/bench/table.py)")
    ap.add_argument("--max-tokens", type=int, default=16384, help="with --table: token budget of a batch")
    ap.add_argument("--residues", type=int, default=None,
                    help="with --table: only the first proteins, up to about this many residues")
    ap.add_argument("--kernels", nargs="+", default=None, choices=("chunked", "fused", "compiled", "triton", "flash"),
                    help="with --table: statistics kernels to time (default: the device's; on CUDA fused and triton)")
    ap.add_argument("--memory-child", nargs=4, metavar=("METHOD", "SHAPE", "LENGTH", "DEVICE"), help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return ap


def check_flags(args) -> None:
    """Refuse flag values that would end in a traceback (or be ignored without a word): what needs no
    model table or device (those are checked by :func:`.extraction.check_args`)."""
    for flag, values in (("--lengths", args.lengths), ("--repeats", [args.repeats]), ("--threads", [args.threads]),
                         ("--original-heads", [args.original_heads]), ("--max-tokens", [args.max_tokens]),
                         ("--residues", [args.residues])):
        bad = [v for v in values or () if v is not None and v < 1]
        if bad:
            raise InputError(f"{flag} {bad[0]}: give a whole number of at least 1.")
    if args.bf16 and not args.predict:
        raise InputError("--bf16 works with --predict only (it compares fp32 and bf16 predict). Add --predict.")
    if args.scale and not args.quick:
        raise InputError("--scale adds the batching section to --quick (the full grid always has it). Add --quick, "
                         "or leave --scale out.")
    if args.scoring and (args.predict or args.vs_transformers or args.quick):
        raise InputError("--scoring runs the head-scoring benchmark alone. Leave out --quick, --predict and "
                         "--vs-transformers, or --scoring.")
    if args.table and (args.scoring or args.predict or args.vs_transformers):
        raise InputError("--table runs the extraction table alone. Leave out --scoring, --predict and "
                         "--vs-transformers, or --table.")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse and check the flags, then run the benchmark they name; a flag error is one line, exit 2."""
    from ..shell import report_error

    try:
        args = build_parser(prog or "python -m allo_lightning.bench").parse_args(argv)
        check_flags(args)
        from .extraction import check_args, run  # torch from here on

        check_args(args)
        run(args)
    except UserError as e:
        raise SystemExit(report_error(e)) from None
