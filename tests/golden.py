"""The golden probe checkpoint (tests/data/golden_probe.safetensors) and its expected scores
(tests/data/golden_scores.json): they pin the feature column order (head-major, then statistic, then the
window offsets), the standardisation and the checkpoint format, so a refactor that reorders feature
columns fails tests/test_golden.py instead of silently scoring with permuted weights.

Made with the tiny backbone (seed 0) on three fixed proteins: 2 heads x 3 statistics, window 1, a seeded
untrained MLP (hidden 4): a few KB. Regenerate ONLY for a deliberate change of the format or the
features (and say so in the commit message):

    python -m tests.golden            # rewrites both files in tests/data/
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"
CHECKPOINT = DATA / "golden_probe.safetensors"
SCORES = DATA / "golden_scores.json"
HEADS = [(1, 2), (0, 3)]  # deliberately not in sorted order
SEQUENCES = {"G1": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "G2": "GSHMLEDPVRLQKLLEEAIRQAGWSD",
             "G3": "MNNQRKKTARPSFNMLKRARNRVSTVSQLAKRFSKGLLSGQGPMK"}


def proteins():
    from allo_lightning.data import Protein

    return [Protein(id=k, sequence=s, sites=(3, 4, 5, 11)) for k, s in SEQUENCES.items()]


def items(backbone, cache_dir=None):
    from allo_lightning.attention import extract

    ex = extract(proteins(), backbone, theta=0.3, cache_dir=cache_dir,
                 trainer_kwargs={"accelerator": "cpu", "devices": 1, "enable_progress_bar": False})
    return list(ex)


def write() -> None:
    from allo_lightning.backbone import load_backbone
    from allo_lightning.config import ProbeConfig
    from allo_lightning.probe import ResidueSet, build_net, head_spec, load_checkpoint, save_checkpoint

    tiny = load_backbone("tiny", seed=0)
    its = items(tiny)
    spec = head_spec(HEADS, ProbeConfig(window=1)).fit(its)
    torch.manual_seed(0)
    net = build_net("mlp", spec.n_features, hidden=4).eval()
    DATA.mkdir(exist_ok=True)
    save_checkpoint(CHECKPOINT, net, spec, 0.5, tiny, 0.3, {"kind": "mlp", "hidden": 4, "dropout": 0.0})
    ckpt = load_checkpoint(CHECKPOINT)
    data = ResidueSet.build(ckpt.spec, its)
    scores = ckpt.score(data.x)
    out = {"features": ckpt.spec.names(), "scores": {}}
    for i, p in enumerate(data.proteins):
        out["scores"][p.id] = [round(float(v), 7) for v in scores[data.index == i]]
    SCORES.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {CHECKPOINT} ({CHECKPOINT.stat().st_size} bytes) and {SCORES}")


if __name__ == "__main__":
    write()
