"""Benchmarks (``python -m allo_lightning.bench``): extraction against its floor and the original
approach (:mod:`.extraction`), head scoring, early-exit predict, bf16, loading memory and the
comparison with transformers' ``output_attentions`` (:mod:`.inference`)."""

from .extraction import main

__all__ = ["main"]
