"""fit and predict commands end to end, in-process, on the tiny backbone (CPU, offline)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re

import pytest
from biotite.structure.io.pdb import PDBFile

from allo_lightning import fit, predict

from .conftest import REPO, common, random_proteins, write_table
from .test_tables import assert_table_policy


def documented(name: str, starts: str) -> set[str]:
    """The names in backticks of the README's Outputs row of file ``name`` whose text starts with ``starts``."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` | {starts}"))
    return set(re.findall(r"`([A-Za-z0-9_]+)`", row))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One fit shared by the tests of this module (each writes to its own output folder)."""
    tmp_path = tmp_path_factory.mktemp("fitted")
    table = write_table(tmp_path / "train.tsv", random_proteins(12, lo=30, hi=60, seed=2))
    args = common(tmp_path, table) + ["--trainer.default_root_dir", str(tmp_path / "run"),
                                      "--probe.checkpoint_dir", str(tmp_path / "ckpts")]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        metrics = fit.main(args)
    return tmp_path, args, metrics, buffer.getvalue()


def test_fit_writes_metrics_checkpoint_and_says_so(fitted):
    tmp_path, args, metrics, out = fitted
    last = out.strip().splitlines()[-1]
    assert last.startswith("checkpoint: ")
    ckpt = tmp_path / "ckpts" / "run.tiny.safetensors"
    assert last == f"checkpoint: {ckpt}" and ckpt.is_file()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("auprc", "auroc", "base_rate", "f1", "mcc", "precision_at_k", "threshold", "heads"):
        assert key in saved
    assert 0 < saved["base_rate"] < 1 and saved["meaningless"] is True and "NOTHING" in saved["note"]
    assert set(saved) - documented("metrics.json", "test `auprc`") == set()  # the README names every key
    # the terminal names its numbers: "20 epochs (best 14)" read as the 14th epoch (best_epoch is 0-based)
    assert (f"{saved['epochs']} epochs (weights kept: epoch {saved['best_epoch']}, counted from 0)" in out
            and f"precision@{saved['config']['probe']['top_k']} {saved['precision_at_k']:.3f} (mean per protein)"
            in out), out
    analysis = saved["head_analysis"]  # its backbone and theta are the run's (they were null)
    assert (analysis["backbone_identity"], analysis["theta"]) == (saved["backbone_identity"], saved["theta"])
    assert analysis["backbone_identity"].startswith("tiny-") and analysis["theta"] == 0.3
    assert "NOTHING" in out
    assert (tmp_path / "run" / "pr_curve.png").stat().st_size > 0
    assert "test_scores.csv" in assert_table_policy(tmp_path / "run")  # one formatting policy (tables.py)
    ids = saved["split"]
    assert not set(ids["train"]) & set(ids["test"]) and not set(ids["val"]) & set(ids["test"])


def test_fit_refuses_to_overwrite(fitted, capsys):
    tmp_path, args, *_ = fitted
    with pytest.raises(SystemExit) as e:
        fit.main(args)
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_predict_round_trip_matches_fit_scores(fitted, capsys):
    tmp_path, args, metrics, _ = fitted
    ckpt = tmp_path / "ckpts" / "run.tiny.safetensors"
    test_ids = set(metrics["split"]["test"])
    rows = list(csv.DictReader((tmp_path / "run" / "test_scores.csv").open()))
    seqs = {}
    for r in rows:
        seqs.setdefault(r["id"], []).append(r["residue"])
    fasta = tmp_path / "new.fasta"
    fasta.write_text("".join(f">{i} some description\n{''.join(s).lower()}\n" for i, s in seqs.items()))
    pargs = ["--checkpoint", str(ckpt), "--fasta", str(fasta), "--out", str(tmp_path / "pred"),
             "--model.cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "cpu",
             "--trainer.enable_progress_bar", "false"]
    predict.main(pargs)
    captured = capsys.readouterr()
    out = captured.out
    pred = list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    assert list(pred[0]) == ["id", "position", "residue", "score", "probability", "rank", "predicted", "windowed"]
    assert {r["windowed"] for r in pred} == {"0"}  # short proteins: one window, not marked
    assert {r["id"] for r in pred} == test_ids
    want = {(r["id"], int(r["position"])): (float(r["score"]), float(r["probability"])) for r in rows}
    for r in pred:
        assert float(r["score"]) == pytest.approx(want[(r["id"], int(r["position"]))][0], abs=1e-5)
        assert float(r["probability"]) == pytest.approx(want[(r["id"], int(r["position"]))][1], abs=1e-5)
    info = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert "not a probability" in info["score_meaning"]["score"].lower()
    # a constant probability column is said, in predictions.json and on stderr (once)
    constant = len({r["probability"] for r in pred}) == 1
    assert ("COLLAPSED" in info["score_meaning"]["probability"]) == constant
    assert captured.err.count("probability column: the calibrated probability is constant") == int(constant)
    first = [r for r in pred if r["id"] == pred[0]["id"]]
    assert [int(r["position"]) for r in first] == list(range(1, len(first) + 1))  # 1-based
    assert sorted(int(r["rank"]) for r in first) == list(range(1, len(first) + 1))
    top = max(first, key=lambda r: float(r["score"]))
    assert top["rank"] == "1" and f"{top['residue']}{top['position']}" in out
    pid = pred[0]["id"]
    pml = (tmp_path / "pred" / "pymol" / f"{pid}.pml").read_text()
    score1 = float(first[0]["score"])
    pct1 = (len(first) - int(first[0]["rank"])) / (len(first) - 1)  # colour: within-protein percentile
    assert f"alter allo_{pid} and chain A and resi 1, b={pct1:.4f}" in pml  # chain-qualified, sequence numbers
    assert "positions in the input sequence, on chain A" in pml and "meaningless" in pml
    cxc = (tmp_path / "pred" / "chimerax" / f"{pid}.cxc").read_text()
    assert f"setattr #1/A:1 residues allo_score {score1:.4f} create true" in cxc
    assert not (tmp_path / "pred" / "chimerax" / f"{pid}.defattr").exists()
    assert (tmp_path / "pred" / "plots" / f"{pid}.png").read_bytes()[:4] == b"\x89PNG"
    assert {"predictions.csv", "proteins.csv", "sites.csv"} <= set(assert_table_policy(tmp_path / "pred"))
    _predict_awkward_ids_distinct_files_and_overwrite_removes_stale_ones(tmp_path)


def test_predict_refuses_other_backbone(fitted, capsys):
    tmp_path, *_ = fitted
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACDEFGHIKLMNPQRSTVWY\n")
    base = ["--checkpoint", str(tmp_path / "ckpts" / "run.tiny.safetensors"), "--fasta", str(fasta),
            "--model.cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "cpu"]
    with pytest.raises(SystemExit) as e:
        predict.main(base + ["--out", str(tmp_path / "p1"), "--model.backbone", "esm2_tiny"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "run.tiny.safetensors" in err and "'tiny'" in err and "esm2_tiny" in err
    with pytest.raises(SystemExit):
        predict.main(base + ["--out", str(tmp_path / "p2"), "--model.seed", "1"])  # other weights
    assert "other weights" in capsys.readouterr().err
    assert not (tmp_path / "p2" / "predictions.csv").exists()


def _predict_awkward_ids_distinct_files_and_overwrite_removes_stale_ones(tmp_path):
    """(issue 9; part of the round-trip test, to share its fit) ids with commas, formulas and ids that collide
    after sanitising: exact ids back from predictions.csv, one script each, the mapping in predictions.json;
    --overwrite with other proteins leaves no stale script and keeps unrelated files."""
    import json

    from allo_lightning.tables import read_csv

    ckpt = tmp_path / "ckpts" / "run.tiny.safetensors"
    ids = ["a/b", "a:b", "a_b", "=HYPERLINK(x),1"]  # FASTA ids are one word: no spaces
    ps = random_proteins(len(ids), lo=20, hi=30, seed=9)
    fasta = tmp_path / "awkward.fasta"
    fasta.write_text("".join(f">{i}\n{p.sequence}\n" for i, p in zip(ids, ps)))
    out = tmp_path / "pred_awkward"
    base = ["--checkpoint", str(ckpt), "--out", str(out), "--model.cache_dir", str(tmp_path / "cache"),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    info = predict.main(base + ["--fasta", str(fasta)])
    rows = read_csv(out / "predictions.csv")
    assert list(dict.fromkeys(r["id"] for r in rows)) == ids  # exact ids back, in order
    assert sum(len(p.sequence) for p in ps) == len(rows)
    raw = (out / "predictions.csv").read_text()
    assert "\n=HYPERLINK" not in raw and "'=HYPERLINK" in raw  # neutralised for spreadsheets
    names = info["file_names"]
    assert list(names) == ids and len(set(names.values())) == len(ids)
    assert sorted(p.name for p in (out / "pymol").iterdir()) == sorted(f"{n}.pml" for n in names.values())
    assert json.loads((out / "predictions.json").read_text())["file_names"] == names
    for pid, name in names.items():
        assert pid in (out / "pymol" / f"{name}.pml").read_text()

    (out / "pymol" / "mine.pml").write_text("a user's file")  # unrelated: must survive
    one = tmp_path / "one.fasta"
    one.write_text(f">Q1\n{ps[0].sequence}\n")
    predict.main(base + ["--fasta", str(one), "--overwrite"])
    assert sorted(p.name for p in (out / "pymol").iterdir()) == ["Q1.pml", "mine.pml"]  # no stale script
    assert sorted(p.name for p in (out / "chimerax").iterdir()) == ["Q1.cxc"]
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["Q1.png"]


# -- metrics.json is what scikit-learn computes from the table it was written beside ------------------------------

def _sk_metrics(rows, threshold, top_k):
    """auprc, auroc, f1, mcc, base_rate, precision_at_k, protein_auprc of a scores table, by scikit-learn."""
    import numpy as np
    from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef, roc_auc_score

    y = np.array([int(r["label"]) for r in rows])
    s = np.array([float(r["score"]) for r in rows])
    pred = (s >= threshold).astype(int)
    per_ap, per_pk = [], []
    ids = np.array([r["id"] for r in rows])
    for pid in dict.fromkeys(ids):
        yp, sp = y[ids == pid], s[ids == pid]
        if yp.sum():
            per_ap.append(average_precision_score(yp, sp))
            per_pk.append(yp[np.argsort(-sp, kind="stable")[:top_k]].mean())
    return {"auprc": average_precision_score(y, s), "auroc": roc_auc_score(y, s), "f1": f1_score(y, pred),
            "mcc": matthews_corrcoef(y, pred), "base_rate": y.mean(), "precision_at_k": float(np.mean(per_pk)),
            "protein_auprc": float(np.mean(per_ap))}


def test_fit_metrics_json_recomputed_from_test_scores_csv(fitted):
    tmp_path, args, metrics, out = fitted
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    rows = list(csv.DictReader((tmp_path / "run" / "test_scores.csv").open()))
    assert list(rows[0]) == ["id", "position", "residue", "label", "score", "probability"]
    assert {r["id"] for r in rows} == set(saved["split"]["test"])
    want = _sk_metrics(rows, saved["threshold"], saved["config"]["probe"]["top_k"])
    for key, value in want.items():
        assert saved[key] == pytest.approx(value, abs=1e-6), key
    # negative control: the same check on scores that are not the probe's fails
    flipped = [{**r, "score": str(-float(r["score"]))} for r in rows]
    assert abs(_sk_metrics(flipped, -saved["threshold"], 10)["auprc"] - saved["auprc"]) > 1e-3
    # the score is a ranking score; the calibrated probability is a monotone map of it, in [0, 1]
    assert "not a probability" in saved["score_meaning"]["score"].lower()
    assert saved["calibration"]["method"] == "platt" and saved["calibration"]["fitted_on"] == "validation"
    pairs = sorted((float(r["score"]), float(r["probability"])) for r in rows)
    assert all(0 <= p <= 1 for _, p in pairs)
    assert all(b[1] >= a[1] - 1e-6 for a, b in zip(pairs, pairs[1:]))
    # validation metrics come from the same path: they are defined, and the threshold was chosen on them
    assert saved["val"]["auprc"] is not None and 0 <= saved["val"]["f1"] <= 1


def test_fit_says_when_its_calibration_collapsed(fitted):
    """The tiny backbone's scores do not rank the validation sites, so Platt collapses to the validation base
    rate: one probability for every residue. Legitimate, but said (metrics.json warnings, score_meaning),
    never left for the user to discover in test_scores.csv (issue: 0.0297 for every residue, unexplained)."""
    tmp_path, args, metrics, out = fitted
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    cal = saved["calibration"]
    probs = {round(float(r["probability"]), 6) for r in csv.DictReader((tmp_path / "run" / "test_scores.csv").open())}
    constant = cal["params"]["a"] == 0
    assert constant == (len(probs) == 1)
    said = [w for w in saved["warnings"] if "calibrated probability is constant" in w]
    assert bool(said) == constant and ("COLLAPSED" in saved["score_meaning"]["probability"]) == constant
    if constant:  # the value and why: the validation base rate
        rate = cal["n_pos"] / cal["n"]
        assert next(iter(probs)) == pytest.approx(rate, abs=1e-6)
        assert f"{rate:.4g} for every residue" in said[0] and "do not rank the validation sites" in said[0]


def _eval_args(tmp_path, ckpt, table, out):
    return ["--checkpoint", str(ckpt), "--data.path", str(table), "--trainer.default_root_dir", str(out),
            "--model.cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--bootstrap", "200"]


def test_evaluate_scores_every_residue_and_matches_sklearn(fitted, capsys):
    from allo_lightning import evaluate

    tmp_path, args, metrics, _ = fitted
    ckpt = tmp_path / "ckpts" / "run.tiny.safetensors"
    proteins = random_proteins(12, lo=30, hi=60, seed=2)
    table = tmp_path / "train.tsv"
    got = evaluate.main(_eval_args(tmp_path, ckpt, table, tmp_path / "eval"))
    captured = capsys.readouterr()
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(saved) - documented("metrics.json", "pooled `auprc`") == set()  # the README names every key
    rows = list(csv.DictReader((tmp_path / "eval" / "scores.csv").open()))
    constant = len({r["probability"] for r in rows}) == 1  # a collapsed calibration is said, once
    assert sum("calibrated probability is constant" in w for w in saved["warnings"]) == int(constant)
    assert captured.err.count("calibrated probability is constant") == int(constant)
    assert list(rows[0]) == ["id", "position", "residue", "label", "score", "probability"]
    # every residue of the table, in order, 1-based, with its label
    assert [(r["id"], int(r["position"]), r["residue"], int(r["label"])) for r in rows] == [
        (p.id, i + 1, c, int(i + 1 in p.sites)) for p in proteins for i, c in enumerate(p.sequence)]
    want = _sk_metrics(rows, saved["threshold"], saved["top_k"])
    for key, value in want.items():
        assert saved[key] == pytest.approx(value, abs=1e-6), key
    from sklearn.metrics import average_precision_score

    for entry in saved["per_protein"]:
        mine = [r for r in rows if r["id"] == entry["id"]]
        ap = average_precision_score([int(r["label"]) for r in mine], [float(r["score"]) for r in mine])
        assert entry["auprc"] == pytest.approx(ap, abs=1e-9) and entry["n_sites"] == sum(int(r["label"]) for r in mine)
    ci = saved["intervals"]["auprc"]
    assert ci["lo"] <= saved["auprc"] <= ci["hi"] and ci["n_proteins"] == 12 and ci["n_boot"] == 200
    assert saved["auprc_lo"] == ci["lo"] and saved["auroc_lo"] <= saved["auroc"] <= saved["auroc_hi"]
    assert saved["base_rate"] == pytest.approx(want["base_rate"]) and (tmp_path / "eval" / "pr_curve.png").is_file()
    # the same scores as fit's test set (one scoring path through the checkpoint)
    fit_rows = {(r["id"], r["position"]): float(r["score"])
                for r in csv.DictReader((tmp_path / "run" / "test_scores.csv").open())}
    for r in rows:
        if (r["id"], r["position"]) in fit_rows:
            assert float(r["score"]) == pytest.approx(fit_rows[(r["id"], r["position"])], abs=1e-6)
    # these proteins trained the probe: said, not hidden
    assert set(saved["seen_in_training"]) == set(metrics["split"]["train"]) | set(metrics["split"]["val"])
    assert "optimistic" in captured.err and "NOTHING" in captured.out and saved["meaningless"] is True
    # the summary line names its numbers: the interval is a bootstrap one, precision@k a mean over proteins
    ci = saved["intervals"]["auprc"]
    assert (f"AUPRC {saved['auprc']:.3f} (95 % bootstrap interval over proteins {ci['lo']:.3f}-{ci['hi']:.3f})"
            in captured.out and f"means per protein: precision@{saved['top_k']} {saved['precision_at_k']:.3f}, "
            f"AUPRC {saved['protein_auprc']:.3f}" in captured.out), captured.out
    assert got["auprc"] == pytest.approx(saved["auprc"])
    # per protein: a table recomputed from scores.csv with sklearn, one terminal line and one figure each
    table_rows = list(csv.DictReader((tmp_path / "eval" / "per_protein.csv").open()))
    assert [r["id"] for r in table_rows] == [p.id for p in proteins]
    for r in table_rows:
        mine = [x for x in rows if x["id"] == r["id"]]
        y, s = [int(x["label"]) for x in mine], [float(x["score"]) for x in mine]
        ranked = sorted(range(len(s)), key=lambda k: (-s[k], k))
        best = min(ranked.index(k) + 1 for k in range(len(y)) if y[k]) if any(y) else None
        assert float(r["auprc"]) == pytest.approx(average_precision_score(y, s), abs=1e-9)
        assert float(r["base_rate"]) == pytest.approx(sum(y) / len(y))
        assert (int(r["best_site_rank"]) if r["best_site_rank"] else None) == best
        assert f"  {r['id']} ({len(y)} residues, {sum(y)} sites" in captured.out
        assert (tmp_path / "eval" / "plots" / f"{r['id']}.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "eval" / "per_protein.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_marks_a_training_protein_under_another_id_as_seen(fitted, capsys):
    from dataclasses import replace

    from allo_lightning import evaluate

    tmp_path, _, metrics, _ = fitted
    ckpt = tmp_path / "ckpts" / "run.tiny.safetensors"
    by_id = {p.id: p for p in random_proteins(12, lo=30, hi=60, seed=2)}
    trained = by_id[metrics["split"]["train"][0]]
    held_out = by_id[metrics["split"]["test"][0]]
    renamed = replace(trained, id="renamed_copy", sequence=trained.sequence.lower())  # case does not hide it
    table = write_table(tmp_path / "renamed.tsv", [renamed, held_out])
    evaluate.main(_eval_args(tmp_path, ckpt, table, tmp_path / "e_renamed"))
    saved = json.loads((tmp_path / "e_renamed" / "metrics.json").read_text())
    assert saved["seen_in_training"] == ["renamed_copy"] and saved["seen_in_training_by"].startswith("sequence")
    assert "heads_fallback" in saved and saved["heads_fallback"] == metrics["heads_fallback"]
    assert "optimistic" in capsys.readouterr().err


def test_seen_in_training_of_an_old_checkpoint_falls_back_to_ids_and_says_so():
    from allo_lightning.probe.checkpoint import seen_in_training, seen_sequences

    proteins = random_proteins(3, seed=1)
    old = {"split": {"train": [proteins[0].id], "val": [], "test": []}}
    ids, warning = seen_in_training(old, proteins)
    assert ids == [proteins[0].id] and "ids only" in warning
    new = {**old, "seen": seen_sequences([proteins[1]])}
    ids, warning = seen_in_training(new, proteins)
    assert ids == sorted([proteins[0].id, proteins[1].id]) and warning is None


def test_evaluate_without_sites_reports_undefined_not_zero(fitted, capsys):
    from allo_lightning import evaluate

    tmp_path, *_ = fitted
    ckpt = tmp_path / "ckpts" / "run.tiny.safetensors"
    table = tmp_path / "nosites.tsv"
    table.write_text("id\tsequence\tsites\nA\tACDEFGHIKLMNPQRSTVWY\t\nB\tMKVLAAGIVGL\t\n")
    evaluate.main(_eval_args(tmp_path, ckpt, table, tmp_path / "e0"))
    err = capsys.readouterr().err
    text = (tmp_path / "e0" / "metrics.json").read_text()
    saved = json.loads(text)
    for key in ("auprc", "auroc", "f1", "mcc", "precision_at_k", "protein_auprc"):
        assert saved[key] is None, key
    assert saved["base_rate"] == 0 and "NaN" not in text
    assert "undefined" in err and "auprc" in err
    assert len(list(csv.DictReader((tmp_path / "e0" / "scores.csv").open()))) == 31


def test_evaluate_refuses_unlabelled_proteins_and_other_backbone(fitted, capsys):
    from allo_lightning import evaluate

    tmp_path, *_ = fitted
    ckpt = tmp_path / "ckpts" / "run.tiny.safetensors"
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACDEFGHIKLMNPQRSTVWY\n")
    with pytest.raises(SystemExit) as e:
        evaluate.main(_eval_args(tmp_path, ckpt, fasta, tmp_path / "e1"))
    # named like every other input error: file, line, id (it said "x.fasta:1: protein 'a' has ...")
    assert e.value.code == 2 and f"error: {fasta}, line 1, id 'a': no site labels" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        evaluate.main(_eval_args(tmp_path, ckpt, tmp_path / "train.tsv", tmp_path / "e2")
                      + ["--model.backbone", "esm2_tiny"])
    assert e.value.code == 2 and "esm2_tiny" in capsys.readouterr().err
    assert not (tmp_path / "e2" / "metrics.json").exists()


def test_fit_test_fraction_zero_trains_on_all_but_validation(tmp_path, capsys):
    proteins = random_proteins(12, lo=30, hi=60, seed=2)
    table = write_table(tmp_path / "train.tsv", proteins)
    run = tmp_path / "run"
    base = common(tmp_path, table) + ["--trainer.default_root_dir", str(run), "--probe.checkpoint_dir",
                                      str(tmp_path / "ckpts")]
    fit.main(base)  # an earlier run with a test set in the same folder
    assert (run / "test_scores.csv").is_file()
    capsys.readouterr()
    metrics = fit.main(base + ["--probe.test_fraction", "0", "--overwrite", "--probe.calibration", "none"])
    out = capsys.readouterr().out
    saved = json.loads((run / "metrics.json").read_text())
    ids = saved["split"]
    assert ids["test"] == [] and saved["n_proteins"]["test"] == 0 and saved["test"] is None
    assert sorted(ids["train"] + ids["val"]) == sorted(p.id for p in proteins) and ids["val"]
    assert "auprc" not in saved and saved["val"]["auprc"] is not None
    for word in ("no test set", "allo_lightning.report", "allo_lightning.evaluate"):
        assert word in saved["test_note"] and word in out
    assert not (run / "test_scores.csv").exists() and not (run / "pr_curve.png").exists()  # no stale test results
    assert (tmp_path / "ckpts" / "run.tiny.safetensors").is_file() and metrics["test_note"] == saved["test_note"]
    # --probe.calibration none: no calibration stored, no probability invented downstream
    from allo_lightning.probe import load_checkpoint

    assert saved["calibration"] is None and "no calibration" in saved["score_meaning"]["probability"]
    assert load_checkpoint(tmp_path / "ckpts" / "run.tiny.safetensors").calibration is None


def _structure_for(seq, path, offset=50):
    """Chain A: positions 3..L as 3+offset.. (with an insertion code on position 6 and a 4-residue
    fusion segment after position 8); chain B: the same protein numbered 1..L. B-factors 77."""
    import biotite.structure as struc
    from biotite.sequence import ProteinSequence

    atoms = []

    def res(chain, number, icode, aa):
        for name in ("N", "CA", "C", "O"):
            atoms.append(struc.Atom([len(atoms) * 0.4, 0.0, 0.0], chain_id=chain, res_id=number, ins_code=icode,
                                    res_name=ProteinSequence.convert_letter_1to3(aa), atom_name=name,
                                    element=name[0], b_factor=77.0))

    layout = {}
    for p in range(3, len(seq) + 1):
        number, icode = (5 + offset, "A") if p == 6 else (p + offset - (p > 6), "")
        res("A", number, icode, seq[p - 1])
        layout[p] = ("A", number, icode)
        if p == 8:
            for k, aa in enumerate("WCWC"):
                res("A", 900 + k, "", aa)
    for p, aa in enumerate(seq, start=1):
        res("B", p, "", aa)
    f = PDBFile()
    f.set_structure(struc.array(atoms))
    f.write(str(path))
    return layout


def test_predict_with_structure_maps_scores_onto_chain_or_refuses(fitted, capsys):
    tmp_path, *_ = fitted
    seq = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRV"
    fasta = tmp_path / "one.fasta"
    fasta.write_text(f">rec/1\n{seq}\n")
    layout = _structure_for(seq, tmp_path / "rec.pdb")
    # refused first: an unrelated structure, one line naming the file, the id and what to do
    _structure_for("GPNWEDCHGPNWEDCHGPNWEDCHGPNWEDCHGPNWEDCH", tmp_path / "other.pdb")
    with pytest.raises(SystemExit) as e:
        predict.main(["--checkpoint", str(tmp_path / "ckpts" / "run.tiny.safetensors"), "--fasta", str(fasta),
                      "--out", str(tmp_path / "pred_x"), "--model.cache_dir", str(tmp_path / "cache"),
                      "--trainer.accelerator", "cpu", "--structure", str(tmp_path / "other.pdb")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "other.pdb" in err and "'rec/1'" in err and "--min_identity" in err and "chain" in err
    assert not (tmp_path / "pred_x" / "predictions.csv").exists()
    out = tmp_path / "pred_s"
    predict.main(["--checkpoint", str(tmp_path / "ckpts" / "run.tiny.safetensors"), "--fasta", str(fasta),
                  "--out", str(out), "--model.cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "cpu",
                  "--trainer.enable_progress_bar", "false", "--structure", str(tmp_path / "rec.pdb"),
                  "--chain", "A", "--top", "3"])
    printed = capsys.readouterr().out
    # mapped segments on the terminal: the 4-residue insert after position 8 breaks the run
    assert "rec.pdb chain A: 38 of 40 positions mapped (A:53-57, A:58-89), identity 1.000" in printed
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert list(rows[0]) == ["id", "position", "residue", "score", "probability", "rank", "predicted", "windowed",
                             "chain", "resnum", "icode"]
    for r in rows:
        want = layout.get(int(r["position"]), ("", "", ""))
        assert (r["chain"], r["resnum"], r["icode"]) == tuple(str(x) for x in want)
    score = {int(r["position"]): float(r["score"]) for r in rows}
    by_residue = {v: score[p] for p, v in layout.items()}
    remarks = [x for x in (out / "structures" / "rec_1.pdb").read_text().splitlines() if x.startswith("REMARK 999")]
    assert "mean NOTHING" in " ".join(x[11:].strip() for x in remarks)  # the tiny backbone's copy says so itself
    written = PDBFile.read(str(out / "structures" / "rec_1.pdb")).get_structure(model=1, extra_fields=["b_factor"])
    for i in range(written.array_length()):
        key = (str(written.chain_id[i]), int(written.res_id[i]), str(written.ins_code[i]))
        want = by_residue.get(key, -1.0)  # a stated value (not crystallographic B) on unscored atoms
        assert float(written.b_factor[i]) == pytest.approx(want, abs=0.006), key
    pml = (out / "pymol" / "rec_1.pml").read_text()
    top = max(layout, key=lambda p: score[p])
    assert f"resi {layout[top][1]}{layout[top][2]}" in pml.split("select allo_rec_1_top")[1]
    assert "alter allo_rec_1 and chain A and resi 55A, b=" in pml and "chain B" not in pml
    assert "load structures/rec_1.pdb, allo_rec_1" in pml
    assert "#1/A:55A" in (out / "chimerax" / "rec_1.cxc").read_text()
    info = json.loads((out / "predictions.json").read_text())
    assert info["proteins"][0]["chain"] == "A" and info["proteins"][0]["coverage"] == pytest.approx(0.95)
    assert info["proteins"][0]["segments"] == ["A:53-57", "A:58-89"]
    assert info["proteins"][0]["residues"][5] == ["A", 55, "A"] and info["proteins"][0]["residues"][0] is None



def _predict(tmp_path, *extra):
    return predict.main(["--checkpoint", str(tmp_path / "ckpts" / "run.tiny.safetensors"),
                         "--model.cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "cpu",
                         "--trainer.enable_progress_bar", "false", *map(str, extra)])


def test_predict_table_input_structure_table_leaving_a_protein_out_and_sites(fitted, capsys):
    """Issue 18: the README's structure-table recipe with a protein left out (crashed with 'a row has 8
    cells for 11 columns' after writing scripts), proteins from --data.path (a table with sites: known
    sites marked), sites.csv with DCA success."""
    from allo_lightning.data import Protein

    tmp_path, *_ = fitted
    seq = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRV"
    layout = _structure_for(seq, tmp_path / "rec_t.pdb")
    table = write_table(tmp_path / "new.tsv", [Protein("rec/1", seq, sites=(20, 21, 22)),
                                               Protein("other", "ACDEFGHIKLMNPQRSTVWY" * 2, sites=(5,))])
    (tmp_path / "map.csv").write_text("id,structure,chain\nrec/1,rec_t.pdb,A\n")
    out = tmp_path / "pred_t"
    info = _predict(tmp_path, "--data.path", table, "--out", out, "--structure", tmp_path / "map.csv")
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert list(rows[0])[-3:] == ["chain", "resnum", "icode"]
    other = [r for r in rows if r["id"] == "other"]
    assert len(other) == 40 and all((r["chain"], r["resnum"], r["icode"]) == ("", "", "") for r in other)
    rec = {int(r["position"]): (r["chain"], r["resnum"], r["icode"]) for r in rows if r["id"] == "rec/1"}
    assert rec[6] == ("A", "55", "A") and rec[1] == ("", "", "")
    # known sites from the table: a selection in the script, in predictions.json, marked in the plot
    pml = (out / "pymol" / "rec_1.pml").read_text()
    assert "select allo_rec_1_known, allo_rec_1 and ((chain A and resi 69+70+71))" in pml
    assert [p["known_sites"] for p in info["proteins"]] == [[20, 21, 22], [5]]
    # sites.csv: structure-numbered patches for rec/1 (judged by DCA), sequence segments for the other
    sites = list(csv.DictReader((out / "sites.csv").open()))
    assert {s["id"] for s in sites} == {"rec/1", "other"}
    first = [s for s in sites if s["id"] == "rec/1"]
    assert [int(s["rank"]) for s in first] == list(range(1, len(first) + 1))
    assert all(r.startswith("A:") for s in first for r in s["residues"].split())
    assert all(s["centre_x"] and s["dca"] and s["hit"] in ("0", "1") for s in first)
    assert all(not s["centre_x"] for s in sites if s["id"] == "other")
    rec_info = info["proteins"][0]
    assert rec_info["site_criterion"].startswith("DCA") and set(rec_info["site_success"]) == {"top1", "top3"}
    assert info["site_success"]["n"] == 2 and "sites: #1" in printed and "site success" in printed
    # a site's printed number is sites.csv's score, named as the sum it is (it said "score 1.300", above
    # the residue scores' 0..1)
    assert f"(sum of scores {float(first[0]['score']):.3f}" in printed.split("rec/1 (", 1)[1]
    assert info["data"] == str(table) and layout[6] == ("A", 55, "A")
    # the README names every key, of the run and of a protein with and without a structure
    keys = set(info) | {k for p in info["proteins"] for k in p}
    assert keys - documented("predictions.json", "the run") == set()
    assert {"predictions.csv", "proteins.csv", "sites.csv"} <= set(assert_table_policy(out))  # centres, DCA


def test_predict_refuses_hostile_structure_before_work(fitted, capsys):
    """A chain id that is a multi-line mmCIF text field: one line, exit 2, no script written."""
    from .test_structures_engineered import HOSTILE, SEQ, hostile_cif

    tmp_path, *_ = fitted
    (tmp_path / "h.fasta").write_text(f">P1\n{SEQ}\n")
    for k, name in enumerate(HOSTILE):
        (tmp_path / "hostile.cif").write_text(hostile_cif(*HOSTILE[name]))
        with pytest.raises(SystemExit) as e:
            _predict(tmp_path, "--fasta", tmp_path / "h.fasta", "--out", tmp_path / f"pred_h{k}",
                     "--structure", tmp_path / "hostile.cif")
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and "hostile.cif" in err, name
        assert not (tmp_path / f"pred_h{k}" / "pymol").exists()
    with pytest.raises(SystemExit) as e:
        _predict(tmp_path, "--out", tmp_path / "pred_none")
    assert e.value.code == 2 and "--data.path" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # --chain goes into every script line: refused before work
        _predict(tmp_path, "--fasta", tmp_path / "h.fasta", "--out", tmp_path / "pred_c", "--chain", "A;system x")
    assert e.value.code == 2 and "--chain" in capsys.readouterr().err and not (tmp_path / "pred_c").exists()


def test_predict_refuses_a_bad_structure_table_in_one_line(fitted, capsys):
    """A mapping table in Latin-1 or with an unclosed quote: one line naming the table and line, exit 2, no
    output (Latin-1 was a UnicodeDecodeError traceback when the table had its own parser)."""
    from .test_structures_engineered import SEQ

    tmp_path, *_ = fitted
    (tmp_path / "t.fasta").write_text(f">P1\n{SEQ}\n")
    for k, data in enumerate(["id,structure,chain\nP1,r\xe9c.pdb,A\n".encode("latin-1"),
                              b'id,structure,chain\nP1,"rec.pdb,A\n']):
        (tmp_path / "bad_map.csv").write_bytes(data)
        with pytest.raises(SystemExit) as e:
            _predict(tmp_path, "--fasta", tmp_path / "t.fasta", "--out", tmp_path / f"pred_t{k}",
                     "--structure", tmp_path / "bad_map.csv")
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and "bad_map.csv, line 2" in err, err
        assert not (tmp_path / f"pred_t{k}" / "predictions.csv").exists()


def test_predict_own_data_flags_are_read():
    """predict's --data.path / --data.long arrive nested ({"data": {...}}): --data.long skip was ignored."""
    from allo_lightning.pipeline import long_of
    from allo_lightning.predict import _proteins_path
    from allo_lightning.shell import parse

    cfg = parse(predict.main.spec, ["--checkpoint", "c", "--out", "o", "--data.path", "x.tsv", "--data.long", "skip"])
    assert long_of(cfg) == "skip" and _proteins_path(cfg) == "x.tsv"


