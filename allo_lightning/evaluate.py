"""``python -m allo_lightning.evaluate --checkpoint FILE --data.path TABLE --trainer.default_root_dir DIR``:
how a trained probe does on YOUR labelled proteins.

The backbone, its weights check and theta come from the checkpoint (as in predict: a different
``--model.backbone`` or other weights are refused). Every residue of the table is scored. Writes to
DIR: ``metrics.json`` (pooled auprc = average precision, auroc, f1 and mcc at the checkpoint's
threshold, precision_at_k, per-protein AUPRC, base_rate, 95 % bootstrap intervals over proteins),
``scores.csv`` (id, position (1-based), residue, label, score[, probability]: every residue of the
table, in order), ``pr_curve.png`` (with the base rate), ``per_protein.csv`` (one row per protein: id,
length, n_sites, base_rate, auprc, auprc_lift (auprc / base_rate), auroc, precision_at_k,
best_site_rank (rank of the best-ranked labelled residue, 1 = the protein's top score), windowed) and
``plots/<id>.png`` (score along the sequence with the threshold and the labelled sites; ``--plots false``
skips them), ``per_protein.png`` (each protein's AUPRC against its base rate, sorted by lift). One line
per protein is printed too. ``sites.csv``: predicted sites per protein, as in
predict. With ``--structure`` (as in predict) the sites are spatial patches on each protein's structure
and judged by DCA against the labelled residues: ``site_top1``/``site_top3`` in per_protein.csv and
``site_success`` (fraction of those proteins) in metrics.json.

``score`` is a ranking score (the probe was trained with a class-weighted loss), not a probability;
``probability`` is the score calibrated on the probe's validation proteins; the threshold applies to
``score``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Optional

from .errors import InputError
from .html import PAGE_FILES, write_report
from .outputs import claim_out_files, prepare_out_dir, write_json
from .records import RUN_FILES, record_run
from .shell import command
from .tables import write_csv

log = logging.getLogger("allo_lightning.evaluate")  # not __name__: "__main__" under python -m allo_lightning.evaluate


def _flags(parser) -> None:
    parser.add_argument("--checkpoint", type=str, required=True, metavar="FILE",
                        help="probe checkpoint written by fit")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap samples (over proteins) per interval")
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing output folder")
    parser.add_argument("--plots", type=bool, default=True, help="write plots/<id>.png per protein")
    parser.add_argument("--structure", type=Optional[str], default=None,
                        help="structures for site-level success: a PDB/mmCIF file, a folder of <id>.pdb/<id>.cif, "
                             "or a table id,structure,chain (as in predict)")
    parser.add_argument("--chain", type=Optional[str], default=None, help="chain (default: the best-matching one)")
    parser.add_argument("--min_identity", type=float, default=0.9, help="as in predict")
    parser.add_argument("--min_coverage", type=float, default=0.1, help="as in predict")


def _fmt(v) -> str:
    return "undefined" if v is None or math.isnan(v) else f"{v:.3f}"


# what evaluate writes into the output folder (and plots/<id>.png per protein)
FILES = ("metrics.json", "scores.csv", "pr_curve.png", "per_protein.csv", "per_protein.png", "sites.csv")

PER_PROTEIN_COLUMNS = ["id", "length", "n_sites", "base_rate", "auprc", "auprc_lift", "auroc", "precision_at_k",
                       "best_site_rank", "site_top1", "site_top3", "windowed"]


def _per_protein_outputs(out, data, scores, metrics: dict, threshold: float, backbone_label: str, extraction,
                         plots: bool, top_k: int, mappings: dict) -> list[str]:
    """per_protein.csv, sites.csv, plots/<id>.png and one terminal line per protein (returned); with
    ``mappings`` (structures) site-level success by DCA goes into metrics["site_success"]."""
    import numpy as np

    from .sites import SITE_COLUMNS, predicted_sites, site_rows, success
    from .structures import read_atoms
    from .tables import file_names

    names = file_names(p.id for p in data.proteins)
    s_all, y_all, idx = scores.double().numpy(), data.y.numpy(), data.index.numpy()
    rows, lines, all_sites, judged, atoms_cache = [], [], [], [], {}
    for i, (p, m) in enumerate(zip(data.proteins, metrics["per_protein"])):
        s, y = s_all[idx == i], y_all[idx == i]
        order = np.argsort(-s, kind="stable")
        ranks = np.empty(len(s), dtype=int)
        ranks[order] = np.arange(1, len(s) + 1)
        best_rank = int(ranks[y == 1].min()) if y.any() else None
        base = float(y.mean()) if len(y) else float("nan")
        lift = m["auprc"] / base if m["auprc"] is not None and base > 0 else None
        windowed = p.id in extraction.windowed
        mapping = mappings.get(p.id)
        if mapping is not None and mapping.path not in atoms_cache:
            atoms_cache[mapping.path] = read_atoms(mapping.path)
        sites, criterion = predicted_sites(s, p.sequence, mapping.residues if mapping else None,
                                           atoms_cache.get(mapping.path) if mapping else None,
                                           known=[int(k) + 1 for k in np.flatnonzero(y)])
        all_sites += site_rows(p.id, sites)
        hit = success(sites) if mapping is not None else None
        if hit is not None:
            judged.append(hit)
        rows.append([p.id, len(y), m["n_sites"], base, m["auprc"], lift, m["auroc"], m["precision_at_k"],
                     best_rank, None if hit is None else hit["top1"], None if hit is None else hit["top3"],
                     windowed])  # 0/1 flags: the writer writes them 0/1 (tables.COUNT_FLAGS)
        lines.append(f"  {p.id} ({len(y)} residues, {m['n_sites']} sites, base rate {base:.3f}): AUPRC "
                     f"{_fmt(m['auprc'])}" + (f" ({lift:.1f}x base)" if lift is not None else "")
                     + f", AUROC {_fmt(m['auroc'])}, precision@{top_k} {_fmt(m['precision_at_k'])}"
                     + (f", best site at rank {best_rank}" if best_rank else "")
                     + (f"; predicted site {'hit' if hit['top1'] else 'miss'} at top-1, "
                        f"{'hit' if hit['top3'] else 'miss'} at top-3" if hit else "")
                     + (", windowed" if windowed else ""))
        if plots:
            from .plots.predict import score_profile

            sites = [int(k) + 1 for k in np.flatnonzero(y)]
            score_profile(p.id, s.tolist(), out / "plots" / f"{names[p.id]}.png", threshold=threshold,
                          backbone_label=backbone_label, sequence=p.sequence, sites=sites,
                          windows=extraction.window_regions(p), top=10)
    write_csv(out / "per_protein.csv", PER_PROTEIN_COLUMNS, rows)
    from .plots.probe import per_protein_auprc

    per_protein_auprc([dict(zip(PER_PROTEIN_COLUMNS, r)) for r in rows], out / "per_protein.png",
                      title=f"per-protein AUPRC ({backbone_label})")
    write_csv(out / "sites.csv", SITE_COLUMNS, all_sites)
    metrics["site_success"] = None if not judged else {
        "criterion": "DCA: a predicted site's centre within 4 A of an atom of a labelled residue (see sites.py)",
        "n_proteins": len(judged), "top1": sum(h["top1"] for h in judged) / len(judged),
        "top3": sum(h["top3"] for h in judged) / len(judged)}
    if judged:
        ss = metrics["site_success"]
        lines.append(f"site success over {ss['n_proteins']} proteins with a structure (DCA <= 4 A): top-1 "
                     f"{ss['top1']:.3f}, top-3 {ss['top3']:.3f}")
    return lines


def _check(cfg) -> None:
    """The command's own flags, before torch is imported and anything is loaded."""
    from .structures import StructureOptions, check_structure_spec

    if cfg.get("bootstrap") < 1:
        raise InputError(f"--bootstrap must be >= 1 (got {cfg.get('bootstrap')}).", todo="Give a positive number.")
    StructureOptions(cfg.get("min_identity"), cfg.get("min_coverage"))
    check_structure_spec(cfg.get("structure"), cfg.get("chain"))


