"""The extract command and the flags every command shares."""

from __future__ import annotations

import json

import torch

from allo_lightning import extract as extract_cmd
from allo_lightning.backbone import load_backbone
from allo_lightning.backbone.esmc import build_esmc
from allo_lightning.config import DataConfig
from allo_lightning.data import load_proteins

from .conftest import SMOKE, random_proteins, write_table


def test_smoke_config_with_flag_overrides(tmp_path, capsys):
    table = write_table(tmp_path / "mine.tsv", random_proteins(3, seed=5))
    out = tmp_path / "out"
    summary = extract_cmd.main([
        "--config", SMOKE, "--data.path", str(table), "--model.backbone", "tiny",
        "--trainer.default_root_dir", str(out), "--model.cache_dir", str(tmp_path / "cache"),
        "--trainer.enable_progress_bar", "false",
    ])
    # the config's family/limit subset applies to bundled data only: the file is used whole
    assert summary["proteins"] == 3 and summary["computed"] == 3
    assert json.loads((out / "extraction.json").read_text())["backbone_identity"] == summary["backbone_identity"]
    printed = capsys.readouterr().out
    assert "cache: " in printed and "mean NOTHING" in printed


def test_weights_file_for_tiny_backbone(tmp_path):
    torch.manual_seed(123)
    model = build_esmc(64, 4, 2)
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = load_backbone("tiny", weights=path)
    same = load_backbone("tiny", weights=path)
    seeded = load_backbone("tiny", seed=0)
    assert loaded.identity == same.identity != seeded.identity
    for name, p in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], p)
    summary = extract_cmd.main([
        "--config", SMOKE, "--model.weights", str(path), "--data.limit", "2",
        "--trainer.default_root_dir", str(tmp_path / "o"), "--model.cache_dir", str(tmp_path / "c"),
        "--trainer.enable_progress_bar", "false",
    ])
    assert summary["backbone_identity"] == loaded.identity and summary["proteins"] == 2


def test_bundled_subsets():
    gpcrs = load_proteins(DataConfig(family="GPCR"))
    assert len(gpcrs) == 19 and all(p.family == "GPCR" for p in gpcrs)
    assert {p.gene for p in gpcrs} >= {"ADORA1", "GRM5", "CHRM2"}
    assert len(load_proteins(DataConfig(family="GPCR", limit=5))) == 5
    assert len(load_proteins(DataConfig())) == 377
    seed = load_proteins(DataConfig(bundled="seed"))
    a2a = next(p for p in seed if p.id == "P29274")
    assert a2a.sequence[167] == "F" and 168 in a2a.sites
    short = load_proteins(DataConfig(family="GPCR"), max_length=1000)
    assert all(p.length <= 1000 for p in short) and len(short) == 17  # CASR and GRM5 are longer
