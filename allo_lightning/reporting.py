"""The logic of the report: schemes (kfold, logo, transfer), head subsets and baselines, rows with
bootstrap intervals over test proteins, paired comparisons, and the data-efficiency plan.

The command (allo_lightning/report.py) only wires these together and writes files.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import mean, pstdev
from typing import Any

import numpy as np
import torch

from .data.protein import Protein
from .errors import AlloError, InputError
from .probe.bootstrap import FoldBootstrap
from .probe.features import FeatureSpec, head_spec
from .probe.splits import Split, check, group_keys, group_of, make_splits

METRICS = ("auprc", "auroc", "f1", "mcc", "precision_at_k", "protein_auprc", "base_rate")
COLUMNS = ("subset", "n_heads", "auprc", "auprc_lo", "auprc_hi", "auprc_sd", "auroc", "auroc_lo", "auroc_hi",
           "auroc_sd", "f1", "f1_sd", "mcc", "mcc_sd", "precision_at_k", "protein_auprc", "base_rate", "folds",
           "test_proteins", "fallback_folds", "note")
COMPARISON_COLUMNS = ("subset", "delta_auprc", "delta_lo", "delta_hi", "p_value", "p_holm", "p_floor", "rotations",
                      "selected_better", "test_proteins")
EFFICIENCY_COLUMNS = ("features", "label", "n_train", "n_val", "n_train_val", "draws", "fallback_runs", "auprc",
                      "auprc_lo", "auprc_hi", "auprc_sd",
                      "folds", "test_proteins", "base_rate")


# -- schemes ----------------------------------------------------------------------------------------

def is_gpcr(p: Protein) -> bool:
    return (p.family or "").strip().lower() == "gpcr"


def transfer_pool(test: Sequence[Protein], limit: int | None = None, max_length: int | None = None,
                  seed: int = 0) -> list[Protein]:
    """Training pool of the transfer scheme: the bundled ASD proteins that are not GPCRs, labelled
    from a ligand modulator (no ion/additive rows), sharing no id, cluster or sequence with ``test``.
    ``limit``: a seeded random sample of at most that many (kept in table order)."""
    from .data.bundled import read_bundled

    ids = {p.id for p in test}
    clusters = {p.cluster for p in test if p.cluster}
    seqs = {p.sequence for p in test}
    pool = [p for p in read_bundled("asd")
            if not is_gpcr(p) and (p.modulator_class or "ligand") == "ligand" and p.sites
            and p.id not in ids and p.id.split("_")[0] not in ids and p.sequence not in seqs
            and (p.cluster or p.id) not in clusters]
    if max_length:
        pool = [p for p in pool if p.length <= max_length]
    if limit is not None and limit < len(pool):
        keep = set(random.Random(seed * 7 + 11).sample(range(len(pool)), limit))
        pool = [p for i, p in enumerate(pool) if i in keep]
    return pool


def transfer_split(test: Sequence[Protein], pool: Sequence[Protein], by: str = "cluster", val_fraction: float = 0.2,
                   seed: int = 0) -> Split:
    """One split: train and validation from ``pool`` (by cluster), test = ``test``. Never a GPCR in
    training or validation, never a test protein's id, cluster or sequence."""
    pool = [p for p in pool if not is_gpcr(p)]
    test_keys = {group_of(p, by) for p in test} | {p.id for p in test} | {p.sequence for p in test}
    pool = [p for p in pool if group_of(p, by) not in test_keys and p.id not in test_keys
            and p.sequence not in test_keys]
    groups: dict[str, list[Protein]] = {}  # one sequence under two ids (4 sets in the ASD pool) is one group
    for p, k in zip(pool, group_keys(pool, by)):
        groups.setdefault(k, []).append(p)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    if len(keys) < 2:
        raise InputError(f"the transfer scheme needs at least 2 non-GPCR training clusters; the pool has {len(keys)}. "
                         "Raise --report.transfer_pool (or leave it out).", todo="Raise --report.transfer_pool.")
    n_val = min(max(1, round(val_fraction * len(keys))), len(keys) - 1)
    val = [p for k in keys[:n_val] for p in groups[k]]
    train = [p for k in keys[n_val:] for p in groups[k]]
    if not any(p.sites for p in test):
        raise InputError("the transfer scheme tests on the data's proteins, but none has an allosteric site label.",
                         todo="Give labelled proteins (e.g. --data.bundled gpcr).")
    return check(Split(train, val, list(test), "transfer"), by)


