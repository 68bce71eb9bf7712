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
    saved = json.loads((out / "extraction.json").read_text())
    assert saved["backbone_identity"] == summary["backbone_identity"]
    assert saved["meaningless"] is True and "'tiny' backbone" in saved["note"] and "NOTHING" in saved["note"]
    printed = capsys.readouterr().out
    assert "cache: " in printed and "mean NOTHING" in printed
    # run records: the resolved settings (replayable) and the log of what was printed
    import yaml

    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["model"]["backbone"] == "tiny" and recorded["data"]["path"] == str(table)
    assert "extracted 3 proteins" in (out / "run.log").read_text()
    again = extract_cmd.main(["--config", str(out / "config.yaml"), "--trainer.enable_progress_bar", "false"])
    assert again["proteins"] == 3 and again["from_cache"] == 3


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
    # the curated GPCR set: 14 receptors, the six mislabelled ones of the old table gone
    curated = load_proteins(DataConfig(bundled="gpcr"))
    assert len(curated) == 14 and all(p.family == "GPCR" and p.sites for p in curated)
    genes = {p.gene for p in curated}
    assert genes >= {"ADORA1", "GRM5", "CHRM2", "ADORA2A"}
    assert not genes & {"CHRM5", "GABBR1", "CHRM1", "CHRM4", "CASR", "OXTR"}
    chrm2 = next(p for p in curated if p.gene == "CHRM2")
    assert chrm2.orthosteric_sites and not set(chrm2.orthosteric_sites) & set(chrm2.sites or ())
    a2a = next(p for p in curated if p.gene == "ADORA2A")
    assert set(a2a.sites) == {52, 91, 280} and a2a.orthosteric_sites  # sodium site; orthosteric pocket known
    # the ASD set: ligand modulators by default, ion/additive rows only with --data.modulators all
    assert len(load_proteins(DataConfig())) == 347
    every = load_proteins(DataConfig(modulators="all"))
    assert len(every) == 371 and {p.modulator_class for p in every} == {"ligand", "ion", "additive"}
    assert all(p.modulator_class == "ligand" for p in load_proteins(DataConfig()))
    gpcrs = load_proteins(DataConfig(family="GPCR"))
    assert len(gpcrs) == 13 and all(p.family == "GPCR" for p in gpcrs)
    assert {p.id for p in gpcrs} == {p.id for p in curated} - {a2a.id}  # same receptors, A2A aside
    assert len(load_proteins(DataConfig(family="GPCR", limit=5))) == 5
    # the seed cases: orthosteric pockets are never allosteric labels
    seed = {p.id: p for p in load_proteins(DataConfig(bundled="seed"))}
    assert seed["P29274"].sequence[167] == "F" and 168 in seed["P29274"].orthosteric_sites
    assert seed["P29274"].sites is None and seed["P07550"].sites is None and seed["P07550"].orthosteric_sites
    assert seed["P29274_Na"].sites == (52, 91, 280)
    short = load_proteins(DataConfig(bundled="gpcr"), max_length=1000)
    assert all(p.length <= 1000 for p in short) and len(short) == 13  # GRM5 (1212) is longer


def test_the_note_of_a_random_backbone_names_that_backbone():
    """Every JSON, report.md and script of a random-backbone run carries ``backbone.note``: it named 'tiny' for
    esm2_tiny too."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny, esm2_tiny = load_backbone("tiny"), load_backbone("esm2_tiny")
    assert "'tiny' backbone" in tiny.note and "NOTHING" in tiny.note
    assert "'esm2_tiny' backbone" in esm2_tiny.note and "NOTHING" in esm2_tiny.note
