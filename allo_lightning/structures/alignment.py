"""Sequence positions -> a chain's residues.

The chain's sequence (its amino-acid residues, 3-letter names -> 1-letter codes) is aligned to the
protein sequence with a global alignment with affine gaps (BLOSUM62, end gaps free, so a structure of a
fragment or with a fusion segment aligns). ``identity`` = identical pairs / aligned pairs and
``coverage`` = aligned pairs / sequence length; below the thresholds the structure is refused. Only the
first model is aligned.

Engineered structures (a T4L/BRIL insert in place of a loop, tags, linkers): where the file has reference
records (:mod:`.references`), the chain's residues are split by the database entry they belong to; only
the entry that matches the protein best is aligned, so the residues of another protein (the insert) and
those listed as expression tag, linker or insertion can never get a score, and each mapped residue gets
its reference (UniProt) number. Without reference records, the island rule applies (see ``align``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import AlloError, InputError
from .formats import Residue, chain_residues, check_chain_id, mapped_segments, read_atoms, structure_format
from .references import References, read_references, reference_groups

GAP_PENALTY = (-10, -1)  # (open, extend), BLOSUM62 units
MIN_SEGMENT_SCORE = 15  # an aligned stretch between gaps scoring less (BLOSUM62) is left unmapped
MIN_ISLAND = 20  # an aligned stretch shorter than this ...
LONG_GAP = 10  # ... between long gaps (this many sequence positions or chain residues left out) is dropped


@dataclass(frozen=True)
class StructureOptions:
    """How structures are matched to proteins.

    Args:
        min_identity: refuse a chain whose aligned residues are less identical than this (0..1).
        min_coverage: refuse a chain that covers less than this fraction of the sequence (0..1).
    """

    min_identity: float = 0.9
    min_coverage: float = 0.1

    def __post_init__(self) -> None:
        for name in ("min_identity", "min_coverage"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"--{name} must be between 0 and 1 (got {value}).", todo=f"Give --{name} in [0, 1].")


@dataclass
class ChainMapping:
    """Sequence positions of protein ``pid`` mapped onto ``chain`` of ``path``."""

    pid: str
    path: Path
    chain: str
    residues: list[Residue | None]  # one per sequence position (index = position - 1); None = not in the chain
    identical: int
    aligned: int
    chain_length: int  # amino-acid residues of the chain
    reference: dict | None = None  # what the reference records said (see _alignable), None without
    order: dict | None = None  # residue key -> index in the chain (file order), for segment breaks

    @property
    def identity(self) -> float:
        return self.identical / self.aligned if self.aligned else 0.0

    @property
    def coverage(self) -> float:
        return self.aligned / len(self.residues) if self.residues else 0.0

    @property
    def fmt(self) -> str:
        return structure_format(self.path)

    @property
    def segments(self) -> list[str]:
        """Mapped stretches in the structure's numbering, e.g. ``["A:29-230", "A:263-342"]``."""
        return mapped_segments(self.residues, self.order)

    def summary(self) -> str:
        ref = ""
        if self.reference:
            ref = f"; reference records: {self.reference['accession']}"
            if self.reference["excluded"]:
                ref += ", not scored (other entries, tags): " + ", ".join(self.reference["excluded"])
        return (f"{self.path.name} chain {self.chain}: {self.aligned} of {len(self.residues)} positions mapped "
                f"({', '.join(self.segments) or 'none'}), identity {self.identity:.3f}, coverage "
                f"{self.coverage:.3f}{ref}")


def _best_segment(values: Sequence[float]) -> tuple[int, int]:
    """[start, end) of the maximum-sum contiguous segment (empty (0, 0) when every value is <= 0)."""
    best, best_lo, best_hi, run, lo = 0.0, 0, 0, 0.0, 0
    for k, v in enumerate(values):
        if run <= 0:
            run, lo = 0.0, k
        run += v
        if run > best:
            best, best_lo, best_hi = run, lo, k + 1
    return best_lo, best_hi


