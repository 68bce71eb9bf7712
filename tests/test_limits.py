"""Holes in the input and config checks found by the adversarial run (issue 19): each case here was a
MemoryError, a traceback, an out-of-memory kill or a silent wrong result before, and is now one line
on stderr, exit 2, before any model is loaded (or, for the Python API, an InputError at construction)."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from allo_lightning import evaluate, fit, report
from allo_lightning import extract as extract_cmd
from allo_lightning import heads as heads_cmd
from allo_lightning.data import Protein
from allo_lightning.data import io as data_io
from allo_lightning.errors import InputError

from .conftest import REPO, random_proteins, write_table
from .test_shell import base, no_model, refused, table  # noqa: F401 - fixtures


# -- files ------------------------------------------------------------------------------------------------
def _sparse(path, size: int, head: bytes = b"id\tsequence\tsites\n"):
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)  # a hole: no disk blocks, reads as NUL bytes
    return path


def test_huge_sparse_file_is_refused_from_its_size_without_reading(tmp_path, capsys, no_model):  # noqa: F811
    """A 3 GB sparse file was read whole (MemoryError for 20 GB) before the NUL check: now refused from
    its size, as one line with exit 2, before reading it."""
    big = _sparse(tmp_path / "big.tsv", 3 * 2**30)
    tracemalloc.start()
    try:
        refused(capsys, extract_cmd.main, base(tmp_path, big), "big.tsv", "3,221,225,472 bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.slow
def test_huge_sparse_file_command_line(tmp_path):
    """The same through the real command line, in a fresh process."""
    big = _sparse(tmp_path / "big.tsv", 3 * 2**30)
    proc = subprocess.run([sys.executable, "-m", "allo_lightning", "extract", "--data.path", str(big),
                           "--model.cache_dir", str(tmp_path / "c"), "--trainer.accelerator", "cpu",
                           "--trainer.default_root_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert "big.tsv" in err and "3,221,225,472 bytes" in err, err


def test_binary_file_is_refused_at_its_first_chunk(tmp_path, monkeypatch):
    """Below the size limit, a file of NUL bytes is refused after its first chunk: the read never holds
    the whole file (measured with tracemalloc: 256 MiB file, peak well under it)."""
    monkeypatch.setattr(data_io, "_CHUNK", 1 << 20)
    f = _sparse(tmp_path / "zeros.tsv", 256 * 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="NUL bytes") as e:
            data_io.read_proteins(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "line 2" in str(e.value)  # the header is line 1, the NULs start on line 2
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.0f} MiB: the file was read whole"


def test_size_limit_is_checked_while_reading(tmp_path, monkeypatch):
    """A file that is (or grows) larger than the limit is refused (here with a lowered limit)."""
    monkeypatch.setattr(data_io, "MAX_INPUT_BYTES", 1000)
    t = write_table(tmp_path / "t.tsv", random_proteins(40, lo=50, hi=60))
    with pytest.raises(InputError, match="more than the 1,000 bytes"):
        data_io.read_proteins(t)


def test_absurd_sequence_length_is_refused_before_any_model(tmp_path, capsys, no_model):  # noqa: F811
    """A 300-million-residue sequence was accepted and died in tokenize; the limit is now stated (here
    a 100,001-residue sequence, one over it) and the refusal comes before the backbone is loaded."""
    t = tmp_path / "long.tsv"
    t.write_text(f"id\tsequence\tsites\nhuge\t{'A' * 100_001}\t5\n")
    err = refused(capsys, extract_cmd.main, base(tmp_path, t), "long.tsv", "line 2", "100,001 residues",
                  "100,000")
    assert "titin" in err
    ok = tmp_path / "ok.fasta"
    ok.write_text(f">titin_like\n{'A' * 40_000}\n")
    assert data_io.read_proteins(ok)[0].length == 40_000  # titin-sized proteins are fine (run as windows)


# -- YAML config files ------------------------------------------------------------------------------------
def test_yaml_duplicate_keys_are_refused(tmp_path, table, capsys, no_model):  # noqa: F811
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("heads:\n  top_k: 3\n  n_permutations: 50\n  top_k: 5\n")
    refused(capsys, heads_cmd.main, ["--config", str(cfg)] + base(tmp_path, table), "dup.yaml", "line 4",
            "'top_k'", "twice", "line 2")
    cfg.write_text("model:\n  theta: 0.3\nmodel:\n  seed: 1\n")  # a whole section twice
    refused(capsys, heads_cmd.main, ["--config", str(cfg)] + base(tmp_path, table), "dup.yaml", "'model'")


def test_yaml_alias_bomb_is_refused(tmp_path, table, capsys, no_model):  # noqa: F811
    """The 344-byte 'billion laughs' ended in MemoryError; aliases are refused at the first one."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 400
    refused(capsys, heads_cmd.main, ["--config", str(bomb)] + base(tmp_path, table), "bomb.yaml", "line 2",
            "aliases")


