"""One honest fit on one split: heads selected on the training proteins only (analysis), then the
probe on those heads (probe). This is where the two meet; probe/ itself only knows feature specs and
head lists, never how heads are chosen."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .attention.stats import ProteinStats
from .data.protein import Protein
from .probe import FeatureSpec, ProbeRun, Split, head_spec, items_of, train_probe

Analyse = Callable[..., Any]
log = logging.getLogger(__name__)


def _analyse() -> Analyse:
    from .analysis import analyse_heads  # the analysis package loads on first use

    return analyse_heads


@dataclass
class HeadChoice:
    heads: list[tuple[int, int]]
    analysis: Any
    fallback: str | None  # why the best-ranked heads were used (no head passed the selection), or None


def select_heads(items: Sequence[tuple[Protein, ProteinStats]], heads_cfg, seed: int,
                 analyse: Analyse | None = None) -> HeadChoice:
    """Head analysis on ``items`` (the TRAINING proteins only) and its selected heads. When no head
    passes the selection, the ``top_k`` best-ranked heads are used (``fallback`` says so)."""
    analyse = analyse or _analyse()
    analysis = analyse(list(items), [p for p, _ in items], heads_cfg, seed)
    heads = [(int(ly), int(h)) for ly, h in analysis.selected]
    fallback = getattr(analysis, "fallback", None)
    if not heads:
        heads = [(int(ly), int(h)) for ly, h in list(analysis.ranking)[: max(1, heads_cfg.top_k)]]
        fallback = fallback or f"no head selected; using the top {len(heads)} ranked heads"
    return HeadChoice(heads, analysis, fallback)


def ranking_of(analysis: Any) -> list[tuple[int, int]]:
    return [(int(ly), int(h)) for ly, h in analysis.ranking]


@dataclass
class FitResult:
    split: Split
    choice: HeadChoice
    run: ProbeRun


def fit_split(split: Split, stats: Mapping[str, ProteinStats], probe_cfg, heads_cfg, seed: int = 0,
              trainer_kwargs: dict | None = None, analyse: Analyse | None = None,
              max_epochs: int | None = None, spec: FeatureSpec | None = None) -> FitResult:
    """Select heads on ``split.train`` (unless ``spec`` is given), train on train, stop early and pick
    the threshold on val, test on test. A collapsed calibration (one probability for every residue:
    the scores do not rank the validation sites) is logged as a warning."""
    train = items_of(split.train, stats)
    if spec is None:
        choice = select_heads(train, heads_cfg, seed, analyse)
        spec = head_spec(choice.heads, probe_cfg)
    else:
        choice = HeadChoice(list(spec.heads), None, None)
    run = train_probe(spec, train, items_of(split.val, stats), items_of(split.test, stats), probe_cfg, seed,
                      trainer_kwargs, max_epochs)
    if run.calibration is not None and run.calibration.warning:
        log.warning(run.calibration.collapsed)
    return FitResult(split, choice, run)
