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
