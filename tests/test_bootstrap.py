"""Bootstrap over proteins: exact point estimates (scikit-learn), coverage of the estimate, shrinking
intervals, and the paired difference (zero for identical scores, positive for a planted better scorer)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from allo_lightning.probe.bootstrap import bootstrap_ci, paired_bootstrap, pooled_metric


def proteins(n: int, seed: int = 0, signal: float = 1.0, length=(80, 200)):
    """Per-protein labels (about 5 % sites, at least one) and scores with a planted signal; scores
    are rounded so that ties occur."""
    rng = np.random.default_rng(seed)
    ys, ss = [], []
    for _ in range(n):
        L = int(rng.integers(*length))
        y = (rng.random(L) < 0.05).astype(int)
        y[rng.integers(L)] = 1
        ys.append(y)
        ss.append(np.round(rng.normal(size=L) + signal * y, 1))
    return ys, ss


def test_point_estimates_equal_scikit_learn_with_ties():
    ys, ss = proteins(12, seed=1)
    y, s = np.concatenate(ys), np.concatenate(ss)
    assert len(np.unique(s)) < len(s)  # ties present
    ci = bootstrap_ci(ys, ss, n_boot=50)
    assert ci["auprc"].estimate == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert ci["auroc"].estimate == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert pooled_metric(ys, ss, "auprc") == pytest.approx(average_precision_score(y, s), abs=1e-12)
    # flat arrays with groups give the same
    g = np.concatenate([np.full(len(a), f"p{i}") for i, a in enumerate(ys)])
    assert pooled_metric(y, s, "auroc", groups=g) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # negative control: a wrong formula (e.g. ignoring ties by ranking residues one by one) differs
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(y[order])
    naive = (tp / np.arange(1, len(y) + 1))[y[order] == 1].mean()
    assert abs(naive - average_precision_score(y, s)) > 1e-6


def test_each_bootstrap_sample_equals_scikit_learn_with_sample_weights():
    """A bootstrap sample = proteins with multiplicities: identical to scikit-learn with those weights."""
    from allo_lightning.probe.bootstrap import _as_flat, _draws, _Sorted

    ys, ss = proteins(6, seed=2)
    y, s, g, p = _as_flat(ys, ss, None)
    w = _draws(p, 4, seed=3)
    vals = _Sorted(y, s, g).metrics(w, ("auprc", "auroc"))
    for b in range(4):
        sw = w[b][g]
        keep = sw > 0
        assert vals["auprc"][b] == pytest.approx(average_precision_score(y[keep], s[keep], sample_weight=sw[keep]))
        assert vals["auroc"][b] == pytest.approx(roc_auc_score(y[keep], s[keep], sample_weight=sw[keep]))


def test_interval_contains_estimate_and_shrinks_with_more_proteins():
    widths = {}
    for n in (10, 80):
        ys, ss = proteins(n, seed=4)
        ci = bootstrap_ci(ys, ss, n_boot=400, seed=0)
        for m in ("auprc", "auroc"):
            assert ci[m].lo <= ci[m].estimate <= ci[m].hi
            assert ci[m].n_proteins == n and ci[m].n_valid == 400
        widths[n] = {m: ci[m].hi - ci[m].lo for m in ci}
    for m in ("auprc", "auroc"):
        assert widths[80][m] < 0.6 * widths[10][m]  # ~ 1/sqrt(8) expected


def test_seeded():
    ys, ss = proteins(15, seed=5)
    assert bootstrap_ci(ys, ss, n_boot=100, seed=7) == bootstrap_ci(ys, ss, n_boot=100, seed=7)
    assert bootstrap_ci(ys, ss, n_boot=100, seed=7) != bootstrap_ci(ys, ss, n_boot=100, seed=8)


def test_paired_difference_zero_for_identical_scores():
    ys, ss = proteins(20, seed=6)
    d = paired_bootstrap(ys, ss, [s.copy() for s in ss], n_boot=300)
    assert d.estimate == 0 and d.lo == 0 and d.hi == 0 and d.contains(0.0)


def test_paired_difference_positive_for_planted_better_scorer():
    rng = np.random.default_rng(7)
    ys, weak = proteins(30, seed=7, signal=0.3)
    strong = [s + 1.5 * y + 0.01 * rng.normal(size=len(y)) for s, y in zip(weak, ys)]
    for metric in ("auprc", "auroc"):
        d = paired_bootstrap(ys, strong, weak, metric=metric, n_boot=300)
        assert d.estimate > 0 and d.lo > 0, d
        expect = pooled_metric(ys, strong, metric) - pooled_metric(ys, weak, metric)
        assert d.estimate == pytest.approx(expect)
        # the reverse comparison is the mirror image
        r = paired_bootstrap(ys, weak, strong, metric=metric, n_boot=300)
        assert r.estimate == pytest.approx(-d.estimate) and r.hi == pytest.approx(-d.lo)


def test_paired_interval_is_narrower_than_unpaired_for_correlated_scores():
    """Pairing matters: two noisy versions of one scorer differ little, though each varies a lot."""
    rng = np.random.default_rng(8)
    ys, base = proteins(25, seed=8, signal=0.8)
    other = [s + 0.05 * rng.normal(size=len(s)) for s in base]
    d = paired_bootstrap(ys, base, other, n_boot=300)
    single = bootstrap_ci(ys, base, n_boot=300)["auprc"]
    assert (d.hi - d.lo) < 0.5 * (single.hi - single.lo)


def test_samples_without_positives_are_left_out_and_counted():
    ys = [np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0]), np.array([0, 1, 0, 0])]
    ss = [np.array([0.1, 0.2, 0.3, 0.4])] * 2 + [np.array([0.1, 0.9, 0.2, 0.3])]
    ci = bootstrap_ci(ys, ss, n_boot=200)["auprc"]
    assert 0 < ci.n_valid < 200 and ci.estimate == 1.0


def test_fold_bootstrap_one_fold_equals_plain_bootstrap_and_averages_folds():
    from allo_lightning.probe.bootstrap import FoldBootstrap

    ys, ss = proteins(12, seed=9)
    y, s = np.concatenate(ys), np.concatenate(ss)
    g = np.concatenate([np.full(len(a), i) for i, a in enumerate(ys)])
    fb = FoldBootstrap([(y, g)], n_boot=200, seed=3)
    assert fb.interval([[s]], "auprc") == bootstrap_ci(y, s, groups=g, n_boot=200, seed=3 * 1_000_003)["auprc"]
    # two folds: the estimate is the mean of the folds' metrics, the interval contains it
    half = int(g.searchsorted(6))
    fb2 = FoldBootstrap([(y[:half], g[:half]), (y[half:], g[half:])], n_boot=200)
    iv = fb2.interval([[s[:half], s[half:]]], "auroc")
    expect = (roc_auc_score(y[:half], s[:half]) + roc_auc_score(y[half:], s[half:])) / 2
    assert iv.estimate == pytest.approx(expect) and iv.lo <= iv.estimate <= iv.hi and iv.n_proteins == 12
    # identical rows: zero difference; two random draws of one row average their metrics
    d = fb2.difference([[s[:half], s[half:]]], [[s[:half].copy(), s[half:].copy()]])
    assert d.estimate == d.lo == d.hi == 0
    flipped = [-s[:half], -s[half:]]
    two = fb2.interval([[s[:half], s[half:]], flipped], "auroc")
    assert two.estimate == pytest.approx((expect + (1 - expect)) / 2)


def test_one_protein_has_no_interval_over_proteins():
    """evaluate on a single protein: every resample is that protein, and the '95 % interval over proteins' was
    [estimate, estimate]. It is undefined (NaN, shown 'undefined'); the estimate stays; two proteins get one."""
    ys, ss = proteins(2, seed=5)
    one = bootstrap_ci(ys[:1], ss[:1], n_boot=100)
    for m, iv in one.items():
        assert np.isnan(iv.lo) and np.isnan(iv.hi) and iv.n_valid == 0 and iv.n_proteins == 1, (m, iv)
    assert one["auprc"].estimate == pytest.approx(average_precision_score(ys[0], ss[0]))
    two = bootstrap_ci(ys, ss, n_boot=100)
    assert all(iv.lo < iv.hi for iv in two.values())
