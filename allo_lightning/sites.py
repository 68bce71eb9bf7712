"""Predicted sites: high-scoring residues grouped into patches, ranked, and judged like pocket predictors.

The rule (documented in the README, "Predicted sites"):

- **Candidates**: the ``top`` best-scoring residues of a protein, ``top = max(MIN_TOP, ceil(TOP_FRACTION *
  length))`` (5 % of the residues, at least 5); with a structure, among the positions mapped onto it.
- **With a structure**: two candidates are linked when any of their side-chain atoms (every heavy atom but
  the backbone N, C, O; CA counts, so glycine has one) lie within ``LINK_DISTANCE`` (6 A) of each other;
  a site is a connected group (single linkage at 6 A). Its centre is the mean position of its
  side-chain atoms.
- **Without a structure**: candidates closer than ``SEQUENCE_LINK`` positions along the sequence (at most
  2 others between them) form a segment; it has no centre.
- **Rank**: by ``score`` = the sum of its residues' scores (a patch of several high scores ranks above a
  lone one), then by its best score.
- **Success** (labels and a structure): a site is a hit when its centre lies within ``DCA_CUTOFF`` (4 A)
  of any atom of a labelled site residue (DCA, as P2Rank/PrankWeb judge pockets); ``top1`` = the rank-1
  site is a hit, ``top3`` = one of the first three is. Without a structure, a segment is a hit when it
  contains a labelled residue (no distance: stated as ``criterion``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TOP_FRACTION = 0.05
MIN_TOP = 5
LINK_DISTANCE = 6.0
SEQUENCE_LINK = 3
DCA_CUTOFF = 4.0
BACKBONE = ("N", "C", "O", "OXT")


@dataclass
class Site:
    rank: int
    positions: list[int]  # 1-based sequence positions, ascending
    labels: list[str]  # per position: "A:117A" (structure) or "K45" (sequence)
    score: float  # sum of the residues' scores
    best: float  # highest score in the site
    centre: tuple[float, float, float] | None
    dca: float | None = None  # distance (A) from the centre to the nearest labelled atom
    hit: bool | None = None

    def as_dict(self) -> dict:
        n = len(self.positions)
        return {"rank": self.rank, "positions": self.positions, "residues": self.labels, "n_residues": n,
                "score": round(self.score, 6), "mean_score": round(self.score / n, 6), "max_score": round(self.best, 6),
                "centre": None if self.centre is None else [round(c, 3) for c in self.centre],
                "dca": None if self.dca is None else round(self.dca, 3), "hit": self.hit}


def n_candidates(length: int) -> int:
    return min(length, max(MIN_TOP, math.ceil(TOP_FRACTION * length)))


def _components(adjacent: np.ndarray) -> list[list[int]]:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    _, label = connected_components(csr_matrix(adjacent), directed=False)
    groups: dict[int, list[int]] = {}
    for k, g in enumerate(label.tolist()):
        groups.setdefault(g, []).append(k)
    return list(groups.values())


def residue_atoms(atoms, residues) -> dict:
    """Coordinates [n, 3] per residue key (chain, number, icode): ``side`` (side chain + CA, heavy atoms;
    every atom of a residue without one) and ``all`` (every atom)."""
    import biotite.structure as struc

    wanted = {(r.chain, r.number, r.icode) for r in residues}
    starts = struc.get_residue_starts(atoms, add_exclusive_stop=True)
    name = atoms.atom_name.astype(str)
    heavy = atoms.element.astype(str) != "H"
    sidechain = heavy & ~np.isin(name, BACKBONE)
    spans: dict = {}
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist()):
        key = (str(atoms.chain_id[a]), int(atoms.res_id[a]), str(atoms.ins_code[a]).strip())
        if key in wanted:
            spans.setdefault(key, []).extend(range(a, b))
    out = {}
    for key in wanted:
        sel = np.asarray(spans.get(key, []), dtype=int)
        side = sel[sidechain[sel]] if len(sel) else sel
        out[key] = {"side": atoms.coord[side if len(side) else sel], "all": atoms.coord[sel]}
    return out


def predicted_sites(scores: Sequence[float], sequence: str, residues: Sequence | None = None, atoms=None,
                    known: Sequence[int] = ()) -> tuple[list[Site], str]:
    """Sites of one protein (ranked) and the success criterion used. ``residues``: the structure residue
    of each position (None where unmapped) with ``atoms`` (biotite AtomArray, first model); without
    them, sequence segments. ``known``: labelled 1-based positions (hits are judged when given)."""
    s = np.asarray(scores, dtype=float)
    structural = residues is not None and atoms is not None
    eligible = [k for k in range(len(s)) if not structural or residues[k] is not None]
    order = sorted(eligible, key=lambda k: (-s[k], k))[: n_candidates(len(s))]
    if not order:
        return [], "none"
    order.sort()
    if structural:
        coords = residue_atoms(atoms, [residues[k] for k in order])
        side = [coords[residues[k].chain, residues[k].number, residues[k].icode]["side"] for k in order]
        from scipy.spatial import cKDTree

        n = len(order)
        owner = np.repeat(np.arange(n), [len(x) for x in side])
        pairs = cKDTree(np.concatenate(side)).query_pairs(LINK_DISTANCE, output_type="ndarray")  # d <= 6 A
        adjacent = np.zeros((n, n), dtype=bool)
        adjacent[owner[pairs[:, 0]], owner[pairs[:, 1]]] = True
        groups = _components(adjacent | adjacent.T)
    else:
        groups, current = [], [0]
        for a in range(1, len(order)):
            if order[a] - order[a - 1] <= SEQUENCE_LINK:
                current.append(a)
            else:
                groups.append(current)
                current = [a]
        groups.append(current)
    labelled_atoms = None
    known = sorted({int(p) for p in known if 1 <= int(p) <= len(s)})
    if structural and known:
        mapped_known = [residues[p - 1] for p in known if residues[p - 1] is not None]
        if mapped_known:
            labelled_atoms = np.concatenate([v["all"] for v in residue_atoms(atoms, mapped_known).values()])
    sites = []
    for g in groups:
        pos = [order[a] + 1 for a in g]
        if structural:
            labels = [f"{residues[p - 1].chain}:{residues[p - 1].resi}" for p in pos]
            centre_xyz = np.concatenate([side[a] for a in g]).mean(axis=0)
            centre = tuple(float(c) for c in centre_xyz)
        else:
            labels = [f"{sequence[p - 1]}{p}" for p in pos]
            centre = None
        site = Site(0, pos, labels, float(s[[p - 1 for p in pos]].sum()), float(s[[p - 1 for p in pos]].max()), centre)
        if labelled_atoms is not None and len(labelled_atoms):
            site.dca = float(np.linalg.norm(labelled_atoms - np.asarray(centre), axis=1).min())
            site.hit = site.dca <= DCA_CUTOFF
        elif known and not structural:
            site.hit = bool(set(pos) & set(known))
        sites.append(site)
    sites.sort(key=lambda t: (-t.score, -t.best, t.positions[0]))
    for k, site in enumerate(sites, start=1):
        site.rank = k
    if labelled_atoms is not None:
        criterion = f"DCA: centre within {DCA_CUTOFF:g} A of an atom of a labelled residue"
    elif known and not structural:
        criterion = "sequence: the segment contains a labelled residue"
    elif known:
        criterion = "none: no labelled residue is mapped onto the structure"
    else:
        criterion = "none: no labels"
    return sites, criterion


def success(sites: Sequence[Site]) -> dict | None:
    """top1 / top3 hits of one protein's ranked sites (None when no site was judged)."""
    if not sites or sites[0].hit is None:
        return None
    return {"top1": bool(sites[0].hit), "top3": any(bool(t.hit) for t in sites[:3])}


SITE_COLUMNS = ["id", "rank", "n_residues", "residues", "positions", "score", "mean_score", "max_score",
                "centre_x", "centre_y", "centre_z", "dca", "hit"]


def site_rows(pid: str, sites: Sequence[Site]) -> list[list]:
    """Rows of sites.csv (columns SITE_COLUMNS)."""
    rows = []
    for t in sites:
        c = t.centre or (None, None, None)
        rows.append([pid, t.rank, len(t.positions), " ".join(t.labels), " ".join(str(p) for p in t.positions),
                     t.score, t.score / len(t.positions), t.best, *c, t.dca, t.hit])  # hit: 0/1 (tables.COUNT_FLAGS)
    return rows
