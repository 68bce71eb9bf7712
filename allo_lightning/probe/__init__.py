"""The probe: per-residue features from the selected heads, a small classifier trained with
Lightning, honest splits, metrics, and safe checkpoints."""

from .checkpoint import FORMAT_VERSION, CheckpointError, ProbeCheckpoint, load_checkpoint, save_checkpoint
from .features import FeatureSpec, head_spec, window_features
from .metrics import METRIC_NAMES, best_f1_threshold, compute_metrics, probe_metrics
from .module import KeepBest, LogisticProbe, MLPProbe, ProbeModule, build_net
from .splits import Split, check, kfold, leave_one_out, make_splits, train_val_test
from .train import ProbeRun, ResidueSet, train_probe
from .workflow import FitResult, HeadChoice, fit_split, items_of, ranking_of, select_heads

__all__ = [
    "FORMAT_VERSION", "METRIC_NAMES", "CheckpointError", "FeatureSpec", "FitResult", "HeadChoice", "KeepBest",
    "LogisticProbe", "MLPProbe", "ProbeCheckpoint", "ProbeModule", "ProbeRun", "ResidueSet", "Split",
    "best_f1_threshold", "build_net", "check", "compute_metrics", "fit_split", "head_spec", "items_of", "kfold",
    "leave_one_out", "load_checkpoint", "make_splits", "probe_metrics", "ranking_of", "save_checkpoint",
    "select_heads", "train_probe", "train_val_test", "window_features",
]
