"""Issue 16: Vig et al.'s attention-weighted p_alpha (their provis code) beside the count form, against
a plain loop over full attention maps; and attention exactly equal to theta is not confident (>)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from allo_lightning.analysis import score_heads
from allo_lightning.attention import ProteinStats
from allo_lightning.attention.stats import column_stats

THETA = 0.1


def _maps(rng, H: int, L: int) -> torch.Tensor:
    """[1, H, L+2, L+2] softmax attention over BOS + L residues + EOS, peaked so that many entries pass."""
    logits = torch.as_tensor(rng.normal(0, 2.5, (1, H, L + 2, L + 2)), dtype=torch.float32)
    return logits.softmax(-1)


def _stats(maps: torch.Tensor) -> ProteinStats:
    """Column statistics of one protein's maps (public column_stats), residue keys only."""
    n = maps.shape[-1]
    residue = torch.zeros(1, n, dtype=torch.bool)
    residue[0, 1:-1] = True
    out = column_stats(maps, residue, torch.ones(1, n, dtype=torch.bool), THETA)
    count, mass = out["count"][:, :, 1:-1], out["mass"][:, :, 1:-1]  # [1 layer, H, L]
    return ProteinStats(received=out["received"][:, :, 1:-1], count=count, mass=mass, total=out["total"])


def test_p_alpha_mass_equals_plain_loop_over_maps():
    rng = np.random.default_rng(0)
    H, lengths = 3, (9, 12)
    items, maps_all, labels_all = [], [], []
    for L in lengths:
        maps = _maps(rng, H, L)
        y = np.zeros(L, dtype=int)
        y[rng.choice(L, 3, replace=False)] = 1
        st = _stats(maps)
        items.append((st, y))
        maps_all.append(maps[0].double().numpy())
        labels_all.append(y)
    s = score_heads(items, 1, H, n_permutations=20, min_confident=1)
    for h in range(H):
        num = den = cnt_num = cnt_den = 0.0
        for maps, y in zip(maps_all, labels_all):
            L = len(y)
            for i in range(1, L + 1):  # residue queries
                for j in range(1, L + 1):  # residue keys (BOS/EOS excluded on both axes)
                    a = maps[h, i, j]
                    if a > THETA:
                        den += a
                        num += a * y[j - 1]
                        cnt_den += 1
                        cnt_num += y[j - 1]
        assert float(s.p_alpha_mass[0, h]) == pytest.approx(num / den, rel=1e-5)
        assert float(s.confident_mass[0, h]) == pytest.approx(den, rel=1e-5)
        assert float(s.p_alpha.value[0, h]) == pytest.approx(cnt_num / cnt_den, rel=1e-6)
        # the mass form and the count form are different numbers (named apart)
        assert float(s.p_alpha_mass[0, h]) != pytest.approx(cnt_num / cnt_den, rel=1e-3)
    cols = s.columns()
    assert {"p_alpha_mass", "confident_mass", "testable_mass", "p_alpha"} <= set(cols)
    # the mass-based 100 rule: testable_mass is confident_mass >= min_confident
    s100 = score_heads(items, 1, H, n_permutations=20, min_confident=100)
    assert not bool(s100["testable_mass"].any()) and bool((s100.confident_mass < 100).all())


@pytest.mark.parametrize("theta, row", [(0.25, [0.25, 0.25, 0.25, 0.25]), (0.5, [0.5, 0.5, 0.0, 0.0])])
def test_attention_exactly_theta_is_not_confident(theta, row):
    """alpha_ij > theta, strictly: a map whose entries equal theta exactly has no confident pair
    (with >= every one of them would count)."""
    L = 4
    maps = torch.zeros(1, 1, L + 2, L + 2)
    for i in range(1, L + 1):
        maps[0, 0, i, 1 : L + 1] = torch.tensor(row)
    maps[0, 0, 0, 0] = maps[0, 0, L + 1, L + 1] = 1.0
    residue = torch.zeros(1, L + 2, dtype=torch.bool)
    residue[0, 1:-1] = True
    real = torch.ones(1, L + 2, dtype=torch.bool)
    out = column_stats(maps, residue, real, theta)
    assert float(out["count"].sum()) == 0 and float(out["mass"].sum()) == 0 and float(out["total"].sum()) == 0
    # just above theta: counted (the test can fail the other way too)
    above = column_stats(maps * (1 + 1e-3), residue, real, theta)
    assert float(above["count"].sum()) == L * sum(v > 0 for v in row)
