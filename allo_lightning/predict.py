"""``python -m allo_lightning.predict --checkpoint CKPT --fasta FILE --out DIR``: score new proteins.

The backbone, its weights check and theta come from the checkpoint (a different ``--model.backbone``
or other weights are refused). Writes ``DIR/predictions.csv`` (id, position (1-based), residue,
score, probability, rank (1 = most likely allosteric within its protein), predicted (score >= the
checkpoint's decision threshold)), ``DIR/pymol/<id>.pml`` and ``DIR/chimerax/<id>.defattr`` to colour a
structure by score, and prints each protein's top residues.

``score`` is a ranking score (class-weighted training), not a probability; ``probability`` is the
score calibrated on the probe's validation proteins (absent when the checkpoint has no calibration).
"""

from __future__ import annotations

import re
import time

import torch

from .attention.cache import default_cache_dir
from .backbone import TINY_MEANINGLESS, load_backbone
from .errors import CheckpointError
from .outputs import prepare_out_dir, write_csv, write_json, write_text
from .pipeline import check_devices, check_writable_dir, run_extraction
from .shell import command


def _flags(parser) -> None:
    parser.add_argument("--checkpoint", type=str, required=True, help="probe checkpoint written by fit")
    parser.add_argument("--fasta", type=str, required=True, help="FASTA file of the proteins to score")
    parser.add_argument("--out", type=str, required=True, help="output folder")
    parser.add_argument("--top", type=int, default=10, help="residues shown per protein on the terminal")
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing output folder")


