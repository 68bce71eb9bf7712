"""The probe: plain nn.Modules (logistic regression, small MLP) and the LightningModule that trains
them on precomputed residue features. The backbone is not part of it: nothing frozen can reach the
optimizer, which gets the probe's parameters only."""

from __future__ import annotations

import copy
import math
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from ..errors import AlloError
from .metrics import probe_metrics

PROBE_KINDS = ("logreg", "mlp")


class LogisticProbe(nn.Module):
    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        # Logistic regression is convex: start from zero (as scikit-learn does) rather than from random
        # weights, so that the first steps follow the data instead of undoing noise in the start point.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x_NF: torch.Tensor) -> torch.Tensor:
        return self.linear(x_NF).squeeze(-1)


class MLPProbe(nn.Module):
    def __init__(self, n_features: int, hidden: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x_NF: torch.Tensor) -> torch.Tensor:
        return self.layers(x_NF).squeeze(-1)


def build_net(kind: str, n_features: int, hidden: int = 32, dropout: float = 0.1) -> nn.Module:
    if kind == "logreg":
        return LogisticProbe(n_features)
    if kind == "mlp":
        return MLPProbe(n_features, hidden, dropout)
    raise AlloError(f"unknown probe kind {kind!r}; choose one of {', '.join(PROBE_KINDS)}.")


class ProbeModule(L.LightningModule):
    """Trains ``net`` (injected) on batches ``(x [N, F], y [N], protein index [N])`` with a
    class-weighted BCE loss. The validation loop (every epoch) feeds one MetricCollection of pooled
    metrics, kept on the CPU in a plain dict so that Lightning does not move it to the accelerator;
    ``val/auprc`` drives early stopping. Scores of a finished probe come from ``trainer.predict``
    (:meth:`predict_step`: sigmoid of the output, a ranking score, see probe.calibration), and their
    metrics from :func:`probe.metrics.compute_metrics`: one scoring path for validation and test."""

    def __init__(self, net: nn.Module, pos_weight: float = 1.0, lr: float = 0.01, weight_decay: float = 1e-4,
                 top_k: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self.val_metrics = {"val": probe_metrics(top_k, per_protein=False)}

    def forward(self, x_NF: torch.Tensor) -> torch.Tensor:
        return self.net(x_NF)

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        loss = nn.functional.binary_cross_entropy_with_logits(self(x), y.float(), pos_weight=self.pos_weight)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, idx = batch
        scores = torch.sigmoid(self(x)).detach().float().cpu()
        self.val_metrics["val"].update(scores, y.long().cpu(), indexes=idx.long().cpu())

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics["val"]
        with warnings.catch_warnings():  # one-class validation: handled below
            warnings.simplefilter("ignore")
            values = metrics.compute()
        metrics.reset()
        # An undefined validation metric (NaN) counts as 0 for early stopping and KeepBest: the first
        # epoch is kept and training stops after ``patience`` epochs. train_probe refuses a validation
        # set without a site, so this only guards API users.
        self.log_dict({f"val/{k}": (0.0 if math.isnan(float(v)) else float(v)) for k, v in values.items()},
                      batch_size=1)

    def predict_step(self, batch, batch_idx):
        """Ranking scores [N] of a batch (the first element: features)."""
        return torch.sigmoid(self(batch[0])).float()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class KeepBest(Callback):
    """Keeps the probe weights of the best validation epoch in memory and restores them after fit
    (early stopping alone would leave the last epoch's weights)."""

    def __init__(self, monitor: str = "val/auprc") -> None:
        self.monitor = monitor
        self.best = -math.inf
        self.best_epoch = -1
        self.state: dict | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best, self.best_epoch = float(value), trainer.current_epoch
            self.state = copy.deepcopy(pl_module.net.state_dict())

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.state is not None:
            pl_module.net.load_state_dict(self.state)
