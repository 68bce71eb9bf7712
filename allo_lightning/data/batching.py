"""Token-budget batching with length bucketing, sharded across ranks for multi-device predict."""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .protein import Protein

# sequences -> (tokens, real): the backbone's tokenizer, passed in by the caller (data/ does not import backbone/)
Tokenize = Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]]


def token_budget_batches(lengths: Sequence[int], max_tokens: int, bucket: bool = True, *,
                         n_special: int) -> list[list[int]]:
    """Group indices so that batch_size x (longest + n_special) <= max_tokens (a longer protein goes alone);
    ``n_special``: the special tokens the backbone adds to each sequence (``backbone.alphabet.n_special``;
    2 for ESM-C and ESM-2: BOS and EOS). With ``bucket`` the proteins are sorted by length first, so
    batches hold similar lengths."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if bucket else list(range(len(lengths)))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n_tok = lengths[i] + n_special
        if current and (len(current) + 1) * max(longest, n_tok) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n_tok)
    if current:
        batches.append(current)
    return batches


def padding_fraction(lengths: Sequence[int], batches: list[list[int]], *, n_special: int) -> float:
    """Share of padded token slots over all slots (``n_special`` as in :func:`token_budget_batches`)."""
    slots = sum(len(b) * (max(lengths[i] for i in b) + n_special) for b in batches)
    real = sum(lengths[i] + n_special for b in batches for i in b)
    return 1.0 - real / slots if slots else 0.0


class RankBatchSampler(Sampler[list[int]]):
    """Every rank takes batches rank, rank + world, ...: each protein is run exactly once overall. A rank
    left without a batch (more ranks than batches) gets one empty batch (Lightning refuses a rank with none)."""

    def __init__(self, batches: list[list[int]], rank: int = 0, world_size: int = 1) -> None:
        self.batches = batches[rank::world_size] or ([[]] if world_size > 1 else [])

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ProteinDataset(Dataset):
    def __init__(self, proteins: Sequence[Protein]) -> None:
        self.proteins = list(proteins)

    def __len__(self) -> int:
        return len(self.proteins)

    def __getitem__(self, i: int) -> Protein:
        return self.proteins[i]


def collate(proteins: list[Protein], tokenize: Tokenize) -> dict:
    """One batch: the proteins' sequences tokenized by ``tokenize`` (padded to the longest), ids and sequences."""
    if not proteins:  # the empty batch of a rank with nothing to do
        return {"tokens": None, "real": None, "ids": [], "sequences": []}
    tokens, real = tokenize([p.sequence for p in proteins])
    return {"tokens": tokens, "real": real, "ids": [p.id for p in proteins],
            "sequences": [p.sequence for p in proteins]}


class ExtractionDataModule(L.LightningDataModule):
    """Predict-only data module over the proteins that still need extraction."""

    def __init__(self, proteins: Sequence[Protein], tokenize: Tokenize, max_tokens: int = 4096, bucket: bool = True,
                 num_workers: int = 0, batches: list[list[int]] | None = None, *, n_special: int) -> None:
        super().__init__()
        self.dataset = ProteinDataset(proteins)
        self.tokenize = tokenize  # picklable (a function or an Alphabet's method): DataLoader workers get it
        self.n_special = n_special  # special tokens tokenize adds per sequence
        self.max_tokens = max_tokens
        self.bucket = bucket
        self.num_workers = num_workers
        self._batches = batches  # fixed batches (indices into proteins), e.g. to resume a run exactly

    def batches(self) -> list[list[int]]:
        if self._batches is not None:
            return self._batches
        return token_budget_batches([p.length for p in self.dataset.proteins], self.max_tokens, self.bucket,
                                    n_special=self.n_special)

    def predict_dataloader(self) -> DataLoader:
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        batches = self.batches()
        if world > 1:  # every rank runs rank zero's plan: ranks that formed their own (a token budget from another
            # device's free memory, the cache seen at another moment) ran some proteins twice and others never
            batches = self.trainer.strategy.broadcast(batches, src=0)
            self.plan_shared = True  # every rank got this far: the end-of-extraction exchange (settle) is safe
        sampler = RankBatchSampler(batches, rank, world)
        return DataLoader(self.dataset, batch_sampler=sampler, collate_fn=partial(collate, tokenize=self.tokenize),
                          num_workers=self.num_workers)


