"""Probe checkpoints: a safetensors file (no code is executed when it is read) with a format version,
the probe weights, the feature settings and standardisation statistics, the selected heads, the
decision threshold (on the ranking score), the score -> probability calibration (fitted on the
validation proteins; absent when disabled), the backbone's name and identity, theta, and a checksum
over all of it.

What the checksum protects against, precisely: accidental damage (a truncated download or copy, a
flipped byte, a file cut by a full disk) and a partial hand edit (a value changed with a text or hex
editor without recomputing the checksum). It is an HMAC-SHA256 whose key is derived from the backbone
identity, which is itself stored in the file: anyone who edits a checkpoint on purpose can compute a
new checksum that this reader accepts. It is NOT a signature and gives no protection against
tampering; treat a checkpoint from someone else as you would their code's output (safetensors at least
guarantees that loading one runs no code). Older files store the checksum under the metadata key
``hmac_sha256``, newer ones under ``checksum``; both are read.

On load, besides the checksum: weights, statistics, threshold and theta are finite; every feature's
standard deviation is positive (a zero would make every score NaN); theta is in (0, 1), as the config
requires, and the threshold in [0, 1], the range of the score.

Files are byte-reproducible: the same probe written twice (in any process) gives the same bytes (the
safetensors header is written with sorted metadata keys), so a SHA-256 of the file identifies it.

Format: version 2. The ``config`` JSON in the metadata is a dict; a later version may add keys and
readers ignore keys they do not know. Bump ``FORMAT_VERSION`` only when a reader of the current version
would misread a new file."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..digest import derive_key, tensors_digest
from ..errors import CheckpointError
from ..outputs import atomic_path
from .calibration import Calibration
from .features import FeatureSpec
from .module import build_net

FORMAT = "allo_lightning.probe"
FORMAT_VERSION = 2  # 2: checksum (HMAC-SHA256 keyed by the backbone identity); finite values only
_REMAKE = "Make a new one with python -m allo_lightning.fit --config CONFIG."


@dataclass
class ProbeCheckpoint:
    path: Path
    net: nn.Module
    spec: FeatureSpec
    threshold: float
    backbone_name: str
    backbone_identity: str
    backbone_seed: int
    n_layers: int
    n_heads: int
    theta: float
    config: dict
    calibration: Calibration | None = None

    @torch.no_grad()
    def score(self, x_NF: torch.Tensor) -> torch.Tensor:
        """Ranking scores [N] (not probabilities: see probe.calibration)."""
        self.net.eval()
        return torch.sigmoid(self.net(x_NF)).float()

    def probability(self, scores: torch.Tensor) -> torch.Tensor | None:
        """Calibrated probabilities of ``scores``, or None when the probe was saved without calibration."""
        return None if self.calibration is None else self.calibration(scores)

    def check_backbone(self, backbone) -> None:
        """Refuse a backbone other than the one the probe was trained on, or heads it does not have."""
        if backbone.name != self.backbone_name:
            raise CheckpointError(
                f"{self.path}: this probe was trained on backbone {self.backbone_name!r}, not {backbone.name!r}. "
                f"Use --model.backbone {self.backbone_name} (and its weights), or train a probe for "
                f"{backbone.name} with python -m allo_lightning.fit.")
        bad = [(ly, h) for ly, h in self.spec.heads if not (0 <= ly < backbone.n_layers and 0 <= h < backbone.n_heads)]
        if bad:
            shown = ", ".join(f"L{ly}H{h}" for ly, h in bad[:5])
            raise CheckpointError(
                f"{self.path}: the checkpoint's heads {shown} (layer, head 0-based) do not exist in "
                f"{backbone.name} ({backbone.n_layers} layers x {backbone.n_heads} heads). The file does not "
                f"belong to this backbone. {_REMAKE}")
        if backbone.identity != self.backbone_identity:
            raise CheckpointError(
                f"{self.path}: this probe was trained on {self.backbone_identity}, but the loaded "
                f"{backbone.name} weights are {backbone.identity} (other weights or another seed). Load the "
                f"weights it was trained with (--model.weights), or retrain. {_REMAKE}")


def _identity_of(config_json: str) -> str:
    try:
        return str(json.loads(config_json)["backbone"]["identity"])
    except (ValueError, KeyError, TypeError):
        return ""


def _digest(tensors: dict[str, torch.Tensor], config_json: str) -> str:
    """HMAC-SHA256 over the config JSON and the tensors, keyed by the backbone identity in the config:
    a checksum against accidental damage, not a signature (the key is in the file; see the module
    docstring)."""
    key = derive_key("allo_lightning.probe", str(FORMAT_VERSION), _identity_of(config_json))
    return tensors_digest(tensors, context=config_json, key=key)


def _not_finite(tensors: dict[str, torch.Tensor], config: dict) -> list[str]:
    """Names of the tensors and settings that are NaN or infinite."""
    bad = [k for k, t in sorted(tensors.items()) if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    for key in ("threshold", "theta"):
        v = config.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            bad.append(key)
    return bad


def serialise(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of ``tensors`` and ``metadata``, the same in every process: the safetensors
    library writes the metadata in a per-process random (hash map) order, so the header is rewritten
    with the metadata keys sorted (the tensors keep their order; the data part is unchanged, its
    offsets are relative to the end of the header)."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__", {}).items()))}
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the header is padded with spaces to 8-byte alignment, as safetensors does
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def _check_ranges(path: Path, tensors: dict[str, torch.Tensor], config: dict) -> None:
    """The values a probe needs to score, in the ranges the config and the fit give them."""
    from ..config import check_range
    from ..errors import InputError

    std = tensors.get("features.std")
    if std is not None and std.numel() and not bool((std > 0).all()):
        bad = int((std <= 0).sum())
        raise CheckpointError(f"{path}: {bad} of the {std.numel()} feature standard deviations (features.std) are "
                              f"not positive: every score would be NaN or infinite. {_REMAKE}")
    try:
        check_range("theta", config["theta"], low=0, high=1, low_open=True, high_open=True)  # as --model.theta
        check_range("threshold", config["threshold"], low=0, high=1)
    except InputError as e:
        problem = str(e).removeprefix("--").removesuffix(f" {e.todo}" if e.todo else "")
        raise CheckpointError(f"{path}: the checkpoint's {problem} {_REMAKE}") from None


def _write(path: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    config_json = json.dumps(config, sort_keys=True, default=str)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": config_json,
            "checksum": _digest(tensors, config_json)}
    data = serialise(tensors, meta)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def save_checkpoint(path: str | Path, net: nn.Module, spec: FeatureSpec, threshold: float, backbone,
                    theta: float, probe_cfg: dict, extra: dict | None = None, backbone_seed: int = 0,
                    calibration: Calibration | None = None) -> Path:
    """Write the checkpoint atomically (temporary file, then rename). Refuses NaN/inf weights or threshold
    (a diverged training): such a probe would score every residue NaN."""
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors["features.mean"] = spec.mean.detach().cpu().contiguous()
    tensors["features.std"] = spec.std.detach().cpu().contiguous()
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "probe": {"kind": probe_cfg["kind"], "hidden": probe_cfg.get("hidden", 32),
                  "dropout": probe_cfg.get("dropout", 0.0), "n_features": spec.n_features},
        "features": spec.settings(), "threshold": float(threshold),
        "backbone": {"name": backbone.name, "identity": backbone.identity, "seed": int(backbone_seed),
                     "n_layers": backbone.n_layers, "n_heads": backbone.n_heads},
        "theta": float(theta), **(extra or {}),
    }
    if calibration is not None:
        config["calibration"] = calibration.to_config()
    bad = _not_finite(tensors, config)
    if bad:
        raise CheckpointError(f"{path}: not written: {', '.join(bad[:5])} not finite (NaN or inf); the probe training "
                              "diverged. Lower --probe.lr or check the features, then train again.")
    return _write(path, tensors, config)


def load_checkpoint(path: str | Path) -> ProbeCheckpoint:
    """Read and verify a checkpoint; any problem is a :class:`CheckpointError` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found. Give the file printed by fit as 'checkpoint: PATH'.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - truncated/garbled files raise various errors
        raise CheckpointError(f"{path}: not a readable probe checkpoint (truncated or corrupted: "
                              f"{type(e).__name__}). {_REMAKE}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an allo_lightning probe checkpoint (format "
                              f"{meta.get('format')!r}). Give a checkpoint written by python -m allo_lightning.fit.")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        version = -1
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')!r}, this allo_lightning "
                              f"reads version {FORMAT_VERSION}. Use the allo_lightning version that wrote it, or "
                              f"retrain. {_REMAKE}")
    config_json = meta.get("config", "")
    if _digest(tensors, config_json) != meta.get("checksum", meta.get("hmac_sha256")):
        raise CheckpointError(f"{path}: checksum mismatch, the file is damaged (truncated, corrupted) or was "
                              f"partly edited. {_REMAKE}")
    try:
        config = json.loads(config_json)
        bad = _not_finite(tensors, config)
        if bad:
            raise CheckpointError(f"{path}: {', '.join(bad[:5])} not finite (NaN or inf); the probe cannot score. "
                                  f"{_REMAKE}")
        _check_ranges(path, tensors, config)
        feats = config["features"]
        spec = FeatureSpec.from_settings(feats, tensors["features.mean"], tensors["features.std"])
        pc = config["probe"]
        net = build_net(pc["kind"], int(pc["n_features"]), int(pc.get("hidden", 32)), float(pc.get("dropout", 0.0)))
        net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")})
        net.eval()
        if spec.n_features != int(pc["n_features"]):
            raise CheckpointError(f"{path}: inconsistent checkpoint (the features give {spec.n_features} columns, "
                                  f"the probe takes {int(pc['n_features'])}). {_REMAKE}")
        bb = config["backbone"]
        return ProbeCheckpoint(path, net, spec, float(config["threshold"]), str(bb["name"]), str(bb["identity"]),
                               int(bb.get("seed", 0)), int(bb["n_layers"]), int(bb["n_heads"]), float(config["theta"]),
                               config, Calibration.from_config(config.get("calibration")))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({type(e).__name__}: {str(e).splitlines()[0]}). "
                              f"{_REMAKE}") from None


