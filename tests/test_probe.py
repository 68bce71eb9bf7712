"""The probe: metrics against scikit-learn, splits, features, optimizer, and the planted-signal proof."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef, roc_auc_score

from allo_lightning.config import HeadsConfig, ProbeConfig
from allo_lightning.data import Protein
from allo_lightning.probe import (
    FeatureSpec,
    ProbeModule,
    best_f1_threshold,
    build_net,
    check,
    compute_metrics,
    head_spec,
    items_of,
    kfold,
    leave_one_out,
    train_probe,
    train_val_test,
    window_features,
)
from allo_lightning.workflow import fit_split

from .conftest import CPU, fake_stats, random_proteins


def _scores(seed=0, n_prot=5, length=60):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n_prot * length, generator=g) < 0.1).long()
    y[::length] = 1  # every protein has a site
    s = (torch.rand(n_prot * length, generator=g) + 0.4 * y).clamp(0, 1)
    idx = torch.arange(n_prot).repeat_interleave(length)
    return s, y, idx


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_sklearn(seed):
    s, y, idx = _scores(seed)
    t = 0.6
    m = compute_metrics(s, y, idx, threshold=t, top_k=5)
    sn, yn, ix = s.numpy().astype(np.float64), y.numpy(), idx.numpy()
    assert m["auprc"] == pytest.approx(average_precision_score(yn, sn), abs=1e-5)
    assert m["auroc"] == pytest.approx(roc_auc_score(yn, sn), abs=1e-5)
    pred = (sn >= t).astype(int)
    assert m["f1"] == pytest.approx(f1_score(yn, pred), abs=1e-5)
    assert m["mcc"] == pytest.approx(matthews_corrcoef(yn, pred), abs=1e-5)
    per = {"precision_at_k": [], "r_precision": [], "protein_auprc": [], "protein_auroc": []}
    for p in np.unique(ix):
        yp, sp = yn[ix == p], sn[ix == p]
        order = np.argsort(-sp, kind="stable")
        per["precision_at_k"].append(yp[order[:5]].mean())
        per["r_precision"].append(yp[order[: yp.sum()]].mean())
        per["protein_auprc"].append(average_precision_score(yp, sp))
        per["protein_auroc"].append(roc_auc_score(yp, sp))
    for k, v in per.items():
        assert m[k] == pytest.approx(float(np.mean(v)), abs=1e-5), k


def test_best_f1_threshold_is_best():
    s, y, _ = _scores(3)
    t = best_f1_threshold(s, y)
    best = max(f1_score(y.numpy(), (s.numpy() >= c).astype(int)) for c in np.unique(s.numpy()))
    assert f1_score(y.numpy(), (s.numpy() >= t).astype(int)) == pytest.approx(best, abs=1e-9)


def _clustered(n=20, seed=0):
    ps = random_proteins(n, seed=seed)
    rng = random.Random(seed)
    out = []
    for p in ps:  # clusters of uneven size; a few proteins without cluster
        c = None if rng.random() < 0.2 else f"C{rng.randint(0, 5)}"
        out.append(Protein(p.id, p.sequence, p.sites, cluster=c))
    return out


def _clusters(ps):
    return {p.cluster or f"id:{p.id}" for p in ps}


@pytest.mark.parametrize("seed", range(5))
def test_splits_never_share_a_cluster(seed):
    ps = _clustered(seed=seed)
    splits = [train_val_test(ps, "cluster", 0.2, 0.2, seed)] + kfold(ps, 4, "cluster", 0.2, seed)
    splits += leave_one_out(ps, "cluster", 0.2, seed)
    for sp in splits:
        a, b, c = _clusters(sp.train), _clusters(sp.val), _clusters(sp.test)
        assert not (a & b) and not (a & c) and not (b & c), sp.name
        assert len(sp.train) + len(sp.val) + len(sp.test) == len(ps)
    folds = kfold(ps, 4, "cluster", 0.2, seed)
    tested = [p.id for f in folds for p in f.test]
    assert sorted(tested) == sorted(p.id for p in ps)  # every protein tested exactly once


@pytest.mark.parametrize("by", ["cluster", "protein"])
def test_a_sequence_under_two_ids_is_never_trained_on_and_tested(by):
    """The same sequence under another id (the bundled ASD table has 4 such sets, e.g. Q76353, F2WR39 and
    F2WR52; with --probe.split protein they were dealt out independently) or in another cluster lands in
    one part of every split; check() refuses a split that shares one."""
    rng = random.Random(0)
    seqs = ["".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(40)) for _ in range(10)]
    ps = [Protein(f"P{i}", seqs[i], sites=(3, 4), cluster=f"c{i}") for i in range(10)]
    ps += [Protein("dupA", seqs[0], sites=(3, 4), cluster="other"), Protein("dupB", seqs[0], sites=(5,))]
    for seed in range(10):
        for sp in [train_val_test(ps, by, 0.2, 0.2, seed), *kfold(ps, 4, by, 0.2, seed),
                   *leave_one_out(ps, by, 0.2, seed)]:
            parts = [{p.sequence for p in part} for part in (sp.train, sp.val, sp.test)]
            assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2]), sp.name
    sp = train_val_test(ps[:10] + ps[11:], by, 0.2, 0.2, 0)
    where = next(part for part in (sp.train, sp.val, sp.test) if any(p.id == "P0" for p in part))
    other = sp.val if where is sp.train else sp.train
    leaked = type(sp)(*(part + [ps[10]] if part is other else part for part in (sp.train, sp.val, sp.test)))
    with pytest.raises(AssertionError, match="sequence"):  # dupA: P0's sequence, its own id and cluster
        check(leaked, by)


@pytest.mark.parametrize("by", ["cluster", "protein"])
def test_group_keys_of_test_proteins_are_their_split_groups(by):
    """The report's unit (intervals, swaps) is group_keys of a fold's test proteins: it must be the split's group,
    so one sequence under two ids or clusters is one unit (group_of alone made dupA, dupB and P0 three units that
    were swapped and resampled independently, although their scores are the same residues')."""
    from allo_lightning.probe.splits import _groups, group_keys

    rng = random.Random(1)
    seqs = ["".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(40)) for _ in range(10)]
    ps = [Protein(f"P{i}", seqs[i], sites=(3, 4), cluster=f"c{i % 7}") for i in range(10)]
    ps += [Protein("dupA", seqs[0], sites=(3, 4), cluster="other"), Protein("dupB", seqs[0], sites=(5,)),
           Protein("lone", seqs[9] + "A", sites=(2,))]
    for seed in range(5):
        group = {p.id: i for i, g in enumerate(_groups(ps, by, seed)) for p in g}
        for sp in kfold(ps, 3, by, 0.2, seed):
            keys = group_keys(sp.test, by)
            for a, ka in zip(sp.test, keys):
                for b, kb in zip(sp.test, keys):
                    assert (ka == kb) == (group[a.id] == group[b.id]), (sp.name, a.id, b.id)
    keys = dict(zip([p.id for p in ps], group_keys(ps, by)))
    assert keys["P0"] == keys["dupA"] == keys["dupB"] and keys["lone"] != keys["P9"]


