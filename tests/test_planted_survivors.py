"""Tests for bugs that a planted-bug (mutation) run showed the rest of the suite would miss (issue 19):
each compares the code against a plain, independent computation at the edge where the likely bug shows
(huge integers in a table, a Monte-Carlo p at its floor, the last circular shift). Fast and exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from allo_lightning.analysis import ProteinNull, score_heads
from allo_lightning.analysis import scores as sc
from allo_lightning.attention import ProteinStats
from allo_lightning.tables import csv_text, format_cell

# -- tables: an integer is written whole, however large ------------------------------------------------


def test_integers_are_written_whole_however_large():
    """Integers (seeds, counts, draws) keep every digit: never ``1.23456789e+09`` nor ``12.0``."""
    for v in (0, -3, 12, 999_999_999, 1_234_567_890, -10**12, 2**53 + 1, 10**20 + 7, np.int64(2**62 + 1),
              np.int32(-2**31), np.uint64(2**64 - 1)):
        assert format_cell(v) == str(int(v)), v
    text = csv_text(["seed", "draws"], [[2**40 + 3, np.int64(1_000_000_001)]])
    assert text.split("\r\n")[1] == f"{2**40 + 3},1000000001"


# -- Monte-Carlo p-values: (1 + b) / (1 + B), b = draws that reach the observed sum --------------------

def _stats(count: np.ndarray, mass: np.ndarray) -> ProteinStats:
    c = torch.as_tensor(count, dtype=torch.float32)
    return ProteinStats(received=c.clone(), count=c, mass=torch.as_tensor(mass, dtype=torch.float32),
                        total=c.sum(-1))


def _proteins(seed: int = 0):
    """Two proteins, 1 layer x 6 heads: head 0 puts all its confident attention on the sites (the observed
    sum is the largest possible one: no random draw reaches it), the others random Poisson counts."""
    rng = np.random.default_rng(seed)
    items = []
    for L, sites in ((60, [5, 6, 7, 30]), (45, [10, 11, 12])):
        y = np.zeros(L, dtype=int)
        y[sites] = 1
        count = rng.poisson(1.5, size=(1, 6, L)).astype(float)
        count[0, 0] = 0.0
        count[0, 0, sites] = 40.0
        mass = count * rng.uniform(0.2, 0.9, size=count.shape)
        items.append((_stats(count, mass), y))
    return items


def test_monte_carlo_pvalue_is_one_plus_exceedances_over_one_plus_draws():
    """score_heads' Monte-Carlo route (no exact p, no escalation: max_permutations = B) against a plain count
    over the same draws, pooled protein by protein outside the package: p = (1 + b) / (1 + B) with b the
    pooled draws >= the observed sum (ties count). The head whose observed sum no draw can reach gets the
    floor 1/(B + 1), never 0, and is reported at the floor."""
    items = _proteins()
    B, seed = 300, 4
    s = score_heads(items, 1, 6, n_permutations=B, seed=seed, exact=False, null="permutation",
                    max_permutations=B, min_confident=1)
    gen = torch.Generator().manual_seed(seed)  # the B shared draws, protein by protein (the documented order)
    pooled = {"p_alpha": np.zeros((B, 6)), "mass": np.zeros((B, 6))}
    observed = {"p_alpha": np.zeros(6), "mass": np.zeros(6)}
    for stats, y in items:
        idx = ProteinNull("permutation", y).draw(B, gen).numpy()  # [B, k]
        for name, v in (("p_alpha", stats.count[0].double().numpy()), ("mass", stats.mass[0].float().numpy())):
            for d in range(B):
                pooled[name][d] += v[:, idx[d]].sum(-1)
            observed[name] += v[:, y.astype(bool)].sum(-1)
    for name in ("p_alpha", "mass"):
        st = s.stat(name)
        for h in range(6):
            obs = observed[name][h]
            b = sum(1 for d in range(B) if pooled[name][d, h] >= obs - 1e-5 * (abs(obs) + 1))
            assert st.pvalue[0, h].item() == pytest.approx((1 + b) / (1 + B), rel=1e-12), (name, h, b)
            assert st.pvalue_draws[0, h].item() == B
        assert st.pvalue[0, 0].item() == pytest.approx(1 / (B + 1), rel=1e-12)  # the floor, not 0
        assert bool(st.pvalue_at_floor[0, 0]) and st.pvalue_floor[0, 0].item() == pytest.approx(1 / (B + 1))


@pytest.mark.parametrize("B, expected", [(50, 0), (300, 2)])
def test_per_protein_significance_respects_the_monte_carlo_floor(B, expected):
    """n_significant counts proteins whose own p (1 + b_p) / (1 + B) is below p_max = 0.01: with B = 50 draws
    no protein can be (its floor 1/51 is above 0.01) however strong the head; with B = 300 both are."""
    s = score_heads(_proteins(), 1, 6, n_permutations=B, seed=1, exact=False, null="permutation",
                    max_permutations=B, min_confident=1, p_max=0.01, snr_min=2.0)
    for st in (s.p_alpha, s.mass):
        assert st.n_significant[0, 0].item() == expected


# -- the shift null: every one of the L circular shifts is drawn, uniformly ----------------------------


def test_shift_draws_cover_every_shift_uniformly():
    """ProteinNull.draw and draw_null_sums (the pooled Monte-Carlo route) draw each of the L shifts with
    probability 1/L, the last one too: counted over 14000 draws, each within 5 binomial sd of n/L."""
    L, n = 7, 14000
    y = np.zeros(L, dtype=int)
    y[0] = 1
    values = torch.tensor([[2.0 ** j for j in range(L)]])  # [1, L]: the sum tells which shift was drawn
    nl = ProteinNull("shift", y)
    sd = math.sqrt(n * (1 / L) * (1 - 1 / L))
    shifts = nl.draw(n, torch.Generator().manual_seed(0))[:, 0]
    pooled, _ = sc.draw_null_sums([values], [nl], n, torch.Generator().manual_seed(1))
    from_sums = torch.log2(pooled[:, 0]).round().long()
    for drawn in (shifts, from_sums):
        counts = torch.bincount(drawn, minlength=L)
        assert len(counts) == L and (counts - n / L).abs().max() < 5 * sd, counts.tolist()


# -- per-protein metrics: the mean is over the proteins that have a site ------------------------------


def test_per_protein_metrics_leave_out_proteins_without_a_site():
    """precision_at_k, r_precision and protein_auprc are means over the proteins with at least one site
    (a protein without one has no precision to speak of): a site-less protein, however it is scored,
    changes none of them; each equals the plain mean of the per-protein values (sklearn's AP)."""
    from sklearn.metrics import average_precision_score

    from allo_lightning.probe import compute_metrics
    from allo_lightning.probe.metrics import precision_at_k

    with_sites = [([1, 0, 0, 1, 0, 0], [0.9, 0.1, 0.4, 0.3, 0.8, 0.2]), ([0, 1, 0, 0, 0], [0.5, 0.6, 0.1, 0.7, 0.2])]
    y = torch.tensor([v for ys, _ in with_sites for v in ys])
    s = torch.tensor([v for _, ss in with_sites for v in ss])
    idx = torch.tensor([i for i, (ys, _) in enumerate(with_sites) for _ in ys])
    want = {"precision_at_k": np.mean([precision_at_k(ss, ys, 2) for ys, ss in with_sites]),
            "r_precision": np.mean([precision_at_k(ss, ys, sum(ys)) for ys, ss in with_sites]),
            "protein_auprc": np.mean([average_precision_score(ys, np.float32(ss)) for ys, ss in with_sites])}
    assert want["precision_at_k"] == pytest.approx(0.5) and want["r_precision"] == pytest.approx(0.25)
    for extra in ([0.95, 0.99, 0.01], [0.0, 0.0, 0.0]):  # a site-less protein, top-scored or bottom-scored
        m = compute_metrics(torch.cat([s, torch.tensor(extra)]), torch.cat([y, torch.zeros(3, dtype=torch.long)]),
                            torch.cat([idx, torch.full((3,), 2)]), top_k=2)
        for key, value in want.items():
            assert m[key] == pytest.approx(value, rel=1e-9), (key, extra)


# -- the decision threshold: the best F1 among the cuts that ``score >= threshold`` can make ----------


def test_best_f1_threshold_is_the_best_cut_between_distinct_scores():
    """best_f1_threshold against a brute force over every cut ``score >= t`` (t each distinct score):
    the F1 its threshold gives is the best one, whatever the row order of tied scores (a cut inside a
    tie looks better on paper but no threshold can make it)."""
    from sklearn.metrics import f1_score

    from allo_lightning.probe.metrics import best_f1_threshold

    cases = [([1, 1, 0, 0, 0, 0, 1], [0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1]),
             ([0, 1, 1, 0, 1, 0, 0, 0], [0.8, 0.8, 0.6, 0.6, 0.6, 0.6, 0.2, 0.2])]
    rng = np.random.default_rng(0)
    for ys, ss in cases:
        ys, ss = np.array(ys), np.array(ss, dtype=np.float32)
        best = max(f1_score(ys, ss >= t) for t in np.unique(ss))
        for perm in [np.arange(len(ys)), np.argsort(-ys, kind="stable")] + [rng.permutation(len(ys)) for _ in range(5)]:
            t = best_f1_threshold(torch.tensor(ss[perm]), torch.tensor(ys[perm]))
            assert f1_score(ys, ss >= t) == pytest.approx(best), (ys, ss, perm, t)


# -- config: a bool is not a whole number --------------------------------------------------------------


def test_a_bool_is_not_a_whole_number_for_an_int_or_choice_field():
    """``devices: int | "auto"`` refuses True and False from Python (bool is an int subclass: ``devices=True``
    would reach Lightning as 1 device), as the command line refuses ``--trainer.devices true``."""
    from allo_lightning import config
    from allo_lightning.errors import InputError

    for bad in (True, False, 1.5, "two"):
        with pytest.raises(InputError, match=r"^--trainer\.devices: .* is not accepted; choose one of: auto "
                                             r"\(or a whole number\)"):
            config.TrainerConfig(devices=bad)
    assert config.TrainerConfig(devices=3).devices == 3 and config.TrainerConfig(devices="auto").devices == "auto"


# -- which proteins enter the head scores --------------------------------------------------------------


def test_a_protein_with_more_sites_than_other_residues_is_left_out_of_the_scores():
    """usable: k >= 1 sites and at least k non-sites (every L up to 8, every k); a protein with 3 sites
    among 5 residues is skipped, so the scores are those of the other proteins alone."""
    from allo_lightning.analysis.scores import usable

    for L in range(1, 9):
        for k in range(L + 1):
            assert usable(np.r_[np.ones(k, dtype=int), np.zeros(L - k, dtype=int)]) == (k >= 1 and L - k >= k), (L, k)
    items = _proteins()
    crowded = (_stats(np.full((1, 6, 5), 3.0), np.full((1, 6, 5), 1.0)), np.array([1, 1, 1, 0, 0]))
    a = score_heads(items, 1, 6, n_permutations=50, seed=0, min_confident=1)
    b = score_heads(items + [crowded], 1, 6, n_permutations=50, seed=0, min_confident=1)
    assert a.n_proteins == b.n_proteins == 2
    for name in ("p_alpha", "p_alpha_pvalue", "mass", "mass_pvalue", "confident"):
        assert torch.equal(a[name], b[name]), name


# -- messages: a command says each line once, even when the root logger has a handler -----------------


def test_a_configured_console_does_not_also_go_to_the_root_handler(capsys):
    """A caller that configured logging itself (``logging.basicConfig`` in a notebook or a wrapper script)
    gets each of a command's lines once, from the package's console, not a second time from its root
    handler; after the command the library's records reach the root handler again."""
    import io
    import logging

    from allo_lightning import messages

    root_stream = io.StringIO()
    root_handler = logging.StreamHandler(root_stream)
    logging.getLogger().addHandler(root_handler)
    try:
        messages.configure(logging.INFO)
        try:
            log = logging.getLogger("allo_lightning.some.module")
            log.info("said")
            log.warning("careful")
        finally:
            messages.unconfigure()
        got = capsys.readouterr()
        assert got.out == "said\n" and got.err == "WARNING: careful\n" and root_stream.getvalue() == ""
        logging.getLogger("allo_lightning.some.module").warning("from the library")
        assert root_stream.getvalue() == "from the library\n"
    finally:
        logging.getLogger().removeHandler(root_handler)
