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
by category (the ``B_iso_or_equiv`` column only).
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

    @property
    def identity(self) -> float:
        return self.identical / self.aligned if self.aligned else 0.0

    @property
    def coverage(self) -> float:
        return self.aligned / len(self.residues) if self.residues else 0.0

    @property
    def fmt(self) -> str:
        return structure_format(self.path)

    def summary(self) -> str:
        return (f"{self.path.name} chain {self.chain}: {self.aligned} of {len(self.residues)} positions mapped, "
                f"identity {self.identity:.3f}, coverage {self.coverage:.3f}")


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


def chain_residues(atoms) -> dict[str, list[Residue]]:
    """Amino-acid residues per chain, in file order."""
    import biotite.structure as struc

    aa = atoms[struc.filter_amino_acids(atoms)]
    out: dict[str, list[Residue]] = {}
    if aa.array_length() == 0:
        return out
    for start in struc.get_residue_starts(aa):
        name = str(aa.res_name[start])
        res = Residue(str(aa.chain_id[start]), int(aa.res_id[start]), str(aa.ins_code[start]).strip(), name,
                      _letter(name))
        out.setdefault(res.chain, []).append(res)
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
    identical = aligned = 0
    for block in blocks:
        lo, hi = 0, len(block)
        if trim:
            values = [float(score[seq_a.code[i], seq_b.code[j]]) for i, j in block]
            lo, hi = _best_segment(values)
            same = [seq_a.code[i] == seq_b.code[j] and str(seq_a[i]) != "X" for i, j in block]
            lo, hi = _trim_ends(same, lo, hi)
            if sum(values[lo:hi]) < MIN_SEGMENT_SCORE:
                lo = hi = 0
        for i, j in block[lo:hi]:
            mapped[i] = residues[j]
            aligned += 1
            identical += str(seq_a[i]) == residues[j].letter and residues[j].letter != "X"
    return mapped, identical, aligned


def map_chain(pid: str, sequence: str, path: str | Path, chain: str | None = None,
              options: StructureOptions | None = None, atoms=None) -> ChainMapping:
    """Align ``sequence`` to ``chain`` of the structure (or, with ``chain=None``, to the chain that covers
    it best). Raises InputError when the chain is missing or the match is below the thresholds."""
    options = options or StructureOptions()
    path = Path(path)
    chains = chain_residues(read_atoms(path) if atoms is None else atoms)
    if not chains:
        raise InputError(f"{path}: no amino-acid residues in this structure (protein {pid!r}). Give a protein "
                         "structure.", path=path, pid=pid, todo="Give a protein structure.")
    if chain is not None and chain not in chains:
        raise InputError(f"{path}: no protein chain {chain!r} (protein {pid!r}; chains: {', '.join(chains)}). "
                         "Give one of these with --chain (or a 'chain' column in the mapping table).",
                         path=path, pid=pid, todo="Give an existing chain.")
    candidates = [chain] if chain is not None else list(chains)
    best: ChainMapping | None = None
    for c in candidates:
        mapped, identical, aligned = align(sequence, chains[c])
        m = ChainMapping(pid, path, c, mapped, identical, aligned, len(chains[c]))
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


def check_structure_spec(spec: str | Path | None) -> None:
    """Model-free check of ``--structure`` (run before anything is loaded): it must exist."""
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
    out = {}
    for line, pid, path, ch in _read_mapping_table(spec):
        if pid not in known:
            raise InputError(f"{spec}, line {line}, id {pid!r}: not among the proteins to score. Remove the line or "
                             "fix the id.", path=spec, line=line, pid=pid, todo="Remove the line or fix the id.")
        p = Path(path)
        p = p if p.is_absolute() else spec.parent / p
        structure_format(p)
        out[pid] = StructureRequest(p, ch or chain)
    return out


# -- writing -------------------------------------------------------------------------------------------------

def residue_scores(mapping: ChainMapping, scores: Sequence[float]) -> dict[tuple[str, int, str, str], float]:
    return {r.key: float(s) for r, s in zip(mapping.residues, scores) if r is not None}


