"""report command on the tiny backbone: one row per head subset under the same folds."""

from __future__ import annotations

import csv

from allo_lightning import report

from .conftest import common, random_proteins, write_table


def test_report_rows_and_files(tmp_path, capsys):
    table = write_table(tmp_path / "train.tsv", random_proteins(10, lo=30, hi=50, seed=4))
    out = tmp_path / "rep"
    summary = report.main(common(tmp_path, table) + [
        "--trainer.default_root_dir", str(out), "--report.folds", "2", "--report.max_epochs", "2",
        "--report.train_sizes", "[1, 2]"])
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert list(rows[0])[:6] == ["subset", "n_heads", "auprc", "auprc_sd", "auroc", "auroc_sd"]
    names = [r["subset"] for r in rows]
    # tiny: 8 heads, so k in 1, 3, 5, 8 (10, 20, 50 capped); random k < 8 only (random 8 = all)
    assert names == ["selected", "top1", "top3", "top5", "top8", "random1", "random3", "random5", "all",
                     "best_layer", "embedding", "identity"]
    by = {r["subset"]: r for r in rows}
    assert by["random3"]["note"] == "5 random draws" and by["top3"]["n_heads"] == "3"
    assert all(0 <= float(r["auprc"]) <= 1 and "f1" in r and "mcc" in r for r in rows)
    eff = list(csv.DictReader((out / "data_efficiency.csv").open()))
    assert {r["label"] for r in eff} >= {"1", "2", "all"}
    for name in ("report.md", "pr_curves.png", "data_efficiency.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "| subset | n_heads | auprc |" in md and "NOTHING" in md
    assert summary["meaningless"]
