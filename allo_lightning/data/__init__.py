"""Proteins in: the Protein record, parsers with validation, the bundled data, batching for extraction."""

from ..errors import InputError
from .bundled import bundled_path, load_proteins
from .io import ProteinList, read_fasta, read_proteins, read_table, shared_sequence_clusters
from .protein import ALPHABET, Protein

__all__ = [
    "ALPHABET", "InputError", "Protein", "ProteinList", "bundled_path", "load_proteins", "read_fasta",
    "read_proteins", "read_table", "shared_sequence_clusters",
]
