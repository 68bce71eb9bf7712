"""One table writer and one file-name sanitiser: formula injection neutralised, numbers untouched, awkward
ids round-trip exactly through our own reader, colliding ids get distinct files; --overwrite removes the
previous run's per-protein files and nothing else."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from allo_lightning.data.protein import Protein
from allo_lightning.outputs import prepare_out_dir, record_outputs
from allo_lightning.sites import SITE_COLUMNS, predicted_sites, site_rows
from allo_lightning.tables import (
    _NUMBER,
    COUNT_FLAGS,
    csv_text,
    escape_cell,
    file_names,
    format_cell,
    read_csv,
    unescape_cell,
    write_csv,
)

AWKWARD_IDS = ["=HYPERLINK(\"http://x\",\"y\")", "+1-2", "-cmd|' /C calc'!A0", "@SUM(A1)", "\tTAB", "'quoted",
               "''two", "a,b", 'say "hi"', "semi;colon", "multi\nline", "-0.5", "P29274", "ß-arrestin",
               "a/b", "a_b", "a:b", "A_B", "..", ".hidden", "CON", "x" * 300]
DANGEROUS = ("=", "+", "-", "@", "\t", "\r", "\n")


def _raw_cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_formula_cells_neutralised_numbers_untouched():
    numbers = ["-0.5", "+3", "-1e-05", "1E+10", "-.5", "0"]
    texts = ["=1+1", "+A1", "-A1", "@cmd", "\t=1", "\r=1", "-inf", "- 1", "--1"]
    text = csv_text(["value"], [[v] for v in numbers + texts] + [[-0.5], [float("-inf")], [7], [True], [None]])
    cells = [r[0] for r in _raw_cells(text)[1:]]
    assert cells[: len(numbers)] == numbers  # numbers written as they are
    for raw, cell in zip(texts, cells[len(numbers):]):
        assert cell == "'" + raw, raw  # a spreadsheet shows text, never runs a formula
    assert cells[len(numbers) + len(texts):] == ["-0.5", "-inf", "7", "true", ""]  # non-text values: as they are
    for cell in cells:  # negative control: no cell that starts like a formula unless it is a number
        assert not cell.startswith(DANGEROUS) or re.fullmatch(r"[+-][0-9.eE+-]+|-inf", cell), cell


def test_one_formatting_policy_for_every_kind_of_value(tmp_path):
    """The writer formats every cell itself, one rule per kind of value (tables.format_cell)."""
    values = [None, float("nan"), np.float32("nan"), True, False, np.bool_(True), np.bool_(False), 0, -3,
              np.int64(7), 12.0, 0.25, -0.5, 1 / 3, 1e-12, 2.5e-300, 123456789.0, 1234567891.0, np.float32(0.1),
              np.float64(0.1), float("inf"), float("-inf"), "P1", "=1+1", "", "true"]
    columns = [f"c{i}" for i in range(len(values))]
    text = write_csv(tmp_path / "t.csv", columns, [values]).read_bytes().decode("utf-8")
    assert text.split("\r\n")[1] == (",,,true,false,true,false,0,-3,7,12,0.25,-0.5,0.333333333,1e-12,2.5e-300,"
                                      "123456789,1.23456789e+09,0.100000001,0.1,inf,-inf,P1,'=1+1,,true")
    assert csv_text(["a"], [{"b": 1}]) == "a\r\n\"\"\r\n"  # a missing key: an empty cell
    for bad in (torch.tensor(0.5), tmp_path, [1, 2], {"a": 1}):  # never "tensor(0.5)" in a table
        with pytest.raises(TypeError):
            format_cell(bad)
    rng = np.random.default_rng(0)  # every float32 reads back exactly (scores, statistics)
    x32 = np.concatenate([rng.standard_normal(2000), 10.0 ** rng.uniform(-40, 38, 2000)]).astype(np.float32)
    assert all(np.float32(float(format_cell(float(v)))) == v for v in x32)
    for p in 10.0 ** -np.arange(1, 300, 7.3):  # p-values keep 9 significant digits however small
        assert float(format_cell(p)) == pytest.approx(p, rel=1e-8) and float(format_cell(p)) > 0



def test_yes_no_columns_follow_the_one_documented_rule():
    """0/1 flags (counts you can sum) are exactly tables.COUNT_FLAGS, written 0/1 whatever the caller passes,
    and named the same in tables.py's docstring and the README; every other yes/no column is true/false.
    (sites.csv's hit column was written 0/1 by an int() in its caller, but was not in the documented list.)"""
    import allo_lightning.tables as tables

    assert {"label", "predicted", "windowed", "hit", "site_top1", "site_top3"} <= set(COUNT_FLAGS)
    cols = ["id", *COUNT_FLAGS, "selected", "testable"]
    rows = [["P1", *[True] * len(COUNT_FLAGS), True, np.bool_(False)],
            ["P2", *[np.bool_(False)] * len(COUNT_FLAGS), False, np.bool_(True)],
            ["P3", *[None] * len(COUNT_FLAGS), None, None]]
    n = len(COUNT_FLAGS)
    assert csv_text(cols, rows).split("\r\n")[1:4] == [
        "P1," + ",".join(["1"] * n) + ",true,false", "P2," + ",".join(["0"] * n) + ",false,true", "P3" + "," * (n + 2)]
    scores = np.zeros(100)  # sites.csv through its own row builder: hit is 0/1 (the caller passes a bool)
    scores[[10, 40, 60]] = [0.9, 0.8, 0.7]
    sites, _ = predicted_sites(scores, "A" * 100, known=[61])
    table = list(csv.DictReader(io.StringIO(csv_text(SITE_COLUMNS, site_rows("P1", sites)))))
    assert [r["hit"] for r in table][:3] == ["0", "0", "1"] and {r["hit"] for r in table} == {"0", "1"}
    # the documented lists name exactly these columns
    doc = re.search(r":data:`COUNT_FLAGS` \(([^)]*)\)", tables.__doc__).group(1)
    assert set(re.findall(r"``(\w+)``", doc)) == set(COUNT_FLAGS)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Output tables and file names", 1)[1].split("\n#", 1)[0]
    listed = re.search(r"0/1 columns ([^(]*)\(counts you can sum", " ".join(section.split())).group(1)
    assert set(re.findall(r"`(\w+)`", listed)) == set(COUNT_FLAGS)


TOKENS = re.compile(r"(?i)nan|true|false|none|null")


def assert_table_policy(folder) -> list[str]:
    """Every CSV the package wrote under ``folder`` (not Lightning's training_log) follows the one policy:
    no ``nan``/``None``/``True``/``False`` spelling, booleans ``true``/``false``, every number written
    as :func:`format_cell` writes it (so none was formatted by its caller). Returns the files checked."""
    from pathlib import Path

    from allo_lightning.tables import FLOAT_FORMAT

    checked = []
    for path in sorted(Path(folder).rglob("*.csv")):
        if "training_log" in path.parts:
            continue
        checked.append(path.name)
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
        assert rows and all(len(r) == len(rows[0]) for r in rows), path
        for row in rows[1:]:
            for cell in row:
                assert not TOKENS.fullmatch(cell) or cell in ("true", "false"), (path.name, rows[0], row)
                if re.fullmatch(r"-?\d+", cell):
                    assert str(int(cell)) == cell, (path.name, cell)
                elif _NUMBER.match(cell) or cell in ("inf", "-inf"):
                    assert format(float(cell), FLOAT_FORMAT) == cell, (path.name, rows[0], cell)
    return checked


def test_awkward_ids_round_trip_exactly(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["id", "score"], [(pid, 0.25) for pid in AWKWARD_IDS])
    rows = read_csv(path)
    assert [r["id"] for r in rows] == AWKWARD_IDS and {r["score"] for r in rows} == {"0.25"}
    for raw in (r[0] for r in _raw_cells(path.read_text(encoding="utf-8"))[1:]):
        assert not raw.startswith(DANGEROUS) or re.fullmatch(r"[+-][0-9.eE+-]+", raw), raw
    for pid in AWKWARD_IDS:
        assert unescape_cell(escape_cell(pid)) == pid
    with pytest.raises(ValueError):  # a row of the wrong width is a bug, never a shifted table
        csv_text(["a", "b"], [[1]])


def test_colliding_ids_get_distinct_safe_file_names():
    names = file_names(AWKWARD_IDS)
    assert list(names) == AWKWARD_IDS
    values = list(names.values())
    assert len({v.casefold() for v in values}) == len(values)  # distinct, also on case-insensitive file systems
    for v in values:
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", v) and not v.startswith(".") and v.split(".")[0] != "CON"
    assert names["P29274"] == "P29274" and file_names(["a/b", "a_b", "a:b"])["a_b"] == "a_b"  # safe ids keep theirs
    assert names["a/b"] != names["a:b"] and names["a/b"].startswith("a_b-")
    assert names["A_B"] != names["a_b"] and names["A_B"].casefold() != names["a_b"].casefold()
    assert file_names(reversed(AWKWARD_IDS)) == names  # the same whatever the order
    assert file_names(["rec/1", "P1"]) == {"rec/1": "rec_1", "P1": "P1"}  # no collision: readable names
    # an id spelled like another's hashed name still gets its own file
    tricky = [names["a/b"], "a/b"]
    assert len(set(file_names(tricky).values())) == 2


def test_attention_to_sites_and_test_scores_round_trip_awkward_ids(tmp_path):
    from allo_lightning.analysis.export import write_attention_to_sites
    from allo_lightning.attention.stats import ProteinStats
    from allo_lightning.probe.train import ResidueSet
    from allo_lightning.reporting import to_csv

    ids = ["=cmd|calc", "a,b", 'q"x', "-x", "+1"]
    proteins = [Protein(pid, "MKTA", sites=(2,)) for pid in ids]
    pairs = []
    for p in proteins:
        z = torch.zeros(1, 1, 4)
        pairs.append((p, ProteinStats(z, z, z, z[..., 0], maps=torch.full((1, 4, 4), 0.25), map_heads=[(0, 1)])))
    rows = read_csv(write_attention_to_sites(tmp_path / "a.csv", pairs))
    assert [r["protein"] for r in rows] == [pid for pid in ids for _ in range(4)]
    assert {r["attention"] for r in rows} == {"0.25"} and {r["site_position"] for r in rows} == {"2"}

    # test_scores.csv / scores.csv of fit and evaluate: ResidueSet.rows through tables.write_csv
    test_set = SimpleNamespace(proteins=proteins, index=torch.arange(5).repeat_interleave(4),
                               y=torch.tensor([0, 1, 0, 0] * 5))
    scores = torch.linspace(-0.5, 0.5, 20) / 3  # float32 values with every digit used
    path = write_csv(tmp_path / "test_scores.csv", *ResidueSet.rows(test_set, scores))
    rows = read_csv(path)
    assert [r["id"] for r in rows] == [pid for pid in ids for _ in range(4)]
    assert torch.equal(torch.tensor([float(r["score"]) for r in rows]), scores)  # the float32 scores exactly
    assert [int(r["label"]) for r in rows] == [0, 1, 0, 0] * 5

    path.write_text(to_csv([{"subset": "=evil,1", "auprc": -0.25}], ["subset", "auprc"]), encoding="utf-8")
    assert read_csv(path) == [{"subset": "=evil,1", "auprc": "-0.25"}]


# -- --overwrite and the previous run's per-protein files ---------------------------------------------------

def _run(out, ids, marker="predictions.csv", overwrite=False):
    out = prepare_out_dir(out, overwrite, marker)
    names = file_names(ids)
    files = [out / "pymol" / f"{names[i]}.pml" for i in ids]
    record_outputs(out, marker, files)
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    (out / marker).write_text("done")
    return files


def test_overwrite_removes_previous_per_protein_files_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    first = _run(out, ["A", "B", "a/b"])
    mine = [out / "notes.txt", out / "pymol" / "my_own.pml", tmp_path / "outside.pml"]
    for f in mine:
        f.write_text("keep")
    other_cmd = _run(out, ["Z"], marker="heads.csv")  # another command's files in the same folder
    with pytest.raises(Exception, match="--overwrite"):
        _run(out, ["C"])
    assert all(f.exists() for f in first)  # refused: nothing deleted
    second = _run(out, ["C"], overwrite=True)
    assert not any(f.exists() for f in first)  # no stale file beside the new ones
    assert all(f.exists() for f in second + mine + other_cmd)
    assert sorted(p.name for p in (out / "pymol").iterdir()) == sorted(["C.pml", "my_own.pml", "Z.pml"])


def test_a_tampered_manifest_never_deletes_outside_the_folder(tmp_path):
    out = tmp_path / "out"
    _run(out, ["A"])
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "sub").mkdir()
    manifest = out / ".allo_lightning.predictions.csv.files.json"
    json_text = json.dumps({"files": ["../victim.txt", str(victim), "sub", "pymol/A.pml", 5, "", "."]})
    manifest.write_text(json_text)
    _run(out, ["B"], overwrite=True)
    assert victim.read_text() == "keep" and (out / "sub").is_dir()
    assert not (out / "pymol" / "A.pml").exists() and (out / "pymol" / "B.pml").exists()
    manifest.write_text("not json")  # a damaged manifest: nothing deleted, no crash
    _run(out, ["C"], overwrite=True)
    assert (out / "pymol" / "B.pml").exists()


