"""Scores on structures: synthetic PDB / mmCIF files written here with biotite (two chains, a numbering
offset, a gap, an insertion code, a fusion segment, a ligand and waters). The scores must land on the
right residues of the right chain only; everything else keeps its B-factor."""

from __future__ import annotations

import numpy as np
import pytest

from allo_lightning.errors import InputError
from allo_lightning.structures import (
    KEEP_STRUCTURES,
    UNMAPPED_B,
    ChainMapping,
    Residue,
    ScriptInput,
    StructureOptions,
    chain_residues,
    chimerax_script,
    map_chain,
    mapping_columns,
    pymol_script,
    read_atoms,
    resolve_structures,
    structures_for,
    write_scored_structure,
)

SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRV"  # 40 residues; the protein to score
OTHER = "GPNWEDCHGPNWEDCHGPNWEDCHGPNWEDCH"  # unrelated chain C
FUSION = "WPWPCWCPWC"  # residues in chain A that are not in SEQ (e.g. a T4L-like insert)
THREE = {"A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS", "I": "ILE",
         "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN", "R": "ARG", "S": "SER",
         "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR"}
ORIGINAL_B = 77.0


def chain_a_layout():
    """(sequence position or None, residue number, insertion code, 1-letter) for chain A: positions 3-12 as
    103-112 (offset 100), a gap (13-15 unresolved), 16-17 as 116-117, 18 as 117A (insertion code), 19-20 as
    118-119, a fusion segment 1001-1010, then 21-35 as 120-134."""
    rows = [(p, p + 100, "", SEQ[p - 1]) for p in range(3, 13)]
    rows += [(16, 116, "", SEQ[15]), (17, 117, "", SEQ[16]), (18, 117, "A", SEQ[17]), (19, 118, "", SEQ[18]),
             (20, 119, "", SEQ[19])]
    rows += [(None, 1001 + k, "", aa) for k, aa in enumerate(FUSION)]
    rows += [(p, p + 99, "", SEQ[p - 1]) for p in range(21, 36)]
    return rows


def build_atoms():
    import biotite.structure as struc

    atoms, k = [], 0

    def residue(chain, number, icode, name, hetero=False, names=("N", "CA", "C", "O")):
        nonlocal k
        for n in names:
            k += 1
            atoms.append(struc.Atom([k * 0.5, (k % 7) * 1.0, (k % 3) * 1.0], chain_id=chain, res_id=number,
                                    ins_code=icode, res_name=name, hetero=hetero, atom_name=n,
                                    element=n[0] if n != "O1" else "O", b_factor=ORIGINAL_B))

    for _, number, icode, aa in chain_a_layout():
        residue("A", number, icode, THREE[aa])
    residue("A", 105, "", "HOH", hetero=True, names=("O",))  # a water numbered like a mapped residue
    residue("A", 301, "", "NAG", hetero=True, names=("C1", "O1"))  # a ligand in chain A
    for p, aa in enumerate(SEQ, start=1):  # chain B: the same protein, numbered like the sequence
        residue("B", p, "", THREE[aa])
    for p, aa in enumerate(OTHER, start=1):
        residue("C", p, "", THREE[aa])
    return struc.array(atoms)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from biotite.structure.io import pdbx
    from biotite.structure.io.pdb import PDBFile

    d = tmp_path_factory.mktemp("structures")
    atoms = build_atoms()
    f = PDBFile()
    f.set_structure(atoms)
    f.write(str(d / "complex.pdb"))
    c = pdbx.CIFFile()
    pdbx.set_structure(c, atoms)
    c.block["struct"] = pdbx.CIFCategory({"entry_id": "SYNTH", "title": "synthetic complex"})
    c.write(str(d / "complex.cif"))
    return d


def scores_for(seq=SEQ):
    return [p / 100 for p in range(1, len(seq) + 1)]  # exact in the PDB's 2 decimals


def expected_chain_a():
    return {p: ("A", n, i) for p, n, i, _ in chain_a_layout() if p is not None}


