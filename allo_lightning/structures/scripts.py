"""PyMOL (``.pml``) and ChimeraX (``.cxc``) scripts with chain-qualified selections, and the per-protein
files of predict (scripts and the scored structure).

Numbers that users see are the structure's own (author) residue numbers and insertion codes, as PyMOL
and ChimeraX show them. Chain ids and insertion codes were checked when the structure was read
(:mod:`.formats`); every other text that goes into a script line (ids, file names, notes) passes
:func:`script_text` (no control character, no ``;``), and :func:`_checked` refuses any line with ``;`` or
a control character (a bug, never written).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AlloError
from .alignment import ChainMapping
from .formats import Residue, check_chain_id, script_text
from .write import UNMAPPED_B, percentiles, structure_record, write_scored_structure

COLOUR_MEANING = ("colour = within-protein percentile of the score (0 = lowest score of this protein, blue; "
                  "0.5 = median, white; 1 = highest, red), not the raw score: raw scores of one protein sit in a "
                  "narrow band. Grey: residues without a score (unmapped, other chains).")



def _checked(lines: list[str]) -> str:
    """Join script lines; an unprintable character or ``;`` in any of them is a bug (never written)."""
    for ln in lines:
        if ";" in ln or not ln.isprintable():
            raise AlloError(f"refusing to write a script line with ';' or a control character: {ln[:60]!a}")
    return "\n".join(lines) + "\n"


def _object_name(name: str) -> str:
    return "allo_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _pymol_resi(r: Residue) -> str:
    return ("\\" + r.resi) if r.number < 0 else r.resi  # PyMOL: a leading minus needs a backslash


def _pymol_sel(obj: str, residues: Sequence[Residue]) -> str:
    by_chain: dict[str, list[str]] = {}
    for r in residues:
        by_chain.setdefault(r.chain, []).append(_pymol_resi(r))
    parts = [f"(chain {c or chr(34) * 2} and resi {'+'.join(v)})" for c, v in by_chain.items()]
    return f"{obj} and ({' or '.join(parts)})" if parts else f"{obj} and none"


def _cx_spec(model: str, residues: Sequence[Residue]) -> str:
    by_chain: dict[str, list[str]] = {}
    for r in residues:
        by_chain.setdefault(r.chain, []).append(r.resi)
    return model + "".join(f"/{c}:{','.join(v)}" for c, v in by_chain.items())


@dataclass
class ScriptInput:
    """What both scripts show for one protein."""

    pid: str
    name: str  # file-name form of the id
    scores: list[float]  # one per sequence position
    residues: list[Residue | None]  # one per sequence position
    top: int = 10
    header: list[str] = field(default_factory=list)  # extra comment lines (backbone, identity, ...)
    structure_file: str | None = None  # path relative to the output folder of the scored structure
    known: list[int] = field(default_factory=list)  # known site positions (1-based), shown as a selection

    @classmethod
    def sequence_numbered(cls, pid: str, name: str, sequence: str, scores: Sequence[float], chain: str = "A",
                          top: int = 10, header: Sequence[str] = (), known: Sequence[int] = ()) -> ScriptInput:
        check_chain_id(chain, "--chain")
        residues = [Residue(chain, i + 1, "", "", aa) for i, aa in enumerate(sequence)]
        note = [(f"No structure was given: residue numbers are 1-based positions in the input sequence, on chain "
                f"{chain} (--chain). Use a structure numbered like the sequence (e.g. UniProt numbering), or run "
                "predict with --structure FILE to map the scores onto a structure's own numbering.")]
        return cls(pid, name, list(scores), residues, top, note + list(header), known=list(known))

    def mapped(self) -> list[tuple[Residue, float, float]]:
        """(residue, score, percentile) of every mapped position."""
        pct = percentiles(self.scores)
        return [(r, s, q) for r, s, q in zip(self.residues, self.scores, pct) if r is not None]

    def top_residues(self) -> list[Residue]:
        pairs = sorted(self.mapped(), key=lambda t: -t[1])
        return [r for r, _, _ in pairs[: self.top]]

    def known_residues(self) -> list[Residue]:
        return [self.residues[p - 1] for p in self.known
                if 1 <= p <= len(self.residues) and self.residues[p - 1] is not None]

    def comments(self, first: str) -> list[str]:
        return ["# " + script_text(t) for t in [first, *self.header, COLOUR_MEANING]]


def pymol_script(info: ScriptInput) -> str:
    obj = _object_name(info.name)
    mapped = info.mapped()
    lines = info.comments(f"allo_lightning scores for {info.pid}, on object {obj} only (other objects are left as "
                          "they are). The b property of the scored residues is set to the percentile.")
    if info.structure_file:
        lines += [script_text(f"# Usage: in PyMOL, cd to the output folder, then: @pymol/{info.name}.pml (loads "
                              f"{info.structure_file} as {obj}, its B-factors hold the raw scores)."),
                  f"delete {obj}", f"load {script_text(info.structure_file)}, {obj}"]
    else:
        lines += [script_text(f"# Usage: load your structure as object {obj} (load FILE, {obj}), then from the "
                              f"output folder: @pymol/{info.name}.pml")]
    lines += [f"alter {obj} and chain {r.chain or chr(34) * 2} and resi {_pymol_resi(r)}, b={q:.4f}"
              for r, _, q in mapped]
    scored, top, known = f"{obj}_scored", f"{obj}_top", f"{obj}_known"
    lines += [f"select {scored}, {_pymol_sel(obj, [r for r, _, _ in mapped])}",
              f"select {top}, {_pymol_sel(obj, info.top_residues())}"]
    if info.known:
        lines += [f"select {known}, {_pymol_sel(obj, info.known_residues())}"]
    lines += [f"show cartoon, {obj}",
              f"color grey80, {obj} and not {scored}",
              f"spectrum b, blue_white_red, {scored}, minimum=0, maximum=1",
              "# colour key: percentile 0 (blue), 0.5 (white), 1 (red)",
              f"delete {obj}_percentile_key",
              f"ramp_new {obj}_percentile_key, {obj}, [0, 0.5, 1], [blue, white, red]",
              f"show sticks, {top} and not hydro"]
    if info.known:
        lines += [f"show spheres, {known} and name CA", f"color yellow, {known} and name CA"]
    lines += ["deselect"]
    return _checked(lines)


def chimerax_script(info: ScriptInput, model: str = "#1") -> str:
    mapped = info.mapped()
    lines = info.comments(f"allo_lightning scores for {info.pid}, on model {model} only (other models are left as "
                          "they are). Attributes: allo_score (raw score), allo_percentile (colour).")
    opened = f"open {info.structure_file}" if info.structure_file else "open YOUR_FILE"
    lines += [script_text(f"# Usage: from the output folder, '{opened}' as model {model} (if it gets another "
                          f"number, replace {model} below by it), then: open chimerax/{info.name}.cxc")]
    for r, v, q in mapped:
        lines += [f"setattr {_cx_spec(model, [r])} residues allo_score {v:.4f} create true",
                  f"setattr {_cx_spec(model, [r])} residues allo_percentile {q:.4f} create true"]
    top = info.top_residues()
    lines += [f"cartoon {model}", f"color {model} lightgray"]
    if mapped:
        lines += [(f"color byattribute r:allo_percentile {_cx_spec(model, [r for r, _, _ in mapped])} "
                   "palette 0,blue:0.5,white:1,red"),
                  "# colour key: within-protein percentile (its own command: a failure leaves the colours as set)",
                  "key blue:0 white:0.5 red:1"]
    if top:
        lines += [f"show {_cx_spec(model, top)} atoms", f"style {_cx_spec(model, top)} stick"]
    known = info.known_residues()
    if known:
        lines += [f"name frozen allo_known {_cx_spec(model, known)}"]
    return _checked(lines)


def write_protein_scripts(out: str | Path, pid: str, name: str, sequence: str, scores: Sequence[float],
                          mapping: ChainMapping | None, chain: str | None = None, top: int = 10,
                          header: Sequence[str] = (), known: Sequence[int] = (),
                          unmapped_b: float | None = UNMAPPED_B, note: str = "") -> dict:
    """Write ``out/pymol/<name>.pml``, ``out/chimerax/<name>.cxc`` and, with a ``mapping``,
    ``out/structures/<name>.<pdb|cif>`` (carrying ``note``, a random backbone's) for one protein. Returns
    what predictions.json records (:func:`structure_record`)."""
    from ..outputs import write_text

    out = Path(out)
    if mapping is None:
        info = ScriptInput.sequence_numbered(pid, name, sequence, scores, chain or "A", top, header, known)
    else:
        rel = f"structures/{name}.{mapping.fmt}"
        write_scored_structure(mapping, scores, out / rel, unmapped_b, note)
        b_note = ("crystallographic B kept on the other atoms" if unmapped_b is None else
                  f"B-factor {unmapped_b:g} on every other atom")
        lines = [(f"Structure {mapping.path} (written as {rel} with B-factor = raw score on the mapped residues, "
                  f"{b_note}), chain {mapping.chain}: {mapping.aligned} of {len(mapping.residues)} sequence "
                  f"positions mapped ({', '.join(mapping.segments) or 'none'}, identity {mapping.identity:.3f}, "
                  f"coverage {mapping.coverage:.3f})."),
                 "Residue numbers and insertion codes are the structure's own (author) numbering."]
        if mapping.reference:
            lines.append(f"Reference records: {mapping.reference['accession']}; not scored: "
                         + (", ".join(mapping.reference["excluded"]) or "nothing"))
        info = ScriptInput(pid, name, list(scores), list(mapping.residues), top, lines + list(header), rel,
                           known=list(known))
    write_text(out / "pymol" / f"{name}.pml", pymol_script(info))
    write_text(out / "chimerax" / f"{name}.cxc", chimerax_script(info))
    return structure_record(mapping, chain, name, unmapped_b)