def test_value_error_is_blamed_on_its_source(tmp_path, table, capsys, no_model):  # noqa: F811
    """A bad command-line value was blamed on the --config file that set the same key."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("heads:\n  top_k: 3\n")
    err = refused(capsys, heads_cmd.main, ["--config", str(cfg), "--heads.top_k", "abc"] + base(tmp_path, table),
                  "--heads.top_k", "'abc'")
    assert "c.yaml" not in err, err
    err = refused(capsys, heads_cmd.main, ["--config", str(cfg), "--heads.top_k", "0"] + base(tmp_path, table),
                  "--heads.top_k")
    assert "c.yaml" not in err, err
    # a bad value in the file is the file's, even when a flag overrides the key, and names that file
    bad = tmp_path / "bad.yaml"
    bad.write_text("heads:\n  top_k: abc\n")
    refused(capsys, heads_cmd.main, ["--config", str(cfg), "--config", str(bad), "--heads.top_k", "4"]
            + base(tmp_path, table), "--config", "bad.yaml", "'abc'")
    bad.write_text("heads:\n  top_k: 0\n")  # a range error (checked by the config class) from the file
    refused(capsys, heads_cmd.main, ["--config", str(bad)] + base(tmp_path, table), "bad.yaml", "--heads.top_k")


# -- flags ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", "123456789012345678901", str(2**32)])
def test_seed_out_of_range_is_one_line(tmp_path, table, capsys, no_model, seed):  # noqa: F811
    refused(capsys, heads_cmd.main, base(tmp_path, table) + ["--seed", seed], "--seed", "outside")
    refused(capsys, heads_cmd.main, base(tmp_path, table) + ["--model.seed", seed], "--model.seed", "outside")


def test_cache_env_empty_or_tilde(tmp_path, monkeypatch):
    """ALLO_LIGHTNING_CACHE='' put the cache in the current folder, and '~/x' in a literal ./~/x."""
    from allo_lightning.config import ModelConfig

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALLO_LIGHTNING_CACHE", "")
    assert ModelConfig().cache_dir == str(tmp_path / "home" / ".cache" / "allo_lightning")
    monkeypatch.setenv("ALLO_LIGHTNING_CACHE", "  ")
    assert ModelConfig().cache_dir == str(tmp_path / "home" / ".cache" / "allo_lightning")
    monkeypatch.setenv("ALLO_LIGHTNING_CACHE", "~/x")
    assert ModelConfig().cache_dir == str(tmp_path / "home" / "x")
    monkeypatch.delenv("ALLO_LIGHTNING_CACHE")
    assert ModelConfig(cache_dir="~/y").cache_dir == str(tmp_path / "home" / "y")  # a YAML value: not expanded


def test_cache_env_end_to_end(tmp_path, table, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALLO_LIGHTNING_CACHE", "~/x")
    args = [a for a in base(tmp_path, table)]
    i = args.index("--model.cache_dir")
    del args[i : i + 2]
    extract_cmd.main(args + ["--data.limit", "2"])
    out = capsys.readouterr().out
    assert (tmp_path / "home" / "x").is_dir() and not (tmp_path / "~").exists()
    assert str(tmp_path / "home" / "x") in out


def test_data_limit_applies_to_a_file(tmp_path, table, capsys):  # noqa: F811
    """--data.limit with --data.path was ignored without a word: it keeps the file's first N proteins
    and says so."""
    from allo_lightning.config import DataConfig
    from allo_lightning.data import load_proteins

    got = load_proteins(DataConfig(path=str(table), limit=3))
    assert [p.id for p in got] == ["P0", "P1", "P2"]
    assert any("--data.limit 3: using the first 3 of the 8 proteins" in n for n in got.notes)
    res = extract_cmd.main(base(tmp_path, table) + ["--data.limit", "2"])
    assert "using the first 2 of the 8" in capsys.readouterr().out
    assert res["proteins"] == 2


@pytest.mark.parametrize("flag", [["--data.family", "GPCR"], ["--data.max_length", "30"],
                                  ["--data.modulators", "all"]])
def test_bundled_only_options_refused_with_a_path(tmp_path, table, capsys, no_model, flag):  # noqa: F811
    refused(capsys, heads_cmd.main, base(tmp_path, table) + flag, flag[0], "bundled data only")


def test_absurd_window_count_is_refused(tmp_path, capsys, no_model):  # noqa: F811
    """An overlap of context - 1 ran one window per residue (98,000 for a long protein) silently."""
    from allo_lightning.pipeline import check_window_work

    t = tmp_path / "long.tsv"
    t.write_text(f"id\tsequence\tsites\nL1\t{'A' * 3000}\t5\n")
    refused(capsys, extract_cmd.main, base(tmp_path, t) + ["--model.window_overlap", "2047"],
            "--model.window_overlap 2047", "953 windows")
    # the count matches the windows the extractor places, and the default overlap is far below the limit
    from allo_lightning.attention.extractor import window_plan

    for L, overlap in [(3000, 256), (2049, 0), (10_000, 1500), (5000, 1700)]:
        p = Protein("x", "A" * L)
        assert check_window_work([p], 2048, overlap) == len(window_plan(L, 2048, overlap)[0])


def test_absurd_permutations_and_bootstrap_are_refused_before_work(tmp_path, table, capsys, no_model,  # noqa: F811
                                                                   monkeypatch):
    """--heads.n_permutations, --report.n_boot and --bootstrap of 10^8 allocated until the OOM killer;
    the memory is now estimated and refused before work (here with 8 GiB said to be available)."""
    import allo_lightning.pipeline as pipeline

    monkeypatch.setattr(pipeline, "available_memory", lambda: 8 * 2**30)
    big = str(10**8)
    refused(capsys, heads_cmd.main, base(tmp_path, table) + ["--heads.n_permutations", big,
                                                             "--heads.max_permutations", big],
            "--heads.n_permutations", "GiB")
    refused(capsys, report.main, base(tmp_path, table) + ["--report.n_boot", big, "--report.folds", "2"],
            "--report.n_boot", "GiB")
    refused(capsys, fit.main, base(tmp_path, table) + ["--heads.n_permutations", big, "--heads.max_permutations",
                                                       big], "--heads.n_permutations", "GiB")
    # the defaults are far below any machine's memory
    assert pipeline.permutation_bytes(2000, 30 * 15, 200) < 2**30
    assert pipeline.bootstrap_bytes(1000, 400) < 2**30


def test_bootstrap_estimate_is_an_upper_bound():
    """The estimate is at least the peak the bootstrap's protein draws really take (tracemalloc)."""
    from allo_lightning.pipeline import bootstrap_bytes, permutation_bytes
    from allo_lightning.probe.bootstrap import _draws

    tracemalloc.start()
    _draws(50, 20_000, 0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert bootstrap_bytes(20_000, 50) >= peak
    import torch

    from allo_lightning.analysis.scores import ProteinNull

    y = np.zeros(300, dtype=np.int64)
    y[:12] = 1
    nl = ProteinNull("permutation", torch.as_tensor(y), None)
    v = torch.rand(2 * 8, 300)  # torch's allocations are not seen by tracemalloc: compare the arrays' sizes
    idx = nl.draw(5000, torch.Generator().manual_seed(0))
    d = nl.sample_sums(v, 5000, torch.Generator().manual_seed(0))
    pooled_and_d = 2 * d.element_size() * d.numel()
    assert permutation_bytes(5000, 8, 12) >= pooled_and_d + d.numel() + idx.element_size() * idx.numel()


def test_evaluate_bootstrap_memory_refused(tmp_path, table, capsys, monkeypatch, tiny, no_model):  # noqa: F811
    import allo_lightning.pipeline as pipeline

    from .test_checkpoint import _saved

    monkeypatch.setattr(pipeline, "available_memory", lambda: 8 * 2**30)
    ckpt, *_ = _saved(tmp_path, tiny)
    args = base(tmp_path, table) + ["--checkpoint", str(ckpt), "--bootstrap", str(10**9)]
    refused(capsys, evaluate.main, args, "--bootstrap", "GiB")


# -- the Python API ---------------------------------------------------------------------------------------
def test_protein_sites_out_of_range_refused():
    """Protein(..., sites=(0,)).labels() marked the LAST residue (index -1)."""
    with pytest.raises(InputError, match="outside 1..4"):
        Protein("a", "MKTA", sites=(0,))
    with pytest.raises(InputError, match="outside 1..4"):
        Protein("a", "MKTA", sites=(5,))
    with pytest.raises(InputError, match="outside 1..4"):
        Protein("a", "MKTA", orthosteric_sites=(-1,))
    with pytest.raises(InputError, match=r"^protein 'a': sites \[1.5, '2'\] are not whole numbers"):
        Protein("a", "MKTA", sites=(1.5, "2"))  # was "outside 1..4"
    with pytest.raises(InputError, match=r"^protein 'a': sites \[.*9\)?\] are outside 1..4"):
        Protein("a", "MKTA", sites=(np.int64(9),))
    with pytest.raises(InputError, match="^f.tsv, line 3, id 'a': sites"):
        Protein("a", "MKTA", sites=(0,), source="f.tsv:3")
    assert Protein("a", "MKTA", sites=(1, np.int64(4))).labels().tolist() == [1, 0, 0, 1]
    with pytest.raises(InputError) as info:
        Protein("a", "MKTA", sites=(0,))
    assert str(info.value).count("protein 'a'") == 1, str(info.value)  # was "protein 'a': protein 'a': ..."


def test_protein_sequence_normalised():
    """A lower-case sequence given through the API got other statistics than the upper-case one (the
    tokenizer maps lower-case letters to <unk>); it is upper-cased as the file readers do."""
    assert Protein("a", "mkta").sequence == "MKTA"
    with pytest.raises(InputError, match="unknown residue"):
        Protein("a", "MK-TA")
    with pytest.raises(InputError, match="empty"):
        Protein("a", "")
    with pytest.raises(InputError, match="100,000"):
        Protein("a", "A" * 100_001)


def test_lower_case_api_extract_equals_upper(tiny, tmp_path):
    from allo_lightning.attention import extract

    seq = random_proteins(1, lo=30, hi=30, seed=5)[0].sequence
    kw = {"trainer_kwargs": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                             "default_root_dir": str(tmp_path / "o")}}
    p_low, p_up = Protein("low", seq.lower()), Protein("up", seq)
    low = extract([p_low], tiny, cache_dir=str(tmp_path / "c1"), **kw)
    up = extract([p_up], tiny, cache_dir=str(tmp_path / "c2"), **kw)
    a, b = low.stats(p_low), up.stats(p_up)
    assert np.allclose(a.received.numpy(), b.received.numpy())



