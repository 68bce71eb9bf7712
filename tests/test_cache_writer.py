"""Cache entries written on a background thread (attention/cache.py, BackgroundWriter): the queue is
bounded, drained before extract returns (or stops on an error or a signal), and a writer error reaches the
main thread as a clear error. Kill-and-resume with the background writer: tests/test_resume.py."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from allo_lightning.attention import StatsCache, extract
from allo_lightning.attention.cache import BackgroundWriter
from allo_lightning.errors import AlloError, OutputError
from tests.conftest import CPU, fake_stats, random_proteins


def test_extract_returns_only_when_every_entry_is_on_disk(tiny, tmp_path, monkeypatch):
    """A slow disk: writes lag far behind the backbone, yet every entry is complete when extract returns."""
    saved = StatsCache.save

    def slow_save(self, sequence, stats):
        time.sleep(0.05)
        saved(self, sequence, stats)

    monkeypatch.setattr(StatsCache, "save", slow_save)
    proteins = random_proteins(8, lo=15, hi=40, seed=2)
    got = extract(proteins, tiny, 0.3, str(tmp_path), CPU, max_tokens=60)
    assert sorted(got.computed) == sorted(p.id for p in proteins)
    assert all(got.cache.complete(p.sequence) for p in proteins)
    monkeypatch.setattr(StatsCache, "save", saved)
    for p, s in got:  # and they hold the statistics computed in place
        assert s.length == p.length


def test_writer_error_is_raised_in_the_main_thread_naming_the_protein(tiny, tmp_path, monkeypatch):
    saved = StatsCache.save
    proteins = random_proteins(6, lo=15, hi=40, seed=3)
    bad = proteins[3].sequence

    def failing_save(self, sequence, stats):
        if sequence == bad:
            raise OSError(28, "No space left on device")
        saved(self, sequence, stats)

    monkeypatch.setattr(StatsCache, "save", failing_save)
    with pytest.raises(OutputError, match=r"protein 'P3'.*No space left on device.*run the same command again"):
        extract(proteins, tiny, 0.3, str(tmp_path), CPU, max_tokens=1)
    cache = StatsCache(str(tmp_path), tiny.identity, 0.3)
    assert not cache.complete(bad)
    assert any(cache.complete(p.sequence) for p in proteins[:3]) or any(
        cache.complete(p.sequence) for p in proteins[4:])  # proteins written before the error are kept


def test_queue_is_bounded_and_close_drains_it(tmp_path):
    cache = StatsCache(str(tmp_path), "fake-backbone", 0.3)
    release = threading.Event()
    started = threading.Event()
    saved = cache.save

    writer = BackgroundWriter(cache, max_pending=2, workers=1)

    def blocked_save(sequence, stats):
        started.set()
        release.wait(10)
        saved(sequence, stats)

    writer.cache.save = blocked_save
    proteins = random_proteins(5, lo=10, hi=12, seed=4)
    stats = [fake_stats(p) for p in proteins]
    writer.submit(proteins[0].id, proteins[0].sequence, stats[0])  # taken by the thread, blocked in save
    assert started.wait(5)
    writer.submit(proteins[1].id, proteins[1].sequence, stats[1])
    writer.submit(proteins[2].id, proteins[2].sequence, stats[2])  # the queue (2) is now full
    fourth = threading.Thread(target=writer.submit, args=(proteins[3].id, proteins[3].sequence, stats[3]))
    fourth.start()
    fourth.join(0.3)
    assert fourth.is_alive(), "submit must wait while max_pending entries are queued"
    release.set()
    fourth.join(5)
    assert not fourth.is_alive()
    writer.submit(proteins[4].id, proteins[4].sequence, stats[4])
    writer.close()
    assert writer.written == 5
    for p, s in zip(proteins, stats):
        got = cache.load(p.sequence)
        assert torch.equal(got.received, s.received) and torch.equal(got.total, s.total)


def test_after_a_writer_error_submit_raises_and_nothing_more_is_written(tmp_path):
    cache = StatsCache(str(tmp_path), "fake-backbone", 0.3)
    writer = BackgroundWriter(cache, max_pending=4, workers=1)
    calls = []

    def broken(sequence, stats):
        calls.append(sequence)
        raise PermissionError(13, "Permission denied")

    writer.cache.save = broken
    p = random_proteins(3, lo=10, hi=12, seed=5)
    writer.submit(p[0].id, p[0].sequence, fake_stats(p[0]))
    deadline = time.monotonic() + 5
    while writer._error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(OutputError, match=r"'P0'.*Permission denied"):
        writer.submit(p[1].id, p[1].sequence, fake_stats(p[1]))
    with pytest.raises(OutputError):
        writer.close()
    assert calls == [p[0].sequence]


def test_extract_never_imports_matplotlib_plotting(tmp_path):
    """extract draws nothing, so it must not import matplotlib's plotting (pyplot, and the font manager, which
    on a fresh machine first builds its font cache: 40 s measured inside extract on a GPU node). Lightning
    imports torchmetrics, which imports matplotlib.pyplot unless allo_lightning._matplotlib.defer() ran first.
    (The esm package imports biotite, which imports matplotlib.patches when matplotlib is installed: a few
    core modules, no font manager, no pyplot; outside this package.)"""
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import write_table

    root = Path(__file__).resolve().parents[1]
    table = write_table(tmp_path / "t.tsv", random_proteins(3, lo=15, hi=25, seed=6))
    code = (
        "import sys\n"
        "from allo_lightning.extract import main\n"
        f"main(['--data.path', {str(table)!r}, '--model.backbone', 'tiny', '--model.cache_dir', {str(tmp_path)!r},"
        f" '--trainer.accelerator', 'cpu', '--trainer.enable_progress_bar', 'false',"
        f" '--trainer.default_root_dir', {str(tmp_path / 'out')!r}])\n"
        "print('MPL', sorted(m for m in sys.modules if m in ('matplotlib.pyplot', 'matplotlib.font_manager')))\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(root), "JSONARGPARSE_DEPRECATION_WARNINGS": "off"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "out" / "extraction.json").exists()
    assert "MPL []" in res.stdout, res.stdout[-500:]


def test_several_writer_threads_write_every_entry_once(tmp_path):
    cache = StatsCache(str(tmp_path), "fake-backbone", 0.3)
    writer = BackgroundWriter(cache, max_pending=3, workers=3)
    proteins = random_proteins(12, lo=10, hi=30, seed=7)
    stats = [fake_stats(p) for p in proteins]
    for p, s in zip(proteins, stats):
        writer.submit(p.id, p.sequence, s)
    writer.close()
    assert writer.written == 12
    for p, s in zip(proteins, stats):
        got = cache.load(p.sequence)
        assert torch.equal(got.count, s.count) and torch.equal(got.mass, s.mass)


# -- planted survivors (a mutation run on the background writer) ----------------------------------------------

def test_entries_queued_behind_a_failed_one_are_dropped(tmp_path):
    """The first entry fails while three wait in the queue: those are not written (the run is failing; on a full
    disk each would fail again, one by one) and the error is the first one's."""
    cache = StatsCache(str(tmp_path), "fake-backbone", 0.3)
    writer = BackgroundWriter(cache, max_pending=8, workers=1)
    release, calls = threading.Event(), []

    def broken(sequence, stats):
        calls.append(sequence)
        release.wait(5)
        raise OSError(28, "No space left on device")

    writer.cache.save = broken
    p = random_proteins(4, lo=10, hi=12, seed=6)
    for q in p:
        writer.submit(q.id, q.sequence, fake_stats(q))
    release.set()
    with pytest.raises(OutputError, match=r"'P0'.*No space left"):
        writer.close()
    assert calls == [p[0].sequence]


