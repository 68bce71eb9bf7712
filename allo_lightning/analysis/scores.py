"""Head scores with a random baseline: closed-form null, vectorised permutation test, BH q-values.

Two statistics are scored for every head, from the per-residue column statistics of
:mod:`allo_lightning.attention.stats` (``count``, ``mass``, ``total``), with S = the protein's sites:

- ``p_alpha`` (Vig et al. 2021): confident attention whose key is a site over all confident
  attention, ``sum_j in S count_j / total``. Pooled over proteins as in their definition:
  ``sum_p sum_j in S_p count_pj / sum_p total_p``;
- ``mass`` (the original Allo-Allo scripts): confident attention *mass* sent to sites over the
  head's confident count, ``sum_j in S mass_j / total`` (pooled the same way).

Random baseline: for each protein, site sets of the same size k drawn without replacement from the
n NON-site residues of that protein. The sum over such a set has mean ``k*mu`` and variance
``k*sigma^2*(n-k)/(n-1)`` (mu, sigma^2: mean and population variance over the non-site residues), so
the null mean / sd of every score is closed form; pooled over proteins the draws are independent,
so means and variances add. The permutation test draws ``n_permutations`` random site sets per
protein once (shared by all heads: one ``embedding_bag`` sum gives every head's null sums) and
compares the observed numerator with the drawn ones.

Keys of the dict returned by :func:`score_heads` (every value a float64 tensor [n_layers, n_heads];
``{s}`` is ``p_alpha`` or ``mass``):

============================  =========================================================================
``{s}``                       pooled observed score
``{s}_null_mean``             pooled random-baseline mean (closed form)
``{s}_null_sd``               pooled random-baseline standard deviation (closed form)
``{s}_impact``                ``{s} / {s}_null_mean`` (inf when only the baseline is 0, NaN when both are)
``{s}_snr``                   ``({s} - {s}_null_mean) / {s}_null_sd``; when the null sd is 0 (e.g. no
                              non-site residue receives confident attention) +-inf if the observed
                              value differs from the null mean (then the p-value is 0: no random set
                              can reach it), else 0
``{s}_pvalue_perm``           one-sided permutation p-value ``(1 + #{draw >= observed}) / (B + 1)``
``{s}_pvalue``                the p-value used for decisions: the permutation p-value, except that
                              when the observed value beats every one of the B draws (the permutation
                              p-value is at its floor 1/(B+1)) the Gaussian tail of the closed-form
                              null, ``min(1/(B+1), 1 - Phi(snr))``, resolves it further. Without this,
                              BH over many heads could never reach q < 0.05 (648 heads, B = 2000:
                              the smallest possible q would be 648/2001 = 0.32)
``{s}_qvalue``                Benjamini-Hochberg q-value of ``{s}_pvalue`` across all heads
``{s}_protein_mean``          mean over proteins of the per-protein score (proteins where the head has
                              no confident attention are left out)
``{s}_protein_sd``            standard deviation (ddof=1) of the per-protein score
``{s}_protein_snr``           mean over proteins of the per-protein SNR against that protein's null
                              (proteins with a non-finite SNR, i.e. a degenerate null, are left out
                              unless all are)
``{s}_n_significant``         number of proteins where the head is significant by itself
                              (per-protein p-value < ``p_max`` and per-protein SNR > ``snr_min``)
``confident``                 pooled confident (query, key) pairs, sum_p total_p
``n_proteins``                proteins that entered the scores (see :func:`usable`)
============================  =========================================================================
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..attention.stats import ProteinStats

STATISTICS = ("p_alpha", "mass")
_SUFFIXES = ("", "_null_mean", "_null_sd", "_impact", "_snr", "_pvalue_perm", "_pvalue", "_qvalue",
             "_protein_mean", "_protein_sd", "_protein_snr", "_n_significant")
SCORE_KEYS = tuple(f"{s}{suf}" for s in STATISTICS for suf in _SUFFIXES) + ("confident", "n_proteins")


def as_labels(labels, length: int | None = None) -> torch.Tensor:
    """0/1 labels (numpy, torch, list) as a bool tensor, checked against ``length``."""
    y = torch.as_tensor(np.asarray(labels)).reshape(-1).bool()
    if length is not None and y.numel() != length:
        raise ValueError(f"labels have length {y.numel()} but the statistics cover {length} residues")
    return y


def usable(labels) -> bool:
    """A protein enters the scores when it has k >= 1 sites and at least k non-site residues (the
    random baseline draws k residues from the non-sites without replacement)."""
    y = as_labels(labels)
    k = int(y.sum())
    return k >= 1 and y.numel() - k >= k


def closed_form_null(values: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sd of the sum of ``values[..., j]`` over k random non-site residues (k = number of
    sites), drawn without replacement. ``values``: [..., L]; returns two tensors [...] (float64)."""
    y = as_labels(labels, values.shape[-1])
    k, n = int(y.sum()), int((~y).sum())
    v = values[..., ~y].double()
    var, mu = torch.var_mean(v, -1, unbiased=False)
    fpc = (n - k) / (n - 1) if n > 1 else 0.0
    return k * mu, (k * var * fpc).clamp_min(0).sqrt()


