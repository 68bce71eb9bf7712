"""Extraction on 2 CPU processes (DDP, gloo): every protein's statistics written exactly once, with the
values of a single-process run.

The DDP run happens in a subprocess (``python -m tests.test_ddp OUT``) so that Lightning's ``ddp``
launcher can start the second rank by running the same module again; each rank logs the ids its
:class:`CacheWriter` wrote.
"""

from __future__ import annotations

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
from tests.conftest import CPU, random_proteins

ROOT = Path(__file__).resolve().parents[1]
THETA = 0.3
MAX_TOKENS = 120  # several batches of unequal count per rank (see test below)


def ddp_proteins():
    return random_proteins(11, lo=15, hi=70, seed=7)


def _worker(out: Path) -> None:
    """Runs on every rank: extraction through 2-process DDP, logging what this rank wrote."""
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
    extract(ddp_proteins(), backbone, THETA, cache_dir=str(out / "cache"), trainer_kwargs=kw, max_tokens=MAX_TOKENS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_every_protein_once(tmp_path, tiny):
    from allo_lightning.data.batching import token_budget_batches

    proteins = ddp_proteins()
    n_batches = len(token_budget_batches([p.length for p in proteins], MAX_TOKENS))
    assert n_batches >= 3 and n_batches % 2 == 1, "the ranks should get unequal numbers of batches"

    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"):
        env.pop(k, None)
    res = subprocess.run([sys.executable, "-m", "tests.test_ddp", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

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


if __name__ == "__main__":
    torch.set_num_threads(1)
    _worker(Path(sys.argv[1]))
