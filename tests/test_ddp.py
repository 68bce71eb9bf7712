"""Several processes (DDP, CPU, gloo).

- Extraction on 2 processes: every protein's statistics written exactly once, with the values of a
  single-process run (a subprocess ``python -m tests.test_ddp OUT`` so that Lightning's ``ddp`` launcher
  can start the second rank by running the same module again; each rank logs the ids it wrote). Called from
  Python like this (the API), every rank gets every protein back and allo_lightning closes the process group at
  exit (before, a script that did not close it itself sometimes aborted: "terminate called", -6).
- Every command (heads, fit, evaluate, predict, report) on 2 processes started by Lightning itself
  (``--trainer.devices 2 --trainer.strategy ddp``) writes the same files as one process: the same bytes
  for the tables, the same JSON but for timings and the command line. Before, ``heads`` on 2 processes
  died (rank 1 read a cache entry rank 0 was still writing, or found rank 0's heads.csv).
- The same for ``--trainer.strategy ddp_spawn`` (every rank spawned by Lightning; the first process waits),
  and a signal to its first process (or Ctrl-C) stops every spawned process after its batch in flight.
- 3 processes and 2 batches (a rank with nothing to do) for ``extract`` (the values of one process) and for every
  other command (the files of one process): no traceback, nothing waits.
- A process whose own look at the cache finds nothing to run (another job filled it, a network file system shows it
  late) still takes part in a command's shared extraction, under Lightning's launcher and as a cluster node.
- Two "machines" of one process each, started by the test with Lightning's environment variables
  (``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``, ``NODE_RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; loopback only)
  and ``--trainer.num_nodes 2``, as a cluster would: ``fit`` gives the files of one process.

Assumption of the comparisons: every process uses one thread (``OMP_NUM_THREADS=1``, the reference runs
with ``torch.set_num_threads(1)``), so floating-point sums are done in the same order.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allo_lightning.attention import StatsCache, extract
from allo_lightning.attention.extractor import CacheWriter
from allo_lightning.backbone import load_backbone
from tests.conftest import CPU, random_proteins, write_table

ROOT = Path(__file__).resolve().parents[1]
THETA = 0.3
MAX_TOKENS = 120  # several batches of unequal count per rank (see test below)


def ddp_proteins():
    return random_proteins(11, lo=15, hi=70, seed=7)


def _worker(out: Path) -> None:
    """Runs on every rank: extraction through 2-process DDP from Python (the API, as in a user's script), logging
    what this rank wrote, what extract returned here, and whether the process group was still open when the
    interpreter exited (an exit handler registered first runs last)."""
    import atexit

    import torch.distributed as dist

    rank = os.environ.get("LOCAL_RANK", "0")
    atexit.register(lambda: (out / f"open-at-exit-rank{rank}.txt").write_text(str(dist.is_initialized())))
    written: list[str] = []
    original = CacheWriter.write_on_batch_end

    def logging_write(self, trainer, pl_module, prediction, *args, **kwargs):
        original(self, trainer, pl_module, prediction, *args, **kwargs)
        written.extend(pid for pid, _, _ in prediction)
        (out / f"written-rank{trainer.global_rank}.txt").write_text("\n".join(written) + "\n")

    CacheWriter.write_on_batch_end = logging_write
    backbone = load_backbone("tiny", seed=0)
    kw = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "enable_progress_bar": False,
          "default_root_dir": str(out / "root")}
    result = extract(ddp_proteins(), backbone, THETA, cache_dir=str(out / "cache"), trainer_kwargs=kw,
                     max_tokens=MAX_TOKENS)
    # every rank goes on with the script and gets every protein (the other rank's entries included)
    (out / f"result-rank{rank}.txt").write_text("\n".join(p.id for p, s in result if s.count.numel()) + "\n")
    # nothing else: the process group extract's Trainer opened is closed at exit by allo_lightning itself (left
    # to the interpreter's teardown, gloo's threads sometimes aborted a rank: "terminate called without an active
    # exception", -6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Imported at start-up by every process of a run (on PYTHONPATH): logs which rank replaced a file under
# the output folder (every output is written atomically, by os.replace), so a test sees who wrote what.
WRITES_HOOK = """
import os
_replace = os.replace
def replace(src, dst, *args, **kwargs):
    out = _replace(src, dst, *args, **kwargs)
    log, where = os.environ.get("ALLO_TEST_WRITES"), os.environ.get("ALLO_TEST_OUT")
    if log and where and os.fspath(dst).startswith(where):
        with open(log, "a") as f:
            f.write(f"{os.environ.get('NODE_RANK', '0')} {os.environ.get('LOCAL_RANK', '0')} {os.fspath(dst)}\\n")
    return out
os.replace = replace
"""


def _on_import(module: str, patch: str) -> str:
    """A sitecustomize.py (imported at start-up by every process that has it on PYTHONPATH) that runs ``patch``
    once ``module`` is first imported: ``patch`` is the body of a function of the imported ``module``, with os,
    sys and time imported."""
    import textwrap

    body = textwrap.indent(textwrap.dedent(patch).strip("\n"), " " * 12)
    return f"""
import importlib.abc, importlib.util, os, sys, time

class _Patch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != {module!r}:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
{body}

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Patch())
"""


def _env(hook: Path | None = None, **extra) -> dict:
    path = ([str(hook)] if hook else []) + [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1"}
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK", "SLURM_PROCID", "SLURM_NTASKS",
              "SLURM_JOB_NAME", "PL_GLOBAL_SEED"):
        env.pop(k, None)
    return {**env, **extra}


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_every_protein_once(tmp_path, tiny):
    from allo_lightning.data.batching import token_budget_batches

    proteins = ddp_proteins()
    n_batches = len(token_budget_batches([p.length for p in proteins], MAX_TOKENS, n_special=2))
    assert n_batches >= 3 and n_batches % 2 == 1, "the ranks should get unequal numbers of batches"

    res = subprocess.run([sys.executable, "-m", "tests.test_ddp", str(tmp_path)], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "terminate called" not in res.stderr and "Traceback" not in res.stderr, res.stderr[-3000:]
    for r in (0, 1):  # the API leaves no process group to the interpreter's teardown, on either rank
        assert (tmp_path / f"open-at-exit-rank{r}.txt").read_text() == "False", f"rank {r}: group open at exit"
        assert sorted((tmp_path / f"result-rank{r}.txt").read_text().split()) == sorted(p.id for p in proteins)

    logs = {r: (tmp_path / f"written-rank{r}.txt").read_text().split() for r in (0, 1)}
    assert logs[0] and logs[1], "both ranks should have written proteins"
    ids = logs[0] + logs[1]
    assert sorted(ids) == sorted(p.id for p in proteins), "every protein exactly once: none lost, none duplicated"
    assert not set(logs[0]) & set(logs[1])

    single = extract(proteins, tiny, THETA, cache_dir=str(tmp_path / "single"),
                     trainer_kwargs={**CPU, "default_root_dir": str(tmp_path / "single_root")}, max_tokens=MAX_TOKENS)
    ddp_cache = StatsCache(tmp_path / "cache", tiny.identity, THETA)
    for p, ref in single:
        got = ddp_cache.load(p.sequence)
        for name in ("received", "count", "mass", "total"):
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-5, atol=1e-5)


# -- every command on 2 processes against 1 --------------------------------------------------------------
CMD_TOKENS = 200  # 10 proteins of 30-50 residues: 5 batches, so both ranks extract


def _cli(tmp: Path, cache: str, heads: bool = True, probe: bool = True, tokens: int = CMD_TOKENS) -> list[str]:
    base = ["--model.backbone", "tiny", "--model.cache_dir", str(tmp / cache), "--model.max_tokens", str(tokens),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    return base + (["--heads.n_permutations", "100"] if heads else []) + (
        ["--probe.max_epochs", "5", "--probe.batch_size", "128"] if probe else [])


def _commands(tmp: Path, table: Path, fasta: Path, ckpt: Path, tag: str,
              tokens: int = CMD_TOKENS) -> dict[str, tuple[str, list[str]]]:
    """Command lines of heads, fit, evaluate, predict and report writing under ``tmp/tag``; each command has
    a cache of its own, so that each one extracts (shares the work) instead of finding it cached. evaluate
    and predict score the same (reference) checkpoint in both runs."""
    out, data = tmp / tag, ["--data.path", str(table)]
    return {
        "heads": ("heads", _cli(tmp, f"cache-{tag}-heads", probe=False, tokens=tokens) + data
                  + ["--trainer.default_root_dir", str(out / "heads")]),
        "fit": ("fit", _cli(tmp, f"cache-{tag}-fit", tokens=tokens) + data + [
            "--trainer.default_root_dir", str(out / "fit"), "--checkpoint", str(out / "fit" / "probe.safetensors")]),
        "evaluate": ("evaluate", _cli(tmp, f"cache-{tag}-evaluate", heads=False, probe=False, tokens=tokens) + data + [
            "--checkpoint", str(ckpt), "--bootstrap", "50", "--trainer.default_root_dir", str(out / "evaluate")]),
        "predict": ("predict", _cli(tmp, f"cache-{tag}-predict", heads=False, probe=False, tokens=tokens) + [
            "--checkpoint", str(ckpt), "--fasta", str(fasta), "--out", str(out / "predict")]),
        "report": ("report", _cli(tmp, f"cache-{tag}-report", tokens=tokens) + data + [
            "--trainer.default_root_dir", str(out / "report"), "--report.folds", "2", "--report.max_epochs", "2",
            "--report.train_sizes", "[1]", "--report.efficiency_draws", "1", "--report.random_seeds", "2",
            "--report.ks", "[1, 3]", "--report.n_boot", "100"]),
    }


LAST_LINE = {"heads": "outputs in", "fit": "checkpoint: ", "evaluate": "metrics: ", "predict": "predictions: ",
             "report": "report: "}


def _files(out: Path) -> dict[str, object]:
    """What a run wrote: CSV / Markdown tables as bytes, JSON without timings and the command line."""
    got: dict[str, object] = {}
    for f in sorted(out.rglob("*")):
        rel = f.relative_to(out).as_posix()
        if not f.is_file() or rel.startswith(".") or "/." in rel:
            continue
        if f.suffix in (".csv", ".md", ".pml", ".cxc"):
            got[rel] = f.read_bytes().replace(b"/two/", b"/one/").replace(b"cache-two-", b"cache-one-")
        elif f.suffix == ".json":
            obj = json.loads(f.read_text())

            def clean(o):
                if isinstance(o, dict):
                    return {k: clean(v) for k, v in o.items() if k not in ("seconds", "config")}
                if isinstance(o, list):
                    return [clean(v) for v in o]
                return o.replace("/two/", "/one/").replace("cache-two-", "cache-one-") if isinstance(o, str) else o
            got[rel] = clean(obj)
        else:
            got[rel] = "present"
    return got


def _hook(tmp: Path) -> Path:
    hook = tmp / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(WRITES_HOOK)
    return hook


def _reference(tmp: Path, commands: dict) -> None:
    """The 1-process runs, in this process, one thread."""
    import importlib

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for module, args in commands.values():
            importlib.import_module(f"allo_lightning.{module}").main(args + ["--trainer.devices", "1"])
    finally:
        torch.set_num_threads(threads)


def _inputs(tmp: Path) -> tuple[Path, Path]:
    proteins = random_proteins(10, lo=30, hi=50, seed=4)
    table = write_table(tmp / "train.tsv", proteins)
    fasta = tmp / "new.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins[:6]))
    return table, fasta


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_every_command_on_two_processes_writes_what_one_process_writes(tmp_path, strategy):
    _every_command_as_one_process(tmp_path, strategy, 2, CMD_TOKENS)


def _every_command_as_one_process(tmp_path: Path, strategy: str, devices: int, tokens: int,
                                  names: tuple[str, ...] = tuple(LAST_LINE)) -> None:
    """Each command of ``names`` on ``devices`` processes writes the files of one process (both with ``tokens``)."""
    table, fasta = _inputs(tmp_path)
    ckpt = tmp_path / "one" / "fit" / "probe.safetensors"
    one = _commands(tmp_path, table, fasta, ckpt, "one", tokens)
    _reference(tmp_path, {k: v for k, v in one.items() if k in names or k == "fit"})  # fit: the checkpoint
    two = _commands(tmp_path, table, fasta, ckpt, "two", tokens)
    hook = _hook(tmp_path)
    for name, (module, args) in two.items():
        if name not in names:
            continue
        writes = tmp_path / f"writes-{name}.log"
        env = _env(hook, ALLO_TEST_WRITES=str(writes), ALLO_TEST_OUT=str(tmp_path / "two"))
        res = subprocess.run([sys.executable, "-m", f"allo_lightning.{module}", *args, "--trainer.devices",
                              str(devices), "--trainer.strategy", strategy], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=900)
        log = res.stdout[-2000:] + res.stderr[-4000:]
        assert res.returncode == 0, f"{name}: exit {res.returncode}\n{log}"
        assert "Traceback" not in res.stderr and "terminate called" not in res.stderr, f"{name}: a rank failed\n{log}"
        last = f"GLOBAL_RANK: {devices - 1}, MEMBER: {devices}/{devices}"
        assert last in res.stdout + res.stderr, f"{name}: extraction was not shared\n{log}"
        entries = list((tmp_path / f"cache-two-{name}").rglob("*.safetensors"))
        assert entries, f"{name}: nothing extracted"
        want, got = _files(tmp_path / "one" / name), _files(tmp_path / "two" / name)
        assert sorted(got) == sorted(want), name
        for rel in want:
            assert got[rel] == want[rel], f"{name}: {rel} differs between 1 and {devices} processes"
        # the work after extraction ran once (rank 0): its last line once, every output written by rank 0 only
        assert res.stdout.count(LAST_LINE[name]) == 1, f"{name}: the command ran more than once\n{res.stdout}"
        # each message once: the other ranks run the command up to the end of the extraction, but only rank 0 speaks
        warned = [line for line in res.stderr.splitlines() if line.startswith("WARNING: ")]
        assert len(warned) == len(set(warned)), f"{name}: a warning printed by several ranks\n{res.stderr}"
        if name == "report":  # said before the extraction, by every rank's code
            assert "WARNING: report.random_seeds=2; at least 5 are recommended" in warned, res.stderr
        who = [line.split(" ", 2) for line in writes.read_text().splitlines()]
        assert who and all(node == local == "0" for node, local, _ in who), f"{name}: written by other ranks: {who}"


@pytest.mark.slow
def test_every_command_on_more_processes_than_batches_writes_what_one_process_writes(tmp_path):
    """3 processes, 2 batches (10 proteins of 30-50 residues, 300 tokens; predict's 6 proteins: 1 batch, so 2 ranks
    without one): a rank left without a batch runs an empty one (Lightning refuses a rank with none), writes
    nothing, and neither fails nor waits; every command writes the files of one process."""
    from allo_lightning.data.batching import token_budget_batches

    proteins = random_proteins(10, lo=30, hi=50, seed=4)  # as _inputs
    assert len(token_budget_batches([p.length for p in proteins], 300, n_special=2)) == 2
    assert len(token_budget_batches([p.length for p in proteins[:6]], 300, n_special=2)) == 1
    _every_command_as_one_process(tmp_path, "ddp", 3, 300)


@pytest.mark.slow
def test_more_processes_than_batches(tmp_path, tiny):
    """3 processes, 2 batches: the rank with nothing to do neither fails nor waits; every entry is written."""
    proteins = random_proteins(10, lo=20, hi=40, seed=1)
    fasta = tmp_path / "ten.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    from allo_lightning.data.batching import token_budget_batches

    assert len(token_budget_batches([p.length for p in proteins], 300, n_special=2)) == 2
    res = subprocess.run([sys.executable, "-m", "allo_lightning.extract", "--model.backbone", "tiny",
                          "--data.path", str(fasta), "--model.max_tokens", "300", "--model.cache_dir",
                          str(tmp_path / "cache"), "--trainer.accelerator", "cpu", "--trainer.devices", "3",
                          "--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false",
                          "--trainer.default_root_dir", str(tmp_path / "out")],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stdout[-2000:] + res.stderr[-4000:]
    summary = json.loads((tmp_path / "out" / "extraction.json").read_text())
    assert summary["computed"] == 10 and summary["proteins"] == 10
    cache = StatsCache(tmp_path / "cache", tiny.identity, THETA)
    assert all(cache.complete(p.sequence) for p in proteins)
    single = extract(proteins, tiny, THETA, cache_dir=str(tmp_path / "single"),  # the values of one process
                     trainer_kwargs={**CPU, "default_root_dir": str(tmp_path / "single_root")}, max_tokens=300)
    for p, ref in single:
        got = cache.load(p.sequence)
        for name in ("received", "count", "mass", "total"):
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_two_nodes_of_one_process_through_lightning_environment(tmp_path):
    """Two "machines" on this one (loopback): the cluster (here the test) starts one copy of the command per
    node with NODE_RANK; Lightning's environment does the rest. fit writes the files of one process."""
    table, fasta = _inputs(tmp_path)
    ckpt = tmp_path / "one" / "fit" / "probe.safetensors"
    _reference(tmp_path, {"fit": _commands(tmp_path, table, fasta, ckpt, "one")["fit"]})
    module, args = _commands(tmp_path, table, fasta, ckpt, "two")["fit"]
    port, hook, writes = str(_free_port()), _hook(tmp_path), tmp_path / "writes.log"
    procs = []
    for node in (0, 1):
        env = _env(hook, MASTER_PORT=port, NODE_RANK=str(node), WORLD_SIZE="2", LOCAL_RANK="0",
                   ALLO_TEST_WRITES=str(writes), ALLO_TEST_OUT=str(tmp_path / "two"))
        procs.append(subprocess.Popen([sys.executable, "-m", f"allo_lightning.{module}", *args,
                                       "--trainer.devices", "1", "--trainer.num_nodes", "2",
                                       "--trainer.strategy", "ddp"], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=600))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for node, (p, (so, se)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0 and "Traceback" not in se, f"node {node}: {so[-2000:]}{se[-4000:]}"
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outs[1][0] + outs[1][1]
    assert not outs[1][0].strip(), "node 1 says nothing on stdout"
    who = [line.split(" ", 2) for line in writes.read_text().splitlines()]
    assert who and all(node == "0" for node, _, _ in who), f"outputs written by node 1: {who}"
    want, got = _files(tmp_path / "one" / "fit"), _files(tmp_path / "two" / "fit")
    assert sorted(got) == sorted(want)
    for rel in want:
        assert got[rel] == want[rel], f"{rel} differs between 1 process and 2 nodes"
    rows = list(csv.reader((tmp_path / "two" / "fit" / "test_scores.csv").open()))
    assert len(rows) > 1


def _extract_cli(fasta: Path, tmp: Path, max_tokens: int) -> list[str]:
    return [sys.executable, "-m", "allo_lightning.extract", "--model.backbone", "tiny", "--data.path", str(fasta),
            "--model.max_tokens", str(max_tokens), "--model.cache_dir", str(tmp / "cache"),
            "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp / "out")]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_a_rank_that_fails_is_one_error_line_and_exit_2(tmp_path, tiny, strategy):
    """Rank 1 cannot write one of its entries (a file where its cache shard folder goes): one error line from
    rank zero naming the protein, exit 2, no traceback. Before, rank zero waited in the final barrier and got
    gloo's 'Connection closed by peer' traceback (exit 1; Lightning's watcher may also kill it: 137); under
    ddp_spawn torch's ProcessRaisedException traceback (exit 1)."""
    import hashlib

    from allo_lightning.data.batching import token_budget_batches

    proteins = random_proteins(10, lo=20, hi=60, seed=3)
    fasta = tmp_path / "ten.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    batches = token_budget_batches([p.length for p in proteins], 200, n_special=2)
    mine = {i for b in batches[0::2] for i in b}
    shard = lambda p: hashlib.sha256(p.sequence.encode()).hexdigest()[:2]  # noqa: E731
    victim = next(p for i, p in enumerate(proteins[::-1]) if len(proteins) - 1 - i not in mine
                  and all(shard(proteins[j]) != shard(p) for j in mine))
    folder = tmp_path / "cache" / tiny.identity
    folder.mkdir(parents=True)
    (folder / shard(victim)).write_text("in the way")
    cmd = [c if c != "ddp" else strategy for c in _extract_cli(fasta, tmp_path, 200)]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    log = res.stdout[-2000:] + res.stderr[-4000:]
    assert res.returncode == 2, log
    assert "Traceback" not in res.stderr and "[rank" not in res.stderr, log
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: process 1 of 2: ") and repr(victim.id) in errors[0], log


# Imported at start-up by every process: the second process's backbone module fails in its setup (as an out of
# memory on one GPU would), before the batch plan is shared
SETUP_FAILS_HOOK = _on_import("allo_lightning.attention.extractor", """
    if os.environ.get("LOCAL_RANK", "0") == "1":
        def setup(self, stage):
            raise RuntimeError("CUDA out of memory (simulated, rank 1 setup)")
        module.AttentionExtractor.setup = setup
""")


@pytest.mark.slow
def test_a_rank_that_fails_before_the_plan_is_shared_does_not_hang_the_run(tmp_path):
    """Rank 1 fails in its setup while rank zero waits in Lightning's own collectives: the end-of-extraction
    exchange (distributed.settle) must not be entered (rank 1 waited in it, rank zero in Lightning's barrier,
    both until gloo's 30-minute timeout). The run now stops within seconds with a non-zero status."""
    proteins = random_proteins(10, lo=20, hi=60, seed=3)
    fasta = tmp_path / "ten.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SETUP_FAILS_HOOK)
    try:
        res = subprocess.run(_extract_cli(fasta, tmp_path, 200), cwd=ROOT, env=_env(hook), capture_output=True,
                             text=True, timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung after one rank failed in its setup")
    assert res.returncode != 0 and "simulated, rank 1 setup" in res.stderr, res.stderr[-3000:]


# Imported at start-up by every process (on PYTHONPATH): Lightning's second process (LOCAL_RANK=1) notes its
# pid, then waits before it joins, so that a signal to the first process comes while it waits for the second.
SLOW_CHILD_HOOK = """
import os, time
if os.environ.get("LOCAL_RANK") == "1" and os.environ.get("ALLO_TEST_CHILD"):
    with open(os.environ["ALLO_TEST_CHILD"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(4)
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [15, 2])
def test_a_signal_to_the_first_process_while_the_others_start_stops_them_all(tmp_path, tiny, signum):
    """SIGTERM (``kill``, ``timeout``) or SIGINT to the process Lightning runs the other ranks from, while
    they are still starting (before Lightning's own handler, which passes SIGTERM on, exists): every rank stops
    after its batch in flight, one message, and the same command resumes. Before, rank 1 never heard of it:
    it extracted its whole share alone after the first process had exited, then failed in the barrier with a
    traceback."""
    import signal
    import time

    proteins = random_proteins(160, lo=60, hi=120, seed=5)
    fasta = tmp_path / "many.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_CHILD_HOOK)
    child_pid = tmp_path / "child.pid"
    out, err = (tmp_path / "stdout.txt").open("w"), (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(_extract_cli(fasta, tmp_path, 1), cwd=ROOT, env=_env(hook, ALLO_TEST_CHILD=str(child_pid)),
                            stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not (child_pid.exists() and child_pid.read_text()) and proc.poll() is None:
            assert time.monotonic() < deadline, "the second process never started"
            time.sleep(0.1)
        proc.send_signal(signum)
        rc = proc.wait(timeout=300)
        child = int(child_pid.read_text())
        deadline = time.monotonic() + 60
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child), "the second process goes on alone"
    finally:
        for pid in [proc.pid] + ([int(child_pid.read_text())] if child_pid.exists() and child_pid.read_text() else []):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        out.close()
        err.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert rc == 128 + signum, stderr[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "interrupted by" in errors[0], stderr[-4000:]
    n = len(list((tmp_path / "cache").rglob("*.safetensors")))
    assert n < len(proteins) // 4, f"{n} entries: a rank went on after the signal"
    res = subprocess.run(_extract_cli(fasta, tmp_path, 1), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stdout[-2000:] + res.stderr[-4000:]
    summary = json.loads((tmp_path / "out" / "extraction.json").read_text())
    assert summary["computed"] == len(proteins) - n and summary["from_cache"] == n
    cache = StatsCache(tmp_path / "cache", tiny.identity, THETA)
    assert all(cache.complete(p.sequence) for p in proteins)


# Imported at start-up by every process: the cache, as the process NODE_RANK:LOCAL_RANK = ALLO_TEST_RANK sees it, holds
# every entry (ALLO_TEST_VIEW complete: another job filled it just before this process looked) or none (missing: a
# network file system shows it late).
CACHE_VIEW_HOOK = _on_import("allo_lightning.attention.cache", """
    me = os.environ.get("NODE_RANK", "0") + ":" + os.environ.get("LOCAL_RANK", "0")
    if me == os.environ["ALLO_TEST_RANK"]:
        view = os.environ["ALLO_TEST_VIEW"] == "complete"
        module.StatsCache.complete = lambda self, *args, **kwargs: view
""")


@pytest.mark.slow
def test_a_rank_whose_cache_looks_complete_still_takes_its_share(tmp_path, tiny):
    """Rank 1 finds every entry in the cache (it looked at another moment than rank zero, or saw another view of
    it) while rank zero finds them missing: rank 1 still enters the shared extraction and runs its share of rank
    zero's plan; every entry is written. Before, rank 1 skipped it and left (status 0) while rank zero waited for
    it in the rendezvous until gloo's 30-minute timeout (and a SIGTERM then took as long)."""
    import signal

    proteins = random_proteins(10, lo=20, hi=40, seed=1)
    fasta = tmp_path / "ten.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CACHE_VIEW_HOOK)
    proc = subprocess.Popen(_extract_cli(fasta, tmp_path, 100), cwd=ROOT, env=_env(hook, ALLO_TEST_RANK="0:1",
                            ALLO_TEST_VIEW="complete"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("rank zero waited for a rank that found nothing to run")
    assert proc.returncode == 0 and "Traceback" not in stderr, stdout[-2000:] + stderr[-4000:]
    summary = json.loads((tmp_path / "out" / "extraction.json").read_text())
    assert summary["computed"] == 10
    cache = StatsCache(tmp_path / "cache", tiny.identity, THETA)
    assert all(cache.complete(p.sequence) for p in proteins)


@pytest.mark.slow
def test_a_cluster_rank_zero_whose_cache_is_complete_still_meets_the_others(tmp_path, tiny):
    """Two "machines" started by the cluster (here the test): every entry is in the cache, but node 1 sees none of
    them. Rank zero still enters the shared extraction, whose plan (its own: nothing to run) node 1 follows.
    Before, rank zero went on alone and node 1 waited for it in the rendezvous until gloo's 30-minute timeout."""
    import signal

    proteins = random_proteins(6, lo=20, hi=40, seed=1)
    fasta = tmp_path / "six.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    extract(proteins, tiny, THETA, cache_dir=str(tmp_path / "cache"),
            trainer_kwargs={**CPU, "default_root_dir": str(tmp_path / "first")}, max_tokens=100)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CACHE_VIEW_HOOK)
    port = str(_free_port())
    cmd = [c if c != "2" else "1" for c in _extract_cli(fasta, tmp_path, 100)] + ["--trainer.num_nodes", "2"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=_env(hook, MASTER_PORT=port, NODE_RANK=str(node), WORLD_SIZE="2",
                                                      LOCAL_RANK="0", ALLO_TEST_RANK="1:0", ALLO_TEST_VIEW="missing"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
              for node in (0, 1)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=240))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("a process waited for a rank that found nothing to run")
    for node, (p, (so, se)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0 and "Traceback" not in se, f"node {node}: {so[-2000:]}{se[-4000:]}"
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outs[1][0] + outs[1][1]
    summary = json.loads((tmp_path / "out" / "extraction.json").read_text())
    assert summary["computed"] == 0 and summary["from_cache"] == 6


# Imported at start-up by every process: the token budget differs between the ranks, as it does on GPUs (each
# rank sizes it from the free memory it sees when it starts): 150 tokens on rank zero, 4096 on rank 1.
RANK_BUDGET_HOOK = _on_import("allo_lightning.attention.run", """
    budget = 4096 if os.environ.get("LOCAL_RANK", "0") == "1" else 150
    module.token_budget = lambda *args, **kwargs: budget
""")


@pytest.mark.slow
def test_ranks_that_would_form_other_batches_run_rank_zeros(tmp_path, tiny):
    """Every rank runs rank zero's batches, whatever budget it would have chosen itself: every protein is
    extracted exactly once. Before, rank 1 (one batch of everything, so nothing for it) and rank zero (batches
    0, 2, 4 of its 5) left proteins out, and rank zero's reading of them failed."""
    proteins = random_proteins(10, lo=20, hi=40, seed=2)
    fasta = tmp_path / "ten.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RANK_BUDGET_HOOK)
    cmd = [c for c in _extract_cli(fasta, tmp_path, 0) if c not in ("--model.max_tokens", "0")]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(hook), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stdout[-2000:] + res.stderr[-4000:]
    summary = json.loads((tmp_path / "out" / "extraction.json").read_text())
    assert summary["computed"] == 10 and summary["proteins"] == 10
    cache = StatsCache(tmp_path / "cache", tiny.identity, THETA)
    assert all(cache.complete(p.sequence) for p in proteins)


@pytest.mark.slow
def test_ddp_spawn_extracts_every_protein_once(tmp_path, tiny):
    """``--trainer.strategy ddp_spawn`` (README: one of the strategies): Lightning pickles the callbacks into the
    processes it spawns. Before, the cache writer's background threads could not be pickled: a TypeError
    traceback ('cannot pickle _thread.lock'), nothing extracted."""
    proteins = random_proteins(10, lo=20, hi=60, seed=3)
    fasta = tmp_path / "ten.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    cmd = [c if c != "ddp" else "ddp_spawn" for c in _extract_cli(fasta, tmp_path, 200)]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    log = res.stdout[-2000:] + res.stderr[-4000:]
    assert res.returncode == 0 and "Traceback" not in res.stderr, log
    assert "custom batch sampler" not in res.stderr and "LeafSpec" not in res.stderr, log  # as quiet as ddp
    assert json.loads((tmp_path / "out" / "extraction.json").read_text())["computed"] == 10
    single = extract(proteins, tiny, THETA, cache_dir=str(tmp_path / "single"),
                     trainer_kwargs={**CPU, "default_root_dir": str(tmp_path / "single_root")}, max_tokens=200)
    cache = StatsCache(tmp_path / "cache", tiny.identity, THETA)
    for p, ref in single:
        got = cache.load(p.sequence)
        for name in ("received", "count", "mass", "total"):
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-5, atol=1e-5)


# Imported at start-up by every process: rank zero's batches take 2 s each (rank 1's share is done long before).
SLOW_RANK_ZERO_HOOK = _on_import("allo_lightning.attention.extractor", """
    original = module.AttentionExtractor.predict_step

    def slow(self, batch, batch_idx):
        if os.environ.get("LOCAL_RANK", "0") == "0":
            time.sleep(2)
        return original(self, batch, batch_idx)

    module.AttentionExtractor.predict_step = slow
""")


@pytest.mark.slow
def test_sigterm_while_another_rank_waits_at_the_end_stops_them_all(tmp_path, tiny):
    """SIGTERM to the first process while rank 1, its share done, waits for it at the end of the extraction:
    every process stops, one message. Before, Lightning's own SIGTERM handler broadcast from rank zero inside the
    signal handler while rank 1 waited in the final barrier: both waited forever."""
    import hashlib
    import signal
    import time

    from allo_lightning.data.batching import token_budget_batches

    proteins = random_proteins(10, lo=20, hi=40, seed=8)
    fasta = tmp_path / "ten.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_RANK_ZERO_HOOK)
    batches = token_budget_batches([p.length for p in proteins], 1, n_special=2)
    folder = tmp_path / "cache" / tiny.identity
    rank1 = [folder / (h := hashlib.sha256(proteins[i].sequence.encode()).hexdigest())[:2]
             / f"{h}.stats-t{THETA!r}.safetensors" for b in batches[1::2] for i in b]
    err = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(_extract_cli(fasta, tmp_path, 1), cwd=ROOT, env=_env(hook), stdout=subprocess.DEVNULL,
                            stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not all(f.exists() for f in rank1):
            assert proc.poll() is None and time.monotonic() < deadline, "rank 1 never finished its share"
            time.sleep(0.1)
        time.sleep(1)  # rank 1 is now waiting for rank zero, which is in its 2 s batches
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()  # its child then finds its peer gone
        err.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert rc == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-4000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: interrupted by SIGTERM; finished proteins are cached: run the same command again to "
                      "resume."], stderr[-4000:]


# Imported at start-up by every process: each batch of a process spawned by ddp_spawn logs its proteins and its
# process id when it starts (ALLO_TEST_STARTED), then takes 1 s, so that a signal comes while batches are in flight.
SLOW_SPAWNED_HOOK = _on_import("allo_lightning.attention.extractor", """
    original = module.AttentionExtractor.predict_step

    def slow(self, batch, batch_idx):
        with open(os.environ["ALLO_TEST_STARTED"], "a") as f:
            f.write(f"{os.getpid()} {' '.join(batch['ids'])}\\n")
        time.sleep(1)
        return original(self, batch, batch_idx)

    module.AttentionExtractor.predict_step = slow
""")


@pytest.mark.slow
@pytest.mark.parametrize("signum,group", [(15, False), (2, False), (2, True)], ids=["SIGTERM", "SIGINT", "ctrl-c"])
def test_ddp_spawn_a_signal_stops_every_process_after_its_batch(tmp_path, tiny, signum, group):
    """``--trainer.strategy ddp_spawn``: SIGTERM or SIGINT to the first process (``kill``, ``timeout``; the
    processes it spawned do not get it), or Ctrl-C (the whole process group): every spawned process stops after
    its batch in flight, whose proteins are cached; exit 128 + signal, one message; the same command resumes.
    Before, the spawned processes never heard of a signal to the first one and extracted their whole share
    first (then the command stopped: 'interrupted')."""
    import signal
    import time

    proteins = random_proteins(40, lo=20, hi=30, seed=6)
    fasta = tmp_path / "forty.fasta"
    fasta.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_SPAWNED_HOOK)
    started = tmp_path / "started.txt"
    cmd = [c if c != "ddp" else "ddp_spawn" for c in _extract_cli(fasta, tmp_path, 1)]
    out, err = (tmp_path / "stdout.txt").open("w"), (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(hook, ALLO_TEST_STARTED=str(started)), stdout=out, stderr=err,
                            start_new_session=group)
    cache = StatsCache(tmp_path / "cache", tiny.identity, THETA)
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while not any(cache.complete(p.sequence) for p in proteins):
            assert proc.poll() is None and time.monotonic() < deadline, "no protein was ever extracted"
            time.sleep(0.1)
        time.sleep(0.5)  # both spawned processes are in a batch
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        rc = proc.wait(timeout=120)
        pids = {int(line.split()[0]) for line in started.read_text().splitlines()}
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in pids), "a spawned process goes on alone"
    finally:
        for pid in [proc.pid, *pids]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        out.close()
        err.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert rc == 128 + signum and "Traceback" not in stderr, stderr[-4000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: interrupted by {signal.Signals(signum).name}; finished proteins are cached: run the "
                      "same command again to resume."], stderr[-4000:]
    assert len(pids) == 2, "both spawned processes extracted"
    by_id = {p.id: p for p in proteins}
    begun = [pid for line in started.read_text().splitlines() for pid in line.split()[1:]]
    n = sum(cache.complete(p.sequence) for p in proteins)
    assert n <= len(begun) < len(proteins) // 2, f"{len(begun)} batches begun: a process went on after the signal"
    assert all(cache.complete(by_id[pid].sequence) for pid in begun), "a batch in flight was lost"
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stdout[-2000:] + res.stderr[-4000:]
    summary = json.loads((tmp_path / "out" / "extraction.json").read_text())
    assert summary["computed"] == len(proteins) - n and summary["from_cache"] == n
    assert all(cache.complete(p.sequence) for p in proteins)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    torch.set_num_threads(1)
    _worker(Path(sys.argv[1]))
