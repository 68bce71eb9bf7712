"""Head scores against a random-site null: Vig et al.'s p_alpha, calibrated p-values, BH q-values.

Inputs are the per-residue column statistics of :mod:`allo_lightning.attention.stats`: ``count``
(confident residue queries received by residue key j) and ``mass`` (their attention), both with BOS,
EOS and padding excluded on BOTH axes. S_p is protein p's set of sites. Two statistics are scored:

- ``p_alpha`` (Vig et al. 2021, "BERTology meets biology"): the share of a head's confident
  (query residue, key residue) pairs whose key is a site, pooled over proteins as in their definition:
  ``sum_p sum_{j in S_p} count_pj / sum_p sum_j count_pj``. Special tokens are excluded on both
  axes (the denominator is ``count.sum(-1)``, not the cached ``total``, which includes BOS/EOS keys);
- ``mass``: the confident attention mass sent to sites per confident residue pair,
  ``sum_p sum_{j in S_p} mass_pj / sum_p sum_j count_pj`` (same denominator, so both statistics are
  "per confident residue pair"; the seed scripts divided by a count that included BOS/EOS).

Neither denominator depends on the labels, so a test of the numerator is a test of the score.

Testable heads: Vig et al. do not interpret heads with fewer than 100 confident pairs. Heads whose
pooled ``confident`` count is below ``min_confident`` are *not testable*: their scores are reported,
their p- and q-values are NaN (not tested, and not counted in the BH correction), and they are never
ranked above a testable head nor selected.

Nulls (``null``): random site sets, drawn per protein and pooled exactly as the observed score.
Each null is valid only under its assumption; real sites are contiguous (runs of 2-3 residues) and a
trained model's attention varies smoothly along the chain, so only ``shift`` is the default:

- ``shift`` (default): the site pattern circularly shifted along the sequence by a uniform shift in
  0..L-1. It keeps the contiguity and spacing of the sites. Assumption: the attention a residue
  receives is (circularly) stationary along the chain, i.e. which stretch of the chain the sites sit
  on carries no information under the null; neighbouring residues may be correlated. For one protein
  the L shifts are enumerated exactly; pooled over several proteins, draws take an independent
  uniform shift per protein (the exact null is uniform over the product of the shifts), and integer
  counts get the exact p from a convolution over proteins (:func:`exact_shift_pvalue`).
  Measured calibration on the bundled GPCR site patterns with attention following an AR(1) log-rate
  unrelated to the sites: nominal at correlation lengths 0, 3 and 10 residues (README, statistics);
- ``permutation``: the same number of sites drawn uniformly from ALL residues of the protein (the
  observed set is one of the possible draws, so no p-value can be 0). Assumption: residues are
  exchangeable (independent attention). Anti-conservative when attention is smooth along the chain
  and sites are contiguous (about 6x the nominal rate at 0.01 for a 3-residue correlation length);
- ``composition``: each site replaced by a random residue of the same amino-acid type (per type, as
  many residues as the protein has sites of that type, drawn from all its residues of that type):
  the random set has exactly the sites' composition. Assumption: residues of one type are
  exchangeable (same weakness as ``permutation``).

Resolution: a null can only give p-values down to its floor, the probability of its most extreme
outcome: ``1 / prod_p L_p`` for ``shift`` (few proteins: a coarse floor; one protein of 300 residues:
p >= 1/300), ``1 / prod_p C(L_p, k_p)`` for ``permutation``; a Monte-Carlo p cannot go below
1/(draws+1). :attr:`HeadScores.pvalue_floor` is the null's floor and ``{s}_pvalue_floor`` each head's
(the larger of the two for a Monte-Carlo p). When the floor is above ``q_max / m`` (m testable heads),
Benjamini-Hochberg can select no head whatever the data: :meth:`HeadScores.resolution` says so.

p-values (one-sided: more attention on the sites than random), valid under the null's assumption, never 0:

1. ``n_permutations`` (B) random site sets per protein are drawn once and shared by all heads (one
   ``embedding_bag`` gives every head's null sums); ``p = (1 + b) / (1 + B)``, b = draws >= observed.
2. Heads at the floor (b = 0) whose floor 1/(B+1) is above what Benjamini-Hochberg can ever need
   (q_max / m, m = testable heads: a p below it is selected whatever the others) get more draws, for
   those heads only (vectorised over them), until the floor is below q_max / m or B reaches
   ``max_permutations``; all draws are pooled (stopping as soon as b > 0 keeps p valid).
3. Where an exact computation is cheap, it replaces the Monte-Carlo p of the heads with b < 10:
   ``p_alpha`` under the ``permutation`` null (integer counts: a dynamic programme over the distinct
   count values of each protein, :func:`exact_permutation_pvalue`, within a cost budget), ``p_alpha``
   under ``shift`` (a convolution of the per-protein shift-sum distributions,
   :func:`exact_shift_pvalue`, within the same budget), and ``shift`` with one protein (the L
   shifts, always).
   ``{s}_pvalue_draws`` says which (0 = exact); ``{s}_pvalue_at_floor`` is true when no draw reached
   the observed value: then p is the floor 1/(B+1), an upper bound, reported as such.

Mean, sd, impact and SNR are descriptive (closed form: a sum over k residues drawn without
replacement from n has mean ``k*mu`` and variance ``k*sigma^2*(n-k)/(n-1)``, summed over amino-acid
types for ``composition``, from the L shifts for ``shift``; proteins are independent, so means and
variances add). The SNR is NaN when the null sd is 0. No p-value comes from a normal tail.

Orthosteric contrast: when ``orthosteric`` labels are given for some proteins, the same test is run
with the orthosteric residues as "sites" on the proteins that have BOTH usable labels; the contrast
(:func:`orthosteric_contrast`) compares the two enrichments on those same proteins only:
``{s}_specificity`` = ``log2(allosteric impact / orthosteric impact)`` (impact = observed / null
mean, both pooled over the proteins with both labels): > 0 means more enriched on the allosteric
sites than on the orthosteric pocket; ``{s}_specificity_pvalue`` is a one-sided sign-flip test over
those proteins for "more enriched on the orthosteric residues" (floor 2^-P: with 2 proteins it is
never below 0.25, so nothing is resolved), ``{s}_specificity_qvalue`` its BH q over the testable heads.

:func:`score_heads` returns a :class:`HeadScores`; ``HeadScores.columns()`` are the heads.csv
columns (every one a float64 or bool tensor [n_layers, n_heads]; ``{s}`` is ``p_alpha`` or ``mass``):

============================  =========================================================================
``confident``                 pooled confident (residue query, residue key) pairs, sum_p sum_j count_pj
``testable``                  confident >= min_confident
``n_proteins``                proteins that entered the scores (see :func:`usable`)
``{s}``                       pooled observed score
``{s}_null_mean``             pooled null mean of the score (closed form)
``{s}_null_sd``               pooled null standard deviation of the score (closed form)
``{s}_impact``                observed / null mean (inf when only the null mean is 0, NaN when both are)
``{s}_snr``                   (observed - null mean) / null sd; NaN when the null sd is 0
``{s}_pvalue``                one-sided p-value (see above); NaN for heads that are not testable
``{s}_pvalue_draws``          random draws behind the p-value; 0 = computed exactly
``{s}_pvalue_at_floor``       no draw reached the observed value: p is the floor 1/(draws+1)
``{s}_pvalue_floor``          the smallest p this head's computation could give: the null's floor
                              (1/prod L_p for shift) when exact, else max(that, 1/(draws+1))
``{s}_qvalue``                Benjamini-Hochberg q-value of ``{s}_pvalue`` over the testable heads
``{s}_protein_mean``          mean over proteins of the per-protein score (proteins where the head has
                              no confident residue pair are left out)
``{s}_protein_sd``            standard deviation (ddof=1) of the per-protein score
``{s}_protein_snr``           mean over proteins of the per-protein SNR (NaN ones left out)
``{s}_n_significant``         proteins where the head is significant on its own: per-protein p-value
                              (from the B shared draws, or exact for ``shift``) < ``p_max`` and
                              per-protein SNR > ``snr_min``
``{s}_orthosteric``           (with orthosteric data) the same score with the orthosteric residues as
                              sites, pooled over the proteins that have them
``{s}_orthosteric_pvalue``    its p-value (same null and procedure)
``{s}_specificity``           log2(impact on the sites / impact on the orthosteric residues), both
                              pooled over the proteins that have both labels
``{s}_specificity_pvalue``    one-sided sign-flip p over those proteins: more enriched on the orthosteric
                              residues than on the sites
``{s}_specificity_qvalue``    its Benjamini-Hochberg q over the testable heads
``confident_mass``            pooled thresholded attention mass, sum_p sum_j mass_pj
``testable_mass``             confident_mass >= min_confident (the mass-based 100 rule of Vig et al.'s
                              provis code)
``p_alpha_mass``              Vig et al.'s attention-weighted p_alpha (their provis code): thresholded
                              attention mass on sites / all thresholded mass, sum_p sum_{j in S_p}
                              mass_pj / confident_mass. Its numerator is that of ``mass`` and its
                              denominator does not depend on the labels: its test is ``mass_pvalue``
============================  =========================================================================
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..attention.stats import ProteinStats
from ..errors import AlloError

STATISTICS = ("p_alpha", "mass")
NULLS = ("shift", "permutation", "composition")
DEFAULT_NULL = "shift"
RESOLVED = 10  # exceedances that make a Monte-Carlo p "resolved" (relative error about 30 %)
CHUNK = 20000  # draws generated at once while escalating
EXACT_BUDGET = 1e7  # cost (see exact_permutation_cost) of one exact p-value (about 10 ms); 5x that in all

_STAT_SUFFIXES = ("", "_null_mean", "_null_sd", "_impact", "_snr", "_pvalue", "_pvalue_draws",
                  "_pvalue_at_floor", "_pvalue_floor", "_qvalue", "_protein_mean", "_protein_sd", "_protein_snr",
                  "_n_significant")
_ORTHO_SUFFIXES = ("_orthosteric", "_orthosteric_pvalue", "_specificity", "_specificity_pvalue",
                   "_specificity_qvalue")


# -- typed result -------------------------------------------------------------------------------------

@dataclass
class StatisticScores:
    """Every column of one statistic (``p_alpha`` or ``mass``); tensors [n_layers, n_heads]."""

    name: str
    value: torch.Tensor
    null_mean: torch.Tensor
    null_sd: torch.Tensor
    impact: torch.Tensor
    snr: torch.Tensor
    pvalue: torch.Tensor
    pvalue_draws: torch.Tensor
    pvalue_at_floor: torch.Tensor
    pvalue_floor: torch.Tensor
    qvalue: torch.Tensor
    protein_mean: torch.Tensor
    protein_sd: torch.Tensor
    protein_snr: torch.Tensor
    n_significant: torch.Tensor
    orthosteric: torch.Tensor | None = None
    orthosteric_pvalue: torch.Tensor | None = None
    specificity: torch.Tensor | None = None
    specificity_pvalue: torch.Tensor | None = None
    specificity_qvalue: torch.Tensor | None = None

    def columns(self) -> dict[str, torch.Tensor]:
        """``{name}{suffix}`` -> tensor, in heads.csv order (orthosteric columns only when present)."""
        out = {}
        for f in fields(self)[1:]:
            v = getattr(self, f.name)
            if v is not None:
                out[self.name + ("" if f.name == "value" else f"_{f.name}")] = v
        return out


@dataclass
class HeadScores:
    """Scores of every head (see the module docstring for the meaning of each column).

    ``scores.p_alpha.qvalue`` (typed) and ``scores["p_alpha_qvalue"]`` (by heads.csv column name) are
    the same tensor."""

    p_alpha: StatisticScores
    mass: StatisticScores
    confident: torch.Tensor  # [n_layers, n_heads] pooled confident residue pairs
    testable: torch.Tensor  # [n_layers, n_heads] bool: confident >= min_confident
    n_proteins: int
    null: str
    min_confident: int
    n_permutations: int
    n_orthosteric_proteins: int = 0
    log10_pvalue_floor: float = 0.0  # log10 of the null's smallest attainable p (see log10_null_floor)
    confident_mass: torch.Tensor | None = None  # [n_layers, n_heads] pooled thresholded attention mass
    p_alpha_mass: torch.Tensor | None = None  # [n_layers, n_heads] Vig et al.'s attention-weighted p_alpha
    q_max: float = 0.05
    max_permutations: int = 1_000_000

    @property
    def pvalue_floor(self) -> float:
        """The smallest p-value the null can give over these proteins (may underflow to 0.0)."""
        return 10.0 ** self.log10_pvalue_floor

    def resolution(self) -> dict:
        """How small a p-value can get, against what Benjamini-Hochberg needs: a lone head is selected
        only with p <= q_max / m (m testable heads); no head at all can be selected when every p is
        above q_max."""
        m = int(self.testable.sum())
        reached = {s: float(self.stat(s).pvalue_floor[self.testable].min()) if m else float("nan")
                   for s in STATISTICS}
        mc_floor = 1.0 / (self.max_permutations + 1)
        attainable = max(self.pvalue_floor, mc_floor)  # the smallest p any head could get (draws at most max)
        return {
            "null": self.null, "n_proteins": self.n_proteins,
            "null_floor": self.pvalue_floor, "log10_null_floor": self.log10_pvalue_floor,
            "monte_carlo_floor": mc_floor, "attainable_floor": attainable, "smallest_floor_reached": reached,
            "n_testable": m, "q_max": self.q_max, "bh_lone_head_threshold": self.q_max / max(1, m),
            "lone_head_selectable": {s: bool(m and attainable <= self.q_max / m) for s in STATISTICS},
            "any_head_selectable": {s: bool(m and attainable <= self.q_max) for s in STATISTICS},
        }

    def resolution_line(self) -> str:
        """One line for the terminal: the smallest attainable p against what BH needs."""
        r = self.resolution()
        line = (f"p-value resolution: the {self.null} null over {self.n_proteins} proteins gives p >= "
                f"{r['null_floor']:.3g} (a Monte-Carlo p >= 1/(draws+1) >= {r['monte_carlo_floor']:.3g}); "
                f"BH at q < {self.q_max} over {r['n_testable']} testable heads selects a lone head only at p <= "
                f"{r['bh_lone_head_threshold']:.3g}")
        if r["n_testable"]:
            none = [s for s, ok in r["any_head_selectable"].items() if not ok]
            lone = [s for s, ok in r["lone_head_selectable"].items() if not ok and s not in none]
            if none:
                line += (f". RESOLUTION FLOOR: with these proteins no head can be significant by {', '.join(none)}"
                         " (add proteins)")
            if lone:
                line += (f". RESOLUTION FLOOR: with these proteins a head can be significant by {', '.join(lone)} "
                         "only together with many others at the floor (add proteins)")
        return line

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.confident.shape[0]), int(self.confident.shape[1])

    def stat(self, name: str) -> StatisticScores:
        if name not in STATISTICS:
            raise KeyError(f"unknown statistic {name!r}; one of {STATISTICS}")
        return getattr(self, name)

    def testable_heads(self) -> list[tuple[int, int]]:
        """0-based (layer, head) pairs of the testable heads, in (layer, head) order."""
        return [(int(ly), int(h)) for ly, h in torch.nonzero(self.testable).tolist()]

    def columns(self) -> dict[str, torch.Tensor]:
        """The heads.csv columns after layer/head/rank/selected, in order."""
        out = {"confident": self.confident, "testable": self.testable,
               "n_proteins": torch.full(self.shape, float(self.n_proteins), dtype=torch.float64)}
        for s in STATISTICS:
            out.update(self.stat(s).columns())
        if self.p_alpha_mass is not None:
            out["confident_mass"] = self.confident_mass
            out["testable_mass"] = self.confident_mass >= self.min_confident
            out["p_alpha_mass"] = self.p_alpha_mass
        return out

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.columns()[name]
        except KeyError:
            raise KeyError(f"no score column {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.columns()

    def keys(self):
        return self.columns().keys()

    def __iter__(self):
        return iter(self.columns())


# -- labels, nulls ----------------------------------------------------------------------------------

def as_labels(labels, length: int | None = None) -> torch.Tensor:
    """0/1 labels (numpy, torch, list) as a bool tensor, checked against ``length``."""
    y = torch.as_tensor(np.asarray(labels)).reshape(-1).bool()
    if length is not None and y.numel() != length:
        raise AlloError(f"labels have length {y.numel()} but the statistics cover {length} residues")
    return y


def usable(labels) -> bool:
    """A protein enters the scores when it has k >= 1 sites and at least k non-site residues."""
    y = as_labels(labels)
    k = int(y.sum())
    return k >= 1 and y.numel() - k >= k


def _floyd(n: int, k: int, n_draws: int, generator: torch.Generator) -> torch.Tensor:
    """[n_draws, k] indices into range(n), each row k distinct ones uniformly at random."""
    if k == 0:
        return torch.empty(n_draws, 0, dtype=torch.long)
    if k > 64:  # many: top-k of random keys
        keys = torch.rand(n_draws, n, generator=generator)
        return keys.topk(k, dim=1, sorted=False).indices
    if k * (k - 1) < n:  # few: k draws with replacement, rows with a repeat drawn again (>= 60 % kept)
        out = torch.randint(0, n, (n_draws, k), generator=generator)
        redo = torch.arange(n_draws)
        while redo.numel():
            srt = out[redo].sort(1).values
            bad = (srt[:, 1:] == srt[:, :-1]).any(1)
            redo = redo[bad]
            if redo.numel():
                out[redo] = torch.randint(0, n, (redo.numel(), k), generator=generator)
        return out
    chosen = torch.empty(n_draws, k, dtype=torch.long)
    for step, j in enumerate(range(n - k, n)):  # Floyd's algorithm, vectorised over draws
        t = torch.randint(0, j + 1, (n_draws,), generator=generator)
        taken = (chosen[:, :step] == t[:, None]).any(1)
        chosen[:, step] = torch.where(taken, torch.full_like(t, j), t)
    return chosen


def check_null(null: str) -> str:
    """``null`` when it is one of :data:`NULLS` (the one check of the core; the command line's HeadsConfig
    refuses other values first, in the flag's words)."""
    if null not in NULLS:
        raise AlloError(f"null must be one of {', '.join(NULLS)} (got {null!r})")
    return null


class ProteinNull:
    """The null of one protein: how random "site" sets of the same make-up are drawn.

    ``labels``: bool [L]; ``sequence``: needed by ``composition``."""

    def __init__(self, null: str, labels, sequence: str | None = None) -> None:
        self.null = check_null(null)
        self.y = as_labels(labels)
        self.L = self.y.numel()
        self.k = int(self.y.sum())
        self.sites = torch.nonzero(self.y).reshape(-1)
        if null == "permutation":
            self.groups = [(torch.arange(self.L), self.k)]
        elif null == "composition":
            if sequence is None or len(sequence) != self.L:
                raise AlloError("the composition null needs each protein's sequence (same length as its labels)")
            letters = np.frombuffer(sequence.encode("ascii", "replace"), dtype=np.uint8)
            self.groups = []
            for a in np.unique(letters[self.y.numpy()]):
                members = torch.as_tensor(np.flatnonzero(letters == a))
                self.groups.append((members, int(self.y[members].sum())))
        else:
            self.groups = []

    def draw(self, n_draws: int, generator: torch.Generator) -> torch.Tensor:
        """[n_draws, k] residue indices (0-based) of random site sets."""
        if self.null == "shift":
            s = torch.randint(0, self.L, (n_draws, 1), generator=generator)
            return (self.sites[None, :] + s) % self.L
        parts = [members[_floyd(members.numel(), k, n_draws, generator)] for members, k in self.groups]
        return torch.cat(parts, 1)

    def shift_sums(self, values: torch.Tensor) -> torch.Tensor:
        """[L, C]: the sums of ``values`` [C, L] over every circular shift of the sites (row 0 = observed)."""
        idx = (self.sites[None, :] + torch.arange(self.L)[:, None]) % self.L
        return torch.nn.functional.embedding_bag(idx, values.float().t().contiguous(), mode="sum").double()

    def sample_sums(self, values: torch.Tensor, n_draws: int, generator: torch.Generator) -> torch.Tensor:
        """[n_draws, C]: sums of ``values`` [C, L] over ``n_draws`` random site sets (one gather-and-sum)."""
        idx = self.draw(n_draws, generator)
        return torch.nn.functional.embedding_bag(idx, values.float().t().contiguous(), mode="sum")

    def moments(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Null mean and variance [C] of the sum of ``values`` [C, L] over a random site set (float64)."""
        v = values.double()
        if self.null == "shift":
            sums = self.shift_sums(values)
            var, mean = torch.var_mean(sums, 0, unbiased=False)
            return mean, var
        mean = torch.zeros(v.shape[0], dtype=torch.float64)
        var = torch.zeros_like(mean)
        for members, k in self.groups:
            n = members.numel()
            var_a, mu_a = torch.var_mean(v[:, members], -1, unbiased=False)
            mean += k * mu_a
            if n > 1:
                var += k * var_a * (n - k) / (n - 1)
        return mean, var


def closed_form_null(values: torch.Tensor, labels, null: str = "permutation",
                     sequence: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Null mean and sd of the sum of ``values[..., j]`` over a random site set (``null``, see the
    module docstring). ``values``: [..., L]; returns two float64 tensors [...]."""
    shape = values.shape[:-1]
    mean, var = ProteinNull(null, labels, sequence).moments(values.reshape(-1, values.shape[-1]))
    return mean.reshape(shape), var.clamp_min(0).sqrt().reshape(shape)


def random_site_sets(labels, n_draws: int, generator: torch.Generator, null: str = "permutation",
                     sequence: str | None = None) -> torch.Tensor:
    """[n_draws, k] residue indices (0-based): random site sets of the same size as the sites."""
    return ProteinNull(null, labels, sequence).draw(n_draws, generator)


def random_subset_sums(values: torch.Tensor, labels, n_draws: int, generator: torch.Generator,
                       null: str = "permutation", sequence: str | None = None) -> torch.Tensor:
    """Sums of ``values`` [C, L] over ``n_draws`` random site sets: [n_draws, C]."""
    return ProteinNull(null, labels, sequence).sample_sums(values, n_draws, generator)


# -- exact p-values -------------------------------------------------------------------------------

def _log_factorials(n: int) -> np.ndarray:
    """log(i!) for i = 0..n."""
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def _log_comb(lf: np.ndarray, n, k) -> np.ndarray:
    """log C(n, k) from the table ``lf`` of log-factorials; -inf where k < 0 or k > n."""
    n, k = np.broadcast_arrays(np.asarray(n), np.asarray(k))
    ok = (k >= 0) & (k <= n)
    kk, nk = np.where(ok, k, 0), np.where(ok, n - k, 0)
    return np.where(ok, lf[np.where(ok, n, 0)] - lf[kk] - lf[nk], -np.inf)


def exact_permutation_cost(values: Sequence[np.ndarray], ks: Sequence[int], observed: float) -> float:
    """Rough cost of :func:`exact_permutation_pvalue` in array elements touched, each Python-level
    step counted as 5000 elements (to decide whether it is cheap)."""
    T = max(0, math.ceil(observed - 1e-9))
    cost = 0.0
    for v, k in zip(values, ks):
        groups = np.unique(np.minimum(np.asarray(v), T), return_counts=True)[1]
        steps = float(np.minimum(groups, k).sum() + len(groups))
        cost += steps * ((k + 1) * (T + 1) + 5000)
    return cost


def exact_permutation_pvalue(values: Sequence[np.ndarray], ks: Sequence[int], observed: float) -> float:
    """Exact P(T >= observed) for T = sum over proteins p of the sum of ``values[p]`` (non-negative
    integers, one per residue) over ``ks[p]`` residues drawn uniformly without replacement from ALL
    residues of protein p, independently across proteins.

    A dynamic programme over the distinct values of each protein: state (residues chosen so far,
    running sum capped at ``observed``); a group of n residues of equal value v contributes m of them
    with the hypergeometric probability of m given how many are still to choose. Probabilities, not
    counts, so nothing overflows."""
    T = math.ceil(observed - 1e-9)
    if T <= 0:
        return 1.0
    Q = np.zeros(T + 1)
    Q[0] = 1.0
    for v, k in zip(values, ks):
        v = np.asarray(v, dtype=np.float64)
        if np.any(v < 0) or np.any(v != np.round(v)):
            raise AlloError("exact_permutation_pvalue needs non-negative integer values")
        vals, mult = np.unique(np.minimum(v.astype(np.int64), T), return_counts=True)
        lf = _log_factorials(len(v))
        P = np.zeros((k + 1, T + 1))
        P[0] = Q
        remaining = len(v)
        need = k - np.arange(k + 1)  # still to choose, per state c (chosen so far)
        for val, n in zip(vals.tolist(), mult.tolist()):
            # W[c, m] = P(m of the n residues of this group | need[c] chosen from the remaining ones)
            m_all = np.arange(min(n, k) + 1)
            den = _log_comb(lf, remaining, need)  # [k + 1]
            logw = (_log_comb(lf, n, m_all)[None, :] + _log_comb(lf, remaining - n, need[:, None] - m_all[None, :])
                    - np.where(np.isfinite(den), den, 0.0)[:, None])
            W = np.where(np.isfinite(den)[:, None], np.exp(logw), 0.0)
            new = np.zeros_like(P)
            for m in m_all.tolist():
                w = W[: k + 1 - m, m]  # states c that can take m more
                if not w.any():
                    continue
                src = P[: k + 1 - m] * w[:, None]
                shift = min(m * val, T)
                new[m:, shift:] += src[:, : T + 1 - shift]
                if shift:
                    new[m:, T] += src[:, T + 1 - shift :].sum(1)
            P = new
            remaining -= n
        Q = P[k]
    return float(min(1.0, max(0.0, Q[T])))


def exact_shift_pvalue(shift_sums: Sequence[np.ndarray], observed: float) -> float:
    """Exact P(T >= observed) for T = sum over proteins p of one of ``shift_sums[p]`` (the sums of a
    protein's values over each of its L_p circular shifts of the sites; non-negative integers), each
    shift equally likely and independent across proteins: the ``shift`` null pooled over proteins.

    A convolution of the per-protein distributions over the running sum, capped at ``observed``."""
    T = math.ceil(observed - 1e-9)
    if T <= 0:
        return 1.0
    Q = np.zeros(T + 1)
    Q[0] = 1.0
    for sums in shift_sums:
        sums = np.rint(np.asarray(sums, dtype=np.float64))
        if np.any(sums < 0):
            raise AlloError("exact_shift_pvalue needs non-negative integer sums")
        vals, mult = np.unique(np.minimum(sums, T).astype(np.int64), return_counts=True)
        new = np.zeros_like(Q)
        for val, w in zip(vals.tolist(), (mult / len(sums)).tolist()):
            new[val:] += w * Q[: T + 1 - val]
            if val:
                new[T] += w * Q[T + 1 - val :].sum()
        Q = new
    return float(min(1.0, max(0.0, Q[T])))


def exact_shift_cost(shift_sums: Sequence[np.ndarray], observed: float) -> float:
    """Rough cost of :func:`exact_shift_pvalue` (same units as :func:`exact_permutation_cost`)."""
    T = max(0, math.ceil(observed - 1e-9))
    return float(sum(len(np.unique(np.minimum(np.asarray(v), T))) * (T + 1 + 5000) for v in shift_sums))


def log10_null_floor(nulls: Sequence[ProteinNull]) -> float:
    """log10 of the smallest p-value the pooled null can give (the probability of its single most
    extreme outcome): -sum_p log10 L_p for ``shift``, -sum_p log10 C(L_p, k_p) for ``permutation``,
    -sum over proteins and residue types of log10 C(n_a, k_a) for ``composition``."""
    out = 0.0
    for nl in nulls:
        if nl.null == "shift":
            out -= math.log10(max(1, nl.L))
        else:
            for members, k in nl.groups:
                n = members.numel()
                out -= (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(10)
    return out


# -- BH and small helpers ---------------------------------------------------------------------------

def bh_qvalues(p: torch.Tensor) -> torch.Tensor:
    """Benjamini-Hochberg q-values (step-up, monotone, capped at 1) of all entries of ``p``; NaN
    p-values are ignored (their q is NaN) and do not count towards m."""
    flat = p.reshape(-1).double()
    ok = ~torch.isnan(flat)
    q = torch.full_like(flat, float("nan"))
    pv = flat[ok]
    m = pv.numel()
    if m:
        order = torch.argsort(pv)
        ranked = pv[order] * m / torch.arange(1, m + 1, dtype=torch.float64)
        ranked = torch.flip(torch.cummin(torch.flip(ranked, [0]), 0).values, [0]).clamp_max(1.0)
        out = torch.empty_like(pv)
        out[order] = ranked
        q[ok] = out
    return q.reshape(p.shape)


def _safe_div(a: torch.Tensor, b: torch.Tensor, fill: float = float("nan")) -> torch.Tensor:
    return torch.where(b > 0, a / torch.where(b > 0, b, torch.ones_like(b)), torch.full_like(a, fill))


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b for b >= 0, a >= 0: +inf where b == 0 < a, NaN where both are 0."""
    inf = torch.full_like(a, float("inf"))
    return torch.where(b > 0, a / torch.where(b > 0, b, torch.ones_like(b)),
                       torch.where(a > 0, inf, torch.full_like(a, float("nan"))))


def _snr(obs: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """(obs - mean) / sd; NaN where the null sd is 0 (undefined)."""
    return _safe_div(obs - mean, sd)


def _tol(obs: torch.Tensor) -> torch.Tensor:
    """Ties: draws within this of the observed sum count as reaching it (float32 sums; conservative)."""
    return 1e-5 * (obs.abs() + 1.0)


# -- the pooled test: one function per p-value route, and a dispatcher --------------------------------
#
# Every route is a function of its inputs (no shared mutable state); the dispatcher ``_pooled_test`` picks
# the route of each row. The random generator is consumed in a fixed order (the B shared draws protein by
# protein, then the escalation draws), so a seed gives one result.

@dataclass
class _Test:
    obs: torch.Tensor  # [S] pooled observed numerator
    null_mean: torch.Tensor
    null_var: torch.Tensor
    pvalue: torch.Tensor
    draws: torch.Tensor  # [S] draws behind each p (0 = exact)
    at_floor: torch.Tensor  # [S] bool
    per_obs: list  # per protein [S]
    per_mean: list  # per protein [S] null mean
    per_snr: list
    per_p: list


def shift_pvalues(shift_sums: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Route ``shift``, one protein: the exact p-value [C] of ``observed`` [C] among the protein's L circular
    shifts of the sites (``shift_sums`` [L, C] from :meth:`ProteinNull.shift_sums`, row 0 = the observed
    sites): the share of the L shifts whose sum reaches it (ties within :func:`_tol` count). Never 0: the
    observed shift is one of the L."""
    return (shift_sums >= (observed - _tol(observed))[None]).sum(0).double() / shift_sums.shape[0]


def draw_null_sums(values: Sequence[torch.Tensor], nulls: Sequence[ProteinNull], n_draws: int,
                   gen: torch.Generator, shift_sums: Sequence[torch.Tensor | None] | None = None,
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``n_draws`` random site sets per protein (one call of ``gen`` per protein, in order): the pooled
    sums [n_draws, C] (float32, accumulated protein by protein) and each protein's own sums. ``shift``
    proteins draw a uniform shift and take that row of their shift sums (``shift_sums[p]`` when given)."""
    pooled = torch.zeros(n_draws, values[0].shape[0], dtype=torch.float32)
    per = []
    for p, (v, nl) in enumerate(zip(values, nulls)):
        if nl.null == "shift":
            sums = shift_sums[p] if shift_sums is not None and shift_sums[p] is not None else nl.shift_sums(v)
            d = sums[torch.randint(0, nl.L, (n_draws,), generator=gen)].float()
        else:
            d = nl.sample_sums(v, n_draws, gen)
        pooled += d
        per.append(d)
    return pooled, per


def exceedances(draw_sums: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Per column, how many of the draws [n, C] reach ``observed`` [C] (ties within :func:`_tol`), float64."""
    return (draw_sums >= (observed - _tol(observed)).float()).sum(0).double()


def monte_carlo_escalation(values: Sequence[torch.Tensor], nulls: Sequence[ProteinNull], observed: torch.Tensor,
                           b: torch.Tensor, B: int, eligible: torch.Tensor, floor_target: torch.Tensor,
                           max_B: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Route Monte-Carlo: the exceedances ``b`` [C] of the B first draws, escalated. Columns that are
    ``eligible``, at the floor (b = 0) and whose floor 1/(draws+1) is above ``floor_target`` get more draws
    (for them only, vectorised) until the floor is below the target or ``max_B`` draws: each round at
    least doubles the draws. Every draw is pooled with the earlier ones, so p = (b + 1) / (draws + 1) stays
    valid (stopping as soon as b > 0 is a stopping rule on b = 0 only). Returns new (b, draws) [C]
    (float64); ``b`` is not modified."""
    b = b.clone()
    draws = torch.full_like(b, float(B))
    cur = B
    while True:
        need = eligible & (b == 0) & (1 / (draws + 1) > floor_target) & (draws < max_B)
        if not bool(need.any()):
            return b, draws
        rows = torch.nonzero(need).reshape(-1)
        needed = math.ceil(1.0 / float(floor_target[rows].min())) - 1
        target = min(max_B, max(cur * 2, needed))
        sub = [v[rows] for v in values]
        obs = observed[rows]
        done = cur
        while done < target:
            n = min(CHUNK, target - done)
            b[rows] += exceedances(draw_null_sums(sub, nulls, n, gen)[0], obs)
            done += n
        draws[rows] = float(target)
        cur = target


def exact_pooled_pvalues(values: Sequence[torch.Tensor], nulls: Sequence[ProteinNull], observed: torch.Tensor,
                         rows: torch.Tensor, shift_sums: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Route exact: p-values [C] of the columns ``rows`` (bool [C]) whose values are integers, by the
    dynamic programme of their null (:func:`exact_permutation_pvalue` for ``permutation``,
    :func:`exact_shift_pvalue` over ``shift_sums`` for ``shift``), in column order while the cost stays
    within the budget (EXACT_BUDGET per column, 5x that in all); NaN for the other columns (also every
    column under ``composition``, which has no exact route)."""
    p = torch.full((observed.shape[0],), float("nan"), dtype=torch.float64)
    null = nulls[0].null
    if null not in ("permutation", "shift"):
        return p
    by_shift = null == "shift"
    vals_np = [v.numpy() for v in (shift_sums if by_shift else values)]
    ks = [nl.k for nl in nulls]
    budget = EXACT_BUDGET * 5
    for r in torch.nonzero(rows).reshape(-1).tolist():
        col = [vv[:, r] if by_shift else vv[r] for vv in vals_np]
        o_r = float(observed[r])
        cost = exact_shift_cost(col, o_r) if by_shift else exact_permutation_cost(col, ks, o_r)
        if cost > EXACT_BUDGET or cost > budget:
            continue
        budget -= cost
        p[r] = exact_shift_pvalue(col, o_r) if by_shift else exact_permutation_pvalue(col, ks, o_r)
    return p


def _pooled_test(values: list[torch.Tensor], nulls: list[ProteinNull], B: int, gen: torch.Generator,
                 tested: torch.Tensor, floor_target: torch.Tensor, max_B: int, exact_rows: torch.Tensor | None,
                 ) -> _Test:
    """One-sided test of sum_p sum_{j in S_p} values_p[:, j] (rows S) against ``nulls``: the dispatcher.

    ``tested``: rows that get a p-value (others NaN); ``floor_target``: per row, the p below which
    more precision is useless; ``exact_rows``: rows with integer values where an exact p-value may be
    used. Routes: one protein under ``shift``: :func:`shift_pvalues` (exact, no draws); otherwise the B
    shared draws (:func:`draw_null_sums`), then :func:`exact_pooled_pvalues` for the integer rows with
    fewer than RESOLVED exceedances, then :func:`monte_carlo_escalation` for the others."""
    S = values[0].shape[0]
    obs = torch.zeros(S, dtype=torch.float64)
    mean = torch.zeros(S, dtype=torch.float64)
    var = torch.zeros(S, dtype=torch.float64)
    per_obs, per_mean, per_snr, shift_sums = [], [], [], []
    for v, nl in zip(values, nulls):  # observed sums and closed-form null moments (no random draws)
        o = v[:, nl.y].double().sum(-1)
        if nl.null == "shift":
            sums = nl.shift_sums(v)
            s2, m = torch.var_mean(sums, 0, unbiased=False)
        else:
            sums = None
            m, s2 = nl.moments(v)
        obs += o
        mean += m
        var += s2
        per_obs.append(o)
        per_mean.append(m)
        per_snr.append(_snr(o, m, s2.clamp_min(0).sqrt()))
        shift_sums.append(sums)
    nan = torch.full((S,), float("nan"), dtype=torch.float64)

    if len(nulls) == 1 and nulls[0].null == "shift":  # exact: the observed shift is one of the L
        p = shift_pvalues(shift_sums[0], per_obs[0])
        return _Test(obs, mean, var, torch.where(tested, p, nan), torch.zeros(S, dtype=torch.float64),
                     torch.zeros(S, dtype=torch.bool), per_obs, per_mean, per_snr, [p])

    pooled, per_draws = draw_null_sums(values, nulls, B, gen, shift_sums)
    per_p = [shift_pvalues(sums, o) if nl.null == "shift" else (1.0 + exceedances(d, o)) / (B + 1.0)
             for nl, sums, d, o in zip(nulls, shift_sums, per_draws, per_obs)]
    b = exceedances(pooled, obs)
    if exact_rows is not None:  # exact where cheap, for the heads that need precision
        p_exact = exact_pooled_pvalues(values, nulls, obs, tested & (b < RESOLVED) & exact_rows, shift_sums)
    else:
        p_exact = nan
    exact = ~torch.isnan(p_exact)
    b, draws = monte_carlo_escalation(values, nulls, obs, b, B, tested & ~exact, floor_target, max_B, gen)
    p = torch.where(exact, p_exact, (b + 1) / (draws + 1))
    draws = torch.where(exact, torch.zeros_like(draws), draws)
    at_floor = ~exact & (b == 0) & tested
    return _Test(obs, mean, var, torch.where(tested, p, nan), draws, at_floor, per_obs, per_mean, per_snr, per_p)


# -- score_heads --------------------------------------------------------------------------------------

def score_heads(
    items: Sequence[tuple[ProteinStats, object]],
    n_layers: int,
    n_heads: int,
    n_permutations: int = 2000,
    seed: int = 0,
    p_max: float = 0.01,
    snr_min: float = 2.0,
    *,
    null: str = DEFAULT_NULL,
    min_confident: int = 100,
    max_permutations: int = 1_000_000,
    q_max: float = 0.05,
    sequences: Sequence[str | None] | None = None,
    orthosteric: Sequence[object | None] | None = None,
    exact: bool = True,
) -> HeadScores:
    """Score every head of a model over proteins given as ``(ProteinStats, labels)`` pairs (labels:
    0/1 of length L). ``sequences`` (parallel to ``items``) is needed by ``null="composition"``;
    ``orthosteric`` (parallel, 0/1 labels or None) adds the orthosteric contrast. Proteins that are
    not :func:`usable` are skipped. ``exact=False`` turns the exact permutation p-value off (tests).
    Seeded: the same inputs and seed give the same result. See the module docstring."""
    check_null(null)  # before any work, also when no protein is usable
    B = int(n_permutations)
    if B < 1:
        raise AlloError("n_permutations must be at least 1")
    HD = n_layers * n_heads
    S = 2 * HD  # rows 0..HD-1: count (p_alpha), HD..2HD-1: mass
    gen = torch.Generator().manual_seed(int(seed))
    items = list(items)
    seqs = list(sequences) if sequences is not None else [None] * len(items)
    orth = list(orthosteric) if orthosteric is not None else [None] * len(items)
    values, nulls, denoms, mass_denoms, ortho_idx = [], [], [], [], []
    for (stats, labels), seq, o in zip(items, seqs, orth):
        Ly, H = stats.shape
        if (Ly, H) != (n_layers, n_heads):
            raise AlloError(f"statistics have {Ly} layers x {H} heads, expected {n_layers} x {n_heads}")
        y = as_labels(labels, stats.length)
        if not usable(y):
            continue
        v = torch.cat([stats.count.reshape(HD, -1), stats.mass.reshape(HD, -1)]).float()  # [S, L]
        values.append(v)
        nulls.append(ProteinNull(null, y, seq))
        denoms.append(stats.count.reshape(HD, -1).double().sum(-1))
        mass_denoms.append(stats.mass.reshape(HD, -1).double().sum(-1))
        if o is not None and usable(as_labels(o, stats.length)):
            ortho_idx.append((len(values) - 1, ProteinNull(null, as_labels(o, stats.length), seq)))
    n_used = len(values)
    confident = torch.stack(denoms).sum(0) if denoms else torch.zeros(HD, dtype=torch.float64)
    testable_hd = confident >= min_confident
    tested = testable_hd.repeat(2)
    m = max(1, int(testable_hd.sum()))
    floor_target = torch.full((S,), q_max / m, dtype=torch.float64)
    exact_rows = torch.zeros(S, dtype=torch.bool)
    if exact:
        exact_rows[:HD] = True  # counts are integers
    shape = (n_layers, n_heads)

    def hd(t: torch.Tensor, i: int) -> torch.Tensor:
        return t[i * HD : (i + 1) * HD].reshape(shape).clone()

    if n_used == 0:
        nan = torch.full(shape, float("nan"), dtype=torch.float64)
        zero = torch.zeros(shape, dtype=torch.float64)
        empty = {s: StatisticScores(s, zero, zero, zero, nan, nan, nan, zero, torch.zeros(shape, dtype=torch.bool),
                                    nan, nan, nan, nan, nan, zero) for s in STATISTICS}
        return HeadScores(empty["p_alpha"], empty["mass"], confident.reshape(shape), testable_hd.reshape(shape),
                          0, null, int(min_confident), B, q_max=float(q_max), max_permutations=int(max_permutations))

    t = _pooled_test(values, nulls, B, gen, tested, floor_target, int(max_permutations), exact_rows)
    denom = confident.repeat(2)
    null_sd = t.null_var.clamp_min(0).sqrt()
    per_denom = [d.repeat(2) for d in denoms]
    ps = torch.stack([_safe_div(o, d) for o, d in zip(t.per_obs, per_denom)])
    pz = torch.stack(t.per_snr)
    sig = torch.stack([((p < p_max) & (z > snr_min)).double() for p, z in zip(t.per_p, t.per_snr)])
    n_ok = (~torch.isnan(ps)).sum(0)
    prot_sd = torch.where(n_ok > 1, _nanstd(ps), torch.full((S,), float("nan"), dtype=torch.float64))
    impact = _ratio(t.obs, t.null_mean)
    log10_floor = log10_null_floor(nulls)
    null_floor = 10.0 ** log10_floor
    mc_floor = torch.where(t.draws > 0, 1.0 / (t.draws + 1), torch.zeros_like(t.draws))
    nan_s = torch.full((S,), float("nan"), dtype=torch.float64)
    p_floor = torch.where(tested, mc_floor.clamp_min(null_floor), nan_s)

    ortho = None
    if ortho_idx:
        o_vals = [values[i] for i, _ in ortho_idx]
        o_nulls = [nl for _, nl in ortho_idx]
        ot = _pooled_test(o_vals, o_nulls, B, gen, tested, floor_target, int(max_permutations), exact_rows)
        o_denom = torch.stack([denoms[i] for i, _ in ortho_idx]).sum(0).repeat(2)
        ortho = (_safe_div(ot.obs, o_denom), ot.pvalue,
                 *orthosteric_contrast([t.per_obs[i] for i, _ in ortho_idx], [t.per_mean[i] for i, _ in ortho_idx],
                                       ot.per_obs, ot.per_mean, tested, gen))

    out = {}
    for i, s in enumerate(STATISTICS):
        pvalue = hd(t.pvalue, i)
        out[s] = StatisticScores(
            name=s, value=hd(_safe_div(t.obs, denom, 0.0), i), null_mean=hd(_safe_div(t.null_mean, denom, 0.0), i),
            null_sd=hd(_safe_div(null_sd, denom, 0.0), i), impact=hd(impact, i),
            snr=hd(_snr(t.obs, t.null_mean, null_sd), i), pvalue=pvalue, pvalue_draws=hd(t.draws, i),
            pvalue_at_floor=hd(t.at_floor, i), pvalue_floor=hd(p_floor, i), qvalue=bh_qvalues(pvalue),
            protein_mean=hd(torch.nanmean(ps, 0), i), protein_sd=hd(prot_sd, i),
            protein_snr=hd(torch.nanmean(pz, 0), i), n_significant=hd(sig.sum(0), i),
            orthosteric=hd(ortho[0], i) if ortho else None, orthosteric_pvalue=hd(ortho[1], i) if ortho else None,
            specificity=hd(ortho[2], i) if ortho else None,
            specificity_pvalue=hd(ortho[3], i) if ortho else None,
            specificity_qvalue=bh_qvalues(hd(ortho[3], i)) if ortho else None,
        )
    confident_mass = torch.stack(mass_denoms).sum(0)
    return HeadScores(out["p_alpha"], out["mass"], confident.reshape(shape), testable_hd.reshape(shape), n_used,
                      null, int(min_confident), B, len(ortho_idx), log10_floor, confident_mass.reshape(shape),
                      _safe_div(t.obs[HD:], confident_mass, 0.0).reshape(shape), float(q_max), int(max_permutations))


SIGN_FLIP_EXACT = 12  # up to this many proteins the 2^P sign patterns are enumerated
SIGN_FLIP_DRAWS = 9999


def orthosteric_contrast(a_obs: list, a_mean: list, o_obs: list, o_mean: list, tested: torch.Tensor,
                         gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The orthosteric contrast over proteins that have both labels (lists parallel over them, each
    [S]): ``log2(allosteric impact / orthosteric impact)`` with both impacts (observed / null mean)
    pooled over the SAME proteins, and a one-sided sign-flip p-value for "more enriched on the
    orthosteric residues" from the per-protein differences of impacts ``d_p = impact_allo_p -
    impact_ortho_p`` (assumption: the d_p are independent across proteins and symmetric about 0 when
    a head is equally enriched on both; proteins where the head has no confident attention give
    d_p = 0). p = share of the 2^P sign patterns (enumerated up to 12 proteins, else 9999 random ones,
    (b + 1) / (B + 1)) whose mean is <= the observed mean: its floor is 2^-P (2 proteins: 0.25), so
    with few proteins a contrast is never resolved. NaN for heads that are not tested."""
    obs_a, mean_a = torch.stack(a_obs).sum(0), torch.stack(a_mean).sum(0)
    obs_o, mean_o = torch.stack(o_obs).sum(0), torch.stack(o_mean).sum(0)
    specificity = torch.log2(_ratio(obs_a, mean_a)) - torch.log2(_ratio(obs_o, mean_o))
    d = torch.stack([torch.nan_to_num(_safe_div(oa, ma) - _safe_div(oo, mo), nan=0.0, posinf=0.0, neginf=0.0)
                     for oa, ma, oo, mo in zip(a_obs, a_mean, o_obs, o_mean)])  # [P, S]
    P = d.shape[0]
    observed = d.mean(0)
    if P <= SIGN_FLIP_EXACT:
        patterns = torch.tensor(list(itertools.product((1.0, -1.0), repeat=P)), dtype=torch.float64)
        means = patterns @ d / P
        p = (means <= observed + 1e-12 * (observed.abs() + 1)).double().mean(0)
    else:
        patterns = torch.randint(0, 2, (SIGN_FLIP_DRAWS, P), generator=gen).double() * 2 - 1
        means = patterns @ d / P
        b = (means <= observed + 1e-12 * (observed.abs() + 1)).double().sum(0)
        p = (b + 1) / (SIGN_FLIP_DRAWS + 1)
    return specificity, torch.where(tested, p, torch.full_like(p, float("nan")))


def _nanstd(x: torch.Tensor) -> torch.Tensor:
    """Sample standard deviation (ddof=1) along dim 0, ignoring NaN."""
    ok = ~torch.isnan(x)
    n = ok.sum(0).double()
    mean = torch.nanmean(x, 0)
    sq = torch.where(ok, (x - mean) ** 2, torch.zeros_like(x)).sum(0)
    return (sq / (n - 1).clamp_min(1)).sqrt()
