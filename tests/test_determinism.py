"""Same config and seed -> same heads, same metrics, same predictions (issue 6). Each run has its own
cache, so extraction is repeated too."""

from __future__ import annotations

import json

import pytest

from allo_lightning import fit, predict

from .conftest import common, random_proteins, write_table


def _run(tmp_path, name, table, fasta, seed):
    base = tmp_path / name
    args = common(base, table) + ["--seed", str(seed), "--trainer.default_root_dir", str(base / "run"),
                                  "--probe.checkpoint_dir", str(base / "ckpts"), "--probe.kind", "mlp"]
    metrics = fit.main(args)
    ckpt = base / "ckpts" / "run.tiny.safetensors"
    predict.main(["--checkpoint", str(ckpt), "--fasta", str(fasta), "--out", str(base / "pred"),
                  "--model.cache_dir", str(base / "cache"), "--trainer.accelerator", "cpu",
                  "--trainer.enable_progress_bar", "false"])
    saved = json.loads((base / "run" / "metrics.json").read_text())
    return saved, (base / "pred" / "predictions.csv").read_text(), metrics


@pytest.mark.slow
def test_same_seed_same_heads_metrics_predictions(tmp_path):
    proteins = random_proteins(12, lo=30, hi=60, seed=4)
    table = write_table(tmp_path / "train.tsv", proteins)
    fasta = tmp_path / "new.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins[:3]))
    a, pred_a, _ = _run(tmp_path, "a", table, fasta, seed=7)
    b, pred_b, _ = _run(tmp_path, "b", table, fasta, seed=7)
    assert a["heads"] == b["heads"]
    for key in ("auprc", "auroc", "f1", "mcc", "threshold"):
        assert a[key] == b[key], key
    assert a["split"] == b["split"]
    assert pred_a == pred_b
    # the checkpoints are byte-identical, so a sha256 identifies a probe (safetensors alone wrote its
    # metadata in a per-process hash order: equal contents, different bytes)
    import hashlib

    digests = {hashlib.sha256((tmp_path / r / "ckpts" / "run.tiny.safetensors").read_bytes()).hexdigest()
               for r in ("a", "b")}
    assert len(digests) == 1
    c, pred_c, _ = _run(tmp_path, "c", table, fasta, seed=8)  # the seed matters (split, init)
    assert (c["split"], pred_c) != (a["split"], pred_a)
