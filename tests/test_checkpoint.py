"""Checkpoints: round trip, and clear refusals (corrupted, truncated, other backbone, missing heads)."""

from __future__ import annotations

import pytest
import torch

from allo_lightning.config import ProbeConfig
from allo_lightning.probe import (
    CheckpointError,
    FeatureSpec,
    ResidueSet,
    build_net,
    head_spec,
    load_checkpoint,
    save_checkpoint,
)

from .conftest import fake_stats, random_proteins


def _saved(tmp_path, tiny, heads=((0, 1), (1, 3)), kind="mlp", n_layers=2):
    ps = random_proteins(4)
    items = [(p, fake_stats(p, n_layers, 4)) for p in ps]
    spec = head_spec(list(heads), ProbeConfig(window=1)).fit(items)
    torch.manual_seed(0)
    net = build_net(kind, spec.n_features, hidden=8).eval()
    path = save_checkpoint(tmp_path / "probe.safetensors", net, spec, 0.37, tiny, 0.3,
                           {"kind": kind, "hidden": 8, "dropout": 0.1})
    return path, net, spec, items


def test_round_trip_identical_predictions(tmp_path, tiny):
    path, net, spec, items = _saved(tmp_path, tiny)
    ckpt = load_checkpoint(path)
    x = ResidueSet.build(spec, items).x
    with torch.no_grad():
        want = torch.sigmoid(net(x))
    got = ckpt.score(ResidueSet.build(ckpt.spec, items).x)
    assert torch.equal(want, got)
    assert ckpt.threshold == pytest.approx(0.37) and ckpt.spec.heads == [(0, 1), (1, 3)]
    assert ckpt.backbone_identity == tiny.identity and ckpt.theta == 0.3 and ckpt.spec.window == 1
    ckpt.check_backbone(tiny)  # the right backbone passes


def test_truncated_checkpoint_refused(tmp_path, tiny):
    path, *_ = _saved(tmp_path, tiny)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 3):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="probe.safetensors.*(corrupted|truncated)"):
            load_checkpoint(path)


def test_corrupted_checkpoint_refused(tmp_path, tiny):
    path, *_ = _saved(tmp_path, tiny)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a flipped byte in the weights: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_pickle_and_missing_files_refused(tmp_path):
    bad = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(CheckpointError, match="pickled.ckpt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_other_backbone_refused(tmp_path, tiny, tiny_esm2):
    path, *_ = _saved(tmp_path, tiny)
    with pytest.raises(CheckpointError, match="trained on backbone 'tiny', not 'esm2_tiny'"):
        load_checkpoint(path).check_backbone(tiny_esm2)
    from allo_lightning.backbone import load_backbone

    other_weights = load_backbone("tiny", seed=1)
    with pytest.raises(CheckpointError, match="other weights"):
        load_checkpoint(path).check_backbone(other_weights)


def test_heads_missing_from_backbone_refused(tmp_path, tiny):
    path, *_ = _saved(tmp_path, tiny, heads=((0, 1), (5, 0)), n_layers=6)
    with pytest.raises(CheckpointError, match=r"heads L5H0 \(layer, head 0-based\) do not exist in tiny \(2 layers x 4 "
                                              r"heads\)"):
        load_checkpoint(path).check_backbone(tiny)


def test_feature_spec_round_trip():
    spec = FeatureSpec("identity", [], log1p=False, window=2)
    spec.mean, spec.std = torch.zeros(25), torch.ones(25)
    again = FeatureSpec.from_settings(spec.settings(), spec.mean, spec.std)
    assert again.settings() == spec.settings()


def _contents(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict


def _plain_sha256(tensors, config_json: str) -> str:
    """The checksum an editor can recompute: a plain SHA-256 over the config and the tensors (the scheme of
    format version 1)."""
    import hashlib

    h = hashlib.sha256(config_json.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def test_hand_edited_checkpoint_with_recomputed_plain_checksum_refused(tmp_path, tiny):
    import json

    from safetensors.torch import save_file

    from allo_lightning.digest import tensors_digest
    from allo_lightning.probe import checkpoint as ck

    path, *_ = _saved(tmp_path, tiny)
    meta, tensors = _contents(path)
    config = json.loads(meta["config"])
    config["threshold"] = 0.01  # the attack: every residue predicted allosteric
    edited = json.dumps(config, sort_keys=True, default=str)
    forged = {**meta, "config": edited, "sha256": _plain_sha256(tensors, edited),
              "hmac_sha256": tensors_digest(tensors, context=edited)}  # plain SHA-256 in every checksum field
    save_file(tensors, str(path), metadata=forged)
    with pytest.raises(CheckpointError, match="checksum mismatch.*edited"):
        load_checkpoint(path)
    # negative control: the same edit with the checksum keyed by the backbone identity is read (so the
    # refusal above comes from the key, not from something else in the edit)
    save_file(tensors, str(path), metadata={**forged, "hmac_sha256": ck._digest(tensors, edited)})
    assert load_checkpoint(path).threshold == 0.01


@pytest.mark.parametrize("what", ["weight", "threshold", "std"])
def test_nan_or_inf_checkpoint_refused(tmp_path, tiny, what):
    from allo_lightning.probe import checkpoint as ck

    path, net, spec, _ = _saved(tmp_path, tiny)
    meta, tensors = _contents(path)
    config = __import__("json").loads(meta["config"])
    if what == "weight":
        name = next(k for k in sorted(tensors) if k.startswith("net."))
        tensors[name].view(-1)[0] = float("nan")
    elif what == "std":
        tensors["features.std"][0] = float("inf")
    else:
        config["threshold"] = float("inf")
    ck._write(path, tensors, config)  # a valid checksum: only the values are wrong
    with pytest.raises(CheckpointError, match="not finite"):
        load_checkpoint(path)
    if what == "weight":  # and fit never writes one
        with torch.no_grad():
            next(iter(net.parameters())).view(-1)[0] = float("nan")
        with pytest.raises(CheckpointError, match="not finite"):
            save_checkpoint(tmp_path / "nan.safetensors", net, spec, 0.5, tiny, 0.3, {"kind": "mlp", "hidden": 8})
        assert not (tmp_path / "nan.safetensors").exists()


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_round_trip(tmp_path, tiny, method):
    from allo_lightning.probe import Calibration

    path, net, spec, items = _saved(tmp_path, tiny)
    assert load_checkpoint(path).calibration is None  # saved without one: no probability, nothing invented
    assert load_checkpoint(path).probability(torch.rand(3)) is None
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(300, generator=g) < 0.2).long()
    s = torch.sigmoid(torch.randn(300, generator=g) + 2 * y)
    cal = Calibration.fit(s, y, method)
    path = save_checkpoint(tmp_path / "cal.safetensors", net, spec, 0.37, tiny, 0.3,
                           {"kind": "mlp", "hidden": 8, "dropout": 0.1}, calibration=cal)
    ckpt = load_checkpoint(path)
    assert ckpt.calibration.method == method and torch.equal(ckpt.probability(s), cal(s))
    assert ckpt.config["calibration"]["fitted_on"] == "validation"
