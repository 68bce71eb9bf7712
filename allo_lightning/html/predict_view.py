"""What a predict page shows of one protein, read from predict's own outputs (the adapter).

:func:`protein_views` reads ``predictions.json``, ``predictions.csv`` and ``structures/<name>.*`` of a
predict output folder and returns one plain dict per protein (the JSON the page script draws). It uses
only documented output columns, so it works on any predict folder; optional extras are used when a
protein's entry in predictions.json has them:

- ``known_sites``: known (labelled) sites, 1-based positions (else a ``known_site``/``label`` column of
  predictions.csv, else none);
- ``windows``: 1-based (start, end) windows of a protein longer than the backbone's context;
- ``sites``: predicted sites as predict writes them (:mod:`allo_lightning.sites`: ``{"rank", "positions"
  (1-based), "residues", "score", "dca", "hit"...}``; else: runs of consecutive residues at or above the
  threshold, ranked by mean score);
- ``structure_file`` (or ``written``, as predict records it today): the annotated structure, relative to
  the folder (else ``structures/<name>.cif|pdb``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

SITES_RULE = ("Predicted sites (allo_lightning.sites): the protein's top residues (5 %, at least 5) grouped into "
              "spatial patches (side-chain atoms within 6 A, single linkage) on its structure, else into sequence "
              "segments; ranked by the sum of their scores. hit: the site's centre lies within 4 A of a labelled "
              "site residue (DCA), or without a structure the segment contains one.")
SEGMENT_RULE = ("Predicted sites here are sequence segments: runs of consecutive residues at or above the "
                "threshold, ranked by their mean score (no spatial grouping).")
WATER = ("HOH", "WAT", "DOD", "H2O")


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def read_rows(path: Path, ids=None) -> dict[str, list[dict]]:
    """predictions.csv rows grouped by id, in file order (cells as written: the apostrophe that
    neutralises a formula-like id removed); with ``ids``, only those proteins' rows are kept (the file is
    streamed: a proteome's table is never held in memory)."""
    from ..tables import iter_csv

    out: dict[str, list[dict]] = {}
    rows = iter_csv(path)
    header = next(rows)
    at = header.index("id")
    for cells in rows:
        if ids is None or cells[at] in ids:
            out.setdefault(cells[at], []).append(dict(zip(header, cells)))
    return out


def mapped_segments(mapping: list[list | None]) -> list[dict]:
    """Runs of positions mapped onto consecutive residues of one chain: ``{chain, start, end, first,
    last}`` (start/end: structure numbers with insertion code; first/last: 1-based positions)."""
    segments: list[dict] = []
    prev = None
    for pos, m in enumerate(mapping, start=1):
        if m is None:
            prev = None
            continue
        chain, num, icode = m
        if prev is not None and prev[1][0] == chain and prev[0] == pos - 1 and 0 <= num - prev[1][1] <= 1:
            seg = segments[-1]
            seg["end"], seg["last"] = f"{num}{icode}", pos
        else:
            segments.append({"chain": chain, "start": f"{num}{icode}", "end": f"{num}{icode}", "first": pos,
                             "last": pos})
        prev = (pos, (chain, num))
    return segments


def sequence_sites(scores: list[float], threshold: float, mapping: list) -> list[dict]:
    """Runs of consecutive residues with score >= threshold, ranked by mean score (ties: earlier first)."""
    runs, cur = [], []
    for pos, v in enumerate(scores, start=1):
        if v >= threshold:
            cur.append(pos)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    runs.sort(key=lambda r: (-sum(scores[p - 1] for p in r) / len(r), r[0]))
    return [_site(rank, r, sum(scores[p - 1] for p in r) / len(r), mapping) for rank, r in enumerate(runs, 1)]


def _site(rank: int, positions: list[int], score: float, mapping: list, label: str | None = None,
          structure: str | None = None, judged: str = "") -> dict:
    if label is None:
        label = f"{positions[0]}-{positions[-1]}" if len(positions) > 1 and positions == list(
            range(positions[0], positions[-1] + 1)) else " ".join(map(str, positions))
    if structure is None:
        where = [mapping[p - 1] for p in positions if 0 < p <= len(mapping) and mapping[p - 1]]
        structure = " ".join(f"{c}:{n}{i}" for c, n, i in where)
    return {"rank": rank, "positions": positions, "score": score, "label": label, "structure": structure,
            "judged": judged}


