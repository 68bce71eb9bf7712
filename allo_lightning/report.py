"""``python -m allo_lightning.report --config configs/gpcr.yaml``: how each head subset performs.

Every subset is trained and tested with the same probe under the same folds (cluster k-fold, or
leave one cluster out with ``--report.scheme logo``); heads are ranked and selected on each fold's
training proteins only. Rows of ``report.csv`` / ``report.md``:

- ``selected``: the heads the analysis selects (as fit uses them);
- ``top{k}``: the k best-ranked heads, k in ``report.ks`` capped at the number of heads;
- ``random{k}``: k random heads, ``report.random_seeds`` draws (mean and sd over the draws);
- ``all``: every head; ``best_layer``: the heads of the layer with the best mean head score on the
  training proteins;
- ``embedding``: the backbone's final-layer embeddings with the same probe;
- ``identity``: no language model, the residue letter only.

Metrics are means over the folds' test sets (sd: over folds; for random rows over the draws).
Also: ``pr_curves.png`` (test scores pooled over folds), ``data_efficiency.csv`` / ``.png``
(test AUPRC against the number of training proteins).
"""

from __future__ import annotations

import math
import random
import time
from statistics import mean, pstdev

from .analysis import head_label
from .backbone import TINY_MEANINGLESS
from .outputs import prepare_out_dir, write_json, write_text
from .pipeline import load_inputs, run_extraction
from .shell import command

COLUMNS = ("subset", "n_heads", "auprc", "auprc_sd", "auroc", "auroc_sd", "f1", "f1_sd", "mcc", "mcc_sd",
           "precision_at_k", "protein_auprc", "base_rate", "folds", "note")
METRICS = ("auprc", "auroc", "f1", "mcc", "precision_at_k", "protein_auprc", "base_rate")


