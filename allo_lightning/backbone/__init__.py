"""Frozen backbones: ESM-C (esmc_300m, esmc_600m, tiny) and ESM-2 (transformers); one registry."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..errors import BackboneError
from .base import TINY_MEANINGLESS, Alphabet, Backbone, hash_parameters, tokenize
from .builders import build_model, wrap
from .esm2 import ESM2_HUB, ESM2Backbone, tiny_esm2_config
from .esmc import ESMCBackbone, build_esmc, hub_weights_path, restore_buffers
from .registry import BACKBONES, REGISTRY, BackboneSpec, spec_of


def _load_state_dict(path: Path, name: str) -> dict:
    """The state dict of a weights file, memory-mapped (nothing is copied until a tensor is used)."""
    if not path.is_file():
        raise BackboneError(f"weights file {path} not found (given with --model.weights for {name!r}).")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import safe_open

            with safe_open(str(path), framework="pt") as f:  # memory-mapped, tensor by tensor
                return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise BackboneError(
            f"cannot read weights file {path} for {name!r} ({type(e).__name__}: {e}). Give a state dict "
            "saved with torch.save(model.state_dict(), FILE) or a .safetensors file."
        ) from None


def _release(t: torch.Tensor) -> None:
    """Drop the pages of a memory-mapped tensor from this process's resident set once it has been
    converted (Linux: madvise(MADV_DONTNEED); elsewhere nothing): a bf16 file read into an fp32 model
    then never holds both copies."""
    if not sys.platform.startswith("linux") or t.device.type != "cpu" or not t.numel():
        return
    try:
        import ctypes
        import mmap

        page = mmap.PAGESIZE
        start, end = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
        a0, a1 = -(-start // page) * page, end // page * page
        if a1 > a0:
            ctypes.CDLL(None).madvise(ctypes.c_void_p(a0), ctypes.c_size_t(a1 - a0), 4)  # MADV_DONTNEED
    except Exception:  # noqa: BLE001, S110 - only an optimisation: without it the pages stay until unmapped
        pass


def _load_into(model: torch.nn.Module, state: dict, path: Path, name: str) -> torch.nn.Module:
    """Load ``state`` into ``model`` (built on the meta device) without a second copy of the weights:
    each tensor is converted to the parameter's dtype (float32) one at a time and assigned."""
    expected = model.state_dict()
    try:
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise RuntimeError(f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}.")
        for k in list(state):
            v, want = state[k], expected[k]
            if tuple(v.shape) != tuple(want.shape):
                raise RuntimeError(f"size mismatch for {k}: file {tuple(v.shape)}, model {tuple(want.shape)}.")
            if v.dtype != want.dtype:
                converted = v.to(want.dtype)
                _release(v)
                state[k] = converted
            elif v.is_floating_point():
                converted = v.clone()  # own memory (not the file's pages)
                _release(v)
                state[k] = converted
        model.load_state_dict(state, assign=True)
    except RuntimeError as e:
        raise BackboneError(
            f"weights file {path} does not fit backbone {name!r}: {str(e).splitlines()[0]} "
            "Check that the file was saved from this model (see README, 'Real weights')."
        ) from None
    return model


def _sharpen_tiny(model: torch.nn.Module) -> None:
    """Random q/k layer-norm gains (seeded) so that the tiny model's attention is peaked like a
    trained model's, not near-uniform: the tiny backbone then exercises thresholding (theta) in tests
    and the quick start. Its attention is still random and means nothing."""
    for block in model.transformer.blocks:
        block.attn.q_ln.weight.data.normal_(0.0, 3.0)
        block.attn.k_ln.weight.data.normal_(0.0, 3.0)


def build_from_file(spec: BackboneSpec, path: Path) -> torch.nn.Module:
    """The model of ``spec`` with the weights of ``path``, built on the meta device and filled by
    assignment: peak memory is the float32 model plus one tensor, not two models."""
    state = _load_state_dict(path, spec.name)
    model = build_model(spec, device="meta")
    _load_into(model, state, path, spec.name)
    del state
    if spec.family == "esmc":
        restore_buffers(model)
    else:
        _restore_esm2_buffers(model)
    return model


def _restore_esm2_buffers(model: torch.nn.Module) -> None:
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:  # a non-persistent buffer (not in the file): recompute it like the constructor
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            if attr == "inv_freq":
                dim = module.inv_freq.shape[0] * 2
                module.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))
            elif attr == "position_ids":
                n = buf.shape[-1]
                module.register_buffer("position_ids", torch.arange(n).expand((1, -1)), persistent=False)
            else:
                raise BackboneError(f"cannot restore buffer {name} of the ESM-2 model; please report this.")


def context_length(name: str) -> int:
    """Residues (without BOS/EOS) the backbone ``name`` was trained on, without loading it."""
    return spec_of(name).max_length


def load_backbone(name: str = "tiny", weights: str | Path | None = None, seed: int = 0) -> Backbone:
    """Load a frozen backbone on the CPU (Lightning moves it to the accelerator).

    - ``esmc_300m`` / ``esmc_600m``: from ``weights`` (a local state dict) or downloaded from the
      Hugging Face hub on first use, as the ``esm`` package does.
    - ``tiny``: ESM-C architecture, d_model=64, 4 heads, 2 layers; random with ``seed`` or ``weights``.
    - ``esm2_t6_8m`` ... ``esm2_t33_650m``: transformers' ESM-2 (hub name or a local folder as
      ``weights``); ``esm2_tiny``: a random 2-layer, 4-head ESM-2.

    The names, shapes and context limits are in :data:`registry.REGISTRY`. Weights files are
    memory-mapped and assigned into a model built on the meta device (no second copy).
    """
    spec = spec_of(name)
    path = Path(weights).expanduser() if weights else None
    if spec.family == "esmc" or spec.tiny:
        if path is None and not spec.tiny:  # find the weights before building a large model
            try:
                path = hub_weights_path(spec.name)
            except Exception as e:  # noqa: BLE001 - hub errors vary (offline, proxy, auth)
                raise BackboneError(
                    f"could not download the {spec.name} weights from the Hugging Face hub "
                    f"({type(e).__name__}). Offline? Download the state dict on a machine with internet "
                    f"(README, 'Real weights') and pass it with --model.weights FILE."
                ) from None
        if path is not None:
            model = build_from_file(spec, path)
        else:
            torch.manual_seed(seed)
            model = build_model(spec)
            if spec.family == "esmc":
                _sharpen_tiny(model)
    else:
        from transformers import EsmModel

        source = str(path) if path is not None else spec.hub
        try:
            model = EsmModel.from_pretrained(source, add_pooling_layer=False, attn_implementation="eager",
                                             low_cpu_mem_usage=True)
        except Exception as e:  # noqa: BLE001
            raise BackboneError(
                f"could not load ESM-2 {spec.name!r} from {source} ({type(e).__name__}). Offline? Pass a local "
                "folder saved with EsmModel.save_pretrained as --model.weights DIR."
            ) from None
    backbone = wrap(spec, model)
    backbone.max_length = spec.max_length
    backbone.identity = f"{spec.name}-{hash_parameters(backbone.model)[:16]}"
    return backbone.freeze()


__all__ = [
    "BACKBONES",
    "ESM2_HUB",
    "REGISTRY",
    "TINY_MEANINGLESS",
    "Alphabet",
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
