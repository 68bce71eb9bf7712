"""report.html: escaping of every input-derived string (hostile ids), the predict adapter (mapped
segments, sequence sites) against plain loops, the other commands' pages, and (slow) a real headless
Chromium that opens a page from file:// with the network blocked."""

from __future__ import annotations

import csv
import json
import os
import random
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from allo_lightning.html import write_report
from allo_lightning.html.page import script_json
from allo_lightning.html.predict_view import mapped_segments, sequence_sites

from .html_structure import helix_pdb

HOSTILE = [
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "a\"b'c&d<!--",
    "line\u2028sep\u2029x",
    "</SCRIPT ><svg/onload=alert(3)>",
    "=HYPERLINK(\"http://x\"),1",  # neutralised in the CSV tables: the page must still find its rows
]
NOTE = "NOTE: the 'tiny' backbone is a random, untrained model (test)."


class _Scan(HTMLParser):
    """Elements and attributes of a page, and its text, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def scan(text: str) -> _Scan:
    s = _Scan()
    s.feed(text)
    s.close()
    return s


def synthetic_predict(out: Path, ids: list[str], structure_for: set[str] = frozenset(), seed: int = 0,
                      length: int = 60) -> dict:
    """A predict output folder as predict writes it (predictions.csv, predictions.json, structures/),
    with random scores; returns {id: (sequence, scores, mapping)}."""
    from allo_lightning.tables import file_names, write_csv

    rng = random.Random(seed)
    names = file_names(ids)
    header = ["id", "position", "residue", "score", "probability", "rank", "predicted", "windowed", "chain",
              "resnum", "icode"]
    rows, proteins, truth = [], [], {}
    for pid in ids:
        seq = "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(length))
        scores = [rng.random() for _ in seq]
        order = sorted(range(length), key=lambda i: -scores[i])
        rank = {i: r + 1 for r, i in enumerate(order)}
        mapping = [None] * length
        if pid in structure_for:
            (out / "structures").mkdir(parents=True, exist_ok=True)
            (out / "structures" / f"{names[pid]}.pdb").write_text(
                helix_pdb(seq, offset=100, first=3, insert_after=30, insert="WCWC", icode_at=10))
            for p in range(3, length + 1):
                mapping[p - 1] = ("A", 109, "A") if p == 10 else ("A", p + 100 - (p > 10), "")
        for i, aa in enumerate(seq):
            m = mapping[i] or ("", "", "")
            rows.append([pid, i + 1, aa, f"{scores[i]:.6f}", f"{scores[i] / 2:.6f}", rank[i], int(scores[i] >= 0.8), 0,
                         *m])
        top = [{"position": i + 1, "residue": seq[i], "score": scores[i]} for i in order[:5]]
        proteins.append({"id": pid, "length": length, "predicted": sum(s >= 0.8 for s in scores), "files": names[pid],
                         "windowed": False, "top": top, "known_sites": [5, 6, 7],
                         # predicted sites as allo_lightning.sites writes them (with a structure only, here)
                         "sites": [{"rank": 1, "positions": [3, 4], "residues": ["A:103", "A:104"], "score": 1.5,
                                    "dca": 2.5, "hit": True}] if pid in structure_for else []})
        truth[pid] = (seq, [float(f"{s:.6f}") for s in scores], mapping)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "predictions.csv", header, rows)
    info = {"checkpoint": "ckpt</script>.safetensors", "fasta": "x.fasta", "backbone": "tiny",
            "backbone_identity": "tiny-0", "theta": 0.3, "threshold": 0.8,
            "score_meaning": {"probability": "calibrated"},
            "heads": [[0, 1]], "proteins": proteins, "file_names": names, "meaningless": True, "note": NOTE}
    (out / "predictions.json").write_text(json.dumps(info))
    return truth


def _protein_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    m = re.fullmatch(r"alloProtein\((.*)\);\n", text, re.S)
    assert m, text[:200]
    return json.loads(m.group(1))


def test_script_json_cannot_close_a_script_and_round_trips():
    obj = {"ids": HOSTILE, "nested": {"</script>": ["<!--", "&amp;"]}, "nan": float("nan")}
    text = script_json(obj)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    back = json.loads(text)
    assert back["ids"] == HOSTILE and back["nested"] == {"</script>": ["<!--", "&amp;"]} and back["nan"] is None


def test_predict_page_escapes_hostile_ids_and_keeps_them_exact(tmp_path):
    out = tmp_path / "pred"
    ids = HOSTILE + ["P29274"]
    truth = synthetic_predict(out, ids, structure_for={HOSTILE[0], "P29274"})
    page = write_report(out, "predict")
    text = page.read_text(encoding="utf-8")
    files = [page] + sorted((out / "report_files").rglob("*.js"))
    for f in files:
        if f.name == "3Dmol-min.js":
            continue
        body = f.read_text(encoding="utf-8")
        for hostile in HOSTILE:  # markup characters never raw (U+2028 is harmless in HTML text)
            assert hostile not in body or not set(hostile) & set("<>&\"'"), (f, hostile)
        data_part = body if f.suffix == ".js" else body.split('id="allo-data">')[1].split("</script>")[0]
        assert "\u2028" not in data_part and "\u2029" not in data_part  # would end a line of JavaScript
    s = scan(text)
    scripts = [a for t, a in s.tags if t == "script"]
    # exactly the page's own scripts: the data block, the viewer and the page script
    assert [a.get("src") or a.get("type") for a in scripts] == ["application/json", "report_files/3Dmol-min.js",
                                                                "report_files/report.js"]
    assert not [(t, k) for t, a in s.tags for k in a if k.lower().startswith("on")]  # no event-handler attribute
    assert not [t for t, _ in s.tags if t in ("img", "svg", "iframe", "object", "embed")]
    shown = "".join(s.text)
    for hostile in HOSTILE:
        assert hostile.replace("\u2028", "").replace("\u2029", "")[:12] in shown.replace("\u2028", "").replace(
            "\u2029", "")  # the id is shown as text
    data = json.loads(text.split('<script type="application/json" id="allo-data">')[1].split("</script>")[0])
    assert [p["id"] for p in data["proteins"]] == ids
    for entry in data["proteins"]:
        view = _protein_data(out / "report_files" / "proteins" / f"{entry['file']}.js")
        seq, scores, mapping = truth[entry["id"]]
        assert view["id"] == entry["id"] and view["sequence"] == seq and view["scores"] == scores
        assert view["known"][4:7] == [True, True, True] and sum(view["known"]) == 3
        assert [tuple(m) if m else None for m in view["mapping"]] == mapping
        assert (view["structure"] is not None) == (entry["id"] in (HOSTILE[0], "P29274"))
        assert view["notes"][0] == NOTE
        if view["structure"]:  # predict's own sites are used; else sequence segments (rule stated)
            assert [(s["positions"], s["structure"], s["judged"]) for s in view["sites"]] == [
                ([3, 4], "A:103 A:104", "hit (DCA 2.5 A)")] and "spatial patches" in view["sites_rule"]
        else:
            assert sorted(p for s in view["sites"] for p in s["positions"]) == [p for p in range(1, 61)
                                                                                if scores[p - 1] >= 0.8]
            assert "sequence segments" in view["sites_rule"]
    # the viewer gets the written structure (waters dropped, the ligand kept)
    view = _protein_data(out / "report_files" / "proteins" / f"{data['proteins'][-1]['file']}.js")
    assert "HOH" not in view["structure"]["text"] and " LIG " in view["structure"]["text"]
    assert view["segments"] == [{"chain": "A", "start": "103", "end": "159", "first": 3, "last": 60}]
    assert (out / "report_files" / "3Dmol-min.js").stat().st_size > 100_000
    assert (out / "report_files" / "3Dmol-LICENSE.txt").is_file()


def test_pages_of_other_commands_escape_settings(tmp_path):
    bad = HOSTILE[0]
    config = {"data": {"path": bad}, "seed": 0}
    fit = tmp_path / "fit"
    fit.mkdir()
    (fit / "metrics.json").write_text(json.dumps({
        "auprc": 0.5, "auroc": 0.6, "base_rate": 0.1, "threshold": 0.4, "heads": [bad], "n_proteins": {"train": 1},
        "backbone": bad, "backbone_identity": bad, "meaningless": True, "note": NOTE, "warnings": [bad],
        "config": config, "epochs": 3, "best_epoch": 1, "val": {"auprc": 0.4}}))
    with (fit / "test_scores.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "position", "residue", "label", "score"])
        for i in range(40):
            w.writerow([bad, i + 1, "A", int(i % 5 == 0), (i % 7) / 7])
    (fit / "training_log").mkdir()
    (fit / "training_log" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/auprc\n0,1,,0.2\n0,1,0.9,\n1,2,,0.3\n1,2,0.7,\n2,3,,0.25\n2,3,0.6,\n")
    heads = tmp_path / "heads"
    heads.mkdir()
    (heads / "heads.json").write_text(json.dumps({
        "selected": [[0, 1]], "selected_labels": ["L0H1"], "score": "p_alpha", "strategy": bad, "n_layers": 2,
        "n_heads": 2, "backbone": "tiny", "meaningless": True, "note": NOTE, "settings": {"proteins": [bad]}}))
    (heads / "heads.csv").write_text("layer,head,rank,selected,p_alpha,p_alpha_qvalue\n0,1,1,true,0.3,0.01\n"
                                     "0,0,2,false,0.2,0.5\n1,0,3,false,0.1,0.9\n1,1,4,false,0.05,1\n")
    for out, command in ((fit, "fit"), (heads, "heads")):
        text = write_report(out, command).read_text()
        assert bad not in text and "&lt;/script&gt;" in text
        s = scan(text)
        assert [a.get("src") or a.get("type") for t, a in s.tags if t == "script"] == ["application/json",
                                                                                      "report_files/report.js"]
        assert NOTE in "".join(s.text)
    fit_text = (fit / "report.html").read_text()
    assert "Training curve" in fit_text and "operating point (score &gt;= 0.400)" in fit_text
    heads_text = (heads / "report.html").read_text()
    assert heads_text.count('stroke="#d62728" stroke-width="3"') == 1  # one selected head outlined
    assert "p_alpha_qvalue 0.01" in heads_text  # q-value on hover


def test_mapped_segments_and_sequence_sites_match_plain_loops():
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(1, 40)
        mapping, num = [], 10
        for _ in range(n):
            r = rng.random()
            if r < 0.2:
                mapping.append(None)
                continue
            num += 1 if r < 0.8 else rng.randint(2, 50)  # a gap in the structure's numbering starts a segment
            mapping.append(["A" if rng.random() < 0.9 else "B", num, ""])
        segs = mapped_segments(mapping)
        # plain loop: a segment breaks at an unmapped position, a chain change or a numbering jump
        expect, cur = [], None
        for pos, m in enumerate(mapping, start=1):
            cont = (cur is not None and m is not None and mapping[pos - 2] is not None
                    and mapping[pos - 2][0] == m[0] and m[1] - mapping[pos - 2][1] in (0, 1))
            if m is None:
                cur = None
            elif cont:
                cur[1] = pos
            else:
                cur = [pos, pos]
                expect.append(cur)
        assert [(s["first"], s["last"]) for s in segs] == [tuple(c) for c in expect]
        scores = [rng.random() for _ in range(n)]
        sites = sequence_sites(scores, 0.6, mapping)
        above = {p for p in range(1, n + 1) if scores[p - 1] >= 0.6}
        assert sorted(p for s in sites for p in s["positions"]) == sorted(above)
        for s in sites:  # maximal runs, ranked by mean score
            assert s["positions"] == list(range(s["positions"][0], s["positions"][-1] + 1))
            assert s["positions"][0] - 1 not in above and s["positions"][-1] + 1 not in above
        means = [s["score"] for s in sites]
        assert means == sorted(means, reverse=True)


# -- a real browser -----------------------------------------------------------------------------
@pytest.mark.slow
def test_report_in_headless_chromium(tmp_path):
    """Open report.html from file:// with the network blocked: no console error, no request leaves the
    machine, no script from a hostile id runs, the 3-D canvas shows a structure, and clicking a residue
    of the sequence track changes the 3-D view. Runs wherever CI=true (the CI installs chromium)."""
    from .cdp import Browser, find_chromium, pixels

    if find_chromium() is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but no chromium: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no chromium here (apt-get install chromium); CI runs this test")
    out = tmp_path / "pred"
    ids = ["P29274", HOSTILE[0], HOSTILE[1]]
    synthetic_predict(out, ids, structure_for={"P29274", HOSTILE[0]}, length=120)
    page = write_report(out, "predict")
    with Browser() as b:
        b.open(page.as_uri())
        b.wait("window.alloReport.views.length >= 1", 60)
        assert b.eval("document.querySelector('h2 + p') !== null")
        rect = b.eval("(function(){var r=document.getElementById('viewer').getBoundingClientRect();"
                      "return {x:r.left, y:r.top, width:r.width, height:r.height};})()")
        before = pixels(b.screenshot(rect))[..., :3]
        non_white = float((before.min(-1) < 0.9).mean())
        assert non_white > 0.002, f"the 3-D view looks blank ({non_white:.4%} non-white pixels)"
        b.eval("document.querySelector('.track svg').scrollIntoView()")
        x, y = b.eval("(function(){var s=document.querySelector('.track svg').getBoundingClientRect();"
                      "return [s.left + alloReport.track.x(40), s.top + 40];})()")
        view0 = b.eval("JSON.stringify(alloReport.views[alloReport.views.length - 1])")
        b.click(x, y)
        b.wait("alloReport.focused === 40", 10)
        view1 = b.eval("JSON.stringify(alloReport.views[alloReport.views.length - 1])")
        assert view1 != view0
        b.eval("document.getElementById('viewer').scrollIntoView()")
        rect = b.eval("(function(){var r=document.getElementById('viewer').getBoundingClientRect();"
                      "return {x:r.left, y:r.top, width:r.width, height:r.height};})()")
        after = pixels(b.screenshot(rect))[..., :3]
        assert before.shape == after.shape and float(abs(after - before).mean()) > 0.005
        assert "40" in b.eval("document.getElementById('focus-status').textContent")
        # and back: a click on the structure (its centre: residue 40 and its neighbours) selects that residue
        b.eval("alloReport.focused = null")
        b.click(rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2)
        b.wait("typeof alloReport.focused === 'number'", 10)
        assert 30 <= b.eval("alloReport.focused") <= 50
        # the hostile proteins: shown as text, nothing of theirs runs
        for i, pid in ((1, HOSTILE[0]), (2, HOSTILE[1])):
            b.eval(f"document.querySelector('#protein-index tr[data-i=\"{i}\"]').click()")
            b.wait(f"alloReport.protein && alloReport.protein.id === {json.dumps(pid)}", 20)
            assert b.eval("document.querySelector('#protein h2').textContent") == pid
            if pid == HOSTILE[0]:  # its structure is drawn
                b.wait("window.alloReport.views.length >= 1", 20)
        assert b.eval("document.querySelectorAll('script').length") == 3 + 3  # page's own + 3 protein files
        assert b.eval("document.querySelectorAll('img').length") == 0
        assert not b.dialogs, b.dialogs
        assert not b.errors, b.errors
        assert not b.requests, b.requests


def test_evaluate_and_report_pages_show_intervals_and_comparisons(tmp_path):
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({
        "auprc": 0.31, "auroc": 0.7, "base_rate": 0.05, "f1": 0.2, "mcc": 0.1, "threshold": 0.5, "data": "t.tsv",
        "intervals": {"auprc": {"lo": 0.21, "hi": 0.41}}, "backbone": "tiny", "meaningless": False, "warnings": []}))
    with (ev / "scores.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "position", "residue", "label", "score"])
        for i in range(30):
            w.writerow(["p", i + 1, "A", int(i >= 27), i / 30])
    text = write_report(ev, "evaluate").read_text()
    row = re.search(r"<tr><td>auprc</td>(.*?)</tr>", text).group(1)
    assert [float(v) for v in re.findall(r'data-v="([^"]+)"', row)] == [0.31, 0.21, 0.41]
    # operating point of score >= 0.5: residues 16..30 predicted, the 3 sites among them
    assert "precision 0.200, recall 1.000, 15 residues predicted" in text
    assert "meaningless" not in text.lower() and "NOTHING" not in text
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.json").write_text(json.dumps({"scheme": "kfold", "backbone": "tiny", "meaningless": True,
                                                 "note": NOTE, "config": {"seed": 0}}))
    (rep / "report.csv").write_text("subset,n_heads,auprc,auprc_lo,auprc_hi\nselected,3,0.2,0.1,0.3\n"
                                    "all,8,0.1,0.05,0.2\n")
    (rep / "comparison.csv").write_text("baseline,auprc_diff,lo,hi,selected_better\nall,0.1,0.02,0.2,yes\n")
    text = write_report(rep, "report").read_text()
    assert "<td>selected</td>" in text and "<td>yes</td>" in text and NOTE in "".join(scan(text).text)
    # the verdict is a permutation test's; the bootstrap gives only the descriptive interval (the heading said
    # "paired bootstrap")
    assert "paired permutation test" in text and "(paired bootstrap)" not in text


def test_viewer_gets_mmcif_as_pdb_with_insertion_codes(tmp_path):
    """3Dmol.js reads no insertion codes from mmCIF: a CIF is handed to it as PDB text, codes kept."""
    import biotite.structure.io.pdb as biopdb
    import biotite.structure.io.pdbx as pdbx

    from allo_lightning.html.predict_view import viewer_structure

    (tmp_path / "s.pdb").write_text(helix_pdb("MKTAYIAKQRQISFV", icode_at=5))
    atoms = biopdb.PDBFile.read(str(tmp_path / "s.pdb")).get_structure(model=1, extra_fields=["b_factor"])
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, atoms)
    cif.write(str(tmp_path / "s.cif"))
    view = viewer_structure(tmp_path / "s.cif")
    assert view["format"] == "pdb" and view["name"] == "s.cif"
    ca = [ln for ln in view["text"].splitlines() if ln.startswith("ATOM") and ln[12:16].strip() == "CA"]
    assert [(ln[21], int(ln[22:26]), ln[26].strip()) for ln in ca][3:6] == [("A", 4, ""), ("A", 4, "A"), ("A", 5, "")]
    assert not [ln for ln in view["text"].splitlines() if " HOH " in ln] and " LIG " in view["text"]


@pytest.mark.parametrize("name, args", [
    ("heads", ["--config", "configs/smoke.yaml", "--heads.proteins", "A", "B", "--heads.orthosteric", "{A: [1, 2]}"]),
    ("fit", ["--config", "configs/gpcr.yaml", "--probe.kind", "mlp", "--seed", "3", "--checkpoint", "c.safetensors"]),
    ("evaluate", ["--checkpoint", "c.safetensors", "--data.path", "t.tsv", "--bootstrap", "50"]),
    ("predict", ["--checkpoint", "c", "--fasta", "f.fasta", "--out", "o", "--chain", "B", "--data.long", "skip",
                 "--plots", "false", "--min_identity", "0.5", "--unmapped_b", "null"]),  # null: not the default
    ("report", ["--config", "configs/smoke.yaml", "--report.ks", "1", "2", "--report.scheme", "logo"]),
])
def test_config_yaml_replays_every_setting(tmp_path, name, args):
    """config.yaml of each command, read back with --config, gives exactly the same settings."""
    import importlib

    import yaml

    from allo_lightning.records import resolved_config
    from allo_lightning.shell import parse

    spec = importlib.import_module(f"allo_lightning.{name}").main.spec
    cfg = parse(spec, args + ["--overwrite"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(resolved_config(cfg), sort_keys=False))
    again = parse(spec, ["--config", str(path)])
    assert again.values == {**cfg.values, "overwrite": False}


def test_run_log_records_output_and_how_the_run_ended(tmp_path):
    """run.log: the command line, what was printed (a progress bar's last state only) and the end, also
    for a run stopped by an input error after its folder was accepted; config.yaml written up front."""
    import sys

    import yaml

    from allo_lightning.errors import InputError
    from allo_lightning.records import record_run
    from allo_lightning.shell import command

    def body(cfg):
        record_run(cfg, tmp_path / cfg.get("tag"))
        print("step one")
        sys.stderr.write("progress 10%\rprogress 50%\rprogress 100%\n")
        if cfg.get("tag") == "bad":
            raise InputError("bad.tsv, line 3: no sequence.", todo="Give one.")
        return "done"

    main = command("fit", "test", sections=("model",),
                   flags=lambda p: p.add_argument("--tag", type=str, default="good"))(body)
    assert main(["--tag", "good", "--model.theta", "0.25"]) == "done"
    log = (tmp_path / "good" / "run.log").read_text()
    assert log.splitlines()[0] == "# allo_lightning fit --tag good --model.theta 0.25"
    assert log.splitlines()[1].endswith(": finished")
    assert "step one\nprogress 100%\n" in log and "progress 50%" not in log
    assert yaml.safe_load((tmp_path / "good" / "config.yaml").read_text())["model"]["theta"] == 0.25
    with pytest.raises(SystemExit) as e:
        main(["--tag", "bad"])
    assert e.value.code == 2
    log = (tmp_path / "bad" / "run.log").read_text()
    assert log.splitlines()[1].endswith(": exited with status 2") and "error: bad.tsv, line 3: no sequence." in log


def test_a_handler_made_during_a_run_writes_to_the_current_stream_afterwards(monkeypatch):
    """A logging handler made while run.log was being captured (Lightning makes them) keeps the capture's
    stream; after the run it must write to the stream of now, not to the run's (closed in tests, stale in a
    notebook) nor into the finished run's buffer."""
    import io
    import logging
    import sys

    from allo_lightning.records import capture

    during = io.StringIO()
    monkeypatch.setattr(sys, "stderr", during)
    with capture([]):
        handler = logging.StreamHandler()  # binds sys.stderr: the capture's tee
    tee = handler.stream
    during.close()
    after = io.StringIO()
    monkeypatch.setattr(sys, "stderr", after)
    logger = logging.getLogger("allo_lightning.test_detached_tee")
    logger.addHandler(handler)
    try:
        logger.warning("after the run")
    finally:
        logger.removeHandler(handler)
    assert after.getvalue() == "after the run\n" and tee._buffer is None