def _flags(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing output folder")


def _sd(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return pstdev(vals) if len(vals) > 1 else 0.0


def _mean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return mean(vals) if vals else float("nan")


def capped_ks(ks, n_total: int) -> list[int]:
    return sorted({min(int(k), n_total) for k in ks if int(k) >= 1})


def best_layer(analysis) -> int:
    """Layer whose heads have the best mean score on the training proteins (NaN scores ignored)."""
    score = analysis.get("").double()
    score = score.nan_to_num(float("-inf"))
    finite = score.clamp_min(-1e30)
    return int(finite.mean(dim=1).argmax())


def fold_subsets(analysis, n_layers: int, n_heads: int, rcfg, pcfg, seed: int, selected) -> list[tuple]:
    """(row name, group for random draws or None, FeatureSpec, note) for one fold."""
    from .probe import FeatureSpec, head_spec
    from .workflow import ranking_of

    all_heads = [(ly, h) for ly in range(n_layers) for h in range(n_heads)]
    ranking = ranking_of(analysis)
    out = [("selected", None, head_spec(selected, pcfg), "")]
    ks = capped_ks(rcfg.ks, len(all_heads))
    for k in ks:
        out.append((f"top{k}", None, head_spec(ranking[:k], pcfg), ""))
    for k in ks:
        if k >= len(all_heads):
            continue  # random k of all heads = all heads
        for r in range(rcfg.random_seeds):
            rng = random.Random(seed * 1_000_003 + k * 1009 + r)
            out.append((f"random{k}", r, head_spec(sorted(rng.sample(all_heads, k)), pcfg), ""))
    out.append(("all", None, head_spec(all_heads, pcfg), ""))
    layer = best_layer(analysis)
    out.append(("best_layer", None, head_spec([(layer, h) for h in range(n_heads)], pcfg), f"L{layer}"))
    if rcfg.embeddings:
        out.append(("embedding", None, FeatureSpec("embedding", [], log1p=False, window=pcfg.window), ""))
    out.append(("identity", None, FeatureSpec("identity", [], log1p=False, window=pcfg.window), ""))
    return out


def aggregate(results: list[dict]) -> list[dict]:
    """results: dicts name, draw, fold, n_heads, note, metrics -> one row per name."""
    rows = []
    for name in dict.fromkeys(r["name"] for r in results):
        sub = [r for r in results if r["name"] == name]
        draws = sorted({r["draw"] for r in sub if r["draw"] is not None})
        row: dict = {"subset": name, "n_heads": _mean([r["n_heads"] for r in sub]),
                     "folds": len({r["fold"] for r in sub}),
                     "note": " ".join(dict.fromkeys(r["note"] for r in sub if r["note"]))}
        if draws:  # mean over folds per draw, then mean and sd over draws
            per_draw = {m: [_mean([r["metrics"][m] for r in sub if r["draw"] == d]) for d in draws] for m in METRICS}
            row["note"] = f"{len(draws)} random draws"
        else:
            per_draw = {m: [r["metrics"][m] for r in sub] for m in METRICS}
        for m in METRICS:
            row[m] = _mean(per_draw[m])
            if m in ("auprc", "auroc", "f1", "mcc"):
                row[f"{m}_sd"] = _sd(per_draw[m])
        rows.append(row)
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else (f"{v:.4f}" if abs(v - round(v)) > 1e-9 or abs(v) < 1 else f"{v:g}")
    return str(v)


def to_csv(rows: list[dict], columns) -> str:
    from .tables import csv_text

    return csv_text(columns, ([_fmt(r.get(c, "")) for c in columns] for r in rows))


def to_markdown(rows: list[dict], columns) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def data_efficiency(splits, stats, cfg, analyse=None, trainer_kwargs=None) -> list[dict]:
    """Test AUPRC against the number of training proteins (random subsets of each fold's training
    proteins; heads selected on the subset only), for the selected heads and the embeddings."""
    from .probe import FeatureSpec, head_spec, items_of, train_probe
    from .workflow import select_heads

    results = []
    for f, split in enumerate(splits):
        sizes = sorted({n for n in cfg.report.train_sizes if n < len(split.train)} | {len(split.train)})
        for n in sizes:
            rng = random.Random(cfg.seed * 7919 + f * 101 + n)
            labelled = [p for p in split.train if p.sites]
            train = rng.sample(split.train, n) if n < len(split.train) else list(split.train)
            if not any(p.sites for p in train):  # a training set needs at least one site
                train[0] = rng.choice(labelled)
            items = items_of(train, stats)
            kinds = [("selected heads", None)]
            if cfg.report.embeddings:
                kinds.append(("embedding", FeatureSpec("embedding", [], log1p=False, window=cfg.probe.window)))
            for name, spec in kinds:
                if spec is None:
                    spec = head_spec(select_heads(items, cfg.heads, cfg.seed, analyse).heads, cfg.probe)
                run = train_probe(spec, items, items_of(split.val, stats), items_of(split.test, stats), cfg.probe,
                                  cfg.seed, trainer_kwargs, cfg.report.max_epochs)
                results.append({"features": name, "n": n, "all": n == len(split.train), "fold": f,
                                "auprc": run.test["auprc"], "base_rate": run.test["base_rate"]})
    rows = []
    for name in dict.fromkeys(r["features"] for r in results):
        for n in sorted({r["n"] for r in results if r["features"] == name and not r["all"]}) + ["all"]:
            sub = [r for r in results if r["features"] == name and (r["all"] if n == "all" else r["n"] == n)]
            if not sub:
                continue
            rows.append({"features": name, "n_train": _mean([r["n"] for r in sub]), "label": str(n),
                         "auprc": _mean([r["auprc"] for r in sub]), "auprc_sd": _sd([r["auprc"] for r in sub]),
                         "folds": len(sub), "base_rate": _mean([r["base_rate"] for r in sub])})
    return rows


def heads_label(heads) -> list[str]:
    return [head_label(ly, h) for ly, h in heads]


@command("report", __doc__, sections=("model", "data", "trainer", "heads", "probe", "report"), flags=_flags)
def main(cfg, analyse=None) -> dict:
    from .plots.probe import data_efficiency as plot_efficiency
    from .plots.probe import pr_curves
    from .probe import items_of, make_splits, train_probe
    from .workflow import select_heads

    t0 = time.perf_counter()
    if True:  # (one block: kept for a small diff)
        trainer_kwargs = {"accelerator": cfg.probe.accelerator, "default_root_dir": str(cfg.out_dir)}
        if cfg.report.random_seeds < 5:
            print(f"note: report.random_seeds={cfg.report.random_seeds}; at least 5 are recommended")
        out = prepare_out_dir(cfg.out_dir, bool(cfg.get("overwrite")), "report.csv")
        made = []
        backbone, proteins = load_inputs(cfg, check=lambda ps: made.append(make_splits(
            ps, cfg.report.scheme, cfg.report.folds, cfg.probe.split, cfg.probe.val_fraction, cfg.seed)),
            require_sites=True)
        splits = made[0]
        extraction = run_extraction(cfg, backbone, proteins, embeddings=cfg.report.embeddings)
        stats = {p.id: s for p, s in extraction}
        results, curves, selected_per_fold = [], {}, []
        for f, split in enumerate(splits):
            train = items_of(split.train, stats)
            choice = select_heads(train, cfg.heads, cfg.seed, analyse)
            selected_per_fold.append(heads_label(choice.heads))
            subsets = fold_subsets(choice.analysis, backbone.n_layers, backbone.n_heads, cfg.report, cfg.probe,
                                   cfg.seed, choice.heads)
            for name, draw, spec, note in subsets:
                run = train_probe(spec, train, items_of(split.val, stats), items_of(split.test, stats), cfg.probe,
                                  cfg.seed, trainer_kwargs, cfg.report.max_epochs)
                results.append({"name": name, "draw": draw, "fold": f, "n_heads": len(spec.heads), "note": note,
                                "metrics": run.test})
                if draw in (None, 0):
                    ys, ss = curves.setdefault(name if draw is None else f"{name} (draw 0)", ([], []))
                    ys.append(run.test_set.y)
                    ss.append(run.test_scores)
            print(f"fold {f + 1}/{len(splits)} ({split.name}): {len(split.train)} train / {len(split.val)} val / "
                  f"{len(split.test)} test proteins, {len(subsets)} probes, {time.perf_counter() - t0:.0f} s")
        efficiency = data_efficiency(splits, stats, cfg, analyse, trainer_kwargs)
    rows = aggregate(results)
    write_text(out / "report.csv", to_csv(rows, COLUMNS))
    eff_cols = ("features", "label", "n_train", "auprc", "auprc_sd", "folds", "base_rate")
    write_text(out / "data_efficiency.csv", to_csv(efficiency, eff_cols))
    import torch

    keep = [n for n in curves if n in ("selected", "all", "best_layer", "embedding", "identity") or n.startswith("random")]
    keep = [n for n in keep if not n.startswith("random")] + [n for n in keep if n.startswith("random")][-1:]
    pr_curves({n: (torch.cat(curves[n][0]), torch.cat(curves[n][1])) for n in keep}, out / "pr_curves.png",
              title=f"test PR curves pooled over {len(splits)} folds ({backbone.label})")
    base = _mean([r["metrics"]["base_rate"] for r in results])
    plot_efficiency(efficiency, out / "data_efficiency.png", base, title=f"data efficiency ({backbone.label})")
    md = [f"# Head-subset report ({backbone.name})", ""]
    if backbone.meaningless:
        md += [f"**{TINY_MEANINGLESS}**", ""]
    md += [f"- backbone identity: `{backbone.identity}`, theta {cfg.model.theta:g}, probe `{cfg.probe.kind}` "
           f"(window {cfg.probe.window}), seed {cfg.seed}",
           f"- {len(proteins)} proteins, scheme `{cfg.report.scheme}` by `{cfg.probe.split}`: {len(splits)} folds; heads "
           "ranked and selected on each fold's training proteins only",
           "- metrics: mean over folds of the test metrics; `_sd`: sd over folds (random rows: over the random "
           "draws of the fold means); f1 and mcc at the threshold with the best validation F1; "
           f"precision_at_k: k={cfg.probe.top_k} per protein",
           "- selected heads per fold (layer, head 0-based): "
           + "; ".join(" ".join(h) for h in selected_per_fold), "",
           to_markdown(rows, COLUMNS), "## Data efficiency", "",
           "Test AUPRC (mean over folds) against the number of training proteins; heads selected on those "
           "proteins only.", "", to_markdown(efficiency, eff_cols),
           "![PR curves](pr_curves.png)", "", "![data efficiency](data_efficiency.png)", ""]
    write_text(out / "report.md", "\n".join(md))
    summary = {"rows": rows, "data_efficiency": efficiency, "folds": [s.ids() for s in splits],
               "selected_per_fold": selected_per_fold, "backbone": backbone.name,
               "backbone_identity": backbone.identity, "meaningless": backbone.meaningless,
               "note": TINY_MEANINGLESS if backbone.meaningless else "",
               "seconds": round(time.perf_counter() - t0, 2), "config": cfg.as_dict()}
    write_json(out / "report.json", summary)
    print(to_markdown([{c: r[c] for c in ("subset", "n_heads", "auprc", "auprc_sd", "auroc", "f1", "mcc")}
                       for r in rows], ("subset", "n_heads", "auprc", "auprc_sd", "auroc", "f1", "mcc")))
    print(f"report: {out / 'report.md'} ({summary['seconds']:.0f} s)")
    if backbone.meaningless:
        print(TINY_MEANINGLESS)
    return summary


if __name__ == "__main__":
    main()
