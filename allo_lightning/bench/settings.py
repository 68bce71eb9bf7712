"""The settings of one ``bench`` run: a frozen dataclass made from the parsed flags, checked once when it is
made, then passed to the benchmarks as a parameter (no module-level state set from the flags). Imports
neither torch nor the backbone table, so the command checks it before anything heavy is imported; what
needs the table or a device (shapes, context lengths, the device itself) is checked by
:func:`.extraction.check_settings` before any work."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, Optional

from ..errors import InputError

Clock = Literal["wall", "cpu"]
KERNELS = ("chunked", "fused", "compiled", "triton", "flash")


@dataclass(frozen=True)
class BenchSettings:
    """What to run and how; the flag of each field is ``--`` + its name with ``-`` for ``_``."""

    quick: bool = False
    scoring: bool = False
    scale: bool = False
    shapes: Optional[tuple[str, ...]] = None
    lengths: Optional[tuple[int, ...]] = None
    repeats: Optional[int] = None
    original_heads: Optional[int] = None
    clock: Clock = "wall"  # the clock of the ratios; only a CPU device uses "cpu" (see :meth:`clock_on`)
    device: str = "auto"
    threads: Optional[int] = None
    predict: bool = False
    bf16: bool = False
    vs_transformers: bool = False
    table: bool = False
    max_tokens: int = 16384
    residues: Optional[int] = None
    kernels: Optional[tuple[str, ...]] = None
    stream: bool = False
    checkpoint: Optional[str] = None
    proteins: Optional[tuple[int, ...]] = None
    min_length: int = 50
    max_length: int = 400
    work: Optional[str] = None
    out: Optional[str] = None  # the run's record (config.yaml, run.log); None: the terminal only
    seed: int = 0  # --stream's random sequences (the other benchmarks have fixed seeds)
    memory_child: Optional[tuple[str, str, str, str]] = None  # internal: one memory measurement
    child: Optional[tuple[str, ...]] = None  # internal: one inference child process

    def __post_init__(self) -> None:
        for flag, values in (("--lengths", self.lengths), ("--repeats", [self.repeats]),
                             ("--threads", [self.threads]), ("--original-heads", [self.original_heads]),
                             ("--max-tokens", [self.max_tokens]), ("--residues", [self.residues]),
                             ("--proteins", self.proteins), ("--min-length", [self.min_length]),
                             ("--max-length", [self.max_length])):
            bad = [v for v in values or () if v is not None and v < 1]
            if bad:
                raise InputError(f"{flag} {bad[0]}: give a whole number of at least 1.")
        if self.clock not in ("wall", "cpu"):
            raise InputError(f"--clock {self.clock!r}: choose wall or cpu.")
        bad_kernels = [k for k in self.kernels or () if k not in KERNELS]
        if bad_kernels:
            raise InputError(f"--kernels {bad_kernels[0]}: not a statistics kernel. Choose from: {', '.join(KERNELS)}.")
        if self.bf16 and not self.predict:
            raise InputError("--bf16 works with --predict only (it compares fp32 and bf16 predict). Add --predict.")
        if self.scale and not self.quick:
            raise InputError("--scale adds the batching section to --quick (the full grid always has it). Add "
                             "--quick, or leave --scale out.")
        if self.scoring and (self.predict or self.vs_transformers or self.quick):
            raise InputError("--scoring runs the head-scoring benchmark alone. Leave out --quick, --predict and "
                             "--vs-transformers, or --scoring.")
        if self.table and (self.scoring or self.predict or self.vs_transformers):
            raise InputError("--table runs the extraction table alone. Leave out --scoring, --predict and "
                             "--vs-transformers, or --table.")
        others = [f for f, on in (("--quick", self.quick), ("--scoring", self.scoring), ("--predict", self.predict),
                                  ("--vs-transformers", self.vs_transformers), ("--table", self.table)) if on]
        if self.stream and others:
            raise InputError(f"--stream times predict alone. Leave out {', '.join(others)}, or --stream.")
        if self.stream and not self.checkpoint:
            raise InputError("--stream needs --checkpoint FILE: a probe checkpoint on the tiny backbone "
                             "(allo-lightning fit --config configs/smoke.yaml writes "
                             "checkpoints/smoke.tiny.safetensors).")
        stream_only = [f for f, on in (("--checkpoint", self.checkpoint is not None),
                                       ("--proteins", self.proteins is not None), ("--work", self.work is not None),
                                       ("--min-length", self.min_length != 50),
                                       ("--max-length", self.max_length != 400), ("--seed", self.seed != 0)) if on]
        if stream_only and not self.stream:
            raise InputError(f"{stream_only[0]} works with --stream only (the other benchmarks have fixed seeds and "
                             "proteins: their timings do not depend on them). Add --stream, or leave it out.")
        if self.out is not None and (self.memory_child is not None or self.child is not None):
            raise InputError("--out is not a flag of the internal child runs; leave it out.")
        table_only = [f for f, on in (("--residues", self.residues is not None),
                                      ("--kernels", self.kernels is not None),
                                      ("--max-tokens", self.max_tokens != 16384)) if on]
        if table_only and not self.table:
            raise InputError(f"{table_only[0]} works with --table only (the other benchmarks time one protein at a "
                             "time). Add --table, or leave it out.")
        if self.max_length < self.min_length:
            raise InputError(f"--max-length {self.max_length} is below --min-length {self.min_length}. Give "
                             "--max-length at least --min-length.")
        if self.memory_child is not None and (len(self.memory_child) != 4 or not self.memory_child[2].isdigit()):
            raise InputError(f"--memory-child {' '.join(self.memory_child)}: an internal flag (METHOD SHAPE LENGTH "
                             "DEVICE); do not use it directly.")

    @classmethod
    def from_values(cls, values: dict) -> "BenchSettings":
        """From the parsed flags (lists become tuples; other keys, e.g. the seed, are not bench settings)."""
        kw = {f.name: values[f.name] for f in fields(cls) if f.name in values}
        for key, value in kw.items():
            if isinstance(value, list):
                kw[key] = tuple(value)
        return cls(**kw)

    def clock_on(self, device_type: str) -> Clock:
        """The clock the ratios use on this kind of device: the process CPU time measures nothing of the
        work of a GPU, so ``--clock cpu`` counts on a CPU device only."""
        return self.clock if device_type == "cpu" else "wall"
