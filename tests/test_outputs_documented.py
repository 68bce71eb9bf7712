"""Every output is documented: each command runs once on the tiny backbone (extract, heads, fit, evaluate with
``--structure``, predict from FASTA and from a labelled table with ``--structure``, report with AlphaMissense,
fit again without a test set and with isotonic calibration),
and every file written, every CSV column and every JSON key must be named in README.md. An audit found many
undocumented columns and keys, written where they are produced; nothing caught the drift (issue 19).

The rules:

- a **file** (its path inside the output folder; fit's checkpoint as ``checkpoints/<name>``) must match a name
  in backticks anywhere in README.md, where ``<...>`` in a documented name stands for one path component or
  part of one (``pymol/<id>.pml``, ``.allo_lightning.<marker>.files.json``);
- a **column** of a CSV table and a **key** of a JSON file, at any depth, must be in backticks in the README
  section that covers that file (``SECTIONS``), alone or in a backticked list (``a, b, c``); ``centre_x/y/z``
  names ``centre_x``, ``centre_y``, ``centre_z``; in heads' outputs a column ``p_alpha_X`` or ``mass_X`` is
  documented as ``s_X`` (the README's "for `s` in `p_alpha`, `mass`"). README's own names only: no allow-list
  of names that are not data;
- keys that are **data** are skipped, decided by reading their writers: the keys of the ``DATA_KEYED`` dicts
  are protein ids (predict.py's ``file_names``: id -> file name; heads.py's ``files.map_files``: id -> map;
  select.py's ``excluded_proteins``: id -> why; config.py's ``heads.orthosteric``: id -> residues). The test
  checks that their keys are this run's protein ids, so the list cannot hide a fixed name. Dicts keyed by a
  score or metric name (``smallest_floor_reached``, ``intervals``, heads' ``top`` entries) have fixed names:
  they are checked like any key. The items of a list share their list's path (``proteins.sites.dca``);
- ``config`` (fit's metrics.json, report.json) and ``settings`` (heads.json) hold the run's settings: their
  keys must be documented flags (``--heads.top_k`` or ``heads.top_k``);
- hidden files (the manifests), the page's data files (``report_files/*.js``), figures, scripts and structures
  have no columns or keys to check.

Not run here (conditional outputs): a
stopped predict's ``predictions.csv.partial``, mmCIF copies' ``_allo_lightning_score`` category, bench.
A name is looked up in its file's whole section, so a new column that reuses a name documented there for
another file of the section passes.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from pathlib import Path

import pytest

from .conftest import REPO, random_proteins
from .golden import CHECKPOINT, SEQUENCES
from .test_output_holes import _command_args

README = (REPO / "README.md").read_text(encoding="utf-8")

# the README section (its heading, up to a colon) that documents the columns and keys of each output file
SECTIONS = {
    "extract/extraction.json": "### extract",
    "heads/heads.csv": "### heads", "heads/heads.json": "### heads", "heads/attention_to_sites.csv": "### heads",
    "fit/metrics.json": "### fit", "fit/test_scores.csv": "### fit", "fit/training_log/metrics.csv": "### Run records",
    "fit_notest/metrics.json": "### fit", "fit_notest/training_log/metrics.csv": "### Run records",
    "evaluate/metrics.json": "### evaluate", "evaluate/scores.csv": "### evaluate",
    "evaluate/per_protein.csv": "### evaluate", "evaluate/sites.csv": "### predict",  # "as for predict"
    "report/report.csv": "### report", "report/comparison.csv": "### report", "report/report.json": "### report",
    "report/data_efficiency.csv": "### report", "report/alphamissense.csv": "### report",
}
for _c in ("predict", "predict_structure"):
    SECTIONS.update({f"{_c}/{f}": "### predict" for f in ("predictions.csv", "proteins.csv", "sites.csv",
                                                          "predictions.json")})
# nested keys documented with another file's: fit's head_analysis is heads.json
NESTED_SECTIONS = {"head_analysis": "### heads"}
# dicts keyed by data (protein ids), found by reading their writers: predict.py (file_names), heads.py
# (files.map_files: id -> map file), analysis (excluded_proteins: id -> why), config.py (heads.orthosteric)
DATA_KEYED = {"file_names", "files.map_files", "excluded_proteins", "head_analysis.excluded_proteins",
              "config.heads.orthosteric"}
SCORES = ("p_alpha", "mass")  # heads' outputs document `s_X` for p_alpha_X and mass_X


@functools.lru_cache
def _section(heading: str) -> str:
    """The README text from ``heading`` (up to a colon: ``### heads`` is ``### heads: which heads ...``) to the next
    heading of its level or above (code blocks' ``# comment`` lines are no headings)."""
    lines, fenced, heads = README.splitlines(), False, []
    for i, line in enumerate(lines):
        fenced ^= line.startswith("```")
        if not fenced and re.match(r"#+ ", line):
            heads.append((i, len(line.split(" ")[0]), line.split(":")[0]))
    start = [(i, level) for i, level, text in heads if text == heading]
    assert len(start) == 1, f"README has {len(start)} headings {heading!r}"
    (i, level), = start
    end = next((j for j, lv, _ in heads if j > i and lv <= level), len(lines))
    return "\n".join(lines[i:end])


@functools.lru_cache
def _names(text: str) -> set[str]:
    """The names in backticks in ``text``: each backticked text, each part of a backticked list, and the
    expansions of ``centre_x/y/z``."""
    out = set()
    text = "\n".join(x for x in text.splitlines() if not x.startswith("```"))  # a backticked name may wrap
    for tick in (" ".join(t.split()) for t in re.findall(r"`([^`]+)`", text)):
        for part in {tick, *(p.strip() for p in tick.split(","))}:
            out.add(part)
            m = re.fullmatch(r"(\w+_)(\w+)((?:/\w+)+)", part)
            if m:
                out.update(m.group(1) + x for x in [m.group(2), *m.group(3).split("/")[1:]])
    return out


def _file_patterns() -> list[re.Pattern]:
    pats = []
    for name in _names(README):
        if "<" in name and ">" in name and " " not in name:
            pats.append(re.compile(re.sub(r"<[^<>/]+>", "[^/]+", re.escape(name))))  # re.escape keeps < >
        else:
            pats.append(re.compile(re.escape(name)))
    return pats


def _pdb(seq: str, path: Path) -> None:
    """Chain A of ``seq`` (backbone atoms and CB along a line, numbered from 101): a structure to map onto."""
    import biotite.structure as struc
    from biotite.sequence import ProteinSequence
    from biotite.structure.io.pdb import PDBFile

    atoms = [struc.Atom([3.8 * i + k * 0.5, 0.0, 0.0], chain_id="A", res_id=100 + i, ins_code="", atom_name=n,
                        res_name=ProteinSequence.convert_letter_1to3(aa), element=n[0], b_factor=50.0)
             for i, aa in enumerate(seq, start=1) for k, n in enumerate(("N", "CA", "C", "O", "CB"))]
    f = PDBFile()
    f.set_structure(struc.array(atoms))
    f.write(str(path))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every command once into ``runs/<command>``; returns (that folder, the protein ids of the runs)."""
    from allo_lightning import predict

    tmp = tmp_path_factory.mktemp("runs")
    proteins = random_proteins(8, lo=25, hi=40, seed=3)
    # the training table with orthosteric sites (heads.csv's *_orthosteric columns); _command_args uses it
    with open(tmp / "train.tsv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["id", "sequence", "sites", "cluster", "orthosteric_sites"])
        for p in proteins:
            w.writerow([p.id, p.sequence, ",".join(map(str, p.sites)), p.cluster, "1,2"])
    # AlphaMissense, one value per residue (report's alphamissense.csv)
    (tmp / "am.tsv").write_text("uniprot_id\tposition\tam_pathogenicity\n" + "".join(
        f"{p.id}\t{i}\t{(i * 37 % 100) / 100}\n" for p in proteins for i in range(1, p.length + 1)))
    _pdb(SEQUENCES["G1"], tmp / "g1.pdb")
    (tmp / "map.csv").write_text("id,structure,chain\nG1,g1.pdb,A\n")
    out = tmp / "runs"
    for command in ("extract", "heads", "fit", "evaluate", "report"):
        main, args = _command_args(tmp, command, out / command)
        if command == "fit":  # the checkpoint folder as README names it
            args[args.index("--probe.checkpoint_dir") + 1] = str(out / "fit_checkpoints" / "checkpoints")
        if command == "evaluate":
            args += ["--structure", str(tmp / "map.csv")]
        if command == "report":
            args += ["--report.efficiency_draws", "1", "--report.random_seeds", "1", "--report.alphamissense",
                     str(tmp / "am.tsv"), "--report.am_top_k", "3"]
        main(args)
        if command == "fit":  # no test set (test_note), isotonic calibration (its params)
            args[args.index("--trainer.default_root_dir") + 1] = str(out / "fit_notest")
            args[args.index("--probe.checkpoint_dir") + 1] = str(tmp / "ckpt_notest")
            main(args + ["--probe.test_fraction", "0", "--probe.calibration", "isotonic"])
    common = ["--model.cache_dir", str(tmp / "cache"), "--trainer.accelerator", "cpu",
              "--trainer.enable_progress_bar", "false"]
    fasta = tmp / "new.fasta"
    fasta.write_text("".join(f">{k}\n{s}\n" for k, s in SEQUENCES.items()))
    predict.main(["--checkpoint", str(CHECKPOINT), "--fasta", str(fasta), "--out", str(out / "predict"), *common])
    # a labelled table, G1 on a structure, the fitted (calibrated) probe: probability, chain/resnum/icode, dca, hit
    predict.main(["--checkpoint", str(next((out / "fit_checkpoints" / "checkpoints").iterdir())), "--data.path",
                  str(tmp / "golden.tsv"), "--structure", str(tmp / "map.csv"), "--out",
                  str(out / "predict_structure"), *common])
    return out, {p.id for p in proteins} | set(SEQUENCES)


def _files(out: Path) -> list[str]:
    """Every file written, as ``command/path`` (fit's checkpoint as ``fit/checkpoints/NAME``)."""
    found = []
    for path in sorted(out.rglob("*")):
        if path.is_file():
            rel = path.relative_to(out).parts
            found.append("/".join(("fit",) + rel[1:] if rel[0] == "fit_checkpoints" else rel))
    return found


def _keys(obj, path=()):
    """(dotted path of the dict, key) of every key in ``obj`` (list items share their list's path)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield ".".join(path), k
            yield from _keys(v, path + (k,))
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v, path)


def _named(name: str, heading: str) -> bool:
    """``name`` is in backticks in the README section ``heading`` (heads: ``s_X`` for ``p_alpha_X``, ``mass_X``)."""
    names = _names(_section(heading))
    return name in names or heading == "### heads" and any(
        name.startswith(s + "_") and "s_" + name[len(s) + 1:] in names for s in SCORES)


def _undocumented(out: Path, ids: set[str]) -> list[str]:
    """What ``out`` holds that README.md does not name: one line per file, column or key."""
    missing = []
    patterns = _file_patterns()
    flags = {f for n in _names(README) for f in re.findall(r"\b\w+\.\w+", n)}  # --heads.top_k N, heads.top_k
    for rel in _files(out):
        command, name = rel.split("/", 1)
        if not any(p.fullmatch(name) for p in patterns):
            missing.append(f"{rel}: the file name is not in README.md")
        path = out / ("fit_checkpoints" if name.startswith("checkpoints/") else command) / name
        if Path(name).name.startswith(".") or path.suffix not in (".csv", ".tsv", ".json"):
            continue
        assert rel in SECTIONS, f"{rel}: a table or JSON file this test does not know (add it to SECTIONS)"
        if path.suffix != ".json":
            with path.open(newline="", encoding="utf-8") as f:
                header = next(csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
            missing += [f"{rel}: column {c!r} not in README's {SECTIONS[rel]!r}" for c in header
                        if not _named(c, SECTIONS[rel])]
            continue
        for parent, key in _keys(json.loads(path.read_text(encoding="utf-8"))):
            top = parent.split(".")[0]
            if parent in DATA_KEYED:
                assert key in ids, f"{rel}: {parent!r} is listed as keyed by protein ids, but has key {key!r}"
            elif top == "config" or parent.endswith("settings"):  # config.SECTION.KEY, heads' settings.KEY
                section = parent.split(".")[-1] if top == "config" else "heads"
                if parent != "config" and f"{section}.{key}" not in flags:
                    missing.append(f"{rel}: setting {parent}.{key}: no flag --{section}.{key} in README.md")
            else:
                heading = NESTED_SECTIONS.get(top, SECTIONS[rel])
                if not _named(key, heading):
                    missing.append(f"{rel}: key {'.'.join(filter(None, (parent, key)))!r} not in README's {heading!r}")
    return list(dict.fromkeys(missing))  # a key of list items once


def test_every_output_file_column_and_key_is_documented(runs):
    out, ids = runs
    missing = _undocumented(out, ids)
    assert not missing, "undocumented outputs (document them in README.md):\n" + "\n".join(missing)


def test_the_check_sees_every_command_and_catches_a_new_name(runs, tmp_path):
    """The runs wrote what the check is about, and a column or key added by a writer is caught, naming the
    file and the name."""
    import shutil

    out, ids = runs
    files = set(_files(out))
    for rel in SECTIONS:
        assert rel in files, f"{rel} was not written: the check would pass without looking at it"
    for want in ("predict_structure/structures/G1.pdb", "predict/pymol/G1.pml", "heads/maps/P0.png",
                 "fit/training_log/hparams.yaml", "fit/checkpoints/fit.tiny.safetensors"):
        assert want in files
    notest = json.loads((out / "fit_notest" / "metrics.json").read_text())
    assert notest["test_note"] and set(notest["calibration"]["params"]) == {"x", "y"}
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    info = json.loads((copy / "extract" / "extraction.json").read_text())
    info["gpu_seconds"] = 1.0
    (copy / "extract" / "extraction.json").write_text(json.dumps(info))
    rows = (copy / "predict" / "predictions.csv").read_text().splitlines()
    (copy / "predict" / "predictions.csv").write_text("\n".join([rows[0] + ",entropy"] + rows[1:]) + "\n")
    (copy / "heads" / "maps" / "P0.svg").write_text("<svg/>")
    assert _undocumented(copy, ids) == [
        "extract/extraction.json: key 'gpu_seconds' not in README's '### extract'",
        "heads/maps/P0.svg: the file name is not in README.md",
        "predict/predictions.csv: column 'entropy' not in README's '### predict'"]
    # a fixed name in a dict listed as keyed by protein ids is refused, not skipped
    info = json.loads((copy / "predict" / "predictions.json").read_text())
    info["file_names"]["format"] = "v2"
    (copy / "predict" / "predictions.json").write_text(json.dumps(info))
    with pytest.raises(AssertionError, match="'file_names' is listed as keyed by protein ids, but has key 'format'"):
        _undocumented(copy, ids)
