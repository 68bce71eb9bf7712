"""Extraction end to end: which proteins still need work, ``trainer.predict``, the cache."""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf

from .. import distributed, interrupt
from ..backbone import Backbone
from ..data.batching import ExtractionDataModule, token_budget_batches
from ..data.protein import Protein
from ..errors import AlloError, InputError, OutputError
from ..messages import quiet_lightning
from .cache import StatsCache
from .extractor import AttentionExtractor, CacheWriter, spawned, token_budget, window_plan
from .stats import ProteinStats

log = logging.getLogger(__name__)

# Trainer arguments that make no sense for extraction and are dropped from the user's trainer section.
_PREDICT_DROP = {"max_epochs", "min_epochs", "max_steps", "min_steps", "check_val_every_n_epoch",
                 "val_check_interval", "num_sanity_val_steps", "gradient_clip_val", "accumulate_grad_batches",
                 "limit_train_batches", "limit_val_batches", "limit_test_batches", "log_every_n_steps",
                 "enable_checkpointing", "logger", "callbacks", "use_distributed_sampler"}


@dataclass
class Extraction:
    """Statistics of a set of proteins, read from the cache on demand."""

    proteins: list[Protein]
    cache: StatsCache
    backbone_identity: str
    n_layers: int
    n_heads: int
    theta: float
    computed: list[str] = field(default_factory=list)  # ids run now (the rest came from the cache)
    map_heads: list[tuple[int, int]] = field(default_factory=list)
    embeddings: bool = False
    heads: list[tuple[int, int]] | None = None  # early exit: statistics of these heads only (None: all)
    windowed: list[str] = field(default_factory=list)  # ids of proteins longer than the context (windows)
    max_length: int = 0  # the backbone's context (residues)
    window_overlap: int = 256

    def stats(self, protein: Protein) -> ProteinStats:
        return self.cache.load(protein.sequence, self.map_heads, self.embeddings, self.heads)

    def window_regions(self, protein: Protein) -> list[tuple[int, int]] | None:
        """1-based inclusive (start, end) of the windows of a protein longer than the context, else None."""
        if protein.id not in self.windowed:
            return None
        starts, _ = window_plan(protein.length, self.max_length, self.window_overlap)
        return [(s + 1, min(s + self.max_length, protein.length)) for s in starts]

    def __iter__(self) -> Iterator[tuple[Protein, ProteinStats]]:
        for p in self.proteins:
            yield p, self.stats(p)

    def __len__(self) -> int:
        return len(self.proteins)


class ExtractionBar(TQDMProgressBar):
    """Lightning's progress bar, named for what it counts (``extracting``, batches of proteins through the
    backbone) and drawn on stderr like predict's ``scoring`` bar. Lightning's own said ``Predicting
    DataLoader 0`` in every command (``extract`` included) and wrote to stdout, among the results."""

    def init_predict_tqdm(self) -> Tqdm:
        return Tqdm(desc="extracting", unit="batch", position=2 * self.process_position, disable=self.is_disabled,
                    leave=True, dynamic_ncols=True, file=sys.stderr, smoothing=0, bar_format=self.BAR_FORMAT)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.has_dataloader_changed(dataloader_idx):  # as Lightning's, without "DataLoader 0" in the name
            bar = self.predict_progress_bar
            bar.reset()
            bar.total, bar.initial = convert_inf(self.total_predict_batches_current_dataloader), 0


def predict_trainer(trainer_kwargs: dict | None, callbacks: list) -> L.Trainer:
    """The extraction's Trainer (quiet: see :func:`allo_lightning.messages.quiet_lightning`)."""
    quiet_lightning()
    kwargs = {k: v for k, v in (trainer_kwargs or {}).items() if k not in _PREDICT_DROP and v is not None}
    if kwargs.get("enable_progress_bar", True):
        callbacks = [*callbacks, ExtractionBar()]
    return L.Trainer(**kwargs, logger=False, enable_checkpointing=False, callbacks=callbacks,
                     use_distributed_sampler=False)


