"""Reading proteins: labelled tables (TSV/CSV) and FASTA files, with validation.

Every rejection is an :class:`InputError` whose message names the file, the line (1-based) and the
protein id where known, and says what to do. Nothing is silently dropped: a bad row stops the read.

Accepted real-world forms: UTF-8 (with or without a byte-order mark) or UTF-16 with a byte-order mark
(Excel's "Unicode text"); LF, CRLF or CR line endings; FASTA with UniProt headers
(``>sp|P29274|AA2AR_HUMAN ...`` gives the id ``P29274``) and ``;`` comment lines; sequences in lower
case, with whitespace or line breaks inside and one trailing ``*``; tables separated by tabs, commas or
semicolons. Other tables (predict's structure mapping table) are read by the same rules through
:func:`read_rows`.

Refused besides bad content: anything that is not a regular file (a folder, ``/dev/zero``, a FIFO, a
socket: checked before reading, so nothing hangs); a quote that is never closed (named at the line where
it opened, instead of swallowing the rest of the file into one field); ids (and clusters) with control,
zero-width or bidi characters (Unicode categories Cc, Cf, Cs, Co, Cn, Zl, Zp); ``sites`` and ``labels``
that disagree; with ``require_sites=True`` (training), a row without sites (write ``none`` for a
protein with no allosteric site).

Proteins without a cluster that share a sequence (identical, or one contained in the other, a fragment
or domain: see :func:`shared_sequence_clusters`) get a common cluster ``seq:<sha256[:12]>``, so that a
split by cluster never puts them on both sides; the returned :class:`ProteinList` carries a note about it.

Residue positions are 1-based everywhere a user sees them.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import itertools
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .protein import ALPHABET, EXTRA, MAX_RESIDUES, STANDARD, Protein, too_long_message  # noqa: F401 - re-exported

FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas", ".fsa", ".mpfa", ".pep")

_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # only real line breaks (str.splitlines also splits on \f, \x1c...)
_WHITESPACE = re.compile(r"\s+")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SHOWN = 60  # characters of an id or a token shown in a message


def _short(text: str, n: int = _SHOWN) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


@dataclass(frozen=True)
class _Where:
    """Where a problem is: file, line, id. ``str()`` gives the message prefix."""

    path: Path
    line: int | None = None
    pid: str | None = None

    def __str__(self) -> str:
        out = str(self.path)
        if self.line is not None:
            out += f", line {self.line}"
        if self.pid:
            out += f", id {_short(self.pid)!r}"
        return out

    def error(self, problem: str, todo: str) -> InputError:
        return InputError(f"{self}: {problem} {todo}", path=self.path, line=self.line, pid=self.pid, todo=todo)


def _where(path: str | Path, line: int | None = None, pid: str | None = None) -> _Where:
    return _Where(Path(path), line, pid)


def _as_where(where: str | _Where) -> _Where:
    # clean_sequence / parse_sites accept a plain string too (the prefix of the message)
    return where if isinstance(where, _Where) else _Where(Path(str(where)))


def clean_sequence(raw: str, where: str | _Where, max_length: int | None = None) -> str:
    """Strip whitespace and one trailing '*', upper-case; check letters and length."""
    w = _as_where(where)
    seq = _WHITESPACE.sub("", raw)
    seq = seq.removesuffix("*")
    if not seq:
        raise w.error("empty sequence.", "Give the amino-acid sequence or remove the entry.")
    if len(seq) > MAX_RESIDUES:
        raise w.error(too_long_message(len(seq)), "Split it into domains (keep the site numbering consistent) or "
                      "remove it; check that this is a protein sequence.")
    seq = seq.translate(_ASCII_UPPER)  # not str.upper(): it maps some non-ASCII letters ('ſ', 'ı') to ASCII
    bad = sorted(set(seq) - ALPHABET)
    if bad:
        pos = next(i for i, c in enumerate(seq) if c not in ALPHABET) + 1
        shown = ", ".join(repr(c) for c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        hint = ""
        if set(bad) & set("-."):
            hint = " '-' and '.' are alignment gaps: give the unaligned sequence."
        elif any(c.isdigit() for c in bad):
            hint = " Digits are not residues: remove position numbers (e.g. from GenBank/EMBL format)."
        elif "*" in bad:
            hint = " '*' (a stop) is allowed only once, at the end."
        raise w.error(
            f"unknown residue letter(s) {shown} (first at position {pos} of the sequence without whitespace).",
            f"Allowed: the 20 standard amino acids and {', '.join(EXTRA)} (upper or lower case); replace "
            f"other letters (e.g. by X) or remove them.{hint}",
        )
    if max_length is not None and len(seq) > max_length:
        raise w.error(
            f"sequence has {len(seq)} residues, more than the backbone's limit of {max_length}.",
            "Split the protein into domains of at most that length (keep the site numbering consistent) or "
            "remove it, or use a backbone with a longer context.",
        )
    return seq


_SITE = re.compile(r"^([A-Za-z]?)([0-9]+)$")
_MAX_DIGITS = 9  # a position with more digits is outside any sequence (and int() of huge strings is refused)


def parse_sites(text: str, sequence: str, where: str | _Where) -> tuple[int, ...]:
    """Comma/semicolon/space separated 1-based positions, optionally with the residue letter (F168)."""
    w = _as_where(where)
    sites: set[int] = set()
    for tok in re.split(r"[,;\s]+", text.strip()):
        if not tok:
            continue
        m = _SITE.match(tok)
        if not m:
            raise w.error(f"cannot read site {_short(tok)!r}.",
                          "Write 1-based positions like 168 or F168, separated by commas.")
        digits = m.group(2)
        letter = m.group(1).upper()
        pos = int(digits) if len(digits.lstrip("0")) <= _MAX_DIGITS else 10**_MAX_DIGITS
        if pos < 1 or pos > len(sequence):
            raise w.error(
                f"site {_short(tok)!r} is outside the sequence (length {len(sequence)}; positions are 1-based).",
                "Check the numbering against the sequence (UniProt numbering).",
            )
        if letter and sequence[pos - 1] != letter:
            raise w.error(
                f"site {_short(tok)!r} says residue {letter} but the sequence has {sequence[pos - 1]} at "
                f"position {pos}.",
                "Check the numbering or the sequence version (the letter is optional).",
            )
        sites.add(pos)
    return tuple(sorted(sites))


def parse_labels(text: str, sequence: str, where: str | _Where) -> tuple[int, ...]:
    w = _as_where(where)
    s = _WHITESPACE.sub("", text)
    if len(s) != len(sequence) or set(s) - {"0", "1"}:
        problem = (f"'labels' has {len(s)} characters for {len(sequence)} residues."
                   if len(s) != len(sequence) else "'labels' has characters other than 0 and 1.")
        raise w.error(problem, "Give one 0/1 character per residue, or give 'sites' instead.")
    return tuple(i + 1 for i, c in enumerate(s) if c == "1")


_BAD_ID_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")  # control, format (zero-width, bidi), ...


def _check_id(pid: str, w: _Where, what: str = "id") -> None:
    """Refuse control and invisible characters: zero-width or bidi characters make ids (and clusters)
    that look alike but differ, or that display reordered."""
    bad = next((c for c in pid if unicodedata.category(c) in _BAD_ID_CATEGORIES), None)
    if bad is not None:
        name = unicodedata.name(bad, "")
        raise w.error(f"the {what} contains the invisible or control character U+{ord(bad):04X}"
                      f"{f' ({name})' if name else ''}.",
                      f"Use printable characters in {what}s (remove zero-width, bidi and control characters).")


class ProteinList(list):
    """The proteins of a file (a list), plus ``notes``: things the reader did that the user should know
    (e.g. clusters given to shared sequences). Commands print them."""

    notes: list[str]

    def __init__(self, proteins=(), notes=()) -> None:
        super().__init__(proteins)
        self.notes = list(notes)


MAX_INPUT_BYTES = 1 << 30  # 1 GiB: Swiss-Prot's whole FASTA is about 0.3 GB
_CHUNK = 1 << 24  # read in 16 MiB chunks, each checked for NUL bytes before the next is read


def _nul_error(path: Path, data: bytes, at: int) -> InputError:
    line = len(_LINE_BREAK.findall(data[:at].decode("utf-8", "replace"))) + 1
    return _Where(path, line).error("contains NUL bytes: this is not a text table or FASTA file.",
                                    "Give a TSV/CSV table or a FASTA file saved as UTF-8 text.")


def _read_bounded(f, path: Path) -> bytes:
    """The file's bytes, read in chunks: a binary file (a NUL byte, outside UTF-16 text) is refused at
    its first chunk, and a file that grows past MAX_INPUT_BYTES while read is refused, so neither is
    ever read whole."""
    parts: list[bytes] = []
    size = 0
    utf16 = None
    while chunk := f.read(_CHUNK):
        if utf16 is None:
            utf16 = chunk.startswith((b"\xff\xfe", b"\xfe\xff"))
        if not utf16 and b"\x00" in chunk:
            data = b"".join(parts) + chunk
            raise _nul_error(path, data, size + chunk.index(b"\x00"))
        size += len(chunk)
        if size > MAX_INPUT_BYTES:
            raise _Where(path).error(f"is more than the {MAX_INPUT_BYTES:,} bytes a protein table or FASTA file may "
                                     "have here.", "Give a smaller file (split it).")
        parts.append(chunk)
    return b"".join(parts)


def _read_text(path: Path) -> str:
    w = _Where(path)

    def refuse_irregular(mode: int) -> None:
        if stat.S_ISDIR(mode):
            raise w.error("is a folder, not a file.", "Give a TSV/CSV table or a FASTA file.")
        if not stat.S_ISREG(mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "something else")
            raise w.error(f"is {kind}, not a regular file.",
                          "Give a TSV/CSV table or a FASTA file saved on disk (save piped data to a file first).")

    try:
        refuse_irregular(os.stat(path).st_mode)  # before opening: opening a FIFO waits for a writer
        # O_NONBLOCK and fstat: a file swapped for a FIFO after the check is refused too, never waited on
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise w.error("file not found.", "Check the path (given with --data.path).") from None
    except OSError as e:
        raise w.error(f"cannot read the file ({e.strerror}).", "Check the path and its permissions.") from None
    try:
        st = os.fstat(fd)
        refuse_irregular(st.st_mode)
        if st.st_size > MAX_INPUT_BYTES:
            raise w.error(f"is {st.st_size:,} bytes, more than the {MAX_INPUT_BYTES:,} bytes a protein table or "
                          "FASTA file may have here.",
                          "Give a smaller file (split it), or check that this is the file you meant.")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = _read_bounded(f, path)
    except OSError as e:
        raise w.error(f"cannot read the file ({e.strerror}).", "Check the path and its permissions.") from None
    finally:
        if fd >= 0:
            os.close(fd)
    encoding = "utf-8"
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"  # Excel's "Unicode text"; the BOM gives the byte order
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1 if encoding == "utf-8" else None
        raise _Where(path, line).error(
            f"not valid {encoding.upper()} text (byte {e.start}).", "Save the file as UTF-8 text."
        ) from None
    if "\x00" in text:
        line = len(_LINE_BREAK.findall(text[: text.index("\x00")])) + 1
        raise _Where(path, line).error(
            "contains NUL bytes: this is not a text table or FASTA file.",
            "Give a TSV/CSV table or a FASTA file saved as UTF-8 text.",
        )
    return text


def _lines(text: str) -> list[str]:
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_fasta(path: str | Path, max_length: int | None = None) -> ProteinList:
    """FASTA (UniProt headers accepted: the id is the accession of ``sp|P29274|AA2AR_HUMAN``)."""
    path = Path(path)
    return ProteinList(_parse_fasta(_read_text(path), path, max_length))


def _parse_fasta(text: str, path: Path, max_length: int | None) -> list[Protein]:
    proteins: list[Protein] = []
    seen: dict[str, int] = {}
    header: str | None = None
    header_line = 0
    chunks: list[str] = []

    def flush() -> None:
        if header is None:
            return
        pid = fasta_id(header)
        if not pid:
            raise _Where(path, header_line).error("empty FASTA header.", "Write '>ID' before the sequence.")
        w = _Where(path, header_line, pid)
        _check_id(pid, w)
        if pid in seen:
            raise w.error(f"duplicate id (first at line {seen[pid]}).", "Give every protein a unique id.")
        seen[pid] = header_line
        seq = clean_sequence("".join(chunks), w, max_length)
        proteins.append(Protein(id=pid, sequence=seq, source=f"{path}:{header_line}"))

    for n, line in enumerate(_lines(text), start=1):
        s = line.strip()
        if not s or s.startswith(";"):
            continue
        if s.startswith(">"):
            flush()
            header, header_line, chunks = s[1:].strip(), n, []
        elif header is None:
            raise _Where(path, n).error("sequence line before any '>' header.",
                                        "A FASTA file starts with a '>ID' line.")
        else:
            chunks.append(s)
    flush()
    if not proteins:
        raise _Where(path).error("no FASTA records found.", "Each record starts with a '>ID' line.")
    return proteins


_RCSB_ENTITY = re.compile(r"^[0-9][A-Za-z0-9]{3}_[0-9]+$")  # 4EIY_1 of RCSB's ">4EIY_1|Chain A|..."


def fasta_id(header: str) -> str:
    """The id of a FASTA header: the first word, the accession of UniProt's ``db|ACC|NAME``, or the entry and
    entity of RCSB PDB's ``4EIY_1|Chain A|...`` (whose first word would be ``4EIY_1|Chain``)."""
    words = header.split()
    first = words[0] if words else ""
    parts = first.split("|")
    if len(parts) >= 3 and parts[0] in ("sp", "tr") and parts[1]:
        return parts[1]
    if len(parts) == 2 and parts[1] in ("Chain", "Chains") and _RCSB_ENTITY.match(parts[0]):
        return parts[0]
    return first


