"""Configuration sections shared by every command (YAML files and ``--section.key`` flags).

One YAML file (e.g. configs/gpcr.yaml) serves every command: ``model`` (backbone and extraction),
``data`` (which proteins), ``trainer`` (the extraction Trainer's few settings; ``default_root_dir`` is
where outputs go), ``heads`` (head analysis), ``probe`` (probe training and its own small Trainer)
and ``report``. A command reads the sections it uses and ignores the others.

Every choice is a ``Literal`` and every range is checked in ``__post_init__``: the command line and the
Python API both build these dataclasses, so a bad value is refused once, here, before any data or model
is loaded, with an :class:`~allo_lightning.errors.InputError` that names the flag (the same words from a
flag, a config file or a dataclass built in Python). Nothing downstream checks a setting again; core
functions that also take plain arguments guard them with :class:`~allo_lightning.errors.AlloError`.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

from .errors import InputError

MAX_SEED = 2**32 - 1  # seeds are unsigned 32-bit numbers (numpy's and Lightning's seed_everything range)


def _fail(flag: str, problem: str, todo: str = "") -> None:
    raise InputError(f"--{flag}: {problem}" + (f" {todo}" if todo else ""), todo=todo or None, setting=flag)


def check_range(flag: str, value, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
                integer: bool = False, allow_none: bool = False) -> None:
    """Refuse ``value`` outside [low, high] (open ends with ``low_open`` / ``high_open``), NaN, or a
    non-integer where ``integer``; the message names the flag ``--flag``."""
    if value is None:
        if allow_none:
            return
        _fail(flag, "a value is required.")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        _fail(flag, f"expected {'a whole number' if integer else 'a number'}, got {value!r}.")
    if isinstance(value, float) and not math.isfinite(value):
        _fail(flag, f"expected a finite number, got {value!r}.")
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    where = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if low is not None and (value < low or (low_open and value == low)):
        _fail(flag, f"{value!r} is outside {where}.", "Give a value in that range.")
    if high is not None and (value > high or (high_open and value == high)):
        _fail(flag, f"{value!r} is outside {where}.", "Give a value in that range.")


def _positive(flag: str, value, allow_none: bool = False, integer: bool = True) -> None:
    check_range(flag, value, low=0 if not integer else 1, low_open=not integer, integer=integer,
                allow_none=allow_none)


def _accepts(hint, value) -> bool:
    """Whether ``value`` is of type ``hint`` (a ``Literal``, a union with one, or a list of one)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_accepts(args[0], v) for v in value)
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return True  # other types: the parser's (and the range checks below) concern


