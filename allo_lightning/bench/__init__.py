"""Benchmarks (``python -m allo_lightning.bench``): extraction against its floor and the original
approach (:mod:`.extraction`), head scoring, early-exit predict, bf16, loading memory and the
comparison with transformers' ``output_attentions`` (:mod:`.inference`)."""

from .cli import main  # flags parsed before torch is imported (the benchmarks import it to run)

__all__ = ["main"]
