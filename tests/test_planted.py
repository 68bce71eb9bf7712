"""A known answer: a tiny ESM-C with one head planted to attend to lysine (K). Labelling the K residues
of random sequences as sites, the analysis must find that head, and only that head.

K is used because no head of the unplanted tiny model (seed 0) prefers it (its confident attention
on K is at most ~1.2x K's frequency), so "only that head" is the correct answer."""

from __future__ import annotations

import math
import random

import pytest
import torch

from allo_lightning.analysis import analyse_heads
from allo_lightning.attention import extract
from allo_lightning.backbone import load_backbone, tokenize
from allo_lightning.backbone.base import ESMC_ALPHABET
from allo_lightning.config import HeadsConfig
from allo_lightning.data import Protein
from tests.conftest import CPU
from tests.planted import plant_residue_head

PLANTED = (0, 2)
RESIDUE = "K"
THETA = 0.3


def k_proteins(n: int = 16, seed: int = 3) -> list[Protein]:
    """Random sequences with 1-3 K residues each (so that one K can take > theta of a query's
    attention); the K positions are the sites."""
    rng = random.Random(seed)
    letters = "ACDEFGHILMNPQRSTVWY"  # no K
    out = []
    for i in range(n):
        seq = [rng.choice(letters) for _ in range(rng.randint(40, 110))]
        for pos in rng.sample(range(len(seq)), rng.randint(1, 3)):
            seq[pos] = RESIDUE
        s = "".join(seq)
        out.append(Protein(id=f"K{i}", sequence=s, sites=tuple(j + 1 for j, c in enumerate(s) if c == RESIDUE)))
    return out


@pytest.fixture(scope="module")
def planted():
    return plant_residue_head(load_backbone("tiny", seed=0), *PLANTED, residue=RESIDUE)


def test_planted_head_attends_to_the_residue_from_every_query(planted):
    original = load_backbone("tiny", seed=0)
    assert planted.identity.startswith("tiny-planted-") and planted.identity != original.identity
    proteins = k_proteins(6, seed=9) + [Protein(id="long", sequence=("ACDEFGHILMNPQRSTVWY" * 20)[:350] + "K")]
    tokens, real = tokenize([p.sequence for p in proteins])
    maps = {}
    planted(tokens, real, lambda layer, probs: maps.__setitem__(layer, probs))
    is_res = tokens == ESMC_ALPHABET.tokens.index(RESIDUE)
    residue_query = ESMC_ALPHABET.residue_mask(real)  # residue tokens (not BOS, EOS, padding)
    for layer in range(planted.n_layers):
        for head in range(planted.n_heads):
            to_res = (maps[layer][:, head] * is_res[:, None, :]).sum(-1)[residue_query]  # per query residue
            if (layer, head) == PLANTED:
                assert to_res.min() > 0.9  # from every query, even 350 residues away
                single = maps[layer][-1, head, 1:-1, -2]  # the long protein's single K (last residue)
                assert single.min() > THETA
            else:
                assert to_res.mean() < THETA


def _analyse(backbone, proteins, tmp_path, **cfg):
    extraction = extract(proteins, backbone, theta=THETA, cache_dir=str(tmp_path), trainer_kwargs=CPU)
    return analyse_heads(extraction, proteins, HeadsConfig(n_permutations=1000, **cfg), seed=0)


@pytest.mark.parametrize("null", ["permutation", "shift"])
def test_planted_head_found_under_each_null(planted, tmp_path, null):
    a = _analyse(planted, k_proteins(), tmp_path, strategy="significance", null=null)
    assert a.ranking[0] == PLANTED and PLANTED in a.testable
    assert a.get("qvalue")[PLANTED] < 0.05 and a.selected == [PLANTED] and a.fallback is None
    assert a.provenance()["null"] == null


def test_composition_null_discounts_a_residue_type_preference(planted, tmp_path):
    """The planted head attends to lysine, and the sites are exactly the lysines: under the composition
    null every random set IS the site set (same residue type), so the head still ranks first by p_alpha
    but is (rightly) not significant: a head that merely likes a residue type is not "allosteric"."""
    a = _analyse(planted, k_proteins(), tmp_path, strategy="significance", null="composition")
    assert a.ranking[0] == PLANTED
    assert a.get("pvalue")[PLANTED] == 1.0 and not a.get("qvalue")[PLANTED] < 0.05
    assert a.fallback and "fell back" in a.fallback  # nothing significant: the top-k fallback, said so


@pytest.mark.parametrize("score", ["p_alpha", "mass"])
def test_analysis_ranks_the_planted_head_first(planted, tmp_path, score):
    a = _analyse(planted, k_proteins(), tmp_path, score=score, strategy="significance")
    assert a.ranking[0] == PLANTED
    assert a.get("qvalue")[PLANTED] < 0.05 and a.get("snr")[PLANTED] > 2
    assert a.fallback is None and PLANTED in a.selected
    # heads without the signal: at q < 0.05 with one true head, no false discovery is expected
    assert [h for h in a.selected if h != PLANTED] == []
    # per protein, p < p_max can only be reached where the null has more than 1 / p_max site sets: under
    # the default shift null the sites are one of L equally likely shifts (p >= 1/L), so proteins of
    # 100 residues or fewer can never be significant on their own; under permutation, one of C(L, k)
    assert a.scores.null == "shift"
    proteins = {p.id: p for p in k_proteins()}
    reachable = [pid for pid in a.protein_ids if proteins[pid].length > 1 / HeadsConfig().p_max]
    assert a.get("n_significant")[PLANTED] >= 0.8 * len(reachable)
    assert a.get("n_significant")[PLANTED] <= len(reachable)
    b = _analyse(planted, k_proteins(), tmp_path, score=score, strategy="significance", null="permutation")
    reachable = [pid for pid in b.protein_ids
                 if math.comb(proteins[pid].length, len(proteins[pid].sites)) > 1 / HeadsConfig().p_max]
    assert len(reachable) >= 8
    assert b.get("n_significant")[PLANTED] >= 0.8 * len(reachable)


def test_without_the_plant_the_head_is_not_found(tiny, tmp_path):
    """The same data on the unplanted model: head (0, 2) carries no K signal and is not selected
    (so the test above can fail)."""
    a = _analyse(tiny, k_proteins(), tmp_path, strategy="significance")
    assert a.ranking[0] != PLANTED
    assert not (a.get("qvalue")[PLANTED] < 0.05)
    assert torch.isfinite(a.get("snr")).all()
