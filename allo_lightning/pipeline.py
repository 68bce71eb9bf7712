"""Steps shared by the commands: backbone + proteins from a config, extraction with the config's
settings, and a clear message (no traceback) for user errors."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Sequence

import lightning as L

from .attention import Extraction, extract
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


def load_inputs(cfg: Config, require_sites: bool = False) -> tuple[Backbone, list[Protein]]:
    """Backbone and proteins; ``require_sites`` for commands that train or score heads (a protein
    without sites is refused, naming its row). Notes of the reader (shared sequences put in one
    cluster) are printed."""
    L.seed_everything(cfg.seed, verbose=False)
    backbone = load_backbone(cfg.model.backbone, cfg.model.weights, cfg.model.seed)
    if backbone.meaningless:
        print(TINY_MEANINGLESS)
    proteins = load_proteins(cfg.data, max_length=backbone.max_length, require_sites=require_sites)
    for note in getattr(proteins, "notes", ()):
        print(f"note: {note}")
    return backbone, proteins


def run_extraction(cfg: Config, backbone: Backbone, proteins: Sequence[Protein],
                   map_heads: Sequence[tuple[int, int]] = (), embeddings: bool = False) -> Extraction:
    return extract(proteins, backbone, theta=cfg.model.theta, cache_dir=cfg.model.cache_dir,
                   trainer_kwargs=cfg.trainer, max_tokens=cfg.model.max_tokens, bucket=cfg.model.bucket,
                   map_heads=map_heads, embeddings=embeddings, dtype=cfg.model.dtype)
