"""Configuration sections shared by every command (YAML files and ``--section.key`` flags).

One YAML file (e.g. configs/gpcr.yaml) serves every command: ``model`` (backbone and extraction),
``data`` (which proteins), ``trainer`` (Lightning Trainer arguments; ``default_root_dir`` is where
outputs go), ``heads`` (head analysis), ``probe`` (probe training) and ``report``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
        dtype: fp32 (default) or bf16 (CUDA only; faster, statistics cached separately).
        cache_dir: statistics cache (default: $ALLO_LIGHTNING_CACHE or ~/.cache/allo_lightning).
        max_tokens: token budget of one batch (batch size x padded length).
        bucket: group proteins of similar length into batches (less padding).
    """

    backbone: str = "tiny"
    weights: str | None = None
    seed: int = 0
    theta: float = 0.3
    dtype: str = "fp32"
    cache_dir: str | None = None
    max_tokens: int = 4096
    bucket: bool = True


@dataclass
class DataConfig:
    """Which proteins.

    Args:
        path: a TSV/CSV table (id, sequence, sites or labels; optional cluster, family, gene) or FASTA.
            A file given here is used whole: the subset options below apply to the bundled data only.
        bundled: bundled set used when no path is given: gpcr (the 14 curated GPCRs, configs/gpcr.yaml),
            asd (371 ASD proteins of many families, 13 of them GPCRs) or seed (the A2A/ADRB2 cases of the
            original scripts: their residue lists are orthosteric pockets, read as orthosteric_sites, so
            only the A2A sodium-site row P29274_Na carries allosteric sites).
        modulators: bundled data only: ligand (default: leave out the ASD rows labelled from an ion or a
            crystallisation additive, modulator_class ion/additive) or all.
        family: bundled data only: keep this family (e.g. GPCR).
        limit: bundled data only: keep the first N proteins (after the family filter).
        max_length: bundled data only: drop proteins longer than this (they are reported, not silent).
    """

    path: str | None = None
    bundled: Literal["gpcr", "asd", "seed"] = "asd"
    modulators: Literal["ligand", "all"] = "ligand"
    family: str | None = None
    limit: int | None = None
    max_length: int | None = None


@dataclass
class HeadsConfig:
    """Head analysis and selection (see allo_lightning.analysis).

    Args:
        score: statistic that ranks heads and whose p/q/SNR the rules use: p_alpha (Vig et al.:
            share of confident attention that lands on sites) or mass (confident attention mass sent
            to sites per confident pair, as the original Allo-Allo scripts).
        strategy: top_k (the top_k heads by pooled score), significance (q < q_max and SNR > snr_min),
            original (p < p_max and SNR > snr_min) or consistency (significant in at least
            min_fraction of the proteins). A rule that selects no head falls back to top_k, and says so.
        top_k: heads kept by top_k, and by the fallback.
        q_max: Benjamini-Hochberg q-value threshold of the significance rule.
        p_max: p-value threshold of the original rule and of the per-protein significance.
        snr_min: SNR (observed - random mean) / random sd that a selected head must exceed.
        min_fraction: consistency rule: fraction of proteins in which a head must be significant.
        n_permutations: random site sets drawn per protein for the permutation p-values.
        proteins: ids of the proteins to analyse (e.g. the training split); default: all labelled ones.
        plot_proteins: number of proteins that get a mean attention map PNG.
        orthosteric: optional extra residues to mark on the maps, protein id -> 1-based positions.
    """

    score: str = "p_alpha"
    strategy: str = "significance"
    top_k: int = 10
    q_max: float = 0.05
    p_max: float = 0.01
    snr_min: float = 2.0
    min_fraction: float = 0.5
    n_permutations: int = 2000
    proteins: list[str] | None = None
    plot_proteins: int = 4
    orthosteric: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class ProbeConfig:
    """Probe training (see allo_lightning.probe): features from the selected heads, a small classifier.

    Args:
        kind: logreg (logistic regression) or mlp (one hidden layer).
        hidden: width of the MLP's hidden layer (kind=mlp).
        dropout: dropout before the MLP's output layer (kind=mlp).
        window: residues on each side whose features are appended to a residue's own (0: none).
        stats: per-head statistics used as features: received, count, mass (see attention.stats).
        log1p: use log(1 + x) of the statistics (they are heavy-tailed counts).
        split: how proteins are split: cluster (no cluster in two splits; proteins without a cluster
            are their own cluster) or protein.
        val_fraction: fraction of proteins (clusters) for validation (early stopping, threshold).
        test_fraction: fraction of proteins (clusters) held out for the test metrics.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: residues per training batch.
        max_epochs: epochs at most (used when --trainer.max_epochs is not given).
        patience: early stopping: epochs without a better validation AUPRC.
        pos_weight: weight of positive residues in the loss; null: negatives / positives of the
            training residues (class imbalance, about 3 % positives).
        top_k: precision among each protein's k best-scored residues (metric precision_at_k).
        checkpoint_dir: folder of the checkpoint saved by fit.
    """

    kind: str = "logreg"
    hidden: int = 32
    dropout: float = 0.1
    window: int = 0
    stats: list[str] = field(default_factory=lambda: ["received", "count", "mass"])
    log1p: bool = True
    split: str = "cluster"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    lr: float = 0.01
    weight_decay: float = 0.0001
    batch_size: int = 512
    max_epochs: int = 200
    patience: int = 15
    pos_weight: float | None = None
    top_k: int = 10
    checkpoint_dir: str = "checkpoints"


