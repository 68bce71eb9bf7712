"""Shared fixtures: a tiny ESM-C built in code (random, seeded), small protein sets, CPU only."""

from __future__ import annotations

import csv
import os
import random
import zlib
from pathlib import Path

import pytest
import torch

os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
# one thread per pytest-xdist worker (-n 2 runs two workers on two cores), else up to two
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))

from allo_lightning.backbone import load_backbone  # noqa: E402
from allo_lightning.data import Protein  # noqa: E402

CPU = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
REPO = Path(__file__).resolve().parents[1]  # tests pass from any working directory
SMOKE = str(REPO / "configs" / "smoke.yaml")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is present (``python -m pytest -m gpu`` on a GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (gpu marker)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny():
    return load_backbone("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_esm2():
    return load_backbone("esm2_tiny", seed=0)


def random_proteins(n: int, lo: int = 20, hi: int = 60, seed: int = 0, site_rate: float = 0.1) -> list[Protein]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        L = rng.randint(lo, hi)
        seq = "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(L))
        sites = tuple(sorted(rng.sample(range(1, L + 1), max(1, int(site_rate * L)))))
        out.append(Protein(id=f"P{i}", sequence=seq, sites=sites, cluster=f"C{i % max(1, n // 2)}"))
    return out


@pytest.fixture
def proteins():
    return random_proteins(6)


@pytest.fixture
def cpu_trainer_kwargs(tmp_path):
    return {**CPU, "default_root_dir": str(tmp_path / "out")}


def write_table(path, proteins):
    """A TSV table of ``proteins`` (id, sequence, sites, cluster), written with the csv module."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["id", "sequence", "sites", "cluster"])
        for p in proteins:
            w.writerow([p.id, p.sequence, ",".join(map(str, p.sites)), p.cluster or ""])
    return path


def common(tmp_path, table):
    """Flags of a fast in-process run on the tiny backbone."""
    return ["--model.backbone", "tiny", "--model.cache_dir", str(tmp_path / "cache"), "--data.path", str(table),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--heads.n_permutations", "100", "--probe.max_epochs", "5", "--probe.batch_size", "128"]


def fake_stats(p: Protein, n_layers=2, n_heads=3, seed=0):
    """Random ProteinStats for ``p`` (seeded by the id with crc32: hash() varies per process)."""
    from allo_lightning.attention import ProteinStats

    g = torch.Generator().manual_seed(seed + zlib.crc32(p.id.encode()) % 1000)
    shape = (n_layers, n_heads, p.length)
    return ProteinStats(torch.rand(shape, generator=g), torch.rand(shape, generator=g) * 3,
                        torch.rand(shape, generator=g), torch.rand(n_layers, n_heads, generator=g))
