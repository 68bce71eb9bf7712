"""Small inline SVG charts drawn in Python (no JavaScript needed to see them): a layers x heads heatmap,
PR curves with operating points, line charts. Every label and tooltip is escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .page import esc

COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


def _viridis(t: float) -> str:
    from matplotlib import colormaps

    r, g, b, _ = colormaps["viridis"](min(max(t, 0.0), 1.0))
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def heatmap(values: list[list[float | None]], selected: set[tuple[int, int]], tips: list[list[str]],
            label: str) -> str:
    """Layers (rows) x heads (columns); cells coloured by rank of ``values`` (a colour scale by rank
    shows the ordering that 2 decimals cannot); selected heads outlined; ``tips`` on hover."""
    n_layers, n_heads = len(values), max((len(r) for r in values), default=0)
    finite = sorted(v for r in values for v in r if v is not None and math.isfinite(v))
    cell = max(8, min(28, 900 // max(n_heads, 1)))
    left, top = 44, 22
    w, h = max(left + n_heads * cell + 10, 640), top + n_layers * cell + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">',
           f'<text x="{left}" y="14">{esc(label)}: colour = rank among heads (yellow = highest); '
           'outlined = selected; hover for values</text>']
    for ly in range(n_layers):
        out.append(f'<text x="2" y="{top + ly * cell + cell * 0.7:.1f}">L{ly}</text>')
        for hd in range(n_heads):
            v = values[ly][hd] if hd < len(values[ly]) else None
            colour = "#eeeeee" if v is None or not math.isfinite(v) else _viridis(
                finite.index(v) / max(len(finite) - 1, 1))
            sel = (ly, hd) in selected
            tip = tips[ly][hd] if hd < len(tips[ly]) else ""
            out.append(f'<g data-tip="{esc(tip)}"><title>{esc(tip)}</title><rect x="{left + hd * cell}" '
                       f'y="{top + ly * cell}" width="{cell - 1}" height="{cell - 1}" fill="{colour}"'
                       + (' stroke="#d62728" stroke-width="3"' if sel else "") + "/></g>")
    for hd in range(0, n_heads, max(1, n_heads // 16)):
        out.append(f'<text x="{left + hd * cell}" y="{top + n_layers * cell + 14}">H{hd}</text>')
    out.append(f'<text x="{left}" y="{top + n_layers * cell + 32}">head (0-based) across, layer (0-based) down'
               "</text></svg>")
    return "".join(out)


def _axes(w: int, h: int, pad: tuple[int, int, int, int], xr: tuple[float, float], yr: tuple[float, float],
          xlabel: str, ylabel: str, title: str):
    left, right, top, bottom = pad
    pw, ph = w - left - right, h - top - bottom

    def x(v: float) -> float:
        return left + (v - xr[0]) / ((xr[1] - xr[0]) or 1) * pw

    def y(v: float) -> float:
        return top + ph - (v - yr[0]) / ((yr[1] - yr[0]) or 1) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">',
             f'<text x="{left}" y="14">{esc(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for k in range(5):
        xv, yv = xr[0] + (xr[1] - xr[0]) * k / 4, yr[0] + (yr[1] - yr[0]) * k / 4
        parts.append(f'<text x="{x(xv) - 8:.1f}" y="{top + ph + 14}">{xv:.3g}</text>')
        parts.append(f'<text x="{left - 38}" y="{y(yv) + 4:.1f}">{yv:.3g}</text>')
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(yv):.1f}" y2="{y(yv):.1f}" stroke="#eee"/>')
    parts.append(f'<text x="{left + pw / 2 - 20:.0f}" y="{h - 4}">{esc(xlabel)}</text>')
    parts.append(f'<text x="12" y="{top + ph / 2:.0f}" transform="rotate(-90 12 {top + ph / 2:.0f})">'
                 f"{esc(ylabel)}</text>")
    return parts, x, y


def lines(series: dict[str, Sequence[tuple[float, float]]], title: str, xlabel: str, ylabel: str,
          points: dict[str, tuple[float, float, str]] | None = None, hline: tuple[float, str] | None = None,
          y_from_zero: bool = True, w: int = 520, h: int = 320) -> str:
    """Line chart of ``series`` (name -> (x, y) points), with optional marked points (name -> (x, y,
    tooltip)) and a dashed horizontal line (value, label). The y axis fits the data (not a fixed 0..1)."""
    xs = [p[0] for s in series.values() for p in s if math.isfinite(p[1])]
    ys = [p[1] for s in series.values() for p in s if math.isfinite(p[1])] + ([hline[0]] if hline else [])
    if not xs:
        return f"<p class='muted'>{esc(title)}: nothing to draw.</p>"
    lo, hi = (0.0 if y_from_zero else min(ys)), max(ys)
    hi = hi + 0.05 * ((hi - lo) or 1)
    parts, x, y = _axes(w, h, (50, 10, 24, 36), (min(xs), max(xs)), (lo, hi), xlabel, ylabel, title)
    if hline:
        parts.append(f'<g data-tip="{esc(hline[1])}"><title>{esc(hline[1])}</title><line x1="{x(min(xs)):.1f}" '
                     f'x2="{x(max(xs)):.1f}" y1="{y(hline[0]):.1f}" y2="{y(hline[0]):.1f}" stroke="#555" '
                     'stroke-dasharray="5 4" stroke-width="2"/></g>')
    legend_y = 30
    for k, (name, pts) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pts if math.isfinite(b))
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{w - 190}" y="{legend_y + 14 * k}" fill="{colour}">{esc(name)}</text>')
    for name, (a, b, tip) in (points or {}).items():
        colour = COLOURS[list(series).index(name) % len(COLOURS)] if name in series else "#000"
        parts.append(f'<g data-tip="{esc(tip)}"><title>{esc(tip)}</title><circle cx="{x(a):.1f}" cy="{y(b):.1f}" '
                     f'r="6" fill="{colour}" stroke="#000"/></g>')
    parts.append("</svg>")
    return "".join(parts)


def pr_curve(curves: dict[str, tuple[Sequence[int], Sequence[float]]], threshold: float | None, title: str) -> str:
    """PR curves (recall across, precision up; precision axis fitted to the data) from labels and scores,
    with the operating point (score >= ``threshold``) of each curve and the base rate."""
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    series, points, base = {}, {}, None
    for name, (y_true, scores) in curves.items():
        y_true, scores = np.asarray(y_true, dtype=int), np.asarray(scores, dtype=float)
        if not len(y_true) or not y_true.any():
            continue
        precision, recall, _ = precision_recall_curve(y_true, scores)
        precision, recall = precision[:-1], recall[:-1]  # sklearn's closing (recall 0, precision 1) is no threshold
        keep = np.unique(np.linspace(0, len(recall) - 1, min(len(recall), 400)).astype(int))
        series[name] = list(zip(recall[keep].tolist(), precision[keep].tolist()))
        base = float(y_true.mean())
        if threshold is not None:
            pred = scores >= threshold
            tp = int((pred & (y_true == 1)).sum())
            p = tp / int(pred.sum()) if pred.any() else float("nan")
            r = tp / int(y_true.sum())
            if math.isfinite(p):
                points[name] = (r, p, f"operating point (score >= {threshold:.3f}): precision {p:.3f}, "
                                      f"recall {r:.3f}, {int(pred.sum())} residues predicted")
    if not series:
        return "<p class='muted'>No labelled site among these residues: no PR curve.</p>"
    return lines(series, title + " (precision axis fitted to the data)", "recall", "precision", points,
                 (base, f"base rate {base:.4f} (a random ranking)") if base is not None else None)
