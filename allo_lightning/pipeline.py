"""Steps shared by the commands: checks that need no model (devices, writable folders), proteins and
backbone from a config, and extraction with the config's settings. Shared plumbing, not a command."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable, Sequence

import lightning as L

from . import distributed
from .attention import Extraction, check_bf16, extract, split_long
from .attention import cache as cache_module
from .attention.cache import default_cache_dir
from .attention.run import check_window_work
from .attention.stats import stats_kernel
from .backbone import Backbone, MeaninglessScoresWarning, context_length, load_backbone, meaningless_message, spec_of
from .data import Protein, load_proteins
from .errors import BackboneError, InputError
from .outputs import check_writable_dir

log = logging.getLogger(__name__)


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
    if dtype == "bf16":
        check_bf16(resolved)


def check_environment(cfg) -> None:
    """Before anything is loaded: the devices (and dtype) asked for exist, and the cache folder can be
    written (or, an existing read-only cache, is left to extract: used when it holds every entry)."""
    check_devices(cfg.trainer, cfg.model.dtype)
    stats_kernel("cpu")  # refuses an unknown ALLO_LIGHTNING_STATS_KERNEL now, not at the first batch
    cache = Path(cfg.model.cache_dir or default_cache_dir()).expanduser()
    if cache.is_dir() and cache_module.folder_unwritable(cache) is not None:
        return  # a read-only cache serves when it holds every entry (extract refuses before work otherwise)
    check_writable_dir(cache, "--model.cache_dir")


def load_inputs(cfg, check: Callable[[list[Protein]], object] | None = None,
                require_sites: bool = False) -> tuple[Backbone, list[Protein]]:
    """Checks that need no model, then the proteins (parsed and validated, then ``check(proteins)``: the
    command's own checks of the data), and only then the backbone. ``require_sites`` for commands that
    train or score heads (a protein without sites is refused, naming its row). Notes of the reader
    (shared sequences put in one cluster) are logged."""
    check_environment(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    long_error = long_of(cfg) == "error"
    proteins = load_proteins(cfg.data, max_length=context_length(cfg.model.backbone) if long_error else None,
                             require_sites=require_sites)
    for note in getattr(proteins, "notes", ()):
        log.info(f"note: {note}")
    log.debug(f"read {len(proteins)} proteins ({sum(p.length for p in proteins)} residues)")
    proteins = long_policy(cfg, proteins)
    if check is not None:
        check(proteins)
    check_orthosteric(getattr(cfg, "heads", None), proteins)
    _, n_heads, n_layers = spec_of(cfg.model.backbone).shape
    check_heads_memory(cfg, proteins, n_layers * n_heads)
    if getattr(cfg, "report", None) is not None:
        check_memory(f"{cfg.report.n_boot:,} bootstrap samples of {len(proteins)} proteins", "--report.n_boot",
                     bootstrap_bytes(cfg.report.n_boot, len(proteins)))
    return command_backbone(cfg), proteins


def command_backbone(cfg) -> Backbone:
    """``load_backbone`` for a command: a random backbone is noted (INFO, stdout: an error that follows stays
    the only line on stderr; each command ends with the note as a WARNING, shown under ``-q`` too) instead of
    the API's Python warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MeaninglessScoresWarning)
        backbone = load_backbone(cfg.model.backbone, cfg.model.weights, cfg.model.seed)
    log.debug(f"backbone {backbone.identity}: {backbone.n_layers} layers x {backbone.n_heads} heads, context "
              f"{backbone.max_length} residues")
    if backbone.meaningless:
        log.info(f"NOTE: {meaningless_message(backbone.name)}")
    return backbone


def long_of(cfg) -> str:
    """``--data.long`` of a command (predict has it as its own flag; default window)."""
    data = getattr(cfg, "data", None)
    if data is not None:
        return data.long
    flags = cfg.get("data") or {}  # a command's own --data.* flags arrive nested: {"data": {"long": ...}}
    return flags.get("long") or cfg.get("data.long") or "window"


def long_policy(cfg, proteins: list[Protein]) -> list[Protein]:
    """``--data.long``: keep proteins longer than the backbone's context (run as windows), or skip them
    (listed); ``error`` refused them when they were read."""
    name, limit = cfg.model.backbone, context_length(cfg.model.backbone)
    kept, skipped = split_long(proteins, limit, long_of(cfg), name)
    if skipped:
        log.warning(f"--data.long skip: left out {len(skipped)} protein(s) longer than {name}'s context of "
                    f"{limit} residues: " + ", ".join(f"{p.id} ({p.length})" for p in skipped))
    windowed = [p for p in kept if p.length > limit]
    if windowed:
        n_windows = check_window_work(windowed, limit, cfg.model.window_overlap)
        log.info(f"{len(windowed)} protein(s) longer than {name}'s context of {limit} residues run as {n_windows} "
                 "overlapping windows (marked windowed): " + ", ".join(f"{p.id} ({p.length})" for p in windowed[:8])
                 + (" ..." if len(windowed) > 8 else ""))
    return kept if skipped else proteins  # unchanged: the reader's list (with its notes) as it came


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable, else the physical memory),
    or None where unknown."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def bootstrap_bytes(n_boot: int, n_proteins: int) -> int:
    """Peak memory of a bootstrap over ``n_proteins`` (probe.bootstrap: the [n_boot, P] protein draws are
    made as int64 indices, offsets and counts, then float64 weights: 4 arrays of 8 bytes; plus the
    per-sample metric values)."""
    return int(n_boot) * (32 * max(int(n_proteins), 1) + 64)


