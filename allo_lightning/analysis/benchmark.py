"""Benchmark (not a test): ``python -m allo_lightning.analysis.benchmark [THREADS]``.

Scores every head of an esmc_600m-shaped model (36 layers x 18 heads) over 20 synthetic proteins of
length ~400 (statistics as after extraction) with :func:`score_heads`, and times the original
approach (a Python loop per head: 1000 random site sets per protein with ``np.random.choice``) on a
few heads, extrapolated to all heads."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..attention.stats import ProteinStats
from .scores import score_heads


def synthetic(n_layers: int = 36, n_heads: int = 18, n_proteins: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n_proteins):
        L = int(rng.integers(350, 450))
        count = torch.poisson(torch.rand(n_layers, n_heads, L, generator=g) * 3, generator=g)
        mass = count * torch.rand(n_layers, n_heads, L, generator=g)
        labels = (rng.random(L) < 0.05).astype(int)
        labels[rng.integers(L)] = 1
        items.append((ProteinStats(received=count.clone(), count=count, mass=mass, total=count.sum(-1) + 5), labels))
    return items


def original_one_head(items, layer: int, head: int, n_draws: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """The original per-head computation: observed mass on sites vs 1000 random same-size sets."""
    rng = np.random.default_rng(seed)
    obs, rand = 0.0, np.zeros(n_draws)
    for stats, labels in items:
        m = stats.mass[layer, head].numpy()
        sites = np.flatnonzero(labels)
        nonsite = np.flatnonzero(labels == 0)
        obs += m[sites].sum()
        for b in range(n_draws):
            rand[b] += m[rng.choice(nonsite, len(sites), replace=False)].sum()
    return obs, rand.mean(), (1 + (rand >= obs).sum()) / (n_draws + 1)


def main(threads: int | None = None) -> None:
    import sys

    threads = threads or (int(sys.argv[1]) if len(sys.argv) > 1 else min(2, torch.get_num_threads()))
    torch.set_num_threads(threads)
    items = synthetic()
    score_heads(items[:2], 36, 18, 100)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        score_heads(items, 36, 18, n_permutations=2000, seed=0)
        times.append(time.perf_counter() - t0)
    fast = min(times)
    t0 = time.perf_counter()
    n = 3
    for h in range(n):
        original_one_head(items, 0, h)
    per_head = (time.perf_counter() - t0) / n
    slow = per_head * 36 * 18
    print(f"score_heads, 36 x 18 heads, 20 proteins (L ~400), 2000 permutations, p_alpha and mass: "
          f"{fast:.3f} s with {threads} thread(s) (best of 3; runs {', '.join(f'{t:.3f}' for t in times)})")
    print(f"original loop, mass only, 1000 draws: {per_head:.2f} s per head -> {slow:.0f} s for 648 heads "
          f"(extrapolated from {n} heads); speed-up x{slow / fast:.0f}")


if __name__ == "__main__":
    main()
