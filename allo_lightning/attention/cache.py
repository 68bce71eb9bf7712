"""On-disk cache of per-protein attention statistics.

Layout: ``<root>/<backbone identity>/<sha[:2]>/<sha>.<part>.safetensors`` where ``sha`` is the
SHA-256 of the sequence and ``part`` is ``stats-t<theta>`` (the exact theta, ``repr`` of the float; every
head), ``stats-t<theta>-h<heads hash>`` (a partial entry: only some heads, from an early-exit run),
``maps-<heads hash>`` or ``emb``. A partial entry has its own name, kind (bound into its checksum) and
heads (checked when read), so it is never read as a full entry; a full entry serves a request for any heads.
Files are written to a temporary name and renamed (atomic): a run killed mid-write leaves at most a
``.<name>.<random>.tmp`` file, which is never read (no fsync per entry: an entry torn by a power loss fails
its checksum and is recomputed). Entries are read with
safetensors (no code is executed) and checked: format version, a SHA-256 over the tensor bytes bound
to the sequence's hash, its length and the exact theta (an entry renamed to another sequence or theta
fails it), the expected tensors and shapes, theta and sequence length. An entry that fails any check (truncated,
corrupted, from an older format) counts as missing and is recomputed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import queue
import threading
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from ..digest import tensors_digest
from ..errors import AlloError, OutputError
from ..outputs import atomic_path
from .stats import ProteinStats


def default_cache_dir() -> Path:
    """``$ALLO_LIGHTNING_CACHE``, else ~/.cache/allo_lightning, read as the command line reads it
    (config.resolve_cache_dir): an empty or blank variable counts as unset (never the current folder) and a
    leading ``~`` is expanded (never a literal ``./~`` folder)."""
    return Path(os.environ.get("ALLO_LIGHTNING_CACHE", "").strip() or "~/.cache/allo_lightning").expanduser()


def sequence_hash(sequence: str) -> str:
    return hashlib.sha256(sequence.encode()).hexdigest()


def heads_key(heads: list[tuple[int, int]]) -> str:
    return hashlib.sha256(repr(sorted(heads)).encode()).hexdigest()[:12]


# bump when the layout of an entry changes: older entries are then recomputed
FORMAT = "3"  # 2: checksum bound to the sequence hash and the exact theta; 3: also to the backbone folder
#                (weights identity and dtype) and, for a protein longer than the context, the window settings
_REQUIRED = {"stats": ("received", "count", "mass", "total"), "maps": ("maps", "map_heads"), "emb": ("embedding",),
             "partial": ("received", "count", "mass", "total", "heads")}


def theta_key(theta: float) -> str:
    """The exact theta as text (``repr`` of the float): 0.2999996 and 0.3 are different keys."""
    return repr(float(theta))


def window_key(length: int, window: tuple[int, int] | None) -> str:
    """The window settings a protein of ``length`` residues was run with: ``<context>,<overlap>`` when it
    is longer than the context (run as overlapping windows), else empty (the settings do not matter)."""
    if window is None or length <= window[0]:
        return ""
    return f"{int(window[0])},{int(window[1])}"


def entry_context(kind: str, sequence_sha: str, length: int, theta: float | None = None, backbone: str = "",
                  window: str = "") -> str:
    """What an entry's checksum is bound to besides its tensors: the format, the part, the sequence's
    SHA-256, its length, the backbone folder (weights identity, and ``-bf16`` for bf16 statistics), the
    window settings (``window_key``: a windowed protein only) and (statistics only) the exact theta. A file
    renamed to another sequence's or theta's name, copied into another backbone's or dtype's folder, or made
    with another ``--model.window_overlap`` therefore fails its checksum (and is recomputed)."""
    out = f"allo_lightning.cache|{FORMAT}|{kind}|{sequence_sha}|{length}|backbone={backbone}|window={window}"
    return out + (f"|theta={theta_key(theta)}" if theta is not None else "")


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None,
                context: str = "") -> None:
    """Write ``tensors`` (with a format version and a checksum over them and ``context`` in the metadata)
    to a temporary file in the same folder, flush it to disk, then rename it over ``path``."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {**(metadata or {}), "format": FORMAT, "sha256": tensors_digest(tensors, context)}
    # no fsync per entry: a killed run never leaves a partial entry under its name (atomic rename), and an
    # entry torn by a power loss fails its checksum when read and is recomputed
    try:
        with atomic_path(path, durable=False) as tmp:
            save_file(tensors, tmp, metadata=meta)
    except (OSError, SafetensorError) as e:  # disk full, permissions: one line naming the cache folder
        folder = path.parent.parent.parent if path.parent.name == path.name[:2] else path.parent
        raise OutputError(
            f"writing the cache entry {path.name} into the cache folder {folder} failed ({_reason(e)}). Free space "
            "or fix the permissions of that folder (or choose another --model.cache_dir); entries written before "
            "are kept: run the same command again to resume."
        ) from e


