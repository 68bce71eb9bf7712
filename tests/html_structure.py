"""A small synthetic structure for report tests: one chain as an ideal alpha helix (backbone atoms and a
CB), optionally with a fused foreign segment and an insertion code, a ligand and waters (PDB text)."""

from __future__ import annotations

import math

THREE = {"A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY", "H": "HIS",
         "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER", "T": "THR", "W": "TRP",
         "Y": "TYR", "V": "VAL"}


def _line(record, serial, name, resn, chain, resi, icode, xyz, element, b=20.0):
    return (f"{record:<6}{serial:>5} {name:<4} {resn:>3} {chain}{resi:>4}{icode:1}   "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}{1.0:6.2f}{b:6.2f}          {element:>2}")


def helix_pdb(seq: str, chain: str = "A", offset: int = 0, first: int = 1, insert_after: int | None = None,
              insert: str = "", icode_at: int | None = None, ligand: bool = True) -> str:
    """Positions ``first..len(seq)`` numbered position + offset (``icode_at``: that position takes the
    previous number with insertion code A); ``insert`` residues numbered 900.. after ``insert_after``."""
    lines, serial, k = [], 1, 0
    residues = []
    for p in range(first, len(seq) + 1):
        if icode_at is not None and p == icode_at:
            residues.append((seq[p - 1], p - 1 + offset, "A"))
        else:
            residues.append((seq[p - 1], p + offset - (1 if icode_at is not None and p > icode_at else 0), ""))
        if insert_after is not None and p == insert_after:
            residues += [(aa, 900 + j, "") for j, aa in enumerate(insert)]
    for aa, number, icode in residues:
        # a bundle of 24-residue helices (up, down, ...) on a circle: compact, like a GPCR's transmembrane part
        seg, j = divmod(k, 24)
        phi = 2 * math.pi * seg / max(1, math.ceil(len(residues) / 24))
        radius = 3.0 * max(1, math.ceil(len(residues) / 24))
        cx, cy = radius * math.cos(phi), radius * math.sin(phi)
        t = math.radians(100.0 * j)
        z = 1.5 * (j if seg % 2 == 0 else 23 - j)
        atoms = [("N", 1.55, -28, -0.9, "N"), ("CA", 2.3, 0, 0.0, "C"), ("C", 1.7, 28, 0.9, "C"),
                 ("O", 1.9, 40, 2.0, "O"), ("CB", 3.3, 10, -0.5, "C")]
        for name, r, dt, dz, el in atoms:
            if name == "CB" and aa == "G":
                continue
            a = t + math.radians(dt)
            lines.append(_line("ATOM", serial, name, THREE.get(aa, "UNK"), chain, number, icode,
                               (cx + r * math.cos(a), cy + r * math.sin(a), z + dz), el))
            serial += 1
        k += 1
    if ligand:
        for j in range(6):
            lines.append(_line("HETATM", serial, f"C{j + 1}", "LIG", chain, 1001, "",
                               (1.4 * math.cos(j), 1.4 * math.sin(j), 15.0 + 0.3 * j), "C"))
            serial += 1
        for j in range(3):
            lines.append(_line("HETATM", serial, "O", "HOH", chain, 2001 + j, "", (10.0 + j, 10.0, 10.0), "O"))
            serial += 1
    return "\n".join(lines + ["END", ""])