def _trim_ends(same: Sequence[bool], lo: int, hi: int, window: int = 4, need: int = 3) -> tuple[int, int]:
    """Shrink [lo, hi) until each end pair is identical and the ``window`` pairs at each end hold at
    least ``need`` identical ones (a chance match at the edge of a fusion insert does not survive)."""
    def ok_left(a: int) -> bool:
        return same[a] and sum(same[a: min(a + window, hi)]) >= min(need, hi - a)

    def ok_right(b: int) -> bool:
        return same[b - 1] and sum(same[max(b - window, lo): b]) >= min(need, b - lo)

    while lo < hi and not ok_left(lo):
        lo += 1
    while lo < hi and not ok_right(hi):
        hi -= 1
    return lo, hi


def align(sequence: str, residues: Sequence[Residue], trim: bool = True) -> tuple[list[Residue | None], int, int]:
    """Global alignment (affine gaps, free end gaps) of ``sequence`` with the chain's residues.
    Returns (residue or None per sequence position, identical pairs, aligned pairs).

    With ``trim``, each run of aligned pairs between gaps keeps only its best-scoring stretch: where a
    fusion insert replaces a loop (BRIL in place of an ICL3), the optimal alignment pairs some insert
    residues with the missing loop to save a gap opening; those chance pairs score below zero and are
    dropped, and its ends are trimmed until the 4 pairs at each end hold 3 identical ones (ending on an
    identical pair), so no fusion residue gets a sequence position's score. A stretch scoring below
    ``MIN_SEGMENT_SCORE`` (a chance identical pair or two inside such a region) is dropped too: a residue
    left unmapped is better than a score on the wrong residue."""
    from biotite.sequence import ProteinSequence
    from biotite.sequence.align import SubstitutionMatrix, align_optimal

    def clean(s: str) -> str:
        return "".join(c if c in "ACDEFGHIKLMNPQRSTVWYBZ" else "X" for c in s.upper())

    mapped: list[Residue | None] = [None] * len(sequence)
    if not sequence or not residues:
        return mapped, 0, 0
    seq_a = ProteinSequence(clean(sequence))
    seq_b = ProteinSequence("".join(r.letter for r in residues))
    matrix = SubstitutionMatrix.std_protein_matrix()
    best = align_optimal(seq_a, seq_b, matrix, gap_penalty=GAP_PENALTY, terminal_penalty=False, max_number=1)[0]
    score = matrix.score_matrix()
    blocks: list[list[tuple[int, int]]] = [[]]
    for i, j in best.trace:
        if i < 0 or j < 0:
            blocks.append([])
        else:
            blocks[-1].append((int(i), int(j)))
    kept = []
    for block in blocks:
        lo, hi = 0, len(block)
        if trim:
            values = [float(score[seq_a.code[i], seq_b.code[j]]) for i, j in block]
            lo, hi = _best_segment(values)
            same = [seq_a.code[i] == seq_b.code[j] and str(seq_a[i]) != "X" for i, j in block]
            lo, hi = _trim_ends(same, lo, hi)
            if sum(values[lo:hi]) < MIN_SEGMENT_SCORE:
                lo = hi = 0
        if hi > lo:
            kept.append(block[lo:hi])
    if trim:
        kept = drop_islands(kept, len(sequence), len(residues))
    identical = aligned = 0
    for block in kept:
        for i, j in block:
            mapped[i] = residues[j]
            aligned += 1
            identical += str(seq_a[i]) == residues[j].letter and residues[j].letter != "X"
    return mapped, identical, aligned


def drop_islands(blocks: list[list[tuple[int, int]]], n_seq: int, n_chain: int) -> list[list[tuple[int, int]]]:
    """The island rule (structures without reference records). ``blocks``: runs of aligned (sequence
    index, chain index) pairs, in order. A run of fewer than ``MIN_ISLAND`` pairs is dropped when, on
    both sides, the gap to the neighbouring run (or to the end) leaves out at least ``LONG_GAP``
    sequence positions or chain residues, and on at least one side at least ``LONG_GAP`` chain residues:
    chain residues aligned to nothing are what a fusion insert looks like (T4L in place of ICL3), and a
    short motif shared with the deleted loop (ADRB2 GRTG vs T4L GETG) is then a chance match on the
    wrong protein. A short run between two unresolved stretches of the sequence (no chain residue left
    out around it) is kept: its residues sit in chain order between their mapped neighbours. Repeated
    until no run is dropped (a drop lengthens its neighbours' gaps)."""
    blocks = [b for b in blocks if b]
    changed = True
    while changed:
        changed = False
        for k, block in enumerate(blocks):
            if len(block) >= MIN_ISLAND:
                continue
            (i0, j0), (i1, j1) = block[0], block[-1]
            pi, pj = blocks[k - 1][-1] if k > 0 else (-1, -1)
            ni, nj = blocks[k + 1][0] if k + 1 < len(blocks) else (n_seq, n_chain)
            left_seq, left_chain = i0 - pi - 1, j0 - pj - 1
            right_seq, right_chain = ni - i1 - 1, nj - j1 - 1
            long_left = max(left_seq, left_chain) >= LONG_GAP
            long_right = max(right_seq, right_chain) >= LONG_GAP
            if long_left and long_right and max(left_chain, right_chain) >= LONG_GAP:
                del blocks[k]
                changed = True
                break
    return blocks


