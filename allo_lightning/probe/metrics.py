"""Probe metrics: one torchmetrics MetricCollection per stage, always computed on the CPU.

Pooled over all residues: ``auprc`` (average precision), ``auroc``, ``f1`` and ``mcc`` (predicted =
score >= the decision threshold, the rule of every output). Per protein (``indexes`` = protein number,
mean over proteins with at least one site), all tie-aware so they never depend on row order:
``precision_at_k`` (expected precision among each protein's k best-scored residues over random
tie-breaking), ``r_precision`` (the same at R = its number of sites), ``protein_auprc`` (average
precision, tied scores one threshold as in scikit-learn), ``protein_auroc``."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryMatthewsCorrCoef,
)
from torchmetrics.retrieval import RetrievalAUROC, RetrievalMAP, RetrievalPrecision, RetrievalRPrecision

METRIC_NAMES = ("auprc", "auroc", "f1", "mcc", "precision_at_k", "r_precision", "protein_auprc", "protein_auroc")


def probe_metrics(top_k: int = 10, threshold: float = 0.5, per_protein: bool = True) -> MetricCollection:
    """The metric collection of one stage; ``per_protein=False``: the pooled metrics only (used for
    the per-epoch validation that drives early stopping, where speed matters)."""
    metrics = {
        "auprc": BinaryAveragePrecision(),
        "auroc": BinaryAUROC(),
        "f1": BinaryF1Score(threshold=threshold),
        "mcc": BinaryMatthewsCorrCoef(threshold=threshold),
    }
    if per_protein:
        metrics.update({
            "precision_at_k": RetrievalPrecision(top_k=top_k, empty_target_action="skip", adaptive_k=True),
            "r_precision": RetrievalRPrecision(empty_target_action="skip"),
            "protein_auprc": RetrievalMAP(empty_target_action="skip"),
            "protein_auroc": RetrievalAUROC(empty_target_action="skip"),
        })
    return MetricCollection(metrics, compute_groups=False)


def compute_metrics(scores: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, threshold: float = 0.5,
                    top_k: int = 10) -> dict[str, float]:
    """All metrics of one set of scores (probabilities), on the CPU."""
    labels = labels.detach().long().cpu()
    scores = scores.detach().float().cpu()
    index = index.detach().long().cpu()
    m = probe_metrics(top_k, threshold)
    m.update(scores, labels, indexes=index)
    # F1 and MCC by the rule of ``predicted``: score >= threshold (torchmetrics' threshold is strict)
    hard = MetricCollection({"f1": BinaryF1Score(), "mcc": BinaryMatthewsCorrCoef()}, compute_groups=False)
    hard.update((scores >= threshold).float(), labels)
    with warnings.catch_warnings():  # torchmetrics warns (and returns 0) on one-class sets: handled below
        warnings.simplefilter("ignore")
        out = {k: float(v) for k, v in m.compute().items()}
        out.update({k: float(v) for k, v in hard.compute().items()})
    out.update(per_protein_tie_aware(scores.double().numpy(), labels.numpy(), index.numpy(), top_k))
    for k in undefined(labels):
        out[k] = float("nan")
    return out


def undefined(labels: torch.Tensor) -> tuple[str, ...]:
    """Names of the metrics that have no meaning on a set with these labels."""
    n_pos = int(labels.long().sum())
    if n_pos == 0:
        return METRIC_NAMES
    if n_pos == len(labels):
        return ("auroc", "mcc", "protein_auroc")
    return ()


def undefined_warning(metrics: dict, where: str) -> str | None:
    """One line naming the undefined (NaN) metrics of ``metrics``, or None when all are defined."""
    bad = [k for k in METRIC_NAMES if k in metrics and metrics[k] != metrics[k]]
    if not bad:
        return None
    return (f"warning: {', '.join(bad)} undefined on {where} (no allosteric residue, or no other residue, among "
            "them); written as null, not 0.")


def best_f1_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Score threshold with the best F1 on these (validation) scores; 0.5 when there is no positive."""
    s, y = scores.double().cpu(), labels.long().cpu()
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return 0.5
    order = torch.argsort(s, descending=True)
    s, y = s[order], y[order]
    tp = torch.cumsum(y, 0).double()
    k = torch.arange(1, len(y) + 1, dtype=torch.double)
    f1 = 2 * tp / (k + n_pos)
    last = torch.ones(len(s), dtype=torch.bool)  # only cut between distinct scores
    last[:-1] = s[1:] != s[:-1]
    f1 = torch.where(last, f1, torch.full_like(f1, -1.0))
    i = int(torch.argmax(f1))
    nxt = float(s[i + 1]) if i + 1 < len(s) else float(s[i]) - 1e-6
    return float((float(s[i]) + nxt) / 2)  # predicted = score >= threshold selects exactly the top i+1


def precision_at_k(scores, labels, k: int) -> float:
    """Precision among the ``k`` best-scored residues (k capped at the length), tie-aware: the expected
    precision over a random order of the residues tied at the k-th score (so it never depends on row
    order). NaN for an empty set."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    k = min(int(k), len(s))
    if k < 1:
        return float("nan")
    kth = np.sort(s)[::-1][k - 1]
    above, tied = s > kth, s == kth
    from_tied = k - int(above.sum())
    return float((y[above].sum() + from_tied * y[tied].mean()) / k)


def per_protein_tie_aware(scores, labels, index, top_k: int) -> dict[str, float]:
    """Means over the proteins with at least one site of: ``precision_at_k`` (tie-aware, k capped at the
    length), ``r_precision`` (tie-aware precision among the top R, R = the protein's sites) and
    ``protein_auprc`` (``sklearn.metrics.average_precision_score``: tied scores are one threshold).
    These replace torchmetrics' retrieval versions, whose value depends on the row order of tied scores."""
    from sklearn.metrics import average_precision_score

    s, y, idx = (np.asarray(a).ravel() for a in (scores, labels, index))
    out: dict[str, list[float]] = {"precision_at_k": [], "r_precision": [], "protein_auprc": []}
    for p in np.unique(idx):
        yp, sp = y[idx == p], s[idx == p]
        n_sites = int(yp.sum())
        if n_sites == 0:
            continue
        out["precision_at_k"].append(precision_at_k(sp, yp, top_k))
        out["r_precision"].append(precision_at_k(sp, yp, n_sites))
        out["protein_auprc"].append(float(average_precision_score(yp, sp)))
    return {k: float(np.mean(v)) if v else 0.0 for k, v in out.items()}
