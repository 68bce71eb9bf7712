"""bench and the original approach it times: bench is a command of the one shell (its flag misuses are
one-line refusals, exit 2), its settings are a parameter (no module state set from the flags), a tiny
smoke run works, and the original per-head loop agrees with the package's statistics."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from allo_lightning.bench import main as bench_main
from allo_lightning.errors import InputError

MISUSES = [
    (["--lengths", "0"], "--lengths 0"),
    (["--lengths", "50", "-5"], "--lengths -5"),
    (["--repeats", "0"], "--repeats 0"),
    (["--threads", "-1"], "--threads -1"),
    (["--threads", "0"], "--threads 0"),
    (["--original-heads", "-1"], "--original-heads -1"),
    (["--device", "bogus"], "--device 'bogus'"),
    (["--device", "cuda:99"], "no such CUDA device"),
    (["--lengths", "100000000"], "context of 2048"),
    (["--bf16"], "--bf16 works with --predict only"),
    (["--scale"], "--scale adds"),
    (["--scoring", "--predict"], "--scoring runs"),
    (["--memory-child", "ours", "esmc_300m", "x", "cpu"], "internal flag"),
    (["--table", "--max-tokens", "0"], "--max-tokens 0"),
    (["--table", "--residues", "-3"], "--residues -3"),
    (["--table", "--predict"], "--table runs"),
    # through the shell since bench is one of its commands (argparse before)
    (["--quik"], "unknown flag --quik. Did you mean --quick?"),
    (["--clock", "sun"], "--clock: 'sun' is not accepted"),
    (["--table", "--kernels", "fast"], "--kernels fast: not a statistics kernel"),
    (["--shapes", "esmc_9b"], "--shapes esmc_9b: not a model shape"),
    (["--seed", "3"], "--seed works with --stream only"),
    (["--stream"], "--stream needs --checkpoint"),
    (["--proteins", "30"], "--proteins works with --stream only"),
    (["--stream", "--checkpoint", "c.safetensors", "--quick"], "--stream times predict alone"),
    (["--stream", "--checkpoint", "c.safetensors", "--proteins", "0"], "--proteins 0"),
    (["--stream", "--checkpoint", "c.safetensors", "--min_length", "500"], "--max-length 400 is below"),
    (["--stream", "--checkpoint", "no/such.safetensors"], "--checkpoint no/such.safetensors: file not found"),
    (["--config", "no/such.yaml"], "--config no/such.yaml: file not found"),
    # were silently ignored without --table
    (["--residues", "500"], "--residues works with --table only"),
    (["--quick", "--kernels", "fused"], "--kernels works with --table only"),
    (["--max-tokens", "4096"], "--max-tokens works with --table only"),
]


@pytest.mark.parametrize("argv,phrase", MISUSES, ids=[" ".join(a) for a, _ in MISUSES])
def test_bench_flag_misuse_is_one_line(argv, phrase, capsys, monkeypatch):
    """Each of these was a traceback (or silently ignored) before; now refused before any work."""
    import allo_lightning.bench.extraction as ex

    def boom(*a, **k):
        raise AssertionError("work started before the refusal")

    monkeypatch.setattr(ex, "run_point", boom)
    monkeypatch.setattr(ex, "make_backbone", boom)
    with pytest.raises(SystemExit) as e:
        bench_main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert phrase in err, err


@pytest.mark.slow
def test_bench_smoke_tiny(capsys, tmp_path):
    """The extraction benchmark end to end on the tiny shape (seconds; its numbers mean nothing), with its
    record in --out like every command's: config.yaml and run.log (the tables printed)."""
    bench_main(["--quick", "--shapes", "tiny", "--lengths", "24", "--repeats", "1", "--device", "cpu",
                "--original-heads", "2", "--out", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "worst case over the grid" in out and "overhead=" in out and "vs_original=" in out
    log = (tmp_path / "b" / "run.log").read_text()
    assert ": finished" in log.splitlines()[1] and "worst case over the grid" in log
    assert "original_heads: 2" in (tmp_path / "b" / "config.yaml").read_text()


def test_bench_out_refuses_a_link_and_a_users_file(tmp_path, capsys, monkeypatch):
    """bench --out checks its record's files like every command: a planted config.yaml link or a user's own
    config.yaml is refused (one line, exit 2) before any benchmark runs, and nothing is written through it."""
    import allo_lightning.bench.extraction as ex

    monkeypatch.setattr(ex, "run", lambda s: pytest.fail("a benchmark ran"))
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("mine\n")
    for name, plant in (("link", lambda p: p.symlink_to(elsewhere)), ("own", lambda p: p.write_text("mine\n"))):
        out = tmp_path / name
        out.mkdir()
        plant(out / "config.yaml")
        with pytest.raises(SystemExit) as e:
            bench_main(["--quick", "--out", str(out)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert (out / "config.yaml").read_text() == "mine\n" and elsewhere.read_text() == "mine\n"
        assert not (out / "run.log").exists()


def test_bench_config_yaml_replays_the_run(tmp_path):
    """bench's config.yaml (its own flags, several spelled with dashes on the command line) read back with
    --config gives the same settings (the dashed flags were 'unknown section' in a config file)."""
    import yaml

    from allo_lightning import shell
    from allo_lightning.records import resolved_config

    argv = ["--table", "--max-tokens", "4096", "--residues", "500", "--kernels", "fused", "chunked", "--device",
            "cpu", "--clock", "cpu", "--out", str(tmp_path / "b")]
    first = resolved_config(shell.parse(bench_main.spec, argv))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(first))
    again = resolved_config(shell.parse(bench_main.spec, ["--config", str(tmp_path / "c.yaml")]))
    assert again == first and first["max_tokens"] == 4096 and first["kernels"] == ["fused", "chunked"]
    # bench has no sections: a misspelt key is named against bench's own settings, not "Sections: model, ..."
    (tmp_path / "d.yaml").write_text("max_tokns: 5\n")
    with pytest.raises(InputError, match=r"unknown setting 'max_tokns' \(did you mean 'max_tokens'\?\)\. "
                                         r"Settings of bench: .*\bmax_tokens\b") as e:
        shell.parse(bench_main.spec, ["--config", str(tmp_path / "d.yaml")])
    assert "section" not in str(e.value) and "max-tokens" not in str(e.value) and "help" not in str(e.value)


@pytest.mark.slow
def test_bench_stream_smoke(capsys, tmp_path):
    """--stream (bench.stream's own argparse CLI before): one predict process over 3 random proteins of 20-40
    residues with the golden probe (tiny backbone); one result line per size, its residues the FASTA's."""
    from .golden import CHECKPOINT

    bench_main(["--stream", "--checkpoint", str(CHECKPOINT), "--proteins", "3", "--min-length", "20",
                "--max-length", "40", "--seed", "5", "--work", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == "proteins residues seconds s_per_1000_proteins peak_rss_mib"
    n, residues, seconds, _, rss = lines[-1].split()
    fasta = (tmp_path / "b3.fasta").read_text().split()
    assert int(n) == 3 and int(residues) == sum(len(x) for x in fasta[1::2]) and 60 <= int(residues) <= 120
    assert float(seconds) > 0 and float(rss) > 0 and (tmp_path / "out3" / "predictions.csv").exists()


def test_original_loop_matches_the_statistics(tiny):
    """original.py (the seed scripts' approach, the benchmark's baseline): full maps of every head, then
    the per-head loop. Its observed score equals sum over sites of the confident mass / total from the
    package's own ProteinStats (the benchmark checks this too); its p-value is a valid Monte-Carlo one."""
    from allo_lightning.attention import AttentionExtractor
    from allo_lightning.backbone import tokenize
    from allo_lightning.original import full_attention_maps, original_head_scores

    from .conftest import random_proteins

    p = random_proteins(1, lo=40, hi=40, seed=3)[0]
    tokens, real = tokenize([p.sequence])
    maps = full_attention_maps(tiny, tokens, real)
    assert maps.shape == (tiny.n_layers, tiny.n_heads, p.length + 2, p.length + 2)
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]), rtol=1e-5, atol=1e-5)
    sites0 = [s - 1 for s in p.sites]
    out = original_head_scores(maps, sites0, 0.3, n_draws=200, seed=0)
    stats = AttentionExtractor(tiny, 0.3)(tokens, real, [p.length])[0]
    y = torch.as_tensor(p.labels()).bool()
    seed_score = (stats.mass[..., y].sum(-1) / stats.total.clamp_min(1)).numpy()
    np.testing.assert_allclose(out["observed"], seed_score, rtol=1e-4, atol=1e-6)
    assert np.all((out["pvalue"] >= 1 / 201) & (out["pvalue"] <= 1))
    part = original_head_scores(maps, sites0, 0.3, n_draws=50, seed=0, heads=[(1, 2)])
    assert np.isnan(part["observed"][0, 0]) and part["observed"][1, 2] == pytest.approx(out["observed"][1, 2])


def test_original_loop_reads_the_backbone_alphabet():
    """The residues' token positions come from the alphabet (the loop assumed ESM's BOS at 0): with an
    alphabet that prepends nothing, residue j is token j; compared with a plain loop over the map."""
    import dataclasses

    from allo_lightning.backbone.base import ESMC_ALPHABET
    from allo_lightning.original import original_head_scores

    no_bos = dataclasses.replace(ESMC_ALPHABET, bos=None)
    L, theta = 12, 0.3
    gen = torch.Generator().manual_seed(0)
    maps = torch.softmax(torch.randn(1, 2, L + 1, L + 1, generator=gen) * 3.0, dim=-1)  # residues + EOS
    sites = [2, 3, 4, 9]
    out = original_head_scores(maps, sites, theta, n_draws=20, seed=0, alphabet=no_bos)
    for h in range(2):
        a = maps[0, h, :L].numpy()
        conf = a * (a > theta)
        assert out["observed"][0, h] == pytest.approx(conf[:, sites].sum() / max((a > theta).sum(), 1))


def test_bench_is_a_command_of_the_shell():
    """``allo-lightning bench``, ``python -m allo_lightning bench`` and ``python -m allo_lightning.bench`` run
    the same shell command (one parser, one error handler, run records), not a second CLI (the three
    entry points' --help and flag errors: tests/test_fast_help.py)."""
    import allo_lightning.shell as shell

    assert "bench" in shell.COMMANDS
    assert bench_main.spec.name == "bench" and bench_main.spec.check is not None


def test_no_global_state_in_bench():
    """Nothing in ``allo_lightning/bench`` rebinds a module global (``global CLOCK`` was set from --clock and
    read by every ratio); the settings are a frozen dataclass passed as a parameter."""
    import ast
    import dataclasses
    from pathlib import Path

    import allo_lightning.bench as bench
    from allo_lightning.bench.settings import BenchSettings

    for path in Path(bench.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)], path
    with pytest.raises(dataclasses.FrozenInstanceError):
        BenchSettings().clock = "cpu"  # type: ignore[misc]


@pytest.mark.parametrize("clock, overhead", [("cpu", "3.000"), ("wall", "2.000")])
def test_the_clock_flag_reaches_every_ratio(clock, overhead, capsys, monkeypatch):
    """--clock picks the times the ratios divide (on a CPU device): a grid point whose extraction costs 2x
    the plain forward in wall time and 3x in CPU time reports overhead 3x on the cpu clock, 2x on the wall
    clock, in the point's table, the final line and the header."""
    import allo_lightning.bench.extraction as ex
    from allo_lightning.bench.common import Timing

    names = ("plain", "ours", "original maps", "ours e2e", "cached", "orig scoring", "original", "our scoring")

    def point(shape, length, device, repeats, orig_heads, trainer_kwargs, *, clock):
        rows = {k: Timing(1.0, 1.0) for k in names}
        rows["ours"] = Timing(wall=2.0, cpu=3.0)
        return ex.Point(shape, length, rows, {"plain": 0.0, "ours": 0.0, "original": 0.0}, 1.0, 2, 0.0, clock)

    monkeypatch.setattr(ex, "run_point", point)
    bench_main(["--quick", "--shapes", "tiny", "--lengths", "24", "--device", "cpu", "--clock", clock])
    out = capsys.readouterr().out
    assert f"ratios on the {clock} clock" in out, out
    assert f"  overhead {overhead}x" in out and f"overhead={overhead}x" in out, out


def test_the_cpu_clock_is_a_cpu_device_setting():
    """The process CPU time says nothing of a GPU's work: --clock cpu counts on a CPU device only."""
    from allo_lightning.bench.settings import BenchSettings

    s = BenchSettings(clock="cpu")
    assert (s.clock_on("cpu"), s.clock_on("cuda"), s.clock_on("mps")) == ("cpu", "wall", "wall")
    assert BenchSettings().clock_on("cpu") == "wall"


@pytest.mark.slow
def test_scoring_bench_agrees_with_the_original_loop(capsys):
    """bench --scoring on a tiny shape: synthetic maps laid out by the ESM-C alphabet; the original loop's
    observed score equals the seed score from the package's statistics (the benchmark's own check)."""
    import re

    from allo_lightning.bench.extraction import run_scoring

    summary = run_scoring(n_proteins=2, shape="tiny", heads_timed=2)
    text = capsys.readouterr().out
    assert summary.startswith("scoring_speedup=")
    diff = float(re.search(r"seed score from the statistics\|[^:]*: ([0-9.e+-]+)", text).group(1))
    assert diff < 1e-6 and "8 of 8 heads testable" in text, text


@pytest.mark.slow
def test_table_stops_on_a_signal_and_marks_failed_rows(monkeypatch, capsys):
    """bench --table: a signal (Interrupted, as SIGTERM raises in extract) stops the table at once (one
    failed row was caught and the table timed on); a row that fails for another reason is FAILED and its
    ratios read n/a in the summary (they printed ``nanx``)."""
    from allo_lightning.bench import table
    from allo_lightning.errors import Interrupted

    def stopped(*_a, **_k):
        raise Interrupted("stopped by SIGTERM")

    monkeypatch.setattr(table, "extract_on", stopped)
    with pytest.raises(Interrupted):
        table.run_table(torch.device("cpu"), max_tokens=512, residues=150, shape="tiny", kernels=("chunked",))
    out = capsys.readouterr().out
    assert "plain forward fp32" in out and "FAILED" not in out and "summary" not in out

    def broken(*_a, **_k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(table, "extract_on", broken)
    results = table.run_table(torch.device("cpu"), max_tokens=512, residues=150, shape="tiny", kernels=("chunked",))
    out = capsys.readouterr().out
    assert "extract fp32 [chunked]" not in results and "plain forward fp32" in results
    assert "FAILED: RuntimeError: out of memory" in out and "nan" not in out
    assert "extract / plain n/a" in out and "bf16 vs fp32 end to end [chunked]: n/a" in out
    assert re.search(r"fp32 \[chunked\]: extract / plain n/a, extract / probs n/a, statistics / plain \d+\.\d{3}x", out)
