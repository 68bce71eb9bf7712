"""Every CSV table the package writes goes through :func:`write_csv` (or :func:`csv_text`), and every
per-protein file name through :func:`file_names`.

Tables: one formatting policy for every cell of every table, applied by the writer itself (callers pass
raw values; :func:`format_cell`):

- missing or undefined (``None``, NaN): an empty cell;
- ``bool`` (also numpy's): ``true`` / ``false``;
- integers (also numpy's): as they are (``12``, ``-3``);
- flags meant to be summed, the columns named in :data:`COUNT_FLAGS` (``label``, ``predicted``, ``windowed``,
  ``hit``, ``site_top1``, ``site_top3``): 0/1, also when the caller passes a ``bool`` (every other yes/no
  column, e.g. heads.csv's ``selected``, is ``true`` / ``false``);
- other real numbers: 9 significant digits, trailing zeros dropped (``format(x, ".9g")``: ``0.25``,
  ``1e-12``, ``0.333333333``, ``12``); ``inf`` / ``-inf``. Nine digits write every float32 value exactly
  (the model, the statistics and the probe compute in float32), so rankings, ties and metrics
  recomputed from a table are the ones the run computed, and a p-value keeps its digits however small;
- text: as it is, neutralised against formula injection (below);
- anything else (a tensor, a path): a ``TypeError``, a bug in the caller.

Writing: the ``csv`` module (fields with the delimiter, quotes or line breaks are quoted),
``\\r\\n`` line endings (RFC 4180), UTF-8, atomically. Text cells that a spreadsheet would run as a formula (starting
with ``=``, ``+``, ``-``, ``@``, a tab or a line break) get a leading apostrophe, the usual neutraliser;
numbers such as ``-0.5`` or ``-1e-05`` are left alone, and so is every non-text value. A text cell that
itself starts with an apostrophe gets one more, so :func:`unescape_cell` (used by :func:`read_csv`) gives
back exactly the text that was written: ids with commas, quotes or such leading characters round-trip.

File names: ids are reduced to ``[A-Za-z0-9_.-]`` (at most 80 characters, no leading dot); an id whose
name would collide with another's (also case-insensitively, as on macOS and Windows) gets a short hash
of the id appended, so ``a/b``, ``a_b`` and ``a:b`` get three files (``a_b`` keeps its own name). The
id -> name mapping is returned so that commands can record it in their run JSON.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .outputs import atomic_path

# columns whose yes/no values are written 0/1 (counts you can sum: sites.csv's hit column summed over the
# rank-1 rows is the number of top-1 hits), whatever the caller passes; README, "Output tables and file names"
COUNT_FLAGS = ("label", "predicted", "windowed", "hit", "site_top1", "site_top3")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\Z")


def escape_cell(text: str) -> str:
    """Neutralise a text cell against spreadsheet formula injection (reversible, see unescape_cell)."""
    if text.startswith("'") or (text.startswith(FORMULA_START) and not _NUMBER.match(text)):
        return "'" + text
    return text


def unescape_cell(text: str) -> str:
    """The text :func:`escape_cell` was given."""
    return text.removeprefix("'")


def format_cell(value: Any) -> str:
    """A cell's text under the package's one policy (see the module's docstring)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return escape_cell(value)
    if _is_bool(value):
        return "true" if value else "false"  # numpy's bool_ is neither bool nor a number
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isnan(x):
            return ""
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return format(x, FLOAT_FORMAT)
    raise TypeError(f"a table cell must be text, a number, a bool or None, not {type(value).__name__}: {value!r}")


FLOAT_FORMAT = ".9g"  # every float32 exactly, float64 to 9 significant digits (see the module's docstring)

Row = Sequence[Any] | Mapping[str, Any]


def _cells(row: Row, columns: Sequence[str]) -> list[str]:
    values = [row.get(c) for c in columns] if isinstance(row, Mapping) else list(row)
    if len(values) != len(columns):
        raise ValueError(f"a row has {len(values)} cells for {len(columns)} columns")
    return [format_cell(int(v) if c in COUNT_FLAGS and _is_bool(v) else v) for c, v in zip(columns, values)]


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", None) == "b"


def _write(f, columns: Sequence[str], rows: Iterable[Row]) -> None:
    # "\r\n" (RFC 4180): the csv module quotes a field only for characters of the line terminator, so
    # with "\n" alone a cell with a bare "\r" would be written unquoted and split the row when read
    w = csv.writer(f, lineterminator="\r\n")
    w.writerow([escape_cell(str(c)) for c in columns])
    for row in rows:
        w.writerow(_cells(row, columns))


def csv_text(columns: Sequence[str], rows: Iterable[Row]) -> str:
    """The table as text (for callers that write it themselves)."""
    buf = io.StringIO()
    _write(buf, columns, rows)
    return buf.getvalue()


def rows_text(columns: Sequence[str], rows: Iterable[Row]) -> str:
    """Rows only (no header), as :func:`write_csv` writes them: for tables appended to as work finishes."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    for row in rows:
        w.writerow(_cells(row, columns))
    return buf.getvalue()


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Row]) -> Path:
    """Write a table atomically. ``rows``: sequences in column order or mappings (missing keys: empty);
    cells are raw values, formatted by the one policy of :func:`format_cell` (callers never format)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        _write(f, columns, rows)
    return Path(path)


def iter_csv(path: str | Path) -> Iterator[list[str]]:
    """The rows of a table written by :func:`write_csv`, header first, as lists of text with the
    neutralising apostrophes removed; streamed (a proteome's table is never held in memory)."""
    reader = None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, strict=True)
            for row in reader:
                yield [unescape_cell(c) for c in row]
    except (csv.Error, UnicodeDecodeError) as e:  # a damaged or hand-edited table: one located line
        from .errors import InputError

        line = reader.line_num if reader is not None else None
        raise InputError(f"{path}, line {line}: not a readable table ({e}). Restore it, or run the command that "
                         "wrote it again.", path=path, line=line) from None


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """A table written by :func:`write_csv`, as dicts of text (see :func:`iter_csv`; an empty cell: missing or
    undefined; ``true``/``false``; numbers as Python's ``float``/``int`` read them)."""
    rows = iter_csv(path)
    header = next(rows, None)
    return [] if header is None else [dict(zip(header, row)) for row in rows]