def test_evaluate_with_structure_reports_site_success(fitted, capsys):
    """Labels + a structure: predicted sites judged by DCA (centre within 4 A of a labelled residue's atom)."""
    from allo_lightning import evaluate
    from allo_lightning.data import Protein

    tmp_path, *_ = fitted
    seq = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRV"
    _structure_for(seq, tmp_path / "rec_e.pdb")
    table = write_table(tmp_path / "lab.tsv", [Protein("rec", seq, sites=tuple(range(10, 30))),
                                               Protein("nostruct", "ACDEFGHIKLMNPQRSTVWY" * 2, sites=(5,))])
    (tmp_path / "map_e.csv").write_text("id,structure,chain\nrec,rec_e.pdb,A\n")
    evaluate.main(_eval_args(tmp_path, tmp_path / "ckpts" / "run.tiny.safetensors", table, tmp_path / "ev_s")
                  + ["--structure", str(tmp_path / "map_e.csv"), "--plots", "false"])
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "ev_s" / "metrics.json").read_text())
    per = {r["id"]: r for r in csv.DictReader((tmp_path / "ev_s" / "per_protein.csv").open())}
    sites = [r for r in csv.DictReader((tmp_path / "ev_s" / "sites.csv").open()) if r["id"] == "rec"]
    assert sites and all((float(r["dca"]) <= 4.0) == (r["hit"] == "1") for r in sites)
    assert per["rec"]["site_top1"] == sites[0]["hit"]
    assert per["rec"]["site_top3"] == str(int(any(r["hit"] == "1" for r in sites[:3])))
    assert per["nostruct"]["site_top1"] == "" and saved["site_success"]["n_proteins"] == 1
    assert saved["site_success"]["top1"] == float(per["rec"]["site_top1"]) and "site success over 1" in printed
    assert not (tmp_path / "ev_s" / "plots").exists()
    # one formatting policy, also for the undefined cells (nostruct: no site_top1, no centre)
    assert {"scores.csv", "per_protein.csv", "sites.csv"} <= set(assert_table_policy(tmp_path / "ev_s"))