def _delimiter(header_line: str) -> str:
    for d in ("\t", ",", ";"):
        if d in header_line:
            return d
    return ","


_DELIM_NAME = {"\t": "tab", ",": "comma", ";": "semicolon"}


def read_table(path: str | Path, max_length: int | None = None, require_sites: bool = False) -> ProteinList:
    """TSV or CSV with ``id``, ``sequence`` and ``sites`` or ``labels``; optional ``cluster``,
    ``family``, ``gene``, ``orthosteric_sites``, ``modulator_class``. The delimiter is a tab if the header
    has one, else a comma, else a semicolon. ``require_sites``: refuse a row without sites (training);
    otherwise an empty cell reads as no sites."""
    path = Path(path)
    return _parse_table(_read_text(path), path, max_length, require_sites)


def _quote_opened(lines: list[str], lo: int, hi: int) -> int:
    """Index in ``lines`` of the line (within ``lines[lo:hi + 1]``) where the quote that is still open at
    the end of that range was opened: the last line that made the count of quotes odd."""
    opened, odd = lo, False
    for i in range(lo, min(hi, len(lines) - 1) + 1):
        n = lines[i].count('"')
        if n % 2:
            odd = not odd
            if odd:
                opened = i
    return opened


class _Rows:
    """csv rows with the file line where each starts; an unclosed quote is named at the line where it
    opened (the csv module would otherwise read the rest of the file into one field)."""

    def __init__(self, lines: list[str], first: int, delim: str, path: Path) -> None:
        self.lines, self.first, self.delim, self.path = lines, first, delim, path
        self.reader = csv.reader(io.StringIO("\n".join(lines[first:])), delimiter=delim, strict=True)

    def _unclosed(self, start: int, end: int) -> InputError:
        opened = _quote_opened(self.lines, self.first + start - 1, self.first + end - 1) + 1
        return _Where(self.path, opened).error(
            "a quote (\") opened on this line is not closed where the field ends.",
            'Close the quote, or remove it (a quote inside a quoted field is written "").')

    def next(self) -> tuple[int, list[str]] | None:
        """(file line where the row starts, fields), or None at the end."""
        start = self.reader.line_num + 1
        try:
            row = next(self.reader)
        except StopIteration:
            return None
        except csv.Error as e:
            if self.reader.line_num > start or "end of data" in str(e):
                raise self._unclosed(start, self.reader.line_num) from None
            raise _Where(self.path, start + self.first).error(
                f"cannot parse the row ({e}).", "Check the quotes and delimiters in this row.") from None
        end = self.reader.line_num
        if end > start and any(self.delim in c.partition("\n")[2] for c in row if "\n" in c):
            # a quoted field running over lines that hold delimiters: rows swallowed by an unclosed quote
            raise self._unclosed(start, end)
        return start + self.first, row


