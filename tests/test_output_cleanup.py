"""The empty folders a failed command made are removed (outputs.release_locks(failed=True)), and nothing else
ever is: not a folder that was there before (also when named through ``..``), not one another run made or
holds at the same moment, not one replaced since by a link or by another folder."""

from __future__ import annotations

import fcntl
import os

import pytest

from allo_lightning import outputs


@pytest.fixture(autouse=True)
def _clean():
    yield
    outputs.release_locks()


def _fail():
    outputs.release_locks(failed=True)


def test_made_folders_are_removed_deepest_first(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    outputs.prepare_out_dir(out, False, "x.csv")
    outputs.check_writable_dir(tmp_path / "a" / "ck", "the checkpoint folder")
    _fail()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_there_before_stays_when_named_through_dotdot(tmp_path, monkeypatch):
    """``typo/../out`` with ``out`` there before (empty): ``typo`` was made, ``out`` was not. The made folder was
    taken as the outermost new one and the walk up from ``out`` never met it: ``out`` was removed, ``typo``
    left."""
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    outputs.prepare_out_dir("typo/../out", False, "x.csv")
    _fail()
    assert (tmp_path / "out").is_dir() and not (tmp_path / "typo").exists()


def test_a_folder_another_run_made_meanwhile_is_not_removed(tmp_path, monkeypatch):
    """Two runs into one new folder: the other makes it (and locks it) between this run's look and its mkdir.
    This run is refused; it must not remove the other run's folder and lock."""
    out = tmp_path / "out"
    real_mkdir, other = os.mkdir, {}

    def racing_mkdir(path, *a, **k):
        if os.fspath(path) == os.fspath(out) and not other:
            real_mkdir(out)
            other["fd"] = os.open(out / outputs.LOCK_NAME, os.O_RDWR | os.O_CREAT)
            fcntl.flock(other["fd"], fcntl.LOCK_EX | fcntl.LOCK_NB)
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", racing_mkdir)
    try:
        with pytest.raises(outputs.OutputError, match="another run is writing"):
            outputs.prepare_out_dir(out, False, "x.csv")
        _fail()
        assert (out / outputs.LOCK_NAME).exists()
        assert os.stat(out / outputs.LOCK_NAME).st_ino == os.fstat(other["fd"]).st_ino
    finally:
        os.close(other["fd"])


def test_a_run_that_takes_the_lock_as_it_is_released_keeps_its_folder(tmp_path, monkeypatch):
    """The lock was released before the folder was tidied: a run locking it at that moment had its lock file
    and folder removed under it."""
    out = tmp_path / "out"
    outputs.prepare_out_dir(out, False, "x.csv")
    real_close, other = os.close, {}

    def close_then_other_run_locks(fd):
        real_close(fd)
        if not other:
            try:
                other["fd"] = os.open(out / outputs.LOCK_NAME, os.O_RDWR | os.O_CREAT)
            except OSError:
                other["fd"] = None  # the folder is gone already: the other run makes its own
                return
            fcntl.flock(other["fd"], fcntl.LOCK_EX | fcntl.LOCK_NB)

    monkeypatch.setattr(os, "close", close_then_other_run_locks)
    _fail()
    monkeypatch.undo()
    if other.get("fd") is not None:
        try:
            assert (out / outputs.LOCK_NAME).exists()
            assert os.stat(out / outputs.LOCK_NAME).st_ino == os.fstat(other["fd"]).st_ino
        finally:
            os.close(other["fd"])


def test_a_lock_on_a_removed_lock_file_is_refused(tmp_path, monkeypatch):
    """The lock file removed (a failed run tidying its folder) between this run's open and its flock: the
    flock then holds a file no other run can see; refused instead of believed."""
    out = tmp_path / "out"
    out.mkdir()
    real_flock, done = fcntl.flock, []

    def removed_first(fd, op):
        if not done:
            done.append(1)
            (out / outputs.LOCK_NAME).unlink()
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", removed_first)
    try:
        outputs.lock_out_dir(out)
    except outputs.OutputError:
        return
    monkeypatch.undo()
    assert os.stat(out / outputs.LOCK_NAME).st_ino == os.fstat(outputs._LOCKS[str(out.resolve())]).st_ino


def test_a_made_folder_replaced_meanwhile_stays(tmp_path):
    """A made folder replaced before the end by a link to elsewhere: nothing is removed through the link (the
    old walk removed elsewhere/ck)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outputs.check_writable_dir(tmp_path / "made" / "ck", "the checkpoint folder")
    (tmp_path / "made" / "ck").rmdir()
    (tmp_path / "made").rmdir()
    (tmp_path / "made").symlink_to(elsewhere)
    (elsewhere / "ck").mkdir()
    _fail()
    assert (elsewhere / "ck").is_dir() and (tmp_path / "made").is_symlink()


def test_a_folder_with_anything_in_it_stays(tmp_path):
    out = tmp_path / "new" / "out"
    outputs.prepare_out_dir(out, False, "x.csv")
    (out / ".hidden").write_text("")
    _fail()
    assert (out / ".hidden").exists() and (out / outputs.LOCK_NAME).exists()


def test_other_ranks_and_successes_remove_nothing(tmp_path, monkeypatch):
    outputs.check_writable_dir(tmp_path / "ok", "x")
    outputs.release_locks(failed=False)
    assert (tmp_path / "ok").is_dir()
    monkeypatch.setenv("LOCAL_RANK", "1")
    outputs.check_writable_dir(tmp_path / "r1", "x")
    _fail()
    assert (tmp_path / "r1").is_dir() and not outputs._MADE


def test_a_folder_this_run_made_but_another_run_locked_first_stays(tmp_path):
    """This run made the folder, another run locked it before this one could: its lock (and folder) stay."""
    out = tmp_path / "out"
    outputs.check_writable_dir(out, "the output folder")
    fd = os.open(out / outputs.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(outputs.OutputError, match="another run is writing"):
            outputs.lock_out_dir(out)
        _fail()
        assert os.stat(out / outputs.LOCK_NAME).st_ino == os.fstat(fd).st_ino
    finally:
        os.close(fd)