def viewer_structure(path: Path) -> dict:
    """The structure text the viewer loads: PDB as written (waters dropped); mmCIF converted to PDB when
    it fits the format (3Dmol.js reads no insertion codes from mmCIF), else mmCIF as written."""
    from ..structures import read_text

    name = path.name
    if path.suffix.lower() in (".cif", ".mmcif") or name.lower().endswith((".cif.gz", ".mmcif.gz")):
        try:
            import numpy as np
            from biotite.structure.io import pdb as biopdb
            from biotite.structure.io import pdbx

            cif = pdbx.CIFFile.read(io.StringIO(read_text(path)))
            atoms = pdbx.get_structure(cif, model=1, extra_fields=["b_factor"], use_author_fields=True)
            atoms = atoms[~np.isin(atoms.res_name, WATER)]
            if atoms.array_length() < 99_999 and all(len(c) == 1 for c in set(atoms.chain_id.tolist())):
                f = biopdb.PDBFile()
                f.set_structure(atoms)
                buf = io.StringIO()
                f.write(buf)
                return {"name": name, "format": "pdb", "text": buf.getvalue()}
        except Exception:  # noqa: BLE001 - an unusual file: the viewer gets it as written
            pass
        return {"name": name, "format": "cif", "text": read_text(path)}
    text = read_text(path, "latin-1")
    keep = [ln for ln in text.splitlines() if not (ln.startswith(("ATOM  ", "HETATM")) and ln[17:20].strip() in WATER)]
    return {"name": name, "format": "pdb", "text": "\n".join(keep) + "\n"}


def protein_views(out: Path, n_sticks: int = 10):
    """(run info from predictions.json, iterator of per-protein view dicts)."""
    out = Path(out)
    info = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    rows = read_rows(out / "predictions.csv", {entry["id"] for entry in info["proteins"]})
    threshold = float(info["threshold"])
    notes = [info.get("note") or ""] if info.get("meaningless") else []

    def views():
        for entry in info["proteins"]:
            pid, fname = entry["id"], entry["files"]
            rs = rows.get(pid, [])
            scores = [float(r["score"]) for r in rs]
            prob = [_float(r.get("probability")) for r in rs] if rs and "probability" in rs[0] else None
            mapping = [[r["chain"], int(r["resnum"]), r.get("icode") or ""] if r.get("chain") and r.get("resnum")
                       else None for r in rs]
            known = [False] * len(rs)
            sites = entry.get("known_sites")
            if sites:
                for s in sites:
                    if 0 < int(s) <= len(known):
                        known[int(s) - 1] = True
            elif rs and ("known_site" in rs[0] or "label" in rs[0]):
                col = "known_site" if "known_site" in rs[0] else "label"
                known = [r.get(col) in ("1", "true", "True", "yes") for r in rs]
            given = [s for s in entry.get("sites") or [] if isinstance(s, dict) and s.get("positions")]
            if given:
                predicted = [_site(int(s.get("rank", k + 1)), [int(p) for p in s["positions"]], float(s["score"]),
                                   mapping, None, " ".join(map(str, s.get("residues") or [])) or None,
                                   "" if s.get("hit") is None else ("hit" if s["hit"] else "miss")
                                   + (f" (DCA {s['dca']:.1f} A)" if s.get("dca") is not None else ""))
                             for k, s in enumerate(given)]
                rule = SITES_RULE + (f" Criterion: {entry['site_criterion']}." if entry.get("site_criterion") else "")
            else:
                predicted, rule = sequence_sites(scores, threshold, mapping), SEGMENT_RULE
            top = [int(t["position"]) for t in entry.get("top", [])]
            if not top:
                top = sorted(range(1, len(scores) + 1), key=lambda p: (-scores[p - 1], p))[:n_sticks]
            sticks = sorted(set(top[:n_sticks]) | {p for s in predicted[:3] for p in s["positions"]})
            rel = entry.get("structure_file") or entry.get("written")
            candidates = [out / rel] if rel else [out / "structures" / f"{fname}.{ext}" for ext in ("cif", "pdb")]
            structure = next((viewer_structure(c) for c in candidates if c.is_file()), None)
            summary = [f"{len(scores)} residues, {sum(v >= threshold for v in scores)} at or above the threshold "
                       f"{threshold:.3f} (score = ranking score, not a probability)."]
            if entry.get("structure") and entry.get("identity") is not None:
                summary.append(f"Structure {entry.get('structure', '')} chain {entry['chain']}: identity "
                               f"{entry.get('identity', float('nan')):.3f}, coverage {entry.get('coverage', 0):.3f}.")
            if entry.get("windowed"):
                summary.append("Longer than the backbone's context: scored in overlapping windows.")
            yield {"id": pid, "file": fname, "sequence": "".join(r["residue"] for r in rs), "scores": scores,
                   "probability": prob, "rank": [int(r["rank"]) for r in rs], "threshold": threshold,
                   "mapping": mapping, "segments": mapped_segments(mapping), "known": known,
                   "windows": entry.get("windows") or [], "windowed": bool(entry.get("windowed")),
                   "top": top, "sticks": sticks, "sites": predicted,
                   "sites_rule": rule, "structure": structure, "notes": notes + summary}

    return info, views()
