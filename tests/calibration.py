"""The AR(1) scenario of issue 16: synthetic heads whose per-residue counts follow an AR(1) log-rate
that is unrelated to the sites, scored with ``score_heads`` on the REAL bundled GPCR site patterns
(contiguous runs). Every head is an independent replicate, so one ``score_heads`` call gives the
rejection rate of a null at a correlation length. Used by tests/test_nulls.py; run once to re-measure
the calibration table (and the power with a planted enrichment):

    python -m tests.calibration --heads 4000 --B 400
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.signal import lfilter

from allo_lightning.analysis import score_heads
from allo_lightning.attention import ProteinStats
from allo_lightning.data.bundled import read_bundled


def gpcr_site_patterns() -> list[np.ndarray]:
    """0/1 site labels of the 14 bundled GPCRs (234 sites in 98 runs)."""
    return [np.asarray(p.labels(), dtype=bool) for p in read_bundled("gpcr") if p.sites]


def ar1(n: int, length: int, corr_length: float, rng: np.random.Generator) -> np.ndarray:
    """[n, length] stationary AR(1) series, unit variance, lag-1 correlation exp(-1/corr_length)
    (0: independent)."""
    phi = math.exp(-1.0 / corr_length) if corr_length > 0 else 0.0
    e = rng.standard_normal((n, length))
    e[:, 0] /= math.sqrt(1 - phi * phi)
    return lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], e, axis=-1)


def ar1_heads(patterns: list[np.ndarray], n_heads: int, corr_length: float, seed: int = 0,
              enrichment: float = 1.0, sigma: float = 1.0) -> list[tuple[ProteinStats, np.ndarray]]:
    """(ProteinStats [1, n_heads, L], labels) per protein: count ~ Poisson(exp(sigma * x)) with x an
    AR(1) series per head; with ``enrichment`` != 1 the rate on the sites is multiplied by it (a
    planted signal). mass = count x a uniform(0.3, 0.9) confidence per residue."""
    rng = np.random.default_rng(seed)
    out = []
    for y in patterns:
        L = len(y)
        rate = np.exp(sigma * ar1(n_heads, L, corr_length, rng) - sigma * sigma / 2)
        rate[:, y] *= enrichment
        count = rng.poisson(rate).astype(np.float32)
        mass = count * rng.uniform(0.3, 0.9, size=count.shape).astype(np.float32)
        c = torch.as_tensor(count).view(1, n_heads, L)
        m = torch.as_tensor(mass).view(1, n_heads, L)
        out.append((ProteinStats(received=c.clone(), count=c, mass=m, total=c.sum(-1)), y.astype(int)))
    return out


def rejection_rates(items, n_heads: int, null: str | None, B: int = 400, seed: int = 0,
                    levels=(0.01, 0.05)) -> dict[str, dict[float, float]]:
    """P(p <= level) over the heads, per statistic (p_alpha, mass), under ``null`` (None: the default
    of score_heads). No escalation (max_permutations = B)."""
    kw = {} if null is None else {"null": null}
    s = score_heads(items, 1, n_heads, n_permutations=B, max_permutations=B, seed=seed, min_confident=1, **kw)
    return {st: {a: float((s.stat(st).pvalue <= a).double().mean()) for a in levels} for st in ("p_alpha", "mass")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=int, default=4000)
    ap.add_argument("--B", type=int, default=400)
    ap.add_argument("--lengths", type=float, nargs="+", default=[0, 3, 10])
    ap.add_argument("--enrichment", type=float, nargs="+", default=[1.3, 1.5])
    args = ap.parse_args(argv)
    patterns = gpcr_site_patterns()
    k = sum(int(y.sum()) for y in patterns)
    print(f"{len(patterns)} GPCRs, {k} sites; {args.heads} heads per cell, B = {args.B}")
    print("calibration (AR(1) log-rate unrelated to the sites): P(p<=.01) / P(p<=.05), p_alpha | mass")
    for ell in args.lengths:
        items = ar1_heads(patterns, args.heads, ell, seed=int(ell * 10) + 1)
        t0 = time.perf_counter()
        cells = []
        for null in ("permutation", "composition", "shift"):
            if null == "composition":
                continue  # needs sequences; same exchangeability assumption as permutation
            r = rejection_rates(items, args.heads, null, args.B)
            cells.append(f"{null}: {r['p_alpha'][0.01]:.3f} / {r['p_alpha'][0.05]:.3f} | "
                         f"{r['mass'][0.01]:.3f} / {r['mass'][0.05]:.3f}")
        print(f"  corr length {ell:g}: " + "   ".join(cells) + f"   ({time.perf_counter() - t0:.1f} s)")
    print("power (rate on the sites x enrichment): P(p<=.01) / P(p<=.05), p_alpha")
    for ell in args.lengths:
        for f in args.enrichment:
            items = ar1_heads(patterns, args.heads // 4, ell, seed=100 + int(ell * 10), enrichment=f)
            cells = []
            for null in ("permutation", "shift"):
                r = rejection_rates(items, args.heads // 4, null, args.B)
                cells.append(f"{null}: {r['p_alpha'][0.01]:.3f} / {r['p_alpha'][0.05]:.3f}")
            print(f"  corr length {ell:g}, enrichment {f:g}: " + "   ".join(cells))


if __name__ == "__main__":
    main()
