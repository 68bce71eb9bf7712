"""Head scores: closed-form null vs Monte Carlo, fast scores vs a plain loop over full attention maps,
permutation p-values vs exact enumeration, BH vs a direct implementation, FDR calibration under the
global null, selection strategies and the training-subset contract."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
import torch

from allo_lightning.analysis import (
    analyse_heads,
    bh_qvalues,
    closed_form_null,
    random_site_sets,
    score_heads,
    select_heads,
)
from allo_lightning.attention import ProteinStats, extract
from allo_lightning.backbone import tokenize
from allo_lightning.config import HeadsConfig
from allo_lightning.data import Protein
from tests.conftest import CPU, random_proteins

THETA = 0.3


# -- closed form, permutations, BH ------------------------------------------------------------------

@pytest.mark.slow
def test_closed_form_null_matches_monte_carlo():
    rng = np.random.default_rng(0)
    L = 60
    values = torch.as_tensor(rng.exponential(2.0, size=(3, L)) ** 2)  # skewed, like confident counts
    labels = np.zeros(L, dtype=int)
    labels[rng.choice(L, 9, replace=False)] = 1
    mean, sd = closed_form_null(values, labels)  # permutation null: k residues drawn from ALL residues
    draws = np.array([values[:, rng.choice(L, 9, replace=False)].sum(-1).numpy() for _ in range(20000)])
    assert np.allclose(mean.numpy(), draws.mean(0), rtol=0.02)
    assert np.allclose(sd.numpy(), draws.std(0), rtol=0.03)
    # the vectorised sampler draws k distinct residues (sites included) and has the same moments
    idx = random_site_sets(labels, 20000, torch.Generator().manual_seed(1))
    assert idx.shape == (20000, 9)
    assert all(len(set(row)) == 9 for row in idx[:200].tolist())
    assert labels[idx.numpy()].any() and (~labels.astype(bool))[idx.numpy()].any()
    sums = values[:, idx].sum(-1)  # [3, draws]
    assert torch.allclose(sums.mean(-1), mean, rtol=0.02)
    assert torch.allclose(sums.std(-1), sd, rtol=0.03)


def test_permutation_pvalue_matches_exact_enumeration():
    n_sites, L = 3, 15
    values = torch.tensor([[0, 0, 1, 5, 0, 2, 0, 7, 0, 0, 3, 1, 0, 4, 6]], dtype=torch.float32)
    labels = np.zeros(L, dtype=int)
    labels[[5, 10, 13]] = 1  # observed sum 2 + 3 + 4 = 9
    stats = ProteinStats(received=values[None].clone(), count=values[None].clone(), mass=values[None] * 0.5,
                         total=torch.tensor([[40.0]]))
    combos = [sum(c) for c in itertools.combinations(values[0].tolist(), n_sites)]  # all residues
    exact = sum(c >= 9 for c in combos) / len(combos)
    assert 0.02 < exact < 0.5
    mc = score_heads([(stats, labels)], 1, 1, n_permutations=20000, seed=0, min_confident=1, exact=False,
                     null="permutation")
    assert mc["p_alpha_pvalue"].item() == pytest.approx((1 + exact * 20000) / 20001, abs=0.006)
    assert mc["p_alpha_pvalue_draws"].item() == 20000  # resolved: no escalation
    s = score_heads([(stats, labels)], 1, 1, n_permutations=20, seed=0, min_confident=1,
                    null="permutation")  # unresolved: exact
    assert s["p_alpha_pvalue"].item() == pytest.approx(exact, rel=1e-9)  # exact dynamic programme
    assert s.p_alpha.pvalue_draws.item() == 0
    # specials excluded on both axes: the denominator is the confident pairs to residue keys (29), not
    # the cached total (40, BOS/EOS keys included)
    assert s["p_alpha"].item() == pytest.approx(9 / 29)
    assert s["mass"].item() == pytest.approx(4.5 / 29)


def _bh_direct(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    q = [0.0] * m
    for pos, i in enumerate(order):
        q[i] = min(1.0, min(p[order[j]] * m / (j + 1) for j in range(pos, m)))
    return q


def test_bh_qvalues_match_direct_implementation():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 1e-3, size=8), [0.02, 0.02, 0.02]])
    q = bh_qvalues(torch.as_tensor(p).reshape(3, 17))
    assert q.shape == (3, 17)
    assert np.allclose(q.reshape(-1).numpy(), _bh_direct(p.tolist()))
    assert np.allclose(bh_qvalues(torch.tensor([0.01, 0.04, 0.03, 0.5])).numpy(), [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    with_nan = bh_qvalues(torch.tensor([0.01, float("nan"), 0.02]))
    assert math.isnan(with_nan[1]) and np.allclose(with_nan[[0, 2]].numpy(), [0.02, 0.02])


# -- fast scores vs a plain loop over full attention maps ---------------------------------------------

def _full_maps(backbone, sequence: str) -> torch.Tensor:
    """[Ly, H, L+2, L+2] attention over all tokens (BOS, residues, EOS), recomputed by the backbone."""
    tokens, real = tokenize([sequence])
    maps = {}
    backbone(tokens, real, lambda layer, probs: maps.__setitem__(layer, probs[0]))
    return torch.stack([maps[i] for i in range(len(maps))])


def _reference(maps_per_protein, labels_per_protein, theta):
    """Plain loops: per head, per protein, the confident pairs, their targets, the non-site baseline."""
    n_layers, n_heads = maps_per_protein[0].shape[:2]
    out = {k: torch.zeros(n_layers, n_heads, dtype=torch.float64) for k in (
        "p_alpha", "mass", "p_alpha_null_mean", "p_alpha_null_sd", "mass_null_mean", "p_alpha_snr",
        "p_alpha_protein_mean", "p_alpha_protein_sd", "confident")}
    for ly in range(n_layers):
        for h in range(n_heads):
            hit = mass_hit = conf = mean_c = var_c = mean_m = 0.0
            per_protein = []
            for maps, y in zip(maps_per_protein, labels_per_protein):
                a = maps[ly, h].tolist()
                L = len(y)
                received_count = [0.0] * L
                received_mass = [0.0] * L
                p_hit = p_conf = 0.0
                for i in range(1, L + 1):  # residue queries
                    for j in range(1, L + 1):  # residue keys: BOS (0) and EOS (L + 1) excluded
                        if a[i][j] > theta:
                            p_conf += 1
                            if 1 <= j <= L:
                                received_count[j - 1] += 1
                                received_mass[j - 1] += a[i][j]
                                if y[j - 1]:
                                    p_hit += 1
                                    mass_hit += a[i][j]
                k = sum(y)  # null: k residues drawn from all L residues
                mean_c += k * statistics.fmean(received_count)
                var_c += k * statistics.pvariance(received_count) * (L - k) / (L - 1)
                mean_m += k * statistics.fmean(received_mass)
                hit += p_hit
                conf += p_conf
                if p_conf > 0:
                    per_protein.append(p_hit / p_conf)
            out["p_alpha"][ly, h] = hit / conf
            out["mass"][ly, h] = mass_hit / conf
            out["p_alpha_null_mean"][ly, h] = mean_c / conf
            out["p_alpha_null_sd"][ly, h] = math.sqrt(var_c) / conf
            out["mass_null_mean"][ly, h] = mean_m / conf
            out["p_alpha_snr"][ly, h] = (hit - mean_c) / math.sqrt(var_c)
            out["p_alpha_protein_mean"][ly, h] = statistics.fmean(per_protein)
            out["p_alpha_protein_sd"][ly, h] = statistics.stdev(per_protein)
            out["confident"][ly, h] = conf
    return out


def test_fast_scores_equal_plain_loop_over_full_maps(tiny, tmp_path):
    proteins = random_proteins(4, lo=18, hi=40, seed=11, site_rate=0.2)
    extraction = extract(proteins, tiny, theta=THETA, cache_dir=str(tmp_path), trainer_kwargs=CPU)
    items = [(stats, p.labels()) for p, stats in extraction]
    fast = score_heads(items, tiny.n_layers, tiny.n_heads, n_permutations=300, seed=0, min_confident=1,
                       null="permutation")  # the reference computes the permutation null
    ref = _reference([_full_maps(tiny, p.sequence) for p in proteins], [p.labels().tolist() for p in proteins], THETA)
    assert float(ref["confident"].min()) > 0  # the tiny model has confident attention in every head
    for key, expected in ref.items():
        assert torch.allclose(fast[key], expected, rtol=1e-4, atol=1e-5), key
    # negative control: the cached total (BOS/EOS keys included) is a different, wrong denominator
    items_total = torch.stack([s.total for s, _ in items]).sum(0).double()
    assert not torch.allclose(items_total, ref["confident"])
    assert set(fast["n_proteins"].unique().tolist()) == {4.0}
    assert ((fast["p_alpha_qvalue"] >= fast["p_alpha_pvalue"] - 1e-12) & (fast["p_alpha_qvalue"] <= 1)).all()


def test_scores_are_seeded_and_skip_unusable_proteins(tiny, tmp_path):
    proteins = random_proteins(3, lo=20, hi=30, seed=2)
    extraction = extract(proteins, tiny, theta=THETA, cache_dir=str(tmp_path), trainer_kwargs=CPU)
    items = [(stats, p.labels()) for p, stats in extraction]
    a = score_heads(items, 2, 4, n_permutations=200, seed=5)
    b = score_heads(items, 2, 4, n_permutations=200, seed=5)
    assert all(torch.equal(a[k], b[k]) for k in a if not torch.isnan(a[k]).any())
    no_sites = (items[0][0], np.zeros(items[0][0].length, dtype=int))
    c = score_heads(items + [no_sites], 2, 4, n_permutations=200, seed=5)
    assert c["n_proteins"][0, 0] == 3 and torch.equal(c["p_alpha"], a["p_alpha"])


# -- calibration under the global null ------------------------------------------------------------

@pytest.mark.slow
def test_random_labels_rarely_pass_the_significance_rule(tiny, tmp_path):
    """Sites drawn at random carry no signal for any head: BH at q < 0.05 should then report any head
    in at most ~5 % of data sets (it controls the family-wise error under the global null)."""
    proteins = random_proteins(10, lo=40, hi=80, seed=21)
    extraction = extract(proteins, tiny, theta=THETA, cache_dir=str(tmp_path), trainer_kwargs=CPU)
    stats = [s for _, s in extraction]
    rng = np.random.default_rng(0)
    runs_with_discoveries = 0
    for trial in range(30):
        items = []
        for s in stats:
            y = np.zeros(s.length, dtype=int)
            y[rng.choice(s.length, max(2, s.length // 10), replace=False)] = 1
            items.append((s, y))
        sc = score_heads(items, 2, 4, n_permutations=400, seed=trial)
        runs_with_discoveries += bool(((sc["p_alpha_qvalue"] < 0.05) & (sc["p_alpha_snr"] > 2)).any())
    assert runs_with_discoveries <= 4  # expected about 1.5 of 30


# -- selection --------------------------------------------------------------------------------------

def _scores(values, q, p, snr, n_sig, n_prot=10):
    t = lambda v: torch.tensor(v, dtype=torch.float64).reshape(2, 2)  # noqa: E731
    return {"p_alpha": t(values), "p_alpha_qvalue": t(q), "p_alpha_pvalue": t(p), "p_alpha_snr": t(snr),
            "p_alpha_n_significant": t(n_sig), "n_proteins": torch.full((2, 2), float(n_prot), dtype=torch.float64)}


def test_selection_strategies_and_fallback():
    s = _scores(values=[0.5, 0.9, 0.1, 0.3], q=[0.01, 0.2, 0.04, 0.001], p=[0.001, 0.005, 0.02, 0.0001],
                snr=[3.0, 5.0, 2.5, 1.0], n_sig=[6, 2, 5, 9])
    sel = lambda **kw: select_heads(s, HeadsConfig(**kw))  # noqa: E731
    assert sel(strategy="top_k", top_k=2) == ([(0, 1), (0, 0)], None)
    assert sel(strategy="significance") == ([(0, 0), (1, 0)], None)  # q < .05 and SNR > 2, in rank order
    assert sel(strategy="original") == ([(0, 1), (0, 0)], None)  # p < .01 and SNR > 2
    assert sel(strategy="consistency", min_fraction=0.5) == ([(0, 0), (1, 1), (1, 0)], None)
    heads, msg = sel(strategy="significance", q_max=1e-6, top_k=1)
    assert heads == [(0, 1)] and "fell back" in msg and "significance" in msg
    with pytest.raises(Exception, match="heads.strategy"):
        sel(strategy="best")


def test_analysis_uses_only_the_given_proteins(tiny, tmp_path):
    proteins = random_proteins(6, lo=25, hi=50, seed=8)
    extraction = extract(proteins, tiny, theta=THETA, cache_dir=str(tmp_path), trainer_kwargs=CPU)
    train = proteins[:4]
    cfg = HeadsConfig(strategy="top_k", top_k=2, n_permutations=200, min_confident=1)
    a = analyse_heads(extraction, train, cfg, seed=0)
    assert a.protein_ids == [p.id for p in train] and a.theta == THETA
    assert a.backbone_identity == tiny.identity and len(a.ranking) == 8 and a.selected == a.ranking[:2]
    # relabelling a protein outside the subset changes nothing
    relabelled = [Protein(id=p.id, sequence=p.sequence, sites=(1, 2, 3)) for p in proteins[4:]]
    pairs = [(p, extraction.stats(p)) for p in train + relabelled]
    b = analyse_heads(pairs, train, cfg, seed=0)
    assert torch.equal(a.scores["p_alpha"], b.scores["p_alpha"]) and a.ranking == b.ranking
    rows = a.rows()
    assert [r["rank"] for r in rows] == list(range(1, 9))
    assert sum(r["selected"] for r in rows) == 2 and {"layer", "head", "p_alpha_qvalue"} <= set(rows[0])
    prov = a.provenance()
    assert prov["proteins"] == a.protein_ids and prov["strategy"] == "top_k" and prov["fallback"] is None


def test_fallback_heads_are_marked_in_heads_csv_and_json(tiny, tmp_path):
    proteins = random_proteins(4, lo=25, hi=40, seed=9)
    extraction = extract(proteins, tiny, theta=THETA, cache_dir=str(tmp_path), trainer_kwargs=CPU)
    cfg = HeadsConfig(strategy="significance", q_max=1e-9, top_k=3, n_permutations=50, min_confident=1)
    a = analyse_heads(extraction, proteins, cfg, seed=0)
    assert a.fallback and len(a.selected) == 3  # nothing passes q < 1e-9: the top 3 are used
    rows = a.rows()
    assert [r["fallback"] for r in rows] == [r["selected"] for r in rows] == [True] * 3 + [False] * 5
    assert a.provenance()["selected_by"].startswith("fallback")
    ok = analyse_heads(extraction, proteins, HeadsConfig(strategy="top_k", top_k=2, min_confident=1,
                                                         n_permutations=50), seed=0)
    assert not any(r["fallback"] for r in ok.rows()) and ok.provenance()["selected_by"] == "strategy top_k"
    orig = analyse_heads(extraction, proteins, HeadsConfig(strategy="original", min_confident=1, n_permutations=50),
                         seed=0)
    assert "uncorrected" in orig.provenance()["multiplicity"] and "uncorrected" in orig.summary()
