"""Simulations behind the statistical claims of README (each prints its table; seconds to minutes on 2 cores).

    python -m tests.honesty_sims nulls [sets B]        # head null: P(p<=.05), BH q<.1 under no relation
    python -m tests.honesty_sims random-rows [runs D]  # selected vs random heads: per protein vs head sets
    python -m tests.honesty_sims homologs [runs]       # fixed rows with homologous test proteins
    python -m tests.honesty_sims coverage [runs]       # coverage of the report's and evaluate's intervals

Generators are independent of tests/calibration.py (own proteins, pockets of site runs, AR(1) attention).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
from scipy.signal import lfilter

from allo_lightning.analysis import score_heads
from allo_lightning.attention import ProteinStats
from allo_lightning.probe.bootstrap import FoldBootstrap
from allo_lightning.probe.paired import average_precision_batch, paired_permutation, set_rotation_test

SIZES = (3, 3, 3, 3, 2)  # 14 GPCRs in 5 folds


def ar1(n, length, ell, rng):
    phi = math.exp(-1.0 / ell) if ell > 0 else 0.0
    e = rng.standard_normal((n, length))
    e[:, 0] /= math.sqrt(1 - phi * phi)
    return lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], e, axis=-1)


def null_set(rng, ell, n_prot=8, n_heads=48):
    """8 proteins of 250-500 residues, a pocket of 2-4 site runs (1-5 long) within 60 residues; each head
    receives count ~ Poisson(exp(1.2 AR(1) + 0.5) x Gamma(4, 1/4)) confident pairs, unrelated to the sites."""
    items = []
    for _ in range(n_prot):
        length = int(rng.integers(250, 501))
        y = np.zeros(length, int)
        centre = int(rng.integers(30, length - 30))
        for _ in range(int(rng.integers(2, 5))):
            s = int(np.clip(centre + rng.integers(-30, 30), 0, length - 5))
            y[s:s + int(rng.integers(1, 6))] = 1
        lam = np.exp(1.2 * ar1(n_heads, length, ell, rng) + 0.5) * rng.gamma(4.0, 0.25, size=(n_heads, length))
        count = torch.as_tensor(rng.poisson(lam).astype(np.float32)).view(1, n_heads, length)
        mass = count * torch.as_tensor(rng.uniform(0.3, 0.9, size=count.shape).astype(np.float32))
        items.append((ProteinStats(received=count.clone(), count=count, mass=mass, total=count.sum(-1)), y))
    return items


def nulls(n_sets=400, B=400):
    for ell in (0, 3, 10):
        for null in ("permutation", "shift"):
            rng = np.random.default_rng(1000 + int(ell))
            rej, any_bh, share = [], [], []
            t0 = time.perf_counter()
            for r in range(n_sets):
                s = score_heads(null_set(rng, ell), 1, 48, n_permutations=B, max_permutations=4 * B, seed=r,
                                min_confident=1, null=null, q_max=0.1)
                p, q = s.p_alpha.pvalue.ravel(), s.p_alpha.qvalue.ravel()
                rej.append(float((p <= 0.05).double().mean()))
                any_bh.append(bool((q < 0.1).any()))
                share.append(float((q < 0.1).double().mean()))
            print(f"corr length {ell:>2} {null:<11}: P(p<=.05) {np.mean(rej):.3f}  BH q<.1: P(any head) "
                  f"{np.mean(any_bh):.3f}  share of heads {np.mean(share):.4f}  ({n_sets} sets x 48 heads, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)


def _proteins(rng, n_prot, length, signal, offsets=0.5):
    y = np.zeros(n_prot * length)
    g = np.repeat(np.arange(n_prot), length)
    for p in range(n_prot):
        s = rng.integers(0, length - 12)
        y[p * length + s: p * length + s + int(rng.integers(4, 12))] = 1
    return y, g, lambda gain: gain[g] * signal * y + rng.normal(size=len(y)) + rng.normal(scale=offsets, size=n_prot)[g]


def random_rows(runs=300, D=39):
    """Each head set's signal times 1 + N(0, tau), shared by every protein and fold; selected drawn alike."""
    for tau in (0.0, 0.25, 0.5):
        rng = np.random.default_rng(int(tau * 100) + 7)
        old = new = 0
        sds = []
        for r in range(runs):
            q = 1 + rng.normal(scale=tau, size=D + 1)
            folds, sets = [], [[] for _ in range(D + 1)]
            for n_prot in SIZES:
                y, g, score = _proteins(rng, n_prot, 300, 1.0)
                folds.append((y, g))
                for h in range(D + 1):
                    sets[h].append(score(np.full(n_prot, q[h])))
            old += paired_permutation(folds, sets[0], sets[1:], n_mc=1000, seed=r)["p_value"] < 0.05
            new += set_rotation_test(folds, sets[0], sets[1:])["p_value"] <= 0.05
            ap = np.mean([average_precision_batch(np.stack([s[f] for s in sets]), y)
                          for f, (y, _) in enumerate(folds)], axis=0)
            sds.append(ap[1:].std())
        print(f"tau {tau}: {D} draws: P(p < .05) rotating proteins {old / runs:.3f}, head sets P(p <= .05) "
              f"{new / runs:.3f}; sd of the row AUPRC over draws {np.mean(sds):.3f} ({runs} studies)", flush=True)


