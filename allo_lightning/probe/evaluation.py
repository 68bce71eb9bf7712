"""Evaluate a trained probe's scores on labelled proteins: the pooled metrics (from the same
torchmetrics collection as training), per-protein AUPRC, and 95 % bootstrap intervals over proteins.

AUPRC is average precision (``sklearn.metrics.average_precision_score`` on the same scores).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .bootstrap import COVERAGE, bootstrap_ci, pooled_metric
from .metrics import compute_metrics, precision_at_k
from .train import ResidueSet


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    return pooled_metric(y, s, "auroc", groups=np.zeros(len(y))) if 0 < y.sum() < len(y) else float("nan")


def per_protein(data: ResidueSet, scores: torch.Tensor, top_k: int) -> list[dict]:
    """One dict per protein: id, length, n_sites, auprc and auroc (None without a site / a non-site),
    precision_at_k (k capped at the protein's length; tie-aware: expected over random tie-breaking)."""
    out = []
    y_all, s_all, idx = data.y.numpy(), scores.double().numpy(), data.index.numpy()
    for i, p in enumerate(data.proteins):
        y, s = y_all[idx == i], s_all[idx == i]
        n_sites = int(y.sum())
        defined = n_sites > 0
        out.append({"id": p.id, "length": len(y), "n_sites": n_sites,
                    "auprc": pooled_metric(y, s, "auprc", groups=np.zeros(len(y))) if defined else None,
                    "auroc": _auroc(y, s) if defined and n_sites < len(y) else None,
                    "precision_at_k": precision_at_k(s, y, top_k) if defined else None})
    return out


def evaluate_scores_with_intervals(data: ResidueSet, scores: torch.Tensor, threshold: float, top_k: int,
                                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Pooled metrics at ``threshold`` (NaN where undefined), ``base_rate``, per-protein metrics and
    percentile bootstrap intervals over proteins of auprc and auroc (``intervals``)."""
    metrics = compute_metrics(scores, data.y, data.index, threshold, top_k)
    metrics["base_rate"] = data.base_rate
    metrics["n_proteins"] = len(data.proteins)
    metrics["n_residues"] = len(data.y)
    metrics["n_sites"] = int(data.y.sum())
    metrics["n_proteins_with_sites"] = len({int(i) for i in data.index[data.y == 1].tolist()})
    cis = bootstrap_ci(data.y.numpy(), scores.double().numpy(), groups=data.index.numpy(), n_boot=n_boot, seed=seed,
                       level=level)
    metrics["intervals"] = {m: {**iv.as_dict(), "over": "proteins (percentile bootstrap)", "coverage": COVERAGE}
                            for m, iv in cis.items()}
    for m, iv in cis.items():
        metrics[f"{m}_lo"], metrics[f"{m}_hi"] = iv.lo, iv.hi
    metrics["per_protein"] = per_protein(data, scores, top_k)
    return metrics


def is_defined(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