def _literals(hint) -> tuple:
    """The ``Literal`` choices anywhere in ``hint`` (empty when there is none)."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    return tuple(c for a in typing.get_args(hint) for c in _literals(a))


def _check_choices(cfg, section: str) -> None:
    """Refuse a value that is not one of its field's ``Literal`` choices, with the words of the command
    line's parser: a bad choice reads the same from a flag, a config file and the Python API (the
    dataclass is the one place that checks it)."""
    for name, hint in typing.get_type_hints(type(cfg)).items():
        choices = _literals(hint)
        value = getattr(cfg, name)
        if not choices or _accepts(hint, value):
            continue
        bad = value
        if typing.get_origin(hint) is list and isinstance(value, (list, tuple)):
            bad = next(v for v in value if not _accepts(typing.get_args(hint)[0], v))
        extra = " (or a whole number)" if int in typing.get_args(hint) else ""
        _fail(f"{section}.{name}", f"{bad!r} is not accepted; choose one of: {', '.join(map(str, choices))}{extra}.")


def _backbone_name(flag: str, name) -> None:
    if name is None:  # predict, evaluate: the checkpoint's (nothing to check, and no torch to import)
        return
    from .backbone import BACKBONES  # the registry: torch-free

    if name.lower() in BACKBONES:
        return
    close = difflib.get_close_matches(name.lower(), BACKBONES, n=1)
    _fail(flag, f"unknown backbone {name!r}" + (f" (did you mean {close[0]!r}?)." if close else "."),
          f"Choose one of: {', '.join(BACKBONES)}.")


def resolve_cache_dir(cache_dir: str | None) -> str:
    """The cache folder a command uses: ``--model.cache_dir`` if given, else ``$ALLO_LIGHTNING_CACHE``
    (an empty or blank variable counts as unset: it would put the cache in the current folder), else
    ~/.cache/allo_lightning (as attention.cache.default_cache_dir). A leading ``~`` is expanded in
    either: YAML files and environment variables are not expanded by the shell, and a literal ``./~``
    folder is never meant."""
    import os

    if cache_dir is not None and not str(cache_dir).strip():
        _fail("model.cache_dir", "empty path.", "Give a folder, or leave the flag out for the default.")
    if cache_dir is None:
        cache_dir = os.environ.get("ALLO_LIGHTNING_CACHE", "").strip() or "~/.cache/allo_lightning"
    return os.path.expanduser(str(cache_dir))


@dataclass
class TrainerConfig:
    """The extraction Trainer (the frozen backbone under ``trainer.predict``): its few settings.

    Args:
        accelerator: auto (CUDA, else MPS, else CPU), cpu, cuda (or gpu) or mps.
        devices: devices (processes) per machine, or auto.
        num_nodes: machines (strategy ddp).
        strategy: auto, ddp or ddp_spawn (several devices: each takes every n-th batch).
        default_root_dir: the output folder of the command.
        enable_progress_bar: show a progress bar during extraction.
    """

    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps"] = "auto"
    devices: int | Literal["auto"] = 1
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    default_root_dir: str = "outputs/run"
    enable_progress_bar: bool = True

    def __post_init__(self) -> None:
        _check_choices(self, "trainer")
        if self.devices != "auto":
            check_range("trainer.devices", self.devices, low=1, integer=True)
        check_range("trainer.num_nodes", self.num_nodes, low=1, integer=True)
        if not str(self.default_root_dir).strip():
            _fail("trainer.default_root_dir", "empty path.", "Give the output folder.")

    def kwargs(self) -> dict:
        """Keyword arguments of ``lightning.Trainer`` (the allow-list: nothing else reaches it); no progress
        bar under ``-q`` (:func:`allo_lightning.messages.progress_shown`)."""
        from .messages import progress_shown

        return {"accelerator": self.accelerator, "devices": self.devices, "num_nodes": self.num_nodes,
                "strategy": self.strategy, "default_root_dir": self.default_root_dir,
                "enable_progress_bar": self.enable_progress_bar and progress_shown()}


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
        dtype: fp32 (default) or bf16: on CUDA, and on CPUs with bf16 instructions (AVX512-BF16/AMX,
            as torch reports; refused elsewhere), MPS untested; faster, statistics cached separately.
        cache_dir: statistics cache (default: $ALLO_LIGHTNING_CACHE or ~/.cache/allo_lightning).
        max_tokens: token budget of one batch (batch size x padded length). Default: 4096 on CPU and MPS;
            on CUDA from the free device memory (up to 65536; see README, "Memory with length and batch").
        bucket: group proteins of similar length into batches (less padding).
        window_overlap: residues shared by neighbouring windows of a protein longer than the backbone's
            context (see --data.long); each residue's statistics come from the window where it is most
            central. Must be below the context (ESM-C 2048, ESM-2 1022).
    """

    backbone: str = "tiny"
    weights: str | None = None
    seed: int = 0
    theta: float = 0.3
    dtype: Literal["fp32", "bf16"] = "fp32"
    cache_dir: str | None = None
    max_tokens: int | None = None
    bucket: bool = True
    window_overlap: int = 256

    def __post_init__(self) -> None:
        _check_choices(self, "model")
        check_range("model.window_overlap", self.window_overlap, low=0, integer=True)
        check_range("model.theta", self.theta, low=0, high=1, low_open=True, high_open=True, allow_none=True)
        _positive("model.max_tokens", self.max_tokens, allow_none=True)
        check_range("model.seed", self.seed, low=0, high=MAX_SEED, integer=True, allow_none=True)
        self.cache_dir = resolve_cache_dir(self.cache_dir)
        _backbone_name("model.backbone", self.backbone)  # last: the backbone table imports torch