def _sites_of(get, col, seq: str, w: _Where, require_sites: bool) -> tuple[int, ...]:
    sites_text, labels_text = get("sites"), get("labels") if "labels" in col else ""
    if sites_text.lower() == "none":
        sites: tuple[int, ...] | None = ()
    else:
        sites = parse_sites(sites_text, seq, w) if sites_text else None
    labels = parse_labels(labels_text, seq, w) if labels_text else None
    if sites is not None and labels is not None and sites != labels:
        only_s = sorted(set(sites) - set(labels))
        only_l = sorted(set(labels) - set(sites))

        def show(xs: list[int]) -> str:
            return ", ".join(map(str, xs[:8])) + (" ..." if len(xs) > 8 else "") if xs else "none"

        raise w.error(f"'sites' and 'labels' disagree (only in sites: {show(only_s)}; only in labels: "
                      f"{show(only_l)}).", "Keep one of the two columns, or make them agree.")
    if sites is None and labels is None:
        if require_sites:
            raise w.error("no sites: the 'sites' cell is empty" + (" and so is 'labels'." if "labels" in col else "."),
                          "Training needs every protein's allosteric sites: give them (1-based positions), "
                          "write none for a protein without any, or remove the row.")
        return ()
    return sites if sites is not None else labels


@dataclass
class Table:
    """A delimited table read by this module's rules: ``header`` (the names, stripped and lower-cased) on
    file line ``line``; :meth:`rows` gives the rows."""

    path: Path
    line: int
    delimiter: str
    header: list[str]
    _rows: _Rows

    def refuse_duplicate_columns(self) -> None:
        dupes = sorted({h for h in self.header if h and self.header.count(h) > 1})
        if dupes:
            raise _Where(self.path, self.line).error(f"column(s) {', '.join(map(repr, dupes))} appear more than once.",
                                                     "Keep one column of each name.")

    def rows(self, needed: int) -> Iterator[tuple[int, list[str]]]:
        """(file line where the row starts, its fields padded to the header's length) of every row that is
        not blank. A row with fewer than ``needed`` fields, or with a non-empty field past the header's,
        is refused."""
        n = len(self.header)
        while (got := self._rows.next()) is not None:
            line_no, row = got
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < needed or (len(row) > n and any(c.strip() for c in row[n:])):
                name = _DELIM_NAME[self.delimiter]
                raise _Where(self.path, line_no).error(
                    f"{len(row)} field(s) but the header has {n}.",
                    f"Check the {name}s in this row (the header's delimiter is a {name}).")
            yield line_no, row + [""] * (n - len(row))


