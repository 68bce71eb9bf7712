"""Per-residue features for the probe, standardised with statistics of the training proteins only.

Three kinds share one code path (so the report compares like with like):
- ``heads``: for each selected head (layer, head), the statistics named in ``stats`` (received,
  count, mass: how much (confident) attention the residue receives, see attention.stats);
- ``embedding``: the backbone's final-layer hidden states (the "embedding probe" baseline);
- ``identity``: a one-hot code of the residue letter (the no-PLM baseline).

Optionally ``log1p`` (the statistics are heavy-tailed counts) and a ``window`` of neighbouring
residues: the standardised features of residues i-w..i+w are concatenated (zeros beyond the ends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from ..attention.stats import STAT_NAMES, ProteinStats
from ..data.protein import ALPHABET, Protein
from ..errors import AlloError

KINDS = ("heads", "embedding", "identity")
LETTERS = "".join(sorted(ALPHABET))

Item = tuple[Protein, ProteinStats]


@dataclass
class FeatureSpec:
    """How a residue's feature vector is made; ``fit`` sets the standardisation statistics."""

    kind: str = "heads"
    heads: list[tuple[int, int]] = field(default_factory=list)
    stats: tuple[str, ...] = STAT_NAMES
    log1p: bool = True
    window: int = 0
    mean: torch.Tensor | None = None  # [F] (before the window)
    std: torch.Tensor | None = None  # [F]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AlloError(f"unknown feature kind {self.kind!r}; choose one of {', '.join(KINDS)}.")
        self.heads = [(int(ly), int(h)) for ly, h in self.heads]
        self.stats = tuple(self.stats)
        bad = [s for s in self.stats if s not in STAT_NAMES]
        if bad:
            raise AlloError(f"unknown statistic(s) {bad}; choose from {', '.join(STAT_NAMES)}.")
        if self.kind == "heads" and (not self.heads or not self.stats):
            raise AlloError("a head feature set needs at least one head and one statistic.")
        if self.window < 0:
            raise AlloError(f"window must be >= 0, got {self.window}.")

    # -- raw features ---------------------------------------------------------------------------
    def raw(self, protein: Protein, stats: ProteinStats | None) -> torch.Tensor:
        """Unstandardised features [L, F] of one protein."""
        if self.kind == "identity":
            codes = torch.tensor([LETTERS.index(c) for c in protein.sequence])
            return torch.nn.functional.one_hot(codes, len(LETTERS)).float()
        if stats is None:
            raise AlloError(f"protein {protein.id!r}: attention statistics are needed for {self.kind} features.")
        if self.kind == "embedding":
            if stats.embedding is None:
                raise AlloError(f"protein {protein.id!r}: no embedding in the statistics (extract with embeddings).")
            x = stats.embedding.float()
        else:
            ly = torch.tensor([h[0] for h in self.heads])
            hd = torch.tensor([h[1] for h in self.heads])
            # [K, S, L] -> [L, K * S]: head-major, then statistic
            cols = torch.stack([getattr(stats, s)[ly, hd].float() for s in self.stats], dim=1)
            x = cols.reshape(-1, cols.shape[-1]).T
            if self.log1p:
                x = torch.log1p(x.clamp_min(0))
        if x.shape[0] != protein.length:
            raise AlloError(f"protein {protein.id!r}: statistics cover {x.shape[0]} residues, sequence has "
                             f"{protein.length}.")
        return x.contiguous()

    @property
    def n_raw(self) -> int:
        if self.mean is None:
            raise AlloError("FeatureSpec.fit() first: the features are not standardised yet")
        return int(self.mean.numel())

    @property
    def n_features(self) -> int:
        return self.n_raw * (2 * self.window + 1)

    def names(self) -> list[str]:
        if self.kind == "heads":
            base = [f"L{ly}H{h}.{s}" for ly, h in self.heads for s in self.stats]
        elif self.kind == "identity":
            base = [f"is_{c}" for c in LETTERS]
        else:
            base = [f"emb{i}" for i in range(self.n_raw)]
        if not self.window:
            return base
        return [f"{n}@{o:+d}" for o in range(-self.window, self.window + 1) for n in base]

    # -- standardisation ------------------------------------------------------------------------
    def fit(self, items: Iterable[tuple[Protein, ProteinStats | None]]) -> "FeatureSpec":
        """Mean and sd of every raw feature over all residues of the (training) proteins."""
        total, total_sq, n = None, None, 0
        for protein, stats in items:
            x = self.raw(protein, stats).double()
            total = x.sum(0) if total is None else total + x.sum(0)
            total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
            n += x.shape[0]
        if not n:
            raise AlloError("no training residues to standardise the features with.")
        mean = total / n
        var = (total_sq / n - mean * mean).clamp_min(0)
        std = var.sqrt()
        std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant features stay 0
        self.mean, self.std = mean.float(), std.float()
        return self

    def __call__(self, protein: Protein, stats: ProteinStats | None) -> torch.Tensor:
        """Standardised (and windowed) features [L, n_features]."""
        if self.mean is None or self.std is None:
            raise AlloError("FeatureSpec.fit() on the training proteins first: the features are not standardised yet")
        x = (self.raw(protein, stats) - self.mean) / self.std
        return window_features(x, self.window)

    # -- (de)serialisation (checkpoints) -------------------------------------------------------------
    def settings(self) -> dict:
        return {"kind": self.kind, "heads": [list(h) for h in self.heads], "stats": list(self.stats),
                "log1p": self.log1p, "window": self.window}

    @classmethod
    def from_settings(cls, settings: dict, mean: torch.Tensor, std: torch.Tensor) -> "FeatureSpec":
        spec = cls(kind=settings["kind"], heads=[tuple(h) for h in settings["heads"]], stats=tuple(settings["stats"]),
                   log1p=bool(settings["log1p"]), window=int(settings["window"]))
        spec.mean, spec.std = mean.float(), std.float()
        return spec


def window_features(x_LF: torch.Tensor, window: int) -> torch.Tensor:
    """Concatenate the features of residues i-w..i+w (zero padded): [L, F] -> [L, F * (2w + 1)]."""
    if window <= 0:
        return x_LF
    L, F = x_LF.shape
    padded = torch.cat([x_LF.new_zeros(window, F), x_LF, x_LF.new_zeros(window, F)])
    return torch.cat([padded[o : o + L] for o in range(2 * window + 1)], dim=1)


def head_spec(heads: Sequence[tuple[int, int]], cfg) -> FeatureSpec:
    """A head feature set with the probe config's settings (``cfg``: ProbeConfig)."""
    return FeatureSpec("heads", list(heads), tuple(cfg.stats), cfg.log1p, cfg.window)
