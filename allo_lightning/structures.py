"""Scores on a structure: map sequence positions to a chain's residues, write the structure with
B-factors = score, and PyMOL / ChimeraX scripts with chain-qualified selections.

The chain's sequence (its amino-acid residues, 3-letter names -> 1-letter codes) is aligned to the
protein sequence with a global alignment with affine gaps (BLOSUM62, end gaps free, so a structure of a
fragment or with a fusion segment aligns). ``identity`` = identical pairs / aligned pairs and
``coverage`` = aligned pairs / sequence length; below the thresholds the structure is refused.

Numbers that users see are the structure's own (author) residue numbers and insertion codes, as PyMOL
and ChimeraX show them. Only the first model is aligned; the written structure gets the scores in every
model. Everything else in the file (other chains, ligands, waters, unmapped residues, header records)
is left unchanged: PDB files are edited line by line (B-factor columns only) and mmCIF files category
by category (the ``B_iso_or_equiv`` column only, plus a category ``allo_lightning_score`` with the score
and percentile of every mapped residue). Atoms of unmapped residues get B-factor ``UNMAPPED_B`` (-1, a
value no score takes) unless asked to keep their crystallographic B.

Engineered structures (a T4L/BRIL insert in place of a loop, tags, linkers): where the file has reference
records (PDB ``DBREF``/``DBREF1``/``DBREF2`` and ``SEQADV``; mmCIF ``_struct_ref``, ``_struct_ref_seq``,
``_struct_ref_seq_dif``), the chain's residues are split by the database entry they belong to; only the
entry that matches the protein best is aligned, so the residues of another protein (the insert) and
those listed as expression tag, linker or insertion can never get a score, and each mapped residue gets
its reference (UniProt) number. Without reference records, the island rule applies (see ``align``).

Nothing read from a structure reaches a script unchecked: chain ids must match ``[A-Za-z0-9]{1,4}`` (or be
empty) and insertion codes ``[A-Za-z0-9]?``; any other value (a line break, ``;``, a quote, a space) is
refused with one line naming the file, before any model is loaded. Every other text that goes into a
script line (ids, file names) passes :func:`script_text` (no control character, no ``;``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .outputs import atomic_path

PDB_SUFFIXES = (".pdb", ".ent")
CIF_SUFFIXES = (".cif", ".mmcif")
STRUCTURE_SUFFIXES = PDB_SUFFIXES + CIF_SUFFIXES
STRUCTURE_SUFFIXES = STRUCTURE_SUFFIXES + tuple(s + ".gz" for s in STRUCTURE_SUFFIXES)  # gzipped: read as is
GAP_PENALTY = (-10, -1)  # (open, extend), BLOSUM62 units
MIN_SEGMENT_SCORE = 15  # an aligned stretch between gaps scoring less (BLOSUM62) is left unmapped
MIN_ISLAND = 20  # an aligned stretch shorter than this ...
LONG_GAP = 10  # ... between long gaps (this many sequence positions or chain residues left out) is dropped
UNMAPPED_B = -1.0  # B-factor written on atoms without a score (no score is negative)
CHAIN_ID = re.compile(r"[A-Za-z0-9]{0,4}\Z")
INS_CODE = re.compile(r"[A-Za-z0-9]?\Z")
FOREIGN_SEQADV = ("EXPRESSION TAG", "LINKER", "INSERTION", "CLONING ARTIFACT")  # + no database residue


@dataclass(frozen=True)
class StructureOptions:
    """How structures are matched to proteins.

    Args:
        min_identity: refuse a chain whose aligned residues are less identical than this (0..1).
        min_coverage: refuse a chain that covers less than this fraction of the sequence (0..1).
    """

    min_identity: float = 0.9
    min_coverage: float = 0.1

    def __post_init__(self) -> None:
        for name in ("min_identity", "min_coverage"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"--{name} must be between 0 and 1 (got {value}).", todo=f"Give --{name} in [0, 1].")


@dataclass(frozen=True)
class Residue:
    """One residue of a structure, in the structure's own numbering."""

    chain: str
    number: int
    icode: str  # insertion code, "" if none
    name: str  # 3-letter residue name
    letter: str = "X"  # 1-letter code used for the alignment
    ref: int | None = field(default=None, compare=False)  # reference (e.g. UniProt) number, from DBREF

    @property
    def key(self) -> tuple[str, int, str, str]:
        return (self.chain, self.number, self.icode, self.name)

    @property
    def resi(self) -> str:
        """Residue number with insertion code, as PyMOL and ChimeraX write it (``107A``)."""
        return f"{self.number}{self.icode}"


