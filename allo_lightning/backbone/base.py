"""A frozen protein language model with a uniform interface for attention capture.

A backbone tokenizes sequences and runs a forward pass during which, layer after layer, the
attention probabilities of that layer are recomputed from the layer's own q and k (after q_ln/k_ln
and rotary, captured by a hook on the rotary module) and handed to a callback. Only one layer's
maps exist at a time.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..digest import tensors_digest
from ..errors import AlloError

# ESM-C's tokenizer (``esm.tokenization.EsmSequenceTokenizer``): id -> token. ESM-2 (fair-esm's ``Alphabet``
# and transformers' ``EsmTokenizer``) has the same ids for the specials and every single-letter token.
ESM_TOKENS = (
    "<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q",
    "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-",
)


@dataclass(frozen=True)
class Alphabet:
    """A backbone's token alphabet: the ids of its special tokens and what is added around the residues
    (as fair-esm's contact head is told ``prepend_bos``, ``append_eos`` and ``eos_idx``). Every piece of
    code that tokenizes, masks special tokens or finds residue positions reads it, never constants.

    Args:
        tokens: token of each id (only single-letter tokens are looked up from sequences).
        pad: the padding id.
        unk: the id of a letter that has no token.
        bos: the id prepended to every sequence (``<cls>``), or None when nothing is prepended.
        eos: the id appended to every sequence, or None when nothing is appended.
    """

    tokens: tuple[str, ...]
    pad: int
    unk: int
    bos: int | None = None
    eos: int | None = None

    def __post_init__(self) -> None:
        specials = [i for i in (self.pad, self.unk, self.bos, self.eos) if i is not None]
        if len(set(specials)) != len(specials) or not all(0 <= i < len(self.tokens) for i in specials):
            raise AlloError(f"alphabet special ids {specials} must be distinct ids of its {len(self.tokens)} tokens")
        lookup = torch.full((128,), self.unk, dtype=torch.long)
        for i, tok in enumerate(self.tokens):
            if len(tok) == 1 and i not in specials:
                lookup[ord(tok)] = i
        object.__setattr__(self, "_lookup", lookup)

    @property
    def prepend_bos(self) -> bool:
        return self.bos is not None

    @property
    def append_eos(self) -> bool:
        return self.eos is not None

    @property
    def n_special(self) -> int:
        """Special tokens added to each sequence (BOS and/or EOS): a protein of L residues is L + n_special tokens."""
        return int(self.prepend_bos) + int(self.append_eos)

    @property
    def first(self) -> int:
        """Token position of the first residue (1 after a BOS, else 0)."""
        return int(self.prepend_bos)

    def residues(self, n: int) -> slice:
        """The token positions of the n residues of a sequence: ``tokens[b, alphabet.residues(n)]``."""
        return slice(self.first, self.first + n)

    def tokenize(self, sequences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, Lmax + n_special] (BOS? + residues + EOS?, padded at the end with ``pad``) and the
        real-token mask (True at residues and at the BOS/EOS added)."""
        n_tok = max(len(s) for s in sequences) + self.n_special
        tokens = torch.full((len(sequences), n_tok), self.pad, dtype=torch.long)
        real = torch.zeros(len(sequences), n_tok, dtype=torch.bool)
        for b, seq in enumerate(sequences):
            codes = torch.frombuffer(bytearray(seq.encode("ascii")), dtype=torch.uint8).long()
            if self.prepend_bos:
                tokens[b, 0] = self.bos
            tokens[b, self.residues(len(seq))] = self._lookup[codes]
            if self.append_eos:
                tokens[b, self.first + len(seq)] = self.eos
            real[b, : len(seq) + self.n_special] = True
        return tokens, real

    def residue_mask(self, real: torch.Tensor) -> torch.Tensor:
        """True at residue tokens [B, T] of a batch from :meth:`tokenize` (``real``: its real-token mask):
        the real tokens less the BOS at the start and the EOS at the end of each sequence."""
        n = real.sum(-1, keepdim=True) - self.n_special  # residues per sequence
        pos = torch.arange(real.shape[-1], device=real.device)
        return real & (pos >= self.first) & (pos < self.first + n)


ESMC_ALPHABET = Alphabet(ESM_TOKENS, pad=1, unk=3, bos=0, eos=2)  # ESM-C: <cls> + residues + <eos>
ESM2_ALPHABET = Alphabet(ESM_TOKENS, pad=1, unk=3, bos=0, eos=2)  # ESM-2: the same (fair-esm's ESM-1b alphabet)

LayerCallback = Callable[[int, torch.Tensor], None]
QKCallback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (layer, q_BHLD, k_BHLD): rotary applied

TINY_MEANINGLESS = (
    "NOTE: the 'tiny' backbone is a random, untrained model built in code for tests and the offline "
    "quick start; its attention and every score made from it mean NOTHING biologically."
)


class MeaninglessScoresWarning(UserWarning):
    """Warned when a random backbone (``tiny``, ``esm2_tiny``) is loaded through the Python API: every
    score made with it means nothing (the commands say so in their messages and outputs instead)."""


def meaningless_message(name: str) -> str:
    """What to tell the user when the random backbone ``name`` is used."""
    return (f"the {name!r} backbone is a random, untrained model built in code for tests and the offline quick "
            "start; its attention and every score made from it mean NOTHING biologically.")


def tokenize(sequences: list[str], alphabet: Alphabet = ESMC_ALPHABET) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and real-token mask of ``sequences`` in ``alphabet`` (default ESM-C's; a backbone's is
    ``backbone.alphabet``): see :meth:`Alphabet.tokenize`."""
    return alphabet.tokenize(sequences)


def hash_parameters(module: nn.Module) -> str:
    """Content hash of a state dict (names, shapes, dtypes and float32 bytes): the weights identity."""
    return tensors_digest(module.state_dict(), context="allo_lightning.weights", float32=True)


class Backbone(nn.Module):
    """Base class: subclasses set ``model``, ``name``, ``n_layers``, ``n_heads``, ``d_model``,
    ``alphabet`` and implement ``_rotary_modules``, ``_qk_to_BHLD`` and ``_run``."""

    name: str
    n_layers: int
    n_heads: int
    d_model: int
    max_length: int  # residues (without BOS/EOS)
    alphabet: Alphabet  # its tokens and special tokens: what tokenizing and masking read
    scale: float  # multiplies q.k before softmax

    def __init__(self) -> None:
        super().__init__()
        self.identity = ""  # "<name>-<hash>", set by the loader

    @property
    def meaningless(self) -> bool:
        return self.name.startswith("tiny") or self.name.endswith("tiny")

    @property
    def note(self) -> str:
        """The note every output of a random backbone carries (its own name in it), else empty."""
        return f"NOTE: {meaningless_message(self.name)}" if self.meaningless else ""

    @property
    def label(self) -> str:
        """Name for plot titles: tiny backbones are marked as meaningless."""
        return f"{self.name} (random: meaningless)" if self.meaningless else self.name

    def freeze(self) -> "Backbone":
        self.requires_grad_(False)
        self.eval()
        return self

    def train(self, mode: bool = True) -> "Backbone":  # frozen: always eval
        return super().train(False)

    # -- to implement ---------------------------------------------------------------------------
    def _rotary_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def _qk_to_BHLD(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _run(self, tokens: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Forward pass; returns final-layer hidden states [B, L, D]."""
        raise NotImplementedError

    # -- capture ----------------------------------------------------------------------------------
    def _attention_probs(self, q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, key_pad_B11L: torch.Tensor | None,
                         out: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax attention probabilities in float32 from q and k [B, H, L, D] (rotary applied),
        padded keys masked to exactly 0. Few passes over the [B, H, L, L] tensor: one matmul (into
        ``out`` when given), an in-place mask (only when the batch has padding), an in-place softmax."""
        scores = _half_scores(q_BHLD, k_BHLD, self.scale, out)
        if scores is None:
            q, k = q_BHLD.float(), k_BHLD.float()
            if self.scale != 1.0:
                q = q * self.scale  # [B, H, L, D]: cheaper than scaling the [B, H, L, L] scores
            scores = torch.matmul(q, k.transpose(-1, -2), out=out)
        if key_pad_B11L is not None:
            scores.masked_fill_(key_pad_B11L, torch.finfo(torch.float32).min)
        return torch.softmax(scores, dim=-1, out=scores)

    def _fused_attention_modules(self) -> list[nn.Module] | None:
        """Attention modules whose forward is replaced during capture by ``_fused_forward``, which
        computes the probabilities once and uses them for the layer's output too (ESM-C:
        ``esmc.esmc_fused_forward``, ESM-2: ``esm2.esm2_fused_forward``). None (the default): the hook
        on the rotary module recomputes them next to the model's kernel."""
        return None

    # ``_fused_forward(attn, layer, probs_of, on_layer, *inputs)``: set by subclasses with fused modules
    _fused_forward: Callable | None = None

    @contextlib.contextmanager
    def _capture_qk(self, on_qk: QKCallback) -> Iterator[None]:
        """The model runs its own attention (its fused kernel, no probabilities); a hook on each layer's rotary
        module hands ``on_qk`` that layer's q and k [B, H, L, D] as the attention uses them."""
        def make_hook(layer: int):
            def hook(_module, _inputs, output):
                on_qk(layer, *self._qk_to_BHLD(*output[:2]))

            return hook

        handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(self._rotary_modules())]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def _capture(self, real: torch.Tensor, on_layer: LayerCallback, reuse_probs: bool = False) -> Iterator[None]:
        key_pad_B11L = None if bool(real.all()) else ~real[:, None, None, :]
        buffer: list[torch.Tensor] = []  # one [B, H, L, L] float32 tensor reused by every layer

        def probs_of(q_BHLD: torch.Tensor, k_BHLD: torch.Tensor) -> torch.Tensor:
            out = None
            if reuse_probs:
                shape = (*q_BHLD.shape[:-1], k_BHLD.shape[-2])
                if not buffer or buffer[0].shape != shape or buffer[0].device != q_BHLD.device:
                    buffer[:] = [torch.empty(shape, dtype=torch.float32, device=q_BHLD.device)]
                out = buffer[0]
            return self._attention_probs(q_BHLD, k_BHLD, key_pad_B11L, out)

        attns = self._fused_attention_modules()
        if attns is not None:
            saved = [attn.__dict__.get("forward") for attn in attns]
            for i, attn in enumerate(attns):
                attn.forward = functools.partial(self._fused_forward, attn, i, probs_of, on_layer)
            try:
                yield
            finally:
                for attn, forward in zip(attns, saved):
                    del attn.forward  # back to the class's forward (or what was there before)
                    if forward is not None:
                        attn.forward = forward
            return

        with self._capture_qk(lambda layer, q_BHLD, k_BHLD: on_layer(layer, probs_of(q_BHLD, k_BHLD))):
            yield

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, real: torch.Tensor, on_layer: LayerCallback | None = None,
        reuse_probs: bool = False, until_layer: int | None = None, on_qk: QKCallback | None = None,
    ) -> torch.Tensor | None:
        """Final-layer hidden states [B, L, D]; with ``on_layer``, calls ``on_layer(layer, probs_BHLL)``
        for every layer in order (float32 probabilities, query x key, padded keys exactly 0).

        ``reuse_probs=True`` hands every layer the same buffer, overwritten by the next layer (no
        fresh [B, H, L, L] allocation per layer, which on CPU costs page faults): copy what you keep.
        By default each layer gets its own tensor.

        ``until_layer=l`` (early exit): the forward pass stops right after layer ``l``'s attention
        probabilities were handed to ``on_layer`` (layers l+1... are never run) and None is returned
        (there are no final hidden states).

        ``on_qk`` (instead of ``on_layer``): calls ``on_qk(layer, q_BHLD, k_BHLD)`` with every layer's q and k
        (rotary applied; the scores are ``self.scale * q k^T``, padded keys masked) while the model computes its
        attention with its own kernel: no probabilities are materialised (the ``flash`` statistics kernel)."""
        if on_layer is None and until_layer is None and on_qk is None:
            return self._run(tokens, real)
        if on_layer is not None and on_qk is not None:
            raise AlloError("give on_layer (probabilities) or on_qk (q and k), not both")
        callback = on_qk or on_layer or (lambda _layer, _probs: None)
        if until_layer is not None:
            if not 0 <= until_layer < self.n_layers:
                raise AlloError(f"until_layer {until_layer} outside 0..{self.n_layers - 1}")
            inner = callback

            def callback(layer: int, *tensors: torch.Tensor) -> None:
                inner(layer, *tensors)
                if layer >= until_layer:
                    raise _EarlyExit

        capture = self._capture_qk(callback) if on_qk is not None else self._capture(real, callback, reuse_probs)
        with capture:
            try:
                return self._run(tokens, real)
            except _EarlyExit:
                return None


