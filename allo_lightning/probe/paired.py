"""Paired comparison of two report rows by a permutation test over TEST PROTEINS, and Holm's adjustment.

Why not the paired percentile bootstrap: with the 3-4 test proteins per fold of a GPCR study, a
percentile interval of the AUPRC difference is too narrow; it excluded 0 for two exchangeable score
sets in 8-10 % of comparisons at a nominal 5 % (tests/test_paired.py measures it).

The test. Row ``a`` (one score set) is compared with row ``b`` (one score set, or D random draws). On
every test protein, the D + 1 score sets are rotated cyclically: rotation c puts set (j + c) mod (D + 1)
at position j, independently per protein. The statistic is what the report shows:

    T = mean over folds of [ AUPRC(position 0) - mean over j >= 1 of AUPRC(position j) ]

with AUPRC the tie-aware average precision pooled over the fold's test residues (folds where it is
undefined are left out). Unrotated, T is the row difference. Null hypothesis: on each test protein the
D + 1 score sets are exchangeable (for b = D random draws of k heads: the selected heads are one more
random draw), independently across proteins. Under it every rotation is equally likely, so the
p-value below is exact (enumerating all rotations when there are at most ``max_exact`` of them in all,
else a Monte Carlo p = (1 + hits) / (1 + draws), which is valid too). For D = 1 the rotations are the
sign flips (swaps) of the two score sets per protein.

Two-sided p = min(1, 2 min(p_greater, p_less)). Its smallest attainable value (``p_floor``) is 2 / N
for N rotations: with 3 test proteins and one score set, N = 8 and no verdict is possible at 5 %.
Assumption stated: the unit of rotation (``groups`` of the folds: proteins, or the report's split groups,
so that near-identical homologs of one cluster rotate together) is independent of the other units;
residues of one unit are never split. Proteins of one fold share a trained probe, so training randomness
is not part of the null (it is a test of these scores).

Random rows are NOT tested that way. Under "the selected heads are one more random draw" the D + 1 head
SETS are exchangeable, but a head set that is good on one protein is good on the others: its quality is
shared by every protein and fold. Rotating per protein assumes it is not, and is anti-conservative as soon
as random head sets differ in quality (a verdict in 20-45 % of studies at a nominal 5 % in
tests/test_paired.py's simulation). :func:`set_rotation_test` rotates the whole sets instead: exact
under that null, with D + 1 equally likely outcomes, so p >= 2 / (D + 1) (two-sided) and a verdict at 5 %
needs at least 39 random draws before any multiplicity adjustment.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

_BLOCK_CELLS = 4_000_000


def average_precision_batch(scores_BN: np.ndarray, labels_N: np.ndarray) -> np.ndarray:
    """Average precision of every row of ``scores_BN`` against the same labels, tie-aware as
    ``sklearn.metrics.average_precision_score`` (tied scores form one threshold). NaN without positive."""
    scores_BN = np.atleast_2d(np.asarray(scores_BN, dtype=np.float64))
    y = np.asarray(labels_N, dtype=np.float64).ravel()
    n_pos = y.sum()
    if n_pos == 0:
        return np.full(scores_BN.shape[0], np.nan)
    n = len(y)
    order = np.argsort(-scores_BN, axis=1, kind="stable")
    s = np.take_along_axis(scores_BN, order, 1)
    yy = y[order]
    tp = np.cumsum(yy, axis=1)
    last = np.ones(s.shape, dtype=bool)
    last[:, :-1] = s[:, 1:] != s[:, :-1]
    idx = np.where(last, np.arange(n), n)
    end = np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]  # last index of each residue's tie group
    precision_at_end = np.take_along_axis(tp, end, 1) / (end + 1)
    return (yy * precision_at_end).sum(axis=1) / n_pos


class _FoldCounts:
    """For one fold: every count the average precision of any rotation needs, computed once.

    AP (tie-aware) = mean over positive residues i of TP_i / K_i, with K_i the residues scoring >= i's score
    and TP_i the positives among them. Under a rotation, protein p contributes the residues of the score
    set it is given; so with ``count[p, c, i, c']`` = residues of protein p under set c scoring >= the score
    of positive i under set c' (and ``count_pos`` likewise for positives), the AP of any rotation is a
    gather and a sum: no sorting per rotation."""

    def __init__(self, sets_SN: np.ndarray, y: np.ndarray, g: np.ndarray) -> None:
        n_sets = len(sets_SN)
        n_proteins = int(g.max()) + 1
        pos = np.flatnonzero(y == 1)
        self.q = g[pos]  # protein of every positive
        queries = sets_SN[:, pos]  # [C', n_pos]: score of positive i under set c'
        self.count = np.zeros((n_proteins, n_sets, len(pos), n_sets), dtype=np.int32)
        self.count_pos = np.zeros_like(self.count)
        for p in range(n_proteins):
            in_p = g == p
            is_pos = y[in_p] == 1
            for c in range(n_sets):
                vals = np.sort(sets_SN[c, in_p])
                vals_pos = np.sort(sets_SN[c, in_p][is_pos])
                # residues scoring >= v: all minus those strictly below
                self.count[p, c] = (len(vals) - np.searchsorted(vals, queries, side="left")).T
                self.count_pos[p, c] = (len(vals_pos) - np.searchsorted(vals_pos, queries, side="left")).T
        self.n_sets, self.n_proteins, self.n_pos = n_sets, n_proteins, len(pos)

    def ap(self, set_of_BP: np.ndarray) -> np.ndarray:
        """AP of the hybrid score sets where protein p takes set ``set_of_BP[b, p]``: [B]."""
        B = len(set_of_BP)
        p_idx = np.arange(self.n_proteins)[None, :, None]
        i_idx = np.arange(self.n_pos)[None, None, :]
        c = set_of_BP[:, :, None]  # [B, P, 1]
        c_query = set_of_BP[:, self.q][:, None, :]  # [B, 1, n_pos]: the set positive i itself is under
        k = self.count[p_idx, c, i_idx, c_query].sum(axis=1, dtype=np.int64)  # [B, n_pos]
        tp = self.count_pos[p_idx, c, i_idx, c_query].sum(axis=1, dtype=np.int64)
        return (tp / k).mean(axis=1) if self.n_pos else np.full(B, np.nan)


def _fold_values(sets_SN: np.ndarray, y: np.ndarray, g: np.ndarray, rotations_BP: np.ndarray) -> np.ndarray:
    """T of one fold for each rotation (rows of ``rotations_BP``: one shift per protein)."""
    counts = _FoldCounts(sets_SN, y, g)
    n_sets = len(sets_SN)
    out = np.empty(len(rotations_BP))
    step = max(1, _BLOCK_CELLS // max(counts.n_proteins * max(counts.n_pos, 1), 1))
    for a in range(0, len(rotations_BP), step):
        rot = rotations_BP[a:a + step]
        ap = [counts.ap((j + rot) % n_sets) for j in range(n_sets)]
        out[a:a + step] = ap[0] - np.mean(ap[1:], axis=0)
    return out


def paired_permutation(folds: Sequence[tuple], a: Sequence, b_draws: Sequence[Sequence], max_exact: int = 1 << 20,
                       max_fold_exact: int = 4096, n_mc: int = 4000, seed: int = 0) -> dict:
    """Permutation test of row a against row b over the test proteins (see the module docstring).

    ``folds``: per fold (labels, protein index) of its test residues; ``a``: one score array per fold;
    ``b_draws``: one or more score sets (random draws), each one array per fold. Returns delta (the
    observed T), p_greater, p_less, p_value (two-sided), p_floor (smallest attainable two-sided p),
    n_rotations (all rotations, or Monte Carlo draws), exact (bool) and identical (a equals every b)."""
    rng = np.random.default_rng(seed)
    per_fold = []  # (observed T_f, values over rotations, enumerated?)
    n_total, enumerated = 1, True
    identical = True
    for f, (labels, groups) in enumerate(folds):
        y = np.asarray(labels, dtype=np.float64).ravel()
        _, g = np.unique(np.asarray(groups).ravel(), return_inverse=True)
        sets = np.stack([np.asarray(a[f], dtype=np.float64).ravel()]
                        + [np.asarray(d[f], dtype=np.float64).ravel() for d in b_draws])
        identical &= bool(np.all(sets == sets[:1]))
        if y.sum() == 0 or len(y) == 0:
            continue  # AUPRC undefined on this fold: left out, as in the row means
        n_proteins, n_sets = int(g.max()) + 1, len(sets)
        size = n_sets ** n_proteins
        exact_fold = size <= max_fold_exact
        if exact_fold:  # the first rotation of the product is the identity
            rot = np.array(list(itertools.product(range(n_sets), repeat=n_proteins)), dtype=np.int64)
            n_total *= size
        else:
            rot = np.concatenate([np.zeros((1, n_proteins), dtype=np.int64),
                                  rng.integers(0, n_sets, size=(n_mc, n_proteins))])
            enumerated = False
        vals = _fold_values(sets, y, g, rot)
        per_fold.append((float(vals[0]), vals if exact_fold else vals[1:], exact_fold))
    if not per_fold:
        nan = float("nan")
        return {"delta": nan, "p_greater": nan, "p_less": nan, "p_value": nan, "p_floor": nan, "n_rotations": 0,
                "exact": False, "identical": identical}
    k = len(per_fold)
    observed = sum(o for o, _, _ in per_fold) / k
    tol = 1e-12 * max(1.0, abs(observed))
    if enumerated and n_total <= max_exact:
        total = np.zeros(1)
        for _, vals, _ in per_fold:
            total = (total[:, None] + vals[None, :]).ravel()
        total /= k
        n = len(total)
        p_ge = float(np.sum(total >= observed - tol)) / n
        p_le = float(np.sum(total <= observed + tol)) / n
        floor, exact = min(1.0, 2.0 / n), True
    else:
        total = np.zeros(n_mc)
        for _, vals, was_enumerated in per_fold:
            total += vals[rng.integers(0, len(vals), size=n_mc)] if was_enumerated else vals
        total /= k
        p_ge = (1.0 + float(np.sum(total >= observed - tol))) / (n_mc + 1)
        p_le = (1.0 + float(np.sum(total <= observed + tol))) / (n_mc + 1)
        n, floor, exact = n_mc, min(1.0, 2.0 / (n_mc + 1)), False
    return {"delta": observed, "p_greater": p_ge, "p_less": p_le, "p_value": min(1.0, 2 * min(p_ge, p_le)),
            "p_floor": floor, "n_rotations": n, "exact": exact, "identical": identical}


def set_rotation_test(folds: Sequence[tuple], a: Sequence, b_draws: Sequence[Sequence]) -> dict:
    """Row a (e.g. the selected heads) against D random draws, rotating whole score sets (see the module
    docstring): the statistic T(c) = mean over folds of [AUPRC(set c) - mean over the other sets of AUPRC],
    set 0 = a; under the null that a is one more random draw, c is uniform over the D + 1 sets, so
    p_greater = #{c: T(c) >= T(0)} / (D + 1), exactly. Same keys as :func:`paired_permutation`."""
    per_fold, identical = [], True
    for f, (labels, _) in enumerate(folds):
        y = np.asarray(labels, dtype=np.float64).ravel()
        sets = np.stack([np.asarray(a[f], dtype=np.float64).ravel()]
                        + [np.asarray(d[f], dtype=np.float64).ravel() for d in b_draws])
        identical &= bool(np.all(sets == sets[:1]))
        if y.sum() > 0:  # AUPRC undefined on a fold without site: left out, as in the row means
            per_fold.append(average_precision_batch(sets, y))
    n_sets = 1 + len(b_draws)
    if not per_fold:
        nan = float("nan")
        return {"delta": nan, "p_greater": nan, "p_less": nan, "p_value": nan, "p_floor": nan, "n_rotations": 0,
                "exact": False, "identical": identical}
    ap = np.mean(per_fold, axis=0)  # [D + 1]: each set's mean over folds
    t = ap - (ap.sum() - ap) / max(n_sets - 1, 1)
    observed = float(t[0])
    tol = 1e-12 * max(1.0, abs(observed))
    p_ge = float(np.sum(t >= observed - tol)) / n_sets
    p_le = float(np.sum(t <= observed + tol)) / n_sets
    return {"delta": observed, "p_greater": p_ge, "p_less": p_le, "p_value": min(1.0, 2 * min(p_ge, p_le)),
            "p_floor": min(1.0, 2.0 / n_sets), "n_rotations": n_sets, "exact": True, "identical": identical}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error) of ``pvalues``; NaN stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]


def verdict(delta: float, p_adjusted: float, p_floor: float, n_tests: int, identical: bool,
            alpha: float = 0.05, too_few: str = "test proteins") -> str:
    """``selected_better`` of one comparison: identical scores; no verdict when even the smallest
    attainable p, adjusted for ``n_tests`` rows, cannot reach ``alpha`` (``too_few``: what limits it, the
    test proteins or, for random rows, the random draws); yes / no (worse) when the Holm-adjusted p is
    below ``alpha``; not resolved otherwise."""
    if identical:
        return "identical scores"
    if math.isnan(p_adjusted):
        return "undefined (no site among the test proteins)"
    if p_floor * max(1, n_tests) >= alpha:
        return f"no verdict (too few {too_few})"
    if p_adjusted < alpha:
        return "yes" if delta > 0 else "no (worse)"
    return "not resolved"
