"""``python -m allo_lightning.report --config configs/gpcr.yaml``: how each head subset performs.

Every subset is trained and tested with the same probe under the same folds; heads are ranked and
selected on each fold's TRAINING proteins only. Schemes (``--report.scheme``):

- ``kfold``: cluster k-fold; ``logo``: leave one cluster (with the curated GPCRs: one GPCR) out;
- ``transfer``: heads selected and probes trained on non-GPCR proteins of the bundled ASD set (ligand
  modulators only; ``--report.transfer_pool N`` for a smaller pool), tested on the data's proteins
  (``--data.bundled gpcr``: the curated GPCRs). Does head selection generalise to GPCRs?

Rows of ``report.csv`` / ``report.md``:

- ``selected``: the heads the analysis selects (as fit uses them); ``selected(top3 fallback)`` when no
  head passed the selection and the top-ranked heads were used (``... in 1/5 folds``: some folds);
- ``top{k}``: the k best-ranked heads, k in ``report.ks`` capped at the number of heads;
- ``random{k}``: k random testable heads, ``report.random_seeds`` draws (mean and sd over the draws);
  ``random_matched``: the same with k = the number of heads the fold selected;
- ``all``: every head; ``best_layer``: the heads of the layer whose testable heads have the best mean
  score on the training proteins;
- ``embedding``: the backbone's final-layer embeddings with the same probe; ``best_layer_embedding``: the
  hidden states (output of the block) of that best layer, chosen on each fold's training proteins;
  ``selected+embedding``: the selected heads' statistics and the embedding concatenated;
- ``identity``: no language model, the residue letter only.

Metrics are means over the folds' test sets (sd: over folds; for random rows over the draws), with
95 % percentile bootstrap intervals over the test proteins (``_lo``/``_hi``; proteins resampled within
each fold's test set). report.md compares ``selected`` with every other row: the AUPRC difference (with
a descriptive paired bootstrap interval) and a permutation test over the test proteins, Holm-adjusted
across rows, which alone gives the verdict (probe/paired.py). Also: ``comparison.csv``, ``pr_curves.png``
(test scores pooled over folds), ``data_efficiency.csv`` / ``.png`` (test AUPRC against the number of
training + validation proteins:
``report.efficiency_draws`` random draws per size, validation drawn in proportion) and, with
``--report.alphamissense FILE``, ``alphamissense.csv`` (pathogenicity of predicted and labelled sites).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from .html import PAGE_FILES, write_report
from .outputs import claim_out_files, prepare_out_dir, write_json, write_text
from .records import RUN_FILES, record_run
from .shell import command

log = logging.getLogger("allo_lightning.report")  # not __name__: "__main__" under python -m allo_lightning.report


# what report writes into the output folder (and alphamissense.csv with --report.alphamissense)
FILES = ("report.csv", "comparison.csv", "data_efficiency.csv", "pr_curves.png", "data_efficiency.png", "report.md",
         "report.json")


def _flags(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing output folder")


def heads_label(heads) -> list[str]:
    from .analysis import head_label

    return [head_label(ly, h) for ly, h in heads]


def _efficiency(splits, stats, cfg, choices, analyse, folds, full_runs, trainer_kwargs, t0: float,
                units=None) -> list[dict]:
    """Data-efficiency probes: per fold and training size, ``report.efficiency_draws`` draws of the
    training proteins (validation drawn in proportion; early stopping on it as in every probe).
    ``full_runs``: (fold, row name) -> test scores of the main rows, reused for the whole training set;
    a draw identical to an earlier one (small folds) reuses its probes. Each fold's end is logged (this stage
    trains more probes than the folds' rows and printed nothing for minutes)."""
    import random

    from .probe import FeatureSpec, head_spec, items_of, train_probe
    from .reporting import efficiency_plan, efficiency_rows, testable_heads
    from .workflow import select_heads

    rcfg, results = cfg.report, []
    reuse = {"selected heads": "selected", "embedding": "embedding", "identity": "identity"}
    for f, split in enumerate(splits):
        test = items_of(split.test, stats)
        done: dict = {}
        trained = 0
        plan = efficiency_plan(split, rcfg.train_sizes, rcfg.efficiency_draws, cfg.seed, f)
        for d in plan:
            key = (frozenset(p.id for p in d.train), frozenset(p.id for p in d.val))
            train, val = items_of(d.train, stats), items_of(d.val, stats)
            if key not in done:
                choice = choices[f] if d.full else select_heads(train, cfg.heads, cfg.seed, analyse)
                n_layers, n_heads = choice.analysis.n_layers, choice.analysis.n_heads
                pool = testable_heads(choice.analysis, n_layers, n_heads)
                rng = random.Random(cfg.seed * 31 + f * 1009 + d.n * 17 + d.draw)
                kinds = [("selected heads", head_spec(choice.heads, cfg.probe)),
                         ("random heads", head_spec(sorted(rng.sample(pool, min(len(choice.heads), len(pool)))),
                                                    cfg.probe))]
                if rcfg.embeddings:
                    kinds.append(("embedding", FeatureSpec("embedding", [], log1p=False, window=cfg.probe.window)))
                kinds.append(("identity", FeatureSpec("identity", [], log1p=False, window=cfg.probe.window)))
                outcome = {}
                for name, spec in kinds:
                    if d.full and (f, reuse.get(name)) in full_runs:
                        outcome[name] = full_runs[(f, reuse[name])]
                        continue
                    run = train_probe(spec, train, val, test, cfg.probe, cfg.seed, trainer_kwargs, rcfg.max_epochs)
                    trained += 1
                    outcome[name] = (run.test["auprc"], run.test["base_rate"], run.test_scores.numpy())
                done[key] = (outcome, bool(choice.fallback))
            outcome, fell_back = done[key]
            for name, (auprc, base_rate, scores) in outcome.items():
                results.append({"features": name, "label": "all" if d.full else str(d.n), "n": d.n,
                                "n_val": len(d.val), "draw": d.draw, "fold": f, "auprc": auprc,
                                "base_rate": base_rate, "scores": scores,
                                "fallback": fell_back and name == "selected heads"})
        log.info(f"data efficiency fold {f + 1}/{len(splits)} ({split.name}): {trained} probes trained for "
                 f"{len(plan)} draws of training proteins, {time.perf_counter() - t0:.0f} s since the start")
    return efficiency_rows(results, folds, rcfg.n_boot, cfg.seed, units)