def _table(text: str, path: Path, columns: str) -> Table:
    """The header and rows of ``text`` (``columns``: what the header should name, for the messages)."""
    lines = _lines(text)
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise _Where(path).error("the file is empty.", f"Give a table with columns {columns}.")
    delim = _delimiter(lines[first])
    csv.field_size_limit(1 << 30)
    rows = _Rows(lines, first, delim, path)
    got = rows.next()
    if got is None:
        raise _Where(path, first + 1).error("cannot read the header.",
                                            f"The first line must name the columns: {columns}.")
    return Table(path, got[0], delim, [h.strip().lower() for h in got[1]], rows)


def read_rows(path: str | Path, columns: str) -> Table:
    """Any other TSV/CSV table (e.g. predict's structure mapping table), read by the same rules as
    :func:`read_table`: encodings, line endings, the delimiter of the header line, quotes, refusals.
    ``columns`` names the expected columns in the messages (``"id, structure, chain"``)."""
    path = Path(path)
    return _table(_read_text(path), path, columns)


def _parse_table(text: str, path: Path, max_length: int | None, require_sites: bool = False) -> ProteinList:
    table = _table(text, path, "id, sequence, sites")
    header_where = _Where(path, table.line)
    header = table.header
    need = "The header must name id, sequence and sites (1-based positions) or labels (a 0/1 string)."
    missing = [c for c in ("id", "sequence") if c not in header]
    if "sites" not in header and "labels" not in header:
        missing.append("sites (or labels)")
    if missing:
        found = ", ".join(repr(_short(h, 30)) for h in header[:12]) + (" ..." if len(header) > 12 else "")
        raise header_where.error(f"missing column(s) {', '.join(missing)}; found {found}.", need)
    table.refuse_duplicate_columns()
    col = {name: header.index(name) for name in header if name}
    required = max(col["id"], col["sequence"], col["sites"] if "sites" in col else col["labels"])
    proteins: list[Protein] = []
    seen: dict[str, int] = {}
    for line_no, row in table.rows(required + 1):
        w = _Where(path, line_no)

        def get(name: str, row: list[str] = row) -> str:
            return row[col[name]].strip() if name in col else ""

        pid = get("id")
        if not pid:
            raise w.error("empty id.", "Give every protein an id.")
        w = _Where(path, line_no, pid)
        _check_id(pid, w)
        if pid in seen:
            raise w.error(f"duplicate id (first at line {seen[pid]}).", "Give every protein a unique id.")
        seen[pid] = line_no
        seq = clean_sequence(get("sequence"), w, max_length)
        sites = _sites_of(get, col, seq, w, require_sites)
        ortho = parse_sites(get("orthosteric_sites"), seq, w) if get("orthosteric_sites") else None
        if get("cluster"):
            _check_id(get("cluster"), w, "cluster")
        proteins.append(
            Protein(
                id=pid,
                sequence=seq,
                sites=sites,
                cluster=get("cluster") or None,
                family=get("family") or None,
                gene=get("gene") or None,
                source=f"{path}:{line_no}",
                orthosteric_sites=ortho,
                modulator_class=get("modulator_class") or None,
            )
        )
    if not proteins:
        raise _Where(path).error("the table has a header but no proteins.", "Add one row per protein.")
    grouped, notes = shared_sequence_clusters(proteins)
    return ProteinList(grouped, [f"{path}: {n}" for n in notes])


