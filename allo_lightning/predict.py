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
``DIR/proteins.csv`` (one row per protein: its best score and rank among the proteins),
``DIR/sites.csv`` (predicted sites: the top residues grouped into spatial patches with a structure,
sequence segments without; see allo_lightning.sites), and
for the ``--per_protein N`` proteins with the highest best score (default 20; ``all``; 0 for none)
``DIR/plots/<id>.png`` (score along the sequence) and scripts that colour a structure by the
within-protein percentile of the score: ``DIR/pymol/<id>.pml`` and ``DIR/chimerax/<id>.cxc``.

Rows are written as proteins finish (``DIR/predictions.csv.partial``, renamed to predictions.csv at the
end), so memory does not grow with the number of proteins; an interrupted run, started again with the
same command, resumes after the last complete protein and ends with the rows of an uninterrupted one.

``--structure FILE`` (PDB or mmCIF; or a folder of ``<id>.pdb``/``<id>.cif``; or a table with columns
id, structure, chain) aligns each protein to a chain (``--chain``, else the best-matching one) and refuses
a chain below ``--min_identity``/``--min_coverage``; then ``DIR/structures/<id>.cif`` (or .pdb) holds the
structure with B-factor = score on the mapped residues (``--unmapped_b`` on every other atom), and the
scripts use the structure's own numbering and insertion codes. Reference records (DBREF/SEQADV,
_struct_ref_seq) keep fusion inserts and tags unscored; the mapped segments are printed. Without it the
scripts use sequence positions on chain ``--chain`` (default A).
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import logging
import os
import time
from pathlib import Path
from typing import Literal, Optional, Union

from .html import PAGE_FILES, write_report
from .outputs import claim_out_files, prepare_out_dir, publish, record_outputs, write_json
from .records import RUN_FILES, record_run
from .shell import command
from .tables import file_names, format_cell, rows_text, write_csv

log = logging.getLogger("allo_lightning.predict")  # not __name__: "__main__" under python -m allo_lightning.predict


def _flags(parser) -> None:
    parser.add_argument("--checkpoint", type=str, required=True, metavar="FILE",
                        help="probe checkpoint written by fit")
    parser.add_argument("--data.path", type=Optional[str], default=None,
                        help="proteins to score: a FASTA file or a table (id, sequence, sites; sites may be empty), "
                             "detected as elsewhere")
    parser.add_argument("--fasta", type=Optional[str], default=None, help="FASTA file (same as --data.path FILE)")
    parser.add_argument("--out", type=str, required=True, metavar="DIR", help="output folder")
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
    parser.add_argument("--plots", type=bool, default=True,
                        help="write plots/<id>.png for the proteins that get per-protein files (--per_protein)")
    parser.add_argument("--per_protein", type=Union[int, Literal["all"]], default=20,
                        help="per-protein files (plots, PyMOL/ChimeraX scripts, structures) for the N proteins with "
                             "the highest best score, all, or 0 for none")
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


def _check_proteins_path(cfg) -> None:
    """Before anything is loaded: the proteins file exists (the message names the flag the user gave)."""
    from .errors import InputError

    path = _proteins_path(cfg)
    flag = "--data.path" if (cfg.get("data") or {}).get("path") else "--fasta"
    if not os.path.lexists(os.path.expanduser(path)):
        raise InputError(f"{path}: file not found. Check the path (given with {flag}).",
                         todo=f"Check the path (given with {flag}).")


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
    from .structures import KEEP_STRUCTURES, read_atoms

    atoms = None
    if mapping is not None:
        if mapping.path not in atoms_cache:
            while len(atoms_cache) >= KEEP_STRUCTURES:  # the last few: memory independent of the proteins
                atoms_cache.pop(next(iter(atoms_cache)))
            atoms_cache[mapping.path] = read_atoms(mapping.path)
        atoms = atoms_cache[mapping.path]
    sites, criterion = predicted_sites(values, p.sequence, mapping.residues if mapping else None, atoms,
                                       known=p.sites or ())
    return sites, {"sites": [t.as_dict() for t in sites], "site_criterion": criterion,
                   "site_success": success(sites)}


