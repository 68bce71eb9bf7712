"""What a cache entry is bound to (attention/cache.py): the window settings of a protein longer than the
context, the backbone's weights and dtype folder; old entries are recomputed; a full disk and a read-only
cache end in one line naming the cache folder (issue 19, holes found by the adversarial run)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from safetensors import SafetensorError

import allo_lightning.attention.cache as cache_mod
from allo_lightning import extract as extract_cmd
from allo_lightning.attention import StatsCache, extract
from allo_lightning.backbone import load_backbone
from allo_lightning.errors import OutputError
from tests.conftest import CPU, random_proteins, write_table

CONTEXT = 40  # the tiny backbone's context lowered, so that a 100-residue protein runs as windows


@pytest.fixture
def short_tiny():
    bb = load_backbone("tiny", seed=0)
    bb.max_length = CONTEXT
    return bb


def _same(a, b) -> bool:
    return all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("received", "count", "mass", "total"))


def test_an_entry_made_with_another_window_overlap_is_recomputed(short_tiny, tmp_path):
    """Overlap 8 and overlap 24 give other statistics for a windowed protein: an entry of one is never
    served for the other (the stored ``windows`` count alone did not tell them apart). A short protein's
    entry does not depend on the overlap and is reused."""
    long, short = random_proteins(2, lo=100, hi=100, seed=1)[0], random_proteins(1, lo=30, hi=30, seed=2)[0]
    first = extract([long, short], short_tiny, 0.3, str(tmp_path / "c"), CPU, window_overlap=8)
    s8 = first.stats(long)
    again = extract([long, short], short_tiny, 0.3, str(tmp_path / "c"), CPU, window_overlap=24)
    assert again.computed == [long.id]  # the windowed one only
    s24 = again.stats(long)
    fresh = extract([long], short_tiny, 0.3, str(tmp_path / "fresh"), CPU, window_overlap=24).stats(long)
    assert not _same(s8, fresh)  # the settings matter (else this test would prove nothing)
    assert _same(s24, fresh)
    assert extract([long], short_tiny, 0.3, str(tmp_path / "c"), CPU, window_overlap=24).computed == []


def test_entries_copied_into_another_backbones_or_dtypes_folder_are_recomputed(tiny, tmp_path):
    proteins = random_proteins(3, lo=15, hi=30, seed=4)
    root = tmp_path / "c"
    extract(proteins, tiny, 0.3, str(root), CPU)
    other = load_backbone("tiny", seed=1)  # another seed: other weights, another identity
    assert other.identity != tiny.identity
    shutil.copytree(root / tiny.identity, root / other.identity)
    shutil.copytree(root / tiny.identity, root / f"{tiny.identity}-bf16")
    assert all(StatsCache(root, tiny.identity, 0.3).complete(p.sequence) for p in proteins)
    assert not any(StatsCache(root, f"{tiny.identity}-bf16", 0.3).complete(p.sequence) for p in proteins)
    got = extract(proteins, other, 0.3, str(root), CPU)
    assert sorted(got.computed) == sorted(p.id for p in proteins)
    fresh = extract(proteins, other, 0.3, str(tmp_path / "fresh"), CPU)
    for p in proteins:
        assert _same(got.stats(p), fresh.stats(p))


def test_entries_of_the_previous_format_are_recomputed_not_refused(tiny, tmp_path, monkeypatch):
    proteins = random_proteins(2, lo=15, hi=30, seed=5)
    monkeypatch.setattr(cache_mod, "FORMAT", "2")
    monkeypatch.setattr(cache_mod, "entry_context", lambda kind, sha, length, theta=None, *a, **k:
                        f"allo_lightning.cache|2|{kind}|{sha}|{length}" + (f"|theta={theta!r}" if theta else ""))
    extract(proteins, tiny, 0.3, str(tmp_path), CPU)
    monkeypatch.undo()
    got = extract(proteins, tiny, 0.3, str(tmp_path), CPU)
    assert sorted(got.computed) == sorted(p.id for p in proteins)


FULL_DISK = ['Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })',
             # safetensors 0.4+ (seen on a real full disk, a 300 KiB tmpfs): the OS's words end in "(os error 28)"
             "Error while serializing: I/O error: No space left on device (os error 28)"]


@pytest.mark.parametrize("said", FULL_DISK)
def test_a_full_disk_while_writing_an_entry_is_one_line_naming_the_cache(tiny, tmp_path, monkeypatch, capsys, said):
    from tests.conftest import fake_stats

    def _full_disk(*a, **k):
        raise SafetensorError(said)

    monkeypatch.setattr(cache_mod, "save_file", _full_disk)
    p = random_proteins(1, lo=15, hi=20, seed=6)[0]
    with pytest.raises(OutputError, match=r"cache folder .*No space left on device"):  # written in place
        StatsCache(tmp_path / "c", "fake", 0.3).save(p.sequence, fake_stats(p))
    table = write_table(tmp_path / "t.tsv", random_proteins(3, lo=15, hi=30, seed=6))
    args = ["--model.backbone", "tiny", "--model.cache_dir", str(tmp_path / "cache"), "--data.path", str(table),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as e:  # and through the background writer and the command
        extract_cmd.main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert f"cache folder {tmp_path / 'cache'}" in err and "No space left on device" in err, err
    assert "SafetensorError" not in err and not list((tmp_path / "cache").rglob("*.safetensors"))


def _read_only(monkeypatch, folder):
    """A read-only folder. Tests run as root, for whom chmod does not stop writes, so every temporary file
    (the package's write probes and cache entries are all made by tempfile.mkstemp) is refused inside
    ``folder``, as the OS refuses it to another user after the chmod."""
    import tempfile

    folder.chmod(0o555)
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and str(dir).startswith(str(folder)):
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_a_read_only_cache_that_holds_every_entry_is_used(tmp_path, monkeypatch, capsys):
    proteins = random_proteins(4, lo=15, hi=30, seed=7)
    table = write_table(tmp_path / "t.tsv", proteins)
    cache = tmp_path / "cache"
    args = ["--model.backbone", "tiny", "--model.cache_dir", str(cache), "--data.path", str(table),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "out")]
    extract_cmd.main(args)
    before = sorted(p.name for p in cache.rglob("*"))
    try:
        _read_only(monkeypatch, cache)
        summary = extract_cmd.main(args)
        assert summary["from_cache"] == 4 and summary["computed"] == 0
        # one protein more: refused with one line naming the folder, before the backbone runs
        new = replace(random_proteins(1, lo=31, hi=35, seed=8)[0], id="NEW")
        more = write_table(tmp_path / "m.tsv", proteins + [new])
        args[args.index(str(table))] = str(more)
        capsys.readouterr()  # the runs above end with the tiny backbone's warning on stderr
        with pytest.raises(SystemExit) as e:
            extract_cmd.main(args)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and "\n" not in err and f"cache folder {cache} cannot be written" in err, err
        assert "1 of the 5 proteins are not in it" in err
    finally:
        cache.chmod(0o755)
    assert sorted(p.name for p in cache.rglob("*")) == before


# -- planted survivors (a mutation run on the cache, issue 19) -----------------------------------------------

def _stats(L: int, windows: int, heads=None) -> cache_mod.ProteinStats:
    g = torch.Generator().manual_seed(L)
    r = torch.rand(2, 3, L, generator=g)
    return cache_mod.ProteinStats(received=r, count=r.round(), mass=r * 2, total=r.sum(-1), windows=windows,
                                  heads=heads)


def test_a_windowed_entry_keeps_its_window_count(tmp_path):
    """Statistics read back from the cache say they were stitched from windows (``windows``, ``windowed``),
    as when computed: a full entry and a partial one (early exit)."""
    seq = "MKTAYIAKQRQISFVKSHFSRQ" * 3
    full = StatsCache(tmp_path, "tiny-x", 0.3, window=(CONTEXT, 8))
    full.save(seq, _stats(len(seq), 3))
    back = full.load(seq)
    assert back.windows == 3 and back.windowed
    heads = [(0, 1), (1, 2)]
    part = StatsCache(tmp_path, "tiny-y", 0.3, window=(CONTEXT, 8))
    part.save(seq, _stats(len(seq), 4, heads=heads))
    back = part.load(seq, heads=heads)
    assert back.partial and back.windows == 4 and back.windowed


def test_window_settings_are_bound_exactly_for_proteins_longer_than_the_context():
    """A protein of exactly the context's length is one window (its entry serves any overlap); one residue
    more is windowed (its entry is bound to the overlap)."""
    assert cache_mod.window_key(CONTEXT, (CONTEXT, 8)) == cache_mod.window_key(CONTEXT, (CONTEXT, 24)) == ""
    assert cache_mod.window_key(CONTEXT + 1, (CONTEXT, 8)) != cache_mod.window_key(CONTEXT + 1, (CONTEXT, 24))
    assert cache_mod.window_key(CONTEXT + 1, None) == ""


@pytest.mark.parametrize("value, expected", [("", None), ("  ", None), ("~/allo_x", "~/allo_x"),
                                             ("/tmp/allo_x", "/tmp/allo_x")])
def test_the_cache_variable_is_read_as_the_command_line_reads_it(monkeypatch, value, expected):
    """``ALLO_LIGHTNING_CACHE`` for the Python API (``extract(..., cache_dir=None)``): empty or blank counts as
    unset (never the current folder), ``~`` is expanded (never a literal ``./~`` folder); the same folder as
    the command line's (config.resolve_cache_dir). Was: '' -> '.', '~/x' -> './~/x'."""
    import os

    from allo_lightning.config import resolve_cache_dir

    monkeypatch.setenv("ALLO_LIGHTNING_CACHE", value)
    want = os.path.expanduser(expected or "~/.cache/allo_lightning")
    assert str(cache_mod.default_cache_dir()) == want == resolve_cache_dir(None)
    assert str(StatsCache(None, "tiny-x", 0.3).root) == want