# backbone, theta and seed come from the checkpoint unless given: a different value is refused, never used
@command("evaluate", __doc__, sections=("model", "data", "trainer", "probe"), flags=_flags, check=_check,
         defaults={"model.backbone": None, "model.theta": None, "model.seed": None})
def main(cfg) -> dict:
    t0 = time.perf_counter()
    # torch, Lightning and the backbone only once the command line is parsed and checked (--help and flag
    # errors answer without them)
    from .backbone import context_length, meaningless_message
    from .data import load_proteins
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
    from .plots.probe import pr_curves
    from .probe import SCORE_MEANING, ResidueSet, undefined_warning
    from .probe.evaluation import evaluate_scores_with_intervals
    from .structures import StructureOptions, structures_for

    options = StructureOptions(cfg.get("min_identity"), cfg.get("min_coverage"))
    check_environment(cfg)
    ckpt = load_probe_checkpoint(cfg, "evaluate")
    overwrite = bool(cfg.get("overwrite"))
    out = prepare_out_dir(cfg.out_dir, overwrite, "metrics.json")
    name = cfg.model.backbone
    proteins = load_proteins(cfg.data, max_length=context_length(name) if long_of(cfg) == "error" else None)
    proteins = long_policy(cfg, proteins)
    from .tables import file_names

    # before work: nothing written through a link, no user's file replaced (plots/<id>.png: every protein's)
    plots = [f"plots/{n}.png" for n in file_names(p.id for p in proteins).values()] if cfg.get("plots") else []
    claim_out_files(out, "metrics.json", overwrite, FILES + PAGE_FILES + RUN_FILES + tuple(plots))
    record_run(cfg, out)  # config.yaml now, run.log at the end
    check_memory(f"{cfg.get('bootstrap'):,} bootstrap samples of {len(proteins)} proteins", "--bootstrap",
                 bootstrap_bytes(cfg.get("bootstrap"), len(proteins)))
    for p in proteins:
        p.labels()  # every protein needs labels: a FASTA file or a table without sites is refused here
    mappings = {}
    if cfg.get("structure"):  # aligned and checked before the backbone runs
        mappings = structures_for(proteins, cfg.get("structure"), cfg.get("chain"), options,
                                  file_names(p.id for p in proteins).get)
        for pid, m in mappings.items():
            log.info(f"{pid}: {m.summary()}")
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
    warnings = [w for w in [undefined_warning(metrics, f"the {len(proteins)} proteins of the table"), by_id_only,
                            ckpt.calibration.warning if ckpt.calibration else None] if w]
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
        "note": backbone.note,
    })
    write_csv(out / "scores.csv", *data.rows(scores, probabilities))
    per_protein_lines = _per_protein_outputs(out, data, scores, metrics, ckpt.threshold, backbone.label,
                                             extraction, bool(cfg.get("plots")), cfg.probe.top_k, mappings)
    what = f"{len(ckpt.spec.heads)} heads" if ckpt.spec.kind == "heads" else ckpt.spec.kind
    pr_curves({f"probe on {what}": (data.y, scores)}, out / "pr_curve.png",
              title=f"PR curve ({backbone.label}, {len(proteins)} proteins)")
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / "metrics.json", metrics)
    ci = metrics["intervals"]["auprc"]
    log.info(f"{len(proteins)} proteins, {metrics['n_residues']} residues, {metrics['n_sites']} sites "
             f"(base rate {metrics['base_rate']:.3f})")
    log.info(f"AUPRC {_fmt(metrics['auprc'])} (95 % bootstrap interval over proteins {_fmt(ci['lo'])}-"
             f"{_fmt(ci['hi'])}), AUROC {_fmt(metrics['auroc'])}, at threshold {ckpt.threshold:.3f} on the ranking "
             f"score: F1 {_fmt(metrics['f1'])}, MCC {_fmt(metrics['mcc'])}; means per protein: precision@"
             f"{cfg.probe.top_k} {_fmt(metrics['precision_at_k'])}, AUPRC {_fmt(metrics['protein_auprc'])}")
    for line in per_protein_lines:
        log.info(line)
    for w in warnings:
        log.warning(w.removeprefix("warning: "))
    log.info(f"metrics: {out / 'metrics.json'} (scores: {out / 'scores.csv'}, per protein: {out / 'per_protein.csv'}"
             + (f", plots: {out / 'plots'}" if cfg.get("plots") else "") + ")")
    log.info(f"report: {write_report(out, 'evaluate')} (open it in a browser)")
    if backbone.meaningless:
        log.warning(meaningless_message(backbone.name))
    return metrics


if __name__ == "__main__":
    main()
