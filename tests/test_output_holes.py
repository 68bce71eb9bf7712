"""Output folders under attack (outputs.py, predict): a user's own file where a per-protein file would go, a
folder replaced by a link to elsewhere, two runs into one folder at once, ``--top -1``, a full disk, and
messages naming the flags predict has (issue 19, holes found by the adversarial run). Predict runs with the
golden checkpoint (tests/data, tiny backbone): no fit needed."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from allo_lightning import outputs, predict

from .conftest import REPO
from .golden import CHECKPOINT, SEQUENCES
from .test_shell import refused


@pytest.fixture
def fasta(tmp_path):
    path = tmp_path / "new.fasta"
    path.write_text("".join(f">Z{i}\n{s}\n" for i, s in enumerate(SEQUENCES.values(), start=1)))
    return path


def _args(tmp_path, fasta, out, *extra):
    return ["--checkpoint", str(CHECKPOINT), "--fasta", str(fasta), "--out", str(out),
            "--model.cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--plots", "false", *extra]


def _refused(capsys, args, *phrases) -> str:
    """test_shell's one-line refusal check, for predict."""
    return refused(capsys, predict.main, args, *phrases)


def _no_work(tmp_path, out):
    assert not list((tmp_path / "cache").rglob("*.safetensors")), "the backbone ran before the refusal"
    assert not (out / "predictions.csv").exists() and not (out / predict.PARTIAL).exists()


def test_a_users_own_file_where_a_per_protein_file_goes_is_not_replaced(tmp_path, fasta, capsys):
    out = tmp_path / "out"
    (out / "pymol").mkdir(parents=True)
    mine = out / "pymol" / "Z1.pml"
    mine.write_text("my own script\n")
    _refused(capsys, _args(tmp_path, fasta, out), str(mine), "not written by an earlier run", "--overwrite", "--out")
    assert mine.read_text() == "my own script\n"
    _no_work(tmp_path, out)
    predict.main(_args(tmp_path, fasta, out, "--per_protein", "0"))  # writes no per-protein file: fine
    assert mine.read_text() == "my own script\n"
    # a finished run's own per-protein files are replaced by the next run with --overwrite, without complaint
    mine.unlink()
    predict.main(_args(tmp_path, fasta, out, "--overwrite"))
    assert (out / "pymol" / "Z1.pml").read_text() != "my own script\n"
    predict.main(_args(tmp_path, fasta, out, "--overwrite"))


@pytest.mark.parametrize("link", ["pymol", "predictions.csv.partial"])
def test_nothing_is_written_through_a_link_planted_in_the_output_folder(tmp_path, fasta, capsys, link):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    target = elsewhere if link == "pymol" else elsewhere / "victim.csv"
    (out / link).symlink_to(target)
    for extra in ((), ("--overwrite",)):
        _refused(capsys, _args(tmp_path, fasta, out, *extra), str(out / link), "symbolic link")
    assert list(elsewhere.iterdir()) == []
    _no_work(tmp_path, out)


_HOLD = """
import sys, time
from allo_lightning.outputs import lock_out_dir
lock_out_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path, fasta, capsys):
    out = tmp_path / "out"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert other.stdout.readline().strip() == "locked"
        _refused(capsys, _args(tmp_path, fasta, out), "another run is writing into the output folder", str(out))
        _no_work(tmp_path, out)
    finally:
        other.kill()
        other.wait()
    predict.main(_args(tmp_path, fasta, out))  # the lock ends with the process that held it
    assert (out / "predictions.csv").exists()
    outputs.lock_out_dir(out)  # and a finished command released its own
    outputs.release_locks()


def test_two_lock_attempts_on_one_folder(tmp_path):
    """The lock is the OS's (flock on separate open files): a second holder is refused even in one process
    once the first registration is forgotten, and released by closing."""
    import fcntl
    import os

    outputs.lock_out_dir(tmp_path)
    fd = os.open(tmp_path / outputs.LOCK_NAME, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        outputs.release_locks()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
        with pytest.raises(outputs.OutputError, match="another run is writing"):
            outputs.lock_out_dir(tmp_path)
    finally:
        os.close(fd)
        outputs.release_locks()


def test_top_must_not_be_negative(tmp_path, fasta, capsys):
    _refused(capsys, _args(tmp_path, fasta, tmp_path / "out", "--top", "-1"), "--top", "0 or more")
    _no_work(tmp_path, tmp_path / "out")


def _full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["figure", "table", "rows"])
def test_a_full_disk_while_writing_outputs_is_one_line(tmp_path, fasta, capsys, monkeypatch, where):
    import matplotlib.figure

    from allo_lightning import tables

    if where == "figure":
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _full)
    elif where == "table":
        monkeypatch.setattr(tables, "_write", _full)
    else:  # a streamed row (an open file: the OS error names no file)
        monkeypatch.setattr(predict, "rows_text", lambda header, rows: _full() if rows != [header] else "x\n")
    out = tmp_path / "out"
    err = _refused(capsys, _args(tmp_path, fasta, out, "--plots", "true"), "No space left on device")
    if where == "figure":
        assert ".png: could not be written" in err
    elif where == "table":
        assert "sites.csv: could not be written" in err


def test_predict_messages_name_the_flags_the_user_gave(tmp_path, fasta, capsys):
    out = tmp_path / "out"
    predict.main(_args(tmp_path, fasta, out))
    capsys.readouterr()  # the run ends with the tiny backbone's warning on stderr
    err = _refused(capsys, _args(tmp_path, fasta, out), "already exists", "--out DIR")
    assert "default_root_dir" not in err
    missing = tmp_path / "nope.fasta"
    err = _refused(capsys, _args(tmp_path, missing, tmp_path / "o2"), str(missing), "file not found", "--fasta")
    assert "--data.path" not in err
    args = _args(tmp_path, missing, tmp_path / "o2")
    args[args.index("--fasta")] = "--data.path"
    _refused(capsys, args, "file not found", "--data.path")


def test_heads_refuses_a_users_map_file_and_a_planted_maps_link(tmp_path, capsys):
    from allo_lightning import heads as heads_cmd

    from .conftest import random_proteins, write_table

    proteins = random_proteins(3, lo=20, hi=30, seed=1)
    table = write_table(tmp_path / "t.tsv", proteins)
    out = tmp_path / "out"
    args = ["--model.backbone", "tiny", "--model.cache_dir", str(tmp_path / "cache"), "--data.path", str(table),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir",
            str(out), "--heads.n_permutations", "20", "--heads.plot_proteins", "2"]
    (out / "maps").mkdir(parents=True)
    mine = out / "maps" / f"{proteins[2].id}.png"  # may be plotted (the first 2 proteins kept by the analysis)
    mine.write_bytes(b"mine")
    with pytest.raises(SystemExit) as e:
        heads_cmd.main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and str(mine) in err and "not written by an earlier run" in err, err
    assert mine.read_bytes() == b"mine" and not list((tmp_path / "cache").rglob("*.safetensors"))
    mine.unlink()
    (out / "maps").rmdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "maps").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SystemExit) as e:
        heads_cmd.main(args + ["--overwrite"])
    assert e.value.code == 2 and "symbolic link" in capsys.readouterr().err
    assert list((tmp_path / "elsewhere").iterdir()) == []
