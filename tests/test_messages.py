"""Messages (allo_lightning.messages): the library logs, the shell configures the console once per command
(-q / default / -v), only rank zero speaks, run.log keeps every message, and the Python API neither prints
Lightning's banners nor hides that the tiny backbone means nothing."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import warnings

import pytest

from allo_lightning import extract as extract_cmd
from allo_lightning import messages
from allo_lightning.backbone import MeaninglessScoresWarning, load_backbone

from .conftest import REPO, random_proteins, write_table


@pytest.fixture
def console():
    """messages.configure for a test, undone afterwards."""
    yield messages.configure
    messages.unconfigure()


def _extract(tmp_path, *flags: str) -> list[str]:
    table = write_table(tmp_path / "t.tsv", random_proteins(3, seed=5))
    return ["--data.path", str(table), "--model.backbone", "tiny", "--trainer.accelerator", "cpu",
            "--trainer.default_root_dir", str(tmp_path / "out"), "--model.cache_dir", str(tmp_path / "cache"),
            "--trainer.enable_progress_bar", "false", *flags]


def test_default_quiet_and_verbose(tmp_path, capsys):
    """Default: INFO lines on stdout, the tiny backbone's warning on stderr, no debug line; -q: no INFO line,
    the warning still there; -v: debug lines too. run.log holds every message of the run."""
    extract_cmd.main(_extract(tmp_path))
    default = capsys.readouterr()
    assert "extracted 3 proteins" in default.out and "cache: " in default.out
    assert "extraction: 3 distinct sequences" not in default.out  # a debug line
    assert default.err.splitlines() == [f"WARNING: {messages_text()}"]
    log = (tmp_path / "out" / "run.log").read_text()
    assert "extracted 3 proteins" in log and f"WARNING: {messages_text()}" in log  # log records reach run.log

    extract_cmd.main(_extract(tmp_path, "-q"))
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err.splitlines() == [f"WARNING: {messages_text()}"]
    assert "extracted 3 proteins" not in (tmp_path / "out" / "run.log").read_text().split("\n", 2)[2]

    extract_cmd.main(_extract(tmp_path, "--verbose"))
    verbose = capsys.readouterr()
    assert "extraction: 3 distinct sequences, 3 in the cache" in verbose.out  # debug lines
    assert "backbone tiny-" in verbose.out and "extracted 3 proteins" in verbose.out
    assert "extraction: 3 distinct sequences" in (tmp_path / "out" / "run.log").read_text()
    # the command's console is undone when it ends: the library is silent again (Python's default)
    assert not logging.getLogger("allo_lightning").handlers


def messages_text() -> str:
    from allo_lightning.backbone import meaningless_message

    return meaningless_message("tiny")


def test_quiet_hides_the_progress_bars(tmp_path, capsys):
    """-q ("only warnings and errors") also hides the progress bars (Lightning's, predict's); without it the
    bar is drawn; through the Python API (no console configured) the setting alone decides."""
    from allo_lightning.config import TrainerConfig

    args = [a for a in _extract(tmp_path) if a not in ("--trainer.enable_progress_bar", "false")]
    extract_cmd.main([*args, "--model.cache_dir", str(tmp_path / "c1")])
    shown = capsys.readouterr()
    assert "extracting" in shown.err  # the control: a bar without -q (attention.run.ExtractionBar)
    # named for what it does, and on stderr: Lightning's own said "Predicting DataLoader 0", on stdout
    assert "Predicting" not in shown.out + shown.err and "%|" not in shown.out and "batch/s" in shown.err
    extract_cmd.main([*args, "--model.cache_dir", str(tmp_path / "c2"), "--trainer.default_root_dir",
                      str(tmp_path / "out2"), "-q"])
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err.splitlines() == [f"WARNING: {messages_text()}"], quiet.err
    assert TrainerConfig().kwargs()["enable_progress_bar"] is True  # the API: nothing configured
    messages.configure(logging.WARNING)
    try:
        assert TrainerConfig().kwargs()["enable_progress_bar"] is False
    finally:
        messages.unconfigure()


def test_quiet_and_verbose_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        extract_cmd.main(_extract(tmp_path, "-q", "-v"))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and err.startswith("error: -q/--quiet and -v/--verbose")
    assert not (tmp_path / "cache").exists()  # before any work


def test_levels_and_streams(console, capsys):
    console(logging.INFO)
    log = logging.getLogger("allo_lightning.some.module")
    log.debug("a detail")
    log.info("said")
    log.warning("careful")
    log.error("broken")
    got = capsys.readouterr()
    assert got.out == "said\n" and got.err == "WARNING: careful\nERROR: broken\n"
    console(logging.WARNING)  # replaces the first handler: each record once
    log.info("said")
    log.warning("careful")
    got = capsys.readouterr()
    assert got.out == "" and got.err == "WARNING: careful\n"
    console(logging.DEBUG)
    log.debug("a detail")
    assert capsys.readouterr().out == "a detail\n"


@pytest.mark.parametrize("zero", [True, False])
def test_only_rank_zero_speaks_below_error(console, capsys, zero):
    """A fake rank: records below ERROR are dropped on ranks other than zero; errors always pass."""
    console(logging.DEBUG, is_rank_zero=lambda: zero)
    log = logging.getLogger("allo_lightning.x")
    log.info("info")
    log.warning("warn")
    log.error("err")
    got = capsys.readouterr()
    if zero:
        assert got.out == "info\n" and got.err == "WARNING: warn\nERROR: err\n"
    else:
        assert got.out == "" and got.err == "ERROR: err\n"


def test_rank_is_read_from_the_launchers_variables(console, capsys, monkeypatch):
    """Without a fake: the filter asks allo_lightning.distributed, which reads LOCAL_RANK / NODE_RANK..."""
    from allo_lightning.distributed import RANK_VARIABLES

    for key in RANK_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    console(logging.INFO)
    log = logging.getLogger("allo_lightning.x")
    monkeypatch.setenv("LOCAL_RANK", "1")
    log.warning("from rank one")
    monkeypatch.setenv("LOCAL_RANK", "0")
    log.warning("from rank zero")
    assert capsys.readouterr().err == "WARNING: from rank zero\n"


def test_the_api_warns_that_the_tiny_backbone_means_nothing():
    with pytest.warns(MeaninglessScoresWarning, match="mean NOTHING"):
        load_backbone("tiny")
    with pytest.warns(MeaninglessScoresWarning, match="'esm2_tiny'"):
        load_backbone("esm2_tiny")


def test_a_command_logs_the_tiny_note_instead_of_the_python_warning(tmp_path, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extract_cmd.main(_extract(tmp_path))
    assert not [w for w in caught if issubclass(w.category, MeaninglessScoresWarning)]
    got = capsys.readouterr()
    assert f"NOTE: {messages_text()}" in got.out and f"WARNING: {messages_text()}" in got.err


API = textwrap.dedent("""
    import logging, sys, tempfile
    from allo_lightning.analysis import analyse_heads
    from allo_lightning.attention import extract
    from allo_lightning.backbone import load_backbone
    from allo_lightning.config import HeadsConfig, ProbeConfig
    from allo_lightning.probe import train_val_test
    from allo_lightning.workflow import fit_split
    from tests.conftest import random_proteins

    backbone = load_backbone("tiny")
    proteins = random_proteins(8, lo=20, hi=30, seed=3)
    result = extract(proteins, backbone, cache_dir=tempfile.mkdtemp(),
                     trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False})
    heads = analyse_heads(result, proteins, HeadsConfig(strategy="top_k", top_k=2, n_permutations=20))
    split = train_val_test(proteins, "cluster", val_fraction=0.25, test_fraction=0.25, seed=0)
    fit = fit_split(split, {p.id: s for p, s in result}, ProbeConfig(max_epochs=2),
                    HeadsConfig(strategy="top_k", top_k=2, n_permutations=20))
    cuda = logging.getLogger("lightning.pytorch.accelerators.cuda").isEnabledFor(logging.INFO)
    print("API DONE", "cuda-info-shown" if cuda else "cuda-info-hidden")
