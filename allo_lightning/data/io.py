"""Reading proteins: labelled tables (TSV/CSV) and FASTA files, with validation.

Every rejection is an :class:`InputError` whose message names the file, the line (1-based) and the
protein id where known, and says what to do. Nothing is silently dropped: a bad row stops the read.

Residue positions are 1-based everywhere a user sees them.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

# Letters the ESM tokenizers (ESM-C and ESM-2) have tokens for: the 20 standard amino acids and
# X (unknown), B (D/N), Z (E/Q), U (selenocysteine), O (pyrrolysine).
STANDARD = "ACDEFGHIKLMNPQRSTVWY"
EXTRA = "XBZUO"
ALPHABET = frozenset(STANDARD + EXTRA)


class InputError(ValueError):
    """Bad user input; the message says where and what to do."""


@dataclass(frozen=True)
class Protein:
    id: str
    sequence: str
    sites: tuple[int, ...] | None = None  # 1-based positions; None = unlabelled
    cluster: str | None = None
    family: str | None = None
    gene: str | None = None
    source: str = ""  # "file:line", for messages

    @property
    def length(self) -> int:
        return len(self.sequence)

    def labels(self):
        """0/1 numpy array of length L (requires sites)."""
        import numpy as np

        if self.sites is None:
            raise InputError(f"{self.source}: protein {self.id!r} has no site labels")
        y = np.zeros(len(self.sequence), dtype=np.int64)
        if self.sites:
            y[np.asarray(self.sites, dtype=np.int64) - 1] = 1
        return y


def _where(path: str | Path, line: int | None = None, pid: str | None = None) -> str:
    out = str(path)
    if line is not None:
        out += f", line {line}"
    if pid:
        out += f", id {pid!r}"
    return out


def clean_sequence(raw: str, where: str, max_length: int | None = None) -> str:
    """Upper-case, strip whitespace and one trailing '*'; check letters and length."""
    seq = re.sub(r"\s+", "", raw).upper()
    if seq.endswith("*"):
        seq = seq[:-1]
    if not seq:
        raise InputError(f"{where}: empty sequence. Give the amino-acid sequence or remove the entry.")
    bad = sorted(set(seq) - ALPHABET)
    if bad:
        pos = next(i for i, c in enumerate(seq) if c not in ALPHABET) + 1
        shown = ", ".join(repr(c) for c in bad[:5])
        raise InputError(
            f"{where}: unknown residue letter(s) {shown} (first at position {pos}). Allowed: the 20 "
            f"standard amino acids and {', '.join(EXTRA)}; replace others (e.g. by X) or remove them."
        )
    if max_length is not None and len(seq) > max_length:
        raise InputError(
            f"{where}: sequence has {len(seq)} residues, more than the backbone's limit of {max_length}. "
            "Split the protein into domains (keep the site numbering consistent) or use a backbone with a "
            "longer context."
        )
    return seq


_SITE = re.compile(r"^([A-Za-z]?)(\d+)$")


def parse_sites(text: str, sequence: str, where: str) -> tuple[int, ...]:
    """Comma/semicolon/space separated 1-based positions, optionally with the residue letter (F168)."""
    sites: set[int] = set()
    for tok in re.split(r"[,;\s]+", text.strip()):
        if not tok:
            continue
        m = _SITE.match(tok)
        if not m:
            raise InputError(
                f"{where}: cannot read site {tok!r}. Write 1-based positions like 168 or F168, "
                "separated by commas."
            )
        letter, pos = m.group(1).upper(), int(m.group(2))
        if pos < 1 or pos > len(sequence):
            raise InputError(
                f"{where}: site {tok!r} is outside the sequence (length {len(sequence)}; positions are "
                "1-based). Check the numbering against the sequence (UniProt numbering)."
            )
        if letter and sequence[pos - 1] != letter:
            raise InputError(
                f"{where}: site {tok!r} says residue {letter} but the sequence has "
                f"{sequence[pos - 1]} at position {pos}. Check the numbering or the sequence version."
            )
        sites.add(pos)
    return tuple(sorted(sites))


def parse_labels(text: str, sequence: str, where: str) -> tuple[int, ...]:
    s = re.sub(r"\s+", "", text)
    if len(s) != len(sequence) or set(s) - {"0", "1"}:
        raise InputError(
            f"{where}: 'labels' must be a string of 0/1 with one character per residue "
            f"({len(sequence)}), got {len(s)} characters. Fix the labels or give 'sites' instead."
        )
    return tuple(i + 1 for i, c in enumerate(s) if c == "1")


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found. Check the path (given with --data.path).") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a file. Give a TSV/CSV or FASTA file.") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the file ({e.strerror}).") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(
            f"{_where(path, line)}: not valid UTF-8 text (byte {e.start}). Save the file as UTF-8 text."
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise InputError(f"{_where(path, line)}: contains NUL bytes; this is not a text table or FASTA file.")
    return text


def read_fasta(path: str | Path, max_length: int | None = None) -> list[Protein]:
    """FASTA (UniProt headers accepted: the id is the accession of ``sp|P29274|AA2AR_HUMAN``)."""
    path = Path(path)
    text = _read_text(path)
    proteins: list[Protein] = []
    seen: dict[str, int] = {}
    header: str | None = None
    header_line = 0
    chunks: list[str] = []

    def flush() -> None:
        if header is None:
            return
        pid = fasta_id(header)
        where = _where(path, header_line, pid)
        if not pid:
            raise InputError(f"{_where(path, header_line)}: empty FASTA header. Write '>ID' before the sequence.")
        if pid in seen:
            raise InputError(f"{where}: duplicate id (first at line {seen[pid]}). Give every protein a unique id.")
        seen[pid] = header_line
        seq = clean_sequence("".join(chunks), where, max_length)
        proteins.append(Protein(id=pid, sequence=seq, source=f"{path}:{header_line}"))

    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith(";"):
            continue
        if s.startswith(">"):
            flush()
            header, header_line, chunks = s[1:].strip(), n, []
        elif header is None:
            raise InputError(
                f"{_where(path, n)}: sequence line before any '>' header. A FASTA file starts with '>ID'."
            )
        else:
            chunks.append(s)
    flush()
    if not proteins:
        raise InputError(f"{path}: no FASTA records found. Each record starts with a '>ID' line.")
    return proteins


def fasta_id(header: str) -> str:
    first = header.split()[0] if header.split() else ""
    parts = first.split("|")
    if len(parts) >= 3 and parts[0] in ("sp", "tr"):
        return parts[1]
    return first


def read_table(path: str | Path, max_length: int | None = None) -> list[Protein]:
    """TSV or CSV with ``id``, ``sequence`` and ``sites`` or ``labels``; optional ``cluster``,
    ``family``, ``gene``. The delimiter is a tab if the header has one, else a comma."""
    path = Path(path)
    text = _read_text(path)
    lines = text.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise InputError(f"{path}: the file is empty. Give a table with columns id, sequence, sites.")
    delim = "\t" if "\t" in lines[first] else ","
    csv.field_size_limit(1 << 30)
    reader = csv.reader(io.StringIO("\n".join(lines[first:])), delimiter=delim)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except csv.Error as e:
        raise InputError(f"{_where(path, first + 1)}: cannot read the header ({e}).") from None
    missing = [c for c in ("id", "sequence") if c not in header]
    if missing or ("sites" not in header and "labels" not in header):
        need = missing + ([] if ("sites" in header or "labels" in header) else ["sites (or labels)"])
        raise InputError(
            f"{_where(path, first + 1)}: missing column(s) {', '.join(need)}; found {header}. The header must "
            "name id, sequence and sites (1-based positions) or labels (a 0/1 string)."
        )
    col = {name: header.index(name) for name in header if name}
    proteins: list[Protein] = []
    seen: dict[str, int] = {}
    line_no = first + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise InputError(f"{_where(path, reader.line_num + first)}: cannot parse the row ({e}).") from None
        line_no = reader.line_num + first
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        elif len(row) > len(header) and any(c.strip() for c in row[len(header):]):
            raise InputError(
                f"{_where(path, line_no)}: {len(row)} fields but the header has {len(header)}. "
                f"Check for an extra {'tab' if delim == chr(9) else 'comma'} in the row."
            )

        def get(name: str) -> str:
            return row[col[name]].strip() if name in col else ""

        pid = get("id")
        if not pid:
            raise InputError(f"{_where(path, line_no)}: empty id. Give every protein an id.")
        where = _where(path, line_no, pid)
        if pid in seen:
            raise InputError(f"{where}: duplicate id (first at line {seen[pid]}). Give every protein a unique id.")
        seen[pid] = line_no
        seq = clean_sequence(get("sequence"), where, max_length)
        if get("sites") or "labels" not in col:
            sites = parse_sites(get("sites"), seq, where)
        else:
            sites = parse_labels(get("labels"), seq, where)
        proteins.append(
            Protein(
                id=pid,
                sequence=seq,
                sites=sites,
                cluster=get("cluster") or None,
                family=get("family") or None,
                gene=get("gene") or None,
                source=f"{path}:{line_no}",
            )
        )
    if not proteins:
        raise InputError(f"{path}: the table has a header but no proteins.")
    return proteins


def read_proteins(path: str | Path, max_length: int | None = None) -> list[Protein]:
    """A FASTA file (first non-blank character '>') or a TSV/CSV table."""
    path = Path(path)
    text_start = _read_text(path).lstrip()[:1]
    if text_start == ">":
        return read_fasta(path, max_length)
    return read_table(path, max_length)
