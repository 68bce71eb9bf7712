"""Token-budget batching, length bucketing, padding fraction and the per-rank split of batches."""

from __future__ import annotations

import random

import pytest
import torch

from allo_lightning.backbone import tokenize
from allo_lightning.data.batching import (
    ExtractionDataModule,
    RankBatchSampler,
    collate,
    padding_fraction,
    token_budget_batches,
)
from tests.conftest import random_proteins


def _lengths(n=200, seed=0):
    rng = random.Random(seed)
    return [rng.randint(30, 1200) for _ in range(n)]


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("max_tokens", [1, 500, 4096])
def test_every_index_once_and_budget_respected(bucket, max_tokens):
    lengths = _lengths()
    batches = token_budget_batches(lengths, max_tokens, bucket, n_special=2)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        if len(b) > 1:  # a protein longer than the budget goes alone
            assert len(b) * (max(lengths[i] for i in b) + 2) <= max_tokens
    if max_tokens == 1:
        assert all(len(b) == 1 for b in batches)


def test_bucketing_groups_similar_lengths_and_cuts_padding():
    lengths = _lengths()
    bucketed = token_budget_batches(lengths, 4096, bucket=True, n_special=2)
    plain = token_budget_batches(lengths, 4096, bucket=False, n_special=2)
    flat = [lengths[i] for b in bucketed for i in b]
    assert flat == sorted(lengths, reverse=True)
    assert padding_fraction(lengths, bucketed, n_special=2) < 0.05 < padding_fraction(lengths, plain, n_special=2)


def test_padding_fraction_by_hand():
    lengths = [10, 4, 8]
    # one batch: 3 x (10 + 2) slots, real tokens 12 + 6 + 10
    assert padding_fraction(lengths, [[0, 1, 2]], n_special=2) == pytest.approx(1 - 28 / 36)
    assert padding_fraction(lengths, [[0], [1], [2]], n_special=2) == 0.0
    assert padding_fraction([], [], n_special=2) == 0.0


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_ranks_split_batches_without_loss_or_duplicates(world):
    batches = token_budget_batches(_lengths(53), 3000, n_special=2)
    per_rank = [list(RankBatchSampler(batches, r, world)) for r in range(world)]
    got = sorted(i for rank in per_rank for b in rank for i in b)
    assert got == list(range(53))
    assert sum(len(s) for s in per_rank) == len(batches)
    assert max(map(len, per_rank)) - min(map(len, per_rank)) <= 1


class _FakeTrainer:
    def __init__(self, rank, world):
        self.global_rank, self.world_size = rank, world
        self.strategy = self  # every rank forms the same batches here: rank zero's plan is its own

    def broadcast(self, obj, src=0):
        return obj


@pytest.mark.parametrize("world", [1, 2, 3])
def test_datamodule_gives_every_protein_to_exactly_one_rank(world):
    proteins = random_proteins(17, lo=10, hi=90, seed=5)
    seen = []
    for rank in range(world):
        dm = ExtractionDataModule(proteins, tokenize, max_tokens=256, n_special=2)
        dm.trainer = _FakeTrainer(rank, world)
        for batch in dm.predict_dataloader():
            B, T = batch["tokens"].shape
            assert B * T <= 256 or B == 1
            assert batch["real"].sum(1).tolist() == [len(s) + 2 for s in batch["sequences"]]
            seen += batch["ids"]
    assert sorted(seen) == sorted(p.id for p in proteins)


def test_collate_pads_to_longest():
    proteins = random_proteins(3, lo=5, hi=12, seed=1)
    batch = collate(proteins, tokenize)
    n = max(p.length for p in proteins) + 2
    assert batch["tokens"].shape == (3, n) and batch["real"].dtype == torch.bool
    assert batch["ids"] == [p.id for p in proteins]
