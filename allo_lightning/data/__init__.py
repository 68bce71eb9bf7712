"""Proteins in: parsers with validation, the bundled ASD / seed data, and batching for extraction."""

from .bundled import bundled_path, load_proteins
from .io import ALPHABET, InputError, Protein, read_fasta, read_proteins, read_table

__all__ = [
    "ALPHABET", "InputError", "Protein", "bundled_path", "load_proteins", "read_fasta", "read_proteins",
    "read_table",
]
