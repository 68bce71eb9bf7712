"""Which structure (and chain) for which protein, from ``--structure``: a file, a folder of files named
after the ids, or a table with columns ``id, structure, chain`` (read with :mod:`allo_lightning.data.io`'s
table reader and its rules)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.io import read_rows
from ..errors import InputError
from .alignment import ChainMapping, StructureOptions, map_chain
from .formats import STRUCTURE_SUFFIXES, _shown, _suffix, check_chain_id, read_atoms, structure_format
from .references import References, read_references


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
    """(line, id, structure, chain) per row of a mapping table, read by :func:`allo_lightning.data.io.read_rows`
    (its rules: UTF-8 or UTF-16 with a BOM, any line ending, tab/comma/semicolon, quotes; one-line errors)."""
    table = read_rows(path, "id, structure, chain")
    header = table.header
    if "id" not in header or "structure" not in header:
        found = ", ".join(_shown(h, 30) for h in header[:12]) or "nothing"
        raise InputError(f"{path}, line {table.line}: a structure mapping table needs the columns id, structure and "
                         f"(optionally) chain; found {found}. Add a header line 'id,structure,chain'.", path=path,
                         line=table.line, todo="Add a header line 'id,structure,chain'.")
    table.refuse_duplicate_columns()
    i_id, i_st = header.index("id"), header.index("structure")
    i_ch = header.index("chain") if "chain" in header else None
    return [(n, row[i_id].strip(), row[i_st].strip(), row[i_ch].strip() if i_ch is not None else "")
            for n, row in table.rows(max(i_id, i_st) + 1)]


def _one_file(spec: Path) -> bool:
    """Is ``--structure`` one structure file (aligned to every protein), not a folder or a mapping table?"""
    return spec.is_file() and _suffix(spec) in STRUCTURE_SUFFIXES


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
    if _one_file(spec):
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
        if not path.isprintable():  # a line break in a quoted cell, a control character: never a file we mean
            raise InputError(f"{spec}, line {line}, id {pid!r}: the structure path {_shown(path, 40)} has a line break "
                             "or another unprintable character. Fix the path.", path=spec, line=line, pid=pid,
                             todo="Fix the path.")
        p = Path(path)
        p = p if p.is_absolute() else spec.parent / p
        where = f"{spec}, line {line}, id {pid!r}"
        try:
            structure_format(p)
        except InputError as e:  # the suffix: named with the table line that gave the path
            raise InputError(f"{where}: {e}", path=spec, line=line, pid=pid, todo=e.todo) from None
        if not p.is_file():  # checked here, where the line is known (read_atoms would name only the file)
            raise InputError(f"{where}: structure file {_shown(str(p), 200)} not found (a relative path is read from "
                             f"the table's folder, {_shown(str(spec.parent), 200)}). Fix the path, or give it "
                             "relative to the table or absolute.", path=spec, line=line, pid=pid,
                             todo="Fix the path.")
        out[pid] = StructureRequest(p, ch or chain)
    return out


KEEP_STRUCTURES = 4  # structures kept in memory while proteins are mapped or scored: proteins sharing a file
#                     (the chains of one complex in a table) are usually listed together


def structures_for(proteins: Sequence, spec: str | Path, chain: str | None, options: StructureOptions,
                   name_of=None) -> Mapping[str, ChainMapping]:
    """Resolve and align every protein's structure (checked before any expensive work)."""
    if chain is not None:
        check_chain_id(chain, "--chain")
    requests = resolve_structures(spec, [p.id for p in proteins], chain, name_of)
    one_file = _one_file(Path(spec))
    cache: dict[Path, tuple[object, References]] = {}  # the last few files read (a folder: one per protein)
    out = {}
    for p in proteins:
        req = requests.get(p.id)
        if req is None:
            continue
        if req.path not in cache:
            while len(cache) >= KEEP_STRUCTURES:  # memory independent of the number of structures
                cache.pop(next(iter(cache)))
            cache[req.path] = (read_atoms(req.path), read_references(req.path))
        atoms, refs = cache[req.path]
        try:
            out[p.id] = map_chain(p.id, p.sequence, req.path, req.chain, options, atoms=atoms, references=refs)
        except InputError as e:
            if not (one_file and len(proteins) > 1):
                raise
            raise InputError(f"{e} One --structure file is aligned to every protein ({len(proteins)} here): to give "
                             "each protein its own structure (or none), pass a table with columns id, structure, "
                             "chain, or a folder of <id>.pdb / <id>.cif files.", path=e.path, line=e.line, pid=e.pid,
                             todo=e.todo) from None
    return out