def bfactor_mismatches(path, expected: dict, scores, other: float = ORIGINAL_B) -> list:
    """Atoms whose B-factor is not what it should be: score on expected (chain, number, icode) residues,
    ``other`` everywhere else."""
    import biotite.structure as struc

    from allo_lightning.structures import read_atoms

    want = {v: scores[p - 1] for p, v in expected.items()}
    if str(path).endswith(".pdb"):
        from biotite.structure.io.pdb import PDBFile

        atoms = PDBFile.read(str(path)).get_structure(model=1, extra_fields=["b_factor"])
    else:
        from biotite.structure.io import pdbx

        atoms = pdbx.get_structure(pdbx.CIFFile.read(str(path)), model=1, extra_fields=["b_factor"])
    assert atoms.array_length() == read_atoms(path).array_length()
    aa = struc.filter_amino_acids(atoms)
    bad = []
    for i in range(atoms.array_length()):
        key = (str(atoms.chain_id[i]), int(atoms.res_id[i]), str(atoms.ins_code[i]))
        b = float(atoms.b_factor[i])
        target = want[key] if aa[i] and key in want else other
        if abs(b - target) > 0.006:
            bad.append((key, str(atoms.res_name[i]), b, target))
    return bad


@pytest.mark.parametrize("suffix", ["pdb", "cif"])
def test_chain_a_mapping_offset_gap_icode_fusion(files, suffix):
    path = files / f"complex.{suffix}"
    m = map_chain("P1", SEQ, path, "A")
    got = {p: (r.chain, r.number, r.icode) for p, r in enumerate(m.residues, start=1) if r is not None}
    assert got == expected_chain_a()
    assert m.aligned == 30 and m.identical == 30 and m.identity == 1.0
    assert m.coverage == pytest.approx(30 / 40)
    cols = mapping_columns(m.residues)
    assert cols[17] == ("A", "117", "A") and cols[16] == ("A", "117", "") and cols[0] == ("", "", "")
    # the fusion residues and the unresolved positions are not mapped
    assert all(r.number < 1000 for r in m.residues if r is not None)
    assert [m.residues[p - 1] for p in (1, 2, 13, 14, 15, 36, 40)] == [None] * 7


@pytest.mark.parametrize("suffix", ["pdb", "cif"])
def test_scores_land_on_the_right_residues_of_the_right_chain_only(files, tmp_path, suffix):
    m = map_chain("P1", SEQ, files / f"complex.{suffix}", "A")
    out = write_scored_structure(m, scores_for(), tmp_path / f"P1.{suffix}", unmapped_b=None)
    assert bfactor_mismatches(out, expected_chain_a(), scores_for()) == []
    # negative control: the old behaviour (score of position N on residue N of every chain) is caught
    naive = {p: (c, p, "") for p in range(1, 41) for c in ("A",)}
    assert bfactor_mismatches(out, naive, scores_for()) != []
    wrong_chain = ChainMapping("P1", files / f"complex.{suffix}", "B",
                               [Residue("B", p, "", THREE[aa], aa) for p, aa in enumerate(SEQ, 1)], 40, 40, 40)
    out_b = write_scored_structure(wrong_chain, scores_for(), tmp_path / f"B.{suffix}", unmapped_b=None)
    assert bfactor_mismatches(out_b, expected_chain_a(), scores_for()) != []
    # the default: a stated value (UNMAPPED_B = -1) on every atom without a score, no crystallographic B left
    stated = write_scored_structure(m, scores_for(), tmp_path / f"S.{suffix}")
    assert bfactor_mismatches(stated, expected_chain_a(), scores_for(), other=UNMAPPED_B) == []
    assert bfactor_mismatches(stated, expected_chain_a(), scores_for()) != []


def test_pdb_lines_other_than_b_factors_unchanged(files, tmp_path):
    src = files / "complex.pdb"
    m = map_chain("P1", SEQ, src, "A")
    out = write_scored_structure(m, scores_for(), tmp_path / "P1.pdb", unmapped_b=None)
    a, b = src.read_text().splitlines(), out.read_text().splitlines()
    assert len(a) == len(b)
    changed = 0
    for x, y in zip(a, b):
        if x.startswith(("ATOM", "HETATM")):
            assert x[:60] == y[:60] and x[66:] == y[66:]
            changed += x[60:66] != y[60:66]
        else:
            assert x == y
    assert changed == 30 * 4  # 30 mapped residues x 4 atoms


