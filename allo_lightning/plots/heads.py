"""Figures of the head analysis: the layers x heads score heatmap and per-protein attention maps."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..outputs import save_figure  # noqa: E402

SITE_COLOR = "#d62728"
ORTHO_COLOR = "#1f77b4"


def plot_head_heatmap(values: torch.Tensor, selected: Sequence[tuple[int, int]], path: str | Path,
                      title: str = "", label: str = "score") -> Path:
    """Layers (rows, 0-based) x heads (columns, 0-based) heatmap of ``values`` [n_layers, n_heads];
    selected heads are outlined. In the cells of small models: the head's rank (1 = highest value; the
    colour bar gives the values), since values that differ in the third decimal look equal at two."""
    v = values.detach().double().cpu().numpy()
    n_layers, n_heads = v.shape
    width = min(16.0, 2.5 + 0.45 * n_heads)
    height = min(18.0, 1.8 + 0.32 * n_layers)
    fig, ax = plt.subplots(figsize=(width, height))
    finite = np.isfinite(v)
    vmax = float(np.nanmax(np.where(finite, v, np.nan))) if finite.any() else 1.0
    im = ax.imshow(np.where(finite, v, np.nan), cmap="viridis", aspect="auto", vmin=min(0.0, float(np.nanmin(v))),
                   vmax=vmax if vmax > 0 else 1.0, interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label(label)
    for ly, h in selected:
        ax.add_patch(plt.Rectangle((h - 0.5, ly - 0.5), 1, 1, fill=False, edgecolor=SITE_COLOR, linewidth=2.2))
    annotated = n_layers * n_heads <= 144
    if annotated:
        flat = np.where(finite, v, -np.inf).ravel()
        order = np.argsort(-flat, kind="stable")
        rank = np.empty(flat.size, dtype=int)
        rank[order] = np.arange(1, flat.size + 1)
        for ly in range(n_layers):
            for h in range(n_heads):
                text = str(rank[ly * n_heads + h]) if finite[ly, h] else "-"
                ax.text(h, ly, text, ha="center", va="center", fontsize=7,
                        color="white" if not finite[ly, h] or v[ly, h] < 0.6 * vmax else "black")
    ax.set_xlabel("head (0-based)")
    ax.set_ylabel("layer (0-based)")
    step_h = max(1, n_heads // 18)
    step_l = max(1, n_layers // 36)
    ax.set_xticks(range(0, n_heads, step_h))
    ax.set_yticks(range(0, n_layers, step_l))
    ax.set_title(title + ("\n" if title else "") + f"red boxes: {len(selected)} selected heads"
                 + ("; cell text: rank (1 = highest)" if annotated else ""), fontsize=9)
    return save_figure(fig, path)


def plot_protein_map(attention: torch.Tensor, sites: Sequence[int], path: str | Path, title: str = "",
                     orthosteric: Sequence[int] = (), sequence: str | None = None) -> Path:
    """Mean attention map ``attention`` [L, L] (query rows, key columns, residues) with 1-based
    ``sites`` marked along both axes (red) and optional ``orthosteric`` residues (blue); below it,
    the attention each residue receives (column sum) with the sites marked."""
    a = attention.detach().double().cpu().numpy()
    L = a.shape[0]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.2, 8.6), gridspec_kw={"height_ratios": [4, 1]},
                                  constrained_layout=True)
    positive = a[a > 0]
    vmax = float(np.quantile(positive, 0.995)) if positive.size else 1.0
    extent = (0.5, L + 0.5, L + 0.5, 0.5)  # 1-based residue numbering on both axes
    im = ax.imshow(a, cmap="Greys", vmin=0.0, vmax=max(vmax, 1e-9), extent=extent, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="mean attention of the selected heads")
    tick = max(1.0, L / 60)
    for positions, color, name in ((sites, SITE_COLOR, "site"), (orthosteric, ORTHO_COLOR, "orthosteric")):
        pos = [p for p in positions if 1 <= p <= L]
        if not pos:
            continue
        ax.vlines(pos, 0.5, 0.5 + 2 * tick, color=color, linewidth=1.0, clip_on=False)
        ax.hlines(pos, L + 0.5 - 2 * tick, L + 0.5, color=color, linewidth=1.0, clip_on=False)
        ax.vlines(pos, 0.5, L + 0.5, color=color, linewidth=0.5, alpha=0.25)
        ax.plot([], [], color=color, label=f"{name} residues ({len(pos)})")
    ax.set_xlim(0.5, L + 0.5)
    ax.set_ylim(L + 0.5, 0.5)
    ax.set_xlabel("key residue (attended to; 1-based)")
    ax.set_ylabel("query residue (1-based)")
    if sites or orthosteric:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    ax.set_title(title, fontsize=10)

    received = a.sum(0)
    x = np.arange(1, L + 1)
    ax2.bar(x, received, width=1.0, color="0.6", label="all residues")
    s = [p for p in sites if 1 <= p <= L]
    if s:
        ax2.bar(s, received[np.asarray(s) - 1], width=1.0, color=SITE_COLOR, label="sites")
    o = [p for p in orthosteric if 1 <= p <= L]
    if o:
        ax2.bar(o, received[np.asarray(o) - 1], width=1.0, color=ORTHO_COLOR, label="orthosteric")
    ax2.set_xlim(0.5, L + 0.5)
    ax2.set_xlabel("residue (1-based)")
    ax2.set_ylabel("attention received")
    ax2.legend(loc="upper right", fontsize=8)
    if sequence is not None and s:
        last = -L
        for p in s:  # label sites that have room (the CSV lists them all)
            if p - last < max(3.0, L / 45):
                continue
            last = p
            ax2.annotate(f"{sequence[p - 1]}{p}", (p, received[p - 1]), fontsize=6, rotation=90,
                         xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", color=SITE_COLOR)
    return save_figure(fig, path)
