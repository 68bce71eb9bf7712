"""The frozen backbone in a LightningModule: batched attention statistics under ``trainer.predict``.

Two refinements over "run every layer, keep every head":
- early exit (``heads``): only these heads' statistics are computed and the forward pass stops after
  the deepest layer needed (by them and by ``map_heads``); the result is a partial :class:`ProteinStats`;
- windows: a protein longer than the backbone's context (``backbone.max_length``) is run as
  overlapping windows of that length (``window_overlap`` residues shared by neighbours) and every
  residue's statistics come from the window where it is most central (see :func:`window_plan`).
"""

from __future__ import annotations

from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from .. import interrupt
from ..backbone import Backbone
from ..errors import AlloError, BackboneError
from .cache import BackgroundWriter, StatsCache
from .stats import STAT_NAMES, ProteinStats, column_stats, flash_usable, qk_column_stats, qk_probs, stats_kernel


def window_plan(length: int, window: int, overlap: int) -> tuple[list[int], torch.Tensor]:
    """Window starts (0-based, every window ``window`` residues, the last one ending at the protein's
    end, neighbours sharing at least ``overlap`` residues) and, per residue, the index of the window
    where it is most central: the largest distance to an edge of the window that is not an end of
    the protein (ties: the earlier window). One window when ``length <= window``."""
    if length <= window:
        return [0], torch.zeros(length, dtype=torch.long)
    if not 0 <= overlap < window:
        raise AlloError(f"window overlap {overlap} must be in 0..{window - 1}")
    step = window - overlap
    starts = list(range(0, length - window, step)) + [length - window]
    pos = torch.arange(length)
    best = torch.full((length,), -1, dtype=torch.long)
    best_d = torch.full((length,), -1, dtype=torch.long)
    for k, s in enumerate(starts):
        inside = (pos >= s) & (pos < s + window)
        left = pos - s if s > 0 else torch.full_like(pos, length)  # the protein's own end is no edge
        right = s + window - 1 - pos if s + window < length else torch.full_like(pos, length)
        d = torch.minimum(left, right)
        better = inside & (d > best_d)
        best[better], best_d[better] = k, d[better]
    return starts, best


CPU_MAX_TOKENS = 4096  # the token budget of a batch on CPU / MPS (and the floor on CUDA)
CUDA_MAX_TOKENS = 65536  # the most on CUDA: larger batches gained nothing on an H200 (issue 17)
CUDA_MEMORY_FRACTION = 0.5  # of the free device memory, for one batch's attention buffers


def token_budget(trainer_kwargs: dict | None, n_heads: int, longest: int, *, n_special: int) -> int:
    """The default ``--model.max_tokens`` (batch size x padded length) for extraction on the device the
    trainer will use: CPU_MAX_TOKENS on CPU and MPS; on CUDA, from the free memory of the current device
    (``torch.cuda.mem_get_info``): half of it for one batch's attention buffers (float32 probabilities,
    statistics scratch and a half-precision copy: about 12 bytes x heads x T per token, T = the longest
    protein + ``n_special`` tokens, the backbone's ``alphabet.n_special``), rounded down to a power of two
    (so that small changes in free memory do not change the batches, which a resumed run must re-form
    identically), between CPU_MAX_TOKENS and CUDA_MAX_TOKENS and never below one protein of length T.
    Set ``--model.max_tokens`` for a fixed budget."""
    accel = str((trainer_kwargs or {}).get("accelerator") or "auto").lower()
    cuda = torch.cuda.is_available() and accel in ("gpu", "cuda", "auto")
    if not cuda:
        return CPU_MAX_TOKENS
    T = longest + n_special
    free, _total = torch.cuda.mem_get_info()
    n = int(CUDA_MEMORY_FRACTION * free) // (12 * max(1, n_heads) * T)
    n = 1 << max(0, n.bit_length() - 1) if n > 0 else 0
    return max(T, CPU_MAX_TOKENS, min(n, CUDA_MAX_TOKENS))


