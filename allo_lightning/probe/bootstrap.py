"""Bootstrap intervals over PROTEINS for pooled residue metrics, and a paired bootstrap of a difference.

Residues of one protein are not independent, so the unit of resampling is the protein: a bootstrap
sample draws as many proteins as there are, with replacement, and the pooled metric is recomputed on
all residues of the drawn proteins (a protein drawn twice counts twice). The interval is the
percentile interval of the bootstrap distribution (95 % by default).

Metrics (pooled over residues, ties handled as scikit-learn does):

- ``auprc``: average precision, ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds
  (equal to ``sklearn.metrics.average_precision_score``);
- ``auroc``: area under the ROC curve (ties count one half; equal to ``roc_auc_score``).

Vectorised: the residues are sorted by score once and counted per protein at the tied-score runs
that hold a positive; a bootstrap sample is a vector of protein multiplicities, so the counts of a
block of samples are one matrix product.

A sample without positive (or, for auroc, without negative) residues has no metric; such samples are
left out and counted (``n_valid``). The paired bootstrap applies the SAME protein draws to two score
sets on the same residues, so the difference's interval accounts for the pairing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import AlloError

METRICS = ("auprc", "auroc")

# what the 95 % percentile intervals over proteins were measured to do (tests/honesty_sims.py coverage: 300
# simulated studies per row, proteins differing in signal, contiguous sites; binomial sd about 0.013)
COVERAGE = ("measured coverage of a nominal 95 % percentile interval over proteins: 0.92 with 14 proteins and 0.93 "
            "with 50 in one set (evaluate); 0.84 with test folds of 3, 3, 3, 3, 2 proteins (a 14-GPCR report), "
            "0.92 with folds of 6 or 20 (report): narrower than nominal, read as descriptive; assumes the proteins "
            "(or clusters) are independent draws and the probes fixed")
_BLOCK_CELLS = 4_000_000  # samples x residues per block (memory ~ 32 MB per float64 array)


@dataclass(frozen=True)
class Interval:
    """A point estimate on the full data and its bootstrap percentile interval."""

    estimate: float
    lo: float
    hi: float
    level: float
    n_proteins: int
    n_boot: int
    n_valid: int  # bootstrap samples on which the metric is defined

    def as_dict(self) -> dict:
        return asdict(self)

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi


def _as_flat(labels, scores, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(labels, scores, protein index 0..P-1, P) from flat arrays + groups, or per-protein lists."""
    if groups is None:
        if not isinstance(labels, (list, tuple)) or not isinstance(scores, (list, tuple)):
            raise AlloError("give per-protein lists of labels and scores, or flat arrays and groups=")
        if len(labels) != len(scores):
            raise AlloError(f"{len(labels)} label arrays but {len(scores)} score arrays")
        groups = np.concatenate([np.full(len(np.asarray(y)), i) for i, y in enumerate(labels)]) if labels else []
        labels = np.concatenate([np.asarray(y).ravel() for y in labels]) if labels else []
        scores = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in scores]) if scores else []
    y = np.asarray(labels).astype(np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if not (len(y) == len(s) == len(g)):
        raise AlloError(f"labels ({len(y)}), scores ({len(s)}) and groups ({len(g)}) differ in length")
    if len(y) and not np.isin(y, (0.0, 1.0)).all():
        raise AlloError("labels must be 0 or 1")
    if np.isnan(s).any():
        raise AlloError("scores contain NaN")
    _, g = np.unique(g, return_inverse=True)
    n_groups = int(g.max() + 1) if len(g) else 0
    return y, s, g.astype(np.int64), n_groups


class _Sorted:
    """Residues in descending score order, grouped into runs of tied scores.

    Both metrics only need the counts at the runs that hold a positive residue (AP sums precision
    over them; AUROC counts, for each positive, the negatives ranked below it). Per protein p and
    such run r: positives / negatives up to and including r and within r ([P, R] matrices), so that
    a bootstrap sample with protein multiplicities w [B, P] gets every count by a matrix product."""

    def __init__(self, y: np.ndarray, s: np.ndarray, g: np.ndarray) -> None:
        order = np.argsort(-s, kind="mergesort")
        y, g, s_sorted = y[order], g[order], s[order]
        n_proteins = int(g.max() + 1) if len(g) else 0
        new_run = np.ones(len(s_sorted), dtype=bool)
        new_run[1:] = s_sorted[1:] != s_sorted[:-1]
        run = np.cumsum(new_run) - 1  # run number of every residue
        pos_runs = np.unique(run[y == 1])  # runs holding a positive, in rank order
        R = len(pos_runs)
        col = np.searchsorted(pos_runs, run)  # first positive run at or after the residue's run
        is_pos, is_neg = y == 1, y == 0
        d_pos = np.zeros((n_proteins, R))
        np.add.at(d_pos, (g[is_pos], col[is_pos]), 1.0)
        in_run = is_neg & (col < R)
        if R:
            in_run &= pos_runs[np.minimum(col, R - 1)] == run
        d_neg = np.zeros((n_proteins, R))  # negatives tied with the positives of the run
        np.add.at(d_neg, (g[in_run], col[in_run]), 1.0)
        upto = np.zeros((n_proteins, R))  # negatives ranked in or before the run (bucketed, then summed)
        before = is_neg & (col < R)
        np.add.at(upto, (g[before], col[before]), 1.0)
        self.d_pos, self.d_neg = d_pos, d_neg
        self.cum_pos, self.cum_neg = np.cumsum(d_pos, axis=1), np.cumsum(upto, axis=1)
        self.n_pos = np.bincount(g, weights=y, minlength=n_proteins)
        self.n_neg = np.bincount(g, weights=1.0 - y, minlength=n_proteins)

    def metrics(self, weights: np.ndarray, which: Sequence[str]) -> dict[str, np.ndarray]:
        """weights [B, P] protein multiplicities -> metric values [B] (NaN where undefined)."""
        pos, neg = weights @ self.n_pos, weights @ self.n_neg
        d_tp, tp = weights @ self.d_pos, weights @ self.cum_pos  # [B, R]
        fp = weights @ self.cum_neg
        out = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            if "auprc" in which:
                prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
                ap = (d_tp * prec).sum(axis=1) / pos
                out["auprc"] = np.where(pos > 0, ap, np.nan)
            if "auroc" in which:  # per positive: negatives ranked below it, ties one half
                d_fp = weights @ self.d_neg
                area = (d_tp * (neg[:, None] - fp + 0.5 * d_fp)).sum(axis=1)
                out["auroc"] = np.where((pos > 0) & (neg > 0), area / (pos * neg), np.nan)
        return out


def _draws(n_proteins: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, P] multiplicities of the proteins in each bootstrap sample (sum P per row)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_proteins, size=(n_boot, n_proteins))
    flat = idx + (np.arange(n_boot) * n_proteins)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_proteins).reshape(n_boot, n_proteins).astype(np.float64)


