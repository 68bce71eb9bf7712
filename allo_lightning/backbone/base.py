"""A frozen protein language model with a uniform interface for attention capture.

A backbone tokenizes sequences and runs a forward pass during which, layer after layer, the
attention probabilities of that layer are recomputed from the layer's own q and k (after q_ln/k_ln
and rotary, captured by a hook on the rotary module) and handed to a callback. Only one layer's
maps exist at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Callable, Iterator

import torch
from torch import nn

# ESM-C and ESM-2 share these token ids for residues and specials.
VOCAB = (
    "<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q",
    "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-",
)
BOS_ID, PAD_ID, EOS_ID = 0, 1, 2
_LOOKUP = torch.full((128,), 3, dtype=torch.long)
for _i, _tok in enumerate(VOCAB):
    if len(_tok) == 1:
        _LOOKUP[ord(_tok)] = _i

LayerCallback = Callable[[int, torch.Tensor], None]

TINY_MEANINGLESS = (
    "NOTE: the 'tiny' backbone is a random, untrained model built in code for tests and the offline "
    "quick start; its attention and every score made from it mean NOTHING biologically."
)


def tokenize(sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, Lmax+2] (BOS + residues + EOS, padded with PAD) and the real-token mask."""
    n_tok = max(len(s) for s in sequences) + 2
    tokens = torch.full((len(sequences), n_tok), PAD_ID, dtype=torch.long)
    for b, seq in enumerate(sequences):
        codes = torch.frombuffer(bytearray(seq.encode("ascii")), dtype=torch.uint8).long()
        tokens[b, 0] = BOS_ID
        tokens[b, 1 : len(seq) + 1] = _LOOKUP[codes]
        tokens[b, len(seq) + 1] = EOS_ID
    return tokens, tokens != PAD_ID


def hash_parameters(module: nn.Module) -> str:
    """Content hash of a state dict (names, shapes, dtypes and float32 bytes): the weights identity."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.float()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Backbone(nn.Module):
    """Base class: subclasses set ``model``, ``name``, ``n_layers``, ``n_heads``, ``d_model`` and
    implement ``_rotary_modules``, ``_qk_to_BHLD`` and ``_run``."""

    name: str
    n_layers: int
    n_heads: int
    d_model: int
    max_length: int  # residues (without BOS/EOS)
    scale: float  # multiplies q.k before softmax

    def __init__(self) -> None:
        super().__init__()
        self.identity = ""  # "<name>-<hash>", set by the loader

    @property
    def meaningless(self) -> bool:
        return self.name.startswith("tiny") or self.name.endswith("tiny")

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
    @contextlib.contextmanager
    def _capture(self, real: torch.Tensor, on_layer: LayerCallback) -> Iterator[None]:
        key_mask_B11L = real[:, None, None, :]
        neg = torch.finfo(torch.float32).min

        def make_hook(layer: int):
            def hook(_module, _inputs, output):
                q, k = self._qk_to_BHLD(*output[:2])
                scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.scale
                scores = scores.masked_fill(~key_mask_B11L, neg)
                on_layer(layer, torch.softmax(scores, dim=-1))

            return hook

        handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(self._rotary_modules())]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, real: torch.Tensor, on_layer: LayerCallback | None = None
    ) -> torch.Tensor:
        if on_layer is None:
            return self._run(tokens, real)
        with self._capture(real, on_layer):
            return self._run(tokens, real)
