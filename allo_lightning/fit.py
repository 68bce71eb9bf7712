"""``python -m allo_lightning.fit --config configs/gpcr.yaml``: the whole path on one split.

Extraction (cached) -> split by cluster (train / val / test) -> head selection on the TRAINING proteins
only -> probe training (early stopping on validation AUPRC, decision threshold with the best
validation F1, on the ranking score) -> test. Writes ``metrics.json``, ``test_scores.csv`` (id,
position, residue, label, score, probability) and ``pr_curve.png`` to the output folder
(``--trainer.default_root_dir``), saves the probe checkpoint (``--probe.checkpoint_dir``, or
``--checkpoint FILE``) and prints ``checkpoint: PATH`` as its last line.

``score`` ranks residues (class-weighted training: not a probability); ``probability`` is the score
calibrated on the validation proteins (``--probe.calibration``). ``--probe.test_fraction 0`` trains
the probe you ship on all proteins but the validation part (no test metrics: estimate them with
``report``, or with ``evaluate`` on your own held-out labelled proteins).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from .errors import CheckpointError, OutputExistsError
from .html import PAGE_FILES, write_report
from .outputs import claim_out_files, prepare_out_dir, write_json
from .records import RUN_FILES, record_run
from .shell import command
from .tables import write_csv

log = logging.getLogger("allo_lightning.fit")  # not __name__: "__main__" under python -m allo_lightning.fit


def _flags(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing output folder")
    parser.add_argument("--checkpoint", type=str, default=None,
                        help="where to save the checkpoint (default: "
                             "PROBE.CHECKPOINT_DIR/<run>.<backbone>.safetensors)")


def probe_trainer_kwargs(cfg) -> dict:
    """The probe's Trainer: its own device (``--probe.accelerator``) and the run's output folder."""
    return {"accelerator": cfg.probe.accelerator, "default_root_dir": str(cfg.out_dir),
            "log_dir": str(cfg.out_dir / "training_log")}  # per-epoch loss and validation AUPRC (CSVLogger)


# what fit writes into the output folder (test_scores.csv and pr_curve.png are removed when there is no test set)
FILES = ("metrics.json", "test_scores.csv", "pr_curve.png", "training_log/metrics.csv", "training_log/hparams.yaml")


def heads_label(heads) -> list[str]:
    """The head analysis' labels: L3H7 = layer 3, head 7, both 0-based (as in heads.csv)."""
    return [f"L{ly}H{h}" for ly, h in heads]


def default_checkpoint(cfg) -> Path:
    return Path(cfg.probe.checkpoint_dir) / f"{cfg.out_dir.name}.{cfg.model.backbone.lower()}.safetensors"


NO_TEST = ("no test set (--probe.test_fraction 0): this probe was trained on every protein but the validation "
           "part, so no protein is left to estimate its performance. Estimate it with python -m allo_lightning.report "
           "(cross-validation on the same data), or run python -m allo_lightning.evaluate --checkpoint FILE on "
           "labelled proteins it has not seen.")