def test_cif_other_columns_and_categories_unchanged(files, tmp_path):
    from biotite.structure.io import pdbx

    m = map_chain("P1", SEQ, files / "complex.cif", "A")
    out = write_scored_structure(m, scores_for(), tmp_path / "P1.cif")
    a, b = pdbx.CIFFile.read(str(files / "complex.cif")).block, pdbx.CIFFile.read(str(out)).block
    assert list(b) == list(a) + ["allo_lightning_score"] and b["struct"]["title"].as_item() == "synthetic complex"
    for name in a["atom_site"]:
        same = np.array_equal(a["atom_site"][name].as_array(str), b["atom_site"][name].as_array(str))
        assert same == (name != "B_iso_or_equiv"), name
    # the score in its own category: one row per mapped residue, score of its sequence position
    cat = b["allo_lightning_score"]
    got = {(c, int(n), "" if i in ("?", ".") else i): float(v) for c, n, i, v in zip(
        cat["auth_asym_id"].as_array(str), cat["auth_seq_id"].as_array(str), cat["pdbx_PDB_ins_code"].as_array(str),
        cat["score"].as_array(str))}
    assert got == {v: scores_for()[p - 1] for p, v in expected_chain_a().items()}
    pct = dict(zip(cat["seq_position"].as_array(int), cat["percentile"].as_array(float)))
    # scores rise with position: percentile (p - 1) / 39
    assert pct[35] == pytest.approx(34 / 39, abs=1e-4) and pct[3] == pytest.approx(2 / 39, abs=1e-4)



@pytest.mark.parametrize("suffix", ["pdb", "cif"])
def test_a_note_travels_with_the_scored_structure(files, tmp_path, suffix):
    """A random backbone's scored structure says so itself (it is opened without the scripts): PDB REMARK 999
    lines before the coordinates, mmCIF a category; nothing else changes, and no note means no addition."""
    from biotite.structure.io import pdbx

    note = ("NOTE: the 'tiny' backbone is a random, untrained model built in code for tests and the offline quick "
            "start; its attention and every score made from it mean NOTHING biologically.")
    m = map_chain("P1", SEQ, files / f"complex.{suffix}", "A")
    plain = write_scored_structure(m, scores_for(), tmp_path / f"plain.{suffix}")
    noted = write_scored_structure(m, scores_for(), tmp_path / f"noted.{suffix}", note=note)
    if suffix == "pdb":
        a, b = plain.read_text().splitlines(), noted.read_text().splitlines()
        remarks = [x for x in b if x.startswith("REMARK 999 ")]
        assert " ".join(x[11:].strip() for x in remarks) == note and all(len(x) <= 80 for x in remarks)
        assert [x for x in b if not x.startswith("REMARK 999 ")] == a and not any("REMARK 999" in x for x in a)
        first = b.index(remarks[0])
        assert not any(x.startswith(("ATOM", "HETATM", "MODEL")) for x in b[:first])
        assert bfactor_mismatches(noted, expected_chain_a(), scores_for(), other=UNMAPPED_B) == []
    else:
        a, b = pdbx.CIFFile.read(str(plain)).block, pdbx.CIFFile.read(str(noted)).block
        assert list(b) == list(a) + ["allo_lightning_note"] and "allo_lightning_note" not in a
        assert b["allo_lightning_note"]["text"].as_item() == note

def test_best_chain_chosen_without_chain_and_refusal(files):
    m = map_chain("P1", SEQ, files / "complex.cif")
    assert m.chain == "B" and m.coverage == 1.0 and m.identity == 1.0
    with pytest.raises(InputError) as e:
        map_chain("P1", SEQ, files / "complex.pdb", "C")
    msg = str(e.value)
    assert "complex.pdb" in msg and "chain C" in msg and "'P1'" in msg and "--min_identity" in msg
    assert "\n" not in msg
    with pytest.raises(InputError, match="no protein chain 'Z'"):
        map_chain("P1", SEQ, files / "complex.pdb", "Z")
    # thresholds are respected: coverage 0.75 is refused at 0.8
    with pytest.raises(InputError, match="coverage 0.75"):
        map_chain("P1", SEQ, files / "complex.pdb", "A", StructureOptions(min_coverage=0.8))
    with pytest.raises(InputError, match="--min_identity must be between 0 and 1"):
        StructureOptions(min_identity=1.5)