def _alignable(refs: References, residues: list[Residue]) -> list[tuple[list[Residue], dict | None]]:
    """What of one chain may be aligned: with reference records for it, each database entry's residues
    apart (the best-matching one wins, the others are never scored); without, the whole chain."""
    groups = reference_groups(refs, residues)
    if not groups:
        return [(residues, None)]
    out = []
    segs = [s for s in refs.segments if s.chain == residues[0].chain]
    for accession, members in groups.items():
        keep = {r.key for r in members}
        excluded = [s.label() for s in segs if s.accession != accession]
        n_other = sum(r.key not in keep for r in residues)
        if any((r.chain, r.number, r.icode) in refs.foreign for r in residues):
            excluded.append("tags/linkers listed in SEQADV")
        mine = [s for s in segs if s.accession == accession]
        out.append((members, {"accession": accession, "database": mine[0].database, "db_code": mine[0].db_code,
                              "segments": [s.label() for s in mine], "excluded": excluded,
                              "excluded_residues": n_other}))
    return out


def map_chain(pid: str, sequence: str, path: str | Path, chain: str | None = None,
              options: StructureOptions | None = None, atoms=None, references: References | None = None
              ) -> ChainMapping:
    """Align ``sequence`` to ``chain`` of the structure (or, with ``chain=None``, to the chain that covers
    it best). With reference records, only the residues of the database entry that matches best are
    aligned (see :func:`_alignable`). Raises InputError when the chain is missing or the match is below
    the thresholds."""
    options = options or StructureOptions()
    path = Path(path)
    if chain is not None:
        check_chain_id(chain, f"--chain (protein {pid!r})")
    chains = chain_residues(read_atoms(path) if atoms is None else atoms, path)
    if not chains:
        raise InputError(f"{path}: no amino-acid residues in this structure (protein {pid!r}). Give a protein "
                         "structure.", path=path, pid=pid, todo="Give a protein structure.")
    if chain is not None and chain not in chains:
        raise InputError(f"{path}: no protein chain {chain!r} (protein {pid!r}; chains: {', '.join(chains)}). "
                         "Give one of these with --chain (or a 'chain' column in the mapping table).",
                         path=path, pid=pid, todo="Give an existing chain.")
    candidates = [chain] if chain is not None else list(chains)
    refs = read_references(path) if references is None else references
    best: ChainMapping | None = None
    for c in candidates:
        for residues, reference in _alignable(refs, chains[c]):
            mapped, identical, aligned = align(sequence, residues)
            m = ChainMapping(pid, path, c, mapped, identical, aligned, len(chains[c]), reference,
                             {r.key: k for k, r in enumerate(chains[c])})
            if best is None or (m.identical, m.identity) > (best.identical, best.identity):
                best = m
    if best is None:  # the readers refuse a structure without a protein chain: a bug if reached
        raise AlloError(f"{path}: no protein chain to align with {pid!r}.")
    if best.identity < options.min_identity or best.coverage < options.min_coverage:
        which = f"chain {best.chain}" if chain is not None else f"best chain {best.chain}"
        raise InputError(
            f"{path}, {which}: does not match protein {pid!r} (identity {best.identity:.2f} over {best.aligned} "
            f"aligned residues, coverage {best.coverage:.2f}; need identity >= {options.min_identity:g} and "
            f"coverage >= {options.min_coverage:g}). Give the right file or chain (--chain), or lower "
            "--min_identity / --min_coverage.", path=path, pid=pid,
            todo="Give the right file or chain, or lower --min_identity / --min_coverage.")
    return best
