"""Metrics that must not depend on row order or on a strict/non-strict threshold: F1/MCC use the same rule
as ``predicted`` (score >= threshold); precision@k and per-protein AUPRC are tie-aware (expected value
over random tie-breaking; sklearn's grouping of tied thresholds), and precision@k is over the TOP scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef

from allo_lightning.probe import compute_metrics
from allo_lightning.probe.metrics import precision_at_k


def test_f1_and_mcc_count_a_score_equal_to_the_threshold_as_predicted():
    y = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0])
    s = torch.tensor([0.5, 0.5, 0.5, 0.2, 0.9, 0.1, 0.3, 0.5])
    m = compute_metrics(s, y, torch.zeros(8, dtype=torch.long), threshold=0.5, top_k=3)
    pred = (s.numpy() >= 0.5).astype(int)  # what predicted / predictions.csv use
    assert m["f1"] == pytest.approx(f1_score(y.numpy(), pred))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y.numpy(), pred))


def _brute_precision_at_k(y, s, k):
    """Mean over every order of the tied residues (all permutations) of the precision among the first k."""
    vals = []
    for perm in itertools.permutations(range(len(s))):
        order = sorted(perm, key=lambda i: -s[i])  # stable: ties in the permutation's order
        vals.append(np.mean([y[i] for i in order[:k]]))
    return float(np.mean(vals))


def test_precision_at_k_is_the_expectation_over_tie_breaking():
    y = np.array([1, 0, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.5, 0.2])
    for k in (1, 2, 3, 4, 5, 7, 9):
        assert precision_at_k(s, y, k) == pytest.approx(_brute_precision_at_k(y, s, min(k, len(y)))), k


def test_precision_at_k_is_over_the_top_scores():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05, 0.0])
    assert precision_at_k(s, y, 3) == 1.0  # the lowest three would give 0
    m = compute_metrics(torch.tensor(s), torch.tensor(y), torch.zeros(8, dtype=torch.long), top_k=3)
    assert m["precision_at_k"] == 1.0


def test_per_protein_metrics_do_not_depend_on_row_order_with_ties():
    rng = np.random.default_rng(0)
    n_prot, length = 4, 30
    y = (rng.random(n_prot * length) < 0.2).astype(int)
    y[::length] = 1
    s = np.round(rng.random(n_prot * length) + 0.3 * y, 1)  # heavy ties
    idx = np.repeat(np.arange(n_prot), length)
    base = compute_metrics(torch.tensor(s), torch.tensor(y), torch.tensor(idx), threshold=0.5, top_k=5)
    want_ap = np.mean([average_precision_score(y[idx == p], s[idx == p]) for p in range(n_prot)])
    assert base["protein_auprc"] == pytest.approx(want_ap, abs=1e-6)
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(len(y))
        m = compute_metrics(torch.tensor(s[perm]), torch.tensor(y[perm]), torch.tensor(idx[perm]), threshold=0.5,
                            top_k=5)
        for key in ("precision_at_k", "protein_auprc", "r_precision", "auprc", "f1"):
            assert m[key] == pytest.approx(base[key], abs=1e-6), key


# one precision@k: the metric collection (fit, evaluate's metrics.json, report) and evaluate's per-protein
# table call the same function; both equal the mean over every order of the tied residues

TINY_CASES = [  # (labels, scores): tied and untied, sites at the top, the bottom and in the ties
    ([1, 0, 1, 0, 0, 1, 0], [0.875, 0.5, 0.5, 0.5, 0.125, 0.5, 0.25]),
    ([0, 0, 0, 1, 1, 1], [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]),  # the sites have the LOWEST scores
    ([1, 1, 0, 0, 0, 0], [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]),  # the sites have the highest scores
    ([0, 1, 0, 1, 0], [0.25, 0.25, 0.25, 0.25, 0.25]),  # all tied
    ([0, 1, 1, 0, 0, 0, 1], [0.31, 0.72, 0.05, 0.64, 0.18, 0.93, 0.47]),  # no ties
]


def _call_sites(cases, k):
    """precision_at_k per protein from evaluate's table and from the metric collection (one protein at a
    time), and the collection's mean over all proteins at once."""
    from types import SimpleNamespace

    from allo_lightning.data.protein import Protein
    from allo_lightning.probe.evaluation import per_protein

    y = torch.tensor([v for ys, _ in cases for v in ys])
    s = torch.tensor([v for _, ss in cases for v in ss], dtype=torch.float32)
    idx = torch.tensor([i for i, (ys, _) in enumerate(cases) for _ in ys])
    proteins = [Protein(f"P{i}", "A" * len(ys)) for i, (ys, _) in enumerate(cases)]
    data = SimpleNamespace(y=y, index=idx, proteins=proteins)
    table = [e["precision_at_k"] for e in per_protein(data, s, k)]
    collection = [compute_metrics(s[idx == i], y[idx == i], torch.zeros(len(ys), dtype=torch.long), top_k=k)
                  for i, (ys, _) in enumerate(cases)]
    return table, collection, compute_metrics(s, y, idx, top_k=k)


def test_one_precision_at_k_for_metrics_and_per_protein_table_equals_enumeration():
    for k in (1, 2, 3, 4, 6, 9):
        table, collection, pooled = _call_sites(TINY_CASES, k)
        for (ys, ss), got_table, got in zip(TINY_CASES, table, collection):
            want = _brute_precision_at_k(ys, np.float32(ss), min(k, len(ys)))
            assert got_table == got["precision_at_k"], (k, ys, ss)  # identical, not just close
            assert got_table == pytest.approx(want, rel=1e-12, abs=1e-12), (k, ys, ss)
            r = sum(ys)
            assert got["r_precision"] == pytest.approx(_brute_precision_at_k(ys, np.float32(ss), r), rel=1e-12)
        assert pooled["precision_at_k"] == pytest.approx(np.mean(table), rel=1e-12)
    table, *_ = _call_sites(TINY_CASES, 3)
    assert table[1] == 0.0 and table[2] == pytest.approx(2 / 3)  # the top three, never the lowest three
