"""``python -m allo_lightning.predict --checkpoint CKPT --data.path FILE --out DIR``: score new proteins.

Proteins: ``--data.path`` takes a FASTA file or a table (id, sequence, sites; empty sites cells allowed),
detected as for every other command (``--fasta FILE`` is the same for a FASTA file); sites given in a
table are marked as known sites in the plots and scripts and used to judge the predicted sites.

The backbone, its weights check and theta come from the checkpoint (a different ``--model.backbone``
or other weights are refused). Writes ``DIR/predictions.csv`` (id, position (1-based), residue,
score (a ranking score, not a probability), probability (the score calibrated on the probe's validation
proteins; absent when the checkpoint has no calibration), rank (1 = most likely allosteric within its
protein), predicted (score >= the checkpoint's decision threshold); with ``--structure`` also chain,
resnum, icode: the structure residue each position maps to, empty where unmapped),
``DIR/plots/<id>.png`` (score along the sequence), ``DIR/sites.csv`` (predicted sites: the top residues
grouped into spatial patches with a structure, sequence segments without; see allo_lightning.sites), and
scripts that colour a structure by the within-protein percentile of the score:
``DIR/pymol/<id>.pml`` and ``DIR/chimerax/<id>.cxc``.

``--structure FILE`` (PDB or mmCIF; or a folder of ``<id>.pdb``/``<id>.cif``; or a table with columns
id, structure, chain) aligns each protein to a chain (``--chain``, else the best-matching one) and refuses
a chain below ``--min_identity``/``--min_coverage``; then ``DIR/structures/<id>.cif`` (or .pdb) holds the
structure with B-factor = score on the mapped residues (``--unmapped_b`` on every other atom), and the
scripts use the structure's own numbering and insertion codes. Reference records (DBREF/SEQADV,
_struct_ref_seq) keep fusion inserts and tags unscored; the mapped segments are printed. Without it the
scripts use sequence positions on chain ``--chain`` (default A).
"""

from __future__ import annotations

import time
from typing import Literal, Optional

import torch

from .backbone import TINY_MEANINGLESS
from .html import record_run, write_report
from .outputs import prepare_out_dir, record_outputs, write_json
from .pipeline import (
    check_environment,
    load_checkpoint_backbone,
    load_probe_checkpoint,
    long_of,
    long_policy,
    run_extraction,
)
from .shell import command
from .tables import file_names, write_csv


def _flags(parser) -> None:
    parser.add_argument("--checkpoint", type=str, required=True, help="probe checkpoint written by fit")
    parser.add_argument("--data.path", type=Optional[str], default=None,
                        help="proteins to score: a FASTA file or a table (id, sequence, sites; sites may be empty), "
                             "detected as elsewhere")
    parser.add_argument("--fasta", type=Optional[str], default=None, help="FASTA file (same as --data.path FILE)")
    parser.add_argument("--out", type=str, required=True, help="output folder")
    parser.add_argument("--top", type=int, default=10, help="residues shown per protein on the terminal")
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing output folder")
    parser.add_argument("--data.long", type=Literal["window", "skip", "error"], default="window",
                        help="proteins longer than the backbone's context: window (overlapping windows, marked "
                             "windowed), skip (listed) or error")
    parser.add_argument("--structure", type=str, default=None,
                        help="PDB/mmCIF file, a folder of <id>.pdb/<id>.cif, or a table id,structure,chain")
    parser.add_argument("--chain", type=str, default=None,
                        help="chain to map the scores onto (default: the best-matching chain; A without --structure)")
    parser.add_argument("--min_identity", type=float, default=0.9,
                        help="refuse a structure chain less identical than this to the protein (0..1)")
    parser.add_argument("--min_coverage", type=float, default=0.1,
                        help="refuse a structure chain covering less than this fraction of the protein (0..1)")
    parser.add_argument("--plots", type=bool, default=True, help="write plots/<id>.png per protein")
    parser.add_argument("--unmapped_b", type=Optional[float], default=-1.0,
                        help="B-factor written on atoms without a score in structures/<id> (null: keep the "
                             "crystallographic B)")


def _proteins_path(cfg) -> str:
    """``--data.path`` or ``--fasta`` (exactly one)."""
    from .errors import InputError

    path, fasta = (cfg.get("data") or {}).get("path"), cfg.get("fasta")
    if path and fasta and path != fasta:
        raise InputError(f"--data.path {path} and --fasta {fasta}: give the proteins once.",
                         todo="Give --data.path FILE only.")
    if not (path or fasta):
        raise InputError("no proteins to score: give --data.path FILE (FASTA or a table id, sequence, sites).",
                         todo="Give --data.path FILE.")
    return path or fasta


