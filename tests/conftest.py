"""Shared fixtures: a tiny ESM-C built in code (random, seeded), small protein sets, CPU only."""

from __future__ import annotations

import os
import random

import pytest
import torch

os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from allo_lightning.backbone import load_backbone  # noqa: E402
from allo_lightning.data import Protein  # noqa: E402

CPU = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


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
