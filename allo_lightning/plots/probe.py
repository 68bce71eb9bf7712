"""Probe figures: precision-recall curves and the data-efficiency curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..outputs import save_figure


def pr_axis_top(precision: np.ndarray, recall: np.ndarray, min_recall: float = 0.05) -> float:
    """The highest precision the curve reaches at recall >= ``min_recall``: the y axis of a PR plot
    ends just above it (a lone top residue that is a site gives precision 1 at recall ~0 and would
    otherwise squash a curve near a 3 % base rate into a flat line; that point is then clipped)."""
    keep = recall >= min_recall
    return float(precision[keep].max()) if keep.any() else float(precision.max())


def pr_curves(curves: Mapping[str, tuple], path: str | Path, title: str = "precision-recall") -> Path:
    """One PR curve per entry ``name -> (labels, scores)`` (pooled residues), with the base rate; the
    precision axis is scaled to the curves (:func:`pr_axis_top`, at least 3x the base rate)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    base = None
    top = 0.0
    for name, (labels, scores) in curves.items():
        y, s = np.asarray(labels).astype(int), np.asarray(scores, dtype=float)
        if y.sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(y, s)
        ax.plot(recall, precision, label=f"{name} (AP {average_precision_score(y, s):.3f})", lw=1.5)
        base = y.mean()
        top = max(top, pr_axis_top(precision, recall))
    if base is not None:
        ax.axhline(base, color="grey", ls="--", lw=1, label=f"base rate {base:.3f}")
        top = max(top, 3 * base)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, min(1.02, 1.1 * top) if top else 1.02),
           title=title)
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
    auprc_lo/auprc_hi (error bars: that interval) or auprc_sd (one line per features kind). The y axis
    spans the points, their bars and the base rate (not 0..1, where curves near the base rate merge)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    extent: list[float] = [] if base_rate is None else [base_rate]
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
        extent += [float(v) for v in np.concatenate([y - err[0], y + err[-1]] if err.ndim == 2 else [y - err, y + err])
                   if np.isfinite(v)]
    if base_rate is not None:
        ax.axhline(base_rate, color="grey", ls="--", lw=1, label=f"base rate {base_rate:.3f}")
    ax.set_xscale("log", base=2)
    lo, hi = (min(extent), max(extent)) if extent else (0.0, 1.0)
    pad = max(hi - lo, 0.01) * 0.08
    ax.set(xlabel="proteins used (training + validation)", ylabel="test AUPRC (mean; bars: 95 % interval)",
           ylim=(max(0.0, lo - pad), min(1.02, hi + pad)), title=title)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def per_protein_auprc(rows: Sequence[dict], path: str | Path, title: str = "per-protein AUPRC",
                      max_shown: int = 80) -> Path:
    """One row per protein with sites (``rows``: dicts with id, auprc, base_rate): its AUPRC (dot) and its
    base rate (grey bar: what a random ranking scores), sorted by lift (auprc / base_rate). Proteins
    without a site are left out (AUPRC undefined). With more than ``max_shown`` proteins, the best and
    the worst ``max_shown // 2`` by lift are drawn (the title says so; per_protein.csv has them all)."""
    usable = [r for r in rows if r.get("auprc") is not None and r.get("base_rate")]
    usable.sort(key=lambda r: r["auprc"] / r["base_rate"])
    note = ""
    if len(usable) > max_shown:
        half = max_shown // 2
        note = f" ({max_shown} of {len(usable)}: the {half} worst and {half} best by lift)"
        usable = usable[:half] + usable[-half:]
    fig, ax = plt.subplots(figsize=(6.0, 1.2 + 0.2 * max(len(usable), 1)))
    y = np.arange(len(usable))
    ax.barh(y, [r["base_rate"] for r in usable], color="0.85", height=0.6, label="base rate (random ranking)")
    ax.plot([r["auprc"] for r in usable], y, "o", color="tab:blue", ms=4, label="AUPRC")
    ax.set_yticks(y, [str(r["id"])[:30] for r in usable], fontsize=6)
    top = max([r["auprc"] for r in usable] + [r["base_rate"] for r in usable] + [0.01])
    ax.set(xlabel="average precision", xlim=(0, min(1.02, 1.1 * top)), ylim=(-0.7, len(usable) - 0.3),
           title=title + note)
    if usable:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: it never hides a protein
    else:
        ax.text(0.5, 0.5, "no protein with a labelled site", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)
