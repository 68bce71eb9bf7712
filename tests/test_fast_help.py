"""``--help`` and a flag error answer before anything heavy is imported (issue 19: they took 5-15 s
because Lightning and torch were imported before the command line was parsed).

For every command and every way of starting it (``allo-lightning CMD``, ``python -m allo_lightning CMD``,
``python -m allo_lightning.CMD``, bench included) a fresh interpreter runs
``--help``, a mistyped flag, a value the parser refuses and a value a config section refuses, and
reports which of torch, Lightning, matplotlib, esm, transformers and scikit-learn got imported: none
may be. Time is not asserted here (a loaded machine says nothing); the README gives the measurement.

One interpreter runs every in-process case (``runpy``, as ``python -m`` does) and says which case
first imported a heavy module; two real subprocesses check the console script and ``-m`` themselves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

HEAVY = ("torch", "lightning", "matplotlib", "esm", "transformers", "sklearn")
COMMANDS = ("extract", "heads", "fit", "evaluate", "predict", "report", "bench")
# a mistyped flag of each command (the closest valid flag is suggested)
TYPO = {"extract": "--data.pth", "heads": "--heads.strategi", "fit": "--probe.kindd", "evaluate": "--checkpont",
        "predict": "--chekpoint", "report": "--report.flods", "bench": "--quik"}
# values refused by the parser (a Literal) and by a config section's range check (after parsing)
BAD_VALUE = [("fit", ["--model.dtype", "fp64"], "--model.dtype"),
             ("extract", ["--model.backbone", "esmc300m"], "--model.backbone"),  # checked against the registry
             ("heads", ["--heads.q_max", "0"], "--heads.q_max"),
             ("fit", ["--probe.lr", "-1"], "--probe.lr"),
             ("report", ["--model.window_overlap", "-3"], "--model.window_overlap"),
             ("evaluate", ["--checkpoint", "x.safetensors", "--bootstrap", "0"], "--bootstrap"),
             ("predict", ["--checkpoint", "x", "--out", "o", "--fasta", "f.fa", "--per_protein", "-1"],
              "--per_protein"),
             ("predict", ["--checkpoint", "x", "--out", "o", "--fasta", "f.fa", "--min_identity", "2"],
              "--min_identity"),
             ("evaluate", ["--checkpoint", "x", "--structure", "no/such.pdb"], "--structure"),
             ("bench", ["--repeats", "0"], "--repeats"),
             ("bench", ["--clock", "sun"], "--clock"),
             ("bench", ["--bf16"], "--bf16"),  # refused by bench's settings (the command's check)
             ("bench", ["--table", "--kernels", "fast"], "--kernels")]

# runs ARGV as `python -m MODULE ARGV` does (runpy, sys.argv[0] = the module's file), in this process
RUNNER = r"""
import contextlib, io, json, runpy, sys
HEAVY = set(json.loads(sys.argv[1]))
cases = json.loads(sys.argv[2])

def heavy():
    return sorted({m.split(".")[0] for m in sys.modules} & HEAVY)

out = []
for module, argv in cases:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    saved = sys.argv[:]
    sys.modules.pop(module, None)  # as in a fresh `python -m MODULE` (an earlier case may have imported it)
    sys.argv = [module] + argv
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    out.append({"module": module, "argv": argv, "code": code, "stdout": stdout.getvalue(),
                "stderr": stderr.getvalue(), "heavy": heavy()})
