"""Steps shared by the commands: backbone + proteins from a config, extraction with the config's
settings, and a clear message (no traceback) for user errors."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Sequence

import lightning as L

from .attention import Extraction, extract, split_long
from .backbone import TINY_MEANINGLESS, Backbone, BackboneError, load_backbone
from .cli import Config
from .data import InputError, Protein, load_proteins


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn input/backbone errors into one readable line and exit code 2."""
    try:
        yield
    except (InputError, BackboneError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def load_inputs(cfg: Config) -> tuple[Backbone, list[Protein]]:
    L.seed_everything(cfg.seed, verbose=False)
    backbone = load_backbone(cfg.model.backbone, cfg.model.weights, cfg.model.seed)
    if backbone.meaningless:
        print(TINY_MEANINGLESS)
    proteins = load_proteins(cfg.data, max_length=backbone.max_length if cfg.data.long == "error" else None)
    return backbone, long_policy(cfg, backbone, proteins)


def long_policy(cfg: Config, backbone: Backbone, proteins: list[Protein]) -> list[Protein]:
    """``--data.long``: keep proteins longer than the context (windows), or skip them (listed)."""
    kept, skipped = split_long(proteins, backbone, cfg.data.long)
    if skipped:
        print(f"--data.long skip: left out {len(skipped)} protein(s) longer than {backbone.name}'s context of "
              f"{backbone.max_length} residues: " + ", ".join(f"{p.id} ({p.length})" for p in skipped))
    windowed = [p for p in kept if p.length > backbone.max_length]
    if windowed:
        print(f"{len(windowed)} protein(s) longer than {backbone.name}'s context of {backbone.max_length} residues "
              f"run as overlapping windows (marked windowed): " + ", ".join(f"{p.id} ({p.length})" for p in windowed[:8])
              + (" ..." if len(windowed) > 8 else ""))
    return kept


def run_extraction(cfg: Config, backbone: Backbone, proteins: Sequence[Protein],
                   map_heads: Sequence[tuple[int, int]] = (), embeddings: bool = False,
                   heads: Sequence[tuple[int, int]] | None = None) -> Extraction:
    """``heads``: early exit (only these heads' statistics, the backbone run up to the deepest)."""
    return extract(proteins, backbone, theta=cfg.model.theta, cache_dir=cfg.model.cache_dir,
                   trainer_kwargs=cfg.trainer, max_tokens=cfg.model.max_tokens, bucket=cfg.model.bucket,
                   map_heads=map_heads, embeddings=embeddings, dtype=cfg.model.dtype, heads=heads,
                   long=cfg.data.long, window_overlap=cfg.model.window_overlap)