def report_splits(proteins: Sequence[Protein], rcfg, pcfg, seed: int, max_length: int | None = None) -> list[Split]:
    """The folds of ``rcfg.scheme`` (kfold, logo or transfer)."""
    if rcfg.scheme == "transfer":
        pool = transfer_pool(proteins, rcfg.transfer_pool, max_length, seed)
        return [transfer_split(proteins, pool, pcfg.split, pcfg.val_fraction, seed)]
    return make_splits(proteins, rcfg.scheme, rcfg.folds, pcfg.split, pcfg.val_fraction, seed)


# -- head subsets and baselines -------------------------------------------------------------------

def testable_heads(analysis: Any, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """Heads the analysis could test (``analysis.testable``: a [layers, heads] mask or a list of heads,
    where the head analysis provides it); all heads otherwise, or when none is testable."""
    all_heads = [(ly, h) for ly in range(n_layers) for h in range(n_heads)]
    t = getattr(analysis, "testable", None)
    if callable(t):
        t = t()
    if t is None:
        return all_heads
    if hasattr(t, "shape") and tuple(t.shape) == (n_layers, n_heads):
        out = [(ly, h) for ly, h in all_heads if bool(t[ly][h])]
    else:
        out = sorted({(int(ly), int(h)) for ly, h in t})
    return out or all_heads


def best_layer(analysis: Any) -> int:
    """Layer whose TESTABLE heads have the best mean score on the training proteins (NaN scores and heads
    with too few confident pairs to be tested ignored; all heads when none is testable)."""
    score = analysis.get("").double()
    n_layers, n_heads = score.shape
    testable = torch.zeros(n_layers, n_heads, dtype=torch.bool)
    for ly, h in testable_heads(analysis, n_layers, n_heads):
        testable[ly, h] = True
    ok = ~torch.isnan(score) & testable
    sums = torch.where(ok, score, torch.zeros_like(score)).sum(dim=1)
    counts = ok.sum(dim=1)
    means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("-inf")))
    return int(means.argmax())


class ConcatSpec(FeatureSpec):
    """Head statistics of ``heads`` and the final-layer embedding, concatenated per residue."""

    def raw(self, protein, stats):
        heads = super().raw(protein, stats)
        if stats is None or stats.embedding is None:
            raise AlloError(f"protein {protein.id!r}: no embedding in the statistics (extract with embeddings).")
        return torch.cat([heads, stats.embedding.float()], dim=1).contiguous()


class LayerEmbeddingSpec(FeatureSpec):
    """Hidden states of one layer (``stats.hidden[layer]``) as features."""

    def __init__(self, layer: int, window: int = 0) -> None:
        super().__init__("embedding", [], log1p=False, window=window)
        self.layer = int(layer)

    def raw(self, protein, stats):
        hidden = getattr(stats, "hidden", None) or {}
        if self.layer not in hidden:
            raise AlloError(f"protein {protein.id!r}: hidden states of layer {self.layer} were not extracted.")
        return hidden[self.layer].float().contiguous()


def capped_ks(ks, n_total: int) -> list[int]:
    return sorted({min(int(k), n_total) for k in ks if int(k) >= 1})


