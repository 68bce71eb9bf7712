"""The command-line shell: every refusal is one line on stderr, exit 2, no traceback, and comes before
any model is loaded; signals stop a run without leaving results a later command would accept.

Each case here was a traceback (or a silent wrong result) before the shell was redesigned (issue 9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allo_lightning import evaluate, fit, predict, report
from allo_lightning import extract as extract_cmd
from allo_lightning import heads as heads_cmd
from allo_lightning.errors import Interrupted, UserError
from allo_lightning.shell import COMMANDS, console_main

from .conftest import REPO, random_proteins, write_table

PROBE_FAST = ["--heads.n_permutations", "50", "--probe.max_epochs", "2", "--probe.batch_size", "128"]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a backbone is loaded: refusals must come before any expensive work."""
    import allo_lightning.pipeline as pipeline

    def boom(*a, **k):
        raise AssertionError("a backbone was loaded before the refusal")

    monkeypatch.setattr(pipeline, "load_backbone", boom)


@pytest.fixture
def table(tmp_path):
    return write_table(tmp_path / "train.tsv", random_proteins(8, lo=25, hi=40, seed=3))


def base(tmp_path, table, out="run"):
    return ["--model.backbone", "tiny", "--model.cache_dir", str(tmp_path / "cache"), "--data.path", str(table),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / out)]


def fit_args(tmp_path, table):
    return base(tmp_path, table) + ["--probe.checkpoint_dir", str(tmp_path / "ckpt")]


def refused(capsys, main, args, *phrases) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, (phrase, err)
    return err


@pytest.mark.parametrize("flags, phrases", [
    (["--probe.kind", "svm"], ["--probe.kind", "'svm'", "logreg, mlp"]),
    (["--probe.split", "random"], ["--probe.split", "cluster, protein"]),
    (["--probe.kindd", "mlp"], ["unknown flag --probe.kindd", "Did you mean --probe.kind?"]),
    (["--probe.kin", "mlp"], ["unknown flag --probe.kin", "Did you mean --probe.kind?"]),  # no abbreviations
    (["--trainer.precision", "bf16-mixed"], ["--trainer.precision", "--model.dtype"]),
    (["--trainer.devices", "0"], ["--trainer.devices", "0"]),
    (["--trainer.accelerator", "tpu"], ["--trainer.accelerator", "'tpu'"]),
    (["--probe.val_fraction", "0.5", "--probe.test_fraction", "0.5"], ["--probe.val_fraction", "less than 1"]),
    (["--probe.lr", "0"], ["--probe.lr", "outside"]),
    (["--probe.pos_weight", "-1"], ["--probe.pos_weight"]),
    (["--probe.batch_size", "0"], ["--probe.batch_size"]),
    (["--model.theta", "1"], ["--model.theta", "(0, 1)"]),
    (["--model.theta", "nan"], ["--model.theta"]),
    (["--model.backbone", "esmc300m"], ["--model.backbone", "did you mean 'esmc_300m'"]),
    (["--heads.strategy", "best"], ["--heads.strategy", "significance"]),
    (["stray"], ["unexpected argument 'stray'"]),
])
def test_bad_flags_are_refused_at_parse_time(tmp_path, table, capsys, no_model, flags, phrases):
    refused(capsys, fit.main, fit_args(tmp_path, table) + flags, *phrases)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()  # nothing done


@pytest.mark.parametrize("main, args, flags", [
    (predict.main, ["--data.path", "x.fasta"], ["--checkpoint FILE", "--out DIR"]),
    (predict.main, ["--checkpoint", "c.safetensors", "--data.path", "x.fasta"], ["--out DIR"]),
    (evaluate.main, ["--data.path", "x.tsv"], ["--checkpoint FILE"]),
])
def test_a_missing_required_flag_is_named_as_the_flag_to_add(capsys, no_model, main, args, flags):
    """It said ``error: the following arguments are required: checkpoint, out`` (argparse's words, no flag)."""
    err = refused(capsys, main, args, "missing", *flags, "probe checkpoint written by fit" if
                  "--checkpoint FILE" in flags else "output folder")
    assert "the following arguments" not in err and ("--checkpoint" in err) == ("--checkpoint FILE" in flags)


