"""Scores on a structure: map sequence positions to a chain's residues, write the structure with
B-factors = score, and PyMOL / ChimeraX scripts with chain-qualified selections.

One module per job, each importing only those before it: :mod:`.formats` (PDB/mmCIF via biotite,
residues, checked tokens), :mod:`.references` (DBREF/SEQADV, _struct_ref_seq), :mod:`.alignment`
(sequence -> residues, island rule), :mod:`.resolve` (which structure for which protein; tables read by
:mod:`allo_lightning.data.io`), :mod:`.write` (scored PDB/mmCIF, the predictions.json record),
:mod:`.scripts` (PyMOL/ChimeraX scripts, per-protein files).
"""

from .alignment import ChainMapping, StructureOptions, align, drop_islands, map_chain
from .formats import (
                      CIF_SUFFIXES,
                      PDB_SUFFIXES,
                      STRUCTURE_SUFFIXES,
                      Residue,
                      chain_residues,
                      check_chain_id,
                      check_residue_tokens,
                      mapped_segments,
                      read_atoms,
                      read_text,
                      script_text,
                      structure_format,
)
from .references import References, RefSegment, read_references, reference_groups
from .resolve import StructureRequest, check_structure_spec, resolve_structures, structures_for
from .scripts import ScriptInput, chimerax_script, pymol_script, write_protein_scripts
from .write import (
                      SCORE_CATEGORY,
                      UNMAPPED_B,
                      mapping_columns,
                      percentiles,
                      residue_scores,
                      structure_record,
                      write_scored_structure,
)

__all__ = [
    "CIF_SUFFIXES", "PDB_SUFFIXES", "SCORE_CATEGORY", "STRUCTURE_SUFFIXES", "UNMAPPED_B", "ChainMapping",
    "RefSegment", "References", "Residue", "ScriptInput", "StructureOptions", "StructureRequest", "align",
    "chain_residues", "check_chain_id", "check_residue_tokens", "check_structure_spec", "chimerax_script",
    "drop_islands", "map_chain", "mapped_segments", "mapping_columns", "percentiles", "pymol_script",
    "read_atoms", "read_references", "read_text", "reference_groups", "residue_scores", "resolve_structures",
    "script_text", "structure_format", "structure_record", "structures_for", "write_protein_scripts",
    "write_scored_structure",
]