def test_mutations_lower_identity(files):
    mutated = list(SEQ)
    for p in (5, 8, 11):  # three substitutions inside chain A's part
        mutated[p - 1] = "W"
    m = map_chain("P1", "".join(mutated), files / "complex.pdb", "A", StructureOptions(min_identity=0.5))
    assert m.aligned == 30 and m.identical == 27
    assert m.residues[4].number == 105  # substitutions do not shift the mapping


@pytest.mark.parametrize("suffix", ["pdb", "cif"])
def test_scripts_are_chain_qualified_in_structure_numbering(files, suffix):
    m = map_chain("P1", SEQ, files / f"complex.{suffix}", "A")
    info = ScriptInput("P1", "P1", scores_for(), m.residues, top=3, header=["x; y"],
                       structure_file=f"structures/P1.{suffix}")
    pml = pymol_script(info)
    assert ";" not in pml  # PyMOL would split a comment there and run the rest as a command
    alters = [ln for ln in pml.splitlines() if ln.startswith("alter")]
    assert len(alters) == 30
    assert all(ln.startswith("alter allo_P1 and chain A and resi ") for ln in alters)
    # b = within-protein percentile (scores rise with position: position p has percentile (p - 1) / 39)
    assert f"alter allo_P1 and chain A and resi 117A, b={17 / 39:.4f}" in pml
    assert f"alter allo_P1 and chain A and resi 117, b={16 / 39:.4f}" in pml
    assert "within-protein percentile" in pml.split("alter")[0]  # the header says what the colour means
    assert not any(ln.split(",")[0] in ("alter all", "alter (all)") or ln.startswith("alter resi")
                   for ln in pml.splitlines())
    assert f"load structures/P1.{suffix}, allo_P1" in pml
    # top 3 scores: positions 35, 34, 33 -> residues 134, 133, 132 of chain A
    assert "select allo_P1_top, allo_P1 and ((chain A and resi 134+133+132))" in pml
    assert "spectrum b, blue_white_red, allo_P1_scored" in pml
    cxc = chimerax_script(info)
    assert "setattr #1/A:117A residues allo_score 0.1800 create true" in cxc and ";" not in cxc
    assert f"setattr #1/A:117A residues allo_percentile {17 / 39:.4f} create true" in cxc
    assert "color byattribute r:allo_percentile" in cxc and "within-protein percentile" in cxc
    assert "\nkey blue:0 white:0.5 red:1\n" in cxc  # the colour key
    assert "setattr #1/A:103 residues allo_score 0.0300 create true" in cxc
    assert "show #1/A:134,133,132 atoms" in cxc
    assert not any(ln.startswith(("close", "delete")) for ln in cxc.splitlines())


def test_sequence_numbered_scripts_say_so_and_use_the_chain():
    info = ScriptInput.sequence_numbered("P/2", "P_2", "ACDE", [0.1, 0.9, 0.2, 0.3], chain="B", top=1)
    pml = pymol_script(info)
    assert "positions in the input sequence, on chain B" in pml
    assert "alter allo_P_2 and chain B and resi 2, b=1.0000" in pml  # the best of 4: percentile 1
    assert "alter allo_P_2 and chain B and resi 1, b=0.0000" in pml
    assert not any(ln.startswith("load ") for ln in pml.splitlines())
    cxc = chimerax_script(info)
    assert "on chain B" in cxc and "setattr #1/B:4 residues allo_score 0.3000" in cxc


def test_negative_residue_numbers_escaped_for_pymol():
    r = Residue("A", -3, "", "ALA", "A")
    info = ScriptInput("x", "x", [0.5], [r])
    assert "resi \\-3, b=1.0000" in pymol_script(info)


def test_resolve_file_folder_and_table(files, tmp_path):
    ids = ["P1", "P/2"]
    single = resolve_structures(files / "complex.pdb", ids, "A")
    assert {k: (v.path.name, v.chain) for k, v in single.items()} == {"P1": ("complex.pdb", "A"),
                                                                     "P/2": ("complex.pdb", "A")}
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "P_2.cif").write_text((files / "complex.cif").read_text())
    got = resolve_structures(folder, ids, None, name_of=lambda s: s.replace("/", "_"))
    assert list(got) == ["P/2"] and got["P/2"].path.name == "P_2.cif"
    table = tmp_path / "map.csv"
    table.write_text(f"id,structure,chain\nP1,{files / 'complex.pdb'},A\nP/2,f/P_2.cif,\n")
    got = resolve_structures(table, ids, "B")
    assert got["P1"].chain == "A" and got["P/2"].chain == "B" and got["P/2"].path == folder / "P_2.cif"
    from allo_lightning.structures import check_structure_spec

    check_structure_spec(None)
    with pytest.raises(InputError, match="--structure .*nope.cif: not found"):
        check_structure_spec(tmp_path / "nope.cif")
    table.write_text("id,structure,chain\nQ9,x.pdb,A\n")
    with pytest.raises(InputError, match=r"map.csv, line 2, id 'Q9'"):
        resolve_structures(table, ids)


