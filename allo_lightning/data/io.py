"""Reading proteins: labelled tables (TSV/CSV) and FASTA files, with validation.

Every rejection is an :class:`InputError` whose message names the file, the line (1-based) and the
protein id where known, and says what to do. Nothing is silently dropped: a bad row stops the read.

Accepted real-world forms: UTF-8 (with or without a byte-order mark) or UTF-16 with a byte-order mark
(Excel's "Unicode text"); LF, CRLF or CR line endings; FASTA with UniProt headers
(``>sp|P29274|AA2AR_HUMAN ...`` gives the id ``P29274``) and ``;`` comment lines; sequences in lower
case, with whitespace or line breaks inside and one trailing ``*``; tables separated by tabs, commas or
semicolons.

Residue positions are 1-based everywhere a user sees them.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .protein import ALPHABET, EXTRA, STANDARD, Protein  # noqa: F401 - re-exported

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
    if seq.endswith("*"):
        seq = seq[:-1]
    if not seq:
        raise w.error("empty sequence.", "Give the amino-acid sequence or remove the entry.")
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


def _check_id(pid: str, w: _Where) -> None:
    bad = next((c for c in pid if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        raise w.error(f"the id contains the control character {bad!r}.", "Use printable characters in ids.")


def _read_text(path: Path) -> str:
    w = _Where(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise w.error("file not found.", "Check the path (given with --data.path).") from None
    except IsADirectoryError:
        raise w.error("is a folder, not a file.", "Give a TSV/CSV table or a FASTA file.") from None
    except OSError as e:
        raise w.error(f"cannot read the file ({e.strerror}).", "Check the path and its permissions.") from None
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


def read_fasta(path: str | Path, max_length: int | None = None) -> list[Protein]:
    """FASTA (UniProt headers accepted: the id is the accession of ``sp|P29274|AA2AR_HUMAN``)."""
    path = Path(path)
    return _parse_fasta(_read_text(path), path, max_length)


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


def fasta_id(header: str) -> str:
    """The id of a FASTA header: the first word, or the accession of UniProt's ``db|ACC|NAME``."""
    words = header.split()
    first = words[0] if words else ""
    parts = first.split("|")
    if len(parts) >= 3 and parts[0] in ("sp", "tr") and parts[1]:
        return parts[1]
    return first


def _delimiter(header_line: str) -> str:
    for d in ("\t", ",", ";"):
        if d in header_line:
            return d
    return ","


_DELIM_NAME = {"\t": "tab", ",": "comma", ";": "semicolon"}


def read_table(path: str | Path, max_length: int | None = None) -> list[Protein]:
    """TSV or CSV with ``id``, ``sequence`` and ``sites`` or ``labels``; optional ``cluster``,
    ``family``, ``gene``. The delimiter is a tab if the header has one, else a comma, else a semicolon."""
    path = Path(path)
    return _parse_table(_read_text(path), path, max_length)


def _parse_table(text: str, path: Path, max_length: int | None) -> list[Protein]:
    lines = _lines(text)
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise _Where(path).error("the file is empty.", "Give a table with columns id, sequence, sites.")
    header_where = _Where(path, first + 1)
    delim = _delimiter(lines[first])
    csv.field_size_limit(1 << 30)
    reader = csv.reader(io.StringIO("\n".join(lines[first:])), delimiter=delim)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except (csv.Error, StopIteration) as e:
        raise header_where.error(f"cannot read the header ({e}).",
                                 "The first line must name the columns: id, sequence, sites.") from None
    need = "The header must name id, sequence and sites (1-based positions) or labels (a 0/1 string)."
    missing = [c for c in ("id", "sequence") if c not in header]
    if "sites" not in header and "labels" not in header:
        missing.append("sites (or labels)")
    if missing:
        found = ", ".join(repr(_short(h, 30)) for h in header[:12]) + (" ..." if len(header) > 12 else "")
        raise header_where.error(f"missing column(s) {', '.join(missing)}; found {found}.", need)
    dupes = sorted({h for h in header if h and header.count(h) > 1})
    if dupes:
        raise header_where.error(f"column(s) {', '.join(map(repr, dupes))} appear more than once.",
                                 "Keep one column of each name.")
    col = {name: header.index(name) for name in header if name}
    required = max(col["id"], col["sequence"], col["sites"] if "sites" in col else col["labels"])
    proteins: list[Protein] = []
    seen: dict[str, int] = {}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise _Where(path, reader.line_num + first).error(
                f"cannot parse the row ({e}).", "Check the quotes and delimiters in this row.") from None
        line_no = reader.line_num + first
        if not row or all(not c.strip() for c in row):
            continue
        w = _Where(path, line_no)
        if len(row) <= required or (len(row) > len(header) and any(c.strip() for c in row[len(header):])):
            raise w.error(
                f"{len(row)} field(s) but the header has {len(header)}.",
                f"Check the {_DELIM_NAME[delim]}s in this row (the header's delimiter is a "
                f"{_DELIM_NAME[delim]}).",
            )
        row = row + [""] * (len(header) - len(row))

        def get(name: str) -> str:
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
        if get("sites") or "labels" not in col:
            sites = parse_sites(get("sites"), seq, w)
        else:
            sites = parse_labels(get("labels"), seq, w)
        ortho = parse_sites(get("orthosteric_sites"), seq, w) if get("orthosteric_sites") else None
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
    return proteins


def looks_like_fasta(path: Path, text: str) -> bool:
    if path.suffix.lower() in FASTA_SUFFIXES:
        return True
    for line in _lines(text):
        s = line.strip()
        if s:
            return s[0] in ">;"
    return False


def read_proteins(path: str | Path, max_length: int | None = None) -> list[Protein]:
    """A FASTA file (a FASTA suffix, or first non-blank line starting with '>' or ';') or a TSV/CSV table."""
    path = Path(path)
    text = _read_text(path)
    if looks_like_fasta(path, text):
        return _parse_fasta(text, path, max_length)
    return _parse_table(text, path, max_length)
