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
