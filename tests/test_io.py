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
    latin1 = "id\tsequence\tsites\nA\u00e9\tMKT\t1\n".encode("latin-1")
    e = refused(read_proteins, write(tmp_path, "latin1.tsv", latin1))
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


# -- issue 9: inputs that used to pass silently ------------------------------------------------------------

@pytest.mark.parametrize("name,text,line", [
    # the quote opened on line 3 is never closed: the csv module read lines 3.. into one field (A and C vanished)
    ("eof.tsv", 'id\tsequence\tsites\nA\tMKTAYI\t2\nB\t"MKTAYI\t3\nC\tMKTAYI\t4\nD\tMKTAYI\t5\n', 3),
    # ... closed much later by another quote, in the middle of a row
    ("later.csv", 'id,sequence,sites\nA,MKTAYI,2\nB,"MKTAYI,3\nC,MKTAYI,4\nD,"MKTAYI",5\n', 3),
    # ... closed later by a quote that happens to end a field
    ("closed.csv", 'id,sequence,sites\nA,MKTAYI,2\nB,"MKTAYI,3\nC,MKTAYI,"4"\n', 3),
    # in the header
    ("head.tsv", 'id\t"sequence\tsites\nA\tMKTAYI\t2\n', 1),
])
def test_unclosed_quote_refused_at_the_line_where_it_opened(tmp_path, name, text, line):
    path = write(tmp_path, name, text)
    e = refused(read_proteins, path)
    assert e.line == line and "quote" in str(e) and str(e).startswith(f"{path}, line {line}:"), str(e)


def test_quoted_field_over_several_lines_still_accepted(tmp_path):
    ps = read_table(write(tmp_path, "t.csv", 'id,sequence,sites\nA,"MKT\nAYI",2\nB,MKTAYW,3\n'))
    assert [(p.id, p.sequence, p.source.rsplit(":", 1)[1]) for p in ps] == [("A", "MKTAYI", "2"),
                                                                              ("B", "MKTAYW", "4")]


def test_shared_sequences_without_cluster_share_a_cluster_with_a_note(tmp_path):
    a = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"  # 33 residues
    text = ("id\tsequence\tsites\n"
            f"A\t{a}\t2\nA_copy\t{a.lower()}\t3\nfragment\t{a[5:30]}\t1\nshort\t{a[:6]}\t1\n"
            f"other\t{a[::-1]}\t1\n")
    ps = read_table(write(tmp_path, "t.tsv", text))
    by_id = {p.id: p for p in ps}
    shared = by_id["A"].cluster
    assert shared and shared.startswith("seq:")
    assert by_id["A_copy"].cluster == shared  # identical sequence
    assert by_id["fragment"].cluster == shared  # contained in A (25 residues >= MIN_CONTAINED)
    assert by_id["short"].cluster is None and by_id["other"].cluster is None  # too short / unrelated
    assert len(ps.notes) == 2 and "A, A_copy, fragment" in ps.notes[0] and shared in ps.notes[0]
    rows = text.splitlines()
    again = read_table(write(tmp_path, "r.tsv", "\n".join([rows[0], *reversed(rows[1:])]) + "\n"))  # other order
    assert {p.id: p.cluster for p in again} == {p.id: p.cluster for p in ps}
    # (a split by cluster keeps a cluster on one side: tests/test_probe.py)
    # an explicit cluster column is kept; a member without one joins its group's cluster
    ps = read_table(write(tmp_path, "c.tsv", f"id\tsequence\tsites\tcluster\nA\t{a}\t2\tgpcr1\nB\t{a}\t2\t\n"))
    assert [p.cluster for p in ps] == ["gpcr1", "gpcr1"] and ps.notes
    ps = read_table(write(tmp_path, "u.tsv", f"id\tsequence\tsites\nA\t{a}\t2\nB\t{a[::-1]}\t2\n"))
    assert [p.cluster for p in ps] == [None, None] and ps.notes == []  # negative control: nothing shared


def test_sites_and_labels_disagreeing_refused(tmp_path):
    e = refused(read_table, write(tmp_path, "t.tsv", "id\tsequence\tsites\tlabels\nA\tMKTAYI\t2,4\t010001\n"))
    assert e.line == 2 and e.pid == "A" and "disagree" in str(e) and "only in sites: 4" in str(e)
    assert "only in labels: 6" in str(e)
    ps = read_table(write(tmp_path, "ok.tsv", "id\tsequence\tsites\tlabels\nA\tMKTAYI\t2,4\t010100\n"
                                              "B\tMKTAYI\t\t001000\nC\tMKTAYI\t5\t\n"))
    assert [p.sites for p in ps] == [(2, 4), (3,), (5,)]


def test_empty_sites_refused_for_training_allowed_for_predict(tmp_path):
    path = write(tmp_path, "t.tsv", "id\tsequence\tsites\nA\tMKTAYI\t2\nB\tMKTAYI\t\nC\tMKTAYW\tnone\n")
    e = refused(read_proteins, path, require_sites=True)
    assert e.line == 3 and e.pid == "B" and "'sites' cell is empty" in str(e) and "write none" in str(e)
    assert [p.sites for p in read_proteins(path)] == [(2,), (), ()]  # predict: allowed
    cfg = SimpleNamespace(path=str(path), bundled=None, family=None, limit=None, max_length=None)
    assert refused(load_proteins, cfg, require_sites=True).line == 3
    ok = write(tmp_path, "ok.tsv", "id\tsequence\tsites\nA\tMKTAYI\t2\nC\tMKTAYW\tNone\n")
    assert [p.sites for p in read_proteins(ok, require_sites=True)] == [(2,), ()]  # 'none': explicitly no site
    e = refused(read_proteins, write(tmp_path, "f.fasta", ">A\nMKT\n"), require_sites=True)
    assert "no site labels" in str(e)