@pytest.mark.parametrize("files, args, phrase", [
    ((), ["predict"], "no predictions.csv, so not an output folder of predict"),  # was a FileNotFoundError traceback
    ((), ["bogus"], "unknown command 'bogus': give one of predict"),  # was "no outputs found"
    ((), [], "no outputs of predict, heads, fit, evaluate or report found"),
    ((), ["fit", "x"], "unexpected argument 'x'"),
    (("predictions.csv",), ["predict"], "predictions.json: No such file or directory"),  # was a traceback
    (("heads.csv", "heads.json"), ["heads"], "heads.csv, line 2: not a readable table"),  # csv.Error traceback
])
def test_html_rebuild_refusals_are_one_line(tmp_path, capsys, files, args, phrase):
    """``python -m allo_lightning.html DIR [COMMAND]``: each misuse is one ``error:`` line, exit 2."""
    from allo_lightning.html.__main__ import main

    for name in files:
        (tmp_path / name).write_text({"heads.csv": 'layer,head\n0,"1\n', "heads.json": "{}"}.get(name, "id,position\n"))
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and phrase in err, err
    assert not (tmp_path / "report.html").exists()


# -- planted survivors (a mutation run on records.py and the page rebuild, issue 19) -------------------------

def test_run_log_of_a_bug_keeps_its_traceback_and_no_colour_codes(tmp_path):
    """run.log of a run that ends in a bug has the traceback; terminal colour codes are removed."""
    from allo_lightning.records import record_run
    from allo_lightning.shell import command

    def body(cfg):
        record_run(cfg, tmp_path)
        print("\x1b[1;31mwarning\x1b[0m in colour")
        raise KeyError("a bug")

    main = command("fit", "test", sections=("model",))(body)
    with pytest.raises(BaseException):  # noqa: B017 - whatever the shell makes of a bug, run.log has it
        main([])
    log = (tmp_path / "run.log").read_text()
    assert "warning in colour" in log and "\x1b" not in log, log
    assert "Traceback" in log and "KeyError: 'a bug'" in log, log