def permutation_bytes(n_draws: int, n_heads: int, max_sites: int) -> int:
    """Peak memory of the permutation test (analysis.scores): pooled and per-protein null sums
    [draws, 2 x heads] float32, the comparison with the observed value, and the drawn site indices
    [draws, sites] int64."""
    rows = 2 * int(n_heads)
    return int(n_draws) * (9 * rows + 16 * max(int(max_sites), 1))


def check_memory(what: str, flag: str, needed: int, available: int | None = None) -> None:
    """Refuse, before any work, a setting whose estimated memory ``needed`` exceeds the memory
    available here (an allocation that size ends in the kernel's out-of-memory killer, not an error)."""
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise InputError(f"{flag}: {what} would need about {needed / 2**30:,.1f} GiB of memory, more than the "
                         f"{available / 2**30:,.1f} GiB available here. Give a smaller value.",
                         todo="Give a smaller value.")


def check_heads_memory(cfg, proteins: Sequence[Protein], n_heads: int) -> None:
    """--heads.n_permutations against the memory available (the escalation up to
    --heads.max_permutations draws in chunks of bounded size: its memory does not grow with it)."""
    heads = getattr(cfg, "heads", None)
    if heads is None or not proteins:
        return
    max_sites = max(len(p.sites or ()) for p in proteins)
    check_memory(f"{heads.n_permutations:,} random site sets for {n_heads} heads", "--heads.n_permutations",
                 permutation_bytes(heads.n_permutations, n_heads, max_sites))


def run_extraction(cfg, backbone: Backbone, proteins: Sequence[Protein],
                   map_heads: Sequence[tuple[int, int]] = (), embeddings: bool = False,
                   heads: Sequence[tuple[int, int]] | None = None, embedding_layer: int | None = None) -> Extraction:
    """``heads``: early exit (only these heads' statistics, the backbone run up to the deepest);
    ``embedding_layer``: embeddings are that layer's hidden states (the output of its block).

    Several processes (:mod:`allo_lightning.distributed`): the first extraction of a command is shared by
    all of them and ends at a barrier; then every rank but zero exits (status 0) and rank zero returns the
    extraction, every entry complete. A later extraction runs on rank zero's device alone."""
    trainer_kwargs = cfg.trainer.kwargs()
    if distributed.shared_phase_over():
        trainer_kwargs = distributed.one_device(trainer_kwargs)
    result = extract(proteins, backbone, theta=cfg.model.theta, cache_dir=cfg.model.cache_dir,
                     trainer_kwargs=trainer_kwargs, max_tokens=cfg.model.max_tokens, bucket=cfg.model.bucket,
                     map_heads=map_heads, embeddings=embeddings, dtype=cfg.model.dtype, heads=heads,
                     long=long_of(cfg), window_overlap=cfg.model.window_overlap, embedding_layer=embedding_layer)
    distributed.end_shared_phase()  # ranks other than zero leave here
    return result


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


def load_probe_checkpoint(cfg, command: str):
    """The checkpoint of ``--checkpoint`` for predict / evaluate, checked against the command line: a probe
    on attention heads, and the backbone and theta it was trained with (``--model.backbone`` /
    ``--model.theta`` may repeat them, never change them). Sets ``cfg.model.backbone``, ``theta`` and
    ``seed`` from the checkpoint. No model is loaded yet."""
    from .errors import CheckpointError
    from .probe import load_checkpoint

    ckpt = load_checkpoint(cfg.get("checkpoint"))
    if ckpt.spec.kind != "heads":
        raise CheckpointError(f"{ckpt.path}: a probe on {ckpt.spec.kind!r} features; {command} runs probes on "
                              "attention heads (written by python -m allo_lightning.fit).")
    name = (cfg.model.backbone or ckpt.backbone_name).lower()
    if name != ckpt.backbone_name:
        raise CheckpointError(
            f"{ckpt.path}: this probe was trained on backbone {ckpt.backbone_name!r}, but {name!r} was "
            f"requested. Use --model.backbone {ckpt.backbone_name}, or train a probe for {name} with "
            "python -m allo_lightning.fit.")
    if cfg.model.theta is not None and abs(cfg.model.theta - ckpt.theta) > 1e-12:
        raise CheckpointError(f"{ckpt.path}: the probe's features use theta={ckpt.theta:g}, not "
                              f"{cfg.model.theta:g}. Leave --model.theta out (it comes from the checkpoint).")
    seed = cfg.model.seed if cfg.model.seed is not None else ckpt.backbone_seed
    cfg.model.backbone, cfg.model.theta, cfg.model.seed = name, ckpt.theta, seed
    return ckpt


def load_checkpoint_backbone(cfg, ckpt) -> Backbone:
    """The backbone the checkpoint was trained on (same weights: identity checked)."""
    backbone = command_backbone(cfg)
    ckpt.check_backbone(backbone)
    return backbone
