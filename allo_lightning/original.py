"""The seed scripts' approach, reimplemented as the baseline of the benchmark (issue 5).

The seed scripts (the A2A / ADRB2 analysis this project grew from: a third-party reproduction of
Allo-Allo, not the paper's own code) kept, for one protein, the full attention maps of every layer and
head, then looped over the heads in Python. Per head they took the map, kept the confident entries
(alpha > theta), summed the confident attention mass sent to the site residues over the head's confident
count, and drew 1000 random residue sets of the same size (from the non-site residues) one after the
other to get impact, SNR and a p-value; their head selection then used a t-test of a head's impact
against all heads' impacts.

This reimplementation fixes two defects of the seed: its off-by-one site indexing (the seed scored the
residue BEFORE each labelled one, forgetting that token 0 is BOS: here site residue j is token j + 1)
and its BOS/EOS handling (here the queries are residues only). Like the seed, the confident count still
runs over all real keys (BOS/EOS included), which the package's own scores do not do (see
:mod:`allo_lightning.analysis.scores`).

Nothing here is used by the pipeline: it exists so that ``python -m allo_lightning.bench`` can time
the old way next to the new one (and check the statistics against it: the observed score of a head
here equals ``sum_{j in sites} mass_j / total`` from :class:`allo_lightning.attention.ProteinStats`).
"""

from __future__ import annotations

import numpy as np
import torch

from .backbone import Backbone
from .backbone.base import ESMC_ALPHABET, Alphabet
from .errors import AlloError


@torch.no_grad()
def full_attention_maps(backbone: Backbone, tokens: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """All layers' attention maps of one protein kept at once: [n_layers, H, T, T] (T = L + the
    alphabet's special tokens, BOS and EOS included), as the original scripts had them (``output_attentions``-style)."""
    if tokens.shape[0] != 1:
        raise AlloError("the original approach runs one protein at a time")
    maps: list[torch.Tensor] = []
    backbone(tokens, real, lambda layer, p: maps.append(p[0].detach().clone()))
    return torch.stack(maps)


def original_head_scores(
    maps_LyHTT: torch.Tensor, sites: list[int] | np.ndarray, theta: float = 0.3, n_draws: int = 1000,
    seed: int = 0, heads: list[tuple[int, int]] | None = None, alphabet: Alphabet = ESMC_ALPHABET,
) -> dict[str, np.ndarray]:
    """The original per-head loop. ``maps_LyHTT``: one protein's maps with the special tokens ([Ly, H, T, T]);
    ``sites``: 0-based residue indices. Queries are the residues; the confident count runs over all
    real keys (BOS/EOS included), as ``total`` in the statistics. ``heads`` limits the loop to some
    (layer, head) pairs (the others are NaN): the benchmark uses it to time a sample and extrapolate.
    ``alphabet``: the backbone's (``backbone.alphabet``), which says where the residues are among the tokens.

    Returns arrays [Ly, H]: ``observed`` (confident mass to sites / confident count), ``random_mean``,
    ``random_sd``, ``impact``, ``snr`` and ``pvalue`` = (1 + #{random >= observed}) / (n_draws + 1).
    """
    n_layers, n_heads, n_tok, _ = maps_LyHTT.shape
    L = n_tok - alphabet.n_special
    first = alphabet.first  # token position of residue 0
    sites = np.asarray(sorted(sites), dtype=np.int64)
    nonsites = np.setdiff1d(np.arange(L), sites)
    k = len(sites)
    rng = np.random.default_rng(seed)
    out = {name: np.full((n_layers, n_heads), np.nan)
           for name in ("observed", "random_mean", "random_sd", "impact", "snr", "pvalue")}
    todo = heads if heads is not None else [(ly, h) for ly in range(n_layers) for h in range(n_heads)]
    for layer, head in todo:
        attn = maps_LyHTT[layer, head, alphabet.residues(L)].numpy()  # residue queries x all tokens
        confident = attn > theta
        conf_attn = attn * confident
        count = max(int(confident.sum()), 1)  # the original divided by 0 here (NaN); same work either way
        observed = conf_attn[:, sites + first].sum() / count
        random_scores = []
        for _ in range(n_draws):
            draw = rng.choice(nonsites, size=k, replace=False)
            random_scores.append(conf_attn[:, draw + first].sum() / count)
        random_scores = np.array(random_scores)
        mean, sd = random_scores.mean(), random_scores.std()
        out["observed"][layer, head] = observed
        out["random_mean"][layer, head] = mean
        out["random_sd"][layer, head] = sd
        out["impact"][layer, head] = observed / mean if mean > 0 else np.nan
        out["snr"][layer, head] = (observed - mean) / sd if sd > 0 else 0.0
        out["pvalue"][layer, head] = (1 + np.sum(random_scores >= observed)) / (n_draws + 1)
    return out
