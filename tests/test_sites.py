"""Predicted sites: single linkage at 6 A on side-chain atoms (checked against scipy's hierarchical
clustering), ranking, DCA success; sequence segments without a structure."""

from __future__ import annotations

import numpy as np
import pytest

from allo_lightning.sites import DCA_CUTOFF, n_candidates, predicted_sites, site_rows, success
from allo_lightning.structures import Residue


def hairpin(n=60, seed=0):
    """n residues (N, CA, C, O, CB) on a hairpin: residue k and n-1-k face each other ~5 A apart, so
    sequence-distant residues are spatial neighbours."""
    import biotite.structure as struc

    rng = np.random.default_rng(seed)
    atoms, residues = [], []
    half = n // 2
    for k in range(n):
        x = (k if k < half else n - 1 - k) * 3.8
        y = 0.0 if k < half else 5.0
        for j, name in enumerate(("N", "CA", "C", "O", "CB")):
            off = rng.normal(0, 0.3, 3) + [0, (1.5 if k < half else -1.5) if name == "CB" else 0, j * 0.2]
            atoms.append(struc.Atom([x, y, 0.0] + off, chain_id="A", res_id=k + 101, res_name="ALA", atom_name=name,
                                    element=name[0]))
        residues.append(Residue("A", k + 101, "", "ALA", "A"))
    return struc.array(atoms), residues


def reference_groups(atoms, residues, candidates):
    """Single linkage at 6 A with scipy.cluster.hierarchy on min side-chain distances (independent)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    side = []
    for k in candidates:
        sel = (atoms.res_id == residues[k].number) & ~np.isin(atoms.atom_name, ["N", "C", "O"])
        side.append(atoms.coord[sel])
    n = len(candidates)
    d = np.zeros((n, n))
    for a in range(n):
        for b in range(n):
            if a != b:
                d[a, b] = np.linalg.norm(side[a][:, None] - side[b][None], axis=-1).min()
    if n == 1:
        return [[candidates[0] + 1]]
    label = fcluster(linkage(squareform(d), "single"), t=6.0, criterion="distance")
    return sorted(sorted(candidates[i] + 1 for i in range(n) if label[i] == g) for g in set(label))


@pytest.mark.parametrize("seed", range(5))
def test_patches_equal_single_linkage_reference(seed):
    atoms, residues = hairpin(seed=seed)
    rng = np.random.default_rng(seed)
    scores = rng.random(60)
    sites, criterion = predicted_sites(scores, "A" * 60, residues, atoms)
    top = sorted(np.argsort(-scores, kind="stable")[: n_candidates(60)].tolist())
    assert sorted(t.positions for t in sites) == reference_groups(atoms, residues, top)
    assert [t.rank for t in sites] == list(range(1, len(sites) + 1))
    assert [t.score for t in sites] == sorted((t.score for t in sites), reverse=True)
    assert criterion.startswith("none")


def test_spatial_patch_joins_sequence_distant_residues_and_dca():
    atoms, residues = hairpin()
    scores = np.full(60, 0.1)
    scores[[10, 49]] = 0.9  # positions 11 and 50 face each other across the hairpin
    scores[[30, 31, 32]] = 0.5  # a weaker patch at the turn... (31-33 = the tip: 0-based 30..32)
    sites, criterion = predicted_sites(scores, "A" * 60, residues, atoms, known=[50])
    assert sites[0].positions == [11, 50] and sites[0].labels == ["A:111", "A:150"]
    sel = np.isin(atoms.res_id, [111, 150]) & ~np.isin(atoms.atom_name, ["N", "C", "O"])
    assert sites[0].centre == pytest.approx(tuple(atoms.coord[sel].mean(axis=0)))
    labelled = atoms.coord[atoms.res_id == 150]
    assert sites[0].dca == pytest.approx(float(np.linalg.norm(labelled - sites[0].centre, axis=1).min()))
    assert sites[0].hit is (sites[0].dca <= DCA_CUTOFF) and sites[0].hit
    assert criterion.startswith("DCA")
    assert success(sites) == {"top1": True, "top3": True}
    # labels elsewhere: rank 1 misses, rank 2 (the turn) hits -> top1 False, top3 True
    far = predicted_sites(scores, "A" * 60, residues, atoms, known=[32])[0]
    assert success(far) == {"top1": False, "top3": True}
    rows = site_rows("P1", sites)
    assert rows[0][:5] == ["P1", 1, 2, "A:111 A:150", "11 50"]


def test_sequence_segments_without_structure():
    scores = np.zeros(100)
    scores[[10, 12, 14]] = [0.9, 0.8, 0.7]  # one segment (gaps of one)
    scores[[40, 60]] = [0.95, 0.6]  # two lone residues
    sites, criterion = predicted_sites(scores, "ACDEFGHIKL" * 10, known=[61])
    assert [t.positions for t in sites] == [[11, 13, 15], [41], [61]]
    assert sites[0].labels == ["A11", "D13", "F15"] and sites[0].centre is None
    assert [t.hit for t in sites] == [False, False, True] and criterion.startswith("sequence")
    assert success(sites) == {"top1": False, "top3": True}