def test_only_rank_zero_writes_the_run_records(tmp_path, monkeypatch):
    """config.yaml and run.log are written by rank zero only (another rank's would replace them)."""
    from allo_lightning import distributed
    from allo_lightning.heads import main as heads_main
    from allo_lightning.records import capture, record_run
    from allo_lightning.shell import parse

    cfg = parse(heads_main.spec, ["--config", "configs/smoke.yaml"])
    for key in distributed.RANK_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with capture(["other rank"]):
        record_run(cfg, tmp_path)
        print("rank one")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("LOCAL_RANK", "0")  # negative control
    with capture(["rank zero"]):
        record_run(cfg, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "run.log"]


def test_a_capture_inside_a_command_keeps_the_commands_run_log(tmp_path):
    """A command run from inside another one's capture (the Python API): the outer run.log is still written."""
    from allo_lightning.heads import main as heads_main
    from allo_lightning.records import capture, record_run
    from allo_lightning.shell import parse

    cfg = parse(heads_main.spec, ["--config", "configs/smoke.yaml"])
    with capture(["outer"]):
        record_run(cfg, tmp_path)
        with capture(["inner"]):
            print("inner line")
        print("outer line")
    log = (tmp_path / "run.log").read_text()
    assert log.startswith("# allo_lightning heads outer") and "outer line" in log, log