def test_yaml_alias_in_a_flag_value_is_refused(tmp_path, table, capsys, no_model):  # noqa: F811
    """Flag values are read as YAML as well: an alias bomb there is refused like one in a file."""
    bomb = "{a: &a [x, x, x, x, x, x, x, x, x], b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]}"
    refused(capsys, heads_cmd.main, base(tmp_path, table) + ["--heads.orthosteric", bomb], "--heads.orthosteric",
            "aliases")
    refused(capsys, heads_cmd.main, base(tmp_path, table) + [f"--heads.orthosteric={bomb}"], "--heads.orthosteric",
            "aliases")
    from allo_lightning.shell import parse

    # negative control: a '*' that is not an alias (a glob in a path, a product) is left alone
    cfg = parse(heads_cmd.main.spec, ["--data.path", "data/*.tsv", "--heads.orthosteric", "{A: [1, 2]}"])
    assert cfg.data.path == "data/*.tsv" and cfg.heads.orthosteric == {"A": [1, 2]}


@pytest.mark.parametrize("command", ["evaluate", "predict", "fit", "heads", "report", "extract"])
def test_config_file_with_required_flags_parses(command, tmp_path):
    """Checking a config file's values on their own must not ask for the command's required flags
    (evaluate's and predict's --checkpoint...)."""
    import importlib

    from allo_lightning.shell import parse

    module = importlib.import_module(f"allo_lightning.{command}")
    own = {"evaluate": ["--checkpoint", "x"], "predict": ["--checkpoint", "x", "--fasta", "y", "--out", "z"]}
    cfg = parse(module.main.spec, ["--config", str(REPO / "configs" / "smoke.yaml")] + own.get(command, []))
    assert cfg.seed == 0


def test_n_permutations_above_max_names_the_flag_given(tmp_path, table, capsys, no_model):  # noqa: F811
    """--heads.n_permutations 10^8 alone was refused as '--heads.max_permutations: 1000000 is outside
    [100000000, inf]' (a flag the user did not give); the message now names the flag given and both."""
    refused(capsys, heads_cmd.main, base(tmp_path, table) + ["--heads.n_permutations", str(10**8)],
            "--heads.n_permutations: 100000000 is more than --heads.max_permutations 1000000")


def test_absurd_window_count_is_refused_through_the_api(tmp_path):
    """The same limit in the Python API's extract (before any window runs)."""
    from allo_lightning.attention import extract
    from allo_lightning.backbone import load_backbone

    tiny = load_backbone("tiny")
    tiny.max_length = 64
    with pytest.raises(InputError, match="237 windows"):
        extract([Protein("long", "A" * 300)], tiny, cache_dir=str(tmp_path / "c"), window_overlap=63,
                trainer_kwargs={"accelerator": "cpu", "devices": 1, "enable_progress_bar": False})
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.safetensors"))