def test_structures_for_checks_every_protein(files):
    from allo_lightning.data.protein import Protein

    proteins = [Protein("P1", SEQ), Protein("bad", OTHER[:10] + "MMMMMMMMMM")]
    with pytest.raises(InputError, match="'bad'") as e:
        structures_for(proteins, files / "complex.pdb", "A", StructureOptions())
    # one file given for several proteins: the error says how to give each protein its own (the README's
    # A2A-on-4EIY example refuses ADRB2 that way); a lone protein's error does not
    assert "aligned to every protein (2 here)" in str(e.value) and "id, structure, chain" in str(e.value)
    assert "\n" not in str(e.value) and e.value.pid == "bad"
    with pytest.raises(InputError, match="'bad'") as e:
        structures_for(proteins[1:], files / "complex.pdb", "A", StructureOptions())
    assert "every protein" not in str(e.value)
    got = structures_for(proteins[:1], files / "complex.pdb", None, StructureOptions())
    assert got["P1"].chain == "B"


def test_a_folder_of_structures_is_read_one_at_a_time(files, tmp_path, monkeypatch):
    """A structure per protein (a folder of <id>.pdb, e.g. a proteome's models): predict maps them all before
    the backbone runs, then finds each protein's predicted sites on its structure; the structures read stay in
    memory only a few at a time (both caches held every file: memory grew with the number of proteins)."""
    import shutil
    import weakref

    import allo_lightning.structures.resolve as resolve
    from allo_lightning import predict
    from allo_lightning.data.protein import Protein

    folder = tmp_path / "models"
    folder.mkdir()
    proteins = [Protein(f"P{i}", SEQ) for i in range(12)]
    for p in proteins:
        shutil.copy(files / "complex.pdb", folder / f"{p.id}.pdb")
    refs, most = [], []

    def tracked(path):
        atoms = read_atoms(path)
        refs.append(weakref.ref(atoms))
        most.append(sum(r() is not None for r in refs))
        return atoms

    monkeypatch.setattr(resolve, "read_atoms", tracked)
    monkeypatch.setattr("allo_lightning.structures.read_atoms", tracked)
    mappings = structures_for(proteins, folder, "B", StructureOptions())
    assert sorted(mappings) == sorted(p.id for p in proteins)
    assert max(most) <= KEEP_STRUCTURES + 1, f"{max(most)} structures held at once"
    most.clear()
    refs.clear()
    atoms_cache: dict = {}
    for p in proteins:
        predict._predicted_sites(p, scores_for(), mappings[p.id], atoms_cache)
    assert max(most) <= KEEP_STRUCTURES + 1 and len(atoms_cache) <= KEEP_STRUCTURES, f"{max(most)} structures held"


def test_chain_residues_skip_ligands_and_water(files):
    chains = chain_residues(read_atoms(files / "complex.cif"))
    assert set(chains) == {"A", "B", "C"}
    assert [r.name for r in chains["A"]].count("HOH") == 0 and len(chains["A"]) == 30 + len(FUSION)
    assert "".join(r.letter for r in chains["B"]) == SEQ
    assert np.all([r.icode in ("", "A") for r in chains["A"]])


