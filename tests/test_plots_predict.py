"""The predict figure: score along the sequence, threshold, top residues, sites and windows."""

from __future__ import annotations

import numpy as np
import pytest

from allo_lightning.plots.predict import profile_figure, score_profile


def test_profile_shows_threshold_top_sites_and_windows():
    import matplotlib.pyplot as plt

    s = np.linspace(0.1, 0.5, 50)
    s[[9, 29]] = [0.95, 0.9]
    seq = "ACDEFGHIKL" * 5
    fig = profile_figure("P1", s, threshold=0.6, backbone_label="tiny (random: meaningless)", sequence=seq,
                         sites=[10, 12, 99], windows=[(1, 30), (21, 50)], top=2)
    ax = fig.axes[0]
    assert "meaningless" in ax.get_title() and "P1" in ax.get_title()
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["L10", "L30"]  # the two best residues, 1-based
    ys = [line.get_ydata() for line in ax.lines]
    assert any(np.allclose(y, 0.6) for y in ys if len(y) == 2)  # threshold line
    markers = [line for line in ax.lines if line.get_marker() == "v"]
    assert len(markers) == 1 and list(markers[0].get_xdata()) == [10, 12]  # out-of-range site dropped
    spans = [p for p in ax.patches]
    assert len(spans) == 2
    x0, x1 = spans[1].get_x(), spans[1].get_x() + spans[1].get_width()
    assert (x0, x1) == pytest.approx((20.5, 50.5))
    plt.close(fig)


def test_score_profile_writes_png_atomically(tmp_path):
    import matplotlib.pyplot as plt

    fig = profile_figure("x", [0.2, 0.8], threshold=0.5, backbone_label="b", sequence="AG", top=1,
                         residue_labels=["", "A:117A"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["G2 (A:117A)"]
    plt.close(fig)
    out = score_profile("P/1", [0.2, 0.8, 0.4], tmp_path / "plots" / "P_1.png", threshold=None,
                        backbone_label="esmc_300m", top=1, residue_labels=["", "A:117A", ""])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["P_1.png"]  # no temporary file left


def _visible_boxes(fig, ax):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts]


def test_top_labels_never_overprint():
    """Issue 18: M1/M4 and N145/G147/G152 overprinted. Adjacent top residues are stacked or left out."""
    import matplotlib.pyplot as plt

    s = np.full(300, 0.4)
    for k, pos in enumerate([1, 4, 145, 147, 152, 150, 2, 146, 149, 151]):
        s[pos - 1] = 0.7 - 0.01 * k
    fig = profile_figure("P", s, threshold=0.5, backbone_label="b", sequence="MAGNG" * 60, top=10,
                         residue_labels=[f"A:{p + 1000}" for p in range(1, 301)])
    ax = fig.axes[0]
    boxes = _visible_boxes(fig, ax)
    assert boxes[0][0].startswith("M1 ")  # the best residue is always labelled
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            assert not boxes[a][1].overlaps(boxes[b][1]), (boxes[a][0], boxes[b][0])
    assert len(boxes) >= 4
    plt.close(fig)


def test_long_profile_is_smoothed_and_axis_spans_the_scores():
    import matplotlib.pyplot as plt

    from allo_lightning.plots.predict import smoothing_window

    rng = np.random.default_rng(0)
    s = 0.38 + 0.3 * rng.random(3662)
    fig = profile_figure("long", s, threshold=0.55, backbone_label="b", top=5)
    ax = fig.axes[0]
    smooth = [ln for ln in ax.lines if ln.get_label().startswith("running mean")]
    assert len(smooth) == 1
    w = smoothing_window(3662)
    assert w > 1 and f"({w} residues)" in smooth[0].get_label()
    half = w // 2
    reference = [s[max(0, k - half): k + half + 1].mean() for k in range(len(s))]  # plain loop
    assert np.allclose(smooth[0].get_ydata(), reference)
    lo, hi = ax.get_ylim()
    assert lo > 0.3 and hi < 0.8 and lo < s.min() and hi > s.max()  # not 0..1: scores fill the axis
    plt.close(fig)
    short = profile_figure("short", s[:200], threshold=None, backbone_label="b", top=1)
    assert not [ln for ln in short.axes[0].lines if ln.get_label().startswith("running mean")]
    plt.close(short)


def test_heatmap_cells_show_ranks_that_two_decimals_hide(tmp_path):
    import matplotlib.pyplot as plt
    import torch

    from allo_lightning.plots import heads as heads_plots

    values = torch.tensor([[0.101, 0.102, 0.5], [0.103, float("nan"), 0.104]])
    captured = {}
    real = heads_plots.save_figure

    def keep(fig, path):
        captured["fig"] = fig
        return real(fig, path)

    heads_plots.save_figure = keep
    try:
        heads_plots.plot_head_heatmap(values, [(0, 2)], tmp_path / "h.png")
    finally:
        heads_plots.save_figure = real
    texts = [t.get_text() for t in captured["fig"].axes[0].texts]
    assert texts == ["5", "4", "1", "3", "-", "2"]
    plt.close(captured["fig"])


def test_pr_and_data_efficiency_axes_fit_the_data(tmp_path):
    import matplotlib.pyplot as plt

    from allo_lightning.plots import probe as probe_plots

    rng = np.random.default_rng(1)
    y = (rng.random(5000) < 0.03).astype(int)
    s = rng.normal(size=5000) + 0.5 * y  # a weak scorer: precision stays near the 3 % base rate
    figs = []
    real = probe_plots.save_figure
    probe_plots.save_figure = lambda fig, path: figs.append(fig) or path
    try:
        probe_plots.pr_curves({"probe": (y, s)}, tmp_path / "pr.png")
        probe_plots.data_efficiency([{"features": "heads", "n_train": n, "auprc": a, "auprc_lo": a - 0.01,
                                      "auprc_hi": a + 0.01} for n, a in [(2, 0.05), (4, 0.06), (8, 0.08)]],
                                    tmp_path / "de.png", base_rate=0.03)
    finally:
        probe_plots.save_figure = real
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, s)
    top = precision[recall >= 0.05].max()
    lo, hi = figs[0].axes[0].get_ylim()
    assert lo == 0 and hi == pytest.approx(max(1.1 * top, 3.3 * y.mean())) and hi < 0.5
    lo, hi = figs[1].axes[0].get_ylim()
    assert 0 < lo < 0.03 and 0.09 <= hi < 0.2  # spans base rate .. highest bar, not 0..1
    for f in figs:
        plt.close(f)


