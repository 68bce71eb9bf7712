"""Allo-Allo head analysis: which attention heads put their confident attention on allosteric sites.

- :mod:`.scores`: per-head scores (Vig et al.'s p_alpha, mass) against a random-site null
  (shift by default: keeps the sites' contiguity; permutation or composition assume independent
  residues), p-values and Benjamini-Hochberg q-values
  (:func:`score_heads` -> :class:`HeadScores`);
- :mod:`.select`: ranking, selection strategies and provenance (:func:`analyse_heads`);
- :mod:`.export`: heads.csv, heads.json, attention_to_sites.csv.
"""

from .export import write_attention_to_sites, write_heads_csv, write_heads_json
from .scores import (
                     NULLS,
                     STATISTICS,
                     HeadScores,
                     ProteinNull,
                     StatisticScores,
                     bh_qvalues,
                     closed_form_null,
                     exact_permutation_pvalue,
                     exact_shift_pvalue,
                     random_site_sets,
                     random_subset_sums,
                     score_heads,
                     usable,
)
from .select import STRATEGIES, HeadAnalysis, Selection, analyse_heads, head_label, rank_heads, select_heads

__all__ = [  # noqa: RUF022 - grouped by kind
    "NULLS", "STATISTICS", "STRATEGIES",
    "HeadAnalysis", "HeadScores", "ProteinNull", "Selection", "StatisticScores",
    "analyse_heads", "bh_qvalues", "closed_form_null", "exact_permutation_pvalue", "exact_shift_pvalue",
    "head_label", "random_site_sets",
    "random_subset_sums", "rank_heads", "score_heads", "select_heads", "usable",
    "write_attention_to_sites", "write_heads_csv", "write_heads_json",
]
