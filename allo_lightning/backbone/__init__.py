"""Frozen backbones: ESM-C (esmc_300m, esmc_600m, tiny) and ESM-2 (transformers); one registry.

The table of backbones (``registry``) is torch-free and imported here at once: the shell checks
``--model.backbone`` against it before anything heavy is imported. Everything else (``loading``:
``load_backbone``, ``Backbone``, ``tokenize``...) imports torch, and is imported on first use (PEP 562)."""

from __future__ import annotations

from .registry import BACKBONES, REGISTRY, BackboneSpec, spec_of


def __getattr__(name: str):
    if name == "loading" or name.startswith("__"):  # the submodule itself (being imported), or introspection
        raise AttributeError(name)
    from . import loading

    value = getattr(loading, name)  # AttributeError: not a name of the package either
    globals()[name] = value
    return value


__all__ = [
    "BACKBONES",
    "ESM2_HUB",
    "REGISTRY",
    "TINY_MEANINGLESS",
    "Backbone",
    "BackboneError",
    "BackboneSpec",
    "ESM2Backbone",
    "ESMCBackbone",
    "build_esmc",
    "build_model",
    "context_length",
    "hash_parameters",
    "load_backbone",
    "spec_of",
    "tiny_esm2_config",
    "tokenize",
]
