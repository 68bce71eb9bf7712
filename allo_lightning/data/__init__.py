"""Proteins in: the Protein record, parsers with validation, the bundled data, batching for extraction."""

from ..errors import InputError
from .bundled import bundled_path, load_proteins
from .io import read_fasta, read_proteins, read_table
from .protein import ALPHABET, Protein

__all__ = [
    "ALPHABET", "InputError", "Protein", "bundled_path", "load_proteins", "read_fasta", "read_proteins",
    "read_table",
]