# -- file names -------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}


def _hash(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def _base(pid: str, max_length: int) -> str:
    safe = _UNSAFE.sub("_", pid).lstrip(".")[:max_length] or "protein"
    return f"{safe}-{_hash(pid, 8)}" if safe.split(".")[0].upper() in _RESERVED else safe


def file_names(ids: Iterable[str], max_length: int = 80) -> dict[str, str]:
    """Distinct, portable file names (without suffix) for ``ids``: ``{id: name}`` in the order given.

    An id keeps its reduced form (``rec/1`` -> ``rec_1``) unless that collides with another id's
    (case-insensitively): then every colliding id except one that is already spelled that way gets a
    hash of itself appended (``a/b`` -> ``a_b-1c0f3e2a`` beside ``a_b``). The result depends only on
    the set of ids, not on their order."""
    ids = list(dict.fromkeys(ids))
    names = {pid: _base(pid, max_length) for pid in ids}
    n = 8
    while True:
        groups: dict[str, list[str]] = {}
        for pid, name in names.items():
            groups.setdefault(name.casefold(), []).append(pid)
        clashes = [pids for pids in groups.values() if len(pids) > 1]
        if not clashes:
            return names
        for pids in clashes:
            exact = [pid for pid in pids if names[pid] == pid]
            for pid in pids:
                if len(exact) == 1 and pid == exact[0]:
                    continue  # the id spelled exactly like the name keeps it
                base = _base(pid, max_length)
                names[pid] = f"{base}-{_hash(pid, n)}" if n <= 64 else f"{base}-{_hash(pid, 64)}-{ids.index(pid)}"
        n += 8