def test_html_rebuild_tells_fit_from_evaluate(tmp_path, capsys, monkeypatch):
    """A folder with metrics.json is fit's when it has a training_log or test_scores.csv (a fit without a test
    split has no test_scores.csv), else evaluate's."""
    import allo_lightning.html.__main__ as rebuild

    monkeypatch.setattr(rebuild, "write_report", lambda out, command: command)
    for files, command in ((["training_log/"], "fit"), (["test_scores.csv"], "fit"),
                           (["training_log/", "test_scores.csv"], "fit"), ([], "evaluate")):
        out = tmp_path / "-".join(files or ["none"]).replace("/", "")
        out.mkdir()
        (out / "metrics.json").write_text("{}")
        for f in files:
            (out / f).mkdir() if f.endswith("/") else (out / f).write_text("")
        rebuild.main([str(out)])
        assert capsys.readouterr().out.strip() == command, files


def test_a_page_is_rebuilt_again_without_a_manifest(tmp_path, capsys):
    """Rebuilding the page of a folder whose manifest is gone (an older run, or outputs copied with ``cp -r
    out/*``, which leaves hidden files behind): the page files there are replaced, not refused as a user's."""
    from allo_lightning.html.__main__ import main

    out = tmp_path / "old"
    synthetic_predict(out, ["P1", "P2"])
    for _ in range(2):
        for manifest in out.glob(".allo_lightning.*.files.json"):
            manifest.unlink()
        main([str(out)])
        assert capsys.readouterr().out.strip().endswith("report.html")