def _read_proteins(cfg, max_length: int | None):
    """FASTA or table, detected as for every other command; a table's sites become known sites."""
    from .data import read_proteins

    return read_proteins(_proteins_path(cfg), max_length=max_length)


def _where_columns(mapping, length: int, with_structure: bool) -> list[tuple]:
    """chain, resnum, icode per position: empty strings where unmapped or for a protein the structure
    table leaves out; no columns at all without --structure."""
    from .structures import mapping_columns

    if mapping is not None:
        return mapping_columns(mapping.residues)
    return [("", "", "")] * length if with_structure else [()] * length


def _predicted_sites(p, values, mapping, atoms_cache: dict) -> tuple[list, dict]:
    """Ranked sites of one protein (spatial patches on its structure, else sequence segments) and what
    predictions.json records about them."""
    from .sites import predicted_sites, success
    from .structures import read_atoms

    atoms = None
    if mapping is not None:
        if mapping.path not in atoms_cache:
            atoms_cache[mapping.path] = read_atoms(mapping.path)
        atoms = atoms_cache[mapping.path]
    sites, criterion = predicted_sites(values, p.sequence, mapping.residues if mapping else None, atoms,
                                       known=p.sites or ())
    return sites, {"sites": [t.as_dict() for t in sites], "site_criterion": criterion,
                   "site_success": success(sites)}


def _site_line(sites, n: int = 3) -> str:
    return "; ".join(f"#{t.rank} {' '.join(t.labels[:6])}{' ...' if len(t.labels) > 6 else ''} (score {t.score:.3f}"
                     + ("" if t.hit is None else f", {'hit' if t.hit else 'miss'}") + ")" for t in sites[:n])


def _site_success(summary: list[dict]) -> dict | None:
    """Site-level success over the proteins whose sites could be judged (labels; DCA with a structure)."""
    judged = [s for s in summary if s.get("site_success")]
    if not judged:
        return None
    criteria = sorted({s["site_criterion"] for s in judged})
    return {"n": len(judged), "top1": sum(s["site_success"]["top1"] for s in judged),
            "top3": sum(s["site_success"]["top3"] for s in judged), "criterion": " / ".join(criteria)}


# backbone, theta and seed come from the checkpoint unless given: a different value is refused, never used
@command("predict", __doc__, sections=("model", "trainer"), flags=_flags,
         defaults={"model.backbone": None, "model.theta": None, "model.seed": None})