def test_a_required_flag_given_in_a_config_file_is_not_missing(tmp_path, capsys, no_model):
    (tmp_path / "c.yaml").write_text(f"checkpoint: {tmp_path / 'none.safetensors'}\nout: {tmp_path / 'o'}\n")
    err = refused(capsys, predict.main, ["--config", str(tmp_path / "c.yaml"), "--data.path", "x.fasta"], "x.fasta")
    assert "missing" not in err and "required" not in err


def test_report_train_sizes_and_folds_are_checked(tmp_path, table, capsys, no_model):
    refused(capsys, report.main, base(tmp_path, table) + ["--report.train_sizes", "0", "2"], "--report.train_sizes")
    refused(capsys, report.main, base(tmp_path, table) + ["--report.folds", "1"], "--report.folds")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_accelerator_is_refused_before_loading(tmp_path, table, capsys, no_model):
    refused(capsys, extract_cmd.main, base(tmp_path, table) + ["--trainer.accelerator", "cuda"], "no CUDA device")
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        refused(capsys, extract_cmd.main, base(tmp_path, table) + ["--trainer.accelerator", "mps"], "MPS")


def test_unusable_cache_and_output_folders(tmp_path, table, capsys, no_model):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    refused(capsys, extract_cmd.main, base(tmp_path, table) + ["--model.cache_dir", str(a_file)],
            "--model.cache_dir", "is a file")
    refused(capsys, extract_cmd.main, base(tmp_path, table) + ["--trainer.default_root_dir", str(a_file)],
            "is a file")
    # /proc cannot be written even by root (a permission check alone would say yes to root)
    refused(capsys, extract_cmd.main, base(tmp_path, table) + ["--model.cache_dir", "/proc/allo_cache"],
            "--model.cache_dir", "cannot be written")
    refused(capsys, heads_cmd.main, base(tmp_path, table) + ["--trainer.default_root_dir", "/proc/allo_out"],
            "cannot be written")
    assert a_file.read_text() == "x"


def test_fit_checkpoint_that_is_a_folder(tmp_path, table, capsys, no_model):
    (tmp_path / "ckdir").mkdir()
    refused(capsys, fit.main, fit_args(tmp_path, table) + ["--checkpoint", str(tmp_path / "ckdir")], "is a folder")


@pytest.mark.parametrize("content, phrase", [
    (bytes(range(256)) * 4, "not a text file"),
    (b"model:\n  backbone: tiny\n  thetta: 0.3\n", "did you mean model.theta"),
    (b"modle:\n  backbone: tiny\n", "did you mean 'model'"),
    # a misspelt own flag of fit is matched against fit's settings too, and they are listed
    (b"overwrit: true\n", "did you mean 'overwrite'?). Sections: model, data, trainer, heads, probe, report, seed; "
                           "settings of fit: checkpoint, overwrite."),
    (b"probe:\n  kind: svm\n", "'svm'"),
    (b"model: [unclosed\n", "line"),
    (b"- a\n- b\n", "expected sections"),
])
def test_bad_config_files(tmp_path, table, capsys, no_model, content, phrase):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(content)
    refused(capsys, fit.main, fit_args(tmp_path, table) + ["--config", str(cfg)], "--config", phrase)


def test_config_sections_of_other_commands_are_ignored_and_flags_override(tmp_path, table):
    from allo_lightning.shell import parse

    cfg = parse(extract_cmd.main.spec, ["--config", str(REPO / "configs" / "gpcr.yaml"), "--model.backbone", "tiny",
                                        "--data.limit", "3"])
    assert cfg.model.backbone == "tiny" and cfg.data.limit == 3 and not hasattr(cfg, "probe")
    fit_cfg = parse(fit.main.spec, ["--config", str(REPO / "configs" / "smoke.yaml"), "--heads.proteins", "A", "B",
                                    "--probe.stats", "count", "mass"])
    assert fit_cfg.heads.proteins == ["A", "B"] and fit_cfg.probe.stats == ["count", "mass"]
    assert parse(fit.main.spec, ["--heads.proteins", "[A, B]"]).heads.proteins == ["A", "B"]


