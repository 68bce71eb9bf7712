"""Nothing lost when extraction is interrupted: a real subprocess is killed mid-run, one of its cache
entries is damaged, and a second run resumes, reusing every finished protein, recomputing the damaged one
and ending with exactly the statistics of an uninterrupted run. Also: cache entries are checked
(truncation, corruption, stray temporary files) and extraction is deterministic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from allo_lightning.attention import StatsCache, extract
from allo_lightning.attention.cache import atomic_save
from allo_lightning.backbone import load_backbone
from allo_lightning.errors import AlloError
from allo_lightning.extract import main as extract_main
from tests.conftest import CPU, random_proteins

ROOT = Path(__file__).resolve().parents[1]
STAT_KEYS = ("received", "count", "mass", "total")


def write_table(path: Path, proteins) -> Path:
    rows = ["id\tsequence\tsites"] + [f"{p.id}\t{p.sequence}\t{','.join(map(str, p.sites))}" for p in proteins]
    path.write_text("\n".join(rows) + "\n")
    return path


def cli_args(table: Path, cache: Path, out: Path, max_tokens: int = 100) -> list[str]:
    return ["--data.path", str(table), "--model.backbone", "tiny", "--model.seed", "0", "--seed", "0",
            "--model.cache_dir", str(cache), "--model.max_tokens", str(max_tokens),
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(out)]


def entries(cache_root: Path) -> list[Path]:
    """Finished cache files (temporary files start with a dot)."""
    return sorted(p for p in cache_root.rglob("*.safetensors") if not p.name.startswith("."))


def assert_same_stats(cache_a: StatsCache, cache_b: StatsCache, proteins) -> None:
    for p in proteins:
        a, b = cache_a.load(p.sequence), cache_b.load(p.sequence)
        for k in STAT_KEYS:
            assert torch.equal(getattr(a, k), getattr(b, k)), (p.id, k)


# The extraction command, slowed down after each batch so that the test can kill it mid-run reliably
# (the tiny backbone would otherwise finish all proteins before the first poll).
SLOW_EXTRACT = textwrap.dedent("""
    import sys, time
    from allo_lightning.attention import extractor

    _write = extractor.CacheWriter.write_on_batch_end

    def slow_write(self, *args, **kwargs):
        _write(self, *args, **kwargs)
        time.sleep(0.2)

    extractor.CacheWriter.write_on_batch_end = slow_write
    from allo_lightning.extract import main
    main(sys.argv[1:])
