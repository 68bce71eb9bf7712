"""Configuration sections shared by every command (YAML files and ``--section.key`` flags).

One YAML file (e.g. configs/gpcr.yaml) serves every command: ``model`` (backbone and extraction),
``data`` (which proteins), ``trainer`` (Lightning Trainer arguments; ``default_root_dir`` is where
outputs go), ``heads`` (head analysis), ``probe`` (probe training) and ``report``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    """Backbone and attention extraction.

    Args:
        backbone: esmc_300m, esmc_600m, tiny (random, for tests: its scores mean nothing),
            esm2_t6_8m, esm2_t12_35m, esm2_t30_150m, esm2_t33_650m or esm2_tiny.
        weights: local weights file (state dict / .safetensors; ESM-2: a save_pretrained folder).
            Without it, esmc_* and esm2_* are downloaded from the Hugging Face hub on first use.
        seed: seed of the random init of the tiny backbones.
        theta: confidence threshold: attention alpha_ij counts as confident when alpha_ij > theta.
        dtype: auto (bf16 on CUDA, fp32 elsewhere), fp32 or bf16 (CUDA only).
        cache_dir: statistics cache (default: $ALLO_LIGHTNING_CACHE or ~/.cache/allo_lightning).
        max_tokens: token budget of one batch (batch size x padded length).
        bucket: group proteins of similar length into batches (less padding).
    """

    backbone: str = "tiny"
    weights: str | None = None
    seed: int = 0
    theta: float = 0.3
    dtype: str = "auto"
    cache_dir: str | None = None
    max_tokens: int = 4096
    bucket: bool = True


@dataclass
class DataConfig:
    """Which proteins.

    Args:
        path: a TSV/CSV table (id, sequence, sites or labels; optional cluster, family, gene) or FASTA.
            A file given here is used whole: the subset options below apply to the bundled data only.
        bundled: bundled set used when no path is given: asd (377 ASD proteins) or seed (A2A/ADRB2 cases).
        family: bundled data only: keep this family (e.g. GPCR).
        limit: bundled data only: keep the first N proteins (after the family filter).
        max_length: bundled data only: drop proteins longer than this (they are reported, not silent).
    """

    path: str | None = None
    bundled: str = "asd"
    family: str | None = None
    limit: int | None = None
    max_length: int | None = None


@dataclass
class HeadsConfig:
    """Head analysis and selection (see allo_lightning.analysis)."""

    score: str = "p_alpha"
    strategy: str = "significance"
    top_k: int = 10
    q_max: float = 0.05
    p_max: float = 0.01
    snr_min: float = 2.0
    min_fraction: float = 0.5
    n_permutations: int = 2000
    plot_proteins: int = 4
    orthosteric: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class ProbeConfig:
    """Probe training (see allo_lightning.probe)."""

    kind: str = "logreg"


@dataclass
class ReportConfig:
    """Reports per head subset (see allo_lightning.report)."""

    folds: int = 5
