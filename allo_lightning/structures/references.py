"""Reference records: PDB ``DBREF``/``DBREF1``/``DBREF2`` and ``SEQADV``; mmCIF ``_struct_ref``,
``_struct_ref_seq``, ``_struct_ref_seq_dif``. They say which residues of a chain belong to which database
entry (an engineered structure: a T4L/BRIL insert in place of a loop) and which are expression tags,
linkers or insertions; :mod:`.alignment` aligns only the entry that matches the protein best."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .formats import Residue, read_text, script_text, structure_format

FOREIGN_SEQADV = ("EXPRESSION TAG", "LINKER", "INSERTION", "CLONING ARTIFACT")  # + no database residue


@dataclass(frozen=True)
class RefSegment:
    """Residues ``start``..``end`` (author numbering, inclusive) of ``chain`` are ``db_start``..``db_end``
    of database entry ``accession``."""

    chain: str
    start: tuple[int, str]  # (number, insertion code)
    end: tuple[int, str]
    database: str
    accession: str
    db_code: str
    db_start: int | None
    db_end: int | None

    def contains(self, r: Residue) -> bool:
        return r.chain == self.chain and self.start <= (r.number, r.icode) <= self.end

    def label(self) -> str:
        a, b = (f"{n}{i}" for n, i in (self.start, self.end))
        return f"{self.chain}:{a}-{b} {self.accession}" + (f" ({self.db_code})" if self.db_code else "")


@dataclass
class References:
    segments: list[RefSegment]
    foreign: set[tuple[str, int, str]]  # (chain, number, icode): tags, linkers (no database residue)


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _pdb_references(text: str) -> References:
    """Fixed-column DBREF / DBREF1 / DBREF2 / SEQADV records (PDB format 3.3)."""
    segments, foreign, pending = [], set(), {}
    for line in text.splitlines():
        line = line.ljust(80)
        rec = line[:6]
        if rec == "DBREF ":
            start, end = _int(line[14:18]), _int(line[20:24])
            if start is None or end is None:
                continue
            segments.append(RefSegment(line[12].strip(), (start, line[18].strip()), (end, line[24].strip()),
                                       script_text(line[26:32].strip()), script_text(line[33:41].strip()),
                                       script_text(line[42:54].strip()),
                                       _int(line[55:60]), _int(line[62:67])))
        elif rec == "DBREF1":
            start, end = _int(line[14:18]), _int(line[20:24])
            if start is not None and end is not None:
                pending[line[12]] = (line[12].strip(), (start, line[18].strip()), (end, line[24].strip()),
                                     line[26:32].strip(), line[47:67].strip())
        elif rec == "DBREF2" and line[12] in pending:
            chain, start, end, db, code = pending.pop(line[12])
            segments.append(RefSegment(chain, start, end, script_text(db), script_text(line[18:40].strip()),
                                       script_text(code), _int(line[45:55]),
                                       _int(line[57:67])))
        elif rec == "SEQADV":
            number = _int(line[18:22])
            details = line[49:70].strip().upper()
            if number is not None and (not line[39:42].strip() or any(k in details for k in FOREIGN_SEQADV)):
                foreign.add((line[16].strip(), number, line[22].strip()))
    return References(segments, foreign)


def _cif_references(block) -> References:
    """``_struct_ref`` + ``_struct_ref_seq`` (author numbering) and ``_struct_ref_seq_dif``."""
    def rows(name: str) -> list[dict[str, str]]:
        if name not in block:
            return []
        cat = block[name]
        cols = {k: cat[k].as_array(str) for k in cat}
        return [{k: str(v[i]) for k, v in cols.items()} for i in range(cat.row_count)]

    def clean(v: str | None) -> str:  # values printed and written into script comments: one printable line
        return "" if v is None or v in (".", "?") else script_text(v.strip())

    refs = {r.get("id", ""): r for r in rows("struct_ref")}
    segments = []
    for r in rows("struct_ref_seq"):
        # author numbers; files without them (some model servers) number residues like label_seq_id
        start, end = _int(clean(r.get("pdbx_auth_seq_align_beg"))), _int(clean(r.get("pdbx_auth_seq_align_end")))
        if start is None or end is None:
            start, end = _int(clean(r.get("seq_align_beg"))), _int(clean(r.get("seq_align_end")))
        if start is None or end is None:
            continue
        ref = refs.get(r.get("ref_id", ""), {})
        segments.append(RefSegment(clean(r.get("pdbx_strand_id")), (start, clean(r.get("pdbx_seq_align_beg_ins_code"))),
                                   (end, clean(r.get("pdbx_seq_align_end_ins_code"))), clean(ref.get("db_name")),
                                   clean(r.get("pdbx_db_accession")) or clean(ref.get("pdbx_db_accession")),
                                   clean(ref.get("db_code")), _int(clean(r.get("db_align_beg"))),
                                   _int(clean(r.get("db_align_end")))))
    foreign = set()
    for r in rows("struct_ref_seq_dif"):
        number = _int(clean(r.get("pdbx_auth_seq_num")))
        details = clean(r.get("details")).upper()
        if number is not None and (not clean(r.get("db_mon_id")) or any(k in details for k in FOREIGN_SEQADV)):
            foreign.add((clean(r.get("pdbx_pdb_strand_id")), number, clean(r.get("pdbx_pdb_ins_code"))))
    return References(segments, foreign)


def read_references(path: str | Path) -> References:
    """The reference records of a structure file (empty when it has none)."""
    path = Path(path)
    try:
        if structure_format(path) == "pdb":
            return _pdb_references(read_text(path, "latin-1"))
        from biotite.structure.io import pdbx

        return _cif_references(pdbx.CIFFile.read(io.StringIO(read_text(path))).block)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed reference records: refuse the file, name it
        raise InputError(f"{path}: cannot read its reference records ({type(e).__name__}: {e}). Fix or remove the "
                         "DBREF/SEQADV (_struct_ref_seq) records.", path=path, todo="Fix the reference records.") from e


def reference_groups(refs: References, residues: Sequence[Residue]) -> dict[str, list[Residue]]:
    """The chain's residues by database accession (from its reference segments, with the reference
    number set), tags and linkers (SEQADV without a database residue) and residues of no segment
    left out. Empty when the records say nothing about this chain."""
    if not residues:
        return {}
    segs = [s for s in refs.segments if s.chain == residues[0].chain]
    if not segs:
        return {}
    out: dict[str, list[Residue]] = {}
    for r in residues:
        if (r.chain, r.number, r.icode) in refs.foreign:
            continue
        for s in segs:
            if s.contains(r):
                number = s.db_start + (r.number - s.start[0]) if s.db_start is not None and not r.icode else None
                out.setdefault(s.accession, []).append(Residue(r.chain, r.number, r.icode, r.name, r.letter, number))
                break
    return out