def sequence_digest(sequence: str) -> str:
    """SHA-256 (hex) of a protein sequence (upper case): how a checkpoint remembers its training proteins."""
    return __import__("hashlib").sha256(sequence.strip().upper().encode()).hexdigest()


def seen_sequences(proteins) -> dict:
    """The ``seen`` entry of a checkpoint's config: sequence digests of the proteins that trained or
    validated the probe (no sequence itself is stored)."""
    return {"sequence_sha256": sorted({sequence_digest(p.sequence) for p in proteins}),
            "what": "SHA-256 of the upper-case sequences of the training and validation proteins"}


def seen_in_training(config: dict, proteins) -> tuple[list[str], str | None]:
    """Ids of ``proteins`` that trained or validated the probe of a checkpoint ``config``: by SEQUENCE
    (a training protein under another id counts), from the digests in ``config["seen"]``. A checkpoint
    written before the digests were stored is matched by id only, with a warning saying so."""
    seen = config.get("seen") or {}
    digests = set(seen.get("sequence_sha256") or [])
    split = config.get("split") or {}
    ids = set(split.get("train", [])) | set(split.get("val", []))
    if digests:
        return sorted({p.id for p in proteins if sequence_digest(p.sequence) in digests or p.id in ids}), None
    return (sorted({p.id for p in proteins} & ids),
            "warning: this checkpoint stores no sequence digests of its training proteins (written by an older "
            "allo_lightning): seen_in_training matches ids only, so a training protein under another id is not "
            "detected. Refit to store them.")