def test_an_output_error_of_the_cache_is_named_once_with_its_protein(tmp_path):
    """StatsCache.save's own OutputError (one line naming the cache folder, e.g. a file where a shard folder goes)
    gets the protein in front, not the generic 'writing ... failed (OutputError: ...)' wrapping around it."""
    cache = StatsCache(str(tmp_path), "fake-backbone", 0.3)
    writer = BackgroundWriter(cache, workers=1)

    def refused(sequence, stats):
        raise OutputError("the cache folder X/ab is a file. Move it away.")

    writer.cache.save = refused
    q = random_proteins(1, lo=10, hi=12, seed=7)[0]
    writer.submit(q.id, q.sequence, fake_stats(q))
    with pytest.raises(OutputError) as e:
        writer.close()
    assert str(e.value) == "protein 'P0': the cache folder X/ab is a file. Move it away."


def test_a_writer_with_entries_in_flight_is_not_copied(tmp_path):
    """ddp_spawn pickles the callbacks into the processes it spawns: a writer still holding queued entries must not
    become a fresh, empty copy (those entries would never be written); an idle one is copied fresh."""
    import pickle

    cache = StatsCache(str(tmp_path), "fake-backbone", 0.3)
    writer = BackgroundWriter(cache, workers=1)
    release = threading.Event()
    saved = writer.cache.save
    writer.cache.save = lambda sequence, stats: (release.wait(5), saved(sequence, stats))
    q = random_proteins(1, lo=10, hi=12, seed=8)[0]
    writer.submit(q.id, q.sequence, fake_stats(q))
    with pytest.raises(AlloError, match="in flight"):
        pickle.dumps(writer)
    release.set()
    writer.close()
    del writer.cache.save  # the test's slow save is not picklable
    copy = pickle.loads(pickle.dumps(writer))
    assert copy.workers == 1 and copy.written == 0 and cache.complete(q.sequence)
