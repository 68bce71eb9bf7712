"""Writing outputs safely: atomic files (temporary name, then rename) and output folders that are
not overwritten without ``--overwrite``.

Per-protein files (maps/, pymol/, chimerax/ ...) depend on the proteins of a run, so a new run would
not replace all of them. A command records them with :func:`record_outputs` before writing them, in a
manifest ``.allo_lightning.<marker>.files.json`` in the output folder; :func:`prepare_out_dir` of the
next run of that command (with ``--overwrite``, or after an unfinished run) deletes exactly the files
listed there, nothing else: no stale file is left beside new ones, and no unrelated file is touched."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import OutputError, OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give ``tmp`` the usual permissions (mkstemp makes it 0600) and rename it to ``path``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path ``.<name>.<random>.tmp`` beside ``path``; on success its data is flushed to
    disk (``durable``) and it is renamed to ``path``. An interrupted write leaves at most that temporary
    file. ``durable=False`` skips the flush: a killed process still never leaves a partial file under
    ``path``, but after a power loss the renamed file may be empty or torn (for files that are checked
    when read, such as cache entries)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)  # the data is on disk before the rename makes the file visible
            finally:
                os.close(fd)
        publish(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _finite(obj: Any) -> Any:
    """NaN / inf floats -> None (JSON has no NaN: an undefined metric is written as null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON (NaN and inf become null)."""
    return write_text(path, json.dumps(_finite(obj), indent=2, default=str, allow_nan=False) + "\n")


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:  # the temporary name ends in .tmp: give the format explicitly
        fig.savefig(tmp, **{"dpi": 150, "bbox_inches": "tight", "format": Path(path).suffix.lstrip(".") or "png",
                            **kwargs})
    plt.close(fig)
    return Path(path)


def _manifest(out_dir: Path, marker: str) -> Path:
    return out_dir / f".allo_lightning.{marker}.files.json"


def _recorded(out_dir: Path, marker: str) -> list[str]:
    try:
        files = json.loads(_manifest(out_dir, marker).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def _inside(out_dir: Path, rel: str) -> Path | None:
    """``out_dir / rel`` when ``rel`` is a plain relative path that stays inside ``out_dir``, else None."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or any(p in ("..", "") for p in parts) or "\\" in rel:
        return None
    path = out_dir / rel
    try:
        if not path.parent.resolve().is_relative_to(out_dir.resolve()):
            return None  # a folder replaced by a link to elsewhere
    except OSError:
        return None
    return path


def record_outputs(out_dir: str | Path, marker: str, files: Iterable[str | Path]) -> None:
    """Add ``files`` (paths inside ``out_dir``) to the manifest of the command whose marker file is
    ``marker``; call it before writing them, so that even an interrupted run's files are known."""
    out_dir = Path(out_dir)
    rel = set(_recorded(out_dir, marker))
    for f in map(Path, files):
        try:
            f = f.relative_to(out_dir)
        except ValueError:
            pass  # already relative to out_dir
        rel.add(f.as_posix())
    write_json(_manifest(out_dir, marker), {"marker": marker, "files": sorted(rel)})


def remove_recorded(out_dir: str | Path, marker: str) -> list[Path]:
    """Delete the files listed in the manifest of ``marker`` (and folders left empty by that), then the
    manifest. Entries that point outside ``out_dir`` or are not files are skipped. Returns what was deleted."""
    out_dir = Path(out_dir)
    removed, folders = [], set()
    for rel in _recorded(out_dir, marker):
        path = _inside(out_dir, rel)
        if path is None or not (path.is_file() or path.is_symlink()):
            continue
        path.unlink()
        removed.append(path)
        folders.update(p for p in path.parents if p != out_dir and out_dir in p.parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()  # only when empty: a user's file in maps/ keeps the folder
        except OSError:
            pass
    _manifest(out_dir, marker).unlink(missing_ok=True)
    return removed


def prepare_out_dir(path: str | Path, overwrite: bool, marker: str) -> Path:
    """Create the output folder. If ``marker`` (a file this command writes) already exists there,
    refuse unless ``overwrite``: a finished result is never replaced by accident. Otherwise the
    per-protein files the previous run of this command recorded (:func:`record_outputs`) are deleted.

    Several processes: only global rank zero checks and prepares the folder (it alone writes there); the
    other ranks leave after extraction and touch nothing in it."""
    from .distributed import is_rank_zero

    if not is_rank_zero():
        return Path(path).expanduser()
    path = check_writable_dir(path, "the output folder")
    if (path / marker).exists() and not overwrite:
        raise OutputExistsError(
            f"{path / marker} already exists. Pass --overwrite to replace it, or choose another folder "
            "with --trainer.default_root_dir DIR."
        )
    remove_recorded(path, marker)
    return path


def check_writable_dir(path: str | Path, what: str) -> Path:
    """Create folder ``path`` if needed and check that a file can be written in it (a real write: a
    permission check says yes to root on a read-only file system)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder. Give a folder path.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".allo_write_test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{what} {path} cannot be written ({e.strerror or e}). Choose a writable folder.") from None
    return path
