"""Reading structures: PDB / mmCIF files (gzipped too) with biotite, their amino-acid residues per chain,
and the tokens that leave a file.

Nothing read from a structure reaches a script unchecked: chain ids must match ``[A-Za-z0-9]{1,4}`` (or be
empty) and insertion codes ``[A-Za-z0-9]?``; any other value (a line break, ``;``, a quote, a space) is
refused with one line naming the file, before any model is loaded. Every other text that goes into a
script line (ids, file names, notes from reference records) passes :func:`script_text` (no control
character, no ``;``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

PDB_SUFFIXES = (".pdb", ".ent")
CIF_SUFFIXES = (".cif", ".mmcif")
STRUCTURE_SUFFIXES = PDB_SUFFIXES + CIF_SUFFIXES
STRUCTURE_SUFFIXES = STRUCTURE_SUFFIXES + tuple(s + ".gz" for s in STRUCTURE_SUFFIXES)  # gzipped: read as is
CHAIN_ID = re.compile(r"[A-Za-z0-9]{0,4}\Z")
INS_CODE = re.compile(r"[A-Za-z0-9]?\Z")


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


def script_text(text: str) -> str:
    """Text from an input (ids, file names, header notes) made safe for one script line: every character
    that is not printable (line breaks, tabs, escapes, Unicode separators) becomes ``?`` and ``;`` (a
    command separator for PyMOL, even in comments, and ChimeraX) becomes ``,``."""
    return "".join(("," if c == ";" else c) if c.isprintable() else "?" for c in str(text))
