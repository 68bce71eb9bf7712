"""The probe: per-residue features from the selected heads, a small classifier trained with
Lightning, honest splits, metrics, and safe checkpoints."""

from .calibration import CALIBRATIONS, SCORE_MEANING, Calibration
from .checkpoint import FORMAT_VERSION, CheckpointError, ProbeCheckpoint, load_checkpoint, save_checkpoint
from .features import FeatureSpec, head_spec, window_features
from .metrics import METRIC_NAMES, best_f1_threshold, compute_metrics, probe_metrics, undefined, undefined_warning
from .module import KeepBest, LogisticProbe, MLPProbe, ProbeModule, build_net
from .splits import Split, check, kfold, leave_one_out, make_splits, train_val_test
from .train import ProbeRun, ResidueSet, evaluate_scores, items_of, predict_scores, train_probe

__all__ = [
    "CALIBRATIONS", "FORMAT_VERSION", "METRIC_NAMES", "SCORE_MEANING", "Calibration", "CheckpointError",
    "FeatureSpec", "KeepBest", "LogisticProbe", "MLPProbe", "ProbeCheckpoint", "ProbeModule", "ProbeRun",
    "ResidueSet", "Split", "best_f1_threshold", "build_net", "check", "compute_metrics", "evaluate_scores",
    "head_spec", "items_of", "kfold", "leave_one_out", "load_checkpoint", "make_splits", "predict_scores",
    "probe_metrics", "save_checkpoint", "train_probe", "train_val_test", "undefined", "undefined_warning",
    "window_features",
]