""")


@pytest.mark.slow
def test_killed_extraction_resumes_and_matches_an_uninterrupted_run(tmp_path, tiny):
    # max_tokens=100 -> one protein per batch: many batches, and the batches of the resumed run are those of an
    # uninterrupted run (other compositions change float sums in the last bits, see the report in run.py)
    proteins = random_proteins(24, lo=50, hi=90, seed=1)
    table = write_table(tmp_path / "proteins.tsv", proteins)
    cache_dir, out = tmp_path / "cache", tmp_path / "out"
    script = tmp_path / "slow_extract.py"
    script.write_text(SLOW_EXTRACT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "JSONARGPARSE_DEPRECATION_WARNINGS": "off"}
    proc = subprocess.Popen([sys.executable, str(script), *cli_args(table, cache_dir, out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(entries(cache_dir)) < 6:
            assert proc.poll() is None, "extraction ended before it could be killed:\n" + proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no cache entries appeared in 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "extraction.json").exists()  # it really stopped mid-run

    done = entries(cache_dir)
    assert 6 <= len(done) < len(proteins)
    # Damage one finished entry the way a half-written file looks (cut in the middle) ...
    victim = done[len(done) // 2]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    # ... and leave a stray temporary file from an interrupted atomic write beside another one.
    stray = done[0].parent / f".{done[0].name}.k1ll3d.tmp"
    stray.write_bytes(b"\x00" * 100)
    kept = {p: p.stat().st_mtime_ns for p in done if p != victim}

    summary = extract_main(cli_args(table, cache_dir, out))  # run again: resume
    assert summary["proteins"] == len(proteins)
    assert summary["from_cache"] == len(kept)  # every finished protein reused ...
    assert summary["computed"] == len(proteins) - len(kept)  # ... the rest and the damaged one recomputed
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # finished entries were not rewritten
    assert len(entries(cache_dir)) == len(proteins)

    cache = StatsCache(cache_dir, tiny.identity, 0.3)
    assert cache.complete(proteins[0].sequence) and all(cache.complete(p.sequence) for p in proteins)

    fresh_dir = tmp_path / "fresh"
    fresh = extract_main(cli_args(table, fresh_dir, tmp_path / "out_fresh"))  # uninterrupted run
    assert fresh["computed"] == len(proteins)
    assert_same_stats(cache, StatsCache(fresh_dir, tiny.identity, 0.3), proteins)
    again = extract_main(cli_args(table, cache_dir, out))  # a third run computes nothing
    assert again["computed"] == 0 and again["from_cache"] == len(proteins)
    assert again["confident_pairs_per_residue"] == fresh["confident_pairs_per_residue"]


# -- cache entries are checked -------------------------------------------------------------------------------

@pytest.fixture
def cached(tmp_path, tiny, proteins):
    # max_tokens=1: every protein in a batch of its own, so that a rerun of a few of them is bit-identical
    # (in batches of other compositions the float sums differ in the last bits, ~1e-9)
    result = extract(proteins, tiny, cache_dir=str(tmp_path / "c"), trainer_kwargs=CPU, max_tokens=1)
    assert len(result.computed) == len(proteins)
    return result


def _rerun(result, tiny, proteins):
    return extract(proteins, tiny, cache_dir=str(result.cache.root), trainer_kwargs=CPU, max_tokens=1)


def test_truncated_corrupted_or_foreign_entries_are_recomputed(cached, tiny, proteins):
    cache = cached.cache
    before = {p.id: cache.load(p.sequence) for p in proteins}
    truncated, flipped, emptied, foreign = (cache.stats_path(p.sequence) for p in proteins[:4])
    truncated.write_bytes(truncated.read_bytes()[:-7])
    data = bytearray(flipped.read_bytes())
    data[-5] ^= 0x40  # one flipped bit in the tensor data: the file still parses
    flipped.write_bytes(bytes(data))
    emptied.write_bytes(b"")
    # a well-formed safetensors file without our format version and checksum (e.g. an older layout)
    from safetensors.torch import save_file

    save_file({k: getattr(before[proteins[3].id], k) for k in STAT_KEYS}, str(foreign),
              metadata={"length": str(proteins[3].length), "theta": "0.3"})
    for path in (truncated, flipped, emptied, foreign):
        assert not cache.complete(next(p.sequence for p in proteins if cache.stats_path(p.sequence) == path))
    again = _rerun(cached, tiny, proteins)
    assert sorted(again.computed) == sorted(p.id for p in proteins[:4])
    for p in proteins:
        after = cache.load(p.sequence)
        assert all(torch.equal(getattr(after, k), getattr(before[p.id], k)) for k in STAT_KEYS), p.id


def test_entry_for_another_theta_or_length_is_not_used(tmp_path, cached, proteins):
    p = proteins[0]
    path = cached.cache.stats_path(p.sequence)
    other = StatsCache(cached.cache.root, cached.backbone_identity, 0.5)
    other_path = other.stats_path(p.sequence)
    other_path.write_bytes(path.read_bytes())  # stats for theta 0.3 under theta 0.5's name
    assert not other.complete(p.sequence)
    # stats of another protein copied under this protein's name (different length)
    q = next(x for x in proteins if x.length != p.length)
    path.write_bytes(cached.cache.stats_path(q.sequence).read_bytes())
    assert not cached.cache.complete(p.sequence)


def test_leftover_temporary_files_are_ignored(tmp_path, cached, tiny, proteins):
    cache = cached.cache
    p, q = proteins[0], proteins[1]
    # q's entry was lost mid-write: only a temporary file is left, here even a complete-looking one
    q_path = cache.stats_path(q.sequence)
    stray_q = q_path.parent / f".{q_path.name}.a1b2c3.tmp"
    q_path.rename(stray_q)
    # and a half-written temporary file beside p's good entry
    p_path = cache.stats_path(p.sequence)
    stray_p = p_path.parent / f".{p_path.name}.d4e5f6.tmp"
    stray_p.write_bytes(p_path.read_bytes()[:50])
    assert cache.complete(p.sequence) and not cache.complete(q.sequence)
    again = _rerun(cached, tiny, proteins)
    assert again.computed == [q.id]
    assert cache.complete(q.sequence)
    assert stray_p.exists() and stray_q.exists()  # never read, never mistaken for entries
    assert not list(cache.dir.rglob("*.tmp"))[2:]  # the run left no temporary file of its own


def test_atomic_save_leaves_no_partial_file_when_writing_fails(tmp_path, monkeypatch):
    import allo_lightning.attention.cache as cache_mod

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod, "save_file", broken_save)
    target = tmp_path / "x" / "entry.safetensors"
    with pytest.raises(OSError):
        atomic_save({"a": torch.zeros(3)}, target)
    assert not target.exists() and not list(target.parent.iterdir())


# -- determinism -----------------------------------------------------------------------------------------------

def test_same_config_and_seed_give_bit_identical_statistics(tmp_path, proteins):
    caches = []
    for run in ("a", "b"):
        backbone = load_backbone("tiny", seed=0)  # built afresh each time, from the seed
        result = extract(proteins, backbone, cache_dir=str(tmp_path / run), trainer_kwargs=CPU, max_tokens=256)
        assert len(result.computed) == len(proteins)
        caches.append(result.cache)
    assert caches[0].dir.name == caches[1].dir.name  # same backbone identity
    assert_same_stats(caches[0], caches[1], proteins)
    from safetensors import safe_open

    for p in proteins:  # same checksums and metadata (the header's key order is not fixed by safetensors)
        metas = []
        for c in caches:
            with safe_open(str(c.stats_path(p.sequence)), framework="pt") as f:
                metas.append(f.metadata())
        assert metas[0] == metas[1] and len(metas[0]["sha256"]) == 64
    other = load_backbone("tiny", seed=1)
    assert other.identity != load_backbone("tiny", seed=0).identity  # another seed never shares the cache


def test_damaged_entries_never_raise(tmp_path, cached, proteins):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    p = proteins[0]
    path = cached.cache.stats_path(p.sequence)
    good = path.read_bytes()

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(cut=st.integers(0, len(good)), flip=st.integers(0, len(good) - 1), junk=st.binary(max_size=64))
    def damaged(cut, flip, junk):
        data = bytearray(good[:cut] + junk)
        if flip < len(data):
            data[flip] ^= 0x01
        path.write_bytes(bytes(data))
        assert not cached.cache.complete(p.sequence) or bytes(data) == good

    damaged()


# -- a cache entry is bound to its sequence and its exact theta ----------------------------------------------

def _fake_entry(seed: int, length: int = 12):
    from allo_lightning.attention.stats import ProteinStats

    g = torch.Generator().manual_seed(seed)
    r = torch.rand(2, 3, length, generator=g)
    return ProteinStats(received=r, count=r.round(), mass=r * 2, total=r.sum(-1))


def test_entry_of_another_sequence_renamed_to_this_one_is_not_used(tmp_path):
    cache = StatsCache(tmp_path, "tiny-x", 0.3)
    a, b = "MKTAYIAKQRQI", "MKTAYIAKQRQL"  # same length: only the sequence binding can tell them apart
    cache.save(a, _fake_entry(1))
    assert cache.complete(a)
    cache.stats_path(b).parent.mkdir(parents=True, exist_ok=True)
    cache.stats_path(a).rename(cache.stats_path(b))  # the entry of a under b's name
    assert not cache.complete(b)
    with pytest.raises(AlloError, match="no complete entry .* Run the same command again"):
        cache.load(b)  # one line for the user (was a KeyError traceback)
    cache.stats_path(b).rename(cache.stats_path(a))  # negative control: under its own name it is fine
    assert cache.complete(a) and torch.equal(cache.load(a).received, _fake_entry(1).received)


def test_theta_that_prints_like_another_is_another_entry(tmp_path):
    seq = "MKTAYIAKQRQI"
    exact, close = StatsCache(tmp_path, "tiny-x", 0.3), StatsCache(tmp_path, "tiny-x", 0.2999996)
    assert f"{0.2999996:g}" == f"{0.3:g}"  # the old file name and key could not tell them apart
    assert exact.stats_path(seq) != close.stats_path(seq)
    exact.save(seq, _fake_entry(2))
    assert exact.complete(seq) and not close.complete(seq)
    close.stats_path(seq).write_bytes(exact.stats_path(seq).read_bytes())  # 0.3's entry under 0.2999996's name
    assert not close.complete(seq)
    # and the metadata alone cannot be edited into a match: the checksum is bound to the exact theta
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(exact.stats_path(seq)), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    save_file(tensors, str(close.stats_path(seq)), metadata={**meta, "theta": repr(0.2999996)})
    assert not close.complete(seq)