def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bf16 arithmetic as torch sees it (x86: AVX512-BF16 or AMX;
    oneDNN's own check otherwise). Without it bf16 is emulated and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        fn = getattr(torch.cpu, name, None)
        if fn is not None and fn():
            return True
    try:
        native = torch.backends.cpu.get_cpu_capability() != "DEFAULT"
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and native
    except Exception:  # noqa: BLE001 - private API; absent means unknown: refuse
        return False


def bf16_supported(device_type: str) -> bool:
    """Whether ``device_type`` (cpu, cuda or gpu, mps) here computes in bfloat16 natively."""
    if device_type in ("cuda", "gpu"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "mps":  # allowed, untested here (README)
        return True
    return cpu_bf16_supported()


def check_bf16(device_type: str) -> None:
    """Refuse ``--model.dtype bf16`` on a device without native bfloat16 (emulated: slower than fp32). The
    one check: the commands call it before anything is loaded, :class:`AttentionExtractor` when it starts."""
    if not bf16_supported(device_type):
        raise BackboneError(f"--model.dtype bf16: the {device_type} device here has no bfloat16 support (a CPU needs "
                            "AVX512-BF16 or AMX instructions, else bf16 is emulated and slower). "
                            "Use --model.dtype fp32.")


class AttentionExtractor(L.LightningModule):
    """Runs the frozen backbone and returns, per protein, :class:`ProteinStats`.

    The backbone is injected (built by :func:`allo_lightning.backbone.load_backbone`); it is frozen
    (``requires_grad_(False)``, eval) and has no trainable parameters here. ``heads`` (early exit):
    compute only these heads' statistics and stop after the deepest layer needed.
    """

    def __init__(self, backbone: Backbone, theta: float = 0.3, map_heads: Sequence[tuple[int, int]] = (),
                 embeddings: bool = False, dtype: str = "fp32", heads: Sequence[tuple[int, int]] | None = None,
                 window_overlap: int = 256, embedding_layer: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone.freeze()
        self.theta = float(theta)
        self.map_heads = [tuple(map(int, h)) for h in map_heads]
        self.embeddings = embeddings
        if embedding_layer is not None and not 0 <= int(embedding_layer) < backbone.n_layers:
            raise AlloError(f"embedding_layer {embedding_layer} does not exist in {backbone.name} "
                             f"({backbone.n_layers} layers, 0-based).")
        self.embedding_layer = None if embedding_layer is None else int(embedding_layer)
        self.dtype_choice = dtype
        self.heads = None if heads is None else sorted({tuple(map(int, h)) for h in heads})
        self.window_overlap = int(window_overlap)
        for layer, head in self.map_heads + (self.heads or []):
            if not (0 <= layer < backbone.n_layers and 0 <= head < backbone.n_heads):
                raise AlloError(
                    f"head (layer {layer}, head {head}) does not exist in {backbone.name} "
                    f"({backbone.n_layers} layers x {backbone.n_heads} heads; both 0-based)."
                )
        if self.heads is not None and not self.heads:
            raise AlloError("heads=[]: give at least one (layer, head), or None for every head.")
        self._saved_dtype: torch.dtype | None = None
        first = next(backbone.parameters(), None)
        self._home = first.device if first is not None else torch.device("cpu")  # where the caller keeps it
        self._stay = False

    @property
    def until_layer(self) -> int | None:
        """The deepest layer the forward pass must reach (None: all, e.g. for embeddings)."""
        if self.heads is None or self.embeddings:
            return None
        return max(ly for ly, _ in self.heads + self.map_heads)

    def on_predict_start(self) -> None:
        if self.dtype_choice == "bf16":
            check_bf16(self.device.type)
            self._saved_dtype = next(self.backbone.parameters()).dtype
            self.backbone.to(torch.bfloat16)

    def on_predict_end(self) -> None:  # the injected backbone is the caller's: give it back as it came
        if self._saved_dtype is not None:
            self.backbone.to(self._saved_dtype)
            self._saved_dtype = None
        # Lightning's teardown moves the module to the CPU next; a backbone that the caller keeps on this device
        # stays there (no 2 x model-size copy per extract call, and the caller's next call finds it where it was)
        here = self.device
        self._stay = (here.type != "cpu" and self._home.type == here.type
                      and (self._home.index or 0) == (here.index or 0))

    def cpu(self):
        if self._stay:  # the one .cpu() of Lightning's teardown, right after on_predict_end (see there)
            self._stay = False
            return self
        return super().cpu()

    def teardown(self, stage: str) -> None:  # runs after Lightning's own teardown: the window is closed
        self._stay = False

    def train(self, mode: bool = True):  # the backbone never leaves eval mode
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, tokens: torch.Tensor, real: torch.Tensor, lengths: Sequence[int]) -> list[ProteinStats]:
        raw = self._run(tokens, real, rows=False)
        return [self._protein(raw, b, n) for b, n in enumerate(lengths)]

    def _run(self, tokens: torch.Tensor, real: torch.Tensor, rows: bool) -> dict[str, Any]:
        """Statistics [B, Ly', H, T] of a padded batch (``rows``: also ``row_count``), maps, embeddings."""
        H = self.backbone.n_heads
        depth = self.backbone.n_layers if self.until_layer is None else self.until_layer + 1
        B, T = tokens.shape
        residue = self.backbone.alphabet.residue_mask(real)
        fill = torch.zeros if self.heads is None else (lambda *s, **kw: torch.full(s, float("nan"), **kw))
        names = STAT_NAMES + (("row_count",) if rows else ())
        out = {k: fill(B, depth, H, T, device=tokens.device) for k in names}
        out["total"] = fill(B, depth, H, device=tokens.device)
        stat_heads: dict[int, list[int]] = {}
        for layer, head in self.heads or ():
            stat_heads.setdefault(layer, []).append(head)
        # index tensors made before the forward pass: a host-to-device copy inside it would wait for the device
        stat_idx = {layer: torch.tensor(hs, device=tokens.device) for layer, hs in stat_heads.items()}
        maps: dict[tuple[int, int], torch.Tensor] = {}
        map_layers: dict[int, list[int]] = {}
        for layer, head in self.map_heads:
            map_layers.setdefault(layer, []).append(head)

        def on_layer(layer: int, probs_BHLL: torch.Tensor) -> None:
            if self.heads is None:
                for name, value in column_stats(probs_BHLL, residue, real, self.theta, rows).items():
                    out[name][:, layer] = value
            elif layer in stat_heads:  # only the heads asked for
                idx = stat_idx[layer]
                for name, value in column_stats(probs_BHLL[:, idx], residue, real, self.theta, rows).items():
                    out[name][:, layer].index_copy_(1, idx, value)
            for head in map_layers.get(layer, ()):  # a copy: the buffer is reused by the next layer
                maps[(layer, head)] = probs_BHLL[:, head].to(torch.float32, copy=True)

        scale = self.backbone.scale

        def on_qk(layer: int, q_BHLD: torch.Tensor, k_BHLD: torch.Tensor) -> None:  # flash: no [B, H, L, L]
            if self.heads is None:
                for name, value in qk_column_stats(q_BHLD, k_BHLD, residue, real, scale, self.theta, rows).items():
                    out[name][:, layer] = value
            elif layer in stat_heads:
                idx = stat_idx[layer]
                for name, value in qk_column_stats(q_BHLD[:, idx], k_BHLD[:, idx], residue, real, scale,
                                                   self.theta, rows).items():
                    out[name][:, layer].index_copy_(1, idx, value)
            for head in map_layers.get(layer, ()):  # the maps asked for: only these heads' probabilities
                maps[(layer, head)] = qk_probs(q_BHLD[:, head : head + 1], k_BHLD[:, head : head + 1], real,
                                               scale)[:, 0]

        flash = stats_kernel(tokens.device) == "flash" and flash_usable(tokens.device)
        hidden: list[torch.Tensor] = []
        handle = None
        if self.embeddings and self.embedding_layer is not None:  # the output of that block, not the last
            block = self.backbone.blocks()[self.embedding_layer]
            handle = block.register_forward_hook(
                lambda _m, _i, output: hidden.append(output[0] if isinstance(output, tuple) else output))
        try:
            if flash:
                emb = self.backbone(tokens, real, until_layer=self.until_layer, on_qk=on_qk)
            else:
                emb = self.backbone(tokens, real, on_layer, reuse_probs=True, until_layer=self.until_layer)
        finally:
            if handle is not None:
                handle.remove()
        out = {k: v.cpu() for k, v in out.items()}  # one device-to-host copy per statistic for the whole batch
        return {"out": out, "maps": maps, "emb": hidden[0] if hidden else emb}

    def _protein(self, raw: dict, b: int, n: int) -> ProteinStats:
        out, maps, emb = raw["out"], raw["maps"], raw["emb"]
        res = self.backbone.alphabet.residues(n)  # token positions of the n residues
        s = ProteinStats(**{k: out[k][b, :, :, res].cpu() for k in STAT_NAMES}, total=out["total"][b].cpu(),
                         heads=None if self.heads is None else list(self.heads))
        if self.map_heads:
            s.maps = torch.stack([maps[h][b, res, res] for h in self.map_heads]).cpu()
            s.map_heads = list(self.map_heads)
        if self.embeddings:
            s.embedding = emb[b, res].float().cpu()
        return s

    def windowed(self, sequence: str) -> ProteinStats:
        """Statistics of a protein longer than the context, stitched from overlapping windows: the
        column statistics (``received``, ``count``, ``mass``), map rows and embedding of residue j come
        from the window where j is most central, and ``total`` sums each residue query's confident
        pairs from that query's window. Exact for any model whose attention reaches less than about
        ``window_overlap / 2`` residues (tested); an approximation otherwise."""
        L, W = len(sequence), self.backbone.max_length
        starts, assign = window_plan(L, W, self.window_overlap)
        parts = []
        for s0 in starts:
            interrupt.check()  # a signal stops between windows, not after the whole protein
            tokens, real = (t.to(self.device) for t in self.backbone.alphabet.tokenize([sequence[s0 : s0 + W]]))
            raw = self._run(tokens, real, rows=len(starts) > 1)
            n = min(W, L - s0)
            res = self.backbone.alphabet.residues(n)
            rows = raw["out"]["row_count"][0, :, :, res].cpu() if len(starts) > 1 else None
            parts.append((self._protein(raw, 0, n), rows))
        if len(starts) == 1:
            return parts[0][0]
        first = parts[0][0]
        depth, H = first.shape
        fill = 0.0 if self.heads is None else float("nan")
        stitched = {n: torch.full((depth, H, L), fill) for n in STAT_NAMES}
        total = torch.zeros(depth, H)
        maps = torch.zeros(len(self.map_heads), L, L) if self.map_heads else None
        emb = torch.zeros(L, first.embedding.shape[-1]) if first.embedding is not None else None
        for k, (s0, (piece, row_count)) in enumerate(zip(starts, parts)):
            mine = (assign[s0 : s0 + W] == k).nonzero()[:, 0]  # residue indices within the window
            for n in STAT_NAMES:
                stitched[n][:, :, s0 + mine] = getattr(piece, n)[:, :, mine]
            total += row_count[:, :, mine].sum(-1)  # NaN for heads not computed (partial)
            if maps is not None:
                w = piece.maps.shape[-1]
                maps[:, s0 + mine, s0 : s0 + w] = piece.maps[:, mine]
            if emb is not None:
                emb[s0 + mine] = piece.embedding[mine]
        out = ProteinStats(**stitched, total=total, heads=first.heads, windows=len(starts))
        if maps is not None:
            out.maps, out.map_heads = maps, list(self.map_heads)
        out.embedding = emb
        return out

    def predict_step(self, batch: dict, batch_idx: int) -> list[tuple[str, str, ProteinStats]]:
        sequences = batch["sequences"]
        if not sequences:  # a rank with no batch of its own (more ranks than batches)
            return []
        if any(len(s) > self.backbone.max_length for s in sequences):  # such batches hold one protein
            return [(pid, seq, self.windowed(seq)) for pid, seq in zip(batch["ids"], sequences)]
        stats = self(batch["tokens"], batch["real"], [len(s) for s in sequences])
        return list(zip(batch["ids"], sequences, stats))

    def configure_optimizers(self) -> Any:  # nothing to train
        return None


def spawned(trainer) -> bool:
    """Does this trainer run in processes spawned by Lightning (``ddp_spawn``; its hooks then run there)?"""
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    return isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher)


class CacheWriter(BasePredictionWriter):
    """Writes each protein's statistics to the cache as soon as its batch is done (so an interrupted
    run keeps its finished proteins), then stops the run if a signal arrived meanwhile (see
    :mod:`allo_lightning.interrupt`). Under DDP every rank writes the proteins it ran.

    ``background`` (default): hashing and writing happen on a :class:`BackgroundWriter` thread with at
    most ``max_pending`` proteins queued; the queue is drained when prediction ends (normally, by an
    error or by a signal: the batch in flight is then on disk before the run stops), and an error of the
    writer is raised in the main thread. ``background=False`` writes in place."""

    def __init__(self, cache: StatsCache, background: bool = True, max_pending: int = 32) -> None:
        super().__init__(write_interval="batch")
        self.cache = cache
        self.written: list[str] = []
        self._writer = BackgroundWriter(cache, max_pending) if background else None
        self.stop_flag = None  # ddp_spawn: the first process's stop flag (interrupt.spawn_flag), inherited

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for pid, seq, stats in prediction:
            if self._writer is not None:
                self._writer.submit(pid, seq, stats)
            else:
                self.cache.save(seq, stats)
            self.written.append(pid)
        self._check()  # a SIGTERM / Ctrl-C during this batch stops here, with the batch cached

    def setup(self, trainer, pl_module, stage) -> None:
        import warnings

        from ..messages import quiet_lightning

        quiet_lightning()  # in processes of their own (ddp_spawn), which start without the command's filters
        warnings.filterwarnings("ignore", message=".*custom batch sampler.*")  # our sampler covers every index
        # several processes started by Lightning (children of this one, which has them once they have joined):
        # a signal to this process alone is passed on to them (see allo_lightning.interrupt)
        launcher = getattr(trainer.strategy, "launcher", None)
        if getattr(launcher, "procs", None):
            interrupt.forward_to(lambda: list(launcher.procs))
        if spawned(trainer):  # a process spawned by Lightning: it handles signals itself, and the flag
            interrupt.spawned_worker(self.stop_flag)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check()  # a signal before this batch (a process still starting, ddp_spawn's flag): none begun

    def _check(self) -> None:
        """Stop if a signal came: every queued entry on disk first (a process spawned by ddp_spawn ends at
        once after the error, without Lightning's on_exception and teardown hooks, which drain the queue)."""
        try:
            interrupt.check()
        except BaseException:
            self.close(raise_errors=False)
            raise

    def on_predict_start(self, trainer, pl_module) -> None:
        interrupt.reclaim()  # SIGTERM handled as described in allo_lightning.interrupt, not by Lightning's handler

    def close(self, raise_errors: bool = True) -> None:
        """Every queued entry on disk (then the writer's error, if any, is raised)."""
        if self._writer is not None:
            self._writer.close(raise_errors)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.close(raise_errors=False)  # the run fails with its own error; finished proteins are kept

    def teardown(self, trainer, pl_module, stage) -> None:
        interrupt.forward_to(None)
        self.close(raise_errors=False)  # drained already by one of the hooks above; this is a safety net
