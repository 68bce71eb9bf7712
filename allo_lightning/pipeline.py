"""Steps shared by the commands: checks that need no model (devices, writable folders), proteins and
backbone from a config, and extraction with the config's settings. Shared plumbing, not a command."""

from __future__ import annotations

from typing import Callable, Sequence

import lightning as L

from .attention import Extraction, extract
from .attention.cache import default_cache_dir
from .backbone import TINY_MEANINGLESS, Backbone, context_length, load_backbone
from .data import Protein, load_proteins
from .errors import BackboneError, InputError
from .outputs import check_writable_dir


def check_devices(trainer, dtype: str = "fp32") -> None:
    """Refuse an accelerator that is not here, more devices than there are, or bf16 where the device
    has none, before anything is loaded. ``trainer``: TrainerConfig."""
    import torch

    acc = trainer.accelerator
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if acc in ("cuda", "gpu") and not torch.cuda.is_available():
        raise BackboneError(f"--trainer.accelerator {acc}: no CUDA device is available here. Use "
                            "--trainer.accelerator cpu (or auto).")
    if acc == "mps" and not mps:
        raise BackboneError("--trainer.accelerator mps: Apple's MPS is not available here. Use --trainer.accelerator "
                            "cpu (or auto).")
    resolved = acc if acc != "auto" else ("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if isinstance(trainer.devices, int):
        have = torch.cuda.device_count() if resolved in ("cuda", "gpu") else 1 if resolved == "mps" else None
        if have is not None and trainer.devices > have:
            raise BackboneError(f"--trainer.devices {trainer.devices}: only {have} {resolved} device(s) here. "
                                "Give at most that many.")
    if dtype == "bf16" and not bf16_supported(resolved):
        raise BackboneError(f"--model.dtype bf16: the {resolved} device here has no bfloat16 support. Use "
                            "--model.dtype fp32.")


def bf16_supported(device_type: str) -> bool:
    import torch

    if device_type in ("cuda", "gpu"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


def load_inputs(cfg, check: Callable[[list[Protein]], object] | None = None,
                require_sites: bool = False) -> tuple[Backbone, list[Protein]]:
    """Checks that need no model, then the proteins (parsed and validated, then ``check(proteins)``: the
    command's own checks of the data), and only then the backbone. ``require_sites`` for commands that
    train or score heads (a protein without sites is refused, naming its row). Notes of the reader
    (shared sequences put in one cluster) are printed."""
    check_devices(cfg.trainer, cfg.model.dtype)
    check_writable_dir(cfg.model.cache_dir or default_cache_dir(), "--model.cache_dir")
    L.seed_everything(cfg.seed, verbose=False)
    proteins = load_proteins(cfg.data, max_length=context_length(cfg.model.backbone), require_sites=require_sites)
    for note in getattr(proteins, "notes", ()):
        print(f"note: {note}")
    if check is not None:
        check(proteins)
    check_orthosteric(getattr(cfg, "heads", None), proteins)
    backbone = load_backbone(cfg.model.backbone, cfg.model.weights, cfg.model.seed)
    if backbone.meaningless:
        print(TINY_MEANINGLESS)
    return backbone, proteins


def run_extraction(cfg, backbone: Backbone, proteins: Sequence[Protein],
                   map_heads: Sequence[tuple[int, int]] = (), embeddings: bool = False) -> Extraction:
    return extract(proteins, backbone, theta=cfg.model.theta, cache_dir=cfg.model.cache_dir,
                   trainer_kwargs=cfg.trainer.kwargs(), max_tokens=cfg.model.max_tokens, bucket=cfg.model.bucket,
                   map_heads=map_heads, embeddings=embeddings, dtype=cfg.model.dtype)


def check_orthosteric(heads_cfg, proteins: Sequence[Protein]) -> None:
    """``--heads.orthosteric``: every id is a loaded protein and every position lies inside its sequence."""
    if heads_cfg is None or not heads_cfg.orthosteric:
        return
    by_id = {p.id: p for p in proteins}
    for pid, positions in heads_cfg.orthosteric.items():
        if pid not in by_id:
            raise InputError(f"--heads.orthosteric: protein {pid!r} is not among the {len(proteins)} loaded proteins "
                             "(check the id and --data.*).")
        outside = [x for x in positions if x > by_id[pid].length]
        if outside:
            raise InputError(f"--heads.orthosteric: protein {pid!r} has {by_id[pid].length} residues; positions "
                             f"{outside[:5]} lie outside it (1-based).")


def select_subset(proteins: Sequence[Protein], ids: Sequence[str] | None,
                  flag: str = "--heads.proteins") -> list[Protein]:
    """The proteins named by ``ids`` (all when None), in that order; unknown ids are refused."""
    if not ids:
        return list(proteins)
    by_id = {p.id: p for p in proteins}
    unknown = [pid for pid in ids if pid not in by_id]
    if unknown:
        raise InputError(f"{flag}: ids {unknown[:5]} are not among the {len(proteins)} loaded proteins (check --data.* "
                         "and the ids).")
    return [by_id[pid] for pid in ids]
