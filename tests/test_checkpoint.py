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
              "hmac_sha256": tensors_digest(tensors, context=edited),
              "checksum": tensors_digest(tensors, context=edited)}  # plain SHA-256 in every checksum field
    save_file(tensors, str(path), metadata=forged)
    with pytest.raises(CheckpointError, match="checksum mismatch.*edited"):
        load_checkpoint(path)
    # negative control: the same edit with the checksum keyed by the backbone identity is read (so the
    # refusal above comes from the key, not from something else in the edit). This is why the checksum
    # guards against damage, not tampering: the key is derived from the file (see probe.checkpoint)
    save_file(tensors, str(path), metadata={**forged, "checksum": ck._digest(tensors, edited)})
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


def test_checksum_under_the_old_metadata_key_is_read(tmp_path, tiny):
    """Checkpoints written before the checksum was renamed (metadata key hmac_sha256) still load, and
    their checksum is still checked."""
    from safetensors.torch import save_file

    path, *_ = _saved(tmp_path, tiny)
    meta, tensors = _contents(path)
    old = {k: v for k, v in meta.items() if k != "checksum"}
    old["hmac_sha256"] = meta["checksum"]
    save_file(tensors, str(path), metadata=old)
    assert load_checkpoint(path).threshold == pytest.approx(0.37)
    save_file(tensors, str(path), metadata={**old, "hmac_sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


@pytest.mark.parametrize("std", [0.0, -1.0])
def test_non_positive_feature_std_refused(tmp_path, tiny, std):
    """A hand-made checkpoint with features.std 0 gave NaN scores for every residue."""
    from allo_lightning.probe import checkpoint as ck

    path, *_ = _saved(tmp_path, tiny)
    meta, tensors = _contents(path)
    tensors["features.std"][:] = std
    ck._write(path, tensors, __import__("json").loads(meta["config"]))  # a valid checksum
    with pytest.raises(CheckpointError, match="features.std.*not positive"):
        load_checkpoint(path)


@pytest.mark.parametrize("key,value", [("theta", 0.0), ("theta", 7.0), ("theta", 1.0), ("threshold", -0.1),
                                       ("threshold", 1.5)])
def test_out_of_range_theta_or_threshold_refused(tmp_path, tiny, key, value):
    """theta 0 or 7 in a checkpoint was accepted; the config's range (0, 1) is checked on load (and
    the threshold must lie in the score's range [0, 1])."""
    import json

    from allo_lightning.probe import checkpoint as ck

    path, *_ = _saved(tmp_path, tiny)
    meta, tensors = _contents(path)
    config = json.loads(meta["config"])
    config[key] = value
    ck._write(path, tensors, config)
    with pytest.raises(CheckpointError, match=f"probe.safetensors: the checkpoint's {key}"):
        load_checkpoint(path)
    config[key] = 0.5  # negative control: an in-range value loads
    ck._write(path, tensors, config)
    assert getattr(load_checkpoint(path), key) == 0.5


_SAVE_SCRIPT = """
import hashlib, json, random, sys
import torch
from allo_lightning.probe import checkpoint as ck
tensors = {"net.w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "features.mean": torch.zeros(4),
           "features.std": torch.ones(4), "net.b": torch.tensor([0.5])}
config = {"theta": 0.3, "threshold": 0.4, "probe": {"kind": "logreg"}, "backbone": {"identity": "x", "name": "tiny"},
          "z": 1, "a": [1, 2], "m": {"q": 1, "b": 2}}
keys = list(config)
random.Random(int(sys.argv[2])).shuffle(keys)  # the dict built in another order: the bytes must not change
out = []
for i in range(4):  # several writes in one process (safetensors' metadata order changes within a process too)
    ck._write(sys.argv[1] + f".{i}", dict(reversed(list(tensors.items()))), {k: config[k] for k in keys})
    out.append(hashlib.sha256(open(sys.argv[1] + f".{i}", "rb").read()).hexdigest())
print(json.dumps(out))
"""


def test_checkpoint_bytes_are_reproducible_in_one_process(tmp_path):
    """Within one process too, safetensors wrote the same metadata in a different order on each call
    (7 distinct files in 10 writes of one checkpoint, measured): now one sha256 for 6 writes of the
    same contents, given as dicts in 6 different orders."""
    import hashlib
    import json
    import random

    from allo_lightning.probe import checkpoint as ck

    tensors = {"net.w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "features.std": torch.ones(4),
               "features.mean": torch.zeros(4)}
    config = json.loads('{"theta": 0.3, "threshold": 0.4, "backbone": {"identity": "x"}, "z": 1, "a": [1, 2]}')
    digests = set()
    for i in range(6):
        keys = list(config)
        random.Random(i).shuffle(keys)
        out = ck._write(tmp_path / f"c{i}.safetensors", dict(random.Random(i).sample(list(tensors.items()), 3)),
                        {k: config[k] for k in keys})
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


@pytest.mark.slow
def test_checkpoint_bytes_are_reproducible_across_processes(tmp_path):
    """Two identical fits wrote checkpoints with equal tensors and metadata but different bytes (the
    safetensors library writes metadata keys in a per-process hash order): sha256-based provenance
    failed. Here: the same checkpoint written 4 times in each of 2 processes (different hash seeds,
    dict orders) has one sha256, and still loads."""
    import json
    import os
    import subprocess
    import sys

    from safetensors import safe_open

    hashes = set()
    for run, seed in enumerate(("0", "12345")):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", _SAVE_SCRIPT, str(tmp_path / f"p{run}"), seed], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        hashes.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert len(hashes) == 1, hashes
    with safe_open(str(tmp_path / "p0.0"), framework="pt") as f:  # still a valid safetensors file
        meta = f.metadata()
        assert list(f.keys()) == ["features.mean", "features.std", "net.b", "net.w"]
        assert torch.equal(f.get_tensor("net.w"), torch.arange(12, dtype=torch.float32).reshape(3, 4))
    assert json.loads(meta["config"])["m"] == {"q": 1, "b": 2} and "checksum" in meta
