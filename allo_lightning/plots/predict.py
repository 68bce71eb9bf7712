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


SMOOTH_ABOVE = 1000  # longer proteins: a running mean is drawn over the raw profile
LABEL_LEVELS = 3  # stacked label rows before a label that would overprint is left out


def smoothing_window(length: int) -> int:
    """Odd running-mean window for a profile of ``length`` residues (1: no smoothing)."""
    if length <= SMOOTH_ABOVE:
        return 1
    return max(5, (length // 150) | 1)


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean (the window shrinks at the ends, so every point is a mean of real values)."""
    if window <= 1:
        return values.astype(float)
    kernel = np.ones(window)
    sums = np.convolve(values, kernel, mode="same")
    counts = np.convolve(np.ones(len(values)), kernel, mode="same")
    return sums / counts


def _place_labels(ax, fig, anchors: list[tuple[float, float, str]], step_pt: float = 9.0) -> None:
    """Annotate ``anchors`` (x, y, text; best first) without overprinting: each label takes the lowest of
    ``LABEL_LEVELS`` rows above its point where it overlaps no label already placed; a label with no free
    row is left out (the tables list every residue)."""
    renderer = fig.canvas.get_renderer()
    placed = []
    for x, y, text in anchors:
        for level in range(LABEL_LEVELS):
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(0, 4 + step_pt * level),
                              ha="center", fontsize=7)
            box = ann.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(b) for b in placed):
                placed.append(box)
                break
            ann.remove()


def profile_figure(pid: str, scores: Sequence[float], *, threshold: float | None, backbone_label: str,
                   sequence: str | None = None, sites: Sequence[int] | None = None,
                   windows: Sequence[tuple[int, int]] | None = None, top: int = 5,
                   residue_labels: Sequence[str] | None = None):
    """Score against the 1-based sequence position (a matplotlib Figure).

    The y axis spans the scores (and the threshold), not 0..1: one protein's scores sit in a narrow band.
    Proteins longer than ``SMOOTH_ABOVE`` residues get a running mean (window in the legend) over the
    faint raw profile. Top-residue labels never overprint (see :func:`_place_labels`).

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
    window = smoothing_window(len(s))
    if window > 1:
        ax.plot(x, s, color="tab:blue", lw=0.5, alpha=0.3, label="score")
        ax.plot(x, running_mean(s, window), color="tab:blue", lw=1.2, label=f"running mean ({window} residues)")
    else:
        ax.plot(x, s, color="tab:blue", lw=1.0, label="score")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    if sites:
        pos = np.asarray(sorted({int(p) for p in sites if 1 <= int(p) <= len(s)}), dtype=int)
        ax.plot(pos, s[pos - 1], "v", color="black", ms=5, label=f"known sites ({len(pos)})")
    values = s[np.isfinite(s)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    pad = max(hi - lo, 0.02)
    ax.set(xlabel="sequence position (1-based)", ylabel="score", xlim=(0.5, max(len(s), 1) + 0.5),
           ylim=(lo - 0.08 * pad, hi + 0.35 * pad), title=f"{pid} - {backbone_label}")
    if len(s) and top > 0:
        best = np.argsort(-s, kind="stable")[:top]
        anchors = []
        for j in best:
            text = f"{sequence[j]}{j + 1}" if sequence else str(j + 1)
            if residue_labels is not None and residue_labels[j]:
                text += f" ({residue_labels[j]})"
            anchors.append((j + 1, s[j], text))
        ax.plot(best + 1, s[best], "o", color="tab:blue", ms=3)
        _place_labels(ax, fig, anchors)
    ax.legend(fontsize=7, loc="lower right", ncols=2)
    return fig
