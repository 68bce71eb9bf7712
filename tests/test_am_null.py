"""Issue 16, AlphaMissense association: calibrated under true nulls that broke the old Mann-Whitney
tests (proteins differing in mean pathogenicity and site share; values autocorrelated along the chain
with contiguous sites), and still powerful when sites are more pathogenic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from allo_lightning.analysis.alphamissense import association_rows, mann_whitney
from allo_lightning.data import Protein
from tests.calibration import ar1


def _dataset(rng, n_proteins: int, corr_length: float, shift_up: float = 0.0, heterogeneous: bool = True,
             L: int = 200):
    """Proteins with contiguous site runs; AM values = protein mean + AR(1) noise. ``heterogeneous``:
    protein means and site shares differ and go together (more sites where pathogenicity is higher),
    as in real data; sites unrelated to the values unless ``shift_up`` > 0."""
    am, scored = {}, []
    for i in range(n_proteins):
        mean = rng.uniform(0.15, 0.75) if heterogeneous else 0.4
        n_runs = 1 + int(round(6 * mean)) if heterogeneous else 3
        sites = set()
        for start in rng.choice(L - 4, n_runs, replace=False):
            sites.update(range(int(start) + 1, int(start) + 4))
        sites = sorted(sites)
        vals = mean + 0.12 * ar1(1, L, corr_length, rng)[0]
        vals[np.asarray(sites) - 1] += shift_up
        pid = f"Q{i:05d}"
        seq = "A" * L
        am[pid] = {"values": {j + 1: [float(v)] for j, v in enumerate(vals)}, "ref": {j + 1: None for j in range(L)}}
        scored.append((Protein(id=pid, sequence=seq, sites=tuple(sites)), np.zeros(L), 0.5))
    return am, scored


def _old_pooled_p(am, scored) -> float:
    s, o = [], []
    for p, _, _ in scored:
        v = np.array([am[p.id]["values"][j + 1][0] for j in range(p.length)])
        m = p.labels().astype(bool)
        s.append(v[m])
        o.append(v[~m])
    return mann_whitney(np.concatenate(s), np.concatenate(o))[2]


def _rates(n_rep: int, corr_length: float, heterogeneous: bool, seed: int, shift_up: float = 0.0):
    rng = np.random.default_rng(seed)
    pooled, per, old_pooled, old_per = [], [], [], []
    for _ in range(n_rep):
        am, scored = _dataset(rng, 6, corr_length, shift_up, heterogeneous)
        rows = [r for r in association_rows(am, scored, top_k=5, n_draws=499, n_boot=50,
                                            seed=int(rng.integers(1 << 30))) if r["sites"] == "labelled"]
        pooled.append(next(r["p_value"] for r in rows if r["protein"] == "pooled"))
        per += [r["p_value"] for r in rows if r["protein"] != "pooled"]
        old_pooled.append(_old_pooled_p(am, scored))
        for p, _, _ in scored:
            v = np.array([am[p.id]["values"][j + 1][0] for j in range(p.length)])
            m = p.labels().astype(bool)
            old_per.append(mann_whitney(v[m], v[~m])[2])
    f = lambda x: float(np.mean(np.asarray(x) <= 0.05))  # noqa: E731
    return f(pooled), f(per), f(old_pooled), f(old_per), len(pooled), len(per)


def _bound(n: int, a: float = 0.05, z: float = 3.5) -> float:
    return a + z * math.sqrt(a * (1 - a) / n)


def test_pooled_test_calibrated_when_proteins_differ():
    """Independent residues, proteins differing in mean pathogenicity and in their share of sites:
    the old pooled Mann-Whitney rejects far too often, the stratified shift test does not."""
    pooled, _, old_pooled, _, n, _ = _rates(80, 0, True, seed=1)
    assert old_pooled > 0.15, old_pooled  # the defect, reproduced
    assert pooled <= _bound(n), pooled


def test_per_protein_test_calibrated_with_autocorrelated_values():
    """Pathogenicity correlated over 10 residues, contiguous sites: the old per-protein Mann-Whitney
    rejects 15-25 % of true nulls, the per-protein shift test stays at the nominal rate."""
    _, per, _, old_per, _, m = _rates(40, 10, False, seed=2)
    assert old_per > 0.1, old_per
    assert per <= _bound(m), per


@pytest.mark.slow
@pytest.mark.parametrize("corr_length", [0, 5, 15])
def test_calibration_at_full_size(corr_length):
    pooled, per, _, _, n, m = _rates(400, corr_length, True, seed=10 + corr_length)
    assert pooled <= _bound(n) and per <= _bound(m), (pooled, per)


def test_power_more_pathogenic_sites_found():
    pooled, per, _, _, _, _ = _rates(20, 5, True, seed=3, shift_up=0.15)
    assert pooled >= 0.9 and per >= 0.5, (pooled, per)


def test_per_protein_rows_are_bh_adjusted_and_pooled_has_an_interval():
    rng = np.random.default_rng(4)
    am, scored = _dataset(rng, 6, 3, shift_up=0.1)
    rows = association_rows(am, scored, top_k=5, n_draws=999, n_boot=500, seed=0)
    lab = [r for r in rows if r["sites"] == "labelled" and r["protein"] != "pooled"]
    p = np.array([r["p_value"] for r in lab])
    order = np.argsort(p)
    expect = np.minimum.accumulate((p[order] * len(p) / np.arange(1, len(p) + 1))[::-1])[::-1].clip(max=1)
    assert np.allclose(np.array([r["q_value"] for r in lab])[order], expect)
    for r, (p, _, _) in zip(lab, scored):  # U is the tie-corrected Mann-Whitney U (scipy)
        v = np.array([am[p.id]["values"][j + 1][0] for j in range(p.length)])
        m = p.labels().astype(bool)
        assert r["u"] == pytest.approx(mann_whitney(v[m], v[~m])[0]) and r["protein"] == p.id
    pooled = next(r for r in rows if r["sites"] == "labelled" and r["protein"] == "pooled")
    assert pooled["auc_lo"] <= pooled["auc"] <= pooled["auc_hi"] and "stratified" in pooled["test"]
    # per-protein p: exact over the L shifts -> a multiple of 1/L, never below 1/L
    assert all(r["p_value"] >= 1 / 200 - 1e-12 and abs(r["p_value"] * 200 - round(r["p_value"] * 200)) < 1e-9
               for r in lab)


if __name__ == "__main__":  # python -m tests.test_am_null: the false-positive table (400 data sets per row)
    for ell, het in ((0, True), (5, True), (15, True), (10, False)):
        r = _rates(400, ell, het, seed=100 + ell)
        print(f"correlation length {ell}, proteins differ: {het}: P(p <= .05) new pooled {r[0]:.3f}, new per-protein "
              f"{r[1]:.3f}; old pooled Mann-Whitney {r[2]:.3f}, old per-protein Mann-Whitney {r[3]:.3f}")
