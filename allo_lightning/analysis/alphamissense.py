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

Comparison: residues of a site set (predicted allosteric, or labelled) against the OTHER residues of
the same protein. Effect size: AUC = U / (n_sites x n_other) = P(site > other) + P(tie) / 2 (0.5: no
association), U the tie-corrected Mann-Whitney statistic. Proteins differ in mean pathogenicity and in
their share of sites, and pathogenicity is autocorrelated along the chain while sites are contiguous,
so neither a pooled nor a per-protein Mann-Whitney p is valid (they reject a true null at 0.05 in
10-24 % of data sets). Instead:

- per protein: ``p_value`` from the circular-shift null: the site set shifted along the protein by
  each of its L shifts (exact; keeps the contiguity of the sites; floor 1/L), p = share of shifts with
  an AUC >= the observed; ``q_value``: Benjamini-Hochberg over the per-protein rows of that site set;
- ``pooled`` (stratified by protein): the AUC is sum_p U_p / sum_p n_sites_p n_other_p (only pairs
  within a protein are compared), its p from independent shifts per protein (``n_draws`` Monte-Carlo
  draws, (b + 1) / (B + 1)), its 95 % interval (``auc_lo``/``auc_hi``) from a bootstrap over proteins.

Assumption of the shift null: where the site set sits along the chain carries no information about
pathogenicity under the null (stationarity), neighbouring residues may be correlated. AlphaMissense is
itself built on a protein language model (AlphaFold-derived, trained with a masked-sequence language
modelling objective), so an association with PLM-based predictions is not independent evidence.
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError

AM_COLUMNS = ("sites", "protein", "n_sites", "n_other", "mean_sites", "mean_other", "auc", "auc_lo", "auc_hi", "u",
              "p_value", "q_value", "test", "note")
PROTEIN_TEST = "circular shift of the site set along the protein (exact over its L shifts)"
POOLED_TEST = ("stratified by protein: independent circular shifts of each protein's site set; AUC over "
               "within-protein pairs, 95 % interval from a bootstrap over proteins")
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


def shift_u(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mann-Whitney U of the sites and n_sites x n_other for every circular shift of ``mask`` along the
    protein (row 0 = observed); residues without a value (NaN) are left out of both groups."""
    have = ~np.isnan(values)
    ranks = np.zeros(len(values))
    if have.any():
        from scipy.stats import rankdata

        ranks[have] = rankdata(values[have])  # mid-ranks: ties count one half
    sites = np.flatnonzero(mask)
    L = len(values)
    idx = (sites[None, :] + np.arange(L)[:, None]) % L
    n1 = have[idx].sum(1).astype(np.float64)
    n2 = have.sum() - n1
    u = ranks[idx].sum(1) - n1 * (n1 + 1) / 2
    return u, n1 * n2


def shift_test(per_protein: Sequence[tuple[np.ndarray, np.ndarray]], n_draws: int, rng: np.random.Generator,
               ) -> tuple[float, float]:
    """(stratified AUC, one-sided p) over proteins given as (U per shift, n1 n2 per shift), row 0 the
    observed: independent uniform shifts per protein, p = (b + 1) / (B + 1)."""
    u_obs = sum(float(u[0]) for u, _ in per_protein)
    n_obs = sum(float(n[0]) for _, n in per_protein)
    if n_obs == 0:
        return float("nan"), float("nan")
    auc = u_obs / n_obs
    u_sum = np.zeros(n_draws)
    n_sum = np.zeros(n_draws)
    for u, n in per_protein:
        pick = rng.integers(0, len(u), n_draws)
        u_sum += u[pick]
        n_sum += n[pick]
    draws = np.where(n_sum > 0, u_sum / np.where(n_sum > 0, n_sum, 1), 0.5)
    b = int((draws >= auc - 1e-12).sum())
    return auc, (b + 1) / (n_draws + 1)


def _bh(p: Sequence[float]) -> list[float]:
    p = np.asarray(p, dtype=np.float64)
    q = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m:
        pv = p[ok]
        order = np.argsort(pv)
        ranked = np.minimum.accumulate((pv[order] * m / np.arange(1, m + 1))[::-1])[::-1].clip(max=1.0)
        out = np.empty(m)
        out[order] = ranked
        q[ok] = out
    return q.tolist()


def association_rows(am: dict[str, dict], scored: Sequence[tuple], top_k: int | None = None, n_draws: int = 9999,
                     n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """``scored``: (protein, per-residue scores, decision threshold) for each tested protein. Rows for
    ``predicted`` and ``labelled`` sites: one per protein in the file, then ``pooled`` (see the module
    docstring for the tests)."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    pooled: dict[str, list] = {"predicted": [], "labelled": []}
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
            us, ns = shift_u(vals, mask)  # row 0: the observed U (tie-corrected, = scipy's) and n_sites x n_other
            u, auc = (float(us[0]), float(us[0] / ns[0])) if ns[0] > 0 else (float("nan"), float("nan"))
            if len(s) and len(o):
                aucs = np.where(ns > 0, us / np.where(ns > 0, ns, 1), np.nan)
                p = float(np.mean(aucs >= auc - 1e-12))  # NaN shifts (empty group) never count as extreme
                pooled[kind].append((us, ns))
            else:
                p = float("nan")
            rows.append({"sites": kind, "protein": protein.id, "n_sites": len(s), "n_other": len(o),
                         "mean_sites": float(s.mean()) if len(s) else float("nan"),
                         "mean_other": float(o.mean()) if len(o) else float("nan"), "auc": auc,
                         "auc_lo": float("nan"), "auc_hi": float("nan"), "u": u, "p_value": p,
                         "q_value": float("nan"), "test": PROTEIN_TEST,
                         "note": f"{mismatched} mismatched variants" if mismatched else ""})
    if not rows:
        raise InputError("no tested protein is in the AlphaMissense file (or every one has another sequence "
                         "version); nothing to compare.", todo="Use the AlphaMissense file that covers your proteins.")
    for kind in pooled:
        mine = [r for r in rows if r["sites"] == kind]
        for r, q in zip(mine, _bh([r["p_value"] for r in mine])):
            r["q_value"] = q
    for kind, per in pooled.items():
        if not per:
            continue
        auc, p = shift_test(per, n_draws, rng)
        u_obs = np.array([u[0] for u, _ in per])
        n_obs = np.array([n[0] for _, n in per])
        pick = rng.integers(0, len(per), (n_boot, len(per)))
        boot = u_obs[pick].sum(1) / np.maximum(n_obs[pick].sum(1), 1e-300)
        lo, hi = np.quantile(boot, [0.025, 0.975]) if len(per) > 1 else (float("nan"), float("nan"))
        mine = [r for r in rows if r["sites"] == kind and r["n_sites"] and r["n_other"]]
        n_s = sum(r["n_sites"] for r in mine)
        n_o = sum(r["n_other"] for r in mine)
        mean_s = sum(r["mean_sites"] * r["n_sites"] for r in mine) / n_s if n_s else float("nan")
        mean_o = sum(r["mean_other"] * r["n_other"] for r in mine) / n_o if n_o else float("nan")
        rows.append({"sites": kind, "protein": "pooled", "n_sites": n_s, "n_other": n_o, "mean_sites": mean_s,
                     "mean_other": mean_o, "auc": auc, "auc_lo": float(lo), "auc_hi": float(hi),
                     "u": float(u_obs.sum()), "p_value": p, "q_value": float("nan"), "test": POOLED_TEST,
                     "note": f"{len(per)} proteins; " + "; ".join(notes) if notes else f"{len(per)} proteins"})
    return rows