def homologs(runs=400, per_cluster=2, clusters_per_fold=(2, 2, 1, 1, 1)):
    """Two rows equal on the population; test proteins in clusters of near-identical homologs sharing a
    row x cluster effect N(0, tau)."""
    for tau in (0.0, 0.5, 1.0):
        rng = np.random.default_rng(int(tau * 10) + 3)
        old = new = 0
        for _ in range(runs):
            fp, fc, a, b = [], [], [], []
            for n_cl in clusters_per_fold:
                n_prot = n_cl * per_cluster
                cl = np.arange(n_prot) // per_cluster
                y, g, score = _proteins(rng, n_prot, 150, 1.0)
                u = rng.normal(scale=tau, size=(2, n_cl))
                a.append(score(1 + u[0, cl]))
                b.append(score(1 + u[1, cl]))
                fp.append((y, g))
                fc.append((y, cl[g]))
            old += paired_permutation(fp, a, [b])["p_value"] < 0.05
            new += paired_permutation(fc, a, [b])["p_value"] < 0.05
        print(f"tau {tau}: P(p < .05) rotating proteins {old / runs:.3f}, clusters {new / runs:.3f} ({runs} "
              f"studies, {len(clusters_per_fold)} folds, clusters of {per_cluster})", flush=True)


def coverage(runs=400, n_boot=500, fold_sets=(SIZES, (6,) * 5, (20,) * 5, (14,), (50,))):
    """Coverage of the report's 95 % interval (mean over folds of the pooled fold AUPRC, proteins resampled
    within folds) for the expected value of that same statistic (Monte Carlo truth over 4000 studies).
    Proteins differ: signal times 1 + N(0, 0.5) per protein. One fold of n: evaluate's interval over n proteins."""
    for sizes in fold_sets:
        def study(rng, sizes=sizes):
            folds, scores = [], []
            for n_prot in sizes:
                y, g, score = _proteins(rng, n_prot, 300, 1.5)
                folds.append((y, g))
                scores.append(score(1 + rng.normal(scale=0.5, size=n_prot)))
            return folds, scores

        rng = np.random.default_rng(sum(sizes))
        truth = np.mean([np.mean([average_precision_batch(s, y)[0] for (y, _), s in zip(*study(rng))])
                         for _ in range(4000)])
        hit = width = 0.0
        for r in range(runs):
            folds, scores = study(rng)
            iv = FoldBootstrap(folds, n_boot=n_boot, seed=r).interval([scores])
            hit += iv.lo <= truth <= iv.hi
            width += iv.hi - iv.lo
        print(f"test proteins per fold {sizes}: 95 % interval covers {hit / runs:.3f} (mean width "
              f"{width / runs:.3f}, truth {truth:.3f}; {runs} studies)", flush=True)


if __name__ == "__main__":
    what, *args = sys.argv[1:] or ["nulls"]
    {"nulls": nulls, "random-rows": random_rows, "homologs": homologs, "coverage": coverage}[what](
        *(int(a) for a in args))