def test_check_catches_a_shared_cluster():
    ps = _clustered()
    sp = train_val_test(ps, "cluster", 0.2, 0.2, 0)
    leaked = type(sp)(sp.train + sp.test[:1], sp.val, sp.test)
    with pytest.raises(AssertionError):
        check(leaked, "cluster")


def test_features_standardised_on_training_proteins_only():
    ps = random_proteins(6)
    items = [(p, fake_stats(p)) for p in ps]
    spec = FeatureSpec("heads", [(0, 1), (1, 2)], ("received", "mass"), log1p=True, window=1).fit(items[:3])
    raw = torch.cat([spec.raw(p, s) for p, s in items[:3]])
    assert torch.allclose(spec.mean, raw.mean(0), atol=1e-5)
    assert torch.allclose(spec.std, raw.std(0, unbiased=False), atol=1e-5)
    x = spec(*items[4])
    assert x.shape == (ps[4].length, 4 * 3) and spec.n_features == 12
    assert torch.allclose(x[1:-1, 4:8], ((spec.raw(*items[4]).clone() - spec.mean) / spec.std)[1:-1])
    w = window_features(torch.arange(6.0).reshape(3, 2), 1)
    assert w.tolist() == [[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 0, 0]]


def test_only_probe_parameters_in_the_optimizer():
    for kind in ("logreg", "mlp"):
        net = build_net(kind, 7, hidden=8)
        module = ProbeModule(net, pos_weight=9.0)
        opt = module.configure_optimizers()
        got = {id(p) for g in opt.param_groups for p in g["params"]}
        assert got == {id(p) for p in net.parameters()}
        assert not any(isinstance(m, torch.nn.Module) and "backbone" in n for n, m in module.named_modules())


