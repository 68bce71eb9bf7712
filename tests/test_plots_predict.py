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
