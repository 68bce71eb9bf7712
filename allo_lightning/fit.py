"""``python -m allo_lightning.fit --config configs/gpcr.yaml``: the whole path on one split.

Extraction (cached) -> split by cluster (train / val / test) -> head selection on the TRAINING proteins
only -> probe training (early stopping on validation AUPRC, decision threshold with the best
validation F1) -> test. Writes ``metrics.json``, ``test_scores.csv`` and ``pr_curve.png`` to the
output folder (``--trainer.default_root_dir``), saves the probe checkpoint (``--probe.checkpoint_dir``,
or ``--checkpoint FILE``) and prints ``checkpoint: PATH`` as its last line.
"""

from __future__ import annotations

import time
from pathlib import Path

from .backbone import TINY_MEANINGLESS
from .errors import CheckpointError, OutputExistsError
from .outputs import prepare_out_dir, write_json, write_text
from .pipeline import load_inputs, run_extraction
from .shell import command


def _flags(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing output folder")
    parser.add_argument("--checkpoint", type=str, default=None,
                        help="where to save the checkpoint (default: PROBE.CHECKPOINT_DIR/<run>.<backbone>.safetensors)")


def probe_trainer_kwargs(cfg) -> dict:
    """The probe's Trainer: its own device (``--probe.accelerator``) and the run's output folder."""
    return {"accelerator": cfg.probe.accelerator, "default_root_dir": str(cfg.out_dir)}


def heads_label(heads) -> list[str]:
    """The head analysis' labels: L3H7 = layer 3, head 7, both 0-based (as in heads.csv)."""
    return [f"L{ly}H{h}" for ly, h in heads]


def default_checkpoint(cfg) -> Path:
    return Path(cfg.probe.checkpoint_dir) / f"{cfg.out_dir.name}.{cfg.model.backbone.lower()}.safetensors"


def test_scores_csv(run) -> str:
    from .tables import csv_text

    rows = []
    ts = run.test_set
    for i, p in enumerate(ts.proteins):
        mask = ts.index == i
        for pos, (y, s) in enumerate(zip(ts.y[mask].tolist(), run.test_scores[mask].tolist()), start=1):
            rows.append((p.id, pos, p.sequence[pos - 1], int(y), float(s)))
    return csv_text(("id", "position", "residue", "label", "score"), rows)


def check_checkpoint_path(path: Path, overwrite: bool) -> Path:
    """Refuse a checkpoint path that is a folder, or an existing file without ``--overwrite``; make sure its
    folder can be written (before any work)."""
    from .pipeline import check_writable_dir

    if path.is_dir():
        raise CheckpointError(f"--checkpoint {path} is a folder. Give a file name, e.g. {path / 'probe.safetensors'}.")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists. Pass --overwrite to replace it, or choose another "
                                "file with --checkpoint FILE.")
    check_writable_dir(path.parent, "the checkpoint folder")
    return path


@command("fit", __doc__, sections=("model", "data", "trainer", "heads", "probe"), flags=_flags)
def main(cfg) -> dict:
    from .plots.probe import pr_curves
    from .probe import fit_split, save_checkpoint, train_val_test

    t0 = time.perf_counter()
    ckpt_path = Path(cfg.get("checkpoint") or default_checkpoint(cfg))
    overwrite = bool(cfg.get("overwrite"))
    if True:  # (one block: kept for a small diff)
        out = prepare_out_dir(cfg.out_dir, overwrite, "metrics.json")
        check_checkpoint_path(ckpt_path, overwrite)
        splits = []
        backbone, proteins = load_inputs(cfg, check=lambda ps: splits.append(train_val_test(
            ps, cfg.probe.split, cfg.probe.val_fraction, cfg.probe.test_fraction, cfg.seed)),
            require_sites=True)
        split = splits[0]
        extraction = run_extraction(cfg, backbone, proteins)
        stats = {p.id: s for p, s in extraction}
        result = fit_split(split, stats, cfg.probe, cfg.heads, cfg.seed, probe_trainer_kwargs(cfg))
    run, choice = result.run, result.choice
    test = run.test
    metrics = {
        **{k: test[k] for k in sorted(test)},
        "val": run.val,
        "threshold": run.threshold,
        "heads": heads_label(choice.heads),
        "heads_layer_head": [list(h) for h in choice.heads],
        "heads_indexing": "layer and head are 0-based",
        "heads_fallback": choice.fallback,
        "n_proteins": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "split": split.ids(),
        "epochs": run.epochs, "best_epoch": run.best_epoch, "pos_weight": run.pos_weight,
        "features": run.spec.names(),
        "backbone": backbone.name, "backbone_identity": backbone.identity, "theta": cfg.model.theta,
        "meaningless": backbone.meaningless,
        "note": TINY_MEANINGLESS if backbone.meaningless else "",
        "checkpoint": str(ckpt_path),
        "config": cfg.as_dict(),
    }
    if choice.analysis is not None and hasattr(choice.analysis, "provenance"):
        metrics["head_analysis"] = choice.analysis.provenance()
    write_text(out / "test_scores.csv", test_scores_csv(run))
    pr_curves({f"probe on {len(choice.heads)} heads": (run.test_set.y, run.test_scores)}, out / "pr_curve.png",
              title=f"test PR curve ({backbone.label}, {len(split.test)} proteins)")
    save_checkpoint(ckpt_path, run.module.net, run.spec, run.threshold, backbone, cfg.model.theta, vars(cfg.probe),
                    extra={"metrics": {k: test[k] for k in ("auprc", "auroc", "base_rate")}, "split": split.ids()},
                    backbone_seed=cfg.model.seed)
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / "metrics.json", metrics)
    print(f"heads selected on {len(split.train)} training proteins (layer, head 0-based): {' '.join(metrics['heads'])}")
    if choice.fallback:
        print(f"FALLBACK: {choice.fallback}")
    print(f"probe {cfg.probe.kind}: {run.epochs} epochs (best {run.best_epoch}), threshold {run.threshold:.3f}")
    print(f"test ({len(split.test)} proteins): AUPRC {test['auprc']:.3f} (base rate {test['base_rate']:.3f}), "
          f"AUROC {test['auroc']:.3f}, F1 {test['f1']:.3f}, MCC {test['mcc']:.3f}, "
          f"precision@{cfg.probe.top_k} {test['precision_at_k']:.3f}")
    print(f"metrics: {out / 'metrics.json'}")
    if backbone.meaningless:
        print(TINY_MEANINGLESS)
    print(f"checkpoint: {ckpt_path}")
    return metrics


if __name__ == "__main__":
    main()
