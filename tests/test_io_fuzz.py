"""Fuzzed input files: the parsers either return proteins or raise InputError naming the file, the line or
id (or the file as a whole), and what to do. Never another exception."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allo_lightning.data.io import ALPHABET, InputError, Protein, read_fasta, read_proteins, read_table

pytestmark = pytest.mark.slow  # fuzzing: run by .ci/run (python -m pytest -m slow), not the inner loop

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
_DIR = Path(tempfile.mkdtemp(prefix="allo_fuzz_"))  # one file per parser call, overwritten (fast, no fixture)

# Problems about the file as a whole: they name the file, there is no line or id to name.
WHOLE_FILE = ("file is empty", "no FASTA records", "header but no proteins", "not valid UTF-16")


def check(parse, data: bytes, name: str = "in.txt", **kw) -> list[Protein] | None:
    path = _DIR / name
    path.write_bytes(data)
    try:
        proteins = parse(path, **kw)
    except InputError as e:
        msg = str(e)
        assert e.path == str(path) and msg.startswith(str(path)), msg
        assert e.line is not None or e.pid or any(w in msg for w in WHOLE_FILE), msg
        if e.line is not None:
            assert msg.startswith(f"{path}, line {e.line}"), msg
        assert e.todo and msg.rstrip().endswith(e.todo.rstrip()), msg  # what to do, at the end
        assert len(msg) < 1000, msg[:200]  # huge fields are shortened
        return None
    assert proteins
    for p in proteins:
        assert p.sequence and set(p.sequence) <= ALPHABET and p.id and p.id.strip() == p.id
        if kw.get("max_length"):
            assert p.length <= kw["max_length"]
        if p.sites is not None:
            assert all(1 <= s <= p.length for s in p.sites)
    assert len({p.id for p in proteins}) == len(proteins)
    return proteins


parsers = st.sampled_from([read_proteins, read_table, read_fasta])
suffix = st.sampled_from(["in.txt", "in.tsv", "in.csv", "in.fasta"])


@FUZZ
@given(parse=parsers, data=st.binary(max_size=400), name=suffix)
def test_random_bytes(parse, data, name):
    check(parse, data, name)


@FUZZ
@given(parse=parsers, text=st.text(max_size=300), enc=st.sampled_from(["utf-8", "utf-16", "utf-8-sig", "latin-1"]))
def test_random_text_in_any_encoding(parse, text, enc):
    try:
        data = text.encode(enc)
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    check(parse, data)


good = "ACDEFGHIKLMNPQRSTVWYXBZUOacdefghiklmnpqrstvwy"
valid_residues = st.text(alphabet=good + " \t", min_size=1, max_size=60)  # lowercase, spaces
residues = st.one_of(
    valid_residues, valid_residues, valid_residues,
    st.builds(lambda s, end: s + end, st.text(alphabet=good, min_size=1, max_size=30),
              st.sampled_from(["*", "**", ""])),
    st.text(alphabet=string.ascii_letters + "XBZUO*-. \t0123456789" + "\u017f\u0131\u00e9", max_size=60),
)
words = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12)
header_text = st.one_of(
    st.builds(lambda i, d: f"P{i} {d}", st.integers(0, 6), words),
    st.builds(lambda db, acc, nm: f"{db}|{acc}|{nm} Homo sapiens OX=9606", st.sampled_from(["sp", "tr", "xx"]),
              st.text(string.ascii_uppercase + string.digits, max_size=8), words),
    words, st.text(max_size=12),
)
sequence_lines = st.lists(residues, max_size=4)
noise_line = st.one_of(st.just(";comment"), st.just(""), st.just(">"), st.text(max_size=20))


@st.composite
def fasta_text(draw) -> list[str]:
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        lines.append(">" + draw(header_text))
        lines.extend(draw(sequence_lines))
        if draw(st.integers(0, 9)) == 0:
            lines.insert(draw(st.integers(0, len(lines))), draw(noise_line))
    return lines


@FUZZ
@given(lines=fasta_text(), eol=st.sampled_from(["\n", "\r\n", "\r"]),
       bom=st.booleans(), max_length=st.one_of(st.none(), st.integers(1, 50)))
def test_fasta_like_text(lines, eol, bom, max_length):
    data = (b"\xef\xbb\xbf" if bom else b"") + eol.join(lines).encode("utf-8", "surrogatepass")
    check(read_proteins, data, "in.fasta", max_length=max_length)


site_text = st.one_of(st.from_regex(r"\A[A-Za-z]?[0-9]{1,3}([,; ]{1,2}[A-Za-z]?[0-9]{1,3}){0,3}\Z"), st.just(""),
                      st.text(max_size=10))
columns = ["id", "sequence", "sites", "labels", "cluster", "family", "gene", "x", ""]
header = st.one_of(
    st.permutations(["id", "sequence", "sites"]),
    st.permutations(["id", "sequence", "labels", "family"]),
    st.lists(st.sampled_from(columns), max_size=6),
)


@st.composite
def table_rows(draw, head: list[str]) -> list[list[str]]:
    rows = []
    for i in range(draw(st.integers(0, 6))):
        seq = draw(residues)
        pid = draw(st.one_of(st.just(f"P{i}"), st.just(f"P{i}"), st.just("P0"), words, st.text(max_size=8)))
        labels = draw(st.one_of(st.text("01", max_size=40), st.just("0" * len(seq))))
        value = {"id": pid, "sequence": seq, "sites": draw(site_text), "labels": labels}
        row = [value.get(c, draw(st.text(max_size=6))) for c in head]
        if draw(st.integers(0, 9)) == 0:  # a wrong number of fields
            row = row[: draw(st.integers(0, len(row)))] + draw(st.lists(st.text(max_size=4), max_size=2))
        rows.append(row)
    return rows


@FUZZ
@given(head=header, data=st.data(), delim=st.sampled_from(["\t", ",", ";"]), quote=st.booleans(),
       eol=st.sampled_from(["\n", "\r\n"]), max_length=st.one_of(st.none(), st.integers(1, 50)))
def test_table_like_text(head, data, delim, quote, eol, max_length):
    rows = data.draw(table_rows(list(head)))
    q = (lambda c: '"' + c.replace('"', '""') + '"') if quote else (lambda c: c)
    text = eol.join(delim.join(q(c) for c in r) for r in [list(head), *rows])
    check(read_proteins, text.encode("utf-8", "surrogatepass"), "in.tsv", max_length=max_length)


@FUZZ
@given(n=st.integers(1, 3), size=st.sampled_from([10_000, 200_000]), where=st.sampled_from(["id", "sequence", "sites"]))
def test_huge_fields(n, size, where):
    big = {"id": "I" * size, "sequence": "ACDEFGHIKL" * (size // 10), "sites": "1," * (size // 2) + "9" * 5000}
    rows = [{"id": f"P{i}", "sequence": "MKTAYI", "sites": "2"} for i in range(n)]
    rows[-1][where] = big[where]
    text = "id\tsequence\tsites\n" + "\n".join(f"{r['id']}\t{r['sequence']}\t{r['sites']}" for r in rows)
    check(read_proteins, text.encode(), "in.tsv", max_length=2048)


# -- accepted forms: valid content in any of the real-world spellings parses to the same proteins ----------

STANDARD_PLUS = "ACDEFGHIKLMNPQRSTVWYXBZUO"
proteins_st = st.lists(
    st.tuples(st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=8),
              st.text(STANDARD_PLUS, min_size=1, max_size=70)),
    min_size=1, max_size=5, unique_by=lambda t: t[0])


@st.composite
def spelled(draw, seq: str) -> list[str]:
    """The sequence in lower/mixed case, wrapped at random widths, with stray whitespace and maybe a '*'."""
    s = "".join(c.lower() if draw(st.booleans()) else c for c in seq) if draw(st.booleans()) else seq
    width = draw(st.integers(1, 80))
    lines = [s[i : i + width] for i in range(0, len(s), width)]
    lines = [ln.replace(ln[:1], ln[:1] + " ", 1) if draw(st.integers(0, 4)) == 0 else ln for ln in lines]
    if draw(st.booleans()):
        lines[-1] += "*"
    return lines


@FUZZ
@given(ps=proteins_st, data=st.data(), eol=st.sampled_from(["\n", "\r\n", "\r"]),
       enc=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]), uniprot=st.booleans())
def test_valid_fasta_in_real_world_spellings(ps, data, eol, enc, uniprot):
    lines = []
    for pid, seq in ps:
        lines.append(f">sp|{pid}|{pid}_HUMAN Some protein OS=Homo sapiens" if uniprot else f">{pid} description")
        lines.extend(data.draw(spelled(seq)))
    got = check(read_proteins, (eol.join(lines) + eol).encode(enc), "in.fasta")
    assert [(p.id, p.sequence) for p in got] == ps


@FUZZ
@given(ps=proteins_st, data=st.data(), delim=st.sampled_from(["\t", ",", ";"]),
       eol=st.sampled_from(["\n", "\r\n"]), enc=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_valid_table_in_real_world_spellings(ps, data, delim, eol, enc):
    rows, expect = ["id" + delim + "Sequence" + delim + "SITES"], []
    for pid, seq in ps:
        sites = sorted(data.draw(st.sets(st.integers(1, len(seq)), max_size=4)))
        text = ", ".join((seq[s - 1].lower() if data.draw(st.booleans()) else "") + str(s) for s in sites)
        cells = [pid, " ".join(data.draw(spelled(seq))), text]
        rows.append(delim.join('"' + c + '"' if delim in c or " " in c else c for c in cells))
        expect.append((pid, seq, tuple(sites)))
    got = check(read_proteins, (eol.join(rows) + eol).encode(enc), "in.csv")
    assert [(p.id, p.sequence, p.sites) for p in got] == expect
