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
    except OutputError:
        raise
    except OSError as e:  # disk full, quota, permissions: one line naming the file, not a traceback
        raise OutputError(f"{path}: could not be written ({e.strerror or e}). Free space (or fix the folder's "
                          "permissions) and run the same command again.") from e
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


def _ours(out_dir: Path) -> set[str]:
    """Every file recorded in a manifest in ``out_dir``: written by an earlier run of some command there
    (commands may share a folder: heads, fit and report all write config.yaml, run.log and report.html)."""
    return {f for m in out_dir.glob(".allo_lightning.*.files.json")
            for f in _recorded(out_dir, m.name.removeprefix(".allo_lightning.").removesuffix(".files.json"))}


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


_LOCKS: dict[str, int] = {}  # output folder -> open file descriptor holding its lock (this process)
_MADE: dict[str, tuple[int, int]] = {}  # a folder check_writable_dir created (its real path) -> (st_dev, st_ino)
LOCK_NAME = ".allo_lightning.lock"


def lock_out_dir(path: str | Path) -> None:
    """Hold an exclusive lock on output folder ``path`` until :func:`release_locks` (the end of the command)
    or the end of the process: a second run into the same folder at the same time is refused at once, never
    mixed with this one. ``fcntl.flock`` on ``path/.allo_lightning.lock`` (non-blocking; released by the OS
    when the process ends, even when killed); nothing is locked where fcntl does not exist (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    key = str(Path(path).resolve())
    if key in _LOCKS:
        return
    lock = Path(path) / LOCK_NAME
    if lock.is_symlink():
        raise OutputError(f"{lock} is a symbolic link; remove it (a run locks the output folder with this file).")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise OutputError(f"the output folder {path} cannot be locked ({e.strerror or e}). Choose a writable "
                          "folder.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held, there = os.fstat(fd), os.lstat(lock)  # a failed run tidying its folder may have just removed the
        if (held.st_dev, held.st_ino) != (there.st_dev, there.st_ino):  # file opened: its lock would be nobody's
            raise OSError
    except OSError:
        os.close(fd)
        raise OutputError(f"another run is writing into the output folder {path} now. Wait for it to finish, or "
                          "choose another folder.") from None
    _LOCKS[key] = fd


def release_locks(failed: bool = False) -> None:
    """Release the output folders locked by this process (the end of a command). ``failed`` (the command
    stopped on an error): the folders it created (:func:`check_writable_dir`: output, checkpoint or cache
    folders and the parents made for them) that hold nothing, or nothing but this process's lock, are removed
    first (the lock still held), so a mistyped input leaves no empty folder behind; a folder that is not the
    one created (replaced since, or reached through a link now) stays. Rank zero only: the other ranks may end
    first."""
    if failed and _MADE:  # (not before: --help and flag errors end here too, and import no torch)
        from .distributed import is_rank_zero

        if is_rank_zero():
            _remove_made()
    _MADE.clear()
    while _LOCKS:
        _, fd = _LOCKS.popitem()
        os.close(fd)  # closing the descriptor releases its flock


def _remove_made() -> None:
    for key in sorted(_MADE, key=lambda k: -len(Path(k).parts)):  # the deepest first
        folder = Path(key)
        try:
            st = os.lstat(folder)
            if (st.st_dev, st.st_ino) != _MADE[key] or os.path.realpath(folder) != key:
                continue  # not the folder this run made (replaced since, or a link now on the way)
            names = {e.name for e in os.scandir(folder)}
            if names - {LOCK_NAME} or (names and key not in _LOCKS):
                continue  # something in it, or another run's lock
            if names:
                (folder / LOCK_NAME).unlink()
            folder.rmdir()  # refuses a folder that is not empty: nothing else is ever removed
        except OSError:
            continue


def _make_folders(path: Path) -> list[Path]:
    """``path.mkdir(parents=True, exist_ok=True)`` that returns the folders this call made itself (outermost
    first): one another process made at the same moment is not among them."""
    try:
        os.mkdir(path)
        return [path]
    except FileNotFoundError:
        if path.parent == path:
            raise
        made = _make_folders(path.parent)
    except FileExistsError:
        if not path.is_dir():
            raise
        return []
    try:
        os.mkdir(path)
        made.append(path)
    except FileExistsError:
        if not path.is_dir():
            raise
    return made


def check_out_files(out_dir: str | Path, files: Iterable[str | Path], overwrite: bool, marker: str,
                    flag: str = "--trainer.default_root_dir") -> None:
    """Before work: refuse when a file this run may write (``files``, inside ``out_dir``) would be written
    through a symbolic link (the file, or a folder on its way, pointing elsewhere: nothing is ever written
    outside the output folder), or exists already and was not written by an earlier run here (it is in no
    manifest of the folder, see :func:`record_outputs`): a user's own file is never replaced without
    ``overwrite``. Call it after :func:`prepare_out_dir` (which removes the earlier run's recorded files);
    commands call it through :func:`claim_out_files`."""
    from .distributed import is_rank_zero

    if not is_rank_zero():
        return
    out_dir = Path(out_dir)
    root = out_dir.resolve()
    recorded = _ours(out_dir)
    folders: set[Path] = set()  # folders checked already (thousands of proteins share four folders)
    for f in map(Path, files):
        try:
            rel = f.relative_to(out_dir)
        except ValueError:
            rel = f  # already relative to out_dir
        path = out_dir / rel
        here = out_dir
        for i, part in enumerate(rel.parts):  # every link on the way (a folder or the file itself)
            here = here / part
            if i < len(rel.parts) - 1:
                if here in folders:
                    continue
                folders.add(here)
            if here.is_symlink():
                raise OutputError(f"{here} is a symbolic link (to {os.readlink(here)}); this run would write "
                                  "through it. Remove it, or choose another output folder.")
        if not path.parent.resolve().is_relative_to(root):  # pragma: no cover - caught as a link above
            raise OutputError(f"{path} is outside the output folder {out_dir}. Choose another output folder.")
        if path.exists() and rel.as_posix() not in recorded and not overwrite:
            raise OutputExistsError(
                f"{path} already exists and was not written by an earlier run into this folder. Move it away, "
                f"pass --overwrite to replace it, or choose another folder with {flag} DIR.")


def claim_out_files(out_dir: str | Path, marker: str, overwrite: bool, fixed: Iterable[str],
                    per_protein: Iterable[str | Path] = (), links_only: Iterable[str | Path] = (),
                    flag: str = "--trainer.default_root_dir") -> None:
    """Every command's one check of what it will write into ``out_dir``, after :func:`prepare_out_dir` and
    before any expensive work (before the backbone loads, before config.yaml): :func:`check_out_files` over
    its ``fixed`` files (names inside ``out_dir``: tables, report.html, config.yaml, run.log,
    report_files/..., training_log/...) and its ``per_protein`` files (no link on the way, no user's file
    replaced without ``overwrite``), and over ``links_only`` (files the command itself may leave and read
    again, e.g. predict's partial rows: no link on the way). Then the fixed files are recorded in the
    manifest of ``marker`` (:func:`record_outputs`), so that an unfinished run's files, and those of another
    command sharing the folder, are known as this tool's; per-protein files are recorded by the command as
    it writes them. Rank zero only (the other ranks write nothing there)."""
    from .distributed import is_rank_zero

    if not is_rank_zero():
        return
    out_dir = Path(out_dir)
    fixed = [out_dir / f for f in fixed]
    check_out_files(out_dir, [*fixed, *per_protein], overwrite, marker, flag)
    check_out_files(out_dir, links_only, True, marker, flag)
    record_outputs(out_dir, marker, fixed)


def prepare_out_dir(path: str | Path, overwrite: bool, marker: str, flag: str = "--trainer.default_root_dir") -> Path:
    """Create the output folder. If ``marker`` (a file this command writes) already exists there,
    refuse unless ``overwrite``: a finished result is never replaced by accident. Otherwise the
    per-protein files the previous run of this command recorded (:func:`record_outputs`) are deleted.
    The folder is locked for the rest of the command (:func:`lock_out_dir`). ``flag``: the command's flag
    naming the folder (for the message).

    Several processes: only global rank zero checks and prepares the folder (it alone writes there); the
    other ranks leave after extraction and touch nothing in it."""
    from .distributed import is_rank_zero

    if not is_rank_zero():
        return Path(path).expanduser()
    path = check_writable_dir(path, "the output folder")
    lock_out_dir(path)  # held until the command ends: a second run into this folder is refused meanwhile
    if (path / marker).exists() and not overwrite:
        raise OutputExistsError(
            f"{path / marker} already exists. Pass --overwrite to replace it, or choose another folder "
            f"with {flag} DIR."
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
        for made in _make_folders(path):  # removed again if the command fails before writing in it (release_locks)
            st = os.stat(made)
            _MADE.setdefault(os.path.realpath(made), (st.st_dev, st.st_ino))
        fd, probe = tempfile.mkstemp(dir=path, prefix=".allo_write_test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{what} {path} cannot be written ({e.strerror or e}). Choose a writable folder.") from None
    return path