def test_per_protein_auprc_figure_sorted_by_lift_without_undefined(tmp_path):
    import matplotlib.pyplot as plt

    from allo_lightning.plots import probe as probe_plots

    rows = [{"id": "a", "auprc": 0.30, "base_rate": 0.10}, {"id": "b", "auprc": 0.20, "base_rate": 0.02},
            {"id": "none", "auprc": None, "base_rate": 0.0}, {"id": "c", "auprc": 0.05, "base_rate": 0.05}]
    figs = []
    real = probe_plots.save_figure
    probe_plots.save_figure = lambda fig, path: figs.append(fig) or path
    try:
        probe_plots.per_protein_auprc(rows, tmp_path / "p.png")
        probe_plots.per_protein_auprc([{"id": str(k), "auprc": 0.01 * (k + 1), "base_rate": 0.01}
                                       for k in range(100)], tmp_path / "q.png", max_shown=10)
    finally:
        probe_plots.save_figure = real
    ax = figs[0].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c", "a", "b"]  # lift 1, 3, 10
    dots = [ln for ln in ax.lines if ln.get_marker() == "o"][0]
    assert list(dots.get_xdata()) == [0.05, 0.30, 0.20]
    many = figs[1].axes[0]
    assert [t.get_text() for t in many.get_yticklabels()] == ["0", "1", "2", "3", "4", "95", "96", "97", "98", "99"]
    assert "10 of 100" in many.get_title()
    for f in figs:
        plt.close(f)


def test_per_protein_auprc_legend_hides_no_protein(tmp_path):
    """The legend sits outside the axes: no protein's dot or bar lies under it. Before, it sat at the lower
    right, over the lowest-lift protein, whose dot is near the right edge when its base rate is the highest
    (seen on evaluate's 3 held-out GPCRs, the numbers below: P51686's dot was hidden)."""
    import matplotlib.pyplot as plt

    from allo_lightning.plots import probe as probe_plots

    rows = [{"id": "P29274", "auprc": 0.0104, "base_rate": 0.0073}, {"id": "P21728", "auprc": 0.0334,
                                                                       "base_rate": 0.0269},
            {"id": "P51686", "auprc": 0.0584, "base_rate": 0.0569}]
    figs = []
    real = probe_plots.save_figure
    probe_plots.save_figure = lambda fig, path: figs.append(fig) or path
    try:
        probe_plots.per_protein_auprc(rows, tmp_path / "p.png")
    finally:
        probe_plots.save_figure = real
    fig = figs[0]
    ax = fig.axes[0]
    fig.canvas.draw()
    box = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    points = [(r["auprc"], y) for y, r in enumerate(sorted(rows, key=lambda r: r["auprc"] / r["base_rate"]))]
    points += [(r["base_rate"] * f, y) for y, r in enumerate(sorted(rows, key=lambda r: r["auprc"] / r["base_rate"]))
               for f in (0.5, 1.0)]  # the bars
    for x, y in ax.transData.transform(points):
        assert not box.contains(x, y), "the legend hides a protein"
    plt.close(fig)
