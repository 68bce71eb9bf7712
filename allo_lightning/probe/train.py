"""Training one probe: residue tables, the Trainer (fit, then predict), the decision threshold, the
calibration, the metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from ..attention.stats import ProteinStats
from ..data.protein import Protein
from ..errors import InputError
from ..messages import quiet_lightning
from .calibration import Calibration
from .features import FeatureSpec
from .metrics import best_f1_threshold, compute_metrics
from .module import KeepBest, ProbeModule, build_net

Item = tuple[Protein, ProteinStats | None]

# Trainer arguments of the config that the probe's Trainer takes over (the rest concern extraction).
_PROBE_TRAINER_KEYS = ("accelerator", "deterministic", "default_root_dir", "max_epochs", "min_epochs",
                       "gradient_clip_val", "limit_train_batches", "check_val_every_n_epoch")


@dataclass
class ResidueSet:
    """All residues of a protein set: features x [N, F], labels y [N], protein number index [N]."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    proteins: list[Protein]

    @classmethod
    def build(cls, spec: FeatureSpec, items: Sequence[Item], labelled: bool = True) -> "ResidueSet":
        xs, ys, idx = [], [], []
        for i, (p, s) in enumerate(items):
            x = spec(p, s)
            xs.append(x)
            ys.append(torch.as_tensor(p.labels()) if labelled else torch.zeros(p.length, dtype=torch.long))
            idx.append(torch.full((p.length,), i, dtype=torch.long))
        return cls(torch.cat(xs), torch.cat(ys).long(), torch.cat(idx), [p for p, _ in items])

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """Batches cut by indexing the tensors once per batch (not once per residue)."""
        if shuffle:
            order = RandomSampler(range(len(self.y)), generator=torch.Generator().manual_seed(seed))
        else:
            order = SequentialSampler(range(len(self.y)))
        return DataLoader(_Batches(self.x, self.y, self.index), sampler=BatchSampler(order, batch_size, False),
                          batch_size=None)

    def rows(self, scores: torch.Tensor, probabilities: torch.Tensor | None = None) -> tuple[list[str], list[list]]:
        """Header and rows ``id, position (1-based), residue, label, score[, probability]`` of every residue,
        in order, as raw values: the table writer's 9 significant digits give the float32 scores exactly, so
        metrics recomputed from the table equal the ones computed here."""
        header = ["id", "position", "residue", "label", "score"]
        if probabilities is not None:
            header.append("probability")
        index, labels, s = self.index.tolist(), self.y.tolist(), scores.tolist()
        prob = probabilities.tolist() if probabilities is not None else None
        rows, pos, last = [], 0, -1
        for j, (i, y, v) in enumerate(zip(index, labels, s)):
            pos = pos + 1 if i == last else 1
            last = i
            p = self.proteins[i]
            row = [p.id, pos, p.sequence[pos - 1], int(y), v]
            if prob is not None:
                row.append(prob[j])
            rows.append(row)
        return header, rows

    @property
    def base_rate(self) -> float:
        return float(self.y.float().mean()) if len(self.y) else float("nan")


class _Batches(Dataset):
    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, idx):
        idx = torch.as_tensor(idx, dtype=torch.long)
        return tuple(t.index_select(0, idx) for t in self.tensors)  # much faster than t[idx] on CPU


@dataclass
class ProbeRun:
    """A trained probe and its evaluation. ``val``/``test``: metrics (NaN = undefined) of the scores that
    ``trainer.predict`` gave the validation and test residues (``val_scores``, ``test_scores``; test
    ones are None without a test set); ``threshold`` (on the score) has the best validation F1;
    ``calibration`` maps scores to probabilities (fitted on the validation scores; None if disabled)."""

    module: ProbeModule
    spec: FeatureSpec
    threshold: float
    val: dict[str, float]
    test: dict[str, float]
    test_set: ResidueSet | None
    test_scores: torch.Tensor | None
    epochs: int
    best_epoch: int
    seconds: float
    pos_weight: float
    val_set: ResidueSet | None = None
    val_scores: torch.Tensor | None = None
    calibration: Calibration | None = None
    info: dict = field(default_factory=dict)

    @property
    def test_probabilities(self) -> torch.Tensor | None:
        if self.test_scores is None or self.calibration is None:
            return None
        return self.calibration(self.test_scores)


def items_of(proteins: Sequence[Protein], stats: Mapping[str, ProteinStats]) -> list[tuple[Protein, ProteinStats]]:
    return [(p, stats[p.id]) for p in proteins]