def test_overwrite_never_deletes_through_a_folder_replaced_by_a_link(tmp_path):
    """A per-protein folder of an earlier run replaced by a link to elsewhere (``pymol -> ~/work``): the
    next ``--overwrite`` run deletes nothing there, though the manifest lists ``pymol/A.pml`` (planted
    survivor: the link check on the recorded file's folder dropped)."""
    out = tmp_path / "out"
    _run(out, ["A"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "A.pml").write_text("keep")
    (out / "pymol" / "A.pml").unlink()
    (out / "pymol").rmdir()
    (out / "pymol").symlink_to(elsewhere, target_is_directory=True)
    prepare_out_dir(out, True, "predictions.csv")
    assert (elsewhere / "A.pml").read_text() == "keep"
    assert (out / "pymol").is_symlink()  # the link itself is left for the user (the claim refuses it)


# -- planted survivors (a mutation run on the table writer and reader, issue 19) ---------------------------

def test_a_text_that_only_starts_like_a_number_is_neutralised():
    """``+1-2`` or ``-1+A1`` start like a number but are formulas: a number is recognised only whole."""
    for text in ("+1-2", "-1+A1", "-2e5+cmd|' /C calc'!A0", "+.5*A1", "-1e-05x", "-0.5 "):
        assert escape_cell(text) == "'" + text, text
        assert _raw_cells(csv_text(["id"], [[text]]))[1] == ["'" + text]
    for number in ("-1", "+1", "-1e-05", "+.5"):
        assert escape_cell(number) == number


def test_a_table_that_is_not_utf8_is_one_located_error(tmp_path, capsys):
    """A table re-saved as Latin-1 (a spreadsheet's export) is one InputError naming the file and line, also
    when the page is rebuilt (not a UnicodeDecodeError traceback)."""
    from allo_lightning.errors import InputError
    from allo_lightning.html.__main__ import main

    table = tmp_path / "heads.csv"
    table.write_bytes("layer,head,note\r\n0,1,ok\r\n0,2,caf\u00e9\r\n".encode("latin-1"))
    with pytest.raises(InputError, match="heads.csv, line .*not a readable table") as e:
        read_csv(table)
    assert e.value.path == str(table)
    (tmp_path / "heads.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "heads"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "heads.csv" in err, err


def test_rows_whose_cells_are_all_empty_are_kept(tmp_path):
    """A row of missing values is a row: the reader gives back as many rows as were written."""
    for columns, rows in ((["a"], [[None], [2], [None]]),
                          (["a", "b"], [[None, None], [1, None], [None, float("nan")]])):
        path = write_csv(tmp_path / "t.csv", columns, rows)
        back = read_csv(path)
        assert len(back) == len(rows) and [r["a"] for r in back] == ["" if r[0] is None else str(r[0]) for r in rows]


def test_the_smallest_floats_are_written_not_rounded_to_zero():
    """A p-value below 1e-300 (exact null distributions reach it; float64 subnormals) keeps its digits."""
    for p in (1e-300, 3.7e-305, 1e-310, 5e-324):
        assert float(format_cell(p)) == pytest.approx(p, rel=1e-8) and float(format_cell(p)) > 0, p
    assert format_cell(-1e-310) == "-1e-310"