@dataclass
class ChainMapping:
    """Sequence positions of protein ``pid`` mapped onto ``chain`` of ``path``."""

    pid: str
    path: Path
    chain: str
    residues: list[Residue | None]  # one per sequence position (index = position - 1); None = not in the chain
    identical: int
    aligned: int
    chain_length: int  # amino-acid residues of the chain
    reference: dict | None = None  # what the reference records said (see _alignable), None without
    order: dict | None = None  # residue key -> index in the chain (file order), for segment breaks

    @property
    def identity(self) -> float:
        return self.identical / self.aligned if self.aligned else 0.0

    @property
    def coverage(self) -> float:
        return self.aligned / len(self.residues) if self.residues else 0.0

    @property
    def fmt(self) -> str:
        return structure_format(self.path)

    @property
    def segments(self) -> list[str]:
        """Mapped stretches in the structure's numbering, e.g. ``["A:29-230", "A:263-342"]``."""
        return mapped_segments(self.residues, self.order)

    def summary(self) -> str:
        ref = ""
        if self.reference:
            ref = f"; reference records: {self.reference['accession']}"
            if self.reference["excluded"]:
                ref += ", not scored (other entries, tags): " + ", ".join(self.reference["excluded"])
        return (f"{self.path.name} chain {self.chain}: {self.aligned} of {len(self.residues)} positions mapped "
                f"({', '.join(self.segments) or 'none'}), identity {self.identity:.3f}, coverage "
                f"{self.coverage:.3f}{ref}")


def _suffix(path: str | Path) -> str:
    """``.pdb``, ``.cif``... (the one before ``.gz`` for a gzipped file)."""
    p = Path(path)
    return Path(p.stem).suffix.lower() if p.suffix.lower() == ".gz" else p.suffix.lower()


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """A structure file's text (gunzipped if it ends in .gz). PDB files are read as latin-1 (every byte
    kept, so an edited copy differs only where it was edited)."""
    import gzip

    p = Path(path)
    if p.suffix.lower() == ".gz":
        with gzip.open(p, "rt", encoding=encoding, errors="replace", newline="") as f:
            return f.read()
    with p.open(encoding=encoding, errors="replace", newline="") as f:
        return f.read()


def structure_format(path: str | Path) -> str:
    suffix = _suffix(path)
    if suffix in PDB_SUFFIXES:
        return "pdb"
    if suffix in CIF_SUFFIXES:
        return "cif"
    raise InputError(f"{path}: not a structure file this package reads (suffixes: {', '.join(STRUCTURE_SUFFIXES)}). "
                     "Give a PDB or mmCIF file.", path=path, todo="Give a PDB or mmCIF file.")


def _letter(name: str) -> str:
    from biotite.structure.info import one_letter_code

    try:
        code = one_letter_code(name)
    except Exception:  # noqa: BLE001 - unknown component: aligned as X
        code = None
    code = (code or "X").upper()
    return code if code in "ACDEFGHIKLMNPQRSTVWYBZ" else "X"


def read_atoms(path: str | Path):
    """First model of a PDB or mmCIF file as a biotite AtomArray (InputError if unreadable)."""
    path = Path(path)
    fmt = structure_format(path)
    if not path.is_file():
        raise InputError(f"{path}: structure file not found. Check the path given to --structure.", path=path,
                         todo="Check the path given to --structure.")
    try:
        if fmt == "pdb":
            from biotite.structure.io.pdb import PDBFile

            return PDBFile.read(io.StringIO(read_text(path))).get_structure(model=1)
        from biotite.structure.io import pdbx

        return pdbx.get_structure(pdbx.CIFFile.read(io.StringIO(read_text(path))), model=1)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: cannot read this {fmt.upper()} file ({type(e).__name__}: {e}). Check that it "
                         "is a valid structure file.", path=path, todo="Check the file.") from e