MIN_CONTAINED = 20  # a shorter sequence is not grouped for being contained in another (chance matches)


def shared_sequence_clusters(proteins: list[Protein]) -> tuple[list[Protein], list[str]]:
    """Give proteins without a cluster that share a sequence a common cluster, and say so.

    Shared: identical sequences, or one sequence (at least MIN_CONTAINED residues) contained in another
    (a fragment, a domain, a construct with a tag); groups are closed transitively. A group that
    contains a protein with a cluster takes that cluster (the first in file order); otherwise it gets
    ``seq:<sha256[:12]>`` of its longest sequence. Proteins that have a cluster keep it. Cost: one
    substring search per distinct sequence through all of them (0.1 s for the 372 ASD sequences).
    Returns the proteins (in order) and notes for the user; no note when nothing changed."""
    from dataclasses import replace

    by_seq: dict[str, list[int]] = {}
    for i, p in enumerate(proteins):
        by_seq.setdefault(p.sequence, []).append(i)
    parent = list(range(len(proteins)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    for members in by_seq.values():
        for j in members[1:]:
            union(members[0], j)
    # containment: search each distinct sequence in all of them joined by a separator (one C-level scan each)
    distinct = list(by_seq)
    joined = "|".join(distinct)
    starts = list(itertools.accumulate((len(x) + 1 for x in distinct[:-1]), initial=0))
    for k, short in enumerate(distinct):
        if len(short) < MIN_CONTAINED:
            continue
        at = joined.find(short)
        while at >= 0:  # every sequence it is inside (a match cannot run over a separator), not only the first
            j = bisect.bisect_right(starts, at) - 1
            if j != k:
                union(by_seq[short][0], by_seq[distinct[j]][0])
            at = joined.find(short, starts[j + 1]) if j + 1 < len(starts) else -1  # next sequence
    groups: dict[int, list[int]] = {}
    for i in range(len(proteins)):
        groups.setdefault(find(i), []).append(i)
    out, notes = list(proteins), []
    for members in groups.values():
        if len(members) < 2 or all(proteins[i].cluster for i in members):
            continue
        given = next((proteins[i].cluster for i in members if proteins[i].cluster), None)
        longest = max((proteins[i] for i in members), key=lambda p: p.length)
        cluster = given or "seq:" + hashlib.sha256(longest.sequence.encode()).hexdigest()[:12]
        changed = [i for i in members if not proteins[i].cluster]
        for i in changed:
            out[i] = replace(proteins[i], cluster=cluster)
        ids = [proteins[i].id for i in members]
        how = "identical sequences" if len({proteins[i].sequence for i in members}) == 1 else \
            "identical sequences or one contained in another"
        shown = ", ".join(_short(x, 30) for x in ids[:6]) + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")
        notes.append(f"{len(ids)} proteins share a sequence ({how}): {shown}; they are put in cluster "
                     f"{cluster!r} so that no split puts them on two sides.")
    clusters = {}
    for p in proteins:  # explicit clusters that split one sequence: the user's choice, but say it
        if p.cluster:
            clusters.setdefault(p.sequence, set()).add(p.cluster)
    for seq, cs in clusters.items():
        if len(cs) > 1:
            ids = [p.id for p in proteins if p.sequence == seq]
            notes.append(f"proteins {', '.join(_short(x, 30) for x in ids[:6])} have identical sequences but "
                         f"different clusters ({', '.join(sorted(cs)[:4])}): a split by cluster can put them on "
                         "two sides (train/test leakage).")
    if notes:
        notes.append("Give a 'cluster' column to group proteins yourself (e.g. by sequence identity).")
    return out, notes


def looks_like_fasta(path: Path, text: str) -> bool:
    if path.suffix.lower() in FASTA_SUFFIXES:
        return True
    for line in _lines(text):
        s = line.strip()
        if s:
            return s[0] in ">;"
    return False


def read_proteins(path: str | Path, max_length: int | None = None, require_sites: bool = False) -> ProteinList:
    """A FASTA file (a FASTA suffix, or first non-blank line starting with '>' or ';') or a TSV/CSV table.

    ``require_sites=True`` (training): every protein must come with its sites: a FASTA file (no labels)
    or a table row with an empty sites cell is refused."""
    path = Path(path)
    text = _read_text(path)
    if looks_like_fasta(path, text):
        proteins = _parse_fasta(text, path, max_length)
        if require_sites:
            raise _Where(path, None, proteins[0].id).error(
                "a FASTA file has no site labels, and training needs them.",
                "Give a TSV/CSV table with columns id, sequence, sites.")
        return ProteinList(proteins)
    return _parse_table(text, path, max_length, require_sites)
