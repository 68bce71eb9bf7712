"""One mechanism for errors (issue 19): settings are validated once, by the config dataclasses that the
command line and the Python API both build, with the same words either way; the core (analysis, probe,
attention, backbone, data) raises one type, :class:`allo_lightning.errors.AlloError` (a UserError, so the
shell prints one line and exits 2, and a ValueError, so ``except ValueError`` keeps working)."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from allo_lightning import config
from allo_lightning import extract as extract_cmd
from allo_lightning import report as report_cmd
from allo_lightning.errors import AlloError, BackboneError, CheckpointError, InputError, OutputError, UserError

from .conftest import CPU, REPO, random_proteins, write_table

CORE = ("analysis", "probe", "attention", "backbone", "data", "structures")


def test_alloerror_is_a_user_error_and_a_value_error():
    assert issubclass(AlloError, UserError) and issubclass(AlloError, ValueError)
    # the located kinds of bad value are AlloErrors that say where
    assert issubclass(InputError, AlloError) and issubclass(CheckpointError, AlloError)
    assert not issubclass(BackboneError, AlloError) and not issubclass(OutputError, AlloError)


# -- the core raises AlloError with a useful message --------------------------------------------------------
def _stats(n_layers: int, n_heads: int, length: int):
    from allo_lightning.attention import ProteinStats

    z = torch.zeros(n_layers, n_heads, length)
    return ProteinStats(received=z, count=z.clone(), mass=z.clone(), total=torch.zeros(n_layers, n_heads))


def _bootstrap_n_boot_0():
    from allo_lightning.probe.bootstrap import bootstrap_ci

    bootstrap_ci([np.array([0, 1, 0]), np.array([1, 0])], [np.array([.1, .9, .2]), np.array([.8, .3])], n_boot=0)


def _paired_bootstrap_bad_level():
    from allo_lightning.probe.bootstrap import paired_bootstrap

    y, s = [np.array([0, 1, 0]), np.array([1, 0])], [np.array([.1, .9, .2]), np.array([.8, .3])]
    paired_bootstrap(y, s, s, level=1.5)


def _fold_bootstrap_negative_n_boot():
    from allo_lightning.probe.bootstrap import FoldBootstrap

    FoldBootstrap([(np.array([0, 1]), np.array([0, 0]))], n_boot=-5)


def _features_wrong_length():
    from allo_lightning.data import Protein
    from allo_lightning.probe.features import FeatureSpec

    FeatureSpec("heads", heads=[(0, 0)]).raw(Protein("A", "MKTAYIAKQR"), _stats(2, 2, 7))


def _features_not_fitted():
    from allo_lightning.data import Protein
    from allo_lightning.probe.features import FeatureSpec

    FeatureSpec("heads", heads=[(0, 0)])(Protein("A", "MKTAYIAKQR"), _stats(2, 2, 10))


def _features_no_heads():
    from allo_lightning.probe.features import FeatureSpec

    FeatureSpec("heads", heads=[])


def _calibration_lengths_differ():
    from allo_lightning.probe.calibration import Calibration

    Calibration.fit(torch.tensor([.1, .5, .9, .7, .2]), torch.tensor([0, 1, 1, 0]), "platt")


def _score_heads_unknown_null():
    from allo_lightning.analysis import score_heads

    score_heads([(_stats(1, 1, 6), [1, 0, 0, 0, 0, 0])], 1, 1, n_permutations=10, null="bogus")


def _probe_kind():
    from allo_lightning.probe.module import build_net

    build_net("svm", 3)


def _stats_kernel():
    from allo_lightning.attention import column_stats

    column_stats(torch.full((1, 1, 4, 4), .25), torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool),
                 0.3, kernel="bogus")


CORE_CASES = [
    (_bootstrap_n_boot_0, "n_boot must be a whole number >= 1"),  # was: an interval of NaN, no error
    (_paired_bootstrap_bad_level, "level must be in (0, 1)"),  # was: numpy's percentile error
    (_fold_bootstrap_negative_n_boot, "n_boot must be a whole number >= 1"),  # was: numpy's negative dimensions
    (_features_wrong_length, "statistics cover 7 residues, sequence has 10"),
    (_features_not_fitted, "FeatureSpec.fit() on the training proteins first"),  # was: RuntimeError
    (_features_no_heads, "needs at least one head"),
    (_calibration_lengths_differ, "give one score per label"),  # was: scikit-learn's own error
    (_score_heads_unknown_null, "null must be one of"),
    (_probe_kind, "unknown probe kind 'svm'"),
    (_stats_kernel, "kernel 'bogus'"),
]


@pytest.mark.parametrize("call, phrase", CORE_CASES, ids=[c[0].__name__.lstrip("_") for c in CORE_CASES])
def test_core_functions_raise_alloerror_with_a_useful_message(call, phrase):
    with pytest.raises(AlloError) as info:
        call()
    assert type(info.value) is AlloError, type(info.value)  # the one type, not a located subclass
    assert phrase in str(info.value), str(info.value)


def test_extract_guards_its_plain_arguments_with_alloerror(tiny, tmp_path):
    from allo_lightning.attention import extract

    proteins = random_proteins(1)
    for kwargs, phrase in (({"dtype": "fp16"}, "dtype 'fp16': choose fp32 or bf16"),
                           ({"long": "cut"}, "long 'cut': choose window, skip or error"),
                           ({"window_overlap": tiny.max_length}, f"must be in 0..{tiny.max_length - 1}")):
        with pytest.raises(AlloError, match=phrase.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            extract(proteins, tiny, cache_dir=str(tmp_path / "c"), trainer_kwargs=CPU, **kwargs)
    assert not list((tmp_path / "c").rglob("*.safetensors"))  # nothing computed


def test_no_bare_builtin_errors_or_asserts_in_the_core():
    """The core raises AlloError (or a located subclass), never a bare ValueError/RuntimeError/TypeError/
    AssertionError with user-facing words; ``assert`` (gone under -O) guards nothing. The allowed
    exceptions are internal invariants (bugs), or an error caught and re-raised as a UserError at once."""
    allowed = {
        ("probe/splits.py", "AssertionError"),  # check(): a protein in two parts of a split is a bug
        ("backbone/loading.py", "RuntimeError"),  # _load_into: caught below and re-raised as BackboneError
    }
    found = []
    for path in sorted(p for d in CORE for p in (REPO / "allo_lightning" / d).rglob("*.py")):
        rel = path.relative_to(REPO / "allo_lightning").as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assert):
                found.append(f"{rel}:{node.lineno}: assert")
            elif isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                name = exc.id if isinstance(exc, ast.Name) else None
                if name in ("ValueError", "RuntimeError", "TypeError", "AssertionError", "Exception") \
                        and (rel, name) not in allowed:
                    found.append(f"{rel}:{node.lineno}: raise {name}")
    assert not found, found


# -- a setting is checked once: the same words from the Python API and from the command line ---------------
SETTINGS = [
    # (section, field, bad value, its command-line spelling)
    ("heads", "null", "bogus", "bogus"),
    ("heads", "strategy", "best", "best"),
    ("heads", "top_k", 0, "0"),
    ("heads", "n_permutations", 0, "0"),
    ("model", "dtype", "fp16", "fp16"),
    ("model", "theta", 1.5, "1.5"),
    ("model", "window_overlap", -1, "-1"),
    ("model", "seed", -1, "-1"),
    ("data", "long", "cut", "cut"),
    ("probe", "window", -1, "-1"),
    ("probe", "kind", "svm", "svm"),
    ("probe", "calibration", "sigmoid", "sigmoid"),
    ("probe", "top_k", 0, "0"),
    ("probe", "stats", ["count", "bogus"], "[count, bogus]"),
    ("data", "limit", 0, "0"),
    ("trainer", "devices", 0, "0"),
    ("report", "n_boot", 5, "5"),
    ("report", "scheme", "random", "random"),
    ("trainer", "accelerator", "tpu", "tpu"),
]


@pytest.fixture
def no_model(monkeypatch):
    import allo_lightning.pipeline as pipeline

    def boom(*a, **k):
        raise AssertionError("a backbone was loaded before the refusal")

    monkeypatch.setattr(pipeline, "load_backbone", boom)


@pytest.mark.parametrize("section, name, value, flag_value", SETTINGS, ids=[f"{s}.{n}" for s, n, *_ in SETTINGS])
def test_a_bad_setting_reads_the_same_from_python_and_from_the_command_line(tmp_path, capsys, no_model,
                                                                             section, name, value, flag_value):
    cls = _section_class(section)
    with pytest.raises(InputError) as info:
        cls(**{name: value})
    api = str(info.value)
    assert api.startswith(f"--{section}.{name}: "), api
    table = write_table(tmp_path / "t.tsv", random_proteins(4))
    args = ["--model.backbone", "tiny", "--model.cache_dir", str(tmp_path / "c"), "--data.path", str(table),
            "--trainer.default_root_dir", str(tmp_path / "run"), f"--{section}.{name}", flag_value]
    with pytest.raises(SystemExit) as e:
        report_cmd.main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "Traceback" not in err, err
    assert err == f"error: {api}"
    assert not (tmp_path / "run").exists() and not (tmp_path / "c").exists()


def _section_class(section: str):
    return {"model": config.ModelConfig, "data": config.DataConfig, "trainer": config.TrainerConfig,
            "heads": config.HeadsConfig, "probe": config.ProbeConfig, "report": config.ReportConfig}[section]


def test_every_choice_is_checked_by_the_dataclass():
    """Each Literal field refuses a value outside its choices when the dataclass is built in Python (the
    command line's parser is not the only gate)."""
    for cls in (config.ModelConfig, config.DataConfig, config.TrainerConfig, config.HeadsConfig,
                config.ProbeConfig, config.ReportConfig):
        for f in dataclasses.fields(cls):
            if not config._literals(typing.get_type_hints(cls)[f.name]):
                continue
            bad = ["bogus"] if f.name == "stats" else "bogus"
            with pytest.raises(InputError, match=f"^--.*{f.name}: 'bogus' is not accepted; choose one of: "):
                cls(**{f.name: bad})
    assert config.ProbeConfig(stats=("count", "mass")).stats == ("count", "mass")  # a tuple from Python is a list
    assert config.TrainerConfig(devices="auto").devices == "auto" and config.TrainerConfig(devices=2).devices == 2


# -- a core error on the command line: one line, exit 2 (was a traceback) -------------------------------------
def test_an_unknown_stats_kernel_is_one_line_before_the_model(tmp_path, capsys, monkeypatch, no_model):
    table = write_table(tmp_path / "t.tsv", random_proteins(2))
    monkeypatch.setenv("ALLO_LIGHTNING_STATS_KERNEL", "bogus")
    with pytest.raises(SystemExit) as e:
        extract_cmd.main(["--model.backbone", "tiny", "--model.cache_dir", str(tmp_path / "c"), "--data.path",
                          str(table), "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                          "--trainer.default_root_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert err == ("error: ALLO_LIGHTNING_STATS_KERNEL='bogus': choose one of auto, chunked, fused, compiled, triton, "
                   "flash.")
    assert not Path(tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.safetensors"))