def _pdb_key(line: str) -> tuple[str, int, str, str] | None:
    try:
        return (line[21], int(line[22:26]), line[26].strip(), line[17:20].strip())
    except (ValueError, IndexError):
        return None


def write_scored_structure(mapping: ChainMapping, scores: Sequence[float], dst: str | Path) -> Path:
    """Copy the structure to ``dst`` (same format) with B-factor = score on the mapped residues of the
    mapped chain (every model); everything else unchanged."""
    by_key = residue_scores(mapping, scores)
    dst = Path(dst)
    if mapping.fmt == "pdb":
        lines = read_text(mapping.path, "latin-1").splitlines(keepends=True)
        out = []
        for line in lines:
            if line.startswith(("ATOM  ", "HETATM")):
                key = _pdb_key(line)
                if key in by_key:
                    body = line.rstrip("\r\n")
                    end = line[len(body):]
                    body = body.ljust(66)
                    line = body[:60] + f"{by_key[key]:6.2f}" + body[66:] + end
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
            continue
        if key in by_key:
            b[i] = f"{by_key[key]:.4f}"
    sites["B_iso_or_equiv"] = pdbx.CIFColumn(pdbx.CIFData(np.asarray(b, dtype=str)))
    with atomic_path(dst) as tmp:
        cif.write(str(tmp))
    return dst


# -- scripts -------------------------------------------------------------------------------------------------

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

    @classmethod
    def sequence_numbered(cls, pid: str, name: str, sequence: str, scores: Sequence[float], chain: str = "A",
                          top: int = 10, header: Sequence[str] = ()) -> ScriptInput:
        residues = [Residue(chain, i + 1, "", "", aa) for i, aa in enumerate(sequence)]
        note = [(f"No structure was given: residue numbers are 1-based positions in the input sequence, on chain "
                f"{chain} (--chain). Use a structure numbered like the sequence (e.g. UniProt numbering), or run "
                "predict with --structure FILE to map the scores onto a structure's own numbering.")]
        return cls(pid, name, list(scores), residues, top, note + list(header))

    def mapped(self) -> list[tuple[Residue, float]]:
        return [(r, s) for r, s in zip(self.residues, self.scores) if r is not None]

    def top_residues(self) -> list[Residue]:
        pairs = sorted(self.mapped(), key=lambda t: -t[1])
        return [r for r, _ in pairs[: self.top]]


def pymol_script(info: ScriptInput) -> str:
    obj = _object_name(info.name)
    mapped = info.mapped()
    lines = [f"# allo_lightning scores for {info.pid}, on object {obj} only (other objects are left as they are)."]
    lines += [f"# {h}" for h in info.header]
    if info.structure_file:
        lines += [(f"# Usage: in PyMOL, cd to the output folder, then: @pymol/{info.name}.pml (loads "
                   f"{info.structure_file} as {obj}; its B-factors already hold the scores on the mapped residues)."),
                  f"delete {obj}", f"load {info.structure_file}, {obj}"]
    else:
        lines += [(f"# Usage: load your structure as object {obj} (load FILE, {obj}), then from the output folder: "
                  f"@pymol/{info.name}.pml")]
    lines = [ln.replace(";", ",") for ln in lines]  # PyMOL splits commands at ';', even in comments
    lines += [f"alter {obj} and chain {r.chain or chr(34) * 2} and resi {_pymol_resi(r)}, b={s:.4f}"
              for r, s in mapped]
    scored, top = f"{obj}_scored", f"{obj}_top"
    lines += [f"select {scored}, {_pymol_sel(obj, [r for r, _ in mapped])}",
              f"select {top}, {_pymol_sel(obj, info.top_residues())}",
              f"show cartoon, {obj}",
              f"color grey80, {obj} and not {scored}",
              f"spectrum b, blue_white_red, {scored}, minimum=0, maximum=1",
              f"show sticks, {top} and not hydro",
              "deselect"]
    return "\n".join(lines) + "\n"


