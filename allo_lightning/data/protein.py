"""A protein as the package sees it, and the residue alphabet of the ESM tokenizers."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

# Letters the ESM tokenizers (ESM-C and ESM-2) have tokens for: the 20 standard amino acids and
# X (unknown), B (D/N), Z (E/Q), U (selenocysteine), O (pyrrolysine). tests/test_io.py checks that
# every one of them gets its own token (not <unk>) from the esm package's tokenizer.
STANDARD = "ACDEFGHIKLMNPQRSTVWY"
EXTRA = "XBZUO"
ALPHABET = frozenset(STANDARD + EXTRA)


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

    @property
    def length(self) -> int:
        return len(self.sequence)

    def labels(self):
        """0/1 numpy array of length L (requires sites)."""
        import numpy as np

        if self.sites is None:
            raise InputError(f"{self.source or self.id}: protein {self.id!r} has no site labels. Give it in a "
                             "table with a 'sites' or 'labels' column (FASTA files carry no labels).",
                             pid=self.id, todo="Give it in a table with a 'sites' or 'labels' column.")
        y = np.zeros(len(self.sequence), dtype=np.int64)
        if self.sites:
            y[np.asarray(self.sites, dtype=np.int64) - 1] = 1
        return y
