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


def test_a_refused_input_leaves_no_output_folder_behind(tmp_path, capsys):
    """A bad input refused after the output folder was made (and locked) left that folder, holding only the
    hidden lock file, and the parents made for it; a folder that was there before stays."""
    bad = tmp_path / "bad.fasta"
    bad.write_text(">q1\nMKTAYJAK\n")
    out = tmp_path / "new" / "deeper" / "out"
    _refused(capsys, _args(tmp_path, bad, out), "bad.fasta, line 1", "unknown residue letter")
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    _refused(capsys, _args(tmp_path, bad, mine / "sub"), "unknown residue letter")
    assert (mine / "sub").is_dir() and not outputs._MADE


def test_a_refused_fit_leaves_no_empty_checkpoint_folder(tmp_path, capsys):
    """fit made the checkpoint folder (to check it is writable) before reading the table: a refused table
    left it empty. The output folder keeps the run's record of the error (run.log)."""
    from allo_lightning import fit

    from .conftest import common

    table = tmp_path / "t.tsv"
    table.write_text("id\tsequence\tsites\nA\tMKTAYJAK\t2\n")
    refused(capsys, fit.main, common(tmp_path, table) + ["--trainer.default_root_dir", str(tmp_path / "run"),
            "--probe.checkpoint_dir", str(tmp_path / "ck" / "new")], "t.tsv, line 2", "unknown residue letter")
    assert not (tmp_path / "ck").exists() and "unknown residue letter" in (tmp_path / "run" / "run.log").read_text()


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


# -- every command declares what it writes and claims it once, before the backbone (outputs.claim_out_files) --

def _command_args(tmp_path, command: str, out) -> tuple:
    """(main, flags) of a small run of ``command`` into ``out`` on the tiny backbone."""
    from allo_lightning import evaluate, extract, fit, heads, report

    from .conftest import common, random_proteins, write_table

    if command == "evaluate":  # the golden checkpoint on its own labelled proteins: no fit needed
        table = tmp_path / "golden.tsv"
        if not table.exists():
            table.write_text("id\tsequence\tsites\n" + "".join(f"{k}\t{s}\t3,4,5,11\n" for k, s in SEQUENCES.items()))
        return evaluate.main, ["--checkpoint", str(CHECKPOINT), "--data.path", str(table), "--model.cache_dir",
                               str(tmp_path / "cache"), "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar",
                               "false", "--trainer.default_root_dir", str(out), "--bootstrap", "20", "--plots", "false"]
    table = tmp_path / "train.tsv"
    if not table.exists():
        write_table(table, random_proteins(8, lo=25, hi=40, seed=3))
    flags = common(tmp_path, table) + ["--trainer.default_root_dir", str(out), "--heads.n_permutations", "20"]
    if command == "heads":  # no probe
        return heads.main, [f for i, f in enumerate(flags) if not (f.startswith("--probe.") or
                                                                   flags[i - 1].startswith("--probe."))] \
            + ["--heads.plot_proteins", "1"]
    if command == "extract":
        other = ("--probe.", "--heads.")  # sections extract does not take
        return extract.main, [f for i, f in enumerate(flags) if not (f.startswith(other)
                                                                     or flags[i - 1].startswith(other))]
    if command == "fit":
        return fit.main, flags + ["--probe.checkpoint_dir", str(tmp_path / "ckpt"), "--probe.max_epochs", "2"]
    # report: refused, or stopped at the backbone (a whole run is in the slow set)
    return report.main, flags + ["--report.folds", "2", "--report.max_epochs", "1", "--report.train_sizes", "[2]",
                                 "--report.ks", "[1]", "--report.n_boot", "100", "--report.embeddings", "false"]


def _no_backbone(monkeypatch):
    import allo_lightning.pipeline as pipeline

    def boom(*a, **k):
        raise AssertionError("a backbone was loaded before the refusal")

    monkeypatch.setattr(pipeline, "load_backbone", boom)
    monkeypatch.setattr(pipeline, "load_checkpoint_backbone", boom)


# a folder on the way to a file each command writes: the probe's training log, the page's files
LINKS = {"heads": "report_files", "fit": "training_log", "evaluate": "report_files", "report": "report_files",
         "extract": "run.log"}
# a file of the user's at a fixed name each command writes
MINE = {"heads": "attention_to_sites.csv", "fit": "training_log/metrics.csv", "evaluate": "scores.csv",
        "report": "config.yaml", "extract": "run.log"}  # extract replaced a user's run.log (its check was links-only)


