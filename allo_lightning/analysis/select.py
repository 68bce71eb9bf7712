"""Head selection: rank heads by the chosen pooled score, apply a selection strategy, keep provenance.

Ranking: testable heads (at least ``Selection.min_confident`` pooled confident pairs) first, by
pooled score (ties by SNR, then layer and head); the heads that are not testable after them.

Strategies (``Selection.strategy``), all on the statistic ``Selection.score`` (p_alpha or mass),
among the testable heads only:

- ``top_k``: the ``top_k`` best heads by pooled score;
- ``significance``: BH q-value < ``q_max`` and SNR > ``snr_min``;
- ``original``: the rule of the seed scripts (a third-party reproduction of Allo-Allo, not the
  paper's code), p-value < ``p_max`` and SNR > ``snr_min``; the seed itself took its p from a
  t-test of a head's impact against all heads' impacts, here the head's own permutation p is used;
- ``consistency``: significant on its own (p < ``p_max`` and SNR > ``snr_min``) in at least
  ``min_fraction`` of the proteins.

With ``exclude_orthosteric``, heads resolved as more enriched on the orthosteric residues than on the
sites are dropped: on the proteins with both labels, ``specificity < 0`` and its sign-flip q-value <
``q_max`` (an unresolved contrast, e.g. with 2 such proteins, drops nothing). Then at most
``max_selected`` heads are kept (the best by q-value, then score), listed in rank order.

A rule that selects no head falls back to the ``top_k`` best-ranked heads (a probe needs heads; testable
ones first); ``HeadAnalysis.fallback`` says why, and it is written to heads.json and printed.

The settings come as a :class:`Selection` (plain values, this package's own): the CLI layer builds it from
its validated ``HeadsConfig`` (``Selection.of(cfg.heads)``); nothing here imports the CLI's config or
validates it again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from ..attention.run import Extraction
from ..attention.stats import ProteinStats
from ..data.protein import Protein
from ..errors import AlloError, InputError
from .scores import HeadScores, as_labels, score_heads, usable

STRATEGIES = ("top_k", "significance", "original", "consistency")


@dataclass(frozen=True)
class Selection:
    """The settings of head scoring and selection, as plain values (their meaning and checks: the CLI's
    ``HeadsConfig``, which validates them once). ``proteins`` is only recorded in heads.json."""

    score: str
    strategy: str
    top_k: int
    q_max: float
    p_max: float
    snr_min: float
    min_fraction: float
    n_permutations: int
    max_permutations: int
    min_confident: int
    null: str
    max_selected: int
    exclude_orthosteric: bool
    proteins: list[str] | None = None
    orthosteric: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Any) -> Selection:
        """``settings`` itself when a Selection, else a Selection of its attributes of the same names
        (e.g. the CLI's validated ``HeadsConfig``)."""
        if isinstance(settings, cls):
            return settings
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass
class HeadAnalysis:
    """Scores of every head, the ranking and the selected heads (0-based (layer, head) pairs)."""

    scores: HeadScores
    ranking: list[tuple[int, int]]
    selected: list[tuple[int, int]]
    score: str
    strategy: str
    fallback: str | None
    protein_ids: list[str]
    excluded: dict[str, str]
    n_layers: int
    n_heads: int
    settings: dict
    seed: int = 0
    theta: float | None = None
    backbone_identity: str | None = None
    extra: dict = field(default_factory=dict)

    def get(self, name: str) -> torch.Tensor:
        """A score by full name (``p_alpha_qvalue``) or by suffix for the chosen statistic
        (``qvalue``, ``snr``, ``pvalue``, ``impact``... -> ``{score}_{name}``)."""
        if not name:
            return self.scores[self.score]
        if name in self.scores:
            return self.scores[name]
        return self.scores[f"{self.score}_{name}"]

    @property
    def testable(self) -> list[tuple[int, int]]:
        """The testable heads (enough confident pairs to be tested), in rank order: draw random
        baseline heads from these."""
        t = _testable(self.scores)
        return [lh for lh in self.ranking if bool(t[lh])]

    def rank_of(self) -> dict[tuple[int, int], int]:
        return {h: i + 1 for i, h in enumerate(self.ranking)}

    def rows(self) -> list[dict]:
        """One row per head for heads.csv, in rank order: layer, head (0-based), rank, selected, fallback
        (true when the head is selected only because the rule selected none: the top-ranked heads), then
        every column of :meth:`HeadScores.columns` (see allo_lightning.analysis.scores)."""
        chosen = set(self.selected)
        columns = self.scores.columns()
        rows = []
        for rank, (ly, h) in enumerate(self.ranking, start=1):
            row: dict = {"layer": ly, "head": h, "rank": rank, "selected": (ly, h) in chosen,
                         # selected only because no head passed the rule (top-ranked fallback): unconfirmed
                         "fallback": (ly, h) in chosen and bool(self.fallback)}
            for name, t in columns.items():
                if t.dtype == torch.bool:
                    row[name] = bool(t[ly, h])
                elif name.endswith(_INTEGER_COLUMNS):
                    row[name] = int(t[ly, h])
                else:
                    row[name] = float(t[ly, h])
            rows.append(row)
        return rows

    def provenance(self) -> dict:
        """Everything heads.json records: the selection and how it was made."""
        return {
            "selected": [[ly, h] for ly, h in self.selected],
            "selected_labels": [head_label(ly, h) for ly, h in self.selected],
            "indexing": "layer and head are 0-based",
            "score": self.score,
            "strategy": self.strategy,
            "fallback": self.fallback,
            "selected_by": "fallback: the top-ranked heads (no head passed the rule)" if self.fallback
            else f"strategy {self.strategy}",
            "multiplicity": ("none: p < p_max per head, uncorrected over the heads tested"
                             if self.strategy == "original" else None),
            "null": self.scores.null,
            "null_description": NULL_DESCRIPTIONS[self.scores.null],
            "pvalues": PVALUE_DESCRIPTION,
            "min_confident": self.scores.min_confident,
            "n_testable": len(self.testable),
            "n_permutations": self.scores.n_permutations,
            "resolution": _json_safe(self.scores.resolution()),
            "orthosteric_proteins": self.scores.n_orthosteric_proteins,
            "settings": self.settings,
            "backbone_identity": self.backbone_identity,
            "theta": self.theta,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "seed": self.seed,
            "proteins": list(self.protein_ids),
            "excluded_proteins": dict(self.excluded),
            "top": [
                {"layer": ly, "head": h, self.score: _num(self.get("")[ly, h]),
                 "snr": _num(self.get("snr")[ly, h]), "pvalue": _num(self.get("pvalue")[ly, h]),
                 "qvalue": _num(self.get("qvalue")[ly, h]), "testable": bool(_testable(self.scores)[ly, h])}
                for ly, h in self.ranking[: max(10, len(self.selected))]
            ],
            **self.extra,
        }

    def summary(self, n: int = 10) -> str:
        """A few lines for the terminal: the top heads with their scores."""
        s = self.score
        lines = [(f"head scores over {len(self.protein_ids)} proteins ({self.n_layers} layers x {self.n_heads} heads; "
                  f"score {s}, strategy {self.strategy}, null {self.scores.null}): {len(self.selected)} selected; "
                  f"{len(self.testable)} heads testable (>= {self.scores.min_confident} confident pairs)")]
        lines.append(self.scores.resolution_line())
        if self.fallback:
            lines.append(f"FALLBACK: {self.fallback}")
        if self.strategy == "original":
            lines.append("note: strategy 'original' selects on uncorrected per-head p-values (no multiplicity "
                         "correction over the heads tested)")
        lines.append(f"  {'rank':>4} {'layer':>5} {'head':>4} {s:>9} {'random':>9} {'impact':>7} {'SNR':>7} "
                     f"{'p':>9} {'q':>9} {'prot.sig':>8} sel")
        chosen = set(self.selected)
        for rank, (ly, h) in enumerate(self.ranking[:n], start=1):
            def g(k: str, ly: int = ly, h: int = h) -> float:
                return float(self.get(k)[ly, h])

            lines.append(
                f"  {rank:>4} {ly:>5} {h:>4} {g(''):>9.4f} {g('null_mean'):>9.4f} {g('impact'):>7.2f} "
                f"{g('snr'):>7.2f} {g('pvalue'):>9.2e} {g('qvalue'):>9.2e} "
                f"{int(g('n_significant')):>4}/{int(g('n_proteins')):<3} {'*' if (ly, h) in chosen else ''}"
            )
        return "\n".join(lines)


_INTEGER_COLUMNS = ("n_significant", "n_proteins", "pvalue_draws", "confident")

NULL_DESCRIPTIONS = {
    "shift": ("circular shift (default): per protein, the site pattern shifted along the sequence by a uniform "
              "random shift; keeps the contiguity of the sites; assumes attention is (circularly) stationary "
              "along the chain, not that residues are independent"),
    "permutation": ("label permutation: per protein, the same number of sites drawn uniformly from all its residues; "
                    "assumes independent (exchangeable) residues: anti-conservative when attention is smooth "
                    "along the chain and sites are contiguous"),
    "composition": ("composition: each site replaced by a random residue of the same amino-acid type; assumes "
                    "residues of one type are independent (exchangeable): anti-conservative like permutation"),
}
PVALUE_DESCRIPTION = ("one-sided; exact where cheap (pvalue_draws = 0), else Monte-Carlo p = (b + 1) / (draws + 1) "
                      "with more draws for unresolved heads; pvalue_at_floor: no draw reached the observed value, "
                      "p is the floor 1/(draws + 1), an upper bound; never a normal tail")


def _testable(scores) -> torch.Tensor:
    """Bool [n_layers, n_heads]: ``scores["testable"]`` (all True for plain dicts without it)."""
    if "testable" in scores:
        return scores["testable"].bool()
    first = scores[next(iter(scores.keys()))]
    return torch.ones(first.shape, dtype=torch.bool)


def head_label(layer: int, head: int) -> str:
    """'L3H7' style label, 0-based."""
    return f"L{layer}H{head}"


def _json_safe(d):
    """Floats in (nested) dicts made JSON-safe with :func:`_num`."""
    if isinstance(d, dict):
        return {k: _json_safe(v) for k, v in d.items()}
    return _num(d) if isinstance(d, float) else d


def _num(x) -> float | str | None:
    """A JSON-safe number: NaN -> None, +-inf -> "inf"/"-inf"."""
    v = float(x)
    if math.isnan(v):
        return None
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def rank_heads(scores, score: str) -> list[tuple[int, int]]:
    """All heads, best first: testable heads before the others; then by pooled ``score``, ties by its
    SNR, then by (layer, head)."""
    value, snr, testable = scores[score], scores[f"{score}_snr"], _testable(scores)
    n_layers, n_heads = value.shape
    heads = [(ly, h) for ly in range(n_layers) for h in range(n_heads)]
    return sorted(heads, key=lambda lh: (not bool(testable[lh]), -_key(value[lh]), -_key(snr[lh]), lh))


def _key(x) -> float:
    v = float(x)
    return -math.inf if math.isnan(v) else v


def _key_up(x) -> float:
    v = float(x)
    return math.inf if math.isnan(v) else v


def select_heads(scores, cfg: Selection | Any,
                 ranking: list[tuple[int, int]] | None = None) -> tuple[list[tuple[int, int]], str | None]:
    """Apply ``cfg.strategy`` (testable heads only), ``exclude_orthosteric`` and ``max_selected``;
    returns (selected heads in rank order, fallback message or None). ``cfg``: see :meth:`Selection.of`."""
    cfg = Selection.of(cfg)
    s = cfg.score
    ranking = ranking if ranking is not None else rank_heads(scores, s)
    testable = _testable(scores)
    keep = testable.clone()
    dropped = ""
    if cfg.exclude_orthosteric and f"{s}_specificity" in scores:
        ortho_like = orthosteric_like(scores, s, cfg.q_max)
        dropped = f"; {int((ortho_like & testable).sum())} testable heads dropped as orthosteric-like"
        keep &= ~ortho_like
    candidates = [lh for lh in ranking if bool(keep[lh])]
    if cfg.top_k < 1 or cfg.max_selected < 1:  # HeadsConfig refuses these; a Selection built by hand is not checked
        raise AlloError(f"top_k {cfg.top_k} and max_selected {cfg.max_selected} must both be >= 1")
    n_top = min(cfg.top_k, cfg.max_selected)
    if cfg.strategy == "top_k":
        if candidates:
            return candidates[:n_top], None
        return ranking[:n_top], (f"no testable head (fewer than {cfg.min_confident} confident pairs in every "
                                 f"head{dropped}); fell back to the top {n_top} heads by {s}. Treat them as "
                                 "unconfirmed.")
    snr = scores[f"{s}_snr"]
    if cfg.strategy == "significance":
        mask = (scores[f"{s}_qvalue"] < cfg.q_max) & (snr > cfg.snr_min)
        rule = f"q < {cfg.q_max} and SNR > {cfg.snr_min}"
    elif cfg.strategy == "original":
        mask = (scores[f"{s}_pvalue"] < cfg.p_max) & (snr > cfg.snr_min)
        rule = f"p < {cfg.p_max} and SNR > {cfg.snr_min}"
    elif cfg.strategy == "consistency":
        n = scores["n_proteins"]
        frac = torch.where(n > 0, scores[f"{s}_n_significant"] / n.clamp_min(1), torch.zeros_like(n))
        mask = frac >= cfg.min_fraction
        mask &= n > 0
        rule = (f"significant (p < {cfg.p_max} and SNR > {cfg.snr_min}) in at least {cfg.min_fraction:.0%} "
                "of the proteins")
    else:  # HeadsConfig refuses other values; a Selection built by hand is not checked again
        raise AlloError(f"unknown strategy {cfg.strategy!r}; one of {', '.join(STRATEGIES)}")
    selected = [lh for lh in candidates if bool(mask[lh])]
    if len(selected) > cfg.max_selected:
        q, value = scores[f"{s}_qvalue"], scores[s]
        best = sorted(selected, key=lambda lh: (_key_up(q[lh]), -_key(value[lh]), lh))[: cfg.max_selected]
        chosen = set(best)
        selected = [lh for lh in selected if lh in chosen]
    if selected:
        return selected, None
    top = (candidates or ranking)[:n_top]
    n_testable = int(testable.sum())
    msg = (f"strategy {cfg.strategy!r} selected no head ({rule}; {n_testable} of {testable.numel()} heads testable"
           f"{dropped}); fell back to the top {len(top)} heads by {s}. Treat them as unconfirmed.")
    return top, msg


def orthosteric_like(scores, s: str, q_max: float) -> torch.Tensor:
    """Bool [n_layers, n_heads]: heads whose orthosteric contrast is resolved in the orthosteric
    direction (specificity < 0 and its q-value < ``q_max``); NaN (no contrast, untested) is False."""
    spec, q = scores[f"{s}_specificity"], scores[f"{s}_specificity_qvalue"]
    return (spec < 0) & (q < q_max)


def _pairs(source, proteins: Sequence[Protein] | None) -> tuple[list[tuple[Protein | None, ProteinStats]], dict]:
    """Normalise the accepted inputs to (protein, stats) pairs, restricted to ``proteins``."""
    info: dict = {}
    if isinstance(source, Extraction):
        info = {"theta": source.theta, "backbone_identity": source.backbone_identity}
        if proteins is None:
            return list(source), info
        by_id = {p.id: p for p in source.proteins}
        missing = [p.id for p in proteins if p.id not in by_id]
        if missing:
            raise AlloError(f"proteins {missing[:5]} are not in the extraction; extract them first.")
        return [(p, source.stats(p)) for p in proteins], info
    items = list(source)
    if items and isinstance(items[0][0], Protein):
        pairs = [(p, s) for p, s in items]
        if proteins is not None:
            keep = {p.id for p in proteins}
            pairs = [(p, s) for p, s in pairs if p.id in keep]
        return pairs, info
    # (ProteinStats, labels) pairs, parallel to ``proteins`` when given
    if proteins is not None and len(proteins) != len(items):
        raise AlloError(f"{len(items)} (stats, labels) items but {len(proteins)} proteins; give one per item")
    return [(proteins[i] if proteins is not None else None, (s, y)) for i, (s, y) in enumerate(items)], info


def analyse_heads(
    extraction_or_items: Extraction | Iterable,
    proteins: Sequence[Protein] | None,
    cfg: Selection | Any,
    seed: int = 0,
    theta: float | None = None,
    backbone_identity: str | None = None,
) -> HeadAnalysis:
    """Score and select heads from the given proteins only (e.g. the training split).

    ``extraction_or_items``: an :class:`Extraction` (then ``proteins`` picks the subset; None = all),
    an iterable of ``(Protein, ProteinStats)`` pairs (what iterating an Extraction yields), or of
    ``(ProteinStats, labels)`` pairs (then ``proteins``, if given, is parallel to it, for the ids).
    Proteins without labels, without sites or with more sites than non-sites are left out and listed
    in ``HeadAnalysis.excluded``. Orthosteric residues come from ``Protein.orthosteric_sites`` (else
    ``cfg.orthosteric[id]``); ``cfg.null == "composition"`` needs the proteins (their sequences).
    ``cfg``: a :class:`Selection` (or settings with its fields, see :meth:`Selection.of`).
    """
    cfg = Selection.of(cfg)
    pairs, info = _pairs(extraction_or_items, proteins)
    items, ids, excluded, sequences, ortho = [], [], {}, [], []
    for i, (p, s) in enumerate(pairs):
        if isinstance(s, tuple):
            stats, labels = s
            pid = p.id if p is not None else f"#{i}"
        else:
            stats, pid = s, p.id
            if p.sites is None:
                excluded[pid] = "no site labels"
                continue
            labels = p.labels()
        if not usable(labels):
            k = int(sum(int(v) for v in labels))
            excluded[pid] = "no sites" if k == 0 else f"{k} sites, more than its non-site residues"
            continue
        items.append((stats, labels))
        ids.append(pid)
        sequences.append(p.sequence if p is not None else None)
        ortho.append(_orthosteric_labels(p, cfg, stats.length))
    if not items:
        raise InputError("no protein with site labels to analyse heads on: give proteins with a 'sites' (or "
                         f"'labels') column. Left out: {excluded or 'none given'}.")
    if cfg.null == "composition" and any(q is None for q in sequences):
        raise AlloError("analyse_heads: the composition null needs the protein sequences: pass the proteins (or "
                        "an extraction), not (stats, labels) pairs alone.")
    n_layers, n_heads = items[0][0].shape
    scores = score_heads(items, n_layers, n_heads, n_permutations=cfg.n_permutations, seed=seed,
                         p_max=cfg.p_max, snr_min=cfg.snr_min, null=cfg.null, min_confident=cfg.min_confident,
                         max_permutations=cfg.max_permutations, q_max=cfg.q_max, sequences=sequences,
                         orthosteric=ortho)
    ranking = rank_heads(scores, cfg.score)
    selected, fallback = select_heads(scores, cfg, ranking)
    return HeadAnalysis(
        scores=scores, ranking=ranking, selected=selected, score=cfg.score, strategy=cfg.strategy,
        fallback=fallback, protein_ids=ids, excluded=excluded, n_layers=n_layers, n_heads=n_heads,
        settings={k: v for k, v in asdict(cfg).items() if k != "orthosteric"},
        seed=seed, theta=theta if theta is not None else info.get("theta"),
        backbone_identity=backbone_identity or info.get("backbone_identity"),
    )


def _orthosteric_labels(protein: Protein | None, cfg: Selection, length: int):
    """0/1 orthosteric labels of ``protein`` (None when it has none)."""
    if protein is None:
        return None
    positions = protein.orthosteric_sites or tuple(cfg.orthosteric.get(protein.id, ()))
    if not positions:
        return None
    bad = [q for q in positions if not 1 <= int(q) <= length]
    if bad:
        raise InputError(f"protein {protein.id!r}: orthosteric positions {bad[:5]} are outside 1..{length}.",
                         pid=protein.id)
    y = torch.zeros(length, dtype=torch.bool)
    y[torch.as_tensor([int(q) - 1 for q in positions])] = True
    return as_labels(y)
