"""Probe figures: precision-recall curves and the data-efficiency curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..outputs import save_figure


def pr_curves(curves: Mapping[str, tuple], path: str | Path, title: str = "precision-recall") -> Path:
    """One PR curve per entry ``name -> (labels, scores)`` (pooled residues), with the base rate."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    base = None
    for name, (labels, scores) in curves.items():
        y, s = np.asarray(labels).astype(int), np.asarray(scores, dtype=float)
        if y.sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(y, s)
        ax.plot(recall, precision, label=f"{name} (AP {average_precision_score(y, s):.3f})", lw=1.5)
        base = y.mean()
    if base is not None:
        ax.axhline(base, color="grey", ls="--", lw=1, label=f"base rate {base:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    if base is None:  # no labelled site: precision and recall are undefined
        ax.text(0.5, 0.5, "no allosteric site in these labels:\nprecision and recall are undefined", ha="center",
                va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, path)


def _proteins_used(row: dict) -> float:
    """Training + validation proteins of a data-efficiency point (training only when n_val is absent)."""
    return row["n_train_val"] if "n_train_val" in row else row["n_train"] + row.get("n_val", 0)


def data_efficiency(rows: Sequence[dict], path: str | Path, base_rate: float | None = None,
                    title: str = "data efficiency") -> Path:
    """AUPRC against the number of proteins each point used (training + validation: ``n_train_val``, else
    n_train + n_val); ``rows``: dicts with features, n_train, auprc and
    auprc_lo/auprc_hi (error bars: that interval) or auprc_sd (one line per features kind)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for name in dict.fromkeys(r["features"] for r in rows):
        sub = sorted((r for r in rows if r["features"] == name), key=lambda r: _proteins_used(r))
        x = np.array([_proteins_used(r) for r in sub], dtype=float)
        y = np.array([r["auprc"] for r in sub], dtype=float)
        if all("auprc_lo" in r for r in sub):
            lo = np.array([r["auprc_lo"] for r in sub], dtype=float)
            hi = np.array([r["auprc_hi"] for r in sub], dtype=float)
            err = np.nan_to_num(np.stack([y - lo, hi - y]).clip(min=0))
        else:
            err = np.array([r.get("auprc_sd") or 0.0 for r in sub], dtype=float)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
    if base_rate is not None:
        ax.axhline(base_rate, color="grey", ls="--", lw=1, label=f"base rate {base_rate:.3f}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="proteins used (training + validation)", ylabel="test AUPRC (mean; bars: 95 % interval)",
           ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
