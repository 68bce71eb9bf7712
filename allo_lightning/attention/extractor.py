"""The frozen backbone in a LightningModule: batched attention statistics under ``trainer.predict``."""

from __future__ import annotations

from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from .. import interrupt
from ..backbone import Backbone
from ..backbone.base import BOS_ID, EOS_ID
from .cache import StatsCache
from .stats import STAT_NAMES, ProteinStats, column_stats


class AttentionExtractor(L.LightningModule):
    """Runs the frozen backbone and returns, per protein, :class:`ProteinStats`.

    The backbone is injected (built by :func:`allo_lightning.backbone.load_backbone`); it is frozen
    (``requires_grad_(False)``, eval) and has no trainable parameters here.
    """

    def __init__(self, backbone: Backbone, theta: float = 0.3, map_heads: Sequence[tuple[int, int]] = (),
                 embeddings: bool = False, dtype: str = "fp32") -> None:
        super().__init__()
        self.backbone = backbone.freeze()
        self.theta = float(theta)
        self.map_heads = [tuple(map(int, h)) for h in map_heads]
        self.embeddings = embeddings
        self.dtype_choice = dtype
        for layer, head in self.map_heads:
            if not (0 <= layer < backbone.n_layers and 0 <= head < backbone.n_heads):
                raise ValueError(
                    f"head (layer {layer}, head {head}) does not exist in {backbone.name} "
                    f"({backbone.n_layers} layers x {backbone.n_heads} heads; both 0-based)."
                )

    def on_predict_start(self) -> None:
        if self.dtype_choice == "bf16":
            if self.device.type != "cuda":
                raise RuntimeError(f"--model.dtype bf16 is for CUDA only; this run is on {self.device.type}. "
                                   "Use --model.dtype fp32.")
            self.backbone.to(torch.bfloat16)

    def train(self, mode: bool = True):  # the backbone never leaves eval mode
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, tokens: torch.Tensor, real: torch.Tensor, lengths: Sequence[int]) -> list[ProteinStats]:
        Ly, H = self.backbone.n_layers, self.backbone.n_heads
        B, T = tokens.shape
        residue = real & (tokens != BOS_ID) & (tokens != EOS_ID)
        out = {k: torch.zeros(B, Ly, H, T, device=tokens.device) for k in STAT_NAMES}
        out["total"] = torch.zeros(B, Ly, H, device=tokens.device)
        maps: dict[tuple[int, int], torch.Tensor] = {}
        by_layer: dict[int, list[int]] = {}
        for layer, head in self.map_heads:
            by_layer.setdefault(layer, []).append(head)

        def on_layer(layer: int, probs_BHLL: torch.Tensor) -> None:
            for name, value in column_stats(probs_BHLL, residue, real, self.theta).items():
                out[name][:, layer] = value
            for head in by_layer.get(layer, ()):  # a copy: the buffer is reused by the next layer
                maps[(layer, head)] = probs_BHLL[:, head].to(torch.float32, copy=True)

        emb = self.backbone(tokens, real, on_layer, reuse_probs=True)
        results = []
        for b, n in enumerate(lengths):
            s = ProteinStats(**{k: out[k][b, :, :, 1 : n + 1].cpu() for k in STAT_NAMES}, total=out["total"][b].cpu())
            if self.map_heads:
                s.maps = torch.stack([maps[h][b, 1 : n + 1, 1 : n + 1] for h in self.map_heads]).cpu()
                s.map_heads = list(self.map_heads)
            if self.embeddings:
                s.embedding = emb[b, 1 : n + 1].float().cpu()
            results.append(s)
        return results

    def predict_step(self, batch: dict, batch_idx: int) -> list[tuple[str, str, ProteinStats]]:
        stats = self(batch["tokens"], batch["real"], [len(s) for s in batch["sequences"]])
        return list(zip(batch["ids"], batch["sequences"], stats))

    def configure_optimizers(self) -> Any:  # nothing to train
        return None


class CacheWriter(BasePredictionWriter):
    """Writes each protein's statistics to the cache as soon as its batch is done (so an interrupted
    run keeps its finished proteins), then stops the run if a signal arrived meanwhile (see
    :mod:`allo_lightning.interrupt`). Under DDP every rank writes the proteins it ran."""

    def __init__(self, cache: StatsCache) -> None:
        super().__init__(write_interval="batch")
        self.cache = cache
        self.written: list[str] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for pid, seq, stats in prediction:
            self.cache.save(seq, stats)
            self.written.append(pid)
        interrupt.check()  # a SIGTERM / Ctrl-C during this batch stops here, with the batch cached
