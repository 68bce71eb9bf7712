"""report command on the tiny backbone: one row per head subset under the same folds, with bootstrap
intervals, paired comparisons, data efficiency with draws, and the AlphaMissense association."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from allo_lightning import report

from .conftest import common, random_proteins, write_table
from .test_tables import assert_table_policy


def am_file(path, proteins):
    rng = np.random.default_rng(0)
    with open(path, "w") as fh:
        fh.write("uniprot_id\tprotein_variant\tam_pathogenicity\tam_class\n")
        for p in proteins:
            fh.writelines(f"{p.id}\t{c}{i}A\t{rng.random():.3f}\tambiguous\n"
                          for i, c in enumerate(p.sequence, start=1))
    return path


@pytest.mark.slow
def test_report_rows_and_files(tmp_path, capsys):
    proteins = random_proteins(10, lo=30, hi=50, seed=4)
    table = write_table(tmp_path / "train.tsv", proteins)
    out = tmp_path / "rep"
    summary = report.main(common(tmp_path, table) + [
        "--trainer.default_root_dir", str(out), "--report.folds", "2", "--report.max_epochs", "2",
        "--report.train_sizes", "[1]", "--report.efficiency_draws", "2", "--report.ks", "[1, 3, 20]",
        "--report.n_boot", "200",
        "--report.alphamissense", str(am_file(tmp_path / "am.tsv", proteins[:6])), "--report.am_top_k", "3"])
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert list(rows[0])[:6] == ["subset", "n_heads", "auprc", "auprc_lo", "auprc_hi", "auprc_sd"]
    names = [r["subset"] for r in rows]
    # tiny: 8 heads, so k in 1, 3, 8 (20 capped); random k < 8 only (random 8 = all)
    # no head passes the default selection on the random tiny backbone: both folds fall back, and say so
    assert names == ["selected(top8 fallback)", "top1", "top3", "top8", "random1", "random3", "all", "best_layer",
                     "embedding", "best_layer_embedding", "selected+embedding", "identity"]
    assert rows[0]["fallback_folds"] == "2/2" and "FALLBACK" in rows[0]["note"]
    assert summary["selected_row"] == names[0] and all(summary["fallback_per_fold"])
    by = {r["subset"]: r for r in rows}
    assert by["random3"]["note"].startswith("5 random draws") and by["top3"]["n_heads"] == "3"
    assert all(0 <= float(r["auprc"]) <= 1 and "f1" in r and "mcc" in r for r in rows)
    for r in rows:
        assert float(r["auprc_lo"]) <= float(r["auprc_hi"]) and float(r["auroc_lo"]) <= float(r["auroc_hi"])
        assert r["test_proteins"] == "10"
    comparison = list(csv.DictReader((out / "comparison.csv").open()))
    assert [c["subset"] for c in comparison] == names[1:]
    assert all(float(c["delta_lo"]) <= float(c["delta_auprc"]) <= float(c["delta_hi"]) for c in comparison)
    assert all(float(c["p_value"]) <= float(c["p_holm"]) <= 1 for c in comparison if c["p_holm"])
    # 10 proteins in 5 clusters of 2 (random_proteins): the unit of the swaps is the cluster, 2^5 swaps in all,
    # p_floor 2/32 > 0.05: no verdict for a fixed row either
    fixed = [c for c in comparison
             if not c["subset"].startswith("random") and c["selected_better"] != "identical scores"]
    assert fixed and all(c["rotations"] == "32 exact" for c in fixed)
    assert {c["selected_better"] for c in comparison} <= {"identical scores", "no verdict (too few test proteins)",
                                                           "no verdict (too few random draws)"}
    # random rows (5 draws) are tested by rotating whole head sets: 6 sets, p >= 2/6, never a verdict
    assert {c["selected_better"] for c in comparison if c["subset"].startswith("random")} <= {
        "no verdict (too few random draws)", "identical scores"}
    eff = list(csv.DictReader((out / "data_efficiency.csv").open()))
    assert {r["features"] for r in eff} == {"selected heads", "random heads", "embedding", "identity"}
    assert {r["label"] for r in eff} == {"1", "all"}
    assert all(r["draws"] == "2" and r["n_val"] == "1" for r in eff if r["label"] == "1")
    am = list(csv.DictReader((out / "alphamissense.csv").open()))
    pooled = {r["sites"]: r for r in am if r["protein"] == "pooled"}
    assert set(pooled) == {"predicted", "labelled"} and pooled["predicted"]["n_sites"] == str(6 * 3)
    assert "alphamissense.csv" in assert_table_policy(out)  # one formatting policy; p-values not rounded to 0
    for name in ("report.md", "pr_curves.png", "data_efficiency.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "| subset | n_heads | auprc |" in md and "NOTHING" in md and "test proteins per fold" in md
    assert "paired bootstrap" in md and "permutation test" in md and "AlphaMissense" in md
    assert "**FALLBACK in 2 of 2 folds**" in md and "selected(top8 fallback)" in md
    assert summary["meaningless"] and sum(summary["test_proteins_per_fold"]) == 10
    # a warning (stderr; shown under -q too)
    assert "WARNING: report.efficiency_draws=2; at least 5 are recommended" in capsys.readouterr().err


def test_alphamissense_without_the_data_proteins_is_refused_before_any_work(tmp_path, capsys):
    proteins = random_proteins(6, seed=1)
    table = write_table(tmp_path / "t.tsv", proteins)
    other = [p.__class__(id=f"X{p.id}", sequence=p.sequence, sites=p.sites) for p in proteins]
    with pytest.raises(SystemExit) as info:
        report.main(common(tmp_path, table) + ["--trainer.default_root_dir", str(tmp_path / "o"),
                                               "--report.alphamissense", str(am_file(tmp_path / "am.tsv", other))])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "none of the 6 proteins of the data" in err and not (tmp_path / "o" / "report.csv").exists()


def test_report_small_run_succeeds(tmp_path, capsys):
    """A small successful report run in the inner loop (the full check above is slow): 10 proteins,
    2 folds, one k, one epoch, no embedding rows."""
    proteins = random_proteins(10, lo=20, hi=30, seed=4)
    table = write_table(tmp_path / "train.tsv", proteins)
    out = tmp_path / "rep"
    summary = report.main(common(tmp_path, table) + [
        "--trainer.default_root_dir", str(out), "--report.folds", "2", "--report.max_epochs", "1",
        "--report.train_sizes", "[1]", "--report.efficiency_draws", "1", "--report.ks", "[1]",
        "--report.random_seeds", "1", "--report.n_boot", "100", "--report.embeddings", "false",
        "--heads.n_permutations", "50"])
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert rows[0]["subset"].startswith("selected") and all(0 <= float(r["auprc"]) <= 1 for r in rows)
    assert all(r["test_proteins"] == "10" for r in rows)
    assert (out / "report.md").stat().st_size > 0 and sum(summary["test_proteins_per_fold"]) == 10
    assert {"report.csv", "comparison.csv", "data_efficiency.csv"} <= set(assert_table_policy(out))
    # each fold's line says what its numbers are: the probes trained (identical feature sets once) for the
    # rows and draws, and the time since the start (it said "24 probes, 50 s": 50 s was not the fold's time)
    printed = capsys.readouterr().out.splitlines()
    folds = [re.fullmatch(r"fold (\d)/2 \(\w+\): \d+ train / \d+ val / \d+ test proteins, (\d+) probes trained for "
                          r"(\d+) rows and draws, (\d+) s since the start", line)
             for line in printed if line.startswith("fold ")]
    assert len(folds) == 2 and all(folds), folds
    # the data-efficiency stage (more probes than the rows: it ran for minutes in silence) says where it is
    efficiency = [re.fullmatch(r"data efficiency fold (\d)/2 \(\w+\): (\d+) probes trained for (\d+) draws of "
                               r"training proteins, (\d+) s since the start", line)
                  for line in printed if line.startswith("data efficiency fold ")]
    assert len(efficiency) == 2 and all(efficiency), printed
    assert [int(m[1]) for m in efficiency] == [1, 2] and int(efficiency[0][4]) >= int(folds[1][4])
    assert all(int(m[3]) >= 2 for m in efficiency)  # size 1 and the whole training set
    assert all(0 < int(m[2]) <= int(m[3]) for m in folds) and int(folds[0][4]) <= int(folds[1][4])