@dataclass
class ReportConfig:
    """Reports per head subset (see allo_lightning.report): every subset under the same folds.

    Args:
        scheme: kfold (cluster k-fold), logo (leave one cluster, e.g. one GPCR, out) or transfer
            (heads selected and probes trained on non-GPCR proteins of the bundled ASD set, ligand
            modulators only; tested on the data's proteins, e.g. the curated GPCRs).
        folds: number of folds (scheme=kfold).
        ks: top-k head subsets (capped at the number of heads).
        random_seeds: random k-head subsets drawn per k (mean and sd over them; at least 5).
        train_sizes: training-set sizes of the data-efficiency curve (the whole training fold is
            always added).
        efficiency_draws: random draws of the training proteins per training size (at least 5
            recommended); validation proteins are drawn in proportion.
        max_epochs: epochs at most per probe in the report (null: the probe's max_epochs).
        embeddings: include the final-layer embedding probe (needs embeddings in the cache).
        transfer_pool: scheme=transfer: use at most this many non-GPCR training proteins (a seeded
            random sample; null: all of them, ~330). Small values are for quick offline runs.
        n_boot: bootstrap samples of the test proteins for the 95 % intervals (at least 100).
        alphamissense: AlphaMissense file (per-variant table: uniprot_id, protein_variant,
            am_pathogenicity, am_class; or the per-residue average file; .gz or plain): compare the
            mean pathogenicity of predicted-allosteric residues with the other residues.
        am_top_k: predicted-allosteric residues for that comparison: each protein's top k scored
            residues; null: residues scored at or above the probe's decision threshold.
    """

    scheme: Literal["kfold", "logo", "transfer"] = "kfold"
    folds: int = 5
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20, 50])
    random_seeds: int = 5
    train_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    efficiency_draws: int = 5
    max_epochs: int | None = None
    embeddings: bool = True
    transfer_pool: int | None = None
    n_boot: int = 1000
    alphamissense: str | None = None
    am_top_k: int | None = None

    def __post_init__(self) -> None:
        from .errors import InputError

        for flag, value, low in (("efficiency_draws", self.efficiency_draws, 1), ("n_boot", self.n_boot, 100),
                                 ("transfer_pool", self.transfer_pool, 2), ("am_top_k", self.am_top_k, 1)):
            if value is not None and value < low:
                raise InputError(f"--report.{flag} must be >= {low} (got {value}).",
                                 todo=f"Give --report.{flag} of at least {low}.")