def test_a_refusal_is_made_from_the_declared_type_and_the_value_as_typed(tmp_path, capsys, no_model):
    """jsonargparse's refusal carries no key: the shell finds the flag (or config file value) it refused
    and words the line from that flag's declared type, showing the value as the user typed it."""
    from allo_lightning import evaluate

    refused(capsys, report.main, ["--report.ks", "1", "x"], "--report.ks: '1 x' is not accepted",
            "a list of whole numbers")
    refused(capsys, report.main, ["--trainer.devices", "two"], "choose one of: auto (or a whole number)")
    refused(capsys, report.main, ["--heads.top_k"], "--heads.top_k: give a value after the flag")
    cfg = tmp_path / "e.yaml"
    cfg.write_text("bootstrap: many\n")  # a command's own flag, from a config file
    refused(capsys, evaluate.main, ["--config", str(cfg), "--checkpoint", "x"],
            f"--config {cfg}: --bootstrap: 'many' is not accepted; expected a whole number")
    cfg.write_text("data:\n  bundled: gpcr\n  path: x.tsv\nheads:\n  strategy: original\n  top_k: many\n")
    refused(capsys, heads_cmd.main, ["--config", str(cfg)], f"--config {cfg}: --heads.top_k: 'many'")  # not the others


def test_embedding_checkpoint_is_refused_by_predict(tmp_path, tiny, capsys):
    from allo_lightning.probe import FeatureSpec, build_net, save_checkpoint

    spec = FeatureSpec("embedding", [], log1p=False)
    spec.mean, spec.std = torch.zeros(tiny.d_model), torch.ones(tiny.d_model)
    ckpt = save_checkpoint(tmp_path / "emb.safetensors", build_net("logreg", tiny.d_model), spec, 0.5, tiny, 0.3,
                           {"kind": "logreg"})
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACDEFGHIKLMNPQRSTVWY\n")
    refused(capsys, predict.main, ["--checkpoint", str(ckpt), "--fasta", str(fasta), "--out", str(tmp_path / "p"),
                                   "--trainer.accelerator", "cpu"], "embedding")
    assert not (tmp_path / "p" / "predictions.csv").exists()


def test_console_script_lists_commands_and_suggests(capsys):
    console_main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    with pytest.raises(SystemExit) as e:
        console_main(["fitt"])
    assert e.value.code == 2 and "Did you mean 'fit'?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        console_main([])  # printed the usage on stdout with exit 2 and no error line
    out, err = capsys.readouterr()
    assert e.value.code == 2 and not out and err.count("\n") == 1 and err.startswith("error: give a command: extract")


def test_help_of_a_command_is_short_and_its_own(capsys):
    with pytest.raises(SystemExit) as e:
        console_main(["extract", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--model.backbone" in out and "--trainer.accelerator" in out and "--probe." not in out
    assert "--trainer.max_epochs" not in out and len(out.splitlines()) < 125  # 120 with -q and -v


@pytest.mark.slow
def test_real_process_prints_one_line_and_exits_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "allo_lightning.fit", "--probe.kind", "svm"], capture_output=True,
                         text=True, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "--probe.kind" in res.stderr


# -- signals ----------------------------------------------------------------------------------------
def _signal_after_first(monkeypatch, target, method):
    """Make ``target.method`` send SIGTERM to this process the first time it runs (deterministic)."""
    original = getattr(target, method)
    sent = []

    def wrapped(self, *a, **k):
        out = original(self, *a, **k)
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(target, method, wrapped)
    return sent


class _Child:  # a process Lightning started (subprocess.Popen's part that interrupt uses)
    def __init__(self):
        self.sent = []

    def poll(self):
        return None

    def send_signal(self, signum):
        self.sent.append(signum)


def test_a_signal_is_passed_on_to_the_started_processes_even_one_received_before_they_joined():
    """Several processes started by Lightning: a signal to the first process alone (kill, timeout) reaches the
    others, also one received while they were starting (before Lightning's own handler exists); as the
    passed-on signal, which a child takes only as a first signal (after Ctrl-C, which reaches every process,
    the child still finishes its batch: a second SIGINT would stop it at once)."""
    from allo_lightning import interrupt

    child = _Child()
    with interrupt.installed(), interrupt.graceful():
        os.kill(os.getpid(), signal.SIGTERM)  # recorded, nobody to tell yet
        assert interrupt.requested() and child.sent == []
        interrupt.forward_to(lambda: [child])
        assert child.sent == [interrupt.PASSED_ON]
        interrupt.forward_to(None)

    with interrupt.installed(), interrupt.graceful():  # in a child: Ctrl-C, then the first process passes it on
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), interrupt.PASSED_ON)  # not a second signal: no stop at once
        with pytest.raises(Interrupted) as e:
            interrupt.check()
        assert e.value.exit_code == 128 + signal.SIGINT