def test_run_records_training_log_report_and_config_replay(fitted, capsys):
    """fit and predict write config.yaml, run.log and report.html; fit's probe logs one row of training
    loss and validation AUPRC per epoch; predict replayed from its config.yaml gives the same result."""
    import yaml

    tmp_path, _, metrics, printed = fitted
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "training_log" / "metrics.csv").open()))
    val = {int(r["epoch"]): float(r["val/auprc"]) for r in rows if r["val/auprc"]}
    loss = {int(r["epoch"]): float(r["train/loss"]) for r in rows if r["train/loss"]}
    assert sorted(val) == sorted(loss) == list(range(metrics["epochs"]))
    assert val[metrics["best_epoch"]] == pytest.approx(metrics["val"]["auprc"], abs=1e-6)  # the kept epoch
    assert max(val.values()) == pytest.approx(val[metrics["best_epoch"]])
    log = (run / "run.log").read_text()
    assert printed.strip().splitlines()[-1] in log and log.splitlines()[1].endswith(": finished")
    assert "Training curve" in (run / "report.html").read_text()
    fit_cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert fit_cfg["model"]["backbone"] == "tiny" and fit_cfg["trainer"]["default_root_dir"] == str(run)
    assert "overwrite" not in fit_cfg

    fasta = tmp_path / "replay.fasta"
    fasta.write_text(">a\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRV\n>b\nGPNWEDCHGPNWEDCHGPNWEDCHGPNWEDCH\n")
    first = tmp_path / "replay1"
    predict.main(["--checkpoint", str(tmp_path / "ckpts" / "run.tiny.safetensors"), "--fasta", str(fasta),
                  "--out", str(first), "--model.cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "cpu",
                  "--trainer.enable_progress_bar", "false", "--top", "4", "--data.long", "skip", "--plots", "false"])
    cfg = yaml.safe_load((first / "config.yaml").read_text())
    assert cfg["top"] == 4 and cfg["data"] == {"long": "skip"} and cfg["plots"] is False and cfg["out"] == str(first)
    second = tmp_path / "replay2"
    predict.main(["--config", str(first / "config.yaml"), "--out", str(second)])
    assert (second / "predictions.csv").read_text() == (first / "predictions.csv").read_text()
    replayed = yaml.safe_load((second / "config.yaml").read_text())
    assert replayed == {**cfg, "out": str(second)}  # every setting, the same after a round trip
    assert not (second / "plots").exists()  # --plots false came from the file
    for out in (first, second):
        assert (out / "report.html").is_file() and (out / "run.log").is_file()
    assert "report: " in (second / "run.log").read_text()
    capsys.readouterr()
