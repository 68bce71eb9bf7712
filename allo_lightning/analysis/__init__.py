"""Allo-Allo head analysis: which attention heads put their confident attention on allosteric sites.

- :mod:`.scores`: per-head scores (p_alpha, mass) with a closed-form random baseline, a vectorised
  permutation test and Benjamini-Hochberg q-values (:func:`score_heads`);
- :mod:`.select`: ranking, selection strategies and provenance (:func:`analyse_heads`);
- :mod:`.export`: heads.csv, heads.json, attention_to_sites.csv.
"""

from .export import write_attention_to_sites, write_heads_csv, write_heads_json
from .scores import (
                     SCORE_KEYS,
                     STATISTICS,
                     bh_qvalues,
                     closed_form_null,
                     random_site_sets,
                     random_subset_sums,
                     score_heads,
                     usable,
)
from .select import STRATEGIES, HeadAnalysis, analyse_heads, head_label, rank_heads, select_heads

__all__ = [
    "HeadAnalysis", "SCORE_KEYS", "STATISTICS", "STRATEGIES", "analyse_heads", "bh_qvalues", "closed_form_null",
    "head_label", "random_site_sets", "random_subset_sums", "rank_heads", "score_heads", "select_heads", "usable",
    "write_attention_to_sites", "write_heads_csv", "write_heads_json",
]
