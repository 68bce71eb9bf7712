"""Predict figures: one protein's score along its sequence."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..outputs import save_figure


def score_profile(pid: str, scores: Sequence[float], path: str | Path, **kwargs) -> Path:
    """:func:`profile_figure`, written atomically to ``path`` (PNG)."""
    return save_figure(profile_figure(pid, scores, **kwargs), path)


def profile_figure(pid: str, scores: Sequence[float], *, threshold: float | None, backbone_label: str,
                   sequence: str | None = None, sites: Sequence[int] | None = None,
                   windows: Sequence[tuple[int, int]] | None = None, top: int = 5,
                   residue_labels: Sequence[str] | None = None):
    """Score against the 1-based sequence position (a matplotlib Figure).

    Args:
        threshold: the probe's decision threshold (a dashed line), or None.
        backbone_label: ``backbone.label`` (marks a tiny backbone as meaningless); part of the title.
        sequence: residue letters, for the labels of the top residues (``K45``).
        sites: known 1-based site positions (marked under the curve), if the input has them.
        windows: 1-based inclusive ``(start, end)`` regions of a windowed (long) protein, shaded.
        top: how many of the best-scoring residues are labelled.
        residue_labels: optional label per position (e.g. the structure's ``A:117A``), added in
            brackets to the top-residue labels (``G28 (A:117A)``).
    """
    s = np.asarray(scores, dtype=float)
    x = np.arange(1, len(s) + 1)
    width = float(np.clip(len(s) / 60.0, 6.0, 16.0))
    fig, ax = plt.subplots(figsize=(width, 3.4))
    for k, (start, end) in enumerate(windows or []):
        ax.axvspan(start - 0.5, end + 0.5, color="tab:orange", alpha=0.08 + 0.06 * (k % 2), lw=0,
                   label="windows (long protein)" if k == 0 else None)
    ax.plot(x, s, color="tab:blue", lw=1.0, label="score")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    if sites:
        pos = np.asarray(sorted({int(p) for p in sites if 1 <= int(p) <= len(s)}), dtype=int)
        ax.plot(pos, s[pos - 1], "v", color="black", ms=5, label=f"known sites ({len(pos)})")
    if len(s) and top > 0:
        best = np.argsort(-s, kind="stable")[:top]
        for j in best:
            text = f"{sequence[j]}{j + 1}" if sequence else str(j + 1)
            if residue_labels is not None and residue_labels[j]:
                text += f" ({residue_labels[j]})"
            ax.annotate(text, (j + 1, s[j]), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
        ax.plot(best + 1, s[best], "o", color="tab:blue", ms=3)
    ax.set(xlabel="sequence position (1-based)", ylabel="score", xlim=(0.5, max(len(s), 1) + 0.5),
           ylim=(0, 1.08), title=f"{pid} - {backbone_label}")
    ax.legend(fontsize=7, loc="upper right", ncols=2)
    return fig