@dataclass
class DataConfig:
    """Which proteins.

    Args:
        path: a TSV/CSV table (id, sequence, sites or labels; optional cluster, family, gene) or FASTA.
            A file given here is used whole (or its first --data.limit proteins).
        bundled: bundled set used when no path is given: gpcr (the 14 curated GPCRs, configs/gpcr.yaml),
            asd (371 ASD proteins of many families, 13 of them GPCRs) or seed (the A2A/ADRB2 cases of the
            original scripts: their residue lists are orthosteric pockets, read as orthosteric_sites, so
            only the A2A sodium-site row P29274_Na carries allosteric sites).
        modulators: bundled data only: ligand (default: leave out the ASD rows labelled from an ion or a
            crystallisation additive, modulator_class ion/additive) or all.
        family: bundled data only: keep this family (e.g. GPCR).
        limit: keep the first N proteins (of the file, or of the bundled set after the family filter).
        max_length: bundled data only: drop proteins longer than this (they are reported, not silent).
        long: proteins longer than the backbone's context: window (default: overlapping windows, the
            protein is marked windowed in the outputs), skip (left out, their ids listed) or error.
    """

    path: str | None = None
    bundled: Literal["gpcr", "asd", "seed"] = "asd"
    modulators: Literal["ligand", "all"] = "ligand"
    family: str | None = None
    limit: int | None = None
    max_length: int | None = None
    long: Literal["window", "skip", "error"] = "window"

    def __post_init__(self) -> None:
        _check_choices(self, "data")
        _positive("data.limit", self.limit, allow_none=True)
        _positive("data.max_length", self.max_length, allow_none=True)
        if self.path is not None:
            given = [f"--data.{k}" for k, v in (("family", self.family), ("max_length", self.max_length),
                                                ("modulators", None if self.modulators == "ligand" else 1)) if v]
            if given:
                _fail(given[0].removeprefix("--"), f"applies to the bundled data only, not to --data.path "
                      f"{self.path}.", "Leave it out (filter your file yourself), or leave out --data.path.")