def chimerax_script(info: ScriptInput, model: str = "#1") -> str:
    mapped = info.mapped()
    lines = [f"# allo_lightning scores for {info.pid}, on model {model} only (other models are left as they are)."]
    lines += [f"# {h}" for h in info.header]
    opened = f"open {info.structure_file}" if info.structure_file else "open YOUR_FILE"
    lines += [(f"# Usage: from the output folder, '{opened}' as model {model} (if it gets another number, replace "
              f"{model} below by it), then: open chimerax/{info.name}.cxc")]
    lines = [ln.replace(";", ",") for ln in lines]  # ';' separates commands
    lines += [f"setattr {_cx_spec(model, [r])} residues allo_score {s:.4f} create true" for r, s in mapped]
    top = info.top_residues()
    lines += [f"cartoon {model}", f"color {model} lightgray",
              (f"color byattribute r:allo_score {_cx_spec(model, [r for r, _ in mapped])} "
              "palette 0,blue:0.5,white:1,red")]
    if top:
        lines += [f"show {_cx_spec(model, top)} atoms", f"style {_cx_spec(model, top)} stick"]
    return "\n".join(lines) + "\n"


def mapping_columns(residues: Sequence[Residue | None]) -> list[tuple[str, str, str]]:
    """(chain, residue number, insertion code) per sequence position; empty strings where unmapped."""
    return [("", "", "") if r is None else (r.chain, str(r.number), r.icode) for r in residues]


def structures_for(proteins: Sequence, spec: str | Path, chain: str | None, options: StructureOptions,
                   name_of=None) -> Mapping[str, ChainMapping]:
    """Resolve and align every protein's structure (checked before any expensive work)."""
    requests = resolve_structures(spec, [p.id for p in proteins], chain, name_of)
    atoms_cache: dict[Path, object] = {}
    out = {}
    for p in proteins:
        req = requests.get(p.id)
        if req is None:
            continue
        if req.path not in atoms_cache:
            atoms_cache[req.path] = read_atoms(req.path)
        out[p.id] = map_chain(p.id, p.sequence, req.path, req.chain, options, atoms=atoms_cache[req.path])
    return out


def write_protein_scripts(out: str | Path, pid: str, name: str, sequence: str, scores: Sequence[float],
                          mapping: ChainMapping | None, chain: str | None = None, top: int = 10,
                          header: Sequence[str] = ()) -> dict:
    """Write ``out/pymol/<name>.pml``, ``out/chimerax/<name>.cxc`` and, with a ``mapping``,
    ``out/structures/<name>.<pdb|cif>`` for one protein. Returns what predictions.json records."""
    from .outputs import write_text

    out = Path(out)
    if mapping is None:
        info = ScriptInput.sequence_numbered(pid, name, sequence, scores, chain or "A", top, header)
        record: dict = {"structure": None, "chain": chain or "A", "numbering": "sequence"}
    else:
        rel = f"structures/{name}.{mapping.fmt}"
        write_scored_structure(mapping, scores, out / rel)
        lines = [(f"Structure {mapping.path} (written with B-factor = score as {rel}), chain {mapping.chain}: "
                 f"{mapping.aligned} of {len(mapping.residues)} sequence positions mapped (identity "
                 f"{mapping.identity:.3f}, coverage {mapping.coverage:.3f})."),
                 "Residue numbers and insertion codes are the structure's own (author) numbering."]
        info = ScriptInput(pid, name, list(scores), list(mapping.residues), top, lines + list(header), rel)
        record = {"structure": str(mapping.path), "written": rel, "chain": mapping.chain, "numbering": "structure",
                  "identity": round(mapping.identity, 4), "coverage": round(mapping.coverage, 4),
                  "aligned": mapping.aligned}
    write_text(out / "pymol" / f"{name}.pml", pymol_script(info))
    write_text(out / "chimerax" / f"{name}.cxc", chimerax_script(info))
    return record