def _check(which: Sequence[str]) -> tuple[str, ...]:
    which = (which,) if isinstance(which, str) else tuple(which)
    bad = [m for m in which if m not in METRICS]
    if bad:
        raise AlloError(f"unknown metric(s) {bad}; choose from {', '.join(METRICS)}")
    return which


def _check_draws(n_boot, level) -> None:
    """``n_boot`` a whole number >= 1 and ``level`` in (0, 1) (an interval from no sample is no interval)."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise AlloError(f"n_boot must be a whole number >= 1 (bootstrap samples), got {n_boot!r}")
    if not 0 < level < 1:
        raise AlloError(f"level must be in (0, 1), got {level}")


def pooled_metric(labels, scores, metric: str = "auprc", groups=None) -> float:
    """The pooled metric on all residues (auprc = average precision, auroc); NaN when undefined."""
    y, s, g, p = _as_flat(labels, scores, groups)
    if p == 0:
        return float("nan")
    return float(_Sorted(y, s, g).metrics(np.ones((1, p)), _check(metric))[metric][0])


def _blocks(n_boot: int, n_residues: int):
    size = max(1, _BLOCK_CELLS // max(n_residues, 1))
    for start in range(0, n_boot, size):
        yield start, min(n_boot, start + size)


def _interval(estimate: float, values: np.ndarray, level: float, n_proteins: int, n_boot: int) -> Interval:
    ok = values[~np.isnan(values)]
    if len(ok) == 0:
        return Interval(estimate, float("nan"), float("nan"), level, n_proteins, n_boot, 0)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return Interval(float(estimate), float(lo), float(hi), level, n_proteins, n_boot, len(ok))


def bootstrap_ci(labels, scores, groups=None, metrics: Sequence[str] = METRICS, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, Interval]:
    """Percentile bootstrap interval over proteins of each pooled metric.

    ``labels``/``scores``: per-protein lists of arrays, or flat arrays with ``groups`` (protein of every
    residue). Returns metric name -> :class:`Interval` (``estimate`` on the full data)."""
    which = _check(metrics)
    _check_draws(n_boot, level)
    y, s, g, p = _as_flat(labels, scores, groups)
    if p == 0:
        nan = float("nan")
        return {m: Interval(nan, nan, nan, level, 0, n_boot, 0) for m in which}
    sorted_ = _Sorted(y, s, g)
    point = sorted_.metrics(np.ones((1, p)), which)
    if p < 2:  # one protein: every resample is the data itself; no interval (a zero-width one would claim certainty)
        return {m: _interval(point[m][0], np.full(n_boot, np.nan), level, p, n_boot) for m in which}
    weights = _draws(p, n_boot, seed)
    boot = {m: np.empty(n_boot) for m in which}
    for a, b in _blocks(n_boot, len(y)):
        vals = sorted_.metrics(weights[a:b], which)
        for m in which:
            boot[m][a:b] = vals[m]
    return {m: _interval(point[m][0], boot[m], level, p, n_boot) for m in which}


def paired_bootstrap(labels, scores_a, scores_b, groups=None, metric: str = "auprc", n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95) -> Interval:
    """metric(scores_a) - metric(scores_b) on the same residues, with a paired percentile interval:
    every bootstrap sample draws one set of proteins and evaluates both score sets on it."""
    (which,) = _check(metric)
    _check_draws(n_boot, level)
    y, sa, g, p = _as_flat(labels, scores_a, groups)
    _, sb, g_b, _ = _as_flat(labels, scores_b, groups)
    if len(sa) != len(sb) or not np.array_equal(g, g_b):
        raise AlloError("the two score sets must cover the same residues of the same proteins")
    if p == 0:
        nan = float("nan")
        return Interval(nan, nan, nan, level, 0, n_boot, 0)
    a_sorted, b_sorted = _Sorted(y, sa, g), _Sorted(y, sb, g)
    ones = np.ones((1, p))
    point = a_sorted.metrics(ones, (which,))[which][0] - b_sorted.metrics(ones, (which,))[which][0]
    weights = _draws(p, n_boot, seed)
    diff = np.empty(n_boot)
    for a, b in _blocks(n_boot, len(y)):
        w = weights[a:b]
        diff[a:b] = a_sorted.metrics(w, (which,))[which] - b_sorted.metrics(w, (which,))[which]
    return _interval(point, diff, level, p, n_boot)


class FoldBootstrap:
    """Bootstrap over the test proteins of several folds (each protein tested in one fold).

    A report row's metric is the mean over folds (and over random draws) of each fold's pooled test
    metric; its interval comes from resampling the proteins WITHIN each fold's test set (stratified by
    fold), recomputing every fold's metric and averaging as the row does. The draws are fixed at
    construction, so every row of a report, and the paired difference of two rows, uses the same ones.

    ``folds``: per fold, (labels, groups) of its test residues in the order the scores will come in. A fold whose
    test residues are ONE group (unit) has no spread to resample: an interval that uses it is undefined (NaN),
    not the zero-width interval the resampling would give.
    """

    def __init__(self, folds: Sequence[tuple], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> None:
        _check_draws(n_boot, level)
        self.n_boot, self.level = n_boot, level
        self.folds = []
        for f, (labels, groups) in enumerate(folds):
            y = np.asarray(labels).astype(np.float64).ravel()
            _, g = np.unique(np.asarray(groups).ravel(), return_inverse=True)
            p = int(g.max() + 1) if len(g) else 0
            self.folds.append((y, g.astype(np.int64), p, _draws(p, n_boot, seed * 1_000_003 + f) if p else None))

    @property
    def n_proteins(self) -> int:
        return sum(p for _, _, p, _ in self.folds)

    def _fold_values(self, f: int, scores, metric: str) -> tuple[float, np.ndarray]:
        y, g, p, weights = self.folds[f]
        s = np.asarray(scores, dtype=np.float64).ravel()
        if len(s) != len(y):
            raise AlloError(f"fold {f}: {len(s)} scores for {len(y)} test residues")
        if p == 0:
            return float("nan"), np.full(self.n_boot, np.nan)
        sorted_ = _Sorted(y, s, g)
        point = float(sorted_.metrics(np.ones((1, p)), (metric,))[metric][0])
        if p < 2:  # one unit (all test proteins in one cluster, e.g. leave one cluster out): every resample is the
            return point, np.full(self.n_boot, np.nan)  # fold itself; a zero-width interval would claim certainty
        boot = np.empty(self.n_boot)
        for a, b in _blocks(self.n_boot, len(y)):
            boot[a:b] = sorted_.metrics(weights[a:b], (metric,))[metric]
        return point, boot

    def values(self, draws: Sequence[Sequence], metric: str) -> tuple[float, np.ndarray]:
        """``draws``: one or more score sets (random draws), each a list with one array per fold. The
        mean over folds (folds whose metric is undefined left out, as the row's mean does), then
        over draws; per bootstrap sample likewise."""
        (metric,) = _check(metric)
        points, boots = [], []
        for per_fold in draws:
            if len(per_fold) != len(self.folds):
                raise AlloError(f"{len(per_fold)} score arrays for {len(self.folds)} folds")
            vals = [self._fold_values(f, s, metric) for f, s in enumerate(per_fold)]
            pts = np.array([v[0] for v in vals])
            ok = ~np.isnan(pts)
            points.append(pts[ok].mean() if ok.any() else np.nan)
            boots.append(np.stack([v[1] for v, k in zip(vals, ok) if k]).mean(axis=0) if ok.any()
                         else np.full(self.n_boot, np.nan))
        return float(np.mean(points)), np.mean(np.stack(boots), axis=0)

    def interval(self, draws: Sequence[Sequence], metric: str = "auprc") -> Interval:
        return self.interval_of(*self.values(draws, metric))

    def interval_of(self, point: float, boot: np.ndarray) -> Interval:
        """The interval of values computed with :meth:`values` (or a difference of two of them)."""
        return _interval(point, boot, self.level, self.n_proteins, self.n_boot)

    def difference(self, draws_a: Sequence[Sequence], draws_b: Sequence[Sequence], metric: str = "auprc") -> Interval:
        """Row a minus row b, paired: the same protein draws for both."""
        pa, ba = self.values(draws_a, metric)
        pb, bb = self.values(draws_b, metric)
        return self.interval_of(pa - pb, ba - bb)