def random_site_sets(labels, n_draws: int, generator: torch.Generator) -> torch.Tensor:
    """[n_draws, k] residue indices (0-based, into the full protein): each row k distinct non-site
    residues chosen uniformly at random (k = number of sites)."""
    y = as_labels(labels)
    nonsite = torch.nonzero(~y).reshape(-1)
    k, n = int(y.sum()), nonsite.numel()
    if k > 64:  # many sites: top-k of random keys
        keys = torch.rand(n_draws, n, generator=generator)
        return nonsite[keys.topk(k, dim=1, sorted=False).indices]
    # Floyd's algorithm, vectorised over draws: k steps, each uniform on [0, j], replaced by j if taken
    chosen = torch.empty(n_draws, k, dtype=torch.long)
    for step, j in enumerate(range(n - k, n)):
        t = torch.randint(0, j + 1, (n_draws,), generator=generator)
        taken = (chosen[:, :step] == t[:, None]).any(1)
        chosen[:, step] = torch.where(taken, torch.full_like(t, j), t)
    return nonsite[chosen]


def random_subset_sums(values: torch.Tensor, labels, n_draws: int, generator: torch.Generator) -> torch.Tensor:
    """Sums of ``values`` [C, L] over ``n_draws`` random same-size non-site sets: [n_draws, C].
    One ``embedding_bag`` call (a gather-and-sum, no [n_draws, L] one-hot matrix)."""
    idx = random_site_sets(labels, n_draws, generator)
    return torch.nn.functional.embedding_bag(idx, values.float().t().contiguous(), mode="sum")


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