def _shown(value: str, n: int = 24) -> str:
    """A value from a file, for a one-line message (escaped, shortened)."""
    text = ascii(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def check_chain_id(value: str, where: str) -> str:
    """``value`` if it is a chain id this package writes into scripts (``[A-Za-z0-9]{0,4}``); else InputError."""
    if not CHAIN_ID.match(value):
        raise InputError(f"{where}: chain id {_shown(value)} is not a short printable token (letters and digits, at "
                         "most 4). Rename the chain in the file (or give another chain).", todo="Rename the chain.")
    return value


def check_residue_tokens(path: str | Path, chain: str, number: int, icode: str) -> None:
    """Refuse a chain id or insertion code that could break out of a script line (InputError, one line)."""
    check_chain_id(chain, f"{path}, residue {number}")
    if not INS_CODE.match(icode):
        raise InputError(f"{path}, chain {chain}, residue {number}: insertion code {_shown(icode)} is not a single "
                         "letter or digit. Fix the insertion code in the file.", path=path,
                         todo="Fix the insertion code.")


def chain_residues(atoms, path: str | Path = "structure") -> dict[str, list[Residue]]:
    """Amino-acid residues per chain, in file order. A chain id or insertion code that is not a short
    printable token is refused (InputError naming ``path``)."""
    import biotite.structure as struc

    aa = atoms[struc.filter_amino_acids(atoms)]
    out: dict[str, list[Residue]] = {}
    if aa.array_length() == 0:
        return out
    for start in struc.get_residue_starts(aa):
        name = str(aa.res_name[start])
        chain, number, icode = str(aa.chain_id[start]), int(aa.res_id[start]), str(aa.ins_code[start]).strip()
        check_residue_tokens(path, chain, number, icode)
        out.setdefault(chain, []).append(Residue(chain, number, icode, name, _letter(name)))
    return out


def mapped_segments(residues: Sequence[Residue | None], order: Mapping | None = None) -> list[str]:
    """Runs of consecutive sequence positions mapped to consecutively numbered residues of one chain
    (``117``, ``117A``, ``118`` are consecutive; with ``order`` (residue key -> index in the chain) also
    next to each other in the chain, so a run breaks where chain residues, e.g. an insert, were skipped),
    as ``chain:first-last`` (``A:29-230``)."""
    runs: list[list[Residue]] = []
    prev: Residue | None = None
    for r in residues:
        if r is None:
            prev = None
            continue
        adjacent = order is None or order.get(r.key, -2) == order.get(prev.key if prev else None, -5) + 1
        if prev is not None and adjacent and r.chain == prev.chain and r.number in (prev.number, prev.number + 1) \
                and (r.number, r.icode) != (prev.number, prev.icode):
            runs[-1].append(r)
        else:
            runs.append([r])
        prev = r
    return [f"{run[0].chain}:{run[0].resi}" + (f"-{run[-1].resi}" if len(run) > 1 else "") for run in runs]


# -- reference records (DBREF / SEQADV, _struct_ref_seq / _struct_ref_seq_dif) -----------------------------

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


def _best_segment(values: Sequence[float]) -> tuple[int, int]:
    """[start, end) of the maximum-sum contiguous segment (empty (0, 0) when every value is <= 0)."""
    best, best_lo, best_hi, run, lo = 0.0, 0, 0, 0.0, 0
    for k, v in enumerate(values):
        if run <= 0:
            run, lo = 0.0, k
        run += v
        if run > best:
            best, best_lo, best_hi = run, lo, k + 1
    return best_lo, best_hi


def _trim_ends(same: Sequence[bool], lo: int, hi: int, window: int = 4, need: int = 3) -> tuple[int, int]:
    """Shrink [lo, hi) until each end pair is identical and the ``window`` pairs at each end hold at
    least ``need`` identical ones (a chance match at the edge of a fusion insert does not survive)."""
    def ok_left(a: int) -> bool:
        return same[a] and sum(same[a: min(a + window, hi)]) >= min(need, hi - a)

    def ok_right(b: int) -> bool:
        return same[b - 1] and sum(same[max(b - window, lo): b]) >= min(need, b - lo)

    while lo < hi and not ok_left(lo):
        lo += 1
    while lo < hi and not ok_right(hi):
        hi -= 1
    return lo, hi


def align(sequence: str, residues: Sequence[Residue], trim: bool = True) -> tuple[list[Residue | None], int, int]:
    """Global alignment (affine gaps, free end gaps) of ``sequence`` with the chain's residues.
    Returns (residue or None per sequence position, identical pairs, aligned pairs).

    With ``trim``, each run of aligned pairs between gaps keeps only its best-scoring stretch: where a
    fusion insert replaces a loop (BRIL in place of an ICL3), the optimal alignment pairs some insert
    residues with the missing loop to save a gap opening; those chance pairs score below zero and are
    dropped, and its ends are trimmed until the 4 pairs at each end hold 3 identical ones (ending on an
    identical pair), so no fusion residue gets a sequence position's score. A stretch scoring below
    ``MIN_SEGMENT_SCORE`` (a chance identical pair or two inside such a region) is dropped too: a residue
    left unmapped is better than a score on the wrong residue."""
    from biotite.sequence import ProteinSequence
    from biotite.sequence.align import SubstitutionMatrix, align_optimal

    def clean(s: str) -> str:
        return "".join(c if c in "ACDEFGHIKLMNPQRSTVWYBZ" else "X" for c in s.upper())

    mapped: list[Residue | None] = [None] * len(sequence)
    if not sequence or not residues:
        return mapped, 0, 0
    seq_a = ProteinSequence(clean(sequence))
    seq_b = ProteinSequence("".join(r.letter for r in residues))
    matrix = SubstitutionMatrix.std_protein_matrix()
    best = align_optimal(seq_a, seq_b, matrix, gap_penalty=GAP_PENALTY, terminal_penalty=False, max_number=1)[0]
    score = matrix.score_matrix()
    blocks: list[list[tuple[int, int]]] = [[]]
    for i, j in best.trace:
        if i < 0 or j < 0:
            blocks.append([])
        else:
            blocks[-1].append((int(i), int(j)))
    kept = []
    for block in blocks:
        lo, hi = 0, len(block)
        if trim:
            values = [float(score[seq_a.code[i], seq_b.code[j]]) for i, j in block]
            lo, hi = _best_segment(values)
            same = [seq_a.code[i] == seq_b.code[j] and str(seq_a[i]) != "X" for i, j in block]
            lo, hi = _trim_ends(same, lo, hi)
            if sum(values[lo:hi]) < MIN_SEGMENT_SCORE:
                lo = hi = 0
        if hi > lo:
            kept.append(block[lo:hi])
    if trim:
        kept = drop_islands(kept, len(sequence), len(residues))
    identical = aligned = 0
    for block in kept:
        for i, j in block:
            mapped[i] = residues[j]
            aligned += 1
            identical += str(seq_a[i]) == residues[j].letter and residues[j].letter != "X"
    return mapped, identical, aligned


def drop_islands(blocks: list[list[tuple[int, int]]], n_seq: int, n_chain: int) -> list[list[tuple[int, int]]]:
    """The island rule (structures without reference records). ``blocks``: runs of aligned (sequence
    index, chain index) pairs, in order. A run of fewer than ``MIN_ISLAND`` pairs is dropped when, on
    both sides, the gap to the neighbouring run (or to the end) leaves out at least ``LONG_GAP``
    sequence positions or chain residues, and on at least one side at least ``LONG_GAP`` chain residues:
    chain residues aligned to nothing are what a fusion insert looks like (T4L in place of ICL3), and a
    short motif shared with the deleted loop (ADRB2 GRTG vs T4L GETG) is then a chance match on the
    wrong protein. A short run between two unresolved stretches of the sequence (no chain residue left
    out around it) is kept: its residues sit in chain order between their mapped neighbours. Repeated
    until no run is dropped (a drop lengthens its neighbours' gaps)."""
    blocks = [b for b in blocks if b]
    changed = True
    while changed:
        changed = False
        for k, block in enumerate(blocks):
            if len(block) >= MIN_ISLAND:
                continue
            (i0, j0), (i1, j1) = block[0], block[-1]
            pi, pj = blocks[k - 1][-1] if k > 0 else (-1, -1)
            ni, nj = blocks[k + 1][0] if k + 1 < len(blocks) else (n_seq, n_chain)
            left_seq, left_chain = i0 - pi - 1, j0 - pj - 1
            right_seq, right_chain = ni - i1 - 1, nj - j1 - 1
            long_left = max(left_seq, left_chain) >= LONG_GAP
            long_right = max(right_seq, right_chain) >= LONG_GAP
            if long_left and long_right and max(left_chain, right_chain) >= LONG_GAP:
                del blocks[k]
                changed = True
                break
    return blocks


def _alignable(refs: References, residues: list[Residue]) -> list[tuple[list[Residue], dict | None]]:
    """What of one chain may be aligned: with reference records for it, each database entry's residues
    apart (the best-matching one wins, the others are never scored); without, the whole chain."""
    groups = reference_groups(refs, residues)
    if not groups:
        return [(residues, None)]
    out = []
    segs = [s for s in refs.segments if s.chain == residues[0].chain]
    for accession, members in groups.items():
        keep = {r.key for r in members}
        excluded = [s.label() for s in segs if s.accession != accession]
        n_other = sum(r.key not in keep for r in residues)
        if any((r.chain, r.number, r.icode) in refs.foreign for r in residues):
            excluded.append("tags/linkers listed in SEQADV")
        mine = [s for s in segs if s.accession == accession]
        out.append((members, {"accession": accession, "database": mine[0].database, "db_code": mine[0].db_code,
                              "segments": [s.label() for s in mine], "excluded": excluded,
                              "excluded_residues": n_other}))
    return out


def map_chain(pid: str, sequence: str, path: str | Path, chain: str | None = None,
              options: StructureOptions | None = None, atoms=None, references: References | None = None
              ) -> ChainMapping:
    """Align ``sequence`` to ``chain`` of the structure (or, with ``chain=None``, to the chain that covers
    it best). With reference records, only the residues of the database entry that matches best are
    aligned (see :func:`_alignable`). Raises InputError when the chain is missing or the match is below
    the thresholds."""
    options = options or StructureOptions()
    path = Path(path)
    if chain is not None:
        check_chain_id(chain, f"--chain (protein {pid!r})")
    chains = chain_residues(read_atoms(path) if atoms is None else atoms, path)
    if not chains:
        raise InputError(f"{path}: no amino-acid residues in this structure (protein {pid!r}). Give a protein "
                         "structure.", path=path, pid=pid, todo="Give a protein structure.")
    if chain is not None and chain not in chains:
        raise InputError(f"{path}: no protein chain {chain!r} (protein {pid!r}; chains: {', '.join(chains)}). "
                         "Give one of these with --chain (or a 'chain' column in the mapping table).",
                         path=path, pid=pid, todo="Give an existing chain.")
    candidates = [chain] if chain is not None else list(chains)
    refs = read_references(path) if references is None else references
    best: ChainMapping | None = None
    for c in candidates:
        for residues, reference in _alignable(refs, chains[c]):
            mapped, identical, aligned = align(sequence, residues)
            m = ChainMapping(pid, path, c, mapped, identical, aligned, len(chains[c]), reference,
                             {r.key: k for k, r in enumerate(chains[c])})
            if best is None or (m.identical, m.identity) > (best.identical, best.identity):
                best = m
    assert best is not None
    if best.identity < options.min_identity or best.coverage < options.min_coverage:
        which = f"chain {best.chain}" if chain is not None else f"best chain {best.chain}"
        raise InputError(
            f"{path}, {which}: does not match protein {pid!r} (identity {best.identity:.2f} over {best.aligned} "
            f"aligned residues, coverage {best.coverage:.2f}; need identity >= {options.min_identity:g} and "
            f"coverage >= {options.min_coverage:g}). Give the right file or chain (--chain), or lower "
            "--min_identity / --min_coverage.", path=path, pid=pid,
            todo="Give the right file or chain, or lower --min_identity / --min_coverage.")
    return best


# -- which structure for which protein ------------------------------------------------------------------------

@dataclass
class StructureRequest:
    path: Path
    chain: str | None  # None: the best-matching chain


def check_structure_spec(spec: str | Path | None, chain: str | None = None) -> None:
    """Model-free check of ``--structure`` and ``--chain`` (run before anything is loaded): the structure
    must exist, the chain id must be a short printable token."""
    if chain is not None:
        check_chain_id(chain, "--chain")
    if spec is not None and not Path(spec).exists():
        raise InputError(f"--structure {spec}: not found. Give a PDB/mmCIF file, a folder of them, or a table with "
                         "columns id, structure, chain.", path=spec, todo="Check the path.")


def _read_mapping_table(path: Path) -> list[tuple[int, str, str, str]]:
    text = path.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = "\t" if "\t" in first else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "id" not in header or "structure" not in header:
        raise InputError(f"{path}, line 1: a structure mapping table needs the columns id, structure and "
                         f"(optionally) chain; found {', '.join(header) or 'nothing'}. Add a header line "
                         "'id,structure,chain'.", path=path, line=1, todo="Add a header line 'id,structure,chain'.")
    i_id, i_st = header.index("id"), header.index("structure")
    i_ch = header.index("chain") if "chain" in header else None
    out = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise InputError(f"{path}, line {n}: {len(row)} fields, expected {len(header)}. Fill in id, structure, "
                             "chain.", path=path, line=n, todo="Fill in id, structure, chain.")
        chain = row[i_ch].strip() if i_ch is not None else ""
        out.append((n, row[i_id].strip(), row[i_st].strip(), chain))
    return out


def resolve_structures(spec: str | Path, ids: Iterable[str], chain: str | None = None,
                       name_of=None) -> dict[str, StructureRequest]:
    """Which structure (and chain) each protein gets from ``--structure``:

    - a structure file: every protein, on ``chain`` (or its best-matching chain);
    - a folder: ``<id>.pdb``/``.ent``/``.cif``/``.mmcif`` (the id as is, or as ``name_of(id)``);
      proteins without a file get none;
    - a table (.csv/.tsv/.txt) with columns ``id, structure, chain``: paths relative to the table's folder;
      an empty chain means ``chain`` (or the best-matching one).
    """
    spec = Path(spec)
    ids = list(ids)
    if spec.is_dir():
        out = {}
        for pid in ids:
            names = dict.fromkeys([pid] + ([name_of(pid)] if name_of else []))
            for name in names:
                hits = [spec / f"{name}{s}" for s in STRUCTURE_SUFFIXES if (spec / f"{name}{s}").is_file()]
                if hits:
                    out[pid] = StructureRequest(hits[0], chain)
                    break
        if not out:
            raise InputError(f"{spec}: no structure file named after a protein id (<id>.pdb or <id>.cif) in this "
                             "folder. Name the files after the ids, or give a table with columns id, structure, "
                             "chain.", path=spec, todo="Name the files after the ids.")
        return out
    if not spec.is_file():
        raise InputError(f"{spec}: not found. Give --structure a PDB/mmCIF file, a folder of them, or a table "
                         "with columns id, structure, chain.", path=spec, todo="Check the path.")
    if _suffix(spec) in STRUCTURE_SUFFIXES:
        return {pid: StructureRequest(spec, chain) for pid in ids}
    if spec.suffix.lower() not in (".csv", ".tsv", ".txt", ".tab"):
        structure_format(spec)  # raises: names the accepted suffixes
    known = set(ids)
    out: dict[str, StructureRequest] = {}
    first_line: dict[str, int] = {}
    for line, pid, path, ch in _read_mapping_table(spec):
        if pid not in known:
            raise InputError(f"{spec}, line {line}, id {pid!r}: not among the proteins to score. Remove the line or "
                             "fix the id.", path=spec, line=line, pid=pid, todo="Remove the line or fix the id.")
        if pid in first_line:
            raise InputError(f"{spec}, line {line}, id {pid!r}: listed twice (also on line {first_line[pid]}). Keep "
                             "one line per id.", path=spec, line=line, pid=pid, todo="Keep one line per id.")
        first_line[pid] = line
        if ch:
            check_chain_id(ch, f"{spec}, line {line}, id {pid!r}")
        p = Path(path)
        p = p if p.is_absolute() else spec.parent / p
        structure_format(p)
        out[pid] = StructureRequest(p, ch or chain)
    return out


# -- writing -------------------------------------------------------------------------------------------------

def percentiles(scores: Sequence[float]) -> list[float]:
    """Within-protein percentile of each score, 0 (lowest) .. 1 (highest): ``(n - rank) / (n - 1)`` with
    rank 1 = highest score (ties in sequence order, as ``rank`` in predictions.csv); 1 for a single residue."""
    n = len(scores)
    order = sorted(range(n), key=lambda k: -scores[k])  # stable: ties in sequence order
    out = [1.0] * n
    for rank, k in enumerate(order, start=1):
        out[k] = (n - rank) / (n - 1) if n > 1 else 1.0
    return out


def residue_scores(mapping: ChainMapping, scores: Sequence[float]) -> dict[tuple[str, int, str, str], float]:
    return {r.key: float(s) for r, s in zip(mapping.residues, scores) if r is not None}


def _pdb_key(line: str) -> tuple[str, int, str, str] | None:
    try:
        return (line[21], int(line[22:26]), line[26].strip(), line[17:20].strip())
    except (ValueError, IndexError):
        return None


SCORE_CATEGORY = "allo_lightning_score"  # mmCIF category written next to atom_site


def write_scored_structure(mapping: ChainMapping, scores: Sequence[float], dst: str | Path,
                           unmapped_b: float | None = UNMAPPED_B) -> Path:
    """Copy the structure to ``dst`` (same format) with B-factor = score on the mapped residues of the
    mapped chain (every model) and ``unmapped_b`` on every other atom (other chains, ligands, waters,
    unmapped residues; ``None`` keeps their crystallographic B); everything else unchanged. An mmCIF
    copy also gets the category ``_allo_lightning_score`` (one row per mapped residue: auth_asym_id,
    auth_seq_id, pdbx_PDB_ins_code, auth_comp_id, seq_position (1-based), score, percentile), so the
    scores survive a program that rewrites B-factors."""
    by_key = residue_scores(mapping, scores)
    dst = Path(dst)
    if mapping.fmt == "pdb":
        lines = read_text(mapping.path, "latin-1").splitlines(keepends=True)
        out = []
        for line in lines:
            if line.startswith(("ATOM  ", "HETATM")):
                key = _pdb_key(line)
                value = by_key.get(key, unmapped_b) if key is not None else unmapped_b
                if value is not None:
                    body = line.rstrip("\r\n")
                    end = line[len(body):]
                    body = body.ljust(66)
                    line = body[:60] + f"{value:6.2f}" + body[66:] + end
            out.append(line)
        with atomic_path(dst) as tmp:
            tmp.write_bytes("".join(out).encode("latin-1"))
        return dst
    import numpy as np
    from biotite.structure.io import pdbx

    cif = pdbx.CIFFile.read(io.StringIO(read_text(mapping.path)))
    block = cif.block
    sites = block["atom_site"]

    def col(*names: str, default: str = "") -> np.ndarray:
        for n in names:
            if n in sites:
                return sites[n].as_array(str)
        return np.full(sites.row_count, default)

    chains = col("auth_asym_id", "label_asym_id")
    numbers = col("auth_seq_id", "label_seq_id")
    icodes = col("pdbx_PDB_ins_code")
    names = col("auth_comp_id", "label_comp_id")
    b = col("B_iso_or_equiv", default="?").astype(object)
    for i in range(sites.row_count):
        code = "" if icodes[i] in (".", "?") else icodes[i]
        try:
            key = (chains[i], int(numbers[i]), code, names[i])
        except ValueError:
            key = None
        if key in by_key:
            b[i] = f"{by_key[key]:.4f}"
        elif unmapped_b is not None:
            b[i] = f"{unmapped_b:.2f}"
    sites["B_iso_or_equiv"] = pdbx.CIFColumn(pdbx.CIFData(np.asarray(b, dtype=str)))
    pct = percentiles([float(v) for v in scores])
    rows = [(r, k + 1, float(scores[k]), pct[k]) for k, r in enumerate(mapping.residues) if r is not None]
    if rows:
        block[SCORE_CATEGORY] = pdbx.CIFCategory({
            "auth_asym_id": [r.chain for r, *_ in rows],
            "auth_seq_id": [str(r.number) for r, *_ in rows],
            "pdbx_PDB_ins_code": [r.icode or "?" for r, *_ in rows],
            "auth_comp_id": [r.name for r, *_ in rows],
            "seq_position": [str(k) for _, k, _, _ in rows],
            "score": [f"{v:.6f}" for *_, v, _ in rows],
            "percentile": [f"{q:.4f}" for *_, q in rows]})
    with atomic_path(dst) as tmp:
        cif.write(str(tmp))
    return dst


# -- scripts -------------------------------------------------------------------------------------------------

COLOUR_MEANING = ("colour = within-protein percentile of the score (0 = lowest score of this protein, blue; "
                  "0.5 = median, white; 1 = highest, red), not the raw score: raw scores of one protein sit in a "
                  "narrow band. Grey: residues without a score (unmapped, other chains).")


def script_text(text: str) -> str:
    """Text from an input (ids, file names, header notes) made safe for one script line: every character
    that is not printable (line breaks, tabs, escapes, Unicode separators) becomes ``?`` and ``;`` (a
    command separator for PyMOL, even in comments, and ChimeraX) becomes ``,``."""
    return "".join(("," if c == ";" else c) if c.isprintable() else "?" for c in str(text))


def _checked(lines: list[str]) -> str:
    """Join script lines; an unprintable character or ``;`` in any of them is a bug (never written)."""
    for ln in lines:
        if ";" in ln or not ln.isprintable():
            raise ValueError(f"refusing to write a script line with ';' or a control character: {ln[:60]!a}")
    return "\n".join(lines) + "\n"


def _object_name(name: str) -> str:
    return "allo_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _pymol_resi(r: Residue) -> str:
    return ("\\" + r.resi) if r.number < 0 else r.resi  # PyMOL: a leading minus needs a backslash


def _pymol_sel(obj: str, residues: Sequence[Residue]) -> str:
    by_chain: dict[str, list[str]] = {}
    for r in residues:
        by_chain.setdefault(r.chain, []).append(_pymol_resi(r))
    parts = [f"(chain {c or chr(34) * 2} and resi {'+'.join(v)})" for c, v in by_chain.items()]
    return f"{obj} and ({' or '.join(parts)})" if parts else f"{obj} and none"


def _cx_spec(model: str, residues: Sequence[Residue]) -> str:
    by_chain: dict[str, list[str]] = {}
    for r in residues:
        by_chain.setdefault(r.chain, []).append(r.resi)
    return model + "".join(f"/{c}:{','.join(v)}" for c, v in by_chain.items())


@dataclass
class ScriptInput:
    """What both scripts show for one protein."""

    pid: str
    name: str  # file-name form of the id
    scores: list[float]  # one per sequence position
    residues: list[Residue | None]  # one per sequence position
    top: int = 10
    header: list[str] = field(default_factory=list)  # extra comment lines (backbone, identity, ...)
    structure_file: str | None = None  # path relative to the output folder of the scored structure
    known: list[int] = field(default_factory=list)  # known site positions (1-based), shown as a selection

    @classmethod
    def sequence_numbered(cls, pid: str, name: str, sequence: str, scores: Sequence[float], chain: str = "A",
                          top: int = 10, header: Sequence[str] = (), known: Sequence[int] = ()) -> ScriptInput:
        check_chain_id(chain, "--chain")
        residues = [Residue(chain, i + 1, "", "", aa) for i, aa in enumerate(sequence)]
        note = [(f"No structure was given: residue numbers are 1-based positions in the input sequence, on chain "
                f"{chain} (--chain). Use a structure numbered like the sequence (e.g. UniProt numbering), or run "
                "predict with --structure FILE to map the scores onto a structure's own numbering.")]
        return cls(pid, name, list(scores), residues, top, note + list(header), known=list(known))

    def mapped(self) -> list[tuple[Residue, float, float]]:
        """(residue, score, percentile) of every mapped position."""
        pct = percentiles(self.scores)
        return [(r, s, q) for r, s, q in zip(self.residues, self.scores, pct) if r is not None]

    def top_residues(self) -> list[Residue]:
        pairs = sorted(self.mapped(), key=lambda t: -t[1])
        return [r for r, _, _ in pairs[: self.top]]

    def known_residues(self) -> list[Residue]:
        return [self.residues[p - 1] for p in self.known
                if 1 <= p <= len(self.residues) and self.residues[p - 1] is not None]

    def comments(self, first: str) -> list[str]:
        return ["# " + script_text(t) for t in [first, *self.header, COLOUR_MEANING]]


def pymol_script(info: ScriptInput) -> str:
    obj = _object_name(info.name)
    mapped = info.mapped()
    lines = info.comments(f"allo_lightning scores for {info.pid}, on object {obj} only (other objects are left as "
                          "they are). The b property of the scored residues is set to the percentile.")
    if info.structure_file:
        lines += [script_text(f"# Usage: in PyMOL, cd to the output folder, then: @pymol/{info.name}.pml (loads "
                              f"{info.structure_file} as {obj}, its B-factors hold the raw scores)."),
                  f"delete {obj}", f"load {script_text(info.structure_file)}, {obj}"]
    else:
        lines += [script_text(f"# Usage: load your structure as object {obj} (load FILE, {obj}), then from the "
                              f"output folder: @pymol/{info.name}.pml")]
    lines += [f"alter {obj} and chain {r.chain or chr(34) * 2} and resi {_pymol_resi(r)}, b={q:.4f}"
              for r, _, q in mapped]
    scored, top, known = f"{obj}_scored", f"{obj}_top", f"{obj}_known"
    lines += [f"select {scored}, {_pymol_sel(obj, [r for r, _, _ in mapped])}",
              f"select {top}, {_pymol_sel(obj, info.top_residues())}"]
    if info.known:
        lines += [f"select {known}, {_pymol_sel(obj, info.known_residues())}"]
    lines += [f"show cartoon, {obj}",
              f"color grey80, {obj} and not {scored}",
              f"spectrum b, blue_white_red, {scored}, minimum=0, maximum=1",
              "# colour key: percentile 0 (blue), 0.5 (white), 1 (red)",
              f"delete {obj}_percentile_key",
              f"ramp_new {obj}_percentile_key, {obj}, [0, 0.5, 1], [blue, white, red]",
              f"show sticks, {top} and not hydro"]
    if info.known:
        lines += [f"show spheres, {known} and name CA", f"color yellow, {known} and name CA"]
    lines += ["deselect"]
    return _checked(lines)


def chimerax_script(info: ScriptInput, model: str = "#1") -> str:
    mapped = info.mapped()
    lines = info.comments(f"allo_lightning scores for {info.pid}, on model {model} only (other models are left as "
                          "they are). Attributes: allo_score (raw score), allo_percentile (colour).")
    opened = f"open {info.structure_file}" if info.structure_file else "open YOUR_FILE"
    lines += [script_text(f"# Usage: from the output folder, '{opened}' as model {model} (if it gets another "
                          f"number, replace {model} below by it), then: open chimerax/{info.name}.cxc")]
    for r, v, q in mapped:
        lines += [f"setattr {_cx_spec(model, [r])} residues allo_score {v:.4f} create true",
                  f"setattr {_cx_spec(model, [r])} residues allo_percentile {q:.4f} create true"]
    top = info.top_residues()
    lines += [f"cartoon {model}", f"color {model} lightgray"]
    if mapped:
        lines += [(f"color byattribute r:allo_percentile {_cx_spec(model, [r for r, _, _ in mapped])} "
                   "palette 0,blue:0.5,white:1,red"),
                  "# colour key: within-protein percentile (its own command: a failure leaves the colours as set)",
                  "key blue:0 white:0.5 red:1"]
    if top:
        lines += [f"show {_cx_spec(model, top)} atoms", f"style {_cx_spec(model, top)} stick"]
    known = info.known_residues()
    if known:
        lines += [f"name frozen allo_known {_cx_spec(model, known)}"]
    return _checked(lines)


def mapping_columns(residues: Sequence[Residue | None]) -> list[tuple[str, str, str]]:
    """(chain, residue number, insertion code) per sequence position; empty strings where unmapped."""
    return [("", "", "") if r is None else (r.chain, str(r.number), r.icode) for r in residues]


def structures_for(proteins: Sequence, spec: str | Path, chain: str | None, options: StructureOptions,
                   name_of=None) -> Mapping[str, ChainMapping]:
    """Resolve and align every protein's structure (checked before any expensive work)."""
    if chain is not None:
        check_chain_id(chain, "--chain")
    requests = resolve_structures(spec, [p.id for p in proteins], chain, name_of)
    cache: dict[Path, tuple[object, References]] = {}
    out = {}
    for p in proteins:
        req = requests.get(p.id)
        if req is None:
            continue
        if req.path not in cache:
            cache[req.path] = (read_atoms(req.path), read_references(req.path))
        atoms, refs = cache[req.path]
        out[p.id] = map_chain(p.id, p.sequence, req.path, req.chain, options, atoms=atoms, references=refs)
    return out


def write_protein_scripts(out: str | Path, pid: str, name: str, sequence: str, scores: Sequence[float],
                          mapping: ChainMapping | None, chain: str | None = None, top: int = 10,
                          header: Sequence[str] = (), known: Sequence[int] = (),
                          unmapped_b: float | None = UNMAPPED_B) -> dict:
    """Write ``out/pymol/<name>.pml``, ``out/chimerax/<name>.cxc`` and, with a ``mapping``,
    ``out/structures/<name>.<pdb|cif>`` for one protein. Returns what predictions.json records
    (:func:`structure_record`)."""
    from .outputs import write_text

    out = Path(out)
    if mapping is None:
        info = ScriptInput.sequence_numbered(pid, name, sequence, scores, chain or "A", top, header, known)
    else:
        rel = f"structures/{name}.{mapping.fmt}"
        write_scored_structure(mapping, scores, out / rel, unmapped_b)
        b_note = ("crystallographic B kept on the other atoms" if unmapped_b is None else
                  f"B-factor {unmapped_b:g} on every other atom")
        lines = [(f"Structure {mapping.path} (written as {rel} with B-factor = raw score on the mapped residues, "
                  f"{b_note}), chain {mapping.chain}: {mapping.aligned} of {len(mapping.residues)} sequence "
                  f"positions mapped ({', '.join(mapping.segments) or 'none'}, identity {mapping.identity:.3f}, "
                  f"coverage {mapping.coverage:.3f})."),
                 "Residue numbers and insertion codes are the structure's own (author) numbering."]
        if mapping.reference:
            lines.append(f"Reference records: {mapping.reference['accession']}; not scored: "
                         + (", ".join(mapping.reference["excluded"]) or "nothing"))
        info = ScriptInput(pid, name, list(scores), list(mapping.residues), top, lines + list(header), rel,
                           known=list(known))
    write_text(out / "pymol" / f"{name}.pml", pymol_script(info))
    write_text(out / "chimerax" / f"{name}.cxc", chimerax_script(info))
    return structure_record(mapping, chain, name, unmapped_b)


def structure_record(mapping: ChainMapping | None, chain: str | None = None, name: str | None = None,
                     unmapped_b: float | None = UNMAPPED_B) -> dict:
    """The per-protein structure part of predictions.json (a stable data API for reports):

    - ``structure``: the input file (None without one); ``written``: the scored copy, relative to the
      output folder; ``chain``; ``numbering``: ``structure`` (author numbers) or ``sequence``;
    - ``identity``, ``coverage``, ``aligned``; ``segments``: mapped stretches (``["A:29-230", ...]``);
    - ``residues``: one entry per sequence position, ``[chain, resnum, icode]`` or null (unmapped);
    - ``reference_numbers``: per position the reference (UniProt) number from the reference records, or null;
    - ``reference``: accession, database, segments and what was excluded (other entries, tags), or null;
    - ``unmapped_b``: the B-factor written on atoms without a score (null: crystallographic B kept).
    """
    if mapping is None:
        return {"structure": None, "written": None, "chain": chain or "A", "numbering": "sequence",
                "segments": [], "residues": None, "reference_numbers": None, "reference": None}
    return {"structure": str(mapping.path), "written": f"structures/{name}.{mapping.fmt}" if name else None,
            "chain": mapping.chain, "numbering": "structure", "identity": round(mapping.identity, 4),
            "coverage": round(mapping.coverage, 4), "aligned": mapping.aligned, "segments": mapping.segments,
            "residues": [None if r is None else [r.chain, r.number, r.icode] for r in mapping.residues],
            "reference_numbers": [None if r is None else r.ref for r in mapping.residues],
            "reference": mapping.reference, "unmapped_b": unmapped_b}
