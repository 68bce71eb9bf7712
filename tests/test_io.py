"""Input parsers: real-world forms accepted, every bad input refused with file, line/id and what to do."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from allo_lightning.backbone.base import tokenize
from allo_lightning.data import (
    ALPHABET,
    InputError,
    bundled_path,
    load_proteins,
    read_fasta,
    read_proteins,
    read_table,
)
from allo_lightning.data.io import EXTRA, clean_sequence

A2A = "MPIMGSSVYITVELAIAVLAILGNVLVCWAVWLNSNLQNVTNYFVVSLAAADIAVGVLAIPFAIT"  # 65 residues


def write(tmp_path, name: str, text: str | bytes):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


def refused(fn, *args, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    return info.value


# -- FASTA: accepted forms --------------------------------------------------------------------------------

def test_fasta_uniprot_headers_lowercase_whitespace_linebreaks_stop(tmp_path):
    text = (
        ";a comment line\n"
        ">sp|P29274|AA2AR_HUMAN Adenosine receptor A2a OS=Homo sapiens OX=9606 GN=ADORA2A PE=1 SV=2\n"
        f"{A2A[:30].lower()}\n  {A2A[30:50]} \n\n{A2A[50:]}*\n"
        ">tr|A0A024R161|A0A024R161_HUMAN Guanine nucleotide-binding protein\n"
        "MKT AYI\tAKQ\n"
        ">plain_id some description\n"
        "ACDEFGHIKLMNPQRSTVWYXBZUO\n"
    )
    proteins = read_proteins(write(tmp_path, "in.fasta", text))
    assert [p.id for p in proteins] == ["P29274", "A0A024R161", "plain_id"]
    assert proteins[0].sequence == A2A
    assert proteins[1].sequence == "MKTAYIAKQ"
    assert proteins[2].sequence == "ACDEFGHIKLMNPQRSTVWYXBZUO"
    assert proteins[0].sites is None and proteins[0].source.endswith(":2")


@pytest.mark.parametrize("encode", [
    lambda t: t.replace("\n", "\r\n").encode(),             # Windows line endings
    lambda t: t.replace("\n", "\r").encode(),               # old Mac line endings
    lambda t: b"\xef\xbb\xbf" + t.replace("\n", "\r\n").encode(),  # UTF-8 BOM + CRLF (Notepad, Excel)
    lambda t: t.encode("utf-16"),                           # UTF-16 with BOM (Excel "Unicode text")
], ids=["crlf", "cr", "bom-crlf", "utf16"])
def test_fasta_and_table_encodings_and_line_endings(tmp_path, encode):
    fasta = f">sp|P29274|AA2AR_HUMAN desc\n{A2A[:40]}\n{A2A[40:]}\n>Q2\nMKTAYI\n"
    ps = read_proteins(write(tmp_path, "x.fa", encode(fasta)))
    assert [(p.id, p.sequence) for p in ps] == [("P29274", A2A), ("Q2", "MKTAYI")]
    table = f"id\tsequence\tsites\nP29274\t{A2A.lower()}\tP2,5\nQ2\tMKTAYI*\t\n"
    ps = read_proteins(write(tmp_path, "x.tsv", encode(table)))
    assert [(p.id, p.sequence, p.sites) for p in ps] == [("P29274", A2A, (2, 5)), ("Q2", "MKTAYI", ())]
    assert ps[1].source.endswith(":3")  # line numbers count real lines whatever the line ending


def test_fasta_detected_by_content_or_suffix(tmp_path):
    assert read_proteins(write(tmp_path, "noext", "\n\n>a\nMKT\n"))[0].id == "a"
    assert read_proteins(write(tmp_path, "comment.txt", ";comment\n>a\nMKT\n"))[0].id == "a"
    e = refused(read_proteins, write(tmp_path, "bare.fasta", "MKTAYI\n>a\nMKT\n"))
    assert e.line == 1 and "before any '>' header" in str(e)


# -- tables: accepted forms -------------------------------------------------------------------------------

def test_table_csv_semicolon_quotes_labels_optional_columns(tmp_path):
    csv_text = 'ID,Sequence,Sites,Family\nA,"MKT AYI\nAKQ",F168x,GPCR\n'.replace("F168x", "\"K2, 4\"")
    ps = read_table(write(tmp_path, "t.csv", csv_text))
    assert (ps[0].id, ps[0].sequence, ps[0].sites, ps[0].family) == ("A", "MKTAYIAKQ", (2, 4), "GPCR")
    ps = read_table(write(tmp_path, "t2.csv", "id;sequence;labels\nA;MKTA;0101\n"))  # European Excel export
    assert ps[0].sites == (2, 4)
    ps = read_table(write(tmp_path, "t3.tsv", "id\tsequence\tsites\tcluster\nA\tMKTA\tk2 t3;A4\n"))
    assert ps[0].sites == (2, 3, 4) and ps[0].cluster is None  # short row: optional column empty


def test_bundled_sets_parse():
    for name in ("gpcr", "asd", "seed"):
        cfg = SimpleNamespace(path=None, bundled=name, family=None, limit=None, max_length=None)
        ps = load_proteins(cfg)
        assert ps and len({p.id for p in ps}) == len(ps)
        if name != "seed":
            assert all(p.sites and p.cluster for p in ps)  # every row labelled, with a cluster to split by
    asd = read_table(bundled_path("asd"))
    assert len(asd) == 371
    assert {p.modulator_class for p in asd} == {"ligand", "ion", "additive"}
    assert sum(p.modulator_class == "ion" for p in asd) == 20 and sum(p.modulator_class == "additive" for p in asd) == 4


# -- tables: errors from issue 2 --------------------------------------------------------------------------

TABLE_ERRORS = [
    # (row after the header, expected line, expected id, phrase in the message)
    ("A\tMKTJAYI\t2", 2, "A", "unknown residue letter(s) 'J'"),
    ("A\tMKTAYI\t7", 2, "A", "outside the sequence (length 6"),
    ("A\tMKTAYI\tF3", 2, "A", "says residue F but the sequence has T at position 3"),
    ("A\t \t1", 2, "A", "empty sequence"),
    ("A\t*\t1", 2, "A", "empty sequence"),
    ("A\tMKTAYI\t0", 2, "A", "outside the sequence"),
    ("A\tMKTAYI\t2-4", 2, "A", "cannot read site '2-4'"),
    ("A\tMKT-AYI\t2", 2, "A", "alignment gaps"),
    ("\tMKTAYI\t2", 2, None, "empty id"),
]


@pytest.mark.parametrize("row,line,pid,phrase", TABLE_ERRORS)
def test_table_errors_name_file_line_id(tmp_path, row, line, pid, phrase):
    path = write(tmp_path, "t.tsv", f"id\tsequence\tsites\n{row}\n")
    e = refused(read_table, path)
    msg = str(e)
    assert msg.startswith(f"{path}, line {line}")
    if pid:
        assert f"id {pid!r}" in msg and e.pid == pid
    assert phrase in msg
    assert e.todo and msg.endswith(e.todo) and e.line == line and e.path == str(path)


def test_row_missing_its_sites_field_is_refused(tmp_path):
    e = refused(read_table, write(tmp_path, "t.tsv", "id\tsequence\tsites\nA\tMKTAYI\t1\nB\tMKTAYI\n"))
    assert e.line == 3 and "2 field(s) but the header has 3" in str(e)
    e = refused(read_table, write(tmp_path, "t.tsv", "id\tsequence\tsites\nA\tMKTAYI\t1\textra\n"))
    assert e.line == 2 and "4 field(s)" in str(e)


def test_duplicate_ids_name_both_lines(tmp_path):
    path = write(tmp_path, "t.tsv", "id\tsequence\tsites\nA\tMKTAYI\t1\n\nA\tMKTAYI\t2\n")
    e = refused(read_table, path)
    assert str(e).startswith(f"{path}, line 4, id 'A': duplicate id (first at line 2)")
    e = refused(read_fasta, write(tmp_path, "d.fasta", ">sp|P1|X\nMKT\n>P1 again\nMKT\n"))
    assert e.line == 3 and e.pid == "P1" and "first at line 1" in str(e)


def test_too_long_for_the_backbone_names_limit_and_what_to_do(tmp_path):
    path = write(tmp_path, "t.tsv", f"id\tsequence\tsites\nshort\tMKT\t1\nlong1\t{'A' * 30}\t1\n")
    e = refused(read_proteins, path, max_length=20)
    assert str(e).startswith(f"{path}, line 3, id 'long1': sequence has 30 residues, more than the backbone's "
                             "limit of 20")
    assert "Split the protein into domains" in str(e)
    e = refused(read_proteins, write(tmp_path, "l.fasta", f">x\n{'A' * 21}\n"), max_length=20)
    assert e.line == 1 and e.pid == "x" and "limit of 20" in str(e)


def test_header_problems(tmp_path):
    e = refused(read_table, write(tmp_path, "h.csv", "name,seq\nA,MKT\n"))
    assert e.line == 1 and "missing column(s) id, sequence, sites (or labels)" in str(e)
    e = refused(read_table, write(tmp_path, "h2.tsv", "id\tsequence\tsites\tid\n"))
    assert "appear more than once" in str(e)
    e = refused(read_table, write(tmp_path, "h3.tsv", "\n\nid\tsequence\tsites\n"))
    assert "no proteins" in str(e)
    e = refused(read_proteins, write(tmp_path, "empty.tsv", " \n\n"))
    assert "empty" in str(e) and e.todo


def test_file_level_problems(tmp_path):
    assert "file not found" in str(refused(read_proteins, tmp_path / "nope.tsv"))
    assert "is a folder" in str(refused(read_proteins, tmp_path))
    e = refused(read_proteins, write(tmp_path, "latin1.tsv", "id\tsequence\tsites\nA\u00e9\tMKT\t1\n".encode("latin-1")))
    assert e.line == 2 and "not valid UTF-8" in str(e) and "Save the file as UTF-8" in str(e)
    e = refused(read_proteins, write(tmp_path, "nul.tsv", b"id\tsequence\tsites\n\x00\x01"))
    assert e.line == 2 and "NUL" in str(e)


def test_non_ascii_letters_are_not_uppercased_into_residues(tmp_path):
    # str.upper() would turn the long s and the dotless i into 'S' and 'I'
    e = refused(read_fasta, write(tmp_path, "u.fasta", ">a\nMK\u017fT\u0131\n"))
    assert "unknown residue" in str(e) and e.pid == "a"


def test_huge_fields_give_short_messages(tmp_path):
    big_id = "Q" * 100_000
    e = refused(read_table, write(tmp_path, "big.tsv", f"id\tsequence\tsites\n{big_id}\tMKT\t{'9' * 5000}\n"))
    assert "outside the sequence" in str(e) and len(str(e)) < 600


# -- non-standard residues against the esm tokenizer ------------------------------------------------------

def test_every_allowed_letter_has_its_own_esm_token_and_ours_match():
    from esm.tokenization import EsmSequenceTokenizer

    esm_tok = EsmSequenceTokenizer()
    unk = esm_tok.unk_token_id
    for letter in sorted(ALPHABET):
        esm_ids = esm_tok.encode(letter)  # [<cls>, letter, <eos>]
        ours = tokenize([clean_sequence(letter.lower(), "test")])[0][0].tolist()
        assert ours == esm_ids, letter
        assert esm_ids[1] != unk, f"{letter} would be <unk> for ESM-C"
    seq = "".join(sorted(ALPHABET)) * 3
    assert tokenize([seq])[0][0].tolist() == esm_tok.encode(seq)
    assert set(EXTRA) == set("XBZUO")
    # letters we refuse are exactly those the ESM-C tokenizer does not know
    for letter in "JabcJ":
        if letter.upper() not in ALPHABET:
            assert esm_tok.encode(letter.upper())[1] == unk
