"""fit and predict commands end to end, in-process, on the tiny backbone (CPU, offline)."""

from __future__ import annotations

import csv
import json

import pytest
from biotite.structure.io.pdb import PDBFile

from allo_lightning import fit, predict

from .conftest import common, random_proteins, write_table


@pytest.fixture
def fitted(tmp_path, capsys):
    table = write_table(tmp_path / "train.tsv", random_proteins(12, lo=30, hi=60, seed=2))
    args = common(tmp_path, table) + ["--trainer.default_root_dir", str(tmp_path / "run"),
                                      "--probe.checkpoint_dir", str(tmp_path / "ckpts")]
    metrics = fit.main(args)
    out = capsys.readouterr().out
    return tmp_path, args, metrics, out


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
    assert "NOTHING" in out
    assert (tmp_path / "run" / "pr_curve.png").stat().st_size > 0
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
    out = capsys.readouterr().out
    pred = list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    assert list(pred[0]) == ["id", "position", "residue", "score", "rank", "predicted"]
    assert {r["id"] for r in pred} == test_ids
    want = {(r["id"], int(r["position"])): float(r["score"]) for r in rows}
    for r in pred:
        assert float(r["score"]) == pytest.approx(want[(r["id"], int(r["position"]))], abs=1e-5)
    first = [r for r in pred if r["id"] == pred[0]["id"]]
    assert [int(r["position"]) for r in first] == list(range(1, len(first) + 1))  # 1-based
    assert sorted(int(r["rank"]) for r in first) == list(range(1, len(first) + 1))
    top = max(first, key=lambda r: float(r["score"]))
    assert top["rank"] == "1" and f"{top['residue']}{top['position']}" in out
    pid = pred[0]["id"]
    pml = (tmp_path / "pred" / "pymol" / f"{pid}.pml").read_text()
    score1 = float(first[0]["score"])
    assert f"alter allo_{pid} and chain A and resi 1, b={score1:.4f}" in pml  # chain-qualified, sequence numbers
    assert "positions in the input sequence, on chain A" in pml and "meaningless" in pml
    cxc = (tmp_path / "pred" / "chimerax" / f"{pid}.cxc").read_text()
    assert f"setattr #1/A:1 residues allo_score {score1:.4f} create true" in cxc
    assert not (tmp_path / "pred" / "chimerax" / f"{pid}.defattr").exists()
    assert (tmp_path / "pred" / "plots" / f"{pid}.png").read_bytes()[:4] == b"\x89PNG"
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
    assert "rec.pdb chain A: 38 of 40 positions mapped, identity 1.000" in printed
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert list(rows[0]) == ["id", "position", "residue", "score", "rank", "predicted", "chain", "resnum", "icode"]
    for r in rows:
        want = layout.get(int(r["position"]), ("", "", ""))
        assert (r["chain"], r["resnum"], r["icode"]) == tuple(str(x) for x in want)
    score = {int(r["position"]): float(r["score"]) for r in rows}
    by_residue = {v: score[p] for p, v in layout.items()}
    written = PDBFile.read(str(out / "structures" / "rec_1.pdb")).get_structure(model=1, extra_fields=["b_factor"])
    for i in range(written.array_length()):
        key = (str(written.chain_id[i]), int(written.res_id[i]), str(written.ins_code[i]))
        want = by_residue.get(key, 77.0)
        assert float(written.b_factor[i]) == pytest.approx(want, abs=0.006), key
    pml = (out / "pymol" / "rec_1.pml").read_text()
    top = max(layout, key=lambda p: score[p])
    assert f"resi {layout[top][1]}{layout[top][2]}" in pml.split("select allo_rec_1_top")[1]
    assert "alter allo_rec_1 and chain A and resi 55A, b=" in pml and "chain B" not in pml
    assert "load structures/rec_1.pdb, allo_rec_1" in pml
    assert "#1/A:55A" in (out / "chimerax" / "rec_1.cxc").read_text()
    info = json.loads((out / "predictions.json").read_text())
    assert info["proteins"][0]["chain"] == "A" and info["proteins"][0]["coverage"] == pytest.approx(0.95)

