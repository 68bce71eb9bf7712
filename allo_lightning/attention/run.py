"""Extraction end to end: which proteins still need work, ``trainer.predict``, the cache."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import lightning as L

from .. import interrupt
from ..backbone import Backbone
from ..data.batching import ExtractionDataModule, token_budget_batches
from ..data.protein import Protein
from ..errors import InputError
from .cache import StatsCache
from .extractor import AttentionExtractor, CacheWriter
from .stats import ProteinStats

# Trainer arguments that make no sense for extraction and are dropped from the user's trainer section.
_PREDICT_DROP = {"max_epochs", "min_epochs", "max_steps", "min_steps", "check_val_every_n_epoch",
                 "val_check_interval", "num_sanity_val_steps", "gradient_clip_val", "accumulate_grad_batches",
                 "limit_train_batches", "limit_val_batches", "limit_test_batches", "log_every_n_steps",
                 "enable_checkpointing", "logger", "callbacks", "use_distributed_sampler"}


@dataclass
class Extraction:
    """Statistics of a set of proteins, read from the cache on demand."""

    proteins: list[Protein]
    cache: StatsCache
    backbone_identity: str
    n_layers: int
    n_heads: int
    theta: float
    computed: list[str] = field(default_factory=list)  # ids run now (the rest came from the cache)
    map_heads: list[tuple[int, int]] = field(default_factory=list)
    embeddings: bool = False

    def stats(self, protein: Protein) -> ProteinStats:
        return self.cache.load(protein.sequence, self.map_heads, self.embeddings)

    def __iter__(self) -> Iterator[tuple[Protein, ProteinStats]]:
        for p in self.proteins:
            yield p, self.stats(p)

    def __len__(self) -> int:
        return len(self.proteins)


def predict_trainer(trainer_kwargs: dict | None, callbacks: list) -> L.Trainer:
    kwargs = {k: v for k, v in (trainer_kwargs or {}).items() if k not in _PREDICT_DROP and v is not None}
    return L.Trainer(**kwargs, logger=False, enable_checkpointing=False, callbacks=callbacks,
                     use_distributed_sampler=False)


def extract(
    proteins: Sequence[Protein],
    backbone: Backbone,
    theta: float = 0.3,
    cache_dir: str | None = None,
    trainer_kwargs: dict | None = None,
    max_tokens: int = 4096,
    bucket: bool = True,
    map_heads: Sequence[tuple[int, int]] = (),
    embeddings: bool = False,
    dtype: str = "fp32",
) -> Extraction:
    """Compute (or reuse from the cache) the attention statistics of ``proteins``."""
    if dtype not in ("fp32", "bf16"):
        raise InputError(f"--model.dtype {dtype!r}: choose fp32 or bf16 (bf16 on CUDA only).")
    # bf16 statistics differ from fp32 ones: they get their own cache entries
    cache = StatsCache(cache_dir, backbone.identity + ("-bf16" if dtype == "bf16" else ""), theta)
    map_heads = [tuple(map(int, h)) for h in map_heads]
    too_long = [p for p in proteins if p.length > backbone.max_length]
    if too_long:
        p = too_long[0]
        raise InputError(
            f"{p.source or p.id}: protein {p.id!r} has {p.length} residues, more than {backbone.name}'s limit "
            f"of {backbone.max_length}. Split it into domains or remove it; nothing was computed."
        )
    unique, seen = [], set()  # one entry per distinct sequence (the first id naming it)
    for p in proteins:
        if p.sequence not in seen:
            unique.append(p)
            seen.add(p.sequence)
    missing = {i for i, p in enumerate(unique) if not cache.complete(p.sequence, map_heads, embeddings)}
    # Batches are formed over ALL proteins and every batch holding a missing one is run whole: a resumed
    # run pads each protein exactly as an uninterrupted run does, so its statistics are bit-identical.
    batches = [b for b in token_budget_batches([p.length for p in unique], max_tokens, bucket)
               if any(i in missing for i in b)]
    result = Extraction(list(proteins), cache, backbone.identity, backbone.n_layers, backbone.n_heads, theta,
                        map_heads=map_heads, embeddings=embeddings)
    if batches:
        module = AttentionExtractor(backbone, theta, map_heads, embeddings, dtype)
        writer = CacheWriter(cache)
        trainer = predict_trainer(trainer_kwargs, [writer])
        data = ExtractionDataModule(unique, max_tokens, bucket, batches=batches)
        with warnings.catch_warnings(), interrupt.graceful():  # a signal: finish the batch in flight
            warnings.filterwarnings("ignore", message=".*custom batch sampler.*")  # our sampler covers every index
            trainer.predict(module, datamodule=data, return_predictions=False)
        result.computed = [unique[i].id for i in sorted(missing)]
    return result
