"""Scores on a structure: map sequence positions to a chain's residues, write the structure with
B-factors = score, and PyMOL / ChimeraX scripts with chain-qualified selections.

One module per job, each importing only those before it: formats (PDB/mmCIF via biotite, residues,
checked tokens), references (DBREF/SEQADV, _struct_ref_seq), alignment (sequence -> residues, island
rule), resolve (which structure for which protein; tables read by data.io), write (scored PDB/mmCIF,
the predictions.json record), scripts (PyMOL/ChimeraX scripts, per-protein files).
"""

from .alignment import ChainMapping, StructureOptions, align, drop_islands, map_chain
from .formats import Residue, chain_residues, check_chain_id, mapped_segments, read_atoms, read_text, script_text
from .references import read_references
from .resolve import KEEP_STRUCTURES, check_structure_spec, resolve_structures, structures_for
from .scripts import ScriptInput, chimerax_script, pymol_script, write_protein_scripts
from .write import UNMAPPED_B, mapping_columns, percentiles, structure_record, write_scored_structure

__all__ = [
    "KEEP_STRUCTURES", "UNMAPPED_B", "ChainMapping", "Residue", "ScriptInput", "StructureOptions", "align",
    "chain_residues",
    "check_chain_id", "check_structure_spec", "chimerax_script", "drop_islands", "map_chain", "mapped_segments",
    "mapping_columns", "percentiles", "pymol_script", "read_atoms", "read_references", "read_text",
    "resolve_structures", "script_text", "structure_record", "structures_for", "write_protein_scripts",
    "write_scored_structure",
]