_HALF_SCORES = {"ok": True, "out": True}


def _half_scores(q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, scale: float,
                 out: torch.Tensor | None) -> torch.Tensor | None:
    """Scores q.k^T in float32 from bf16/fp16 q and k on CUDA with the half-precision tensor cores
    (``torch.bmm(..., out_dtype=torch.float32)``: products of half-precision numbers are exact in float32
    and the sums are accumulated in float32, so this equals upcasting q and k first up to the order of the
    sums). None (the float32 path is used) on other devices and dtypes, or where torch lacks it."""
    if (not _HALF_SCORES["ok"] or q_BHLD.device.type != "cuda"
            or q_BHLD.dtype not in (torch.bfloat16, torch.float16) or k_BHLD.dtype != q_BHLD.dtype):
        return None
    B, H, L, D = q_BHLD.shape
    Lk = k_BHLD.shape[-2]
    exact_scale = scale != 1.0 and math.frexp(scale)[0] == 0.5  # a power of two: exact in half precision
    q = q_BHLD * scale if exact_scale else q_BHLD
    q3, k3 = q.reshape(B * H, L, D), k_BHLD.reshape(B * H, Lk, D).transpose(1, 2)
    scores = None
    if out is not None and _HALF_SCORES["out"]:
        try:
            torch.bmm(q3, k3, out_dtype=torch.float32, out=out.view(B * H, L, Lk))
            scores = out
        except (TypeError, RuntimeError, NotImplementedError):  # no out= variant: allocate instead
            _HALF_SCORES["out"] = False
    if scores is None:
        try:
            scores = torch.bmm(q3, k3, out_dtype=torch.float32).view(B, H, L, Lk)
        except (TypeError, RuntimeError, NotImplementedError):  # torch without bmm(out_dtype=) here
            _HALF_SCORES["ok"] = False
            return None
    if scale != 1.0 and not exact_scale:
        scores.mul_(scale)
    return scores


class _EarlyExit(Exception):
    """Raised after the deepest needed layer to leave the backbone's forward pass."""
