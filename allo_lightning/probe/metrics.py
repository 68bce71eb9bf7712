"""Probe metrics: one torchmetrics MetricCollection per stage, always computed on the CPU.

Pooled over all residues: ``auprc`` (average precision), ``auroc``, ``f1`` and ``mcc`` (predicted =
score >= the decision threshold, the rule of every output). Per protein (``indexes`` = protein number,
mean over proteins with at least one site; torchmetrics' retrieval grouping), all tie-aware so they never
depend on row order: ``precision_at_k`` (expected precision among each protein's k best-scored residues
over random tie-breaking), ``r_precision`` (the same at R = its number of sites), ``protein_auprc``
(average precision, tied scores one threshold as in scikit-learn), ``protein_auroc``.

Precision@k has ONE implementation, :func:`precision_at_k`: the per-protein metric of the collection
(:class:`TieAwarePrecision`, replacing torchmetrics' ``RetrievalPrecision`` and ``RetrievalRPrecision``,
which break ties by row order) and evaluate's per-protein table (probe/evaluation.py) both call it."""

from __future__ import annotations

import warnings

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryMatthewsCorrCoef,
)
from torchmetrics.functional.classification import binary_average_precision
from torchmetrics.retrieval import RetrievalAUROC
from torchmetrics.retrieval.base import RetrievalMetric
from torchmetrics.utilities import dim_zero_cat

METRIC_NAMES = ("auprc", "auroc", "f1", "mcc", "precision_at_k", "r_precision", "protein_auprc", "protein_auroc")


def precision_at_k(scores, labels, k: int) -> float:
    """Precision among the ``k`` best-scored residues (k capped at the length), tie-aware: the expected
    precision over a random order of the residues tied at the k-th score (so it never depends on row
    order). NaN for an empty set. The one implementation of precision@k (see the module's docstring)."""
    s = torch.as_tensor(scores).detach().cpu().double().ravel()
    y = torch.as_tensor(labels).detach().cpu().double().ravel()
    k = min(int(k), len(s))
    if k < 1:
        return float("nan")
    kth = torch.topk(s, k).values[-1]  # the k-th HIGHEST score
    above, tied = s > kth, s == kth
    from_tied = k - int(above.sum())
    return float((y[above].sum() + from_tied * y[tied].mean()) / k)


class _ProteinMean(RetrievalMetric):
    """A per-group metric averaged in float64 over the groups (proteins) with a positive: torchmetrics'
    own ``compute`` rounds every group's value to the float32 of the scores before averaging."""

    def __init__(self, **kwargs) -> None:
        super().__init__(empty_target_action="skip", **kwargs)

    def compute(self) -> torch.Tensor:
        indexes, preds, target = (dim_zero_cat(x) for x in (self.indexes, self.preds, self.target))
        order = torch.argsort(indexes, stable=True)
        counts = torch.unique_consecutive(indexes[order], return_counts=True)[1].tolist()
        values = [self._metric(p, t).double() for p, t in zip(preds[order].split(counts), target[order].split(counts))
                  if t.sum() > 0]
        return torch.stack(values).mean() if values else torch.tensor(0.0, dtype=torch.float64)


class TieAwarePrecision(_ProteinMean):
    """Mean over groups (proteins) with a positive of :func:`precision_at_k` at ``top_k`` (capped at the
    group's size), or at R = the group's number of positives when ``top_k`` is None (R-precision)."""

    def __init__(self, top_k: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.top_k = top_k

    def _metric(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = int(target.sum()) if self.top_k is None else self.top_k
        return torch.tensor(precision_at_k(preds, target, k), dtype=torch.float64)


class ProteinAveragePrecision(_ProteinMean):
    """Mean over groups with a positive of their average precision, tied scores one threshold (as
    ``sklearn.metrics.average_precision_score``; torchmetrics' RetrievalMAP breaks ties by row order)."""

    def _metric(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_average_precision(preds, target.long())


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
        metrics.update(protein_metrics(top_k))
    return MetricCollection(metrics, compute_groups=False)


def protein_metrics(top_k: int = 10) -> dict:
    """The per-protein (retrieval) metrics, tie-aware (see the module's docstring)."""
    return {"precision_at_k": TieAwarePrecision(top_k), "r_precision": TieAwarePrecision(None),
            "protein_auprc": ProteinAveragePrecision(), "protein_auroc": RetrievalAUROC(empty_target_action="skip")}


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
