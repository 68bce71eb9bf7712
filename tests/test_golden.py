"""A committed golden checkpoint scores three fixed proteins exactly as when it was written: the feature
column order (head-major, then statistic, then window offset), the standardisation and the checkpoint
format are pinned. Regenerate deliberately only: see tests/golden.py."""

from __future__ import annotations

import json

import pytest

from allo_lightning.probe import ResidueSet, load_checkpoint

from .golden import CHECKPOINT, HEADS, SCORES, items


def test_golden_checkpoint_scores_are_unchanged(tiny, tmp_path):
    want = json.loads(SCORES.read_text())
    ckpt = load_checkpoint(CHECKPOINT)  # also checks the format version and the HMAC
    ckpt.check_backbone(tiny)
    assert ckpt.spec.heads == HEADS and ckpt.spec.names() == want["features"]
    data = ResidueSet.build(ckpt.spec, items(tiny, str(tmp_path / "cache")))
    scores = ckpt.score(data.x)
    for i, p in enumerate(data.proteins):
        got = scores[data.index == i].tolist()
        assert got == pytest.approx(want["scores"][p.id], abs=2e-6), p.id