def test_sigterm_during_extract_keeps_the_finished_batch_and_says_resume(tmp_path, capsys, monkeypatch):
    from allo_lightning.attention import AttentionExtractor, StatsCache
    from allo_lightning.backbone import load_backbone

    proteins = random_proteins(6, lo=20, hi=30, seed=5)
    table = write_table(tmp_path / "t.tsv", proteins)
    args = base(tmp_path, table) + ["--model.max_tokens", "1"]  # one protein per batch
    sent = _signal_after_first(monkeypatch, AttentionExtractor, "predict_step")
    with pytest.raises(SystemExit) as e:
        extract_cmd.main(args)
    err = capsys.readouterr().err
    assert sent and e.value.code == 128 + signal.SIGTERM
    assert "interrupted" in err and "run the same command again to resume" in err and "Traceback" not in err
    cache = StatsCache(tmp_path / "cache", load_backbone("tiny").identity, 0.3)
    done = [p for p in proteins if cache.complete(p.sequence)]
    assert len(done) == 1  # the batch in flight was finished and cached; nothing after it ran
    monkeypatch.undo()
    summary = extract_cmd.main(args)  # resumes
    assert summary["from_cache"] == 1 and summary["computed"] == 5


def test_sigterm_after_the_last_batch_still_stops_the_command(tmp_path, capsys, monkeypatch):
    """A signal that comes after the last batch was checked (while Lightning ends the run) stops the command
    like any other (every protein is cached). Before, it was recorded and forgotten: the command went on and
    exited 0 (so did a ddp_spawn run, whose batches run in other processes)."""
    from allo_lightning.attention.extractor import CacheWriter

    table = write_table(tmp_path / "t.tsv", random_proteins(3, lo=20, hi=30, seed=5))
    sent = _signal_after_first(monkeypatch, CacheWriter, "on_predict_end")
    with pytest.raises(SystemExit) as e:
        extract_cmd.main(base(tmp_path, table))
    err = capsys.readouterr().err
    assert sent and e.value.code == 128 + signal.SIGTERM and "interrupted by SIGTERM" in err, err