def fold_subsets(analysis, n_layers: int, n_heads: int, rcfg, pcfg, seed: int, selected,
                 hidden_layer: int | None = None) -> list[tuple]:
    """(row name, draw number for random rows or None, FeatureSpec, note) for one fold.

    Rows: selected; top{k}; random{k} (``rcfg.random_seeds`` draws of k TESTABLE heads); random_matched (the
    same draws with k = the number of selected heads of the fold: the size-matched baseline); all; best_layer
    (heads of the best layer on the training proteins); embedding (final layer); best_layer_embedding
    (hidden states of that best layer, when ``hidden_layer`` is given); selected+embedding; identity."""
    from .workflow import ranking_of

    all_heads = [(ly, h) for ly in range(n_layers) for h in range(n_heads)]
    pool = testable_heads(analysis, n_layers, n_heads)
    ranking = ranking_of(analysis)
    out = [("selected", None, head_spec(selected, pcfg), "")]
    ks = capped_ks(rcfg.ks, len(all_heads))
    for k in ks:
        out.append((f"top{k}", None, head_spec(ranking[:k], pcfg), ""))
    for k in capped_ks(rcfg.ks, len(pool)):
        if k >= len(pool):
            continue  # random k of all testable heads = those heads
        for r in range(rcfg.random_seeds):
            rng = random.Random(seed * 1_000_003 + k * 1009 + r)
            out.append((f"random{k}", r, head_spec(sorted(rng.sample(pool, k)), pcfg),
                        f"from {len(pool)} testable heads"))
    k = len(selected)
    if 1 <= k < len(pool):
        for r in range(rcfg.random_seeds):
            rng = random.Random(seed * 1_000_003 + k * 1009 + r)  # = random{k}: shared probes when k is in ks
            out.append(("random_matched", r, head_spec(sorted(rng.sample(pool, k)), pcfg),
                        f"k = the {k} selected heads, from {len(pool)} testable heads"))
    out.append(("all", None, head_spec(all_heads, pcfg), ""))
    layer = best_layer(analysis)
    out.append(("best_layer", None, head_spec([(layer, h) for h in range(n_heads)], pcfg), f"L{layer}"))
    if rcfg.embeddings:
        out.append(("embedding", None, FeatureSpec("embedding", [], log1p=False, window=pcfg.window), ""))
        if hidden_layer is not None:
            out.append(("best_layer_embedding", None, LayerEmbeddingSpec(hidden_layer, pcfg.window),
                        f"L{hidden_layer}"))
        spec = ConcatSpec("heads", list(selected), tuple(pcfg.stats), pcfg.log1p, pcfg.window)
        out.append(("selected+embedding", None, spec, ""))
    out.append(("identity", None, FeatureSpec("identity", [], log1p=False, window=pcfg.window), ""))
    return out


# -- rows with intervals ----------------------------------------------------------------------------

def _valid(values) -> list:
    """Values without None (an undefined metric) and NaN."""
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _mean(values) -> float:
    vals = _valid(values)
    return mean(vals) if vals else float("nan")


def _sd(values) -> float:
    vals = _valid(values)
    return pstdev(vals) if len(vals) > 1 else 0.0