def test_probe_seeded_and_learns_a_simple_signal():
    ps = random_proteins(12, lo=40, hi=80, seed=1)
    stats = {}
    for p in ps:
        s = fake_stats(p)
        s.received[0, 1] += torch.as_tensor(p.labels(), dtype=torch.float32) * 2.0  # head (0, 1) sees sites
        stats[p.id] = s
    sp = train_val_test(ps, "protein", 0.25, 0.25, 0)
    # 3 batches per epoch: 15 epochs (45 steps) left the MLP short of converging (test AUPRC 0.77)
    cfg = ProbeConfig(kind="mlp", hidden=8, window=1, batch_size=128, max_epochs=60, patience=10)
    runs = [train_probe(head_spec([(0, 1), (1, 0)], cfg), items_of(sp.train, stats), items_of(sp.val, stats),
                        items_of(sp.test, stats), cfg, seed=3, trainer_kwargs=CPU) for _ in range(2)]
    assert runs[0].test["auprc"] > 0.8 > runs[0].test["base_rate"] * 3
    assert torch.equal(runs[0].test_scores, runs[1].test_scores)  # seeded: identical


# -- the planted-signal proof -------------------------------------------------------------------------------

PLANTED = (0, 1)


def planted_backbone():
    """Tiny ESM-C whose head PLANTED attends to W. Every other head is made identity-blind (its k_ln
    gains set to 0: uniform attention): in a random tiny model each head's received attention depends on
    the key's residue type (layer-0 keys are token embeddings), so random heads would decode W too and
    could not serve as the no-signal control."""
    from allo_lightning.backbone import load_backbone
    from tests.planted import plant_residue_head

    bb = load_backbone("tiny", seed=0)
    dh = bb.model.transformer.blocks[0].attn.d_head
    with torch.no_grad():
        for layer, block in enumerate(bb.model.transformer.blocks):
            for h in range(bb.n_heads):
                if (layer, h) != PLANTED:
                    block.attn.k_ln.weight[h * dh:(h + 1) * dh] = 0.0
    return plant_residue_head(bb, *PLANTED, residue="W")


