"""One tensor digest for the whole package: the backbone's weights identity, cache entries and probe
checkpoints all hash named tensors the same way.

The digest is SHA-256 (or HMAC-SHA256 when a ``key`` is given) over an optional ``context`` string, then,
for every tensor in name order, its name, dtype, shape and raw bytes, each part length-prefixed so that
no two different inputs feed the hash the same byte stream.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

import torch


def derive_key(*parts: str) -> bytes:
    """A 32-byte key for :func:`tensors_digest` from strings (e.g. a purpose and a backbone identity)."""
    h = hashlib.sha256()
    for part in parts:
        b = part.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little") + b)
    return h.digest()


def _raw(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous().reshape(-1)  # 0-dim tensors cannot be viewed as bytes
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def tensors_digest(tensors: Mapping[str, torch.Tensor], context: str = "", key: bytes | None = None,
                   float32: bool = False) -> str:
    """Hex digest of ``tensors`` (names, dtypes, shapes, bytes; sorted by name) and ``context``.

    ``key``: HMAC-SHA256 with this key instead of plain SHA-256 (see :func:`derive_key`).
    ``float32``: hash floating-point tensors as float32, so that a model cast to another dtype keeps
    its identity."""
    h = hmac.new(key, digestmod=hashlib.sha256) if key is not None else hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little") + b)

    put(context.encode("utf-8", "surrogatepass"))
    for name in sorted(tensors):
        t = tensors[name]
        if float32 and t.is_floating_point():
            t = t.float()
        put(f"{name}|{t.dtype}|{tuple(t.shape)}".encode("utf-8", "surrogatepass"))
        put(_raw(t))
    return h.hexdigest()
