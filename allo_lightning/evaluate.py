"""``python -m allo_lightning.evaluate --checkpoint FILE --data.path TABLE --trainer.default_root_dir DIR``:
how a trained probe does on YOUR labelled proteins.

The backbone, its weights check and theta come from the checkpoint (as in predict: a different
``--model.backbone`` or other weights are refused). Every residue of the table is scored. Writes to
DIR: ``metrics.json`` (pooled auprc = average precision, auroc, f1 and mcc at the checkpoint's
threshold, precision_at_k, per-protein AUPRC, base_rate, 95 % bootstrap intervals over proteins),
``scores.csv`` (id, position (1-based), residue, label, score[, probability]: every residue of the
table, in order) and ``pr_curve.png`` (with the base rate).

``score`` is a ranking score (the probe was trained with a class-weighted loss), not a probability;
``probability`` is the score calibrated on the probe's validation proteins; the threshold applies to
``score``.
"""

from __future__ import annotations

import math
import sys
import time

from .backbone import TINY_MEANINGLESS, context_length
from .errors import InputError
from .outputs import prepare_out_dir, write_csv, write_json
from .pipeline import (
    bootstrap_bytes,
    check_environment,
    check_memory,
    load_checkpoint_backbone,
    load_probe_checkpoint,
    long_of,
    long_policy,
    run_extraction,
)
from .shell import command


def _flags(parser) -> None:
    parser.add_argument("--checkpoint", type=str, required=True, help="probe checkpoint written by fit")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap samples (over proteins) per interval")
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing output folder")


def _fmt(v) -> str:
    return "undefined" if v is None or math.isnan(v) else f"{v:.3f}"


# backbone, theta and seed come from the checkpoint unless given: a different value is refused, never used
@command("evaluate", __doc__, sections=("model", "data", "trainer", "probe"), flags=_flags,
         defaults={"model.backbone": None, "model.theta": None, "model.seed": None})
def main(cfg) -> dict:
    from .data import load_proteins
    from .plots.probe import pr_curves
    from .probe import SCORE_MEANING, ResidueSet, undefined_warning
    from .probe.evaluation import evaluate_scores_with_intervals

    t0 = time.perf_counter()
    if cfg.get("bootstrap") < 1:
        raise InputError(f"--bootstrap must be >= 1 (got {cfg.get('bootstrap')}).", todo="Give a positive number.")
    check_environment(cfg)
    ckpt = load_probe_checkpoint(cfg, "evaluate")
    out = prepare_out_dir(cfg.out_dir, bool(cfg.get("overwrite")), "metrics.json")
    name = cfg.model.backbone
    proteins = load_proteins(cfg.data, max_length=context_length(name) if long_of(cfg) == "error" else None)
    proteins = long_policy(cfg, proteins)
    check_memory(f"{cfg.get('bootstrap'):,} bootstrap samples of {len(proteins)} proteins", "--bootstrap",
                 bootstrap_bytes(cfg.get("bootstrap"), len(proteins)))
    for p in proteins:
        p.labels()  # every protein needs labels: a FASTA file or a table without sites is refused here
    backbone = load_checkpoint_backbone(cfg, ckpt)
    # early exit: only the probe's heads, the backbone run up to the deepest of them
    extraction = run_extraction(cfg, backbone, proteins, heads=list(ckpt.spec.heads))
    items = list(extraction)
    data = ResidueSet.build(ckpt.spec, items)
    scores = ckpt.score(data.x)
    probabilities = ckpt.probability(scores)
    metrics = evaluate_scores_with_intervals(data, scores, ckpt.threshold, cfg.probe.top_k,
                                             n_boot=cfg.get("bootstrap"), seed=cfg.seed)
    from .probe.checkpoint import seen_in_training

    trained_on, by_id_only = seen_in_training(ckpt.config, proteins)  # by sequence digest (ids: old files)
    warnings = [w for w in [undefined_warning(metrics, f"the {len(proteins)} proteins of the table"), by_id_only]
                if w]
    if trained_on:
        warnings.append(f"warning: {len(trained_on)} of these proteins trained or validated this probe "
                        f"({', '.join(trained_on[:5])}{' ...' if len(trained_on) > 5 else ''}): its metrics on them "
                        "are optimistic. Evaluate on proteins it has not seen.")
    metrics.update({
        "threshold": ckpt.threshold,
        "top_k": cfg.probe.top_k,
        "score_meaning": {"score": SCORE_MEANING, "threshold": "applies to score (predicted = score >= threshold)",
                          "probability": ckpt.calibration.meaning if ckpt.calibration else
                          "no calibration in this checkpoint: no probability column"},
        "auprc_definition": "average precision (sklearn.metrics.average_precision_score on scores.csv)",
        "seen_in_training": trained_on,
        "seen_in_training_by": "id only (old checkpoint)" if by_id_only else "sequence (SHA-256) or id",
        "windowed": list(extraction.windowed),  # proteins longer than the context: statistics from windows
        "warnings": warnings,
        "checkpoint": str(ckpt.path), "data": cfg.data.path or f"bundled:{cfg.data.bundled}",
        "backbone": backbone.name, "backbone_identity": backbone.identity, "theta": ckpt.theta,
        "heads": [list(h) for h in ckpt.spec.heads], "meaningless": backbone.meaningless,
        "heads_fallback": ckpt.config.get("heads_fallback"),  # why the top-ranked heads were used, or None
        "note": TINY_MEANINGLESS if backbone.meaningless else "",
    })
    write_csv(out / "scores.csv", *data.rows(scores, probabilities))
    what = f"{len(ckpt.spec.heads)} heads" if ckpt.spec.kind == "heads" else ckpt.spec.kind
    pr_curves({f"probe on {what}": (data.y, scores)}, out / "pr_curve.png",
              title=f"PR curve ({backbone.label}, {len(proteins)} proteins)")
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / "metrics.json", metrics)
    ci = metrics["intervals"]["auprc"]
    print(f"{len(proteins)} proteins, {metrics['n_residues']} residues, {metrics['n_sites']} sites "
          f"(base rate {metrics['base_rate']:.3f})")
    print(f"AUPRC {_fmt(metrics['auprc'])} (95 % over proteins {_fmt(ci['lo'])}-{_fmt(ci['hi'])}), "
          f"AUROC {_fmt(metrics['auroc'])}, at threshold {ckpt.threshold:.3f} on the ranking score: "
          f"F1 {_fmt(metrics['f1'])}, MCC {_fmt(metrics['mcc'])}; precision@{cfg.probe.top_k} "
          f"{_fmt(metrics['precision_at_k'])}, mean per-protein AUPRC {_fmt(metrics['protein_auprc'])}")
    for w in warnings:
        print(w, file=sys.stderr)
    print(f"metrics: {out / 'metrics.json'} (scores: {out / 'scores.csv'})")
    if backbone.meaningless:
        print(TINY_MEANINGLESS)
    return metrics


if __name__ == "__main__":
    main()
