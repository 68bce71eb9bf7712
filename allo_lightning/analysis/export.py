"""Files of the head analysis: heads.csv, heads.json and attention_to_sites.csv (atomic writes)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from ..attention.stats import ProteinStats
from ..data.protein import Protein
from ..errors import AlloError
from ..outputs import write_json
from ..tables import write_csv
from .select import HeadAnalysis

ATTENTION_TO_SITES_COLUMNS = ("protein", "layer", "head", "query_position", "query_residue", "site_position",
                              "site_residue", "attention")


def write_heads_csv(path: str | Path, analysis: HeadAnalysis) -> Path:
    """heads.csv: one row per head in rank order (columns: see HeadAnalysis.rows)."""
    rows = analysis.rows()
    return write_csv(path, list(rows[0]), rows)


def write_heads_json(path: str | Path, analysis: HeadAnalysis, **extra) -> Path:
    """heads.json: the selection with its provenance (plus ``extra`` keys)."""
    return write_json(path, {**analysis.provenance(), **extra})


def attention_to_sites_rows(protein: Protein, stats: ProteinStats) -> Iterable[tuple]:
    """Rows (protein, layer, head, query_position, query_residue, site_position, site_residue,
    attention) for every query residue and every site of ``protein``, for each head of ``stats.maps``
    ([K, L, L], query x key, residues only). Positions are 1-based."""
    if stats.maps is None:
        raise AlloError("statistics were extracted without maps; extract with map_heads=selected heads")
    sites = [s for s in (protein.sites or ())]
    if not sites:
        return
    seq = protein.sequence
    cols = torch.as_tensor([s - 1 for s in sites])
    for (ly, h), amap in zip(stats.map_heads, stats.maps):
        sub = amap[:, cols].tolist()  # [L, n_sites]
        for i, row in enumerate(sub):
            for s, a in zip(sites, row):
                yield (protein.id, ly, h, i + 1, seq[i], s, seq[s - 1], a)


def write_attention_to_sites(path: str | Path, pairs: Iterable[tuple[Protein, ProteinStats]]) -> Path:
    """attention_to_sites.csv (long format, one row per protein x head x query residue x site)."""
    return write_csv(path, ATTENTION_TO_SITES_COLUMNS,
                     (row for protein, stats in pairs for row in attention_to_sites_rows(protein, stats)))
