"""The scored structure and what is recorded about a mapping.

The written structure gets the scores in every model. Everything else in the file (other chains, ligands,
waters, unmapped residues, header records) is left unchanged: PDB files are edited line by line (B-factor
columns only) and mmCIF files category by category (the ``B_iso_or_equiv`` column only, plus a category
``allo_lightning_score`` with the score and percentile of every mapped residue). Atoms of unmapped
residues get B-factor ``UNMAPPED_B`` (-1, a value no score takes) unless asked to keep their
crystallographic B. A ``note`` (a random backbone's: its scores mean nothing) is added as ``REMARK 999``
lines before the coordinates of a PDB file, and as the category ``allo_lightning_note`` of an mmCIF file.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

from ..outputs import atomic_path
from .alignment import ChainMapping
from .formats import Residue, read_text

UNMAPPED_B = -1.0  # B-factor written on atoms without a score (no score is negative)


def percentiles(scores: Sequence[float]) -> list[float]:
    """Within-protein percentile of each score, 0 (lowest) .. 1 (highest): ``(n - rank) / (n - 1)`` with
    rank 1 = highest score (ties in sequence order, as ``rank`` in predictions.csv); 1 for a single residue."""
    n = len(scores)
    order = sorted(range(n), key=lambda k: -scores[k])  # stable: ties in sequence order
    out = [1.0] * n
    for rank, k in enumerate(order, start=1):
        out[k] = (n - rank) / (n - 1) if n > 1 else 1.0
    return out


def residue_scores(mapping: ChainMapping, scores: Sequence[float]) -> dict[tuple[str, int, str, str], float]:
    return {r.key: float(s) for r, s in zip(mapping.residues, scores) if r is not None}


def _pdb_key(line: str) -> tuple[str, int, str, str] | None:
    try:
        return (line[21], int(line[22:26]), line[26].strip(), line[17:20].strip())
    except (ValueError, IndexError):
        return None


SCORE_CATEGORY = "allo_lightning_score"  # mmCIF category written next to atom_site
NOTE_CATEGORY = "allo_lightning_note"  # mmCIF: the note of the run (a random backbone's), as ``text``
COORDINATES = ("MODEL ", "ATOM  ", "HETATM", "ANISOU", "TER")


def _pdb_remarks(note: str, end: str) -> list[str]:
    """``note`` as PDB REMARK 999 lines (80 columns at most)."""
    return [f"REMARK 999 {chunk}".ljust(80) + end for chunk in textwrap.wrap(note, 69)]


def write_scored_structure(mapping: ChainMapping, scores: Sequence[float], dst: str | Path,
                           unmapped_b: float | None = UNMAPPED_B, note: str = "") -> Path:
    """Copy the structure to ``dst`` (same format) with B-factor = score on the mapped residues of the
    mapped chain (every model) and ``unmapped_b`` on every other atom (other chains, ligands, waters,
    unmapped residues; ``None`` keeps their crystallographic B); everything else unchanged. An mmCIF
    copy also gets the category ``_allo_lightning_score`` (one row per mapped residue: auth_asym_id,
    auth_seq_id, pdbx_PDB_ins_code, auth_comp_id, seq_position (1-based), score, percentile), so the
    scores survive a program that rewrites B-factors. ``note`` (e.g. a random backbone's) goes into the copy:
    PDB ``REMARK 999`` lines before the coordinates, mmCIF the category ``allo_lightning_note``."""
    by_key = residue_scores(mapping, scores)
    dst = Path(dst)
    if mapping.fmt == "pdb":
        lines = read_text(mapping.path, "latin-1").splitlines(keepends=True)
        out = []
        for line in lines:
            if note and line.startswith(COORDINATES):
                out += _pdb_remarks(note, line[len(line.rstrip("\r\n")):] or "\n")
                note = ""
            if line.startswith(("ATOM  ", "HETATM")):
                key = _pdb_key(line)
                value = by_key.get(key, unmapped_b) if key is not None else unmapped_b
                if value is not None:
                    body = line.rstrip("\r\n")
                    end = line[len(body):]
                    body = body.ljust(66)
                    line = body[:60] + f"{value:6.2f}" + body[66:] + end
            out.append(line)
        with atomic_path(dst) as tmp:
            tmp.write_bytes("".join(out).encode("latin-1"))
        return dst
    import numpy as np
    from biotite.structure.io import pdbx

    cif = pdbx.CIFFile.read(io.StringIO(read_text(mapping.path)))
    block = cif.block
    sites = block["atom_site"]

    def col(*names: str, default: str = "") -> np.ndarray:
        for n in names:
            if n in sites:
                return sites[n].as_array(str)
        return np.full(sites.row_count, default)

    chains = col("auth_asym_id", "label_asym_id")
    numbers = col("auth_seq_id", "label_seq_id")
    icodes = col("pdbx_PDB_ins_code")
    names = col("auth_comp_id", "label_comp_id")
    b = col("B_iso_or_equiv", default="?").astype(object)
    for i in range(sites.row_count):
        code = "" if icodes[i] in (".", "?") else icodes[i]
        try:
            key = (chains[i], int(numbers[i]), code, names[i])
        except ValueError:
            key = None
        if key in by_key:
            b[i] = f"{by_key[key]:.4f}"
        elif unmapped_b is not None:
            b[i] = f"{unmapped_b:.2f}"
    sites["B_iso_or_equiv"] = pdbx.CIFColumn(pdbx.CIFData(np.asarray(b, dtype=str)))
    pct = percentiles([float(v) for v in scores])
    rows = [(r, k + 1, float(scores[k]), pct[k]) for k, r in enumerate(mapping.residues) if r is not None]
    if rows:
        block[SCORE_CATEGORY] = pdbx.CIFCategory({
            "auth_asym_id": [r.chain for r, *_ in rows],
            "auth_seq_id": [str(r.number) for r, *_ in rows],
            "pdbx_PDB_ins_code": [r.icode or "?" for r, *_ in rows],
            "auth_comp_id": [r.name for r, *_ in rows],
            "seq_position": [str(k) for _, k, _, _ in rows],
            "score": [f"{v:.6f}" for *_, v, _ in rows],
            "percentile": [f"{q:.4f}" for *_, q in rows]})
    if note:
        block[NOTE_CATEGORY] = pdbx.CIFCategory({"text": [note]})
    with atomic_path(dst) as tmp:
        cif.write(str(tmp))
    return dst



def mapping_columns(residues: Sequence[Residue | None]) -> list[tuple[str, str, str]]:
    """(chain, residue number, insertion code) per sequence position; empty strings where unmapped."""
    return [("", "", "") if r is None else (r.chain, str(r.number), r.icode) for r in residues]



def structure_record(mapping: ChainMapping | None, chain: str | None = None, name: str | None = None,
                     unmapped_b: float | None = UNMAPPED_B) -> dict:
    """The per-protein structure part of predictions.json (a stable data API for reports):

    - ``structure``: the input file (None without one); ``written``: the scored copy, relative to the
      output folder; ``chain``; ``numbering``: ``structure`` (author numbers) or ``sequence``;
    - ``identity``, ``coverage``, ``aligned``; ``segments``: mapped stretches (``["A:29-230", ...]``);
    - ``residues``: one entry per sequence position, ``[chain, resnum, icode]`` or null (unmapped);
    - ``reference_numbers``: per position the reference (UniProt) number from the reference records, or null;
    - ``reference``: accession, database, segments and what was excluded (other entries, tags), or null;
    - ``unmapped_b``: the B-factor written on atoms without a score (null: crystallographic B kept).
    """
    if mapping is None:
        return {"structure": None, "written": None, "chain": chain or "A", "numbering": "sequence",
                "segments": [], "residues": None, "reference_numbers": None, "reference": None}
    return {"structure": str(mapping.path), "written": f"structures/{name}.{mapping.fmt}" if name else None,
            "chain": mapping.chain, "numbering": "structure", "identity": round(mapping.identity, 4),
            "coverage": round(mapping.coverage, 4), "aligned": mapping.aligned, "segments": mapping.segments,
            "residues": [None if r is None else [r.chain, r.number, r.icode] for r in mapping.residues],
            "reference_numbers": [None if r is None else r.ref for r in mapping.residues],
            "reference": mapping.reference, "unmapped_b": unmapped_b}
