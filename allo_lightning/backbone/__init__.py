"""Frozen backbones: ESM-C (esmc_300m, esmc_600m, tiny) and ESM-2 (transformers)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BackboneError
from .base import TINY_MEANINGLESS, Backbone, hash_parameters, tokenize
from .esm2 import ESM2_HUB, ESM2Backbone, tiny_esm2_config
from .esmc import ESMC_SHAPES, ESMCBackbone, build_esmc, hub_weights_path

BACKBONES = tuple(ESMC_SHAPES) + ("esm2_tiny",) + tuple(ESM2_HUB)


def _load_state_dict(path: Path, name: str) -> dict:
    if not path.is_file():
        raise BackboneError(f"weights file {path} not found (given with --model.weights for {name!r}).")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise BackboneError(
            f"cannot read weights file {path} for {name!r} ({type(e).__name__}: {e}). Give a state dict "
            "saved with torch.save(model.state_dict(), FILE) or a .safetensors file."
        ) from None


def _load_into(model: torch.nn.Module, state: dict, path: Path, name: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise BackboneError(
            f"weights file {path} does not fit backbone {name!r}: {str(e).splitlines()[0]} "
            "Check that the file was saved from this model (see README, 'Real weights')."
        ) from None


def _sharpen_tiny(model: torch.nn.Module) -> None:
    """Random q/k layer-norm gains (seeded) so that the tiny model's attention is peaked like a
    trained model's, not near-uniform: the tiny backbone then exercises thresholding (theta) in tests
    and the quick start. Its attention is still random and means nothing."""
    for block in model.transformer.blocks:
        block.attn.q_ln.weight.data.normal_(0.0, 3.0)
        block.attn.k_ln.weight.data.normal_(0.0, 3.0)


def context_length(name: str) -> int:
    """Residues (without BOS/EOS) the backbone ``name`` was trained on, without loading it."""
    from .esm2 import ESM2_MAX_LENGTH
    from .esmc import ESMC_MAX_LENGTH

    return ESMC_MAX_LENGTH if name.lower() in ESMC_SHAPES else ESM2_MAX_LENGTH


def load_backbone(name: str = "tiny", weights: str | Path | None = None, seed: int = 0) -> Backbone:
    """Load a frozen backbone on the CPU (Lightning moves it to the accelerator).

    - ``esmc_300m`` / ``esmc_600m``: from ``weights`` (a local state dict) or downloaded from the
      Hugging Face hub on first use, as the ``esm`` package does.
    - ``tiny``: ESM-C architecture, d_model=64, 4 heads, 2 layers; random with ``seed`` or ``weights``.
    - ``esm2_t6_8m`` ... ``esm2_t33_650m``: transformers' ESM-2 (hub name or a local folder as
      ``weights``); ``esm2_tiny``: a random 2-layer, 4-head ESM-2.
    """
    name = name.lower()
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}. Choose one of: {', '.join(BACKBONES)}.")
    path = Path(weights).expanduser() if weights else None
    if name in ESMC_SHAPES:
        d_model, n_heads, n_layers, _, _ = ESMC_SHAPES[name]
        if path is None and name != "tiny":  # find the weights before building a large model
            try:
                path = hub_weights_path(name)
            except Exception as e:  # noqa: BLE001 - hub errors vary (offline, proxy, auth)
                raise BackboneError(
                    f"could not download the {name} weights from the Hugging Face hub "
                    f"({type(e).__name__}). Offline? Download the state dict on a machine with internet "
                    f"(README, 'Real weights') and pass it with --model.weights FILE."
                ) from None
        state = _load_state_dict(path, name) if path is not None else None
        if state is None:
            torch.manual_seed(seed)
        model = build_esmc(d_model, n_heads, n_layers)
        if state is None:
            _sharpen_tiny(model)
        else:
            _load_into(model, state, path, name)
        backbone: Backbone = ESMCBackbone(model, name)
    else:
        from transformers import EsmModel

        if name == "esm2_tiny":
            if path is None:
                torch.manual_seed(seed)
            model = EsmModel(tiny_esm2_config(), add_pooling_layer=False)
            if path is not None:
                _load_into(model, _load_state_dict(path, name), path, name)
        else:
            source = str(path) if path is not None else ESM2_HUB[name]
            try:
                model = EsmModel.from_pretrained(source, add_pooling_layer=False, attn_implementation="eager")
            except Exception as e:  # noqa: BLE001
                raise BackboneError(
                    f"could not load ESM-2 {name!r} from {source} ({type(e).__name__}). Offline? Pass a local "
                    "folder saved with EsmModel.save_pretrained as --model.weights DIR."
                ) from None
        backbone = ESM2Backbone(model, name)
    backbone.identity = f"{name}-{hash_parameters(backbone.model)[:16]}"
    return backbone.freeze()


__all__ = [
    "BACKBONES", "Backbone", "BackboneError", "TINY_MEANINGLESS", "context_length", "load_backbone", "tokenize",
    "hash_parameters",
]