def w_proteins(n=24, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        seq = [rng.choice("ACDEFGHIKLMNPQRSTVY") for _ in range(rng.randint(40, 90))]
        for j in rng.sample(range(len(seq)), rng.randint(2, 5)):
            seq[j] = "W"
        seq = "".join(seq)
        out.append(Protein(f"P{i}", seq, tuple(j + 1 for j, c in enumerate(seq) if c == "W"), cluster=f"C{i // 2}"))
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from allo_lightning.attention import extract

    bb = planted_backbone()
    ps = w_proteins()
    ex = extract(ps, bb, theta=0.3, cache_dir=tmp_path_factory.mktemp("cache"), trainer_kwargs=CPU)
    return bb, ps, {p.id: s for p, s in ex}


def test_planted_head_is_found_and_probe_beats_random_heads(planted):
    bb, ps, stats = planted
    split = train_val_test(ps, "cluster", 0.2, 0.3, 0)
    pcfg = ProbeConfig(batch_size=256, max_epochs=30, patience=5)
    result = fit_split(split, stats, pcfg, HeadsConfig(strategy="top_k", top_k=1, n_permutations=200), 0, CPU)
    assert result.choice.heads == [PLANTED]
    test = result.run.test
    assert test["auprc"] >= 0.9, test
    others = [(ly, h) for ly in range(bb.n_layers) for h in range(bb.n_heads) if (ly, h) != PLANTED]
    for seed in range(2):
        heads = random.Random(seed).sample(others, 3)
        run = train_probe(head_spec(heads, pcfg), items_of(split.train, stats), items_of(split.val, stats),
                          items_of(split.test, stats), pcfg, 0, CPU)
        assert run.test["auprc"] < max(0.2, 2 * run.test["base_rate"]), (heads, run.test)


# -- one scoring path, undefined metrics, calibration -------------------------------------------------------------

def _signal_split(n=12, seed=1):
    ps = random_proteins(n, lo=40, hi=80, seed=seed)
    stats = {}
    for p in ps:
        s = fake_stats(p)
        s.received[0, 1] += torch.as_tensor(p.labels(), dtype=torch.float32) * 2.0
        stats[p.id] = s
    return ps, stats, train_val_test(ps, "protein", 0.25, 0.25, 0)


def test_val_and_test_scored_once_by_trainer_predict(monkeypatch):
    """Every val and test residue is scored exactly once, by predict_step; the metrics are those of
    exactly these scores (recomputed with scikit-learn); the threshold is the best-F1 one on them."""
    ps, stats, sp = _signal_split()
    calls = []
    original = ProbeModule.predict_step

    def counting(self, batch, batch_idx):
        calls.append(len(batch[0]))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ProbeModule, "predict_step", counting)
    cfg = ProbeConfig(batch_size=128, max_epochs=8, patience=3)
    run = train_probe(head_spec([(0, 1), (1, 0)], cfg), items_of(sp.train, stats), items_of(sp.val, stats),
                      items_of(sp.test, stats), cfg, seed=0, trainer_kwargs=CPU)
    n_val, n_test = sum(p.length for p in sp.val), sum(p.length for p in sp.test)
    assert sum(calls) == n_val + n_test  # nothing scored twice, nothing outside Lightning
    with torch.no_grad():
        direct = torch.sigmoid(run.module.net.eval()(run.test_set.x))
    assert torch.allclose(run.test_scores, direct, atol=1e-6)
    assert run.threshold == best_f1_threshold(run.val_scores, run.val_set.y)
    for stage, scores, data in (("val", run.val_scores, run.val_set), ("test", run.test_scores, run.test_set)):
        m = getattr(run, stage)
        y, s = data.y.numpy(), scores.numpy().astype(np.float64)
        assert m["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-5), stage
        assert m["f1"] == pytest.approx(f1_score(y, (s >= run.threshold).astype(int)), abs=1e-5), stage
        assert m["base_rate"] == pytest.approx(y.mean())


def test_test_set_without_a_site_gives_undefined_metrics(tmp_path):
    from allo_lightning.outputs import write_json
    from allo_lightning.probe import undefined_warning

    ps, stats, sp = _signal_split()
    no_site = [Protein(p.id, p.sequence, (), cluster=p.cluster) for p in sp.test]
    cfg = ProbeConfig(batch_size=128, max_epochs=3, patience=3)
    run = train_probe(head_spec([(0, 1)], cfg), items_of(sp.train, stats), items_of(sp.val, stats),
                      [(p, stats[p.id]) for p in no_site], cfg, seed=0, trainer_kwargs=CPU)
    assert run.test["base_rate"] == 0
    for key in ("auprc", "auroc", "f1", "mcc", "precision_at_k", "protein_auprc"):
        assert math.isnan(run.test[key]), key  # undefined, never 0
    assert not any(math.isnan(v) for v in run.val.values())
    warning = undefined_warning(run.test, "the test proteins")
    assert warning and "auprc" in warning and "null" in warning
    assert undefined_warning(run.val, "val") is None
    saved = json.loads(write_json(tmp_path / "m.json", run.test).read_text())
    assert saved["auprc"] is None and saved["base_rate"] == 0
    # no negative residue: auroc and mcc undefined, auprc defined
    m = compute_metrics(torch.tensor([0.2, 0.9]), torch.tensor([1, 1]), torch.tensor([0, 0]))
    assert math.isnan(m["auroc"]) and math.isnan(m["mcc"]) and m["auprc"] == pytest.approx(1.0)


def test_validation_without_a_site_is_refused():
    from allo_lightning.errors import InputError

    ps, stats, sp = _signal_split()
    no_site = [(Protein(p.id, p.sequence, ()), stats[p.id]) for p in sp.val]
    cfg = ProbeConfig(batch_size=128, max_epochs=2)
    with pytest.raises(InputError, match="validation proteins .* no allosteric site"):
        train_probe(head_spec([(0, 1)], cfg), items_of(sp.train, stats), no_site, [], cfg, trainer_kwargs=CPU)


def test_holdout_without_test_set():
    ps = _clustered(seed=3)
    sp = train_val_test(ps, "cluster", 0.2, 0.0, 0)
    assert sp.test == [] and sp.val and sorted(p.id for p in sp.train + sp.val) == sorted(p.id for p in ps)
    assert not _clusters(sp.train) & _clusters(sp.val)
    with_test = train_val_test(ps, "cluster", 0.2, 0.2, 0)
    assert with_test.test  # a positive fraction still carves a test set


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_matches_sklearn_and_is_monotone(method):
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    from allo_lightning.probe import Calibration

    g = torch.Generator().manual_seed(0)
    y = (torch.rand(2000, generator=g) < 0.05).long()
    # a class-weighted classifier's scores: high for sites, but far above the 5 % base rate
    s = torch.sigmoid(torch.randn(2000, generator=g) + 2.0 * y + 1.5)
    cal = Calibration.fit(s, y, method)
    p = cal(s).double().numpy()
    sn, yn = s.double().numpy(), y.numpy()
    if method == "platt":
        z = np.log(sn) - np.log1p(-sn)
        want = LogisticRegression(C=1e6, max_iter=1000).fit(z[:, None], yn).predict_proba(z[:, None])[:, 1]
    else:
        want = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(sn, yn).predict(sn)
    assert np.allclose(p, want, atol=1e-5)
    order = np.argsort(sn)
    assert (np.diff(p[order]) >= -1e-7).all()  # monotone: ranking and threshold semantics unchanged
    assert abs(p.mean() - yn.mean()) < 0.01 < abs(sn.mean() - yn.mean())  # calibrated, the raw score is not
    again = Calibration.from_config(json.loads(json.dumps(cal.to_config())))
    assert torch.equal(again(s), cal(s))
    assert Calibration.fit(s, torch.zeros_like(y), method) is None  # one class: nothing to calibrate
    # scores that rank the sites backwards: Platt does not invert the ranking, it gives the base rate
    if method == "platt":
        flat = Calibration.fit(1 - s, y, method)(1 - s)
        assert torch.allclose(flat, torch.full_like(flat, float(y.float().mean())), atol=1e-6)


def test_probe_package_does_not_choose_heads():
    """probe/ knows feature specs and head lists; choosing heads (the analysis) lives in workflow.py."""
    import ast
    from pathlib import Path

    import allo_lightning.probe as probe_pkg

    for path in Path(probe_pkg.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert "analysis" not in (node.module or ""), f"{path.name} imports {node.module}"
    assert not hasattr(probe_pkg, "select_heads") and not hasattr(probe_pkg, "fit_split")


# -- calibration: reliability with a planted signal, collapse said (newcomer's 0.0297 for every residue) ----------

def _reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean predicted, observed rate, size) per quantile bin of the predicted probability."""
    order = np.argsort(p, kind="stable")
    return [(float(p[b].mean()), float(y[b].mean()), len(b)) for b in np.array_split(order, bins)]


def _reliable(p: np.ndarray, y: np.ndarray) -> bool:
    """Every bin's mean prediction within 4 binomial sd (+0.01 for the fit's own error) of its observed rate."""
    return all(abs(m - o) <= 4 * math.sqrt(max(o * (1 - o), 1e-4) / n) + 0.01 for m, o, n in _reliability(p, y))


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_is_reliable_on_fresh_residues_with_a_planted_signal(method):
    """True P(site | score) known (logistic in logit(score), sites ~6 %); fitted on 5000 'validation' residues,
    the map is non-constant, monotone and reliable per bin on 50000 fresh ones. Controls: the raw score and a
    map fitted on other labels fail the same check."""
    from allo_lightning.probe import Calibration

    rng = np.random.default_rng(0)

    def draw(n, intercept=-3.5):
        s = 1 / (1 + np.exp(-(rng.normal(0.5, 1.5, n))))  # a class-weighted probe: scores far above the base rate
        z = np.log(s) - np.log1p(-s)
        return torch.from_numpy(s), torch.from_numpy((rng.random(n) < 1 / (1 + np.exp(-(1.3 * z + intercept))))
                                                     .astype(np.int64))

    (sv, yv), (st, yt) = draw(5000), draw(50000)
    cal = Calibration.fit(sv, yv, method)
    p, y = cal(st).double().numpy(), yt.numpy()
    assert cal.collapsed is None and cal.warning is None and "COLLAPSED" not in cal.meaning
    assert len(np.unique(p)) >= 5 and p.max() - p.min() > 0.3  # it separates residues
    order = np.argsort(st.numpy())
    assert (np.diff(p[order]) >= -1e-7).all()  # monotone in the score
    assert _reliable(p, y), _reliability(p, y)
    assert not _reliable(st.numpy(), y)  # the raw score is not a probability
    so, yo = draw(5000, intercept=-1.5)  # other proteins, other base rate: a map fitted there is off here
    assert not _reliable(Calibration.fit(so, yo, method)(st).double().numpy(), y)


def test_collapsed_calibration_is_said_with_its_value_and_reason():
    from allo_lightning.probe import Calibration
    from allo_lightning.probe.calibration import PROBABILITY_MEANING

    g = torch.Generator().manual_seed(0)
    y = (torch.rand(500, generator=g) < 0.05).long()
    s = torch.sigmoid(torch.randn(500, generator=g) + 2.0 * y)
    rate = float(y.float().mean())
    for method in ("platt", "isotonic"):
        good = Calibration.fit(s, y, method)
        assert good.collapsed is None and good.warning is None
        assert good.meaning == PROBABILITY_MEANING.format(method=method, n_pos=good.n_pos, n=good.n)
        flat = Calibration.fit(1 - s, y, method)  # scores that rank the sites backwards: the base rate for all
        probs = flat(1 - s)
        assert flat.levels == 1 and torch.allclose(probs, torch.full_like(probs, rate), atol=1e-6)
        assert flat.warning.startswith("warning: the calibrated probability is constant: ")
        assert f"{rate:.4g} for every residue" in flat.warning and f"{int(y.sum())} sites among 500" in flat.warning
        assert "COLLAPSED: the calibrated probability is constant" in flat.meaning
        again = Calibration.from_config(json.loads(json.dumps(flat.to_config())))  # a saved checkpoint says so too
        assert again.warning == flat.warning
    two = Calibration.from_config({"method": "isotonic", "params": {"x": [0.1, 0.5, 0.6, 0.9],
                                                                    "y": [0.02, 0.02, 0.3, 0.3]}, "n": 9, "n_pos": 2})
    assert two.levels == 2 and "only 2 distinct probabilities (0.02, 0.3)" in two.warning


def test_calibration_fitted_on_validation_only_and_collapse_logged_by_fit_split(caplog):
    """train_probe's calibration is sklearn's fit on the VALIDATION scores and labels (not test's); a planted
    signal gives non-constant, monotone probabilities, calibrated in the large on the test proteins. When the
    validation proteins' signal is reversed, the map collapses and fit_split (the notebook API) warns."""
    from sklearn.linear_model import LogisticRegression

    from allo_lightning.probe import Calibration

    ps = random_proteins(40, lo=40, hi=80, seed=1)
    stats = {}
    for p in ps:
        s = fake_stats(p)
        s.received[0, 1] += torch.as_tensor(p.labels(), dtype=torch.float32) * 0.4
        stats[p.id] = s
    sp = train_val_test(ps, "protein", 0.3, 0.3, 0)
    cfg = ProbeConfig(batch_size=128, max_epochs=8, patience=3)
    spec = head_spec([(0, 1)], cfg)
    with caplog.at_level("WARNING", logger="allo_lightning"):
        run = fit_split(sp, stats, cfg, None, trainer_kwargs=CPU, spec=spec).run
    assert not [r for r in caplog.records if "calibrat" in r.getMessage()]
    vs, vy = run.val_scores.double().numpy(), run.val_set.y.numpy()
    z = np.log(vs) - np.log1p(-vs)
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(z[:, None], vy)
    assert run.calibration.params == pytest.approx({"a": lr.coef_[0, 0], "b": lr.intercept_[0]}, abs=1e-4)
    assert (run.calibration.n, run.calibration.n_pos) == (len(vy), int(vy.sum()))
    on_test = Calibration.fit(run.test_scores, run.test_set.y, "platt")
    assert on_test.params != pytest.approx(run.calibration.params, abs=1e-3)  # the test set played no part
    p, ts, ty = run.test_probabilities.double().numpy(), run.test_scores.numpy(), run.test_set.y.numpy()
    assert run.calibration.collapsed is None and len(np.unique(p)) > 100
    assert (np.diff(p[np.argsort(ts)]) >= -1e-7).all()
    assert abs(p.mean() - ty.mean()) < 0.04 < abs(ts.mean() - ty.mean())  # calibrated in the large; raw is not
    lo, *_, hi = _reliability(p, ty, bins=4)
    assert hi[0] > lo[0] + 0.1 and hi[1] > lo[1] + 0.1  # predicted and observed rise together
    # reversed signal on the validation proteins: the scores rank them backwards, Platt collapses, and says so
    for p_ in sp.val:
        stats[p_.id].received[0, 1] -= torch.as_tensor(p_.labels(), dtype=torch.float32) * 1.2
    caplog.clear()
    with caplog.at_level("WARNING", logger="allo_lightning"):
        run = fit_split(sp, stats, cfg, None, trainer_kwargs=CPU, spec=spec).run
    said = [r.getMessage() for r in caplog.records if "calibrated probability is constant" in r.getMessage()]
    assert run.calibration.levels == 1 and len(said) == 1 and f"{float(run.val_set.y.float().mean()):.4g}" in said[0]


def _local_identity(a: str, b: str) -> tuple[float, int]:
    """Identity over the aligned pairs of the best local alignment (BLOSUM62, gaps -10/-1), and their number."""
    from biotite.sequence import ProteinSequence
    from biotite.sequence.align import SubstitutionMatrix, align_optimal, get_sequence_identity

    clean = lambda s: "".join(c if c in "ACDEFGHIKLMNPQRSTVWY" else "X" for c in s.upper())  # noqa: E731
    ali = align_optimal(ProteinSequence(clean(a)), ProteinSequence(clean(b)), SubstitutionMatrix.std_protein_matrix(),
                        gap_penalty=(-10, -1), local=True, max_number=1)[0]
    pairs = int(sum(1 for i, j in ali.trace if i >= 0 and j >= 0))
    return float(get_sequence_identity(ali, mode="not_terminal")), pairs


def test_bundled_gpcr_homologs_share_a_cluster():
    """Splits keep homologs apart only through `cluster`: any two bundled GPCRs more than 40 % identical over
    at least 150 aligned residues must share a cluster key (ADORA1 and ADORA2A, 52 %, once did not)."""
    from allo_lightning.data import read_table
    from allo_lightning.data.bundled import bundled_path

    ps = list(read_table(bundled_path("gpcr")))
    close = []
    for i, a in enumerate(ps):
        for b in ps[i + 1:]:
            identity, pairs = _local_identity(a.sequence, b.sequence)
            if identity > 0.40 and pairs >= 150:
                close.append((a.id, b.id, a.cluster, b.cluster, round(identity, 2)))
    assert close, "expected ADORA1/ADORA2A to be found as homologs (is the alignment broken?)"
    assert [c for c in close if c[2] != c[3]] == [], close
