"""AlphaMissense association on small synthetic files: planted association found, shuffled scores
show none, both file forms (per variant, per residue; gzip or plain), clear refusals."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from allo_lightning.analysis.alphamissense import (
    association_rows,
    mann_whitney,
    predicted_mask,
    read_alphamissense,
)
from allo_lightning.data import InputError, Protein

AA = "ACDEFGHIKLMNPQRSTVWY"


def write_residue_table(path, rows) -> None:
    """A per-residue file in AlphaMissense's own form (uniprot_id, position, am_pathogenicity; TSV)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("uniprot_id\tposition\tam_pathogenicity\n")
        fh.writelines(f"{u}\t{pos}\t{x!r}\n" for u, pos, x in rows)


def planted(n: int = 8, seed: int = 0):
    """Proteins whose sites (and only they) are more pathogenic; per-variant rows (3 substitutions
    per position, mean = the residue's value)."""
    rng = np.random.default_rng(seed)
    proteins, rows = [], []
    for i in range(n):
        L = int(rng.integers(60, 90))
        seq = "".join(rng.choice(list(AA), L))
        sites = sorted(rng.choice(np.arange(1, L + 1), 8, replace=False).tolist())
        proteins.append(Protein(id=f"Q{i:05d}", sequence=seq, sites=tuple(sites)))
        value = rng.uniform(0.05, 0.5, L)
        value[np.asarray(sites) - 1] = rng.uniform(0.55, 0.95, len(sites))
        for pos in range(1, L + 1):
            for alt in ("A", "W", "K"):
                rows.append((f"Q{i:05d}", f"{seq[pos - 1]}{pos}{alt}", value[pos - 1] + rng.normal(0, 0.01)))
    return proteins, rows


def write_variants(path, rows, gz: bool = False):
    text = "# Copyright 2023 DeepMind Technologies Limited\n# synthetic test file\n"
    text += "uniprot_id\tprotein_variant\tam_pathogenicity\tam_class\n"
    text += "".join(f"{u}\t{v}\t{x:.4f}\t{'likely_pathogenic' if x > 0.56 else 'likely_benign'}\n" for u, v, x in rows)
    text += "P99999\tM1A\t0.5\tambiguous\n"  # a protein not in the data
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def test_planted_association_found_and_shuffled_scores_show_none(tmp_path):
    proteins, rows = planted()
    am = read_alphamissense(write_variants(tmp_path / "am.tsv.gz", rows, gz=True), [p.id for p in proteins])
    assert set(am) == {p.id for p in proteins}  # P99999 is not read
    rng = np.random.default_rng(1)
    good = [(p, p.labels() + 0.3 * rng.random(p.length), 0.9) for p in proteins]
    out = association_rows(am, good, top_k=8)
    pooled = {r["sites"]: r for r in out if r["protein"] == "pooled"}
    # no shift draw reaches it: p is the Monte-Carlo floor 1 / (B + 1), the AUC interval far above 0.5
    assert pooled["predicted"]["p_value"] == pytest.approx(1 / 10000) and pooled["predicted"]["auc"] > 0.95
    assert 0.9 < pooled["predicted"]["auc_lo"] <= pooled["predicted"]["auc"] <= pooled["predicted"]["auc_hi"]
    assert pooled["labelled"]["auc"] == 1.0 and pooled["labelled"]["n_sites"] == 8 * len(proteins)
    per = [r for r in out if r["sites"] == "predicted" and r["protein"] != "pooled"]
    assert len(per) == len(proteins) and all(r["auc"] > 0.9 and r["n_sites"] == 8 for r in per)
    # negative control: scores unrelated to the sites
    shuffled = [(p, rng.permutation(p.length).astype(float), None) for p in proteins]
    null = {r["sites"]: r for r in association_rows(am, shuffled, top_k=8) if r["protein"] == "pooled"}
    assert null["predicted"]["p_value"] > 0.01 and abs(null["predicted"]["auc"] - 0.5) < 0.15
    assert null["labelled"]["auc"] == 1.0  # the labels themselves still are


def test_per_residue_file_and_threshold_mode(tmp_path):
    proteins, rows = planted(3, seed=2)
    by_residue = {}
    for u, v, x in rows:
        by_residue.setdefault((u, int(v[1:-1])), []).append(x)
    path = tmp_path / "residues.tsv"
    write_residue_table(path, [(u, pos, float(np.mean(x))) for (u, pos), x in by_residue.items()])
    am = read_alphamissense(path, [p.id for p in proteins])
    variant = read_alphamissense(write_variants(tmp_path / "v.tsv", rows), [p.id for p in proteins])
    p = proteins[0]
    from allo_lightning.analysis.alphamissense import residue_values

    a, _, _ = residue_values(am[p.id], p.sequence)
    b, mismatched, total = residue_values(variant[p.id], p.sequence)
    np.testing.assert_allclose(a, b, atol=1e-4)  # the variant file has 4 decimals
    assert mismatched == 0 and total == 3 * p.length
    mask = predicted_mask(np.array([0.1, 0.7, 0.5, 0.9]), 0.5, None)
    assert mask.tolist() == [False, True, True, True]
    assert predicted_mask(np.array([0.1, 0.7, 0.5, 0.9]), None, 2).tolist() == [False, True, False, True]


def test_mann_whitney_matches_exact_enumeration():
    x, y = np.array([0.9, 0.7, 0.7, 0.2]), np.array([0.1, 0.7, 0.3, 0.05, 0.4])
    u, auc, p = mann_whitney(x, y)
    pairs = [(a > b) + 0.5 * (a == b) for a in x for b in y]
    assert u == sum(pairs) and auc == pytest.approx(np.mean(pairs))
    assert p == pytest.approx(mannwhitneyu(x, y, alternative="greater").pvalue)


def test_refuses_when_no_protein_is_in_the_file(tmp_path):
    _, rows = planted(2)
    path = write_variants(tmp_path / "am.tsv", rows)
    with pytest.raises(InputError, match="none of the 1 proteins of the data"):
        read_alphamissense(path, ["P12345"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("gene\tscore\nX\t1\n")
    with pytest.raises(InputError, match="no AlphaMissense header"):
        read_alphamissense(bad, ["P12345"])
    with pytest.raises(InputError, match="not found"):
        read_alphamissense(tmp_path / "missing.tsv.gz", ["P12345"])


def test_other_sequence_version_is_left_out(tmp_path):
    proteins, rows = planted(2, seed=4)
    p = proteins[0]
    other = Protein(id=p.id, sequence=p.sequence[5:] + "AAAAA", sites=p.sites)  # shifted: letters mismatch
    am = read_alphamissense(write_variants(tmp_path / "am.tsv", rows), [p.id, proteins[1].id])
    out = association_rows(am, [(other, np.zeros(other.length), 0.5), (proteins[1], proteins[1].labels(), 0.5)])
    assert {r["protein"] for r in out} == {proteins[1].id, "pooled"}
    assert "left out" in out[-1]["note"]