@dataclass
class HeadsConfig:
    """Head analysis and selection (see allo_lightning.analysis).

    Args:
        score: statistic that ranks heads and whose p/q/SNR the rules use: p_alpha (Vig et al.:
            share of confident residue pairs whose key is a site) or mass (confident attention mass
            sent to sites per confident residue pair, as in the seed scripts).
        strategy: top_k (the top_k heads by pooled score), significance (q < q_max and SNR > snr_min),
            original (p < p_max and SNR > snr_min; after the seed scripts) or consistency (significant in at least
            min_fraction of the proteins). A rule that selects no head falls back to top_k, and says so.
        top_k: heads kept by top_k, and by the fallback.
        q_max: Benjamini-Hochberg q-value threshold of the significance rule.
        p_max: p-value threshold of the original rule and of the per-protein significance.
        snr_min: SNR (observed - random mean) / random sd that a selected head must exceed.
        min_fraction: consistency rule: fraction of proteins in which a head must be significant.
        n_permutations: random site sets drawn per protein for the permutation p-values (heads whose
            p-value is not resolved get more, up to max_permutations; see allo_lightning.analysis.scores).
        max_permutations: most random site sets any head's p-value may use.
        min_confident: heads with fewer pooled confident residue pairs are not testable (reported,
            never selected; Vig et al. ignore heads below 100).
        null: random site sets of the null: shift (default: the site pattern circularly shifted
            along each protein; keeps the contiguity of the sites, calibrated when attention is
            smooth along the chain), permutation (same number of sites drawn from all residues) or
            composition (each site replaced by a residue of the same amino-acid type); the last two
            assume independent residues and are anti-conservative when attention and sites are
            contiguous.
        max_selected: at most this many heads are selected (the best by q-value, then score).
        exclude_orthosteric: drop heads resolved as more enriched on the orthosteric residues than on
            the sites (on the proteins with both labels: specificity < 0 and its sign-flip q-value <
            q_max); heads whose contrast is unresolved or absent are kept.
        proteins: ids of the proteins to analyse (e.g. the training split); default: all labelled ones.
        plot_proteins: number of proteins that get a mean attention map PNG.
        orthosteric: optional extra residues to mark on the maps, protein id -> 1-based positions.
    """

    score: Literal["p_alpha", "mass"] = "p_alpha"
    strategy: Literal["top_k", "significance", "original", "consistency"] = "significance"
    top_k: int = 10
    q_max: float = 0.05
    p_max: float = 0.01
    snr_min: float = 2.0
    min_fraction: float = 0.5
    n_permutations: int = 2000
    max_permutations: int = 1_000_000
    min_confident: int = 100
    null: Literal["shift", "permutation", "composition"] = "shift"
    max_selected: int = 20
    exclude_orthosteric: bool = False
    proteins: list[str] | None = None
    plot_proteins: int = 4
    orthosteric: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choices(self, "heads")
        _positive("heads.top_k", self.top_k)
        check_range("heads.q_max", self.q_max, low=0, high=1, low_open=True)
        check_range("heads.p_max", self.p_max, low=0, high=1, low_open=True)
        check_range("heads.snr_min", self.snr_min)
        check_range("heads.min_fraction", self.min_fraction, low=0, high=1, low_open=True)
        _positive("heads.n_permutations", self.n_permutations)
        check_range("heads.plot_proteins", self.plot_proteins, low=0, integer=True)
        if self.proteins is not None and not self.proteins:
            _fail("heads.proteins", "an empty list.", "Give protein ids, or leave the flag out for all proteins.")
        for pid, positions in (self.orthosteric or {}).items():
            bad = [p for p in positions if isinstance(p, bool) or not isinstance(p, int) or p < 1]
            if bad:
                _fail("heads.orthosteric", f"protein {pid!r}: positions {bad[:5]} are not 1-based residue numbers.")
        check_range("heads.min_confident", self.min_confident, low=1, integer=True)
        check_range("heads.max_selected", self.max_selected, low=1, integer=True)
        check_range("heads.max_permutations", self.max_permutations, low=1, integer=True)
        if self.n_permutations > self.max_permutations:
            _fail("heads.n_permutations", f"{self.n_permutations} is more than --heads.max_permutations "
                  f"{self.max_permutations}.", "Give fewer permutations, or raise --heads.max_permutations too.")


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
        test_fraction: fraction of proteins (clusters) held out for the test metrics. 0: no test set
            (fit trains the probe you ship on every protein but the validation part; estimate its
            performance with report, or with evaluate on held-out labelled proteins).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: residues per training batch.
        max_epochs: epochs at most (used when --trainer.max_epochs is not given).
        patience: early stopping: epochs without a better validation AUPRC.
        pos_weight: weight of positive residues in the loss; null: negatives / positives of the
            training residues (class imbalance, about 3 % positives).
        top_k: precision among each protein's k best-scored residues (metric precision_at_k).
        checkpoint_dir: folder of the checkpoint saved by fit.
        calibration: how the ranking ``score`` becomes a ``probability`` (fitted on the validation
            scores, stored in the checkpoint): platt (logistic on logit(score)), isotonic, or none
            (no probability column).
        accelerator: device of the probe's own Trainer (cpu by default: the probe is tiny and metrics
            are computed on the CPU anyway).
    """

    kind: Literal["logreg", "mlp"] = "logreg"
    hidden: int = 32
    dropout: float = 0.1
    window: int = 0
    stats: list[Literal["received", "count", "mass"]] = field(default_factory=lambda: ["received", "count", "mass"])
    log1p: bool = True
    split: Literal["cluster", "protein"] = "cluster"
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
    calibration: Literal["platt", "isotonic", "none"] = "platt"
    accelerator: Literal["cpu", "auto", "cuda", "gpu", "mps"] = "cpu"

    def __post_init__(self) -> None:
        _check_choices(self, "probe")
        _positive("probe.hidden", self.hidden)
        check_range("probe.dropout", self.dropout, low=0, high=1, high_open=True)
        check_range("probe.window", self.window, low=0, integer=True)
        if not self.stats:
            _fail("probe.stats", "an empty list.", "Give at least one of received, count, mass.")
        check_range("probe.val_fraction", self.val_fraction, low=0, high=1, low_open=True, high_open=True)
        check_range("probe.test_fraction", self.test_fraction, low=0, high=1, high_open=True)
        if self.val_fraction + self.test_fraction >= 1:
            _fail("probe.val_fraction", f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} "
                  "leaves no training proteins.", "Make their sum less than 1.")
        check_range("probe.lr", self.lr, low=0, low_open=True)
        check_range("probe.weight_decay", self.weight_decay, low=0)
        _positive("probe.batch_size", self.batch_size)
        _positive("probe.max_epochs", self.max_epochs)
        check_range("probe.patience", self.patience, low=0, integer=True)
        check_range("probe.pos_weight", self.pos_weight, low=0, low_open=True, allow_none=True)
        _positive("probe.top_k", self.top_k)
        if not str(self.checkpoint_dir).strip():
            _fail("probe.checkpoint_dir", "empty path.", "Give a folder for checkpoints.")


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
        _check_choices(self, "report")
        check_range("report.folds", self.folds, low=2, integer=True)
        for k in self.ks:
            _positive("report.ks", k)
        _positive("report.random_seeds", self.random_seeds)
        for n in self.train_sizes:
            _positive("report.train_sizes", n)
        _positive("report.max_epochs", self.max_epochs, allow_none=True)
        _positive("report.efficiency_draws", self.efficiency_draws)
        check_range("report.n_boot", self.n_boot, low=100, integer=True)
        check_range("report.transfer_pool", self.transfer_pool, low=2, integer=True, allow_none=True)
        _positive("report.am_top_k", self.am_top_k, allow_none=True)