def test_fusion_replacing_a_loop_gets_no_scores():
    """BRIL-style: positions 15-22 are replaced by a 30-residue insert. Untrimmed, the optimal alignment
    pairs 8 insert residues with the missing loop (saving a gap opening): the negative control."""
    from allo_lightning.structures import align

    insert = "AQMHGPNWEDCHGPNWEDCHGPNWEDCHGP"  # "AQMH" vs the lost "VKSH": a positive-scoring chance edge
    residues = [Residue("A", p, "", THREE[SEQ[p - 1]], SEQ[p - 1]) for p in range(1, 15)]
    residues += [Residue("A", 1001 + k, "", THREE[aa], aa) for k, aa in enumerate(insert)]
    residues += [Residue("A", p, "", THREE[SEQ[p - 1]], SEQ[p - 1]) for p in range(23, 41)]
    mapped, identical, aligned = align(SEQ, residues)
    assert {p: r.number for p, r in enumerate(mapped, 1) if r} == {p: p for p in [*range(1, 15), *range(23, 41)]}
    assert identical == aligned == 32
    raw, raw_identical, raw_aligned = align(SEQ, residues, trim=False)
    assert any(r is not None and r.number > 1000 for r in raw) and raw_aligned > raw_identical


def test_best_segment_is_maximum_subarray():
    import itertools

    from allo_lightning.structures.alignment import _best_segment

    rng = np.random.default_rng(0)
    for _ in range(200):
        v = rng.integers(-4, 5, size=int(rng.integers(0, 9))).tolist()
        lo, hi = _best_segment(v)
        brute = max([0] + [sum(v[a:b]) for a, b in itertools.combinations(range(len(v) + 1), 2)])
        assert sum(v[lo:hi]) == brute


def test_trim_ends_drops_chance_edges_only():
    from allo_lightning.structures.alignment import _trim_ends

    true = [True] * 10
    assert _trim_ends(true + [False, False, False, True], 0, 14) == (0, 10)  # chance identical pair at the edge
    assert _trim_ends([True, False, False] + true, 0, 13) == (3, 13)
    assert _trim_ends([True, False] + true, 0, 12) == (0, 12)  # one mismatch in the edge window is fine
    assert _trim_ends(true[:5] + [False] + true[:5], 0, 11) == (0, 11)  # an inner mutation stays
    assert _trim_ends([False, True, False, True], 0, 4) == (3, 4)  # then dropped by MIN_SEGMENT_SCORE


@pytest.mark.parametrize("suffix", ["pdb", "cif"])
def test_gzipped_input_reads_like_plain(files, tmp_path, suffix):
    import gzip

    gz = tmp_path / f"complex.{suffix}.gz"
    gz.write_bytes(gzip.compress((files / f"complex.{suffix}").read_bytes()))
    assert set(resolve_structures(gz, ["P1"], "A")) == {"P1"}
    m = map_chain("P1", SEQ, gz, "A")
    assert m.fmt == suffix and m.aligned == 30
    plain = write_scored_structure(map_chain("P1", SEQ, files / f"complex.{suffix}", "A"), scores_for(),
                                   tmp_path / f"plain.{suffix}")
    zipped = write_scored_structure(m, scores_for(), tmp_path / f"zipped.{suffix}")
    assert zipped.read_bytes() == plain.read_bytes()


# -- mapping tables: read by allo_lightning.data.io's reader (its rules) ----------------------------------------

def _table_result(tmp_path, data: bytes, ids=("P1", "P2")) -> dict:
    (tmp_path / "a.pdb").write_text("")
    (tmp_path / "b, c.pdb").write_text("")
    table = tmp_path / "map.csv"
    table.write_bytes(data)
    return {k: (v.path.name, v.chain) for k, v in resolve_structures(table, list(ids)).items()}


PLAIN = "id,structure,chain\nP1,a.pdb,A\nP2,\"b, c.pdb\",\n"  # a quoted path holding the delimiter


@pytest.mark.parametrize("name, data", [
    ("plain", PLAIN.encode()),
    ("CRLF", PLAIN.replace("\n", "\r\n").encode()),
    ("CR", PLAIN.replace("\n", "\r").encode()),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + PLAIN.encode()),
    ("blank lines, spaces", PLAIN.replace("\nP2", "\n\n  P2").encode()),
    ("tabs", PLAIN.replace(",", "\t").replace('"b\t c.pdb"', "b, c.pdb").encode()),
    ("all quoted", b'"id","structure","chain"\n"P1","a.pdb","A"\n"P2","b, c.pdb",""\n'),
    # new with data.io's rules (refused or a traceback before):
    ("UTF-16 BOM (Excel Unicode text)", PLAIN.encode("utf-16")),
    ("semicolons (European Excel)", PLAIN.replace(",", ";").replace('"b; c.pdb"', '"b, c.pdb"').encode()),
    ("a blank line before the header", ("\n" + PLAIN).encode()),
    ("a row without its chain cell", PLAIN.replace('"b, c.pdb",\n', '"b, c.pdb"\n').encode()),
])
def test_mapping_table_real_world_forms_read_alike(tmp_path, name, data):
    """Valid tables read as before (quotes, CRLF, BOM, blank lines, tabs), and the forms data.io's reader
    accepts (UTF-16 with a BOM, ';', blank lines before the header, a short row padded like a protein
    table's) read the same."""
    assert _table_result(tmp_path, data) == {"P1": ("a.pdb", "A"), "P2": ("b, c.pdb", None)}, name