@dataclass
class Collected:
    """Everything the probes of one report produced: per fold the test residues (labels, protein
    index, and the independent unit of every residue: its protein's split group, so that the proteins of
    one cluster are resampled and rotated together), per (row, draw, fold) the metrics and the test scores."""

    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    units: list[np.ndarray] = field(default_factory=list)

    def add_fold(self, labels, index, units=None) -> None:
        """``units``: per residue, its unit (e.g. the cluster of its protein); None: the protein."""
        self.folds.append((np.asarray(labels), np.asarray(index)))
        self.units.append(np.asarray(index if units is None else units))

    def unit_folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per fold (labels, unit of every residue): what the bootstrap resamples and the paired test rotates."""
        return [(y, u) for (y, _), u in zip(self.folds, self.units)]

    def add(self, name: str, draw: int | None, fold: int, n_heads: int, note: str, metrics: dict, scores,
            threshold: float | None = None) -> None:
        self.results.append({"name": name, "draw": draw, "fold": fold, "n_heads": n_heads, "note": note,
                             "metrics": metrics, "scores": np.asarray(scores, dtype=np.float64),
                             "threshold": threshold})

    def names(self) -> list[str]:
        return list(dict.fromkeys(r["name"] for r in self.results))

    def draws_of(self, name: str) -> list[list[np.ndarray]]:
        """Score sets of a row: one list per draw (non-random rows: one), one array per fold."""
        sub = [r for r in self.results if r["name"] == name]
        draws = sorted({r["draw"] for r in sub}, key=lambda d: -1 if d is None else d)
        out = []
        for d in draws:
            per_fold = {r["fold"]: r["scores"] for r in sub if r["draw"] == d}
            out.append([per_fold[f] for f in range(len(self.folds))])
        return out


def selected_name(fallbacks: Sequence[str | None] | None, n_heads: Sequence[int] | None = None) -> str:
    """Name of the ``selected`` row: ``selected``, or ``selected(top3 fallback)`` when no head passed the
    selection in any fold and the top-ranked heads were used (``selected(top3 fallback in 1/2 folds)``
    when only some folds fell back)."""
    fallbacks = list(fallbacks or [])
    fell = [i for i, f in enumerate(fallbacks) if f]
    if not fell:
        return "selected"
    ks = sorted({int(n_heads[i]) for i in fell}) if n_heads else []
    top = "top" + "/".join(str(k) for k in ks) if ks else "top-ranked"
    if len(fell) == len(fallbacks):
        return f"selected({top} fallback)"
    return f"selected({top} fallback in {len(fell)}/{len(fallbacks)} folds)"


def aggregate(col: Collected, n_boot: int = 1000, seed: int = 0, fallbacks: Sequence[str | None] | None = None,
              alpha: float = 0.05, n_perm: int = 4000) -> tuple[list[dict], list[dict]]:
    """Rows of report.csv (means over folds; random rows: over draws, sd over the draws) with 95 %
    bootstrap intervals over test proteins, and the paired comparison of ``selected`` with every other
    row: the AUPRC difference with a descriptive paired bootstrap interval, and an exact permutation test
    with Holm's adjustment over the rows; the verdict ``selected_better`` comes from the adjusted p only.
    Fixed rows: the score sets rotated per test unit (protein, or cluster: ``col.units``; exact under
    per-unit exchangeability). Random rows: whole head sets rotated (exact under "selected is one more
    random draw"; p >= 2 / (draws + 1)), since a head set's quality is shared by every protein.

    ``fallbacks``: per fold, why the selection fell back to the top-ranked heads (None where it did
    not); the ``selected`` row is then renamed (:func:`selected_name`) and ``fallback_folds`` says how
    many folds fell back."""
    from .probe.paired import holm, paired_permutation, set_rotation_test, verdict

    units = col.unit_folds()
    fb = FoldBootstrap(units, n_boot=n_boot, seed=seed)
    n_test = sum(len(np.unique(g)) for _, g in col.folds)
    values = {}
    rows = []
    fell = [f for f in (fallbacks or []) if f]
    for name in col.names():
        sub = [r for r in col.results if r["name"] == name]
        draws = sorted({r["draw"] for r in sub if r["draw"] is not None})
        row: dict = {"subset": name, "n_heads": _mean([r["n_heads"] for r in sub]),
                     "folds": len({r["fold"] for r in sub}), "test_proteins": n_test,
                     "note": " ".join(dict.fromkeys(r["note"] for r in sub if r["note"]))}
        if name == "selected" and fallbacks is not None:
            per_fold = {r["fold"]: r["n_heads"] for r in sub}
            row["subset"] = selected_name(fallbacks, [per_fold.get(f, 0) for f in range(len(fallbacks))])
            row["fallback_folds"] = f"{len(fell)}/{len(fallbacks)}"
            if fell:
                row["note"] = (f"FALLBACK in {len(fell)} of {len(fallbacks)} folds: no head passed the selection, "
                               "the top-ranked heads were used (unconfirmed)" + (f" {row['note']}" if row["note"]
                                                                                 else ""))
        if draws:
            per_draw = {m: [_mean([r["metrics"].get(m, float("nan")) for r in sub if r["draw"] == d]) for d in draws]
                        for m in METRICS}
            row["note"] = f"{len(draws)} random draws" + (f" {row['note']}" if row["note"] else "")
        else:
            per_draw = {m: [r["metrics"].get(m, float("nan")) for r in sub] for m in METRICS}
        for m in METRICS:
            row[m] = _mean(per_draw[m])
            if m in ("auprc", "auroc", "f1", "mcc"):
                row[f"{m}_sd"] = _sd(per_draw[m])
        score_sets = col.draws_of(name)
        for m in ("auprc", "auroc"):
            point, boot = fb.values(score_sets, m)
            values[(name, m)] = (point, boot)
            iv = fb.interval_of(point, boot)
            row[f"{m}_lo"], row[f"{m}_hi"] = iv.lo, iv.hi
        rows.append(row)
    comparisons = []
    if ("selected", "auprc") in values:
        pa, ba = values[("selected", "auprc")]
        (sel,) = col.draws_of("selected")
        tests = []
        for k, name in enumerate(col.names()):
            if name == "selected":
                continue
            pb, bb = values[(name, "auprc")]
            iv = fb.interval_of(pa - pb, ba - bb)
            random_row = any(r["draw"] is not None for r in col.results if r["name"] == name)
            if random_row:  # the head sets are the unit: a set's quality is shared by all proteins (probe.paired)
                t = set_rotation_test(units, sel, col.draws_of(name))
            else:
                t = paired_permutation(units, sel, col.draws_of(name), n_mc=n_perm, seed=seed * 7_919 + k)
            t["too_few"] = "random draws" if random_row else "test proteins"
            tests.append(t)
            comparisons.append({"subset": name, "delta_auprc": iv.estimate, "delta_lo": iv.lo, "delta_hi": iv.hi,
                                "p_value": t["p_value"], "p_floor": t["p_floor"],
                                "rotations": (f"{t['n_rotations']} head sets exact" if t["too_few"] == "random draws"
                                              else f"{t['n_rotations']} {'exact' if t['exact'] else 'Monte Carlo'}"),
                                "test_proteins": n_test})
        m = sum(1 for t in tests if not t["identical"] and not math.isnan(t["p_value"]))
        adjusted = holm([float("nan") if t["identical"] else t["p_value"] for t in tests])
        for c, t, p_adj in zip(comparisons, tests, adjusted):
            c["p_holm"] = p_adj
            c["selected_better"] = verdict(c["delta_auprc"], p_adj, t["p_floor"], m, t["identical"], alpha,
                                           t["too_few"])
    return rows, comparisons


# -- data efficiency --------------------------------------------------------------------------------

@dataclass(frozen=True)
class EfficiencyDraw:
    n: int
    draw: int
    full: bool
    train: list[Protein]
    val: list[Protein]


def _with_site(chosen: list[Protein], source: Sequence[Protein], rng: random.Random) -> list[Protein]:
    """Replace the last chosen protein by a labelled one when none of ``chosen`` has a site."""
    if any(p.sites for p in chosen):
        return chosen
    labelled = [p for p in source if p.sites and p not in chosen]
    if labelled:
        chosen = chosen[:-1] + [rng.choice(labelled)]
    return chosen


def efficiency_plan(split: Split, sizes: Sequence[int], draws: int = 5, seed: int = 0, fold: int = 0
                    ) -> list[EfficiencyDraw]:
    """For every training size n below the fold's training set: ``draws`` random draws of n training
    proteins and, in proportion, of round(n_val * n / n_train) (at least 1) validation proteins; plus
    the whole training and validation set once. Every draw's training and validation sets hold a site."""
    n_train, n_val = len(split.train), len(split.val)
    out = []
    for n in sorted({int(s) for s in sizes if 1 <= int(s) < n_train}):
        m = max(1, round(n_val * n / n_train))
        for d in range(draws):
            rng = random.Random(seed * 7919 + fold * 101 + n * 13 + d)
            train = _with_site(rng.sample(split.train, n), split.train, rng)
            val = _with_site(rng.sample(split.val, m), split.val, rng)
            out.append(EfficiencyDraw(n, d, False, train, val))
    out.append(EfficiencyDraw(n_train, 0, True, list(split.train), list(split.val)))
    return out


def efficiency_rows(results: list[dict], folds: list[tuple[np.ndarray, np.ndarray]], n_boot: int = 1000,
                    seed: int = 0, units: list[np.ndarray] | None = None) -> list[dict]:
    """results: dicts features, label ("1", "2", ..., "all"), n, n_val, draw, fold, auprc, base_rate, scores.
    One row per (features, label): ``fallback_runs`` (selected heads: how many of the fold x draw runs
    fell back to the top-ranked heads because no head passed the selection); ``n_train_val`` = training +
    validation proteins the point used (the
    validation proteins stop training early and set the threshold); mean over draws of the mean over folds,
    the bootstrap interval over
    the test proteins of those folds (``units``: per fold the unit of every residue, resampled together, as
    :attr:`Collected.units`; None: proteins), and the sd over draws (training-set variability)."""
    rows = []
    for name in dict.fromkeys(r["features"] for r in results):
        labels = sorted({r["label"] for r in results if r["features"] == name},
                        key=lambda x: (x == "all", int(x) if x != "all" else 0))
        for label in labels:
            sub = [r for r in results if r["features"] == name and r["label"] == label]
            fold_ids = sorted({r["fold"] for r in sub})
            draws = sorted({r["draw"] for r in sub})
            fb = FoldBootstrap([(folds[f][0], folds[f][1] if units is None else units[f]) for f in fold_ids],
                               n_boot=n_boot, seed=seed)
            score_sets = []
            for d in draws:
                per_fold = {r["fold"]: r["scores"] for r in sub if r["draw"] == d}
                if len(per_fold) == len(fold_ids):
                    score_sets.append([per_fold[f] for f in fold_ids])
            iv = fb.interval(score_sets, "auprc")
            per_draw = [_mean([r["auprc"] for r in sub if r["draw"] == d]) for d in draws]
            rows.append({"features": name, "label": label, "n_train": _mean([r["n"] for r in sub]),
                         "n_val": _mean([r["n_val"] for r in sub]),
                         "n_train_val": _mean([r["n"] + r["n_val"] for r in sub]), "draws": len(draws),
                         "fallback_runs": (f"{sum(1 for r in sub if r.get('fallback'))}/{len(sub)}"
                                           if name == "selected heads" else ""),
                         "auprc": _mean(per_draw), "auprc_lo": iv.lo, "auprc_hi": iv.hi, "auprc_sd": _sd(per_draw),
                         "folds": len(fold_ids), "test_proteins": sum(len(np.unique(folds[f][1])) for f in fold_ids),
                         "base_rate": _mean([r["base_rate"] for r in sub])})
    return rows


# -- tables ---------------------------------------------------------------------------------------------

def fmt(v) -> str:
    """A Markdown cell (report.md, for reading: 4 decimals, a small value such as a p-value with 3 significant
    digits, never rounded to 0); the CSV tables use the table writer's policy (tables.format_cell)."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return ""
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4f}" if abs(v - round(v)) > 1e-9 or abs(v) < 1 else f"{v:g}"
    return "" if v is None else str(v)


def to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """CSV text through the package's table writer and its one formatting policy (raw values; a missing
    key is an empty cell)."""
    from .tables import csv_text

    return csv_text(columns, rows)


def to_markdown(rows: Sequence[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines) + "\n"
