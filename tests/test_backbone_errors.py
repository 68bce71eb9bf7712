"""Failures before any work starts: a protein too long for the backbone, real weights unavailable offline,
a weights file that is corrupt or from another model. Each is one clear message, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allo_lightning.attention import extract
from allo_lightning.backbone import BackboneError, load_backbone
from allo_lightning.data import Protein
from allo_lightning.extract import main as extract_main
from tests.conftest import CPU

ROOT = Path(__file__).resolve().parents[1]


def test_extract_refuses_a_too_long_protein_before_computing_anything(tmp_path, tiny):
    limit = tiny.max_length
    proteins = [Protein("ok", "MKTAYIAKQR"), Protein("huge", "A" * (limit + 1), source="in.tsv:3")]
    with pytest.raises(ValueError) as info:
        extract(proteins, tiny, cache_dir=str(tmp_path / "c"), trainer_kwargs=CPU, long="error")
    msg = str(info.value)
    assert "'huge'" in msg and f"{limit + 1} residues" in msg and f"limit of {limit}" in msg
    assert "in.tsv, line 3" in msg and "Split it into domains" in msg
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.safetensors"))  # nothing run


def test_cli_too_long_protein_exits_2_with_one_line(tmp_path, tiny, capsys):
    table = tmp_path / "in.tsv"
    table.write_text(f"id\tsequence\tsites\nok\tMKTAYIAKQR\t2\nhuge\t{'A' * (tiny.max_length + 5)}\t3\n")
    with pytest.raises(SystemExit) as info:
        extract_main(["--data.path", str(table), "--data.long", "error", "--model.cache_dir", str(tmp_path / "c"),
                      "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {table}, line 3, id 'huge': sequence has {tiny.max_length + 5} residues, "
                             f"more than the backbone's limit of {tiny.max_length}.")
    assert "Split the protein into domains" in err[0]
    assert not list((tmp_path / "c").rglob("*.safetensors")) if (tmp_path / "c").exists() else True


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No hub access, and an empty hub cache (the real weights are certainly not there). The environment
    variables are read by huggingface_hub at import, so its constants are patched too. Building the 300M
    model before the download is attempted takes seconds of random init: a tiny stand-in is built instead
    (the hub client and our error handling are the real ones)."""
    import huggingface_hub.constants as hf

    import allo_lightning.backbone as backbone_mod

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("INFRA_PROVIDER", raising=False)  # makes esm skip the hub altogether
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    real_build = backbone_mod.build_esmc
    monkeypatch.setattr(backbone_mod, "build_esmc", lambda d, h, n, *a, **k: real_build(64, 4, 2))


def test_real_weights_offline_say_how_to_pass_a_file(offline):
    for name in ("esmc_300m", "esmc_600m"):
        with pytest.raises(BackboneError) as info:
            load_backbone(name)
        msg = str(info.value)
        assert name in msg and "--model.weights FILE" in msg and "Offline?" in msg


def test_cli_real_weights_offline_exits_2_with_one_line(tmp_path, offline, capsys):
    with pytest.raises(SystemExit) as info:
        extract_main(["--model.backbone", "esmc_300m", "--data.bundled", "seed", "--model.cache_dir",
                      str(tmp_path / "c"), "--trainer.default_root_dir", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not download the esmc_300m weights"), err
    assert "--model.weights FILE" in err[0]


@pytest.mark.slow
def test_cli_real_weights_offline_in_a_subprocess(tmp_path):
    """The same through ``python -m`` with only the environment set (builds the real 300M model first)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "JSONARGPARSE_DEPRECATION_WARNINGS": "off",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("INFRA_PROVIDER", None)
    proc = subprocess.run([sys.executable, "-m", "allo_lightning.extract", "--model.backbone", "esmc_300m",
                           "--data.bundled", "seed", "--model.cache_dir", str(tmp_path / "c"),
                           "--trainer.default_root_dir", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--model.weights FILE" in errors[0]


def test_corrupt_weights_file(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"this is not a state dict")
    with pytest.raises(BackboneError) as info:
        load_backbone("tiny", weights=bad)
    assert str(bad) in str(info.value) and "cannot read weights file" in str(info.value)
    good = tmp_path / "good.pt"
    torch.save(load_backbone("tiny", seed=0).model.state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BackboneError) as info:
        load_backbone("tiny", weights=truncated)
    assert "cannot read weights file" in str(info.value)
    with pytest.raises(BackboneError) as info:
        load_backbone("tiny", weights=tmp_path / "missing.pt")
    assert "not found" in str(info.value)


def test_weights_of_another_model_do_not_fit(tmp_path):
    from allo_lightning.backbone.esmc import build_esmc

    other = tmp_path / "other.pt"
    torch.save(build_esmc(32, 2, 1).state_dict(), other)  # an ESM-C of another size
    with pytest.raises(BackboneError) as info:
        load_backbone("tiny", weights=other)
    assert "does not fit backbone 'tiny'" in str(info.value)


def test_weights_file_is_loaded_without_executing_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(BackboneError):
        load_backbone("tiny", weights=evil)
    assert not (tmp_path / "pwned").exists()


def test_loaded_weights_give_the_same_identity(tmp_path):
    model = load_backbone("tiny", seed=3)
    path = tmp_path / "tiny.pt"
    torch.save(model.model.state_dict(), path)
    assert load_backbone("tiny", weights=path).identity == model.identity
