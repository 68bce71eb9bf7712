"""A protein as the package sees it, and the residue alphabet of the ESM tokenizers."""

from __future__ import annotations

import operator
from dataclasses import dataclass

from ..errors import InputError

# Letters the ESM tokenizers (ESM-C and ESM-2) have tokens for: the 20 standard amino acids and
# X (unknown), B (D/N), Z (E/Q), U (selenocysteine), O (pyrrolysine). tests/test_io.py checks that
# every one of them gets its own token (not <unk>) from the esm package's tokenizer.
STANDARD = "ACDEFGHIKLMNPQRSTVWY"
EXTRA = "XBZUO"
ALPHABET = frozenset(STANDARD + EXTRA)
# The longest known protein (titin) has about 35,000 residues; a longer "sequence" is a mistake (a genome,
# a concatenation) and would exhaust memory in the tokenizer. It is refused when read, before any model
# is loaded; a protein up to this length and longer than the backbone's context is run as windows.
MAX_RESIDUES = 100_000
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def too_long_message(length: int) -> str:
    return (f"sequence has {length:,} residues, more than the {MAX_RESIDUES:,} any protein may have here (titin, "
            "the longest known protein, has about 35,000).")


def _is_whole(p) -> bool:
    """An integer (numpy's included), not a bool, a float or a string."""
    if isinstance(p, bool):
        return False
    try:
        operator.index(p)
    except TypeError:
        return False
    return True


def _is_position(p, length: int) -> bool:
    return _is_whole(p) and 1 <= operator.index(p) <= length


@dataclass(frozen=True)
class Protein:
    id: str
    sequence: str
    sites: tuple[int, ...] | None = None  # 1-based positions; None = unlabelled
    cluster: str | None = None
    family: str | None = None
    gene: str | None = None
    source: str = ""  # "file:line", for messages
    orthosteric_sites: tuple[int, ...] | None = None  # 1-based orthosteric (ligand-pocket) residues, if known
    modulator_class: str | None = None  # ASD: ligand / ion / additive

    def __post_init__(self) -> None:
        """Checks for proteins made in Python (the file readers have already checked their own): the
        sequence is upper-cased as the readers do (the tokenizers know upper-case letters only), and
        letters, length and sites (1-based, within the sequence) are checked."""
        where = self.where
        if not isinstance(self.sequence, str) or not self.sequence:
            raise InputError(f"{where}: empty or missing sequence.", pid=self.id, todo="Give the amino-acid sequence.")
        seq = self.sequence.translate(_ASCII_UPPER)
        if seq != self.sequence:
            object.__setattr__(self, "sequence", seq)
        if len(seq) > MAX_RESIDUES:
            raise InputError(f"{where}: {too_long_message(len(seq))} Split it into domains.", pid=self.id,
                             todo="Split it into domains.")
        bad = sorted(set(seq) - ALPHABET)
        if bad:
            raise InputError(f"{where}: unknown residue letter(s) "
                             f"{', '.join(map(repr, bad[:5]))}. Allowed: {STANDARD} and {EXTRA}.", pid=self.id,
                             todo="Replace them (e.g. by X).")
        for name in ("sites", "orthosteric_sites"):
            positions = getattr(self, name)
            if positions is None:
                continue
            wrong = [p for p in positions if not _is_position(p, len(seq))]
            if wrong:
                whole = all(map(_is_whole, wrong))
                problem = f"are outside 1..{len(seq)}" if whole else "are not whole numbers"
                raise InputError(f"{where}: {name} {wrong[:5]} {problem} (positions are 1-based).", pid=self.id,
                                 todo="Give 1-based residue positions.")

    @property
    def where(self) -> str:
        """Where the protein is, for messages, as the file readers say it: ``FILE, line N, id 'X'``."""
        path, _, line = self.source.rpartition(":")
        if path and line.isdigit():
            return f"{path}, line {line}, id {self.id!r}"
        return f"{self.source}, id {self.id!r}" if self.source else f"protein {self.id!r}"

    @property
    def length(self) -> int:
        return len(self.sequence)

    def labels(self):
        """0/1 numpy array of length L (requires sites)."""
        import numpy as np

        if self.sites is None:
            raise InputError(f"{self.where}: no site labels. Give the protein in a "
                             "table with a 'sites' or 'labels' column (FASTA files carry no labels).",
                             pid=self.id, todo="Give it in a table with a 'sites' or 'labels' column.")
        y = np.zeros(len(self.sequence), dtype=np.int64)
        if self.sites:
            y[np.asarray(self.sites, dtype=np.int64) - 1] = 1
        return y