print(json.dumps(out))
"""


def _cases() -> list[tuple[str, list[str]]]:
    cases = [("allo_lightning", ["--help"]), ("allo_lightning", ["--version"]), ("allo_lightning", ["fitt"])]
    for cmd in COMMANDS:
        for args in (["--help"], [TYPO[cmd], "x"], ["--version"]):
            cases.append(("allo_lightning", [cmd, *args]))  # as the console script: the same console_main
            cases.append((f"allo_lightning.{cmd}", args))
    for cmd, args, _ in BAD_VALUE:
        cases.append(("allo_lightning", [cmd, *args]))
    return cases


@pytest.fixture(scope="module")
def ran() -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(HEAVY), json.dumps(_cases())], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _first_heavy(ran: list[dict]) -> str:
    for r in ran:
        if r["heavy"]:
            return f"{r['module']} {' '.join(r['argv'])} imported {r['heavy']}"
    return ""


def test_help_and_flag_errors_import_nothing_heavy(ran):
    assert _first_heavy(ran) == ""


def _one_line_error(r: dict, *phrases: str) -> None:
    err = r["stderr"].strip()
    where = f"{r['module']} {' '.join(r['argv'])}"
    assert r["code"] == 2, (where, r["code"], err)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, (where, err)
    for phrase in phrases:
        assert phrase in err, (where, err)


def test_the_dispatcher_answers_too(ran):
    top = {r["argv"][0]: r for r in ran if r["module"] == "allo_lightning" and len(r["argv"]) == 1}
    assert top["--help"]["code"] == 0 and all(c in top["--help"]["stdout"] for c in COMMANDS)
    assert top["--version"]["code"] == 0 and top["--version"]["stdout"].startswith("allo_lightning ")
    _one_line_error(top["fitt"], "unknown command 'fitt'", "Did you mean 'fit'?")


def test_every_command_answers_version(ran):
    """``allo-lightning fit --version`` (and every command's, also as a module) prints the version, exit 0
    (was "unknown flag --version"), without a heavy import (checked for every case above)."""
    from allo_lightning import __version__

    runs = [r for r in ran if r["argv"][-1:] == ["--version"]
            and len(r["argv"]) + (r["module"] != "allo_lightning") == 2]  # a command's, not the dispatcher's
    assert len(runs) == 2 * len(COMMANDS)
    for r in runs:
        assert r["code"] == 0 and r["stdout"].strip() == f"allo_lightning {__version__}", r


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_lists_the_flags_under_the_right_name(ran, cmd):
    for r in ran:
        if r["argv"][-1:] == ["--help"] and cmd in (r["argv"][0], r["module"].rpartition(".")[2]):
            where = f"{r['module']} {' '.join(r['argv'])}"
            assert r["code"] == 0 and r["stderr"] == "", (where, r["code"], r["stderr"][-2000:])
            prog = f"python -m allo_lightning.{cmd}" if r["module"] != "allo_lightning" else f"allo-lightning {cmd}"
            assert r["stdout"].startswith(f"usage: {prog} "), (where, r["stdout"][:200])
            flag = {"extract": "--data.path", "heads": "--heads.strategy", "fit": "--probe.kind",
                    "evaluate": "--checkpoint", "predict": "--checkpoint", "report": "--report.folds",
                    "bench": "--quick"}[cmd]
            assert flag in r["stdout"], where
            assert "``" not in r["stdout"], where  # the docstring's reST literals are plain text in --help


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_mistyped_flag_is_one_line_naming_the_flag_and_the_closest_one(ran, cmd):
    seen = 0
    for r in ran:
        if TYPO[cmd] in r["argv"]:
            _one_line_error(r, TYPO[cmd])
            assert "did you mean" in r["stderr"].lower(), r["stderr"]
            seen += 1
    assert seen == 2


@pytest.mark.parametrize("cmd, args, flag", BAD_VALUE)
def test_a_refused_value_is_one_line_naming_the_flag(ran, cmd, args, flag):
    (r,) = [r for r in ran if r["module"] == "allo_lightning" and r["argv"] == [cmd, *args]]
    _one_line_error(r, flag)


def _console_script() -> str | None:
    here = Path(sys.executable).parent / "allo-lightning"
    return str(here) if here.exists() else shutil.which("allo-lightning")


@pytest.mark.parametrize("how", ["script", "module"])
def test_the_real_entry_points_import_nothing_heavy(how):
    """``-X importtime`` lists every module the interpreter imported (on stderr)."""
    if how == "script":
        script = _console_script()
        if script is None:
            pytest.skip("the allo-lightning console script is not installed")
        argv = [script, "predict", "--help"]
        env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    else:
        argv = [sys.executable, "-X", "importtime", "-m", "allo_lightning", "predict", "--help"]
        env = dict(os.environ)
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--checkpoint" in proc.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "allo_lightning" in imported  # the import list was read
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