def _site_line(sites, n: int = 3) -> str:
    return "; ".join(f"#{t.rank} {' '.join(t.labels[:6])}{' ...' if len(t.labels) > 6 else ''} "
                     f"(sum of scores {t.score:.3f}" + ("" if t.hit is None else f", {'hit' if t.hit else 'miss'}")
                     + ")" for t in sites[:n])


PARTIAL = "predictions.csv.partial"  # rows of a run not finished yet (resumed by the same command)
FILES = ("predictions.csv", "sites.csv", "proteins.csv", "predictions.json")  # and the per-protein files
PROTEIN_COLUMNS = ["id", "length", "best_score", "protein_rank", "predicted", "windowed", "files"]


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _settings(cfg, ckpt, header) -> dict:
    """What the rows depend on: a partial file written under other settings is not resumed."""
    return {"checkpoint": _sha256(ckpt.path), "proteins": _sha256(_proteins_path(cfg)), "header": header,
            "structure": cfg.get("structure"), "chain": cfg.get("chain"), "min_identity": cfg.get("min_identity"),
            "min_coverage": cfg.get("min_coverage"), "long": cfg.get("data.long"),
            "model": {k: getattr(cfg.model, k) for k in ("dtype", "max_tokens", "bucket", "window_overlap")}}


def _resume(out: Path, settings: dict, proteins) -> tuple[int, list[tuple[float, int]]]:
    """Proteins already complete in the partial file of an earlier run with the same settings: their number
    (a prefix of ``proteins``) and (best score, predicted count) of each. The file is cut after the last
    complete protein (a row half-written when the run was stopped goes). Other settings: start over."""
    partial, meta = out / PARTIAL, out / (PARTIAL + ".json")
    try:
        same = json.loads(meta.read_text(encoding="utf-8")) == json.loads(json.dumps(settings))
    except (OSError, ValueError):
        same = False
    if not same or not partial.exists():
        if partial.exists():
            log.info(f"note: {partial} was written with other settings (or input); starting over")
        return 0, []
    from .tables import unescape_cell

    done, summary, end = 0, [], None
    with open(partial, "rb") as f:
        state = {"offset": 0, "whole": True}

        def lines():
            for raw in iter(f.readline, b""):
                state["offset"] += len(raw)
                state["whole"] = raw.endswith(b"\n")  # a row cut mid-way has no line break
                yield raw.decode("utf-8")

        reader = csv.reader(lines())
        try:
            next(reader)  # the header (the settings, header included, are the same)
            end = state["offset"]
            score_col, predicted_col = settings["header"].index("score"), settings["header"].index("predicted")
            pos, best, n_pred = 0, float("-inf"), 0
            for row in reader:
                if done >= len(proteins):
                    break
                p = proteins[done]
                if unescape_cell(row[0]) != p.id or row[1] != str(pos + 1) or row[2] != p.sequence[pos]:
                    break
                v = float(row[score_col])
                best, n_pred, pos = max(best, v), n_pred + (row[predicted_col] == "1"), pos + 1
                if pos == p.length:
                    if not state["whole"]:
                        break
                    done, end = done + 1, state["offset"]
                    summary.append((best, n_pred))
                    best, n_pred, pos = float("-inf"), 0, 0
        except (StopIteration, ValueError, IndexError, csv.Error, UnicodeDecodeError):
            pass
    if end is None:
        return 0, []
    with open(partial, "r+b") as f:
        f.truncate(end)
    return done, summary


def _top_proteins(best: list[float], n) -> list[int]:
    """Indices of the ``n`` proteins with the highest best score (ties: input order), in input order."""
    if n == "all":
        return list(range(len(best)))
    chosen = heapq.nsmallest(int(n), range(len(best)), key=lambda i: (-best[i], i))
    return sorted(chosen)


