"""Writing outputs safely: atomic files (temporary name, then rename) and output folders that are
not overwritten without ``--overwrite``."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

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
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path ``.<name>.<random>.tmp`` beside ``path``; on success its data is flushed to
    disk and it is renamed to ``path``. An interrupted write leaves at most that temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
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


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A table written by the csv module (quoting handled), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return Path(path)


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:  # the temporary name ends in .tmp: give the format explicitly
        fig.savefig(tmp, **{"dpi": 150, "bbox_inches": "tight", "format": Path(path).suffix.lstrip(".") or "png",
                            **kwargs})
    plt.close(fig)
    return Path(path)


def prepare_out_dir(path: str | Path, overwrite: bool, marker: str) -> Path:
    """Create the output folder. If ``marker`` (a file this command writes) already exists there,
    refuse unless ``overwrite``: a finished result is never replaced by accident."""
    path = check_writable_dir(path, "the output folder")
    if (path / marker).exists() and not overwrite:
        raise OutputExistsError(
            f"{path / marker} already exists. Pass --overwrite to replace it, or choose another folder "
            "with --trainer.default_root_dir DIR."
        )
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