def probe_trainer(trainer_kwargs: dict | None, max_epochs: int, callbacks: list) -> L.Trainer:
    """The probe's Trainer (quiet: see :func:`allo_lightning.messages.quiet_lightning`)."""
    quiet_lightning()
    kw = {k: v for k, v in (trainer_kwargs or {}).items() if k in _PROBE_TRAINER_KEYS and v is not None}
    kw.setdefault("max_epochs", max_epochs)
    log_dir = (trainer_kwargs or {}).get("log_dir")  # per-epoch train/loss and val/auprc as log_dir/metrics.csv
    if log_dir:  # a new log replaces the last one (no warning about a non-empty folder)
        for name in ("metrics.csv", "hparams.yaml"):
            Path(log_dir, name).unlink(missing_ok=True)
    logger = CSVLogger(log_dir, name="", version="") if log_dir else False
    return L.Trainer(**kw, devices=1, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks)


def predict_scores(trainer: L.Trainer, module: ProbeModule, data: ResidueSet, batch_size: int = 65536) -> torch.Tensor:
    """Scores [N] of every residue of ``data``, in order, from ``trainer.predict``."""
    batches = trainer.predict(module, data.loader(batch_size), return_predictions=True)
    return torch.cat([b.detach().float().cpu() for b in batches]) if batches else torch.zeros(0)


def evaluate_scores(scores: torch.Tensor, data: ResidueSet, threshold: float, top_k: int) -> dict[str, float]:
    """The metrics of one set's scores (NaN where undefined) and its base rate."""
    return {**compute_metrics(scores, data.y, data.index, threshold, top_k), "base_rate": data.base_rate}


def train_probe(spec: FeatureSpec, train: Sequence[Item], val: Sequence[Item], test: Sequence[Item] | None,
                cfg, seed: int = 0, trainer_kwargs: dict | None = None, max_epochs: int | None = None) -> ProbeRun:
    """Standardise on ``train``, fit with early stopping on validation AUPRC (best epoch kept), then
    score validation and test once with ``trainer.predict``: the threshold (best validation F1) and
    the calibration come from those validation scores, the metrics of both sets from
    :func:`evaluate_scores`. ``cfg``: ProbeConfig. ``test`` may be empty (no test set)."""
    t0 = time.perf_counter()
    L.seed_everything(seed, verbose=False)
    spec.fit(train)
    train_set, val_set = ResidueSet.build(spec, train), ResidueSet.build(spec, val)
    if not int(val_set.y.sum()):
        raise InputError(f"the validation proteins ({', '.join(p.id for p in val_set.proteins[:5])}) have no "
                         "allosteric site: early stopping, the threshold and the calibration need one. Add "
                         "labelled proteins or change --seed.")
    n_pos = int(train_set.y.sum())
    n_neg = len(train_set.y) - n_pos
    pos_weight = cfg.pos_weight if cfg.pos_weight is not None else n_neg / max(n_pos, 1)
    net = build_net(cfg.kind, spec.n_features, cfg.hidden, cfg.dropout)
    module = ProbeModule(net, pos_weight=pos_weight, lr=cfg.lr, weight_decay=cfg.weight_decay, top_k=cfg.top_k)
    keep = KeepBest("val/auprc")
    stop = EarlyStopping("val/auprc", mode="max", patience=cfg.patience, check_finite=False)
    epochs = max_epochs if max_epochs is not None else cfg.max_epochs
    trainer = probe_trainer(trainer_kwargs, epochs, [keep, stop])
    trainer.fit(module, train_set.loader(cfg.batch_size, shuffle=True, seed=seed), val_set.loader(65536))
    val_scores = predict_scores(trainer, module, val_set)
    threshold = best_f1_threshold(val_scores, val_set.y)
    calibration = Calibration.fit(val_scores, val_set.y, getattr(cfg, "calibration", "platt"))
    val_metrics = evaluate_scores(val_scores, val_set, threshold, cfg.top_k)
    test_metrics: dict[str, float] = {}
    test_set = test_scores = None
    if test:
        test_set = ResidueSet.build(spec, test)
        test_scores = predict_scores(trainer, module, test_set)
        test_metrics = evaluate_scores(test_scores, test_set, threshold, cfg.top_k)
    module.cpu()
    return ProbeRun(module, spec, threshold, val_metrics, test_metrics, test_set, test_scores,
                    trainer.current_epoch, keep.best_epoch, time.perf_counter() - t0, float(pos_weight),
                    val_set, val_scores, calibration)
