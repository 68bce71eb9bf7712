"""AlphaMissense association: are (predicted or labelled) allosteric residues more pathogenic?

Input: the public AlphaMissense tables (Cheng et al., Science 2023; the data are on Zenodo,
doi 10.5281/zenodo.8208688, and in the Google Cloud bucket ``gs://dm_alphamissense``), plain or gzip:

- per variant, e.g. ``AlphaMissense_aa_substitutions.tsv.gz``: columns ``uniprot_id``,
  ``protein_variant`` (``M1A``: reference letter, 1-based position, substitute), ``am_pathogenicity``,
  ``am_class`` (comment lines start with ``#``; the header may too);
- or one value per residue: ``uniprot_id``, ``position`` (1-based; also ``protein_position``/``pos``)
  and ``am_pathogenicity`` or ``mean_am_pathogenicity``.

Per residue the value is the mean pathogenicity over the substitutions at that position. A variant
whose reference letter differs from the protein's sequence is not used (counted: another isoform or
sequence version); a protein with more than 10 % such variants is left out with a note.

Comparison per protein and pooled: residues of a site set (predicted allosteric, or labelled) against
the OTHER residues of the same proteins: one-sided Mann-Whitney U (sites higher; scipy, tie-corrected)
and the effect size AUC = U / (n_sites x n_other) = P(site > other) + P(tie) / 2 (0.5: no association).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError

AM_COLUMNS = ("sites", "protein", "n_sites", "n_other", "mean_sites", "mean_other", "auc", "u", "p_value", "note")
_POSITION = ("position", "protein_position", "pos", "residue")
_VALUE = ("am_pathogenicity", "mean_am_pathogenicity")
_MAX_MISMATCH = 0.10


def _open_text(path: Path):
    try:
        with path.open("rb") as fh:
            magic = fh.read(2)
    except FileNotFoundError:
        raise InputError(f"{path}: AlphaMissense file not found (--report.alphamissense).", path=path,
                         todo="Check the path.") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the AlphaMissense file ({e.strerror}).", path=path,
                         todo="Check the path and its permissions.") from None
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _base(pid: str) -> str:
    return pid.split("_")[0]


def read_alphamissense(path: str | Path, ids: Iterable[str]) -> dict[str, dict]:
    """Per-residue mean pathogenicity for the proteins ``ids`` (matched by UniProt accession; an id
    like ``P29274_Na`` matches ``P29274``). Returns accession -> {"values": {pos: [values]}, "ref":
    {pos: letter or None}}. Raises InputError when no protein of ``ids`` is in the file."""
    path = Path(path)
    wanted = {_base(i) for i in ids}
    out: dict[str, dict] = {}
    header: list[str] | None = None
    mode = None
    with _open_text(path) as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            if header is None:
                tokens = [t.strip().lower().lstrip("#") for t in line.rstrip("\r\n").split("\t")]
                if "uniprot_id" not in tokens:
                    if line.startswith("#"):
                        continue
                    raise InputError(f"{path}, line {n}: no AlphaMissense header (a tab-separated line naming "
                                     "uniprot_id) before the data.", path=path, line=n,
                                     todo="Give the public AlphaMissense table (per variant or per residue).")
                header = tokens
                col = {t: i for i, t in enumerate(tokens)}
                value = next((c for c in _VALUE if c in col), None)
                position = next((c for c in _POSITION if c in col), None)
                if value is None or ("protein_variant" not in col and position is None):
                    raise InputError(f"{path}, line {n}: the header needs uniprot_id, protein_variant (or position) "
                                     f"and am_pathogenicity; found {', '.join(tokens[:10])}.", path=path, line=n,
                                     todo="Give the public AlphaMissense table (per variant or per residue).")
                mode = "variant" if "protein_variant" in col else "residue"
                i_id, i_val = col["uniprot_id"], col[value]
                i_var = col.get("protein_variant")
                i_pos = col.get(position) if position else None
                continue
            if line.startswith("#"):
                continue
            pid = line.split("\t", 1)[0].strip()
            if pid not in wanted and i_id == 0:
                continue  # fast path: most lines of the public file are other proteins
            fields = line.rstrip("\r\n").split("\t")
            try:
                pid = fields[i_id].strip()
                if pid not in wanted:
                    continue
                val = float(fields[i_val])
                if mode == "variant":
                    var = fields[i_var].strip()
                    ref, pos = var[0].upper(), int(var[1:-1])
                else:
                    ref, pos = None, int(fields[i_pos])
            except (IndexError, ValueError):
                raise InputError(f"{path}, line {n}: cannot read this AlphaMissense row.", path=path, line=n,
                                 todo="Check the file (tab-separated, numbers where expected).") from None
            if not math.isfinite(val) or pos < 1:
                continue
            entry = out.setdefault(pid, {"values": {}, "ref": {}})
            entry["values"].setdefault(pos, []).append(val)
            entry["ref"].setdefault(pos, ref)
    if header is None:
        raise InputError(f"{path}: empty AlphaMissense file.", path=path, todo="Give the public AlphaMissense table.")
    if not out:
        shown = ", ".join(sorted(wanted)[:5]) + (" ..." if len(wanted) > 5 else "")
        raise InputError(f"{path}: none of the {len(wanted)} proteins of the data ({shown}) is in this AlphaMissense "
                         "file (matched by UniProt accession in uniprot_id).", path=path,
                         todo="Use ids that are UniProt accessions, or the AlphaMissense file that covers them.")
    return out


def residue_values(entry: dict, sequence: str) -> tuple[np.ndarray, int, int]:
    """[L] mean pathogenicity per residue (NaN where the file has none), the number of variants whose
    reference letter does not match the sequence (not used), and the number of variants read."""
    vals = np.full(len(sequence), np.nan)
    mismatched = total = 0
    for pos, values in entry["values"].items():
        total += len(values)
        ref = entry["ref"].get(pos)
        if pos > len(sequence) or (ref is not None and sequence[pos - 1] != ref):
            mismatched += len(values)
            continue
        vals[pos - 1] = float(np.mean(values))
    return vals, mismatched, total


def mann_whitney(sites: np.ndarray, other: np.ndarray) -> tuple[float, float, float]:
    """(U of the sites, AUC = U / (n1 n2), one-sided p: sites higher). NaN when a group is empty."""
    if len(sites) == 0 or len(other) == 0:
        return float("nan"), float("nan"), float("nan")
    from scipy.stats import mannwhitneyu

    res = mannwhitneyu(sites, other, alternative="greater")
    u = float(res.statistic)
    return u, u / (len(sites) * len(other)), float(res.pvalue)


def predicted_mask(scores: np.ndarray, threshold: float | None, top_k: int | None) -> np.ndarray:
    """Residues called allosteric: the top k scores of the protein (ties at the k-th score broken by
    position), or the scores at or above the threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    mask = np.zeros(len(scores), dtype=bool)
    if top_k:
        mask[np.argsort(-scores, kind="mergesort")[: min(top_k, len(scores))]] = True
    else:
        mask = scores >= (0.5 if threshold is None else threshold)
    return mask