def best_layer_hidden(cfg, backbone, proteins, choices) -> dict[int, dict]:
    """Hidden states of each fold's best layer (chosen on that fold's training proteins: the layer whose
    heads score best), for every protein: {layer: {id: [L, D]}}. One cached extraction per distinct layer."""
    from .pipeline import run_extraction
    from .reporting import best_layer

    out: dict[int, dict] = {}
    for layer in sorted({best_layer(c.analysis) for c in choices}):
        ex = run_extraction(cfg, backbone, proteins, embeddings=True, embedding_layer=layer)
        out[layer] = {p.id: s.embedding for p, s in ex}
    return out


@command("report", __doc__, sections=("model", "data", "trainer", "heads", "probe", "report"), flags=_flags)
def main(cfg, analyse=None) -> dict:
    # torch, Lightning and the backbone only once the command line is parsed (--help answers without them)
    import numpy as np
    import torch

    from .backbone import meaningless_message
    from .pipeline import load_inputs, run_extraction
    from .plots.probe import data_efficiency as plot_efficiency
    from .plots.probe import pr_curves
    from .probe import items_of, train_probe
    from .probe.bootstrap import COVERAGE
    from .probe.splits import group_keys
    from .reporting import (
        COLUMNS,
        COMPARISON_COLUMNS,
        EFFICIENCY_COLUMNS,
        Collected,
        aggregate,
        best_layer,
        fold_subsets,
        report_splits,
        to_csv,
        to_markdown,
    )

    t0 = time.perf_counter()
    rcfg = cfg.report
    from .workflow import select_heads

    trainer_kwargs = {"accelerator": cfg.probe.accelerator, "default_root_dir": str(cfg.out_dir)}
    if rcfg.random_seeds < 5:
        log.warning(f"report.random_seeds={rcfg.random_seeds}; at least 5 are recommended")
    if rcfg.efficiency_draws < 5:
        log.warning(f"report.efficiency_draws={rcfg.efficiency_draws}; at least 5 are recommended")
    overwrite = bool(cfg.get("overwrite"))
    out = prepare_out_dir(cfg.out_dir, overwrite, "report.csv")
    claim_out_files(out, "report.csv", overwrite,  # before work: no link on the way, no user's file replaced
                    FILES + (("alphamissense.csv",) if rcfg.alphamissense else ()) + PAGE_FILES + RUN_FILES)
    record_run(cfg, out)  # config.yaml now, run.log at the end
    made, am = [], []

    def check(ps) -> None:  # the folds, and the AlphaMissense file, before the model is loaded
        from .backbone import context_length

        if rcfg.alphamissense:
            from .analysis.alphamissense import read_alphamissense

            am.append(read_alphamissense(rcfg.alphamissense, [p.id for p in ps]))
        made.append(report_splits(ps, rcfg, cfg.probe, cfg.seed, context_length(cfg.model.backbone)))

    backbone, proteins = load_inputs(cfg, check=check, require_sites=True)
    splits, am_table = made[0], (am[0] if am else None)
    everyone = list({p.id: p for s in splits for p in (*s.train, *s.val, *s.test)}.values())
    extraction = run_extraction(cfg, backbone, everyone, embeddings=rcfg.embeddings)
    stats = {p.id: s for p, s in extraction}
    choices = [select_heads(items_of(split.train, stats), cfg.heads, cfg.seed, analyse) for split in splits]
    hidden = best_layer_hidden(cfg, backbone, everyone, choices) if rcfg.embeddings else {}
    col, curves = Collected(), {}
    for f, (split, choice) in enumerate(zip(splits, choices)):
        layer = best_layer(choice.analysis) if hidden else None
        fold_stats = stats if layer is None else {pid: replace(s, hidden={layer: hidden[layer][pid]})
                                                  for pid, s in stats.items()}
        train, val, test = (items_of(ps, fold_stats) for ps in (split.train, split.val, split.test))
        subsets = fold_subsets(choice.analysis, backbone.n_layers, backbone.n_heads, rcfg, cfg.probe,
                               cfg.seed, choice.heads, hidden_layer=layer)
        same: dict = {}  # identical feature sets (e.g. selected = top3) are trained once
        for name, draw, spec, note in subsets:
            key = (type(spec).__name__, spec.kind, tuple(spec.heads), getattr(spec, "layer", None))
            if key not in same:
                same[key] = train_probe(spec, train, val, test, cfg.probe, cfg.seed, trainer_kwargs,
                                        rcfg.max_epochs)
            run = same[key]
            if len(col.folds) == f:  # the unit of the intervals and tests: a test protein's split group (its
                index = run.test_set.index.numpy()  # cluster, merged with any cluster sharing a sequence with it)
                keys = group_keys(run.test_set.proteins, cfg.probe.split)
                unit = {k: i for i, k in enumerate(dict.fromkeys(keys))}
                col.add_fold(run.test_set.y.numpy(), index, np.array([unit[k] for k in keys])[index])
            col.add(name, draw, f, len(spec.heads), note, run.test, run.test_scores.numpy(), run.threshold)
            if draw in (None, 0):
                ys, ss = curves.setdefault(name if draw is None else f"{name} (draw 0)", ([], []))
                ys.append(run.test_set.y)
                ss.append(run.test_scores)
        log.info(f"fold {f + 1}/{len(splits)} ({split.name}): {len(split.train)} train / {len(split.val)} val / "
                 f"{len(split.test)} test proteins, {len(same)} probes trained for {len(subsets)} rows and draws, "
                 f"{time.perf_counter() - t0:.0f} s since the start")
        if choice.fallback:
            log.warning(f"FALLBACK fold {f + 1} ({split.name}): {choice.fallback}")
    full_runs = {(r["fold"], r["name"]): (r["metrics"]["auprc"], r["metrics"]["base_rate"], r["scores"])
                 for r in col.results if r["draw"] is None}
    efficiency = _efficiency(splits, stats, cfg, choices, analyse, col.folds, full_runs, trainer_kwargs, t0,
                             col.units)
    fallbacks = [c.fallback for c in choices]
    rows, comparisons = aggregate(col, rcfg.n_boot, cfg.seed, fallbacks=fallbacks)
    sel_name = rows[0]["subset"] if rows else "selected"
    am_rows = None
    if am_table is not None:
        from .analysis.alphamissense import association_rows

        selected = [r for r in col.results if r["name"] == "selected"]
        scored = []
        for r in selected:
            split = splits[r["fold"]]
            _, index = col.folds[r["fold"]]
            for i, p in enumerate(split.test):
                scored.append((p, r["scores"][index == i], r["threshold"]))
        am_rows = association_rows(am_table, scored, rcfg.am_top_k)
    write_text(out / "report.csv", to_csv(rows, COLUMNS))
    write_text(out / "comparison.csv", to_csv(comparisons, COMPARISON_COLUMNS))
    write_text(out / "data_efficiency.csv", to_csv(efficiency, EFFICIENCY_COLUMNS))
    keep = [n for n in curves if n in ("selected", "all", "best_layer", "embedding", "selected+embedding",
                                        "identity") or n.startswith("random")]
    keep = [n for n in keep if not n.startswith("random")] + [n for n in keep if n.startswith("random")][-1:]
    pr_curves({(sel_name if n == "selected" else n): (torch.cat(curves[n][0]), torch.cat(curves[n][1])) for n in keep},
              out / "pr_curves.png",
              title=f"test PR curves pooled over {len(splits)} fold(s) ({backbone.label})")
    base = sum(r["base_rate"] for r in rows) / len(rows)
    plot_efficiency(efficiency, out / "data_efficiency.png", base, title=f"data efficiency ({backbone.label})")
    n_test = [len(s.test) for s in splits]
    md = [f"# Head-subset report ({backbone.name})", ""]
    if backbone.meaningless:
        md += [f"**{backbone.note}**", ""]
    scheme_line = {
        "kfold": f"cluster {len(splits)}-fold (by `{cfg.probe.split}`)",
        "logo": f"leave one {cfg.probe.split} out ({len(splits)} folds)",
        "transfer": f"heads selected and probes trained on {len(splits[0].train)} non-GPCR ASD proteins (ligand "
                    f"modulators; {len(splits[0].val)} more for validation), tested on the {len(splits[0].test)} "
                    "data proteins",
    }[rcfg.scheme]
    md += [f"- backbone identity: `{backbone.identity}`, theta {cfg.model.theta:g}, probe `{cfg.probe.kind}` "
           f"(window {cfg.probe.window}), seed {cfg.seed}",
           f"- {len(proteins)} data proteins; scheme `{rcfg.scheme}`: {scheme_line}; heads ranked and selected on "
           "each fold's training proteins only",
           "- test proteins per fold: " + ", ".join(f"{s.name} {n}" for s, n in zip(splits, n_test))
           + f" ({sum(n_test)} in all)",
           "- metrics: mean over folds of the test metrics; `_lo`/`_hi`: 95 % percentile bootstrap interval over "
           f"the test proteins ({rcfg.n_boot} samples, proteins resampled within each fold); `_sd`: sd over folds "
           "(random rows: over the random draws of the fold means); f1 and mcc at the threshold with the best "
           f"validation F1; precision_at_k: k={cfg.probe.top_k} per protein",
           *([f"- only {min(n_test)} test proteins in a fold: a percentile bootstrap over so few proteins is too "
               "narrow; read the intervals as descriptive"] if min(n_test) < 10 else []),
           "- selected heads per fold (layer, head 0-based): " + "; ".join(
               " ".join(heads_label(c.heads)) + (" (FALLBACK)" if c.fallback else "") for c in choices),
           *([f"- **FALLBACK in {sum(1 for c in choices if c.fallback)} of {len(choices)} folds**: no head passed "
              f"the `{cfg.heads.strategy}` selection, so the top-ranked heads were used (row `{sel_name}`; "
              "unconfirmed heads): " + "; ".join(f"{s.name}: {c.fallback}" for s, c in zip(splits, choices)
                                                 if c.fallback)] if any(fallbacks) else []),
           *(["- heads strategy `original`: p < p_max per head with NO multiplicity correction over the "
              f"{backbone.n_layers * backbone.n_heads} heads tested; expect false positives"]
             if cfg.heads.strategy == "original" else []), "",
           to_markdown(rows, COLUMNS), f"## Selected heads (`{sel_name}`) against each baseline", "",
           f"`delta_auprc`: AUPRC of `{sel_name}` minus that of the row (mean over folds); `delta_lo`/`delta_hi`: "
           "paired bootstrap over test proteins, descriptive only (too narrow with few test proteins). "
           "`p_value`: two-sided exact permutation test. Fixed rows: the two rows' score sets swapped per test "
           f"unit (the split's `{cfg.probe.split}` groups, so homologs of one cluster swap together; exact under the "
           "null that they are exchangeable per unit, independent across units). Random rows: whole head sets "
           "rotated, selected and every random draw (exact under the null that the selected heads are one more "
           "random draw; p >= 2 / (draws + 1), so a verdict needs at least 40 draws); `p_holm`: Holm-adjusted over the "
           f"{len(comparisons)} rows; `p_floor`: the smallest attainable p; `rotations`: how many rotations "
           "(all of them = exact, else Monte Carlo). `selected_better`: yes / no (worse) when p_holm < 0.05, "
           "`not resolved` otherwise, `no verdict (too few test proteins)` (or `random draws`) when even p_floor "
           "adjusted for the rows cannot reach 0.05.", "",
           to_markdown(comparisons, COMPARISON_COLUMNS), "## Data efficiency", "",
           f"Test AUPRC against the number of training proteins: {rcfg.efficiency_draws} random draws of n training "
           "proteins per size and fold, validation proteins drawn in proportion (round(n_val x n / n_train), at "
           "least 1; early stopping and the threshold on them); heads selected on the drawn proteins only. "
           "`n_train_val`: the proteins each point used, training + validation (the plot's x-axis). "
           "`auprc`: mean over draws of the fold means; `_lo`/`_hi`: bootstrap over test proteins; `_sd`: over "
           "draws.", "", to_markdown(efficiency, EFFICIENCY_COLUMNS)]
    if am_rows is not None:
        from .analysis.alphamissense import AM_COLUMNS

        write_text(out / "alphamissense.csv", to_csv(am_rows, AM_COLUMNS))
        md += ["## AlphaMissense pathogenicity of predicted and labelled sites", "",
               "Mean AlphaMissense pathogenicity per residue (mean over the substitutions at that position); "
               "sites against the other residues of the same proteins, effect size = common-language AUC "
               "(P(site > other) + ties/2); one-sided p from circular shifts of the site set within each protein "
               "(keeps contiguity; pooled: stratified by protein, AUC interval from a protein bootstrap), "
               "per-protein q-values Benjamini-Hochberg. AlphaMissense is itself built on a protein language model: "
               "agreement is not independent evidence. Predicted: "
               + (f"each protein's top {rcfg.am_top_k} residues" if rcfg.am_top_k else
                  "residues at or above the fold's decision threshold")
               + " by the `selected` probe's out-of-fold test scores.", "", to_markdown(am_rows, AM_COLUMNS)]
    md += ["![PR curves](pr_curves.png)", "", "![data efficiency](data_efficiency.png)", ""]
    write_text(out / "report.md", "\n".join(md))
    summary = {"rows": rows, "comparisons": comparisons, "data_efficiency": efficiency, "alphamissense": am_rows,
               "scheme": rcfg.scheme, "folds": [s.ids() for s in splits], "test_proteins_per_fold": n_test,
               "selected_per_fold": [heads_label(c.heads) for c in choices],
               "fallback_per_fold": fallbacks, "selected_row": sel_name,
               "heads_strategy": cfg.heads.strategy,
               "multiplicity": ("none: strategy original selects on uncorrected per-head p-values"
                                if cfg.heads.strategy == "original" else None),
               "comparison_test": ("two-sided exact permutation test, Holm-adjusted across rows: fixed rows "
                                   f"swapped per test unit (split group: {cfg.probe.split}), random rows by rotating "
                                   "whole head sets (null: selected = one more random draw; p >= 2 / (draws + 1))"),
               "interval_coverage": COVERAGE,
               "backbone": backbone.name,
               "backbone_identity": backbone.identity, "meaningless": backbone.meaningless,
               "note": backbone.note,
               "seconds": round(time.perf_counter() - t0, 2), "config": cfg.as_dict()}
    write_json(out / "report.json", summary)
    cols = ("subset", "n_heads", "auprc", "auprc_lo", "auprc_hi", "auroc", "f1", "mcc")
    log.info(to_markdown([{c: r[c] for c in cols} for r in rows], cols))
    if any(fallbacks):
        log.warning(f"FALLBACK: in {sum(1 for f in fallbacks if f)} of {len(fallbacks)} folds no head passed the "
                    f"selection; row {sel_name!r} uses the top-ranked heads (unconfirmed).")
    if cfg.heads.strategy == "original":
        log.warning("heads strategy 'original' uses uncorrected per-head p-values (no multiplicity correction).")
    log.info(f"report: {out / 'report.md'} ({summary['seconds']:.0f} s); {write_report(out, 'report')} (open it in "
             "a browser)")
    if backbone.meaningless:
        log.warning(meaningless_message(backbone.name))
    return summary


if __name__ == "__main__":
    main()