def test_html_rebuild_usage_and_a_missing_folder(tmp_path, capsys):
    """No argument printed the module docstring (reST backticks) on stdout with exit 2 and no error line; a
    folder that does not exist was called a folder with "no outputs"."""
    from allo_lightning.html.__main__ import main

    for args, phrase in (([], "give the output folder of a command"),
                         ([str(tmp_path / "nope")], "nope: no such folder")):
        with pytest.raises(SystemExit) as e:
            main(args)
        out, err = capsys.readouterr()
        assert e.value.code == 2 and not out and err.startswith("error: ") and err.count("\n") == 1, (out, err)
        assert phrase in err, err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out, err = capsys.readouterr()
    assert e.value.code == 0 and out.startswith("usage: python -m allo_lightning.html DIR [COMMAND]") and not err
    assert "``" not in out


def test_a_page_shows_its_own_commands_settings_in_a_shared_folder(tmp_path):
    """heads run into fit's folder (outputs/smoke) replaces config.yaml and run.log with its own: fit's page, rebuilt
    (python -m allo_lightning.html outputs/smoke fit), shows fit's settings from metrics.json and links no record
    of another command. Before, it showed heads's config.yaml as fit's settings and linked it for replay."""
    out = tmp_path / "smoke"
    out.mkdir()
    fit_config = {"probe": {"max_epochs": 4321}, "seed": 0}
    (out / "metrics.json").write_text(json.dumps({
        "auprc": 0.5, "auroc": 0.6, "base_rate": 0.1, "threshold": 0.4, "heads": ["L0H1"], "n_proteins": {"train": 1},
        "backbone": "tiny", "backbone_identity": "tiny", "meaningless": True, "note": NOTE, "config": fit_config,
        "epochs": 3, "best_epoch": 1, "val": {"auprc": 0.4}}))
    (out / "config.yaml").write_text("# allo_lightning heads: every setting of this run. Replay it with\n"
                                     "#   allo-lightning heads --config smoke/config.yaml\nheads:\n  top_k: 8765\n")
    (out / "run.log").write_text("# allo_lightning heads --config configs/smoke.yaml\n# started ...\n")
    text = write_report(out, "fit").read_text()
    assert "4321" in text and "8765" not in text
    assert "href='config.yaml'" not in text and "href='run.log'" not in text
    (out / "config.yaml").write_text("# allo_lightning fit: every setting of this run. Replay it with\n"
                                     "#   allo-lightning fit --config smoke/config.yaml\nprobe:\n  max_epochs: 1234\n")
    (out / "run.log").write_text("# allo_lightning fit --config configs/smoke.yaml\n# started ...\n")
    text = write_report(out, "fit").read_text()  # its own records: read and linked
    assert "1234" in text and "href='config.yaml'" in text and "href='run.log'" in text