def _check(cfg) -> None:
    """The command's own flags, before torch is imported and anything is loaded."""
    from .errors import InputError
    from .structures import StructureOptions, check_structure_spec

    _proteins_path(cfg)  # one of --data.path / --fasta
    per_protein = cfg.get("per_protein")
    if per_protein != "all" and per_protein < 0:
        raise InputError(f"--per_protein must be 0 or more, or all (got {per_protein}).")
    if cfg.get("top") < 0:
        raise InputError(f"--top must be 0 or more (got {cfg.get('top')}): the residues shown per protein.",
                         todo="Give --top 0 or more.")
    StructureOptions(cfg.get("min_identity"), cfg.get("min_coverage"))
    check_structure_spec(cfg.get("structure"), cfg.get("chain"))
    _check_proteins_path(cfg)  # an existing file (named with the flag given), after the flags' own checks


# backbone, theta and seed come from the checkpoint unless given: a different value is refused, never used
@command("predict", __doc__, sections=("model", "trainer"), flags=_flags, check=_check,
         defaults={"model.backbone": None, "model.theta": None, "model.seed": None})
def main(cfg) -> dict:
    t0 = time.perf_counter()
    per_protein = cfg.get("per_protein")
    # torch, Lightning and the backbone only once the command line is parsed and checked (--help and flag
    # errors answer without them)
    import torch

    from .backbone import meaningless_message
    from .pipeline import (
        check_environment,
        load_checkpoint_backbone,
        load_probe_checkpoint,
        long_of,
        long_policy,
        run_extraction,
    )
    from .probe import SCORE_MEANING, ResidueSet
    from .sites import SITE_COLUMNS
    from .sites import site_rows as sites_table
    from .structures import StructureOptions, structures_for, write_protein_scripts

    options = StructureOptions(cfg.get("min_identity"), cfg.get("min_coverage"))
    check_environment(cfg)
    ckpt = load_probe_checkpoint(cfg, "predict")
    overwrite = bool(cfg.get("overwrite"))
    out = prepare_out_dir(cfg.get("out"), overwrite, "predictions.csv", flag="--out")
    backbone = load_checkpoint_backbone(cfg, ckpt)
    proteins = _read_proteins(cfg, max_length=backbone.max_length if long_of(cfg) == "error" else None)
    proteins = long_policy(cfg, proteins)
    structure, chain = cfg.get("structure"), cfg.get("chain")
    names = file_names(p.id for p in proteins)  # distinct file names, also for ids like a/b, a:b, a_b
    # before work: no file of this run written through a link, and no user's file in the folder replaced
    claim_out_files(out, "predictions.csv", overwrite, FILES + PAGE_FILES + RUN_FILES,
                    [out / d / f"{names[p.id]}.{ext}" for p in proteins for d, ext in
                     (("pymol", "pml"), ("chimerax", "cxc"), ("plots", "png"), ("structures", "pdb"),
                      ("structures", "cif"), ("report_files/proteins", "js"))] if per_protein != 0 else (),
                    # links only: the partial rows a stopped run resumes from, the viewer (kept when unchanged)
                    [out / f for f in (PARTIAL, PARTIAL + ".json", "report_files/3Dmol-min.js",
                                       "report_files/3Dmol-LICENSE.txt")], flag="--out")
    record_run(cfg, out)  # config.yaml now, run.log at the end
    mappings = structures_for(proteins, structure, chain, options, names.get) if structure else {}
    for p in proteins:  # aligned and checked before the backbone runs
        if structure:
            log.info(f"{p.id}: " + (mappings[p.id].summary() if p.id in mappings else
                                    f"no structure in {structure}; scripts use sequence numbering"))
    # early exit: only the probe's heads, the backbone run up to the deepest of them (several processes:
    # shared, then only rank zero goes on)
    extraction = run_extraction(cfg, backbone, proteins, heads=list(ckpt.spec.heads))
    calibrated = ckpt.calibration is not None
    header = ["id", "position", "residue", "score"] + (["probability"] if calibrated else []) \
        + ["rank", "predicted", "windowed"] + (["chain", "resnum", "icode"] if structure else [])

    def scored(p):
        """Scores, probabilities (or None), within-protein ranks and the order of one protein: the same
        computation for every protein, whether in one run or across an interrupted and a resumed one."""
        data = ResidueSet.build(ckpt.spec, [(p, extraction.stats(p))], labelled=False)
        s = ckpt.score(data.x)
        prob = ckpt.probability(s)
        order = torch.argsort(s, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(1, len(s) + 1)
        return s.tolist(), (prob.tolist() if prob is not None else None), rank.tolist(), order.tolist()

    # -- rows, appended and flushed as proteins finish; a stopped run resumes after its last whole protein
    settings = _settings(cfg, ckpt, header)
    partial, meta = out / PARTIAL, out / (PARTIAL + ".json")
    done, summary = (0, []) if overwrite else _resume(out, settings, proteins)
    if done:
        log.info(f"resuming: {done} of {len(proteins)} proteins are in {partial} already")
    else:
        write_json(meta, settings)
        partial.write_text(rows_text(header, [header]), encoding="utf-8", newline="")
    best = [b for b, _ in summary]
    n_predicted = [n for _, n in summary]
    from tqdm import tqdm

    bar = tqdm(total=len(proteins), initial=done, desc="scoring", unit="protein",
               disable=not cfg.trainer.kwargs()["enable_progress_bar"])
    with open(partial, "a", encoding="utf-8", newline="") as f:
        for p in proteins[done:]:
            values, prob, rank, _ = scored(p)
            where = _where_columns(mappings.get(p.id), p.length, bool(structure))
            windowed = int(p.id in extraction.windowed)
            rows = [[p.id, pos, p.sequence[pos - 1], v, *([prob[pos - 1]] if prob else []), r,
                     int(v >= ckpt.threshold), windowed, *loc]
                    for pos, (v, r, loc) in enumerate(zip(values, rank, where), start=1)]
            f.write(rows_text(header, rows))
            f.flush()  # a stopped run keeps every protein written so far
            best.append(float(format_cell(max(values))))  # as written: the same ranking in a resumed run
            n_predicted.append(sum(v >= ckpt.threshold for v in values))
            bar.update(1)
        os.fsync(f.fileno())
    bar.close()

    # -- predicted sites of every protein (one more pass, scores recomputed from the cache: nothing kept)
    atoms_cache: dict = {}
    judged = {"n": 0, "top1": 0, "top3": 0, "criteria": set()}

    def site_table():
        for p in proteins:
            values = scored(p)[0]
            sites, info = _predicted_sites(p, values, mappings.get(p.id), atoms_cache)
            if info.get("site_success"):
                judged["n"] += 1
                judged["top1"] += info["site_success"]["top1"]
                judged["top3"] += info["site_success"]["top3"]
                judged["criteria"].add(info["site_criterion"])
            yield from sites_table(p.id, sites)

    record_outputs(out, "predictions.csv", [out / "sites.csv"])
    write_csv(out / "sites.csv", SITE_COLUMNS, site_table())
    site_success = ({"n": judged["n"], "top1": judged["top1"], "top3": judged["top3"],
                     "criterion": " / ".join(sorted(judged["criteria"]))} if judged["n"] else None)

    # -- per-protein files for the proteins with the highest best score (or all, or none)
    chosen = _top_proteins(best, per_protein)
    order = sorted(range(len(proteins)), key=lambda i: (-best[i], i))
    protein_rank = {i: k for k, i in enumerate(order, start=1)}
    notes = [f"Backbone {backbone.label}. " + backbone.note,
             "Score = the probe's ranking score (higher = more likely allosteric), not a probability."]
    files = {proteins[i].id: [out / "pymol" / f"{names[proteins[i].id]}.pml",
                              out / "chimerax" / f"{names[proteins[i].id]}.cxc"]
             + ([out / "structures" / f"{names[proteins[i].id]}.{mappings[proteins[i].id].fmt}"]
                if proteins[i].id in mappings else [])
             + ([out / "plots" / f"{names[proteins[i].id]}.png"] if cfg.get("plots") else []) for i in chosen}
    record_outputs(out, "predictions.csv", [f for fs in files.values() for f in fs])  # --overwrite removes them
    top_n = cfg.get("top")
    described = []
    for i in chosen:
        p = proteins[i]
        values, _, _, order_p = scored(p)
        mapping = mappings.get(p.id)
        where = _where_columns(mapping, p.length, bool(structure))
        record = write_protein_scripts(out, p.id, names[p.id], p.sequence, values, mapping, chain, top_n, notes,
                                       known=p.sites or (), unmapped_b=cfg.get("unmapped_b"), note=backbone.note)
        sites, site_info = _predicted_sites(p, values, mapping, atoms_cache)
        if cfg.get("plots"):
            from .plots.predict import score_profile

            labels = [f"{c}:{n}{ic}" if c or n else "" for c, n, ic in where] if mapping else None
            score_profile(p.id, values, out / "plots" / f"{names[p.id]}.png", threshold=ckpt.threshold,
                          backbone_label=backbone.label, sequence=p.sequence, sites=p.sites,
                          windows=extraction.window_regions(p), top=min(top_n, 10), residue_labels=labels)
        top = [(j + 1, p.sequence[j], values[j]) for j in order_p[:top_n]]
        described.append({"id": p.id, "length": p.length, "predicted": n_predicted[i], "files": names[p.id],
                          "protein_rank": protein_rank[i], **record, "windowed": p.id in extraction.windowed,
                          "windows": extraction.window_regions(p) or [], "known_sites": list(p.sites or []),
                          **site_info,
                          "top": [{"position": a, "residue": b, "score": c} for a, b, c in top]})
        log.info(f"{p.id} ({p.length} residues, {n_predicted[i]} predicted at threshold {ckpt.threshold:.3f}): "
                 + ", ".join(f"{b}{a} {c:.3f}" for a, b, c in top))
        if sites:
            log.info(f"  sites: {_site_line(sites)}")
    if site_success:
        log.info(f"site success ({site_success['criterion']}): top-1 {site_success['top1']}/{site_success['n']}, "
                 f"top-3 {site_success['top3']}/{site_success['n']} proteins")
    with_files = set(files)
    write_csv(out / "proteins.csv", PROTEIN_COLUMNS,
              ([p.id, p.length, best[i], protein_rank[i], n_predicted[i], int(p.id in extraction.windowed),
                names[p.id] if p.id in with_files else ""] for i, p in enumerate(proteins)))
    info = {"checkpoint": str(ckpt.path), "data": str(_proteins_path(cfg)), "fasta": cfg.get("fasta"),
            "site_success": site_success, "backbone": backbone.name,
            "backbone_identity": backbone.identity, "theta": ckpt.theta, "threshold": ckpt.threshold,
            "score_meaning": {"score": SCORE_MEANING, "threshold": "applies to score (predicted = score >= threshold)",
                              "probability": ckpt.calibration.meaning if ckpt.calibration else
                              "no calibration in this checkpoint: no probability column"},
            "heads": [list(h) for h in ckpt.spec.heads], "heads_fallback": ckpt.config.get("heads_fallback"),
            "n_proteins": len(proteins), "per_protein": per_protein, "proteins": described,
            "file_names": {p.id: names[p.id] for p in proteins if p.id in with_files},
            "resumed_after": done, "meaningless": backbone.meaningless,
            "note": backbone.note, "seconds": round(time.perf_counter() - t0, 2)}
    write_json(out / "predictions.json", info)
    publish(partial, out / "predictions.csv")  # last: its presence means the run finished
    meta.unlink(missing_ok=True)
    shown = "every protein" if per_protein == "all" else f"the {len(chosen)} with the highest best score"
    log.info(f"predictions: {out / 'predictions.csv'} ({len(proteins)} proteins; ranked in {out / 'proteins.csv'}); "
             f"per-protein files for {shown} (PyMOL: {out / 'pymol'}, ChimeraX: {out / 'chimerax'}"
             + (f", structures: {out / 'structures'}" if mappings else "")
             + (f", plots: {out / 'plots'}" if cfg.get("plots") else "") + ")")
    log.info(f"report: {write_report(out, 'predict')} (open it in a browser)")
    if ckpt.calibration is not None and ckpt.calibration.warning:  # the probability column, at a glance
        log.warning(f"probability column: {ckpt.calibration.collapsed}")
    if backbone.meaningless:
        log.warning(meaningless_message(backbone.name))
    return info


if __name__ == "__main__":
    main()