def main(cfg) -> dict:
    from .probe import SCORE_MEANING, ResidueSet
    from .sites import SITE_COLUMNS
    from .sites import site_rows as sites_table
    from .structures import StructureOptions, check_structure_spec, structures_for, write_protein_scripts

    t0 = time.perf_counter()
    _proteins_path(cfg)  # one of --data.path / --fasta, checked before anything is loaded
    options = StructureOptions(cfg.get("min_identity"), cfg.get("min_coverage"))
    check_structure_spec(cfg.get("structure"), cfg.get("chain"))
    check_environment(cfg)
    ckpt = load_probe_checkpoint(cfg, "predict")
    out = prepare_out_dir(cfg.get("out"), bool(cfg.get("overwrite")), "predictions.csv")
    record_run(cfg, out)  # config.yaml now, run.log at the end
    backbone = load_checkpoint_backbone(cfg, ckpt)
    proteins = _read_proteins(cfg, max_length=backbone.max_length if long_of(cfg) == "error" else None)
    proteins = long_policy(cfg, proteins)
    structure, chain = cfg.get("structure"), cfg.get("chain")
    names = file_names(p.id for p in proteins)  # distinct file names, also for ids like a/b, a:b, a_b
    mappings = structures_for(proteins, structure, chain, options, names.get) if structure else {}
    for p in proteins:  # aligned and checked before the backbone runs
        if structure:
            print(f"{p.id}: " + (mappings[p.id].summary() if p.id in mappings else
                                 f"no structure in {structure}; scripts use sequence numbering"))
    # early exit: only the probe's heads, the backbone run up to the deepest of them
    needed = list(ckpt.spec.heads)
    extraction = run_extraction(cfg, backbone, proteins, heads=needed)
    items = list(extraction)
    data = ResidueSet.build(ckpt.spec, items, labelled=False)
    scores = ckpt.score(data.x)
    probabilities = ckpt.probability(scores)  # None when the checkpoint has no calibration
    header = ["id", "position", "residue", "score"] + (["probability"] if probabilities is not None else []) \
        + ["rank", "predicted", "windowed"] + (["chain", "resnum", "icode"] if structure else [])
    rows, site_rows, atoms_cache = [], [], {}
    notes = [f"Backbone {backbone.label}. " + (TINY_MEANINGLESS if backbone.meaningless else ""),
             "Score = the probe's ranking score (higher = more likely allosteric), not a probability."]
    summary = []
    per_protein = {p.id: [out / "pymol" / f"{names[p.id]}.pml", out / "chimerax" / f"{names[p.id]}.cxc"]
                   + ([out / "structures" / f"{names[p.id]}.{mappings[p.id].fmt}"] if p.id in mappings else [])
                   + ([out / "plots" / f"{names[p.id]}.png"] if cfg.get("plots") else []) for p in proteins}
    files = [f for fs in per_protein.values() for f in fs] + [out / "sites.csv"]
    record_outputs(out, "predictions.csv", files)  # --overwrite removes them
    for i, p in enumerate(proteins):
        s = scores[data.index == i]
        prob = [f"{v:.6f}" for v in probabilities[data.index == i].tolist()] if probabilities is not None else None
        order = torch.argsort(s, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(1, len(s) + 1)
        values = s.tolist()
        mapping = mappings.get(p.id)
        where = _where_columns(mapping, p.length, bool(structure))
        for pos, (v, r, loc) in enumerate(zip(values, rank.tolist(), where), start=1):
            rows.append([p.id, pos, p.sequence[pos - 1], f"{v:.6f}", *([prob[pos - 1]] if prob else []), r,
                         int(v >= ckpt.threshold), int(p.id in extraction.windowed), *loc])
        fname = names[p.id]
        record = write_protein_scripts(out, p.id, fname, p.sequence, values, mapping, chain, cfg.get("top"), notes,
                                       known=p.sites or (), unmapped_b=cfg.get("unmapped_b"))
        sites, site_info = _predicted_sites(p, values, mapping, atoms_cache)
        site_rows.extend(sites_table(p.id, sites))
        windows = extraction.window_regions(p)  # 1-based (start, end) windows of a long protein, else None
        if cfg.get("plots"):
            from .plots.predict import score_profile

            labels = ([f"{c}:{n}{ic}" if c or n else "" for c, n, ic in where] if mapping else None)
            score_profile(p.id, values, out / "plots" / f"{fname}.png", threshold=ckpt.threshold,
                          backbone_label=backbone.label, sequence=p.sequence, sites=p.sites, windows=windows,
                          top=min(cfg.get("top"), 10), residue_labels=labels)
        top = [(int(j) + 1, p.sequence[int(j)], values[int(j)]) for j in order[: cfg.get("top")]]
        n_pred = sum(v >= ckpt.threshold for v in values)
        summary.append({"id": p.id, "length": p.length, "predicted": n_pred, "files": fname, **record,
                        "windowed": p.id in extraction.windowed, "windows": windows or [],
                        "known_sites": list(p.sites or []), **site_info,
                        "top": [{"position": a, "residue": b, "score": c} for a, b, c in top]})
        print(f"{p.id} ({p.length} residues, {n_pred} predicted at threshold {ckpt.threshold:.3f}): "
              + ", ".join(f"{b}{a} {c:.3f}" for a, b, c in top))
        if sites:
            print(f"  sites: {_site_line(sites)}")
    write_csv(out / "predictions.csv", header, rows)
    write_csv(out / "sites.csv", SITE_COLUMNS, site_rows)
    site_success = _site_success(summary)
    if site_success:
        print(f"site success ({site_success['criterion']}): top-1 {site_success['top1']}/{site_success['n']}, "
              f"top-3 {site_success['top3']}/{site_success['n']} proteins")
    info = {"checkpoint": str(ckpt.path), "data": str(_proteins_path(cfg)), "fasta": cfg.get("fasta"),
            "site_success": site_success, "backbone": backbone.name,
            "backbone_identity": backbone.identity, "theta": ckpt.theta, "threshold": ckpt.threshold,
            "score_meaning": {"score": SCORE_MEANING, "threshold": "applies to score (predicted = score >= threshold)",
                              "probability": ckpt.calibration.meaning if ckpt.calibration else
                              "no calibration in this checkpoint: no probability column"},
            "heads": [list(h) for h in ckpt.spec.heads], "heads_fallback": ckpt.config.get("heads_fallback"),
            "proteins": summary,
            "file_names": names, "meaningless": backbone.meaningless,
            "note": TINY_MEANINGLESS if backbone.meaningless else "", "seconds": round(time.perf_counter() - t0, 2)}
    write_json(out / "predictions.json", info)
    print(f"predictions: {out / 'predictions.csv'} (PyMOL: {out / 'pymol'}, ChimeraX: {out / 'chimerax'}"
          + (f", structures: {out / 'structures'}" if mappings else "")
          + (f", plots: {out / 'plots'}" if cfg.get("plots") else "") + ")")
    print(f"report: {write_report(out, 'predict')} (open it in a browser)")
    if backbone.meaningless:
        print(TINY_MEANINGLESS)
    return info


if __name__ == "__main__":
    main()
