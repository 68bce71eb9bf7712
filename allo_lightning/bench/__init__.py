"""Benchmarks (``allo-lightning bench``, ``python -m allo_lightning.bench``): extraction against its floor
and the original approach (:mod:`.extraction`), head scoring, early-exit predict, bf16, loading memory and
the comparison with transformers' ``output_attentions`` (:mod:`.inference`). The command and its flags:
:mod:`.command` (parsed and checked before torch is imported)."""

from .command import main

__all__ = ["main"]