@pytest.mark.parametrize("command", list(LINKS))
def test_no_command_writes_through_a_link_planted_in_its_output_folder(tmp_path, capsys, monkeypatch, command):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / LINKS[command]).symlink_to(elsewhere)
    _no_backbone(monkeypatch)
    main, args = _command_args(tmp_path, command, out)
    for extra in ((), ("--overwrite",)):
        refused(capsys, main, args + list(extra), str(out / LINKS[command]), "symbolic link")
    assert list(elsewhere.iterdir()) == []
    # nothing written (the folder's lock file aside: extract takes none)
    assert sorted(p.name for p in out.iterdir() if p.name != outputs.LOCK_NAME) == [LINKS[command]]


@pytest.mark.parametrize("command", list(MINE))
def test_no_command_replaces_a_users_own_file_without_overwrite(tmp_path, capsys, monkeypatch, command):
    out = tmp_path / "out"
    mine = out / MINE[command]
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own\x00 data\n")
    with monkeypatch.context() as m:
        _no_backbone(m)
        main, args = _command_args(tmp_path, command, out)
        refused(capsys, main, args, str(mine), "not written by an earlier run", "--overwrite")
    assert mine.read_bytes() == b"my own\x00 data\n"
    assert not (out / "config.yaml").exists() or command == "report"
    if command != "report":  # quick: a whole run, then again into the same folder
        main(args + ["--overwrite"])
        assert mine.read_bytes() != b"my own\x00 data\n"
        main(args + ["--overwrite"])
    else:  # report (slow): --overwrite passes the claim (the run goes on to load the backbone)
        import allo_lightning.pipeline as pipeline

        class Loaded(Exception):
            pass

        def loaded(*a, **k):
            raise Loaded

        monkeypatch.setattr(pipeline, "load_backbone", loaded)
        with pytest.raises(Loaded):
            main(args + ["--overwrite"])
        assert (out / "config.yaml").read_text().startswith(f"# allo_lightning {command}")


def test_files_of_an_earlier_run_here_need_no_overwrite(tmp_path, capsys, monkeypatch, fasta):
    """What the claim must not refuse: commands sharing one folder (the smoke quick start runs heads, fit and
    report into outputs/smoke: config.yaml, run.log and report.html are everyone's), and the files an
    unfinished run recorded in its manifest (replaced by the next run without --overwrite); a finished run is
    still replaced only with --overwrite. predict declares its fixed files too (a user's proteins.csv stays)."""
    import allo_lightning.pipeline as pipeline

    out = tmp_path / "out"
    heads_main, heads_args = _command_args(tmp_path, "heads", out)
    heads_main(heads_args)
    fit_main, fit_args = _command_args(tmp_path, "fit", out)

    class Stopped(Exception):
        pass

    def stop(*a, **k):
        raise Stopped  # an unfinished fit: after its claim, before its results

    with monkeypatch.context() as m:
        m.setattr(pipeline, "load_backbone", stop)
        with pytest.raises(Stopped):
            fit_main(fit_args)
    (out / "training_log").mkdir()
    (out / "training_log" / "metrics.csv").write_text("epoch\n0\n")  # as the unfinished run left it
    fit_main(fit_args)  # no --overwrite needed: heads' files and the unfinished fit's are this tool's
    assert (out / "heads.csv").is_file() and (out / "metrics.json").is_file()
    assert (out / "training_log" / "metrics.csv").read_text() != "epoch\n0\n"
    capsys.readouterr()
    refused(capsys, fit_main, fit_args, str(out / "metrics.json"), "already exists", "--overwrite")
    mine = tmp_path / "pred" / "proteins.csv"
    mine.parent.mkdir()
    mine.write_text("mine\n")
    _refused(capsys, _args(tmp_path, fasta, mine.parent), str(mine), "not written by an earlier run")
    assert mine.read_text() == "mine\n"


def test_rebuilding_a_page_writes_nothing_through_a_planted_link(tmp_path, capsys):
    """python -m allo_lightning.html DIR: report.js is not written through report_files -> elsewhere."""
    from allo_lightning.html.__main__ import main as html_main

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "heads.csv").write_text("layer,head\n")
    (out / "heads.json").write_text("{}\n")
    (out / "report_files").symlink_to(elsewhere)
    refused(capsys, html_main, [str(out), "heads"], str(out / "report_files"), "symbolic link")
    assert list(elsewhere.iterdir()) == [] and not (out / "report.html").exists()