def _normal_sf(z: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(-z)


def _safe_div(a: torch.Tensor, b: torch.Tensor, fill: float = float("nan")) -> torch.Tensor:
    return torch.where(b > 0, a / torch.where(b > 0, b, torch.ones_like(b)), torch.full_like(a, fill))


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b for b >= 0, a >= 0: +inf where b == 0 < a, NaN where both are 0."""
    inf = torch.full_like(a, float("inf"))
    return torch.where(b > 0, a / torch.where(b > 0, b, torch.ones_like(b)),
                       torch.where(a > 0, inf, torch.full_like(a, float("nan"))))


def _snr(obs: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """(obs - mean) / sd; where the null is degenerate (sd == 0): +-inf if obs differs from the
    mean (no random set can reach it), 0 if it equals it."""
    diff = obs - mean
    tol = 1e-9 * (obs.abs() + mean.abs() + 1.0)
    degenerate = torch.where(diff.abs() <= tol, torch.zeros_like(diff), torch.sign(diff) * float("inf"))
    return torch.where(sd > 0, diff / torch.where(sd > 0, sd, torch.ones_like(sd)), degenerate)


def score_heads(
    items: Sequence[tuple[ProteinStats, object]],
    n_layers: int,
    n_heads: int,
    n_permutations: int = 2000,
    seed: int = 0,
    p_max: float = 0.01,
    snr_min: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Score every head of a model over proteins given as ``(ProteinStats, labels)`` pairs (labels:
    0/1 of length L). Returns the dict documented in this module's docstring. Proteins that are not
    :func:`usable` (no sites, or more sites than non-sites) are skipped. Seeded: the same inputs and
    seed give the same p-values."""
    HD = n_layers * n_heads
    S = 2 * HD  # rows 0..HD-1: count (p_alpha), HD..2HD-1: mass
    B = int(n_permutations)
    if B < 1:
        raise ValueError("n_permutations must be at least 1")
    gen = torch.Generator().manual_seed(int(seed))
    obs = torch.zeros(S, dtype=torch.float64)
    null_mean = torch.zeros(S, dtype=torch.float64)
    null_var = torch.zeros(S, dtype=torch.float64)
    confident = torch.zeros(HD, dtype=torch.float64)
    draws_sum = torch.zeros(B, S, dtype=torch.float32)
    per_score, per_snr, per_sig = [], [], []
    for stats, labels in items:
        Ly, H = stats.shape
        if (Ly, H) != (n_layers, n_heads):
            raise ValueError(f"statistics have {Ly} layers x {H} heads, expected {n_layers} x {n_heads}")
        y = as_labels(labels, stats.length)
        if not usable(y):
            continue
        values = torch.cat([stats.count.reshape(HD, -1), stats.mass.reshape(HD, -1)]).float()  # [S, L]
        total = stats.total.reshape(HD).double().repeat(2)  # [S]
        o = values[:, y].double().sum(-1)
        mean, sd = closed_form_null(values, y)
        draws = random_subset_sums(values, y, B, gen)  # [B, S]
        tol = 1e-5 * (o.abs() + 1.0)
        n_ge = (draws >= (o - tol).float()).sum(0).double()
        p_perm = (1.0 + n_ge) / (B + 1.0)
        snr = _snr(o, mean, sd)
        p = torch.where(n_ge == 0, torch.minimum(p_perm, _normal_sf(snr)), p_perm)
        obs += o
        null_mean += mean
        null_var += sd**2
        confident += stats.total.reshape(HD).double()
        draws_sum += draws
        per_score.append(_safe_div(o, total))
        per_snr.append(snr)
        per_sig.append(((p < p_max) & (snr > snr_min)).double())

    n_used = len(per_score)
    denom = confident.repeat(2)
    null_sd = null_var.sqrt()
    tol = 1e-5 * (obs.abs() + 1.0)
    n_ge = (draws_sum >= (obs - tol).float()).sum(0).double()
    p_perm = (1.0 + n_ge) / (B + 1.0)
    snr = _snr(obs, null_mean, null_sd)
    p = torch.where(n_ge == 0, torch.minimum(p_perm, _normal_sf(snr)), p_perm)
    if n_used == 0:
        p_perm = p = torch.ones(S, dtype=torch.float64)
    if n_used:
        ps, pz, sig = torch.stack(per_score), torch.stack(per_snr), torch.stack(per_sig)
    else:
        ps = pz = sig = torch.full((1, S), float("nan"), dtype=torch.float64)
    n_ok = (~torch.isnan(ps)).sum(0)
    prot_sd = torch.where(n_ok > 1, _nanstd(ps), torch.full((S,), float("nan"), dtype=torch.float64))

    columns = {
        "": _safe_div(obs, denom, 0.0),
        "_null_mean": _safe_div(null_mean, denom, 0.0),
        "_null_sd": _safe_div(null_sd, denom, 0.0),
        "_impact": _ratio(obs, null_mean),
        "_snr": snr,
        "_pvalue_perm": p_perm,
        "_pvalue": p,
        "_protein_mean": torch.nanmean(ps, 0),
        "_protein_sd": prot_sd,
        "_protein_snr": _finite_mean(pz),
        "_n_significant": torch.nan_to_num(sig, nan=0.0).sum(0),
    }
    out: dict[str, torch.Tensor] = {}
    for i, s in enumerate(STATISTICS):
        for suffix, col in columns.items():
            out[f"{s}{suffix}"] = col[i * HD : (i + 1) * HD].reshape(n_layers, n_heads).clone()
        out[f"{s}_qvalue"] = bh_qvalues(out[f"{s}_pvalue"])
    out["confident"] = confident.reshape(n_layers, n_heads)
    out["n_proteins"] = torch.full((n_layers, n_heads), float(n_used), dtype=torch.float64)
    return {k: out[k] for k in SCORE_KEYS}


def _finite_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean along dim 0 over finite entries; where none is finite, the mean of the others (+-inf/NaN)."""
    finite = torch.isfinite(x)
    m = torch.nanmean(torch.where(finite, x, torch.full_like(x, float("nan"))), 0)
    return torch.where(finite.any(0), m, torch.nanmean(x, 0))


def _nanstd(x: torch.Tensor) -> torch.Tensor:
    """Sample standard deviation (ddof=1) along dim 0, ignoring NaN."""
    ok = ~torch.isnan(x)
    n = ok.sum(0).double()
    mean = torch.nanmean(x, 0)
    sq = torch.where(ok, (x - mean) ** 2, torch.zeros_like(x)).sum(0)
    return (sq / (n - 1).clamp_min(1)).sqrt()