@pytest.mark.parametrize("name, data, phrase", [
    ("unclosed quote", b'id,structure,chain\nP1,"a.pdb,A\nP2,a.pdb,B\n', r"line 2: a quote .* not closed"),
    ("latin-1", "id,structure,chain\nP1,\xe9.pdb,A\n".encode("latin-1"), "line 2: not valid UTF-8"),
    ("NUL byte", b"id,structure,chain\nP1,a\x00.pdb,A\n", "line 2: contains NUL bytes"),
    ("extra field", b"id,structure,chain\nP1,a.pdb,A,B\n", r"line 2: 4 field\(s\) but the header has 3"),
    ("comment line", b"id,structure,chain\n# moved\nP1,a.pdb,A\n", r"line 2: 1 field\(s\) but the header has 3"),
    ("column twice", b"id,structure,structure\nP1,a.pdb,b.pdb\n", "line 1: column.*'structure' appear more"),
    ("empty", b"", "the file is empty"),
    ("no header", b"P1,a.pdb,A\n", "line 1: a structure mapping table needs the columns"),
    ("line break in a path", b'id,structure,chain\nP1,"a\n.pdb",A\n', "line 2, id 'P1': the structure path"),
    ("form feed", b"id,structure,chain\nP1,a.pdb,A\x0cP2,a.pdb,B\n", r"line 2: 5 field\(s\)"),
])
def test_mapping_table_bad_forms_one_line_errors(tmp_path, name, data, phrase):
    """Each is one line naming the table and the line (before: UnicodeDecodeError tracebacks for latin-1
    and UTF-16, the unclosed quote blamed on a short row, a NUL or a line break kept in a path, an extra
    field, a second 'structure' column and a row after a form feed silently dropped)."""
    with pytest.raises(InputError, match=phrase) as e:
        _table_result(tmp_path, data)
    msg = str(e.value)
    assert "map.csv" in msg and "\n" not in msg and msg.isprintable(), name


def test_mapping_table_errors_name_the_file_line_after_a_multiline_cell(tmp_path):
    """A quoted note running over two lines: the next row's error names its own file line (4), not its row
    number (3)."""
    data = b'id,structure,chain,note\nP1,a.pdb,A,"two\nlines"\nQ9,a.pdb,A,\n'
    with pytest.raises(InputError, match=r"map.csv, line 4, id 'Q9': not among the proteins"):
        _table_result(tmp_path, data)


def test_mapping_table_missing_or_unreadable_file_names_the_table_line(tmp_path):
    """A path in a mapping table that does not exist (typically written relative to the working folder, while
    the table's paths are read from the table's folder) or has a suffix this package does not read: one line
    naming the table, the line and the id, and where a relative path is read from (before, only the structure
    file was named, 'Check the path given to --structure', though --structure gave the table)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.pdb").write_text("")
    table = tmp_path / "data" / "map.csv"
    table.write_text("id,structure,chain\nP1,a.pdb,A\nP2,data/a.pdb,A\n")
    with pytest.raises(InputError) as e:
        resolve_structures(table, ["P1", "P2"])
    msg = str(e.value)
    assert msg.startswith(f"{table}, line 3, id 'P2': structure file ") and "not found" in msg, msg
    assert "table's folder" in msg and str(tmp_path / "data") in msg and "\n" not in msg
    assert (e.value.line, e.value.pid) == (3, "P2")
    table.write_text("id,structure,chain\nP1,a.xyz,A\n")
    with pytest.raises(InputError, match=r"map.csv, line 2, id 'P1': .*a.xyz: not a structure file"):
        resolve_structures(table, ["P1"])
