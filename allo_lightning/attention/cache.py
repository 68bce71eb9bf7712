"""On-disk cache of per-protein attention statistics.

Layout: ``<root>/<backbone identity>/<sha[:2]>/<sha>.<part>.safetensors`` where ``sha`` is the
SHA-256 of the sequence and ``part`` is ``stats-t<theta>``, ``maps-<heads hash>`` or ``emb``.
Files are written to a temporary name and renamed (atomic), and read with safetensors (no code is
executed); an unreadable or truncated entry counts as missing and is recomputed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .stats import ProteinStats


def default_cache_dir() -> Path:
    return Path(os.environ.get("ALLO_LIGHTNING_CACHE", Path.home() / ".cache" / "allo_lightning"))


def sequence_hash(sequence: str) -> str:
    return hashlib.sha256(sequence.encode()).hexdigest()


def heads_key(heads: list[tuple[int, int]]) -> str:
    return hashlib.sha256(repr(sorted(heads)).encode()).hexdigest()[:12]


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StatsCache:
    def __init__(self, root: str | Path | None, backbone_identity: str, theta: float) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.dir = self.root / backbone_identity
        self.theta = float(theta)

    def _path(self, sequence: str, part: str) -> Path:
        sha = sequence_hash(sequence)
        return self.dir / sha[:2] / f"{sha}.{part}.safetensors"

    def stats_path(self, sequence: str) -> Path:
        return self._path(sequence, f"stats-t{self.theta:g}")

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

    @staticmethod
    def _read(path: Path, length: int) -> dict[str, torch.Tensor] | None:
        """Tensors of a cache file, or None when missing, truncated or not for this length."""
        try:
            tensors = load_file(str(path))
        except (FileNotFoundError, SafetensorError, OSError, ValueError, RuntimeError):
            return None
        if any(t.shape[-1] != length for k, t in tensors.items() if k not in ("total", "map_heads")):
            return None
        return tensors

    def complete(self, sequence: str, map_heads=None, embedding: bool = False) -> bool:
        return all(self._read(p, len(sequence)) is not None for p in self.paths(sequence, map_heads, embedding))

    def save(self, sequence: str, stats: ProteinStats) -> None:
        meta = {"length": str(len(sequence)), "theta": f"{self.theta:g}"}
        atomic_save(stats.tensors(), self.stats_path(sequence), meta)
        if stats.maps is not None:
            heads = torch.tensor(stats.map_heads, dtype=torch.int64).reshape(-1, 2)
            atomic_save({"maps": stats.maps, "map_heads": heads}, self.maps_path(sequence, stats.map_heads), meta)
        if stats.embedding is not None:
            atomic_save({"embedding": stats.embedding.T}, self.emb_path(sequence), meta)

    def load(self, sequence: str, map_heads=None, embedding: bool = False) -> ProteinStats:
        L = len(sequence)
        t = self._read(self.stats_path(sequence), L)
        if t is None:
            raise KeyError(f"no complete cache entry for a sequence of length {L} in {self.dir}")
        stats = ProteinStats(received=t["received"], count=t["count"], mass=t["mass"], total=t["total"])
        if map_heads:
            m = self._read(self.maps_path(sequence, map_heads), L)
            if m is None:
                raise KeyError("attention maps not in cache")
            stats.maps, stats.map_heads = m["maps"], [tuple(x) for x in m["map_heads"].tolist()]
        if embedding:
            e = self._read(self.emb_path(sequence), L)
            if e is None:
                raise KeyError("embedding not in cache")
            stats.embedding = e["embedding"].T.contiguous()
        return stats