@pytest.mark.parametrize("char", ["\u200b", "\u200d", "\u202e", "\u2066", "\ufeff", "\u00ad", "\ue000"])
def test_invisible_or_bidi_characters_in_ids_refused(tmp_path, char):
    e = refused(read_table, write(tmp_path, "t.tsv", f"id\tsequence\tsites\nA{char}B\tMKTAYI\t2\n"))
    assert e.line == 2 and f"U+{ord(char):04X}" in str(e)
    e = refused(read_fasta, write(tmp_path, "t.fasta", f">A{char}B\nMKT\n"))
    assert e.line == 1 and "invisible or control character" in str(e)
    e = refused(read_table, write(tmp_path, "c.tsv", f"id\tsequence\tsites\tcluster\nA\tMKTAYI\t2\tc{char}1\n"))
    assert "the cluster contains" in str(e)
    assert read_table(write(tmp_path, "ok.tsv", "id\tsequence\tsites\nA-1 (β2AR)\tMKTAYI\t2\n"))[0].id == "A-1 (β2AR)"


def _returns_within(fn, seconds: float = 10.0):
    """Run ``fn`` in a daemon thread: (finished, result or exception); a hang fails instead of blocking."""
    import threading

    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["value"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive(), box.get("value")


def test_non_regular_files_refused_before_reading(tmp_path):
    import os
    import socket
    import tempfile

    fifo = tmp_path / "pipe.tsv"
    os.mkfifo(fifo)
    sock_dir = tempfile.mkdtemp(prefix="al")  # a short path: socket names are limited to ~100 bytes
    sock_path = os.path.join(sock_dir, "s.tsv")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(sock_path)
    try:
        for path, kind in ((fifo, "FIFO"), ("/dev/zero", "device"), (sock_path, "socket")):
            done, value = _returns_within(lambda p=path: read_proteins(p))
            assert done, f"reading {path} hangs"
            assert isinstance(value, InputError) and kind in str(value) and "not a regular file" in str(value)
    finally:
        sock.close()
        os.unlink(sock_path)
        os.rmdir(sock_dir)


def test_a_fragment_inside_two_proteins_joins_one_cluster_with_both():
    from allo_lightning.data import Protein, shared_sequence_clusters

    s = "MKTAYIAKQRQISFVKSHFSRQLEERLG"  # 28 residues, inside A and inside B
    a = Protein(id="A", sequence="GSGS" + s + "WWWWPPPP", sites=(1,))
    b = Protein(id="B", sequence="NNNNDDDD" + s + "YYYY", sites=(1,))
    frag = Protein(id="S", sequence=s, sites=(1,))
    for order in ([a, b, frag], [frag, b, a], [b, frag, a]):
        grouped, notes = shared_sequence_clusters(order)
        clusters = {p.id: p.cluster for p in grouped}
        assert clusters["A"] == clusters["B"] == clusters["S"] is not None, (clusters, [p.id for p in order])


def test_read_rows_other_tables_by_the_same_rules(tmp_path):
    """read_rows (predict's structure mapping table): header line and names, rows padded to the header,
    blank rows skipped, file lines after a multi-line cell, the required fields and extra fields refused."""
    from allo_lightning.data.io import read_rows

    p = write(tmp_path, "m.csv", '\n\nID; Structure ;chain\nP1;"a;b\nc";A\n\nP2;x\n'.encode("utf-16"))
    t = read_rows(p, "id, structure, chain")
    assert (t.line, t.delimiter, t.header) == (3, ";", ["id", "structure", "chain"])
    assert list(t.rows(2)) == [(4, ["P1", "a;b\nc", "A"]), (7, ["P2", "x", ""])]
    assert "line 7: 2 field(s) but the header has 3" in str(refused(lambda: list(read_rows(p, "x").rows(3))))
    p = write(tmp_path, "e.csv", "id,structure\nP1,a,\nP2,b,c\n")
    assert next(read_rows(p, "x").rows(2)) == (2, ["P1", "a", ""])  # an empty extra field is fine
    assert "line 3: 3 field(s) but the header has 2" in str(refused(lambda: list(read_rows(p, "x").rows(2))))
    assert "Give a table with columns id, structure" in str(refused(read_rows, write(tmp_path, "z.csv", ""),
                                                                   "id, structure"))


def test_fasta_rcsb_headers_give_the_entry_and_entity(tmp_path):
    """RCSB PDB's FASTA (the sequence download of an entry, e.g. 4EIY) names each entity
    ``>4EIY_1|Chain A|...`` or ``>4EIY_2|Chains B, C|...``: the id is ``4EIY_1``, not the first word
    ``4EIY_1|Chain`` (which every output, file name and mapping-table row then had to carry). Other pipes
    in a first word stay as they were (NCBI ``gi|...|ref|...|``)."""
    text = (">4EIY_1|Chain A|Adenosine receptor A2a/Soluble cytochrome b562|Homo sapiens (9606)\nMKTAYI\n"
            ">4eiy_2|Chains B, C|nanobody|Lama glama (9844)\nMKTT\n"
            ">gi|4501969|ref|NP_000015.1| beta-2\nMKA\n")
    assert [p.id for p in read_proteins(write(tmp_path, "rcsb.fasta", text))] == [
        "4EIY_1", "4eiy_2", "gi|4501969|ref|NP_000015.1|"]