def association_rows(am: dict[str, dict], scored: Sequence[tuple], top_k: int | None = None) -> list[dict]:
    """``scored``: (protein, per-residue scores, decision threshold) for each tested protein. Rows for
    ``predicted`` and ``labelled`` sites: one per protein in the file, then ``pooled``."""
    rows: list[dict] = []
    pooled: dict[str, tuple[list, list]] = {"predicted": ([], []), "labelled": ([], [])}
    notes: list[str] = []
    for protein, scores, threshold in scored:
        entry = am.get(_base(protein.id))
        if entry is None:
            continue
        vals, mismatched, total = residue_values(entry, protein.sequence)
        if total and mismatched / total > _MAX_MISMATCH:
            notes.append(f"{protein.id}: {mismatched} of {total} variants do not match the sequence; left out")
            continue
        have = ~np.isnan(vals)
        masks = {"predicted": predicted_mask(scores, threshold, top_k)}
        if protein.sites:
            labelled = np.zeros(protein.length, dtype=bool)
            labelled[np.asarray(protein.sites) - 1] = True
            masks["labelled"] = labelled
        for kind, mask in masks.items():
            s, o = vals[mask & have], vals[~mask & have]
            u, auc, p = mann_whitney(s, o)
            rows.append({"sites": kind, "protein": protein.id, "n_sites": len(s), "n_other": len(o),
                         "mean_sites": float(s.mean()) if len(s) else float("nan"),
                         "mean_other": float(o.mean()) if len(o) else float("nan"), "auc": auc, "u": u,
                         "p_value": p, "note": f"{mismatched} mismatched variants" if mismatched else ""})
            pooled[kind][0].append(s)
            pooled[kind][1].append(o)
    if not rows:
        raise InputError("no tested protein is in the AlphaMissense file (or every one has another sequence "
                         "version); nothing to compare.", todo="Use the AlphaMissense file that covers your proteins.")
    for kind, (ss, oo) in pooled.items():
        if not ss:
            continue
        s, o = np.concatenate(ss), np.concatenate(oo)
        u, auc, p = mann_whitney(s, o)
        rows.append({"sites": kind, "protein": "pooled", "n_sites": len(s), "n_other": len(o),
                     "mean_sites": float(s.mean()) if len(s) else float("nan"),
                     "mean_other": float(o.mean()) if len(o) else float("nan"), "auc": auc, "u": u, "p_value": p,
                     "note": f"{len(ss)} proteins; " + "; ".join(notes) if notes else f"{len(ss)} proteins"})
    return rows


def write_residue_table(path: str | Path, rows: Sequence[tuple[str, int, float]]) -> None:
    """A per-residue file (uniprot_id, position, am_pathogenicity), e.g. for tests or a reduced copy."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["uniprot_id", "position", "am_pathogenicity"])
        w.writerows(rows)
