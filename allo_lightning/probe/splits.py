"""Splits by protein or by cluster: no protein, and no cluster, in two of train / validation / test.

A protein without a ``cluster`` is its own cluster. ``by="protein"`` ignores clusters (every protein
its own group). Proteins with the SAME sequence (under different ids, or in different clusters) are
always in one group: a sequence is never both trained on and tested. Near-identical homologs are kept
together only through the ``cluster`` column (cluster your proteins, e.g. at 30 % identity); nothing
here compares sequences that differ. Groups are shuffled with the seed and dealt out, so splits are
reproducible.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Sequence

from ..data.protein import Protein
from ..errors import AlloError, InputError


@dataclass(frozen=True)
class Split:
    train: list[Protein]
    val: list[Protein]
    test: list[Protein]
    name: str = "split"

    def ids(self) -> dict[str, list[str]]:
        return {"train": [p.id for p in self.train], "val": [p.id for p in self.val],
                "test": [p.id for p in self.test]}


def group_of(protein: Protein, by: str) -> str:
    if by == "cluster":
        return protein.cluster or f"id:{protein.id}"
    if by == "protein":
        return protein.id
    raise AlloError(f"unknown split {by!r}; choose cluster or protein.")


def group_keys(proteins: Sequence[Protein], by: str) -> list[str]:
    """The split group of every protein of ``proteins``: its :func:`group_of` key, merged (union-find) with every
    key that shares a sequence with it, so that one sequence under two ids or clusters is one group. The groups
    of a split's test proteins alone are their groups in the split (a group is never in two parts)."""
    parent: dict[str, str] = {}  # union-find over group keys: keys sharing a sequence become one group

    def root(k: str) -> str:
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k

    first_key: dict[str, str] = {}
    for p in proteins:
        k = group_of(p, by)
        a, b = root(k), root(first_key.setdefault(p.sequence, k))
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [root(group_of(p, by)) for p in proteins]


def _groups(proteins: Sequence[Protein], by: str, seed: int) -> list[list[Protein]]:
    for p in proteins:
        if p.sites is None:
            raise InputError(f"{p.where}: no site labels; the probe needs "
                             "labelled proteins (a table with a 'sites' column).")
    groups: dict[str, list[Protein]] = {}
    for p, k in zip(proteins, group_keys(proteins, by)):
        groups.setdefault(k, []).append(p)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    return [groups[k] for k in keys]


def _need(n_groups: int, want: int, by: str, purpose: str = "to train, validate and test") -> None:
    if n_groups < want:
        raise InputError(f"only {n_groups} {'clusters' if by == 'cluster' else 'proteins'} in the data: at least "
                         f"{want} are needed {purpose} without sharing one. Add proteins, or use "
                         "--probe.split protein if clusters are too coarse.")


def _flat(groups: Sequence[list[Protein]]) -> list[Protein]:
    return [p for g in groups for p in g]


def _n(fraction: float, n: int) -> int:
    return max(1, int(round(fraction * n)))


def _carve_val(rest: list[list[Protein]], val_fraction: float, n_all: int) -> tuple[list, list]:
    n_val = min(_n(val_fraction, n_all), len(rest) - 1)
    return rest[n_val:], rest[:n_val]


def train_val_test(proteins: Sequence[Protein], by: str = "cluster", val_fraction: float = 0.2,
                   test_fraction: float = 0.2, seed: int = 0) -> Split:
    """One holdout split. ``test_fraction=0``: no test set (the final probe, trained on all proteins
    but the validation part; estimate its performance with report or evaluate)."""
    groups = _groups(proteins, by, seed)
    if test_fraction <= 0:
        _need(len(groups), 2, by, "to train and validate")
        train, val = _carve_val(groups, val_fraction, len(groups))
        return check(Split(_flat(train), _flat(val), [], "all"), by)
    _need(len(groups), 3, by)
    n_test = min(_n(test_fraction, len(groups)), len(groups) - 2)
    test, rest = groups[:n_test], groups[n_test:]
    train, val = _carve_val(rest, val_fraction, len(groups))
    return check(Split(_flat(train), _flat(val), _flat(test), "holdout"), by)


def kfold(proteins: Sequence[Protein], k: int = 5, by: str = "cluster", val_fraction: float = 0.2,
          seed: int = 0) -> list[Split]:
    """Cluster k-fold: every group is in the test set of exactly one fold; validation groups are carved
    from the other folds' groups."""
    groups = _groups(proteins, by, seed)
    _need(len(groups), 3, by)
    if k > len(groups):
        raise InputError(f"--report.folds {k}: the data has only {len(groups)} "
                         f"{'clusters' if by == 'cluster' else 'proteins'}, so at most {len(groups)} folds are "
                         "possible. "
                         "Give fewer folds, or use --report.scheme logo.")
    folds = [groups[i::k] for i in range(k)]
    out = []
    for i in range(k):
        rest = [g for j, f in enumerate(folds) if j != i for g in f]
        train, val = _carve_val(rest, val_fraction, len(groups))
        out.append(check(Split(_flat(train), _flat(val), _flat(folds[i]), f"fold{i + 1}"), by))
    return out


def leave_one_out(proteins: Sequence[Protein], by: str = "cluster", val_fraction: float = 0.2,
                  seed: int = 0) -> list[Split]:
    """Leave one group out (with by=cluster on GPCRs: leave one GPCR out)."""
    groups = _groups(proteins, by, seed)
    _need(len(groups), 3, by)
    out = []
    for i, g in enumerate(groups):
        rest = groups[:i] + groups[i + 1:]
        train, val = _carve_val(rest, val_fraction, len(groups))
        name = group_of(g[0], by).removeprefix("id:")
        out.append(check(Split(_flat(train), _flat(val), g, f"out:{name}"), by))
    return out


def make_splits(proteins: Sequence[Protein], scheme: str, folds: int, by: str, val_fraction: float,
                seed: int) -> list[Split]:
    if scheme == "kfold":
        return kfold(proteins, folds, by, val_fraction, seed)
    if scheme == "logo":
        return leave_one_out(proteins, by, val_fraction, seed)
    raise InputError(f"unknown report scheme {scheme!r}; choose kfold or logo (--report.scheme).")


def check(split: Split, by: str = "cluster") -> Split:
    """Raise if a protein, a cluster or a sequence is in two parts, or if training or validation has no site."""
    parts = {"train": split.train, "val": split.val, "test": split.test}
    seen: dict[str, str] = {}
    for name, ps in parts.items():
        for key in ({group_of(p, by) for p in ps} | {f"protein:{p.id}" for p in ps}
                    | {"sequence " + hashlib.sha256(p.sequence.encode()).hexdigest()[:12] for p in ps}):
            if key in seen and seen[key] != name:
                raise AssertionError(f"{key} is in both {seen[key]} and {name} of {split.name}")
            seen[key] = name
    for name in ("train", "val"):
        if not any(p.sites for p in parts[name]):
            raise InputError(f"the {name} proteins of {split.name} ({', '.join(p.id for p in parts[name][:5])}) "
                             "have no allosteric site: add labelled proteins or change --seed.")
    return split
