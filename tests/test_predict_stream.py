"""Streaming predict: rows written as proteins finish, a stopped run resumed to the rows of an uninterrupted
one, per-protein files only for the top proteins (--per_protein)."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import pytest

from allo_lightning import fit, predict
from allo_lightning.errors import Interrupted

from .conftest import common, random_proteins, write_table


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    table = write_table(tmp / "train.tsv", random_proteins(10, lo=30, hi=50, seed=5))
    with contextlib.redirect_stdout(io.StringIO()):
        fit.main(common(tmp, table) + ["--trainer.default_root_dir", str(tmp / "run"),
                                       "--checkpoint", str(tmp / "probe.safetensors")])
    fasta = tmp / "new.fasta"
    fasta.write_text("".join(f">N{i}\n{p.sequence}\n" for i, p in enumerate(random_proteins(12, 20, 45, seed=9))))
    return tmp, fasta


def _args(tmp, fasta, out, *extra):
    return ["--checkpoint", str(tmp / "probe.safetensors"), "--fasta", str(fasta), "--out", str(out),
            "--model.cache_dir", str(tmp / "cache"), "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", *extra]


def _json(path):
    info = json.loads(path.read_text())
    for key in ("seconds", "resumed_after"):
        info.pop(key)
    return info


def test_stopped_run_resumes_to_the_rows_of_an_uninterrupted_run(setup, monkeypatch, capsys):
    tmp, fasta = setup
    predict.main(_args(tmp, fasta, tmp / "whole", "--per_protein", "3"))

    # stop the run while it writes the 5th protein: 4 whole proteins and half of one are on disk
    original, calls = predict.rows_text, []

    def stopping(header, rows):  # call 1 writes the header, call k + 1 the rows of protein k
        calls.append(1)
        if len(calls) == 6:
            text = original(header, rows)
            return text[: len(text) // 2]
        if len(calls) == 7:
            raise Interrupted("interrupted by SIGTERM")
        return original(header, rows)

    monkeypatch.setattr(predict, "rows_text", stopping)
    with pytest.raises(SystemExit) as e:
        predict.main(_args(tmp, fasta, tmp / "stopped", "--per_protein", "3"))
    assert e.value.code != 0
    out = tmp / "stopped"
    assert not (out / "predictions.csv").exists()  # a stopped run is not mistaken for a finished one
    assert (out / predict.PARTIAL).read_bytes().count(b"\r\n") > 1 + 4 * 20  # 4 whole proteins (>= 20 residues)
    monkeypatch.setattr(predict, "rows_text", original)
    capsys.readouterr()
    settings = (out / (predict.PARTIAL + ".json")).read_bytes()

    predict.main(_args(tmp, fasta, out, "--per_protein", "3"))  # the same command again: resumes
    printed = capsys.readouterr().out
    assert "resuming: 4 of 12 proteins" in printed, printed
    for name in ("predictions.csv", "proteins.csv"):
        assert (out / name).read_bytes() == (tmp / "whole" / name).read_bytes(), name
    assert _json(out / "predictions.json") == _json(tmp / "whole" / "predictions.json")
    assert json.loads((out / "predictions.json").read_text())["resumed_after"] == 4
    assert not (out / predict.PARTIAL).exists() and not (out / (predict.PARTIAL + ".json")).exists()
    scripts = sorted(p.name for p in (tmp / "whole" / "pymol").iterdir())
    assert len(scripts) == 3 and sorted(p.name for p in (out / "pymol").iterdir()) == scripts

    # stopped after the last cell of a protein, before its line break: that row is not whole, it is redone
    whole = (tmp / "whole" / "predictions.csv").read_bytes()
    lines = whole.split(b"\r\n")
    n_rows = 1 + sum(1 for line in lines[1:] if line.startswith((b"N0,", b"N1,", b"N2,")))
    (out / "predictions.csv").unlink()
    (out / predict.PARTIAL).write_bytes(b"\r\n".join(lines[:n_rows]))  # no final line break
    (out / (predict.PARTIAL + ".json")).write_bytes(settings)
    predict.main(_args(tmp, fasta, out, "--per_protein", "3"))
    assert "resuming: 2 of 12 proteins" in capsys.readouterr().out
    assert (out / "predictions.csv").read_bytes() == whole


def test_partial_rows_of_other_settings_are_not_resumed(setup, capsys):
    tmp, fasta = setup
    out = tmp / "other"
    predict.main(_args(tmp, fasta, out, "--per_protein", "0"))
    whole = (out / "predictions.csv").read_bytes()
    # an unfinished run of another FASTA left its rows: they must not be taken over
    (out / "predictions.csv").rename(out / predict.PARTIAL)
    (out / (predict.PARTIAL + ".json")).write_text(json.dumps({"fasta": "something else"}))
    predict.main(_args(tmp, fasta, out, "--per_protein", "0"))
    assert "starting over" in capsys.readouterr().out
    assert (out / "predictions.csv").read_bytes() == whole


def test_per_protein_files_only_for_the_best_proteins(setup):
    tmp, fasta = setup
    out = tmp / "top"
    info = predict.main(_args(tmp, fasta, out, "--per_protein", "3"))
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    best: dict[str, float] = {}
    for r in rows:
        best[r["id"]] = max(best.get(r["id"], -1.0), float(r["score"]))
    assert len(best) == 12
    ranked = sorted(best, key=lambda pid: (-best[pid], int(pid[1:])))
    assert sorted(info["file_names"]) == sorted(ranked[:3])
    assert sorted(p.stem for p in (out / "pymol").iterdir()) == sorted(ranked[:3])
    assert sorted(p.stem for p in (out / "plots").iterdir()) == sorted(ranked[:3])
    table = {r["id"]: r for r in csv.DictReader((out / "proteins.csv").open())}
    assert [table[pid]["protein_rank"] for pid in ranked] == [str(k) for k in range(1, 13)]
    assert all(float(table[pid]["best_score"]) == pytest.approx(best[pid], abs=1e-6) for pid in best)
    assert {pid for pid, r in table.items() if r["files"]} == set(ranked[:3])
    none = predict.main(_args(tmp, fasta, tmp / "none", "--per_protein", "0"))
    assert none["file_names"] == {} and not (tmp / "none" / "pymol").exists()
    assert (tmp / "none" / "predictions.csv").read_bytes() == (out / "predictions.csv").read_bytes()


def test_per_protein_all_and_a_negative_number(setup, capsys):
    tmp, fasta = setup
    info = predict.main(_args(tmp, fasta, tmp / "all", "--per_protein", "all", "--plots", "false"))
    assert len(info["file_names"]) == 12 and len(list((tmp / "all" / "pymol").iterdir())) == 12
    with pytest.raises(SystemExit) as e:
        predict.main(_args(tmp, fasta, tmp / "negative", "--per_protein", "-1"))
    assert e.value.code == 2 and "--per_protein" in capsys.readouterr().err
    assert not (tmp / "negative").exists()


# -- planted survivors (a mutation run on predict's streaming writer and resume, issue 19) --------------------

def test_a_score_equal_to_the_threshold_is_predicted(setup, monkeypatch):
    """predicted = score >= threshold (as predictions.json says), also for a score exactly at the threshold,
    in predictions.csv and in the counts of proteins.csv."""
    import numpy as np

    from allo_lightning import pipeline

    tmp, fasta = setup
    predict.main(_args(tmp, fasta, tmp / "thr0", "--per_protein", "0"))
    scores = [float(r["score"]) for r in csv.DictReader((tmp / "thr0" / "predictions.csv").open())]
    threshold = float(np.float32(sorted(scores)[len(scores) // 2]))  # a score of the run, exactly (float32)
    load = pipeline.load_probe_checkpoint

    def at_a_score(cfg, command):
        ckpt = load(cfg, command)
        ckpt.threshold = threshold
        return ckpt

    monkeypatch.setattr(pipeline, "load_probe_checkpoint", at_a_score)
    out = tmp / "thr"
    info = predict.main(_args(tmp, fasta, out, "--per_protein", "0"))
    assert info["threshold"] == threshold
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert any(float(np.float32(r["score"])) == threshold for r in rows)
    for r in rows:
        assert r["predicted"] == str(int(float(np.float32(r["score"])) >= threshold)), r
    counts = {r["id"]: int(r["predicted"]) for r in csv.DictReader((out / "proteins.csv").open())}
    assert counts == {pid: sum(int(r["predicted"]) for r in rows if r["id"] == pid) for pid in counts}


def test_rows_of_another_checkpoint_are_not_resumed(setup, monkeypatch, capsys):
    """A run stopped with one checkpoint, then the same command with a re-fitted checkpoint in the same place:
    the rows of the old checkpoint are not taken over (the resume is bound to the checkpoint's bytes)."""
    tmp, fasta = setup
    refit = tmp / "refit"
    refit.mkdir()
    ckpt = refit / "probe.safetensors"
    ckpt.write_bytes((tmp / "probe.safetensors").read_bytes())
    original, calls = predict.rows_text, []

    def stopping(header, rows):
        calls.append(1)
        if len(calls) == 4:  # after the header and 2 proteins
            raise Interrupted("interrupted by SIGTERM")
        return original(header, rows)

    args = _args(tmp, fasta, tmp / "ck", "--per_protein", "0")
    args[args.index("--checkpoint") + 1] = str(ckpt)
    monkeypatch.setattr(predict, "rows_text", stopping)
    with pytest.raises(SystemExit):
        predict.main(args)
    monkeypatch.setattr(predict, "rows_text", original)
    table = write_table(tmp / "refit.tsv", random_proteins(10, lo=30, hi=50, seed=6))  # other training proteins
    with contextlib.redirect_stdout(io.StringIO()):
        fit.main(common(tmp, table) + ["--trainer.default_root_dir", str(refit / "run"), "--checkpoint", str(ckpt),
                                       "--overwrite"])
    capsys.readouterr()
    predict.main(args)
    assert "starting over" in capsys.readouterr().out
    whole = list(args)
    whole[whole.index("--out") + 1] = str(tmp / "ck_whole")
    predict.main(whole)
    assert (tmp / "ck" / "predictions.csv").read_bytes() == (tmp / "ck_whole" / "predictions.csv").read_bytes()


def test_resumed_rows_are_bound_to_every_setting_they_depend_on(setup):
    """What a partial file is resumed under (predict._settings) changes with each setting the rows depend on:
    the checkpoint's and proteins' bytes, the structure options, the long-protein policy, the model settings."""
    from types import SimpleNamespace

    tmp, fasta = setup
    values = {"fasta": str(fasta), "structure": None, "chain": None, "min_identity": 0.9, "min_coverage": 0.1,
              "data.long": "window"}
    model = {"dtype": "fp32", "max_tokens": None, "bucket": True, "window_overlap": 256}

    def settings(ckpt=tmp / "probe.safetensors", **changes):
        v = {**values, **{k.replace("__", "."): x for k, x in changes.items() if k.replace("__", ".") in values}}
        m = {**model, **{k: x for k, x in changes.items() if k in model}}
        cfg = SimpleNamespace(get=lambda k, d=None: v.get(k, d), model=SimpleNamespace(**m))
        return predict._settings(cfg, SimpleNamespace(path=ckpt), ["id", "score"])

    other = tmp / "other.fasta"
    other.write_text(fasta.read_text() + ">extra\nMKV\n")
    base = settings()
    assert settings() == base
    for change in ({"ckpt": tmp / "refit_or_not.safetensors"}, {"fasta": str(other)}, {"structure": "x.pdb"},
                   {"chain": "B"}, {"min_identity": 0.5}, {"min_coverage": 0.5}, {"data__long": "skip"},
                   {"dtype": "bf16"}, {"max_tokens": 1000}, {"bucket": False}, {"window_overlap": 64}):
        if "ckpt" in change:
            change["ckpt"].write_bytes((tmp / "probe.safetensors").read_bytes() + b" ")
        assert settings(**change) != base, change


@pytest.mark.slow
def test_killed_process_resumes_to_the_rows_of_an_uninterrupted_run(setup, tmp_path):
    """A real process killed (SIGKILL: no clean-up at all) while it writes rows, then the same command again."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    tmp, _ = setup
    fasta = tmp_path / "many.fasta"
    fasta.write_text("".join(f">K{i}\n{p.sequence}\n" for i, p in enumerate(random_proteins(300, 20, 40, seed=3))))
    with contextlib.redirect_stdout(io.StringIO()):
        predict.main(_args(tmp, fasta, tmp_path / "whole", "--per_protein", "2"))  # also fills the cache
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "allo_lightning.predict",
           *_args(tmp, fasta, tmp_path / "killed", "--per_protein", "2")]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    partial = tmp_path / "killed" / predict.PARTIAL
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and (not partial.exists() or partial.stat().st_size < 3000):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert partial.exists() and not (tmp_path / "killed" / "predictions.csv").exists()
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "resuming:" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    for name in ("predictions.csv", "proteins.csv"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


@pytest.mark.parametrize("column", [1, 2], ids=["position", "residue"])
def test_a_partial_row_that_does_not_match_its_protein_ends_the_resumed_prefix(setup, monkeypatch, capsys, column):
    """The partial rows of the same settings, one of protein N1's rows altered (its position or its residue, as a
    damaged file or an edit would): resuming keeps N0 only, and the rows end as those of an uninterrupted run
    (planted survivors of a mutation run: without the position and residue checks N1's altered row was kept)."""
    tmp, fasta = setup
    out = tmp / f"altered-{column}"
    predict.main(_args(tmp, fasta, out, "--per_protein", "0"))
    whole = (out / "predictions.csv").read_bytes()
    (out / "predictions.csv").unlink()

    def stopped(src, dst):  # every row written, stopped before the rename: the partial rows and settings stay
        raise Interrupted("interrupted by SIGTERM")

    monkeypatch.setattr(predict, "publish", stopped)
    with pytest.raises(SystemExit):
        predict.main(_args(tmp, fasta, out, "--per_protein", "0", "--overwrite"))
    monkeypatch.undo()
    lines = (out / predict.PARTIAL).read_bytes().split(b"\r\n")
    i = next(k for k, line in enumerate(lines) if line.startswith(b"N1,")) + 1  # N1's second row
    cells = lines[i].split(b",")
    cells[column] = b"99" if column == 1 else (b"W" if cells[2] != b"W" else b"Y")
    lines[i] = b",".join(cells)
    (out / predict.PARTIAL).write_bytes(b"\r\n".join(lines))
    capsys.readouterr()
    predict.main(_args(tmp, fasta, out, "--per_protein", "0"))
    assert "resuming: 1 of 12 proteins" in capsys.readouterr().out
    assert (out / "predictions.csv").read_bytes() == whole