def safe_name(pid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", pid)[:100] or "protein"


def pymol_script(pid: str, positions: list[int], scores: list[float]) -> str:
    lines = [f"# allo_lightning scores for {pid}: residue numbers are 1-based positions in the FASTA sequence.",
             "# b = the probe's ranking score (higher = more likely allosteric; not a probability).",
             "# Load a structure numbered like the sequence (e.g. UniProt numbering) first, then: run this.pml",
             "# Restrict to one chain by adding 'and chain A' to the selections if needed.",
             "alter all, b=0.0"]
    lines += [f"alter resi {pos}, b={s:.4f}" for pos, s in zip(positions, scores)]
    lines += ["spectrum b, blue_white_red, minimum=0, maximum=1", "show cartoon"]
    return "\n".join(lines) + "\n"


def chimerax_defattr(pid: str, positions: list[int], scores: list[float]) -> str:
    lines = [f"# allo_lightning scores for {pid}; residue numbers are 1-based sequence positions.",
             "# allo_score = the probe's ranking score (higher = more likely allosteric; not a probability).",
             "# open this file in ChimeraX, then: color byattribute allo_score palette bluered range 0,1",
             "attribute: allo_score", "match mode: any", "recipient: residues"]
    lines += [f"\t:{pos}\t{s:.4f}" for pos, s in zip(positions, scores)]
    return "\n".join(lines) + "\n"


# backbone, theta and seed come from the checkpoint unless given: a different value is refused, never used
@command("predict", __doc__, sections=("model", "trainer"), flags=_flags,
         defaults={"model.backbone": None, "model.theta": None, "model.seed": None})
def main(cfg) -> dict:
    from .data import read_fasta
    from .probe import SCORE_MEANING, ResidueSet, load_checkpoint

    t0 = time.perf_counter()
    if True:  # (one block: kept for a small diff)
        check_devices(cfg.trainer, cfg.model.dtype)
        ckpt = load_checkpoint(cfg.get("checkpoint"))
        if ckpt.spec.kind != "heads":
            raise CheckpointError(f"{ckpt.path}: a probe on {ckpt.spec.kind!r} features; predict runs probes on "
                                  "attention heads (written by python -m allo_lightning.fit).")
        name = (cfg.model.backbone or ckpt.backbone_name).lower()
        if name != ckpt.backbone_name:
            raise CheckpointError(
                f"{ckpt.path}: this probe was trained on backbone {ckpt.backbone_name!r}, but {name!r} was "
                f"requested. Use --model.backbone {ckpt.backbone_name}, or train a probe for {name} with "
                "python -m allo_lightning.fit.")
        if cfg.model.theta is not None and abs(cfg.model.theta - ckpt.theta) > 1e-12:
            raise CheckpointError(f"{ckpt.path}: the probe's features use theta={ckpt.theta:g}, not "
                                  f"{cfg.model.theta:g}. Leave --model.theta out (it comes from the checkpoint).")
        out = prepare_out_dir(cfg.get("out"), bool(cfg.get("overwrite")), "predictions.csv")
        check_writable_dir(cfg.model.cache_dir or default_cache_dir(), "--model.cache_dir")
        seed = cfg.model.seed if cfg.model.seed is not None else ckpt.backbone_seed
        backbone = load_backbone(name, cfg.model.weights, seed)
        ckpt.check_backbone(backbone)
        if backbone.meaningless:
            print(TINY_MEANINGLESS)
        proteins = read_fasta(cfg.get("fasta"), max_length=backbone.max_length)
        cfg.model.backbone, cfg.model.theta, cfg.model.seed = name, ckpt.theta, seed
        extraction = run_extraction(cfg, backbone, proteins)
        items = list(extraction)
    data = ResidueSet.build(ckpt.spec, items, labelled=False)
    scores = ckpt.score(data.x)
    probabilities = ckpt.probability(scores)
    header = ["id", "position", "residue", "score"] + (["probability"] if probabilities is not None else [])
    rows = []
    summary = []
    for i, p in enumerate(proteins):
        s = scores[data.index == i]
        prob = probabilities[data.index == i].tolist() if probabilities is not None else None
        order = torch.argsort(s, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(1, len(s) + 1)
        values = s.tolist()
        positions = list(range(1, p.length + 1))
        for j, (pos, v, r) in enumerate(zip(positions, values, rank.tolist())):
            rows.append([p.id, pos, p.sequence[pos - 1], f"{v:.6f}"] + ([f"{prob[j]:.6f}"] if prob else [])
                        + [r, int(v >= ckpt.threshold)])
        write_text(out / "pymol" / f"{safe_name(p.id)}.pml", pymol_script(p.id, positions, values))
        write_text(out / "chimerax" / f"{safe_name(p.id)}.defattr", chimerax_defattr(p.id, positions, values))
        top = [(int(j) + 1, p.sequence[int(j)], values[int(j)]) for j in order[: cfg.get("top")]]
        n_pred = sum(v >= ckpt.threshold for v in values)
        summary.append({"id": p.id, "length": p.length, "predicted": n_pred,
                        "top": [{"position": a, "residue": b, "score": c} for a, b, c in top]})
        print(f"{p.id} ({p.length} residues, {n_pred} predicted at threshold {ckpt.threshold:.3f}): "
              + ", ".join(f"{b}{a} {c:.3f}" for a, b, c in top))
    write_csv(out / "predictions.csv", header + ["rank", "predicted"], rows)
    info = {"checkpoint": str(ckpt.path), "fasta": str(cfg.get("fasta")), "backbone": backbone.name,
            "backbone_identity": backbone.identity, "theta": ckpt.theta, "threshold": ckpt.threshold,
            "score_meaning": {"score": SCORE_MEANING, "threshold": "applies to score (predicted = score >= threshold)",
                              "probability": ckpt.calibration.meaning if ckpt.calibration else
                              "no calibration in this checkpoint: no probability column"},
            "heads": [list(h) for h in ckpt.spec.heads], "proteins": summary, "meaningless": backbone.meaningless,
            "note": TINY_MEANINGLESS if backbone.meaningless else "", "seconds": round(time.perf_counter() - t0, 2)}
    write_json(out / "predictions.json", info)
    print(f"predictions: {out / 'predictions.csv'} (PyMOL: {out / 'pymol'}, ChimeraX: {out / 'chimerax'})")
    if backbone.meaningless:
        print(TINY_MEANINGLESS)
    return info


if __name__ == "__main__":
    main()
