"""Frozen backbones: ESM-C (esmc_300m, esmc_600m, tiny) and ESM-2 (transformers); one registry.

The table of backbones (``registry``) is torch-free and imported here at once: the shell checks
``--model.backbone`` against it before anything heavy is imported. Everything else imports torch and is
imported on first use (PEP 562), from the submodule named in ``_LAZY``."""

from __future__ import annotations

import importlib

from .registry import BACKBONES, REGISTRY, BackboneSpec, spec_of

# public name -> the submodule that defines it (imported on first use)
_LAZY = {
    "TINY_MEANINGLESS": ".base", "Alphabet": ".base", "Backbone": ".base", "MeaninglessScoresWarning": ".base",
    "hash_parameters": ".base", "meaningless_message": ".base", "tokenize": ".base",
    "build_model": ".builders",
    "ESM2_HUB": ".esm2", "ESM2Backbone": ".esm2", "tiny_esm2_config": ".esm2",
    "ESMCBackbone": ".esmc", "build_esmc": ".esmc",
    "context_length": ".loading", "load_backbone": ".loading",
    "BackboneError": "..errors",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = ["BACKBONES", "REGISTRY", "BackboneSpec", "spec_of", *_LAZY]  # noqa: PLE0604 - names resolved lazily