def extract(
    proteins: Sequence[Protein],
    backbone: Backbone,
    theta: float = 0.3,
    cache_dir: str | None = None,
    trainer_kwargs: dict | None = None,
    max_tokens: int | None = None,
    bucket: bool = True,
    map_heads: Sequence[tuple[int, int]] = (),
    embeddings: bool = False,
    dtype: str = "fp32",
    heads: Sequence[tuple[int, int]] | None = None,
    long: str = "window",
    window_overlap: int = 256,
    embedding_layer: int | None = None,
) -> Extraction:
    """Compute (or reuse from the cache) the attention statistics of ``proteins``.

    ``heads`` (early exit, e.g. for predict): only these (layer, head) statistics are needed; the
    backbone runs only up to the deepest of them, and proteins whose full entry is cached are not
    run at all. Their statistics come back over layers 0..deepest with NaN for the other heads
    (a full cache entry, when present, is returned whole).

    ``long``: a protein longer than ``backbone.max_length`` is run as overlapping windows of that
    length (``window``, default; ``window_overlap`` residues shared), or refused (``error``).
    Skipping long proteins (``skip``) happens when the proteins are loaded (:func:`split_long`).

    ``embedding_layer`` (with ``embeddings``): the embedding is the output of that block (0-based; the
    hidden states of one layer, cached as their own entry) instead of the final layer's.

    ``max_tokens`` (batch size x padded length): None picks the device's (:func:`token_budget`: 4096 on
    CPU, from the free memory on CUDA)."""
    # the settings are checked by the config dataclasses (ModelConfig, DataConfig); these guard a call from Python
    if dtype not in ("fp32", "bf16"):
        raise AlloError(f"extract: dtype {dtype!r}: choose fp32 or bf16.")
    if long not in ("window", "error", "skip"):
        raise AlloError(f"extract: long {long!r}: choose window, skip or error.")
    # bf16 statistics differ from fp32 ones: they get their own cache entries
    cache = StatsCache(cache_dir, backbone.identity + ("-bf16" if dtype == "bf16" else ""), theta,
                       embedding_layer if embeddings else None, window=(backbone.max_length, window_overlap))
    map_heads = [tuple(map(int, h)) for h in map_heads]
    if heads is not None:
        heads = sorted({tuple(map(int, h)) for h in heads})
    proteins, _ = split_long(proteins, backbone.max_length, long, backbone.name)
    if not 0 <= window_overlap < backbone.max_length:  # the context is the backbone's: known here, not in the config
        raise AlloError(f"--model.window_overlap {window_overlap}: must be in 0..{backbone.max_length - 1}, below "
                        f"{backbone.name}'s context of {backbone.max_length} residues.")
    check_window_work([p for p in proteins if p.length > backbone.max_length], backbone.max_length, window_overlap)
    unique, seen = [], set()  # one entry per distinct sequence (the first id naming it)
    for p in proteins:
        if p.sequence not in seen:
            unique.append(p)
            seen.add(p.sequence)
    if max_tokens is None:  # the device's budget (CPU: 4096; CUDA: from its free memory), over ALL proteins
        max_tokens = token_budget(trainer_kwargs, backbone.n_heads, max((p.length for p in unique), default=0),
                                  n_special=backbone.alphabet.n_special)
    missing = {i for i, p in enumerate(unique) if not cache.complete(p.sequence, map_heads, embeddings, heads)}
    # Batches are formed over ALL proteins and every batch holding a missing one is run whole: a resumed
    # run pads each protein exactly as an uninterrupted run does, so its statistics are bit-identical.
    # A protein longer than the context is run alone (as windows).
    batches = []
    for b in token_budget_batches([p.length for p in unique], max_tokens, bucket,
                                  n_special=backbone.alphabet.n_special):
        long_ones = [i for i in b if unique[i].length > backbone.max_length]
        rest = [i for i in b if i not in long_ones]
        batches += [[i] for i in long_ones] + ([rest] if rest else [])
    batches = [b for b in batches if any(i in missing for i in b)]
    log.debug(f"extraction: {len(unique)} distinct sequences, {len(unique) - len(missing)} in the cache {cache.dir}, "
              f"{len(batches)} batches to run (max_tokens {max_tokens}, theta {theta}, {dtype})")
    if batches and (why := cache.unwritable()) is not None:  # a read-only cache serves while nothing is missing
        n = sum(len(b) for b in batches)
        raise OutputError(f"the cache folder {cache.root} cannot be written ({why}), and {len(missing)} of the "
                          f"{len(unique)} proteins are not in it ({n} to run). Fix its permissions, or give a "
                          "writable --model.cache_dir; nothing was computed.")
    result = Extraction(list(proteins), cache, backbone.identity, backbone.n_layers, backbone.n_heads, theta,
                        map_heads=map_heads, embeddings=embeddings, heads=heads,
                        windowed=[p.id for p in proteins if p.length > backbone.max_length],
                        max_length=backbone.max_length, window_overlap=window_overlap)
    trainer = None
    if batches or distributed.in_shared_phase():
        writer = CacheWriter(cache)
        trainer = predict_trainer(trainer_kwargs, [writer])
        # nothing to run here, but one of several processes a launcher started: rank zero's plan decides
        if not batches and not distributed.joins_regardless(trainer):
            trainer = None
    if trainer is not None:
        module = AttentionExtractor(backbone, theta, map_heads, embeddings, dtype, heads, window_overlap,
                                    embedding_layer if embeddings else None)
        if spawned(trainer):  # ddp_spawn: a signal to this process reaches the processes it spawns
            writer.stop_flag = interrupt.spawn_flag()
            # torch's "Terminating process N via signal SIGTERM" (the others, once one stopped): the error says why
            logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
        data = ExtractionDataModule(unique, backbone.alphabet.tokenize, max_tokens, bucket, batches=batches,
                                    n_special=backbone.alphabet.n_special)
        failure = None
        owned = not distributed.group_open()  # a group this Trainer opens (ddp) is closed at exit, not the caller's
        try:
            with warnings.catch_warnings(), interrupt.graceful():  # a signal: finish the batch in flight
                warnings.filterwarnings("ignore", message=".*custom batch sampler.*")  # our sampler covers every index
                trainer.predict(module, datamodule=data, return_predictions=False)
            interrupt.check()  # a signal after the last batch's check (or, ddp_spawn, to this process alone)
        except BaseException as e:  # noqa: BLE001 - raised by settle (several processes: told to the others first)
            failure = e
        # several processes: every rank has written its entries (or failed) before any rank reads one
        if owned and distributed.group_open():
            distributed.close_at_exit()
        distributed.settle(trainer, failure, joined=getattr(data, "plan_shared", False))
        result.computed = [unique[i].id for i in sorted(missing)]
    return result


