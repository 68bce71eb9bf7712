"""Head statistics you can trust (issue 10): exact oracles for the p-values, calibration under random
labels with hub (heavy-tailed) attention, testable heads, the three nulls, the orthosteric contrast and
the selection cap. Everything on synthetic statistics (no backbone): fast and exact."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch

from allo_lightning.analysis import (
    ProteinNull,
    analyse_heads,
    bh_qvalues,
    exact_permutation_pvalue,
    score_heads,
    select_heads,
)
from allo_lightning.attention import ProteinStats
from allo_lightning.config import HeadsConfig
from allo_lightning.data import Protein
from allo_lightning.errors import AlloError, InputError


def stats_of(count: torch.Tensor, mass: torch.Tensor | None = None) -> ProteinStats:
    """ProteinStats from count [Ly, H, L] (mass = count / 2 unless given); total includes 7 BOS/EOS pairs."""
    mass = count * 0.5 if mass is None else mass
    return ProteinStats(received=count.clone(), count=count, mass=mass, total=count.sum(-1) + 7)


def hub_example() -> tuple[ProteinStats, np.ndarray]:
    """The issue's hub example: 300 non-sites of which 10 hubs receive 10 confident queries each;
    sites = 3 hubs + 1 other residue (L = 304; 13 hubs in all)."""
    L = 304
    count = torch.zeros(L)
    count[:13] = 10.0  # residues 0..12 are hubs
    y = np.zeros(L, dtype=int)
    y[[0, 1, 2, 100]] = 1
    return stats_of(count.view(1, 1, L)), y


# exact p of the hub example: P(a random 4-set of the 304 residues holds >= 3 of the 13 hubs)
HUB_EXACT = (math.comb(13, 3) * 291 + math.comb(13, 4)) / math.comb(304, 4)
# the 1.06e-4: the same question with the 4 residues drawn from the 300 non-sites (old null)
HUB_EXACT_NONSITES = (math.comb(10, 3) * 290 + math.comb(10, 4)) / math.comb(300, 4)


# -- exact oracles ------------------------------------------------------------------------------------

def test_exact_dp_matches_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(6):
        vals = [rng.integers(0, 6, size=int(rng.integers(5, 9))) for _ in range(2)]
        ks = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        sums = [[sum(c) for c in itertools.combinations(v.tolist(), k)] for v, k in zip(vals, ks)]
        pooled = [a + b for a in sums[0] for b in sums[1]]
        for obs in (0, 2, 5, 9, 30):
            assert exact_permutation_pvalue(vals, ks, obs) == pytest.approx(np.mean(np.array(pooled) >= obs), abs=1e-12)
    assert HUB_EXACT == pytest.approx(2.406e-4, rel=1e-3) and HUB_EXACT_NONSITES == pytest.approx(1.058e-4, rel=1e-3)
    assert exact_permutation_pvalue([np.array([10] * 13 + [0] * 291)], [4], 30) == pytest.approx(HUB_EXACT, rel=1e-9)


def test_hub_example_pvalue_is_exact_and_never_anti_conservative():
    stats, y = hub_example()
    s = score_heads([(stats, y)], 1, 1, null="permutation")
    assert s.testable.item() and s.confident.item() == 130
    assert s.p_alpha.value.item() == pytest.approx(30 / 130)
    assert s.p_alpha.pvalue.item() == pytest.approx(HUB_EXACT, rel=1e-9) and s.p_alpha.pvalue_draws.item() == 0
    # the Monte-Carlo path (mass: not integer-exact; p_alpha with exact=False) at 20000 draws
    B = 20000
    mc = score_heads([(stats, y)], 1, 1, n_permutations=B, exact=False, seed=3, null="permutation")
    err = 4 * math.sqrt(HUB_EXACT / B) + 1 / B
    for p in (mc.p_alpha.pvalue.item(), mc.mass.pvalue.item()):
        assert abs(p - HUB_EXACT) < err and p >= 0.5 * HUB_EXACT
    # descriptive columns stay, and no p-value comes from the (far too small) normal tail
    assert s.p_alpha.snr.item() > 5 and torch.special.ndtr(-s.p_alpha.snr).item() < 1e-6


def test_escalation_only_for_heads_at_the_floor_and_never_zero():
    """Among 300 heads the hub head at B = 200 is at the floor; it gets draws until its floor is below
    q_max / m (or b > 0); null heads keep B = 200. Never p = 0, never below half the exact p."""
    stats, y = hub_example()
    g = torch.Generator().manual_seed(0)
    count = torch.poisson(torch.full((300, 304), 0.5), generator=g)
    count[0] = stats.count.reshape(-1)
    many = stats_of(count.view(30, 10, 304))
    for seed in range(3):
        s = score_heads([(many, y)], 30, 10, n_permutations=200, seed=seed, exact=False, null="permutation")
        p, draws = s.p_alpha.pvalue, s.p_alpha.pvalue_draws
        assert (p > 0).all() and p[0, 0] >= 0.5 * HUB_EXACT
        needed = 300 / 0.05 - 1
        assert draws[0, 0] >= needed or not s.p_alpha.pvalue_at_floor[0, 0]
        assert (draws[s.p_alpha.pvalue > 0.01] == 200).all()  # resolved heads: no extra draws
    # with the exact path the hub head gets its exact p
    s = score_heads([(many, y)], 30, 10, n_permutations=200, null="permutation")
    assert s.p_alpha.pvalue[0, 0].item() == pytest.approx(HUB_EXACT, rel=1e-9)
    # exact, so neither Monte-Carlo draws nor "at the floor" (no draw of the 200 reached it)
    assert s.p_alpha.pvalue_draws[0, 0] == 0 and not s.p_alpha.pvalue_at_floor[0, 0]


def test_escalation_pools_every_draw_it_makes(monkeypatch):
    """The Monte-Carlo route with escalation, against a plain count over every draw it made (recorded by a
    spy on the draw function): b is the number of ALL draws (the first B and every escalation chunk) that
    reach the observed sum and ``draws`` is how many were made, no more, no fewer; escalation stops only
    at b > 0, at the floor target or at max_B. Small chunks, so a round spans many of them."""
    from allo_lightning.analysis import scores as sc

    stats, y = hub_example()
    values = [torch.cat([stats.count.reshape(1, -1), stats.mass.reshape(1, -1)]).float()]  # rows: count, mass
    nulls = [ProteinNull("permutation", y)]
    obs = values[0][:, torch.as_tensor(y).bool()].double().sum(-1)
    monkeypatch.setattr(sc, "CHUNK", 997)
    recorded = []  # (original rows of the columns, draw sums)
    draw = sc.draw_null_sums

    def spy(vals, nls, n, gen, shift_sums=None):
        out = draw(vals, nls, n, gen, shift_sums)
        rows = [next(r for r in range(2) if torch.equal(values[0][r], c)) for c in vals[0]]
        recorded.append((rows, out[0].clone()))
        return out

    for seed, target, max_B in ((0, 2e-5, 1_000_000), (1, 2e-5, 1_000_000), (2, 1e-6, 30_000)):
        recorded.clear()
        gen = torch.Generator().manual_seed(seed)
        B = 20
        first = draw(values, nulls, B, gen)[0]
        b0 = sc.exceedances(first, obs)
        assert (b0 == 0).all()  # both rows at the floor: both escalate
        monkeypatch.setattr(sc, "draw_null_sums", spy)
        floor_target = torch.full((2,), target, dtype=torch.float64)
        b, draws = sc.monte_carlo_escalation(values, nulls, obs, b0, B, torch.ones(2, dtype=torch.bool),
                                             floor_target, max_B, gen)
        monkeypatch.setattr(sc, "draw_null_sums", draw)
        for r in range(2):
            made = [d[:, rows.index(r)] for rows, d in recorded if r in rows]
            n_made = B + sum(len(d) for d in made)
            reached = sum(int((d >= obs[r] - 1e-5 * (obs[r] + 1)).sum()) for d in made)
            assert len(made) > 1 and draws[r].item() == n_made and b[r].item() == reached, (seed, r)
            assert b[r] > 0 or 1 / (draws[r] + 1) <= target or draws[r] == max_B
        if max_B == 30_000:
            assert (draws == max_B).all()  # capped (p ~ 2.4e-4 gives b > 0 long before 1e6 draws)
        else:  # escalated p of the hub head against its exact p (about 50000 draws: b ~ 12)
            p = (b + 1) / (draws + 1)
            assert ((p - HUB_EXACT).abs() < 4 * (HUB_EXACT / draws).sqrt() + 2 / draws).all(), (seed, p)


def test_escalated_pvalue_matches_exact_end_to_end(monkeypatch):
    """score_heads' Monte-Carlo route (exact=False) on the hub head with a tiny q_max: it escalates (in
    many chunks) to about 1/q_max draws, and the escalated p agrees with the exact p."""
    from allo_lightning.analysis import scores as sc

    monkeypatch.setattr(sc, "CHUNK", 5000)
    stats, y = hub_example()
    for seed in range(3):
        s = score_heads([(stats, y)], 1, 1, n_permutations=100, seed=seed, exact=False, null="permutation",
                        q_max=1e-5)
        for st in (s.p_alpha, s.mass):
            n, p = st.pvalue_draws.item(), st.pvalue.item()
            assert n >= 1e5 - 1 and not st.pvalue_at_floor.item(), (seed, n)
            assert abs(p - HUB_EXACT) < 4 * math.sqrt(HUB_EXACT / n) + 1 / n, (seed, p)


def test_random_small_cases_match_enumeration():
    rng = np.random.default_rng(5)
    for case in range(4):
        L, k = int(rng.integers(9, 13)), int(rng.integers(2, 4))
        v = torch.as_tensor(rng.exponential(1.0, L) ** 2 * 10).float().round()
        y = np.zeros(L, dtype=int)
        y[rng.choice(L, k, replace=False)] = 1
        obs = float(v[y.astype(bool)].sum())
        exact = np.mean([sum(c) >= obs - 1e-6 for c in itertools.combinations(v.tolist(), k)])
        st = stats_of(v.view(1, 1, L))
        B = 4000
        mc = score_heads([(st, y)], 1, 1, n_permutations=B, seed=case, exact=False, min_confident=1,
                         null="permutation")
        ex = score_heads([(st, y)], 1, 1, n_permutations=10, seed=case, min_confident=1, null="permutation")
        p = mc.p_alpha.pvalue.item()
        assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / B) + 1 / B and p >= 0.5 * exact
        assert ex.p_alpha.pvalue.item() == pytest.approx(exact, abs=1e-9) or ex.p_alpha.pvalue_draws.item() > 0


# -- calibration with hubs ----------------------------------------------------------------------------

def _hub_model(n_heads: int, lengths: list[int], rng: np.random.Generator) -> list[ProteinStats]:
    """Heavy-tailed column statistics: per head and protein a few hub residues receive many confident
    queries, the rest few or none."""
    out = []
    for L in lengths:
        base = rng.poisson(0.3, size=(n_heads, L)).astype(float)
        for h in range(n_heads):
            hubs = rng.choice(L, 4, replace=False)
            base[h, hubs] += rng.integers(15, 40, size=4)
        count = torch.as_tensor(base, dtype=torch.float32).view(n_heads // 10, 10, L)
        out.append(stats_of(count, count * torch.rand(count.shape, generator=torch.Generator().manual_seed(L))))
    return out


@pytest.mark.slow
def test_calibration_under_random_labels_with_hub_attention():
    """Random labels carry no signal: the fraction of data sets in which `significance` selects any head
    stays <= 0.05 + MC error. The same statistics with a normal-tail p (the old behaviour) fail."""
    rng = np.random.default_rng(1)
    n_heads, lengths, runs = 120, [90, 110, 130], 50
    model = _hub_model(n_heads, lengths, rng)
    cfg = HeadsConfig(strategy="significance", n_permutations=200, min_confident=20)
    any_new = any_normal = 0
    for run in range(runs):
        items = []
        for st in model:
            y = np.zeros(st.length, dtype=int)
            y[rng.choice(st.length, 4, replace=False)] = 1
            items.append((st, y))
        a = analyse_heads(items, None, cfg, seed=run)
        any_new += a.fallback is None
        s = a.scores
        p_normal = torch.where(s.testable, torch.special.ndtr(-s.p_alpha.snr), torch.full_like(s.p_alpha.snr, math.nan))
        any_normal += bool(((bh_qvalues(p_normal) < 0.05) & (s.p_alpha.snr > 2)).any())
    assert any_new / runs <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs)
    assert any_normal / runs > 0.3  # negative control: a normal tail is anti-conservative here


# -- testable heads, p_alpha denominator --------------------------------------------------------------

def test_one_pair_head_is_not_testable():
    L = 300
    rng = np.random.default_rng(0)
    y = np.zeros(L, dtype=int)
    y[:10] = 1
    count = torch.zeros(1, 2, L)
    count[0, 0, 0] = 1  # head 0: ONE confident pair, on a site: p_alpha = 1
    c1 = torch.as_tensor(rng.poisson(2.0, L), dtype=torch.float32)
    c1[:10] += 8  # head 1: truly enriched, hundreds of pairs
    count[0, 1] = c1
    s = score_heads([(stats_of(count), y)], 1, 2)
    assert s.p_alpha.value[0, 0] == 1.0 and not s.testable[0, 0] and math.isnan(s.p_alpha.pvalue[0, 0])
    assert math.isnan(s.p_alpha.qvalue[0, 0]) and s.confident[0, 0] == 1
    assert s.testable[0, 1] and s.p_alpha.qvalue[0, 1] < 0.05 and s.confident[0, 1] > 600
    for strategy in ("top_k", "significance", "original", "consistency"):
        a = analyse_heads([(stats_of(count), y)], None, HeadsConfig(strategy=strategy, top_k=2), seed=0)
        assert a.ranking == [(0, 1), (0, 0)] and (0, 0) not in a.selected and a.testable == [(0, 1)], strategy
    # negative control: with min_confident = 1 the one-pair head ranks first
    a = analyse_heads([(stats_of(count), y)], None, HeadsConfig(strategy="top_k", min_confident=1), seed=0)
    assert a.ranking[0] == (0, 0)


# -- nulls --------------------------------------------------------------------------------------------

def test_shift_null_equals_exact_enumeration():
    rng = np.random.default_rng(2)
    L = 40
    v = torch.as_tensor(rng.poisson(1.0, (1, 1, L)), dtype=torch.float32)
    y = np.zeros(L, dtype=int)
    y[10:14] = 1  # a contiguous stretch
    v[0, 0, 10:14] += 3
    obs = float(v[0, 0, 10:14].sum())
    shifts = [float(sum(v[0, 0, (j + s) % L] for j in range(10, 14))) for s in range(L)]
    s = score_heads([(stats_of(v), y)], 1, 1, null="shift", min_confident=1)
    assert s.p_alpha.pvalue.item() == pytest.approx(sum(t >= obs for t in shifts) / L, abs=1e-12)
    assert s.p_alpha.pvalue_draws.item() == 0
    assert s.p_alpha.null_mean.item() * s.confident.item() == pytest.approx(np.mean(shifts))
    assert s.p_alpha.null_sd.item() * s.confident.item() == pytest.approx(np.std(shifts))
    # pooled over proteins: Monte-Carlo over joint shifts vs enumeration of all shift combinations
    lengths = [7, 8, 9]
    vs, ys, tables = [], [], []
    for Lp in lengths:
        vp = torch.as_tensor(rng.poisson(2.0, Lp), dtype=torch.float32)
        yp = np.zeros(Lp, dtype=int)
        yp[[1, 2]] = 1
        vs.append(vp)
        ys.append(yp)
        tables.append([float(vp[(1 + t) % Lp] + vp[(2 + t) % Lp]) for t in range(Lp)])
    obs = sum(t[0] for t in tables)
    exact = np.mean([sum(c) >= obs for c in itertools.product(*tables)])
    B = 20000
    s = score_heads([(stats_of(vp.view(1, 1, -1)), yp) for vp, yp in zip(vs, ys)], 1, 1, n_permutations=B,
                    null="shift", min_confident=1)
    assert abs(s.p_alpha.pvalue.item() - exact) < 4 * math.sqrt(exact * (1 - exact) / B) + 1 / B


def test_composition_null_preserves_composition():
    seq = "MKKLLAWWAKLAGGGAKLMWA" * 3
    L = len(seq)
    y = np.zeros(L, dtype=int)
    y[[1, 3, 6, 9, 20, 44]] = 1
    want = Counter(seq[i] for i in np.flatnonzero(y))
    null = ProteinNull("composition", y, seq)
    draws = null.draw(3000, torch.Generator().manual_seed(0))
    assert draws.shape == (3000, 6)
    for row in draws.tolist():
        assert len(set(row)) == 6 and Counter(seq[i] for i in row) == want
    # every residue of a site type can be drawn; no other type ever is
    drawn = set(draws.reshape(-1).tolist())
    assert drawn == {i for i, a in enumerate(seq) if a in want}
    # closed-form moments agree with the draws
    values = torch.as_tensor(np.random.default_rng(0).exponential(3.0, (2, L)))
    mean, var = null.moments(values)
    sums = values[:, draws].sum(-1)
    assert torch.allclose(sums.mean(-1), mean, rtol=0.02) and torch.allclose(sums.var(-1), var, rtol=0.08)
    # negative control: the permutation null does not keep the composition
    perm = ProteinNull("permutation", y).draw(200, torch.Generator().manual_seed(0))
    assert any(Counter(seq[i] for i in row) != want for row in perm.tolist())


# -- orthosteric contrast, cap, config ----------------------------------------------------------------

def _ortho_data(n: int = 4):
    """Head 0 enriched on the sites; head 1 enriched on the orthosteric residues (and a bit on the
    sites); head 2 flat."""
    rng = np.random.default_rng(4)
    proteins, items = [], []
    for i in range(n):
        L = 120
        seq = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), L))
        sites, ortho = (5, 6, 7, 30, 31), (60, 61, 62, 90, 91)
        count = torch.as_tensor(rng.poisson(1.0, (1, 3, L)), dtype=torch.float32)
        count[0, 0, [s - 1 for s in sites]] += 8
        count[0, 1, [s - 1 for s in sites]] += 3
        count[0, 1, [s - 1 for s in ortho]] += 12
        p = Protein(id=f"O{i}", sequence=seq, sites=sites, orthosteric_sites=ortho)
        proteins.append(p)
        items.append((p, stats_of(count)))
    return proteins, items


def test_orthosteric_contrast_and_exclusion():
    proteins, items = _ortho_data(8)
    a = analyse_heads(items, proteins, HeadsConfig(strategy="significance", n_permutations=500), seed=0)
    s = a.scores
    assert s.n_orthosteric_proteins == 8
    spec = s.p_alpha.specificity
    assert spec[0, 0] > 1 and spec[0, 1] < 0
    assert s.p_alpha.orthosteric_pvalue[0, 1] < 0.01 and s.p_alpha.orthosteric[0, 1] > s.p_alpha.orthosteric[0, 0]
    assert {(0, 0), (0, 1)} <= set(a.selected)
    rows = a.rows()
    assert {"p_alpha_orthosteric", "p_alpha_orthosteric_pvalue", "p_alpha_specificity", "testable"} <= set(rows[0])
    b = analyse_heads(items, proteins, HeadsConfig(strategy="significance", n_permutations=500,
                                                   exclude_orthosteric=True), seed=0)
    assert (0, 0) in b.selected and (0, 1) not in b.selected
    assert s.p_alpha.specificity_qvalue[0, 1] < 0.05 and s.p_alpha.specificity_pvalue[0, 0] > 0.5
    # with 4 proteins the sign-flip floor is 1/16 > q_max: the contrast is not resolved, nothing dropped
    proteins4, items4 = _ortho_data(4)
    d = analyse_heads(items4, proteins4, HeadsConfig(strategy="significance", n_permutations=500,
                                                     exclude_orthosteric=True), seed=0)
    assert d.scores.p_alpha.specificity[0, 1] < 0 and d.scores.p_alpha.specificity_pvalue[0, 1] >= 1 / 16
    assert (0, 1) in d.selected
    # without orthosteric data: no contrast columns, nothing dropped
    plain = [(Protein(id=p.id, sequence=p.sequence, sites=p.sites), st) for p, st in items]
    c = analyse_heads(plain, None, HeadsConfig(exclude_orthosteric=True, n_permutations=500), seed=0)
    assert c.scores.p_alpha.specificity is None and "p_alpha_specificity" not in c.rows()[0]
    assert (0, 1) in c.selected


def test_max_selected_keeps_the_best_by_q_then_score():
    def t(v):
        return torch.tensor(v, dtype=torch.float64).reshape(2, 2)

    s = {"p_alpha": t([0.5, 0.9, 0.1, 0.3]), "p_alpha_qvalue": t([0.01, 0.02, 0.001, 0.01]),
         "p_alpha_pvalue": t([0.001] * 4), "p_alpha_snr": t([3.0] * 4)}
    heads, msg = select_heads(s, HeadsConfig(strategy="significance", max_selected=2))
    assert msg is None and heads == [(0, 0), (1, 0)]  # q 0.001, then q 0.01 with the higher score; rank order
    heads, _ = select_heads(s, HeadsConfig(strategy="significance"))
    assert len(heads) == 4
    heads, _ = select_heads(s, HeadsConfig(strategy="top_k", top_k=10, max_selected=3))
    assert heads == [(0, 1), (0, 0), (1, 1)]


def test_a_hand_built_selection_with_no_heads_to_keep_is_refused():
    """A Selection made in Python (not through HeadsConfig) with top_k 0 was silently run as top_k 1."""
    import dataclasses

    from allo_lightning.analysis.select import Selection

    def t(v):
        return torch.tensor(v, dtype=torch.float64).reshape(2, 2)

    s = {"p_alpha": t([0.5, 0.9, 0.1, 0.3]), "p_alpha_qvalue": t([0.01, 0.02, 0.001, 0.01]),
         "p_alpha_pvalue": t([0.001] * 4), "p_alpha_snr": t([3.0] * 4)}
    base = Selection.of(HeadsConfig(strategy="top_k"))
    assert select_heads(s, dataclasses.replace(base, top_k=1))[0] == [(0, 1)]
    for bad in ({"top_k": 0}, {"top_k": -2}, {"max_selected": 0}):
        with pytest.raises(AlloError, match="must both be >= 1"):
            select_heads(s, dataclasses.replace(base, **bad))


def test_head_config_checks_new_fields():
    with pytest.raises(InputError, match="--heads.min_confident"):
        HeadsConfig(min_confident=0)
    with pytest.raises(InputError, match="--heads.max_selected"):
        HeadsConfig(max_selected=0)
    with pytest.raises(InputError, match="--heads.null"):
        HeadsConfig(null="uniform")
    assert HeadsConfig().null == "shift" and HeadsConfig().min_confident == 100


def test_head_scores_typed_fields_and_columns():
    stats, y = hub_example()
    s = score_heads([(stats, y)], 1, 1, null="permutation")
    assert s["p_alpha_qvalue"] is s.p_alpha.qvalue or torch.equal(s["p_alpha_qvalue"], s.p_alpha.qvalue)
    cols = list(s.columns())
    assert cols[:3] == ["confident", "testable", "n_proteins"] and "p_alpha_pvalue_at_floor" in cols
    assert "p_alpha_pvalue_perm" not in cols and s.null == "permutation" and s.n_proteins == 1


def test_heads_csv_and_json_say_what_was_tested(tmp_path):
    import csv
    import json

    from allo_lightning.analysis import write_heads_csv, write_heads_json

    proteins, items = _ortho_data(2)
    a = analyse_heads(items, proteins, HeadsConfig(null="shift", n_permutations=300, min_confident=280), seed=0)
    write_heads_csv(tmp_path / "heads.csv", a)
    write_heads_json(tmp_path / "heads.json", a)
    with open(tmp_path / "heads.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    want = {"p_alpha", "p_alpha_pvalue", "p_alpha_qvalue", "testable", "confident", "p_alpha_specificity"}
    assert want <= set(rows[0])
    assert {r["testable"] for r in rows} == {"true", "false"} and rows[-1]["testable"] == "false"
    for r in rows:  # untestable heads: counts reported, no p-value, ranked last
        assert (r["testable"] == "true") == (float(r["confident"]) >= 280)
        assert (r["p_alpha_pvalue"] == "") == (r["testable"] == "false")  # undefined: an empty cell
    meta = json.loads((tmp_path / "heads.json").read_text())
    assert meta["null"] == "shift" and meta["min_confident"] == 280 and "never a normal tail" in meta["pvalues"]
    assert meta["n_testable"] == sum(r["testable"] == "true" for r in rows)