def test_sigterm_during_a_windowed_protein_stops_between_windows(tmp_path, capsys, monkeypatch):
    """A stop waited for a whole windowed protein (over 5 minutes with a large overlap): the signal is
    now acted on between windows. The tiny backbone's context is lowered to 64 residues, so a
    300-residue protein runs as 6 windows; SIGTERM arrives during the first."""
    import allo_lightning.pipeline as pipeline
    from allo_lightning.attention import AttentionExtractor
    from allo_lightning.backbone import load_backbone

    tiny = load_backbone("tiny")
    tiny.max_length = 64
    monkeypatch.setattr(pipeline, "load_backbone", lambda *a, **k: tiny)
    calls = []
    original = AttentionExtractor._run

    def counting(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(AttentionExtractor, "_run", counting)
    sent = _signal_after_first(monkeypatch, AttentionExtractor, "_run")
    table = write_table(tmp_path / "t.tsv", random_proteins(1, lo=300, hi=300, seed=2))
    with pytest.raises(SystemExit) as e:
        extract_cmd.main(base(tmp_path, table) + ["--model.window_overlap", "16"])
    assert sent and e.value.code == 128 + signal.SIGTERM
    assert "interrupted" in capsys.readouterr().err
    assert len(calls) == 1  # not the 6 windows of the protein


def test_sigterm_during_fit_exits_nonzero_without_results(tmp_path, table, capsys, monkeypatch):
    from allo_lightning.probe import ProbeModule

    sent = _signal_after_first(monkeypatch, ProbeModule, "training_step")
    with pytest.raises(SystemExit) as e:
        fit.main(fit_args(tmp_path, table) + PROBE_FAST)
    assert sent and e.value.code == 128 + signal.SIGTERM
    assert "interrupted" in capsys.readouterr().err
    out = tmp_path / "run"
    assert not (out / "metrics.json").exists() and not list((tmp_path / "ckpt").glob("*.safetensors"))


def test_user_errors_share_one_base_class():
    from allo_lightning import errors

    for name in ("InputError", "BackboneError", "CheckpointError", "OutputExistsError", "OutputError", "Interrupted"):
        assert issubclass(getattr(errors, name), UserError)
    assert Path(errors.__file__).name == "errors.py"


def test_data_checks_come_before_the_model(tmp_path, table, capsys, no_model):
    """Checks that need the data but no model: folds vs clusters, unknown --heads.proteins, orthosteric
    positions outside their protein, too few clusters to split."""
    refused(capsys, report.main, base(tmp_path, table) + ["--report.folds", "9"], "--report.folds 9", "at most 4")
    refused(capsys, heads_cmd.main, base(tmp_path, table) + ["--heads.proteins", "P0", "nope"], "--heads.proteins",
            "'nope'")
    refused(capsys, heads_cmd.main, base(tmp_path, table) + ["--heads.orthosteric", "{P0: [1, 999]}"],
            "--heads.orthosteric", "999")
    two = write_table(tmp_path / "two.tsv", random_proteins(2, seed=1))
    refused(capsys, fit.main, fit_args(tmp_path, two), "only 1 clusters")


@pytest.mark.slow
def test_console_script_is_installed_and_runs_a_command(tmp_path):
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "allo-lightning"]
    assert script.load() is console_main
    exe = Path(sys.executable).with_name("allo-lightning")
    res = subprocess.run([str(exe), "extract", "--model.thetta", "0.3"], capture_output=True, text=True, check=False,
                         cwd=tmp_path)
    assert res.returncode == 2 and "Did you mean --model.theta?" in res.stderr and "Traceback" not in res.stderr
    table = write_table(tmp_path / "t.tsv", random_proteins(2, lo=20, hi=25, seed=1))
    ok = subprocess.run([str(exe), "extract", "--model.backbone", "tiny", "--data.path", str(table),
                         "--model.cache_dir", str(tmp_path / "c"), "--trainer.default_root_dir", str(tmp_path / "o"),
                         "--trainer.accelerator", "cpu"], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert ok.returncode == 0 and (tmp_path / "o" / "extraction.json").is_file(), ok.stderr  # success: exit 0


def test_version_without_torch():
    """--version on the console script and python -m allo_lightning prints the package version, and
    imports neither torch nor Lightning (it answers at once)."""
    import re

    from allo_lightning import __version__

    want = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert __version__ == want
    code = ("import sys\nfrom allo_lightning.shell import console_main\nconsole_main(['--version'])\n"
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'heavy import'\n")
    for cmd in ([sys.executable, "-c", code], [sys.executable, "-m", "allo_lightning", "--version"]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"allo_lightning {want}"


def test_license_and_citation_files():
    import re

    import yaml

    pyproject = (REPO / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; we support 3.10)
    assert 'license = { text = "MIT" }' in pyproject
    project = {"version": re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 allo_lightning contributors" in text
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["version"] == project["version"] and cff["license"] == "MIT"
    dois = [r.get("doi") for r in cff["references"]]
    assert "10.1101/2024.09.28.615583" in dois
    assert any("BERTology" in r["title"] and r["year"] == 2021 for r in cff["references"])