def _fmt(v) -> str:
    return "undefined" if v is None or math.isnan(v) else f"{v:.3f}"


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
    # torch, Lightning and the backbone only once the command line is parsed (--help answers without them)
    from .backbone import meaningless_message
    from .pipeline import load_inputs, run_extraction
    from .plots.probe import pr_curves
    from .probe import SCORE_MEANING, save_checkpoint, train_val_test, undefined_warning
    from .probe.checkpoint import seen_sequences
    from .workflow import fit_split

    t0 = time.perf_counter()
    ckpt_path = Path(cfg.get("checkpoint") or default_checkpoint(cfg))
    overwrite = bool(cfg.get("overwrite"))
    out = prepare_out_dir(cfg.out_dir, overwrite, "metrics.json")
    claim_out_files(out, "metrics.json", overwrite, FILES + PAGE_FILES + RUN_FILES)  # no link, no user's file
    record_run(cfg, out)  # config.yaml now, run.log at the end
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
    warnings = [w for w in (undefined_warning(run.val, f"the {len(split.val)} validation proteins"),
                            undefined_warning(test, f"the {len(split.test)} test proteins")) if w]
    meaning = {"score": SCORE_MEANING, "threshold": "applies to score (predicted = score >= threshold)",
               "probability": (run.calibration.meaning if run.calibration
                               else "no calibration (--probe.calibration none)")}
    metrics = {
        **{k: test[k] for k in sorted(test)},
        "test": "held-out test proteins (the metrics above)" if split.test else None,
        "val": run.val,
        "threshold": run.threshold,
        "score_meaning": meaning,
        "calibration": run.calibration.to_config() if run.calibration else None,
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
        "note": backbone.note,
        # fit_split has logged a collapsed calibration already: listed here, not logged again below
        "warnings": warnings + ([run.calibration.warning] if run.calibration and run.calibration.warning else []),
        "checkpoint": str(ckpt_path),
        "config": cfg.as_dict(),
    }
    if not split.test:
        metrics["test_note"] = NO_TEST
    if choice.analysis is not None and hasattr(choice.analysis, "provenance"):
        # the analysis ran on (protein, statistics) pairs, which carry no backbone or theta: name the run's own
        metrics["head_analysis"] = {**choice.analysis.provenance(), "backbone_identity": backbone.identity,
                                    "theta": cfg.model.theta}
    if split.test:
        write_csv(out / "test_scores.csv", *run.test_set.rows(run.test_scores, run.test_probabilities))
        pr_curves({f"probe on {len(choice.heads)} heads": (run.test_set.y, run.test_scores)}, out / "pr_curve.png",
                  title=f"test PR curve ({backbone.label}, {len(split.test)} proteins)")
    else:  # --overwrite: no stale test results of an earlier run beside this one's metrics
        for name in ("test_scores.csv", "pr_curve.png"):
            (out / name).unlink(missing_ok=True)
    summary = {k: test[k] for k in ("auprc", "auroc", "base_rate")} if split.test else None
    save_checkpoint(ckpt_path, run.module.net, run.spec, run.threshold, backbone, cfg.model.theta, vars(cfg.probe),
                    extra={"metrics": summary, "split": split.ids(),
                           "seen": seen_sequences(split.train + split.val), "heads_fallback": choice.fallback},
                    backbone_seed=cfg.model.seed, calibration=run.calibration)
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / "metrics.json", metrics)
    log.info(f"heads selected on {len(split.train)} training proteins (layer, head 0-based): "
             f"{' '.join(metrics['heads'])}")
    if choice.fallback:
        log.warning(f"FALLBACK: {choice.fallback}")
    log.info(f"probe {cfg.probe.kind}: {run.epochs} epochs (weights kept: epoch {run.best_epoch}, counted from 0), "
             f"threshold {run.threshold:.3f} on the ranking score (not a probability)")
    if split.test:
        log.info(f"test ({len(split.test)} proteins): AUPRC {_fmt(test['auprc'])} (base rate {test['base_rate']:.3f}), "
                 f"AUROC {_fmt(test['auroc'])}, F1 {_fmt(test['f1'])}, MCC {_fmt(test['mcc'])} at the threshold, "
                 f"precision@{cfg.probe.top_k} {_fmt(test['precision_at_k'])} (mean per protein)")
    else:
        log.info(f"note: {NO_TEST}")
    for w in warnings:
        log.warning(w.removeprefix("warning: "))
    log.info(f"metrics: {out / 'metrics.json'}")
    log.info(f"report: {write_report(out, 'fit')} (open it in a browser)")
    if backbone.meaningless:
        log.warning(meaningless_message(backbone.name))
    log.info(f"checkpoint: {ckpt_path}")
    return metrics


if __name__ == "__main__":
    main()
