"""On-disk cache of per-protein attention statistics.

Layout: ``<root>/<backbone identity>/<sha[:2]>/<sha>.<part>.safetensors`` where ``sha`` is the
SHA-256 of the sequence and ``part`` is ``stats-t<theta>`` (the exact theta, ``repr`` of the float),
``maps-<heads hash>`` or ``emb``.
Files are written to a temporary name, flushed to disk and renamed (atomic): a run killed mid-write
leaves at most a ``.<name>.<random>.tmp`` file, which is never read. Entries are read with
safetensors (no code is executed) and checked: format version, a SHA-256 over the tensor bytes bound
to the sequence's hash, its length and the exact theta (an entry renamed to another sequence or theta
fails it), the expected tensors and shapes, theta and sequence length. An entry that fails any check (truncated,
corrupted, from an older format) counts as missing and is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from ..digest import tensors_digest
from ..outputs import atomic_path
from .stats import ProteinStats


def default_cache_dir() -> Path:
    return Path(os.environ.get("ALLO_LIGHTNING_CACHE", Path.home() / ".cache" / "allo_lightning"))


def sequence_hash(sequence: str) -> str:
    return hashlib.sha256(sequence.encode()).hexdigest()


def heads_key(heads: list[tuple[int, int]]) -> str:
    return hashlib.sha256(repr(sorted(heads)).encode()).hexdigest()[:12]


# bump when the layout of an entry changes: older entries are then recomputed
FORMAT = "2"  # 2: checksum bound to the sequence hash and the exact theta
_REQUIRED = {"stats": ("received", "count", "mass", "total"), "maps": ("maps", "map_heads"), "emb": ("embedding",)}


def theta_key(theta: float) -> str:
    """The exact theta as text (``repr`` of the float): 0.2999996 and 0.3 are different keys."""
    return repr(float(theta))


def entry_context(kind: str, sequence_sha: str, length: int, theta: float | None = None) -> str:
    """What an entry's checksum is bound to besides its tensors: the format, the part, the sequence's
    SHA-256, its length and (statistics only) the exact theta. A file renamed to another sequence's or
    another theta's name therefore fails its checksum."""
    out = f"allo_lightning.cache|{FORMAT}|{kind}|{sequence_sha}|{length}"
    return out + (f"|theta={theta_key(theta)}" if theta is not None else "")


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None,
                context: str = "") -> None:
    """Write ``tensors`` (with a format version and a checksum over them and ``context`` in the metadata)
    to a temporary file in the same folder, flush it to disk, then rename it over ``path``."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {**(metadata or {}), "format": FORMAT, "sha256": tensors_digest(tensors, context)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


class StatsCache:
    def __init__(self, root: str | Path | None, backbone_identity: str, theta: float) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.dir = self.root / backbone_identity
        self.theta = float(theta)

    def _path(self, sequence: str, part: str) -> Path:
        sha = sequence_hash(sequence)
        return self.dir / sha[:2] / f"{sha}.{part}.safetensors"

    def stats_path(self, sequence: str) -> Path:
        return self._path(sequence, f"stats-t{theta_key(self.theta)}")

    def maps_path(self, sequence: str, heads: list[tuple[int, int]]) -> Path:
        return self._path(sequence, f"maps-{heads_key(heads)}")

    def emb_path(self, sequence: str) -> Path:
        return self._path(sequence, "emb")

    def paths(self, sequence: str, map_heads=None, embedding: bool = False) -> list[Path]:
        out = [self.stats_path(sequence)]
        if map_heads:
            out.append(self.maps_path(sequence, map_heads))
        if embedding:
            out.append(self.emb_path(sequence))
        return out

    def _context(self, kind: str, sequence_sha: str, length: int) -> str:
        return entry_context(kind, sequence_sha, length, self.theta if kind == "stats" else None)

    def _read(self, path: Path, sequence_sha: str, length: int, kind: str,
              map_heads=None) -> dict[str, torch.Tensor] | None:
        """Tensors of a cache file, or None when it is missing, truncated, corrupted, of another format,
        or not for this sequence length / theta / list of heads."""
        try:
            # Read the whole file into memory (not memory-mapped: tensors stay valid whatever later happens
            # to the file, and a file cut short cannot crash the process when a tensor is used).
            data = path.read_bytes()
            n = int.from_bytes(data[:8], "little")
            if len(data) < 8 + n:
                return None
            meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
            if not isinstance(meta, dict):
                return None
            tensors = load_bytes(data)
        except (OSError, SafetensorError, ValueError, RuntimeError, MemoryError, AttributeError, TypeError):
            return None
        if meta.get("format") != FORMAT or meta.get("length") != str(length):
            return None
        if sorted(tensors) != sorted(_REQUIRED[kind]):
            return None
        if kind == "stats" and meta.get("theta") != theta_key(self.theta):
            return None
        if meta.get("sha256") != tensors_digest(tensors, self._context(kind, sequence_sha, length)):
            return None
        if kind == "stats":
            shape = tensors["received"].shape
            if (len(shape) != 3 or shape[-1] != length or tensors["count"].shape != shape
                    or tensors["mass"].shape != shape or tensors["total"].shape != shape[:-1]):
                return None
        elif kind == "maps":
            heads = sorted(tuple(map(int, h)) for h in map_heads or ())
            if (tensors["maps"].shape[1:] != (length, length)
                    or sorted(tuple(x) for x in tensors["map_heads"].tolist()) != heads):
                return None
        elif tensors["embedding"].dim() != 2 or tensors["embedding"].shape[-1] != length:
            return None
        return tensors

    def complete(self, sequence: str, map_heads=None, embedding: bool = False) -> bool:
        """True when every requested part of this sequence's entry is in the cache and passes the checks."""
        L, sha = len(sequence), sequence_hash(sequence)
        if self._read(self.stats_path(sequence), sha, L, "stats") is None:
            return False
        if map_heads and self._read(self.maps_path(sequence, map_heads), sha, L, "maps", map_heads) is None:
            return False
        return not embedding or self._read(self.emb_path(sequence), sha, L, "emb") is not None

    def save(self, sequence: str, stats: ProteinStats) -> None:
        L, sha = len(sequence), sequence_hash(sequence)
        meta = {"length": str(L), "theta": theta_key(self.theta)}
        atomic_save(stats.tensors(), self.stats_path(sequence), meta, self._context("stats", sha, L))
        if stats.maps is not None:
            heads = torch.tensor(stats.map_heads, dtype=torch.int64).reshape(-1, 2)
            atomic_save({"maps": stats.maps, "map_heads": heads}, self.maps_path(sequence, stats.map_heads), meta,
                        self._context("maps", sha, L))
        if stats.embedding is not None:
            atomic_save({"embedding": stats.embedding.T}, self.emb_path(sequence), meta, self._context("emb", sha, L))

    def load(self, sequence: str, map_heads=None, embedding: bool = False) -> ProteinStats:
        L, sha = len(sequence), sequence_hash(sequence)
        t = self._read(self.stats_path(sequence), sha, L, "stats")
        if t is None:
            raise KeyError(f"no complete cache entry for a sequence of length {L} in {self.dir}")
        stats = ProteinStats(received=t["received"], count=t["count"], mass=t["mass"], total=t["total"])
        if map_heads:
            m = self._read(self.maps_path(sequence, map_heads), sha, L, "maps", map_heads)
            if m is None:
                raise KeyError("attention maps not in cache")
            stats.maps, stats.map_heads = m["maps"], [tuple(x) for x in m["map_heads"].tolist()]
        if embedding:
            e = self._read(self.emb_path(sequence), sha, L, "emb")
            if e is None:
                raise KeyError("embedding not in cache")
            stats.embedding = e["embedding"].T.contiguous()
        return stats