MAX_WINDOW_WORK = 8  # windows may cost at most this many times running each residue once


def check_window_work(proteins: Sequence[Protein], context: int, overlap: int) -> int:
    """The number of windows ``proteins`` (longer than ``context``) run as, with ``overlap`` residues
    shared by neighbours (as attention.extractor.window_plan places them); refused when the windows
    hold more than MAX_WINDOW_WORK times the proteins' residues (an overlap close to the context makes
    a window per residue or two: days of work for nothing)."""
    if not 0 <= overlap < context:
        return 0  # refused by extract with the allowed range
    step = context - overlap
    n = sum(-(-(p.length - context) // step) + 1 for p in proteins)
    residues = sum(p.length for p in proteins)
    if n * context > MAX_WINDOW_WORK * residues:
        todo = (f"Give a smaller --model.window_overlap (the default is 256; at most about "
                f"{context - context // MAX_WINDOW_WORK}).")
        raise InputError(f"--model.window_overlap {overlap}: the {len(proteins)} protein(s) longer than the "
                         f"context of {context} residues would run as {n:,} windows, {n * context / residues:.0f} "
                         f"times the work of their residues (at most {MAX_WINDOW_WORK}x is accepted). {todo}",
                         todo=todo)
    return n


def split_long(proteins: Sequence[Protein], max_length: int, long: str = "window",
               name: str = "the backbone") -> tuple[list[Protein], list[Protein]]:
    """``(kept, skipped)`` under the ``--data.long`` policy for proteins longer than the backbone's
    context ``max_length`` (``name``: the backbone, for messages): ``window`` keeps them (run as
    overlapping windows), ``skip`` drops them (the caller lists them), ``error`` refuses the first one
    with a message naming it."""
    backbone_name = name
    too_long = [p for p in proteins if p.length > max_length]
    if too_long and long == "error":
        p = too_long[0]
        raise InputError(
            f"{p.where}: {p.length} residues, more than {backbone_name}'s limit "
            f"of {max_length}. Split it into domains or remove it (or leave out --data.long error: "
            "long proteins are then run as overlapping windows); nothing was computed."
        )
    if long == "skip":
        return [p for p in proteins if p.length <= max_length], too_long
    return list(proteins), []