def _reason(e: BaseException) -> str:
    """The OS's words for an error (safetensors wraps them as 'IoError(Os { code: 28, ... })')."""
    if isinstance(e, OutputError) and isinstance(e.__cause__, OSError):  # from atomic_path
        e = e.__cause__
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    import re

    m = re.search(r"(?:code: |os error )(\d+)", str(e))  # "IoError(Os { code: 28 ...", "... (os error 28)"
    return os.strerror(int(m.group(1))) if m else f"{type(e).__name__}: {e}"


def folder_unwritable(path: str | Path) -> str | None:
    """None when a file can be written in folder ``path`` (created if needed), else why not (the OS's words).
    A real write: a permission check says yes to root on a read-only folder."""
    import tempfile

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".allo_write_test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return e.strerror or str(e)
    return None


class StatsCache:
    """``backbone_identity``: the folder of the backbone's entries (its weights identity, ``-bf16`` appended for
    bf16 statistics), bound into every checksum. ``window``: (context, overlap) of the run, bound into the
    checksum of a protein longer than the context (None binds nothing: a windowed protein's entry written with
    window settings is then a miss; extract always gives them)."""

    def __init__(self, root: str | Path | None, backbone_identity: str, theta: float,
                 embedding_layer: int | None = None, window: tuple[int, int] | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.identity = backbone_identity
        self.window = (int(window[0]), int(window[1])) if window is not None else None
        self.dir = self.root / backbone_identity
        self.theta = float(theta)
        self.embedding_layer = embedding_layer  # which hidden states the ``emb`` part holds (None: final)
        self._meta: dict[str, str] = {}  # metadata of the entry read last

    def unwritable(self) -> str | None:
        """None when entries can be written into this backbone's folder (created if needed), else why not."""
        return folder_unwritable(self.dir)

    def _path(self, sequence: str, part: str) -> Path:
        sha = sequence_hash(sequence)
        return self.dir / sha[:2] / f"{sha}.{part}.safetensors"

    def stats_path(self, sequence: str) -> Path:
        return self._path(sequence, f"stats-t{theta_key(self.theta)}")

    def partial_path(self, sequence: str, heads: list[tuple[int, int]]) -> Path:
        return self._path(sequence, f"stats-t{theta_key(self.theta)}-h{heads_key(heads)}")

    def maps_path(self, sequence: str, heads: list[tuple[int, int]]) -> Path:
        return self._path(sequence, f"maps-{heads_key(heads)}")

    @property
    def _emb_part(self) -> str:
        """``emb`` (final-layer hidden states) or ``emb-l<layer>`` (the output of block ``layer``)."""
        return "emb" if self.embedding_layer is None else f"emb-l{self.embedding_layer}"

    def emb_path(self, sequence: str) -> Path:
        return self._path(sequence, self._emb_part)

    def paths(self, sequence: str, map_heads=None, embedding: bool = False, heads=None) -> list[Path]:
        out = [self.stats_path(sequence) if heads is None else self.partial_path(sequence, heads)]
        if map_heads:
            out.append(self.maps_path(sequence, map_heads))
        if embedding:
            out.append(self.emb_path(sequence))
        return out

    def _context(self, kind: str, sequence_sha: str, length: int) -> str:
        name = self._emb_part if kind == "emb" else kind  # a layer's hidden states never pass as another's
        return entry_context(name, sequence_sha, length, self.theta if kind in ("stats", "partial") else None,
                             self.identity, window_key(length, self.window))

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
        if (meta.get("format") != FORMAT or meta.get("length") != str(length)
                or meta.get("window", "") != window_key(length, self.window)):
            return None
        self._meta = meta
        if sorted(tensors) != sorted(_REQUIRED[kind]):
            return None
        if kind in ("stats", "partial") and meta.get("theta") != theta_key(self.theta):
            return None
        if (kind == "partial") != (meta.get("partial") == "1"):  # a partial entry is never a full one
            return None
        if meta.get("sha256") != tensors_digest(tensors, self._context(kind, sequence_sha, length)):
            return None
        if kind == "stats":
            shape = tensors["received"].shape
            if (len(shape) != 3 or shape[-1] != length or tensors["count"].shape != shape
                    or tensors["mass"].shape != shape or tensors["total"].shape != shape[:-1]):
                return None
        elif kind == "partial":
            heads = sorted(tuple(map(int, h)) for h in map_heads or ())
            k = len(heads)
            if (tensors["heads"].shape != (k, 2) or sorted(tuple(x) for x in tensors["heads"].tolist()) != heads
                    or any(tensors[n].shape != (k, length) for n in ("received", "count", "mass"))
                    or tensors["total"].shape != (k,) or not meta.get("n_heads", "").isdigit()):
                return None
        elif kind == "maps":
            heads = sorted(tuple(map(int, h)) for h in map_heads or ())
            if (tensors["maps"].shape[1:] != (length, length)
                    or sorted(tuple(x) for x in tensors["map_heads"].tolist()) != heads):
                return None
        elif tensors["embedding"].dim() != 2 or tensors["embedding"].shape[-1] != length:
            return None
        return tensors

    def _stats_entry(self, sequence: str, heads=None) -> ProteinStats | None:
        """The statistics entry of ``sequence``: the full one, or (``heads`` given) the full one else the
        partial one for exactly these heads."""
        L, sha = len(sequence), sequence_hash(sequence)
        t = self._read(self.stats_path(sequence), sha, L, "stats")
        if t is not None:
            return ProteinStats(received=t["received"], count=t["count"], mass=t["mass"], total=t["total"],
                                windows=int(self._meta.get("windows", "1")))
        if heads is None:
            return None
        heads = sorted(tuple(map(int, h)) for h in heads)
        t = self._read(self.partial_path(sequence, heads), sha, L, "partial", heads)
        if t is None:
            return None
        return expand_partial(t, int(self._meta["n_heads"]), int(self._meta.get("windows", "1")))

    def complete(self, sequence: str, map_heads=None, embedding: bool = False, heads=None) -> bool:
        """True when every requested part of this sequence's entry is in the cache and passes the checks
        (``heads``: statistics of these heads are enough; a full entry also serves)."""
        L, sha = len(sequence), sequence_hash(sequence)
        if self._stats_entry(sequence, heads) is None:
            return False
        if map_heads and self._read(self.maps_path(sequence, map_heads), sha, L, "maps", map_heads) is None:
            return False
        return not embedding or self._read(self.emb_path(sequence), sha, L, "emb") is not None

    def save(self, sequence: str, stats: ProteinStats) -> None:
        L, sha = len(sequence), sequence_hash(sequence)
        meta = {"length": str(L), "theta": theta_key(self.theta), "windows": str(stats.windows),
                "window": window_key(L, self.window)}
        if stats.heads is None:
            atomic_save(stats.tensors(), self.stats_path(sequence), meta, self._context("stats", sha, L))
        elif self._read(self.stats_path(sequence), sha, L, "stats") is None:  # a full entry serves already
            heads = sorted(stats.heads)
            ly = torch.tensor([h[0] for h in heads], dtype=torch.long)
            hd = torch.tensor([h[1] for h in heads], dtype=torch.long)
            compact = {n: getattr(stats, n)[ly, hd] for n in ("received", "count", "mass", "total")}
            compact["heads"] = torch.tensor(heads, dtype=torch.int64).reshape(-1, 2)
            atomic_save(compact, self.partial_path(sequence, heads),
                        {**meta, "partial": "1", "n_heads": str(stats.shape[1])}, self._context("partial", sha, L))
        if stats.maps is not None:
            heads = torch.tensor(stats.map_heads, dtype=torch.int64).reshape(-1, 2)
            atomic_save({"maps": stats.maps, "map_heads": heads}, self.maps_path(sequence, stats.map_heads), meta,
                        self._context("maps", sha, L))
        if stats.embedding is not None:
            atomic_save({"embedding": stats.embedding.T}, self.emb_path(sequence), meta, self._context("emb", sha, L))

    def load(self, sequence: str, map_heads=None, embedding: bool = False, heads=None) -> ProteinStats:
        """The statistics of ``sequence`` (``heads`` given: a full entry, else the partial entry of
        exactly these heads, whose other heads are NaN)."""
        L, sha = len(sequence), sequence_hash(sequence)
        stats = self._stats_entry(sequence, heads)
        gone = (f"in the cache {self.dir} (it was removed or changed while this run read it: another run or a "
                "clean-up?). Run the same command again.")
        if stats is None:
            raise AlloError(f"no complete entry for a sequence of length {L} {gone}")
        if map_heads:
            m = self._read(self.maps_path(sequence, map_heads), sha, L, "maps", map_heads)
            if m is None:
                raise AlloError(f"no attention maps for a sequence of length {L} {gone}")
            stats.maps, stats.map_heads = m["maps"], [tuple(x) for x in m["map_heads"].tolist()]
        if embedding:
            e = self._read(self.emb_path(sequence), sha, L, "emb")
            if e is None:
                raise AlloError(f"no embedding for a sequence of length {L} {gone}")
            stats.embedding = e["embedding"].T.contiguous()
        return stats


def expand_partial(t: dict[str, torch.Tensor], n_heads: int, windows: int = 1) -> ProteinStats:
    """A partial entry's compact tensors ([K, L] per head) as ProteinStats over layers 0..deepest
    with NaN for every head that was not computed."""
    heads = [tuple(x) for x in t["heads"].tolist()]
    depth = max(ly for ly, _ in heads) + 1
    L = t["received"].shape[-1]
    ly = torch.tensor([h[0] for h in heads], dtype=torch.long)
    hd = torch.tensor([h[1] for h in heads], dtype=torch.long)
    full = {}
    for n in ("received", "count", "mass"):
        full[n] = torch.full((depth, n_heads, L), float("nan"))
        full[n][ly, hd] = t[n].float()
    full["total"] = torch.full((depth, n_heads), float("nan"))
    full["total"][ly, hd] = t["total"].float()
    return ProteinStats(**full, heads=sorted(heads), windows=windows)


class BackgroundWriter:
    """Writes cache entries (hashing, safetensors, atomic rename: :meth:`StatsCache.save`) on ``workers``
    background threads, so that the device never waits for the disk (hashing and file writes release the GIL).

    - bounded: at most ``max_pending`` proteins wait in the queue; :meth:`submit` blocks when it is full
      (memory stays bounded however fast the device is);
    - the same guarantees as writing in place: every entry is written whole and renamed into place
      atomically, so an entry is never read half-written and a killed run loses at most the proteins still
      queued (recomputed on resume, in the same batches: bit-identical);
    - an error in a writer (disk full, permissions) stops the writing and is raised in the calling thread,
      as an :class:`OutputError` naming the protein and the cache folder, at the next :meth:`submit` or at
      :meth:`close`;
    - :meth:`close` drains the queue (every submitted entry is on disk afterwards) and ends the threads;
      call it before reading entries.

    Each thread uses its own copy of the cache object (which remembers the metadata of the entry it read last).
    """

    def __init__(self, cache: StatsCache, max_pending: int = 8, workers: int | None = None) -> None:
        self.cache = cache
        self.workers = max(1, int(workers if workers is not None else min(4, max(1, (os.cpu_count() or 2) // 2))))
        self.max_pending = max(1, int(max_pending))
        self._queue: queue.Queue = queue.Queue(maxsize=self.max_pending)
        self._error: tuple[str, BaseException] | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.written = 0

    def __getstate__(self) -> dict:  # a fresh writer, nothing queued: threads, locks and queues are not pickled
        if self._threads:
            raise AlloError("a BackgroundWriter with entries in flight cannot be copied to another process")
        return {"cache": self.cache, "max_pending": self.max_pending, "workers": self.workers}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cache"], state["max_pending"], state["workers"])

    def _run(self, cache: StatsCache) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:  # after an error the rest is dropped: the run is failing anyway
                    pid, sequence, stats = item
                    cache.save(sequence, stats)
                    with self._lock:
                        self.written += 1
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                with self._lock:
                    if self._error is None:
                        self._error = (item[0], e)
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            pid, e = self._error
            if isinstance(e, OutputError):  # already one line naming the cache folder
                raise OutputError(f"protein {pid!r}: {e}") from e
            raise OutputError(
                f"writing the cache entry of protein {pid!r} into {self.cache.dir} failed ({type(e).__name__}: "
                f"{e}). Free space or fix the permissions of that folder (or choose another --model.cache_dir); "
                "proteins written before are kept: run the same command again to resume."
            ) from e

    def submit(self, pid: str, sequence: str, stats) -> None:
        """Queue one protein's entry (waits while ``max_pending`` are queued); raises a writer's error."""
        self._raise()
        if not self._threads:
            for i in range(self.workers):
                cache = copy.copy(self.cache)
                cache._meta = {}
                t = threading.Thread(target=self._run, args=(cache,), name=f"allo-cache-writer-{i}", daemon=True)
                t.start()
                self._threads.append(t)
        self._queue.put((pid, sequence, stats))

    def close(self, raise_errors: bool = True) -> None:
        """Wait until every queued entry is written, end the threads; raise a writer's error (if any)."""
        if self._threads:
            for _ in self._threads:
                self._queue.put(None)
            for t in self._threads:
                t.join()
            self._threads = []
        if raise_errors:
            self._raise()
