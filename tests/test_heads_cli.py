"""The heads command: smoke config, offline, into tmp_path; documented files; no silent overwrite."""

from __future__ import annotations

import csv
import json

import pytest

from allo_lightning import heads as heads_cmd
from allo_lightning.config import DataConfig
from allo_lightning.data import load_proteins

from .conftest import SMOKE
from .test_tables import assert_table_policy


def _args(tmp_path, *extra):
    return ["--config", SMOKE, "--data.limit", "4", "--trainer.default_root_dir", str(tmp_path / "out"),
            "--model.cache_dir", str(tmp_path / "cache"), "--trainer.enable_progress_bar", "false",
            "--heads.n_permutations", "300", "--heads.plot_proteins", "2", *extra]


@pytest.mark.slow
def test_heads_command_writes_the_documented_files(tmp_path, capsys):
    result = heads_cmd.main(_args(tmp_path, "--heads.strategy", "top_k", "--heads.top_k", "2"))
    out = tmp_path / "out"
    printed = capsys.readouterr().out
    assert "mean NOTHING" in printed and "rank layer head" in printed

    with open(out / "heads.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8  # tiny: 2 layers x 4 heads
    assert {"layer", "head", "rank", "selected", "p_alpha", "p_alpha_snr", "p_alpha_pvalue", "p_alpha_qvalue",
            "p_alpha_impact", "mass", "mass_impact", "p_alpha_protein_mean", "p_alpha_n_significant"} <= set(rows[0])
    assert [int(r["rank"]) for r in rows] == list(range(1, 9))
    assert [r["selected"] for r in rows] == ["true"] * 2 + ["false"] * 6
    assert {(int(r["layer"]), int(r["head"])) for r in rows} == {(ly, h) for ly in range(2) for h in range(4)}

    meta = json.loads((out / "heads.json").read_text())
    analysis = result["analysis"]
    assert meta["selected"] == [list(h) for h in analysis.selected] and len(meta["selected"]) == 2
    assert meta["backbone_identity"].startswith("tiny-") and meta["theta"] == 0.3
    assert meta["strategy"] == "top_k" and meta["fallback"] is None and meta["meaningless"] is True
    assert "'tiny' backbone" in meta["note"] and "NOTHING" in meta["note"]  # as every JSON of a tiny run says
    proteins = load_proteins(DataConfig(bundled="asd", family="GPCR", limit=4))
    assert meta["proteins"] == [p.id for p in proteins]

    pngs = [out / "heads_heatmap.png"] + sorted((out / "maps").glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # the id -> file mapping is in the run's JSON, and the files are recorded for the next --overwrite run
    map_files = meta["files"]["map_files"]
    assert list(map_files) == [p.id for p in proteins[:2]] and sorted(map_files.values()) == sorted(map(str, pngs[1:]))
    recorded = json.loads((out / ".allo_lightning.heads.csv.files.json").read_text())["files"]
    # the maps, and the fixed files every run writes (recorded up front: an unfinished run's are known too)
    assert sorted(recorded) == sorted([f"maps/{p.name}" for p in pngs[1:]] + ["report.html", "report_files/report.js",
                                      "config.yaml", "run.log", "heads.csv", "heads.json", "heads_heatmap.png",
                                      "attention_to_sites.csv"])

    with open(out / "attention_to_sites.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["protein", "layer", "head", "query_position", "query_residue", "site_position",
                                     "site_residue", "attention"]
        table = list(reader)
    by_id = {p.id: p for p in proteins}
    expected = sum(p.length * len(p.sites) for p in proteins) * 2
    assert len(table) == expected
    for r in table[:: max(1, len(table) // 500)]:
        p = by_id[r["protein"]]
        q, s = int(r["query_position"]), int(r["site_position"])
        assert p.sequence[q - 1] == r["query_residue"] and p.sequence[s - 1] == r["site_residue"]
        assert s in p.sites and 0.0 <= float(r["attention"]) <= 1.0


@pytest.mark.slow
def test_heads_command_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "heads.csv").write_text("old\n")
    with pytest.raises(SystemExit) as e:
        heads_cmd.main(_args(tmp_path))
    assert e.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "heads.csv").read_text() == "old\n"
    result = heads_cmd.main(_args(tmp_path, "--overwrite", "--heads.strategy", "significance", "--heads.q_max", "1e-9"))
    meta = json.loads((tmp_path / "out" / "heads.json").read_text())
    assert meta["fallback"] and "fell back" in meta["fallback"]  # nothing passes q < 1e-9: top-k, said so
    assert len(meta["selected"]) == 3 == len(result["analysis"].selected)  # smoke config: top_k 3
    assert "WARNING: FALLBACK" in capsys.readouterr().err  # a warning: stderr, shown under -q too


def test_heads_small_run_succeeds(tmp_path, capsys):
    """A small successful heads run in the inner loop (the full check above is slow): 6 random proteins
    on the tiny backbone, few permutations, no maps."""
    from .conftest import random_proteins, write_table

    table = write_table(tmp_path / "t.tsv", random_proteins(6, lo=20, hi=30, seed=1))
    args = ["--model.backbone", "tiny", "--model.cache_dir", str(tmp_path / "cache"), "--data.path", str(table),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--heads.n_permutations", "50",
            "--heads.plot_proteins", "0", "--heads.strategy", "top_k", "--heads.top_k", "3"]
    result = heads_cmd.main(args + ["--trainer.default_root_dir", str(tmp_path / "out"), "--heads.min_confident", "1"])
    rows = list(csv.DictReader((tmp_path / "out" / "heads.csv").open(newline="")))
    assert len(rows) == 8 and sum(r["selected"] == "true" for r in rows) == 3
    meta = json.loads((tmp_path / "out" / "heads.json").read_text())
    assert len(meta["selected"]) == 3 and meta["selected"] == [list(h) for h in result["analysis"].selected]
    assert meta["meaningless"] is True and "'tiny' backbone" in meta["note"] and "NOTHING" in meta["note"]
    assert "mean NOTHING" in capsys.readouterr().out
    assert "heads.csv" in assert_table_policy(tmp_path / "out")  # one formatting policy (tables.py)
    # heads with too few confident pairs are untestable: their p- and q-values are undefined, an empty cell
    # (was "nan" in heads.csv and "" in report.csv); the same cached statistics, so this run is quick
    heads_cmd.main(args + ["--trainer.default_root_dir", str(tmp_path / "few"), "--heads.min_confident", "160"])
    assert "heads.csv" in assert_table_policy(tmp_path / "few")
    few = list(csv.DictReader((tmp_path / "few" / "heads.csv").open(newline="")))
    untestable = [r for r in few if r["testable"] == "false"]
    assert untestable and all(r["p_alpha_pvalue"] == r["p_alpha_qvalue"] == "" for r in untestable)