""")


def test_the_python_api_prints_no_lightning_banners():
    """The README's API (extraction, head analysis, a probe fit: both Trainers) in a fresh process: none of
    Lightning's GPU/TPU banners, tips or LOCAL_RANK lines, and the tiny backbone's warning once."""
    proc = subprocess.run([sys.executable, "-c", API], cwd=REPO, capture_output=True, text=True, timeout=600)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-3000:]
    assert "API DONE cuda-info-hidden" in proc.stdout
    for banner in ("GPU available", "TPU available", "💡", "litlogger", "litmodels", "LOCAL_RANK",
                   "`Trainer.fit` stopped", "LeafSpec"):
        assert banner not in printed, f"{banner!r} printed:\n{printed[-3000:]}"
    assert printed.count("MeaninglessScoresWarning") == 1 and "mean NOTHING" in proc.stderr


def test_a_command_run_as_a_module_says_its_lines(tmp_path):
    """``python -m allo_lightning.extract`` runs the module as ``__main__``: its lines still reach the console
    (a logger named ``__name__`` there is outside ``allo_lightning`` and was silent)."""
    proc = subprocess.run([sys.executable, "-m", "allo_lightning.extract", *_extract(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "extracted 3 proteins" in proc.stdout and "cache: " in proc.stdout, proc.stdout
    assert proc.stderr.splitlines() == [f"WARNING: {messages_text()}"], proc.stderr
