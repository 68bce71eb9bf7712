"""Training one probe: residue tables, the Trainer (fit / validate / test), the decision threshold."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from ..attention.stats import ProteinStats
from ..data.protein import Protein
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
    info: dict = field(default_factory=dict)


def probe_trainer(trainer_kwargs: dict | None, max_epochs: int, callbacks: list) -> L.Trainer:
    kw = {k: v for k, v in (trainer_kwargs or {}).items() if k in _PROBE_TRAINER_KEYS and v is not None}
    kw.setdefault("max_epochs", max_epochs)
    return L.Trainer(**kw, devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks)


def train_probe(spec: FeatureSpec, train: Sequence[Item], val: Sequence[Item], test: Sequence[Item] | None,
                cfg, seed: int = 0, trainer_kwargs: dict | None = None, max_epochs: int | None = None) -> ProbeRun:
    """Standardise on ``train``, fit with early stopping on validation AUPRC (best epoch kept), choose
    the decision threshold with the best validation F1, test. ``cfg``: ProbeConfig."""
    t0 = time.perf_counter()
    L.seed_everything(seed, verbose=False)
    spec.fit(train)
    train_set, val_set = ResidueSet.build(spec, train), ResidueSet.build(spec, val)
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
    module.cpu()
    val_scores = module.score(val_set.x)
    module.threshold = best_f1_threshold(val_scores, val_set.y)
    val_metrics = compute_metrics(val_scores, val_set.y, val_set.index, module.threshold, cfg.top_k)
    test_metrics: dict[str, float] = {}
    test_set = test_scores = None
    if test:
        test_set = ResidueSet.build(spec, test)
        out = trainer.test(module, test_set.loader(65536), verbose=False)[0]
        test_metrics = {k.removeprefix("test/"): float(v) for k, v in out.items()}
        test_metrics["base_rate"] = test_set.base_rate
        module.cpu()
        test_scores = module.score(test_set.x)
    return ProbeRun(module, spec, module.threshold, val_metrics, test_metrics, test_set, test_scores,
                    trainer.current_epoch, keep.best_epoch, time.perf_counter() - t0, float(pos_weight))
