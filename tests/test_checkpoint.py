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
    with pytest.raises(CheckpointError, match=r"layer 6 head 1 do not exist in tiny \(2 layers x 4 heads\)"):
        load_checkpoint(path).check_backbone(tiny)


def test_feature_spec_round_trip():
    spec = FeatureSpec("identity", [], log1p=False, window=2)
    spec.mean, spec.std = torch.zeros(25), torch.ones(25)
    again = FeatureSpec.from_settings(spec.settings(), spec.mean, spec.std)
    assert again.settings() == spec.settings()


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
