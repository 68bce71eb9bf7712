"""``report.html`` of each command, built from the command's own output files (so a page can be rebuilt
from any output folder: ``python -m allo_lightning.html DIR``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..outputs import record_outputs, write_text
from ..records import CONFIG, LOG, written_by
from . import charts
from .page import FILES_DIR, VIEWER_VERSION, copy_assets, document, esc, script_json, settings_block, table

REPORT = "report.html"
PAGE_FILES = (REPORT, f"{FILES_DIR}/report.js")  # what write_report writes (the 3-D viewer: predict only)
# the file whose presence marks each command's finished results (its --overwrite manifest)
MARKERS = {"predict": "predictions.csv", "heads": "heads.csv", "fit": "metrics.json", "evaluate": "metrics.json",
           "report": "report.csv"}


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """A table of the output folder (header, rows), or nothing when it is absent."""
    if not path.is_file():
        return [], []
    from ..tables import iter_csv

    rows = list(iter_csv(path))  # our tables neutralise formula-like cells; iter_csv removes the apostrophes
    return (rows[0], rows[1:]) if rows else ([], [])


def _num(v: str):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def _csv_table(path: Path, caption: str = "", limit: int | None = None) -> str:
    header, rows = _csv(path)
    if not header:
        return ""
    rows = [[_num(c) for c in r] for r in rows[:limit]]
    numeric = {i for i in range(len(header)) if rows and all(isinstance(r[i], (int, float)) for r in rows
                                                             if i < len(r) and r[i] != "")}
    return table(header, rows, numeric=numeric, caption=caption)


def _img(out: Path, name: str, caption: str) -> str:
    return (f'<figure><img src="{esc(name)}" alt="{esc(caption)}" style="max-width:100%">'
            f"<figcaption>{esc(caption)}</figcaption></figure>") if (out / name).is_file() else ""


def _settings(out: Path, info: dict, command: str) -> dict | None:
    """The run's resolved settings: its config.yaml (when that is this command's, not the record of another
    command run into the same folder later), else what its JSON output recorded."""
    import yaml

    if written_by(out / CONFIG) == command:  # not the record of another command run into this folder later
        try:
            data = yaml.safe_load((out / CONFIG).read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        except (OSError, yaml.YAMLError):
            pass
    return info.get("config")


def _header(command: str, what: str, info: dict, out: Path) -> str:
    note = info.get("note") or ""
    if info.get("meaningless") and not note:
        from ..backbone import TINY_MEANINGLESS as note
    return (f"<h1>allo_lightning {esc(command)}: {esc(what)}</h1>"
            + settings_block(_settings(out, info, command),
                             f"{info.get('backbone', '')} ({info.get('backbone_identity', '')})",
                             note if info.get("meaningless") else ""))


def _training_curve(out: Path) -> str:
    """Per-epoch training loss and validation AUPRC from the probe's CSVLogger (training_log/metrics.csv)."""
    header, rows = _csv(out / "training_log" / "metrics.csv")
    if not header:
        return ""
    col = {h: i for i, h in enumerate(header)}
    loss, auprc = {}, {}
    for r in rows:
        epoch = int(float(r[col["epoch"]]))
        if "train/loss" in col and r[col["train/loss"]]:
            loss[epoch] = float(r[col["train/loss"]])
        if "val/auprc" in col and r[col["val/auprc"]]:
            auprc[epoch] = float(r[col["val/auprc"]])
    return ("<h2>Training curve</h2><div class='cols'><div>"
            + charts.lines({"training loss": sorted(loss.items())}, "probe training loss per epoch", "epoch", "loss")
            + "</div><div>" + charts.lines({"validation AUPRC": sorted(auprc.items())},
                                             "validation AUPRC per epoch (early stopping on it)", "epoch", "AUPRC")
            + "</div></div><p class='small muted'>From training_log/metrics.csv (Lightning CSVLogger).</p>")


def _scores(path: Path) -> tuple[list[int], list[float]]:
    header, rows = _csv(path)
    if not header or "label" not in header:
        return [], []
    i, j = header.index("label"), header.index("score")
    return [int(float(r[i])) for r in rows], [float(r[j]) for r in rows]


def _metrics_table(metrics: dict) -> str:
    intervals = metrics.get("intervals") or {}
    rows = []
    for k in ("auprc", "auroc", "f1", "mcc", "precision_at_k", "r_precision", "protein_auprc", "protein_auroc",
              "base_rate"):
        if k in metrics and isinstance(metrics[k], (int, float)):
            ci = intervals.get(k) or {}
            rows.append([k, float(metrics[k]), float(ci["lo"]) if ci.get("lo") is not None else "",
                         float(ci["hi"]) if ci.get("hi") is not None else ""])
    note = "95 % bootstrap interval over proteins" if intervals else "no interval (see report for cross-validated ones)"
    return table(["metric", "value", "95 % lo", "95 % hi"], rows, numeric={1, 2, 3}, caption=note)


# -- the pages ------------------------------------------------------------------------------------
def _predict(out: Path) -> tuple[str, str, dict, bool, list[Path]]:
    from .predict_view import protein_views

    info, views = protein_views(out)
    folder = out / FILES_DIR / "proteins"
    files = [folder / f"{p['files']}.js" for p in info["proteins"]]
    record_outputs(out, MARKERS["predict"], files)  # once, before writing them (--overwrite removes them)
    index = []
    for view in views:
        write_text(folder / f"{view['file']}.js", f"alloProtein({script_json(view)});\n")
        top = view["top"][0] if view["top"] else None
        index.append({"id": view["id"], "file": view["file"], "length": len(view["scores"]),
                      "predicted": sum(v >= view["threshold"] for v in view["scores"]),
                      "best": max(view["scores"], default=float("nan")),
                      "top": f"{view['sequence'][top - 1]}{top}" if top and top <= len(view["sequence"]) else "",
                      "structure": view["structure"]["name"] if view["structure"] else "",
                      "segments": ", ".join(f"{s['chain']}:{s['start']}-{s['end']}" for s in view["segments"]),
                      "windowed": "yes" if view["windowed"] else ""})
    head = ["#", "id", "length", "predicted", "best score", "top residue", "structure", "mapped segments", "windowed"]
    rows = [[k + 1, e["id"], e["length"], e["predicted"], e["best"], e["top"], e["structure"], e["segments"],
             e["windowed"]] for k, e in enumerate(index)]
    body = (_header("predict", f"{len(index)} proteins", info, out)
            + f"<p>Checkpoint <code>{esc(info.get('checkpoint', ''))}</code>; threshold {info.get('threshold', 0):.3f} "
              "on the ranking score (score is not a probability"
            + ("; probability: calibrated on the probe's validation proteins" if "probability" in json.dumps(
                info.get("score_meaning", {})) else "") + "). Heads (layer, head 0-based): "
            + esc(" ".join(f"L{a}H{b}" for a, b in info.get("heads", []))) + "</p>"
            + "<h2>Proteins</h2><p class='small muted'>Click a protein to show it; click a column header to sort. "
              "Files: predictions.csv, predictions.json, plots/, pymol/, chimerax/, structures/.</p>"
            + "<div class='scroll'>" + table(head, rows, numeric={0, 2, 3, 4}, table_id="protein-index",
                                             row_attrs=[{"data-i": k} for k in range(len(index))])
            + "</div><div id='protein'><p class='muted'>Loading the first protein ...</p></div>"
            + f"<p class='small muted'>3-D view: {esc(VIEWER_VERSION)}, from {esc(FILES_DIR)}/ next to this file.</p>")
    data = {"kind": "predict", "files_dir": FILES_DIR, "proteins": [{"id": e["id"], "file": e["file"]} for e in index]}
    return f"predict: {len(index)} proteins", body, data, True, files


def _heads(out: Path):
    info = _json(out / "heads.json")
    header, rows = _csv(out / "heads.csv")
    score = info.get("score", "p_alpha")
    col = {h: i for i, h in enumerate(header)}
    n_layers, n_heads = int(info.get("n_layers", 0)), int(info.get("n_heads", 0))
    values = [[None] * n_heads for _ in range(n_layers)]
    tips = [[""] * n_heads for _ in range(n_layers)]
    for r in rows:
        ly, hd = int(r[col["layer"]]), int(r[col["head"]])
        if ly >= n_layers or hd >= n_heads:
            continue
        v = _num(r[col[score]]) if score in col else None
        values[ly][hd] = v if isinstance(v, float) else None
        parts = [f"L{ly}H{hd} (layer {ly}, head {hd}, 0-based)", f"rank {r[col['rank']]}"]
        for c in (score, f"{score}_snr", f"{score}_pvalue", f"{score}_qvalue", "confident", "testable"):
            if c in col:
                parts.append(f"{c} {r[col[c]]}")
        parts.append("SELECTED" if r[col["selected"]] == "true" else "not selected")
        tips[ly][hd] = "\n".join(parts)
    selected = {(int(a), int(b)) for a, b in info.get("selected", [])}
    body = (_header("heads", f"which heads see the allosteric sites ({score})",
                    {**info, "config": info.get("settings")}, out)
            + f"<p>Strategy <code>{esc(info.get('strategy', ''))}</code>; selected (layer, head 0-based): "
            + esc(", ".join(info.get("selected_labels", []))) + "</p>"
            + (f"<p class='warn'>{esc(info['fallback'])}</p>" if info.get("fallback") else "")
            + f"<p class='small muted'>Null: {esc(info.get('null_description', ''))}. p-values: "
            + esc(info.get("pvalues", "")) + "</p><h2>Layers x heads</h2>"
            + charts.heatmap(values, selected, tips, f"pooled {score}")
            + "<h2>Heads, best first</h2><div class='scroll'>" + _csv_table(out / "heads.csv") + "</div>"
            + _img(out, "heads_heatmap.png", "heads_heatmap.png"))
    maps = sorted((out / "maps").glob("*.png")) if (out / "maps").is_dir() else []
    if maps:
        body += "<h2>Attention maps of the selected heads</h2>" + "".join(
            _img(out, f"maps/{m.name}", m.stem) for m in maps[:20])
    return f"heads ({score})", body, {"kind": "heads"}, False, []


def _fit(out: Path):
    m = _json(out / "metrics.json")
    labels, scores = _scores(out / "test_scores.csv")
    body = _header("fit", "probe on the selected heads", m, out)
    body += (f"<p>Heads (layer, head 0-based): {esc(' '.join(m.get('heads', [])))}; {esc(m.get('epochs'))} epochs "
             f"(best {esc(m.get('best_epoch'))}); threshold {float(m.get('threshold') or math.nan):.3f} on the "
             f"ranking score (best validation F1). Proteins: {esc(json.dumps(m.get('n_proteins', {})))}.</p>")
    if m.get("heads_fallback"):
        body += f"<p class='warn'>{esc(m['heads_fallback'])}</p>"
    for w in m.get("warnings", []):
        body += f"<p class='warn'>{esc(w)}</p>"
    if labels:
        body += ("<h2>Test metrics</h2>" + _metrics_table(m) + "<h2>PR curve (test proteins)</h2>"
                 + charts.pr_curve({"probe": (labels, scores)}, m.get("threshold"), "test PR curve"))
    else:
        body += f"<p class='warn'>{esc(m.get('test_note', 'no test set'))}</p>"
    val = m.get("val") or {}
    if val:
        body += "<h2>Validation metrics</h2>" + _metrics_table(val)
    body += _training_curve(out)
    return "fit", body, {"kind": "fit"}, False, []


def _evaluate(out: Path):
    m = _json(out / "metrics.json")
    labels, scores = _scores(out / "scores.csv")
    body = _header("evaluate", f"checkpoint on {m.get('data', '')}", m, out)
    body += (f"<p>Checkpoint <code>{esc(m.get('checkpoint', ''))}</code>; threshold "
             f"{float(m.get('threshold') or math.nan):.3f} on the ranking score.</p>")
    for w in m.get("warnings", []):
        body += f"<p class='warn'>{esc(w)}</p>"
    body += ("<h2>Metrics</h2>" + _metrics_table(m) + "<h2>PR curve</h2>"
             + charts.pr_curve({"probe": (labels, scores)}, m.get("threshold"), "PR curve (all residues pooled)"))
    if (out / "per_protein.csv").is_file():
        body += ("<h2>Per protein</h2><div class='scroll'>" + _csv_table(out / "per_protein.csv") + "</div>"
                 + _img(out, "per_protein.png", "each protein's AUPRC against its base rate"))
    if (out / "sites.csv").is_file():
        body += "<h2>Predicted sites</h2><div class='scroll'>" + _csv_table(out / "sites.csv") + "</div>"
    plots = sorted((out / "plots").glob("*.png")) if (out / "plots").is_dir() else []
    if plots:
        body += "<h2>Score along each protein</h2>" + "".join(_img(out, f"plots/{q.name}", q.stem) for q in plots[:50])
    return "evaluate", body, {"kind": "evaluate"}, False, []


def _report(out: Path):
    s = _json(out / "report.json")
    body = _header("report", f"head subsets ({s.get('scheme', '')})", s, out)
    body += ("<h2>Metrics per head subset</h2><p class='small muted'>Means over folds; _lo/_hi: 95 % bootstrap "
             "interval over test proteins; _sd: over folds (random rows: over draws). See report.md.</p>"
             "<div class='scroll'>" + _csv_table(out / "report.csv") + "</div>"
             + "<h2>Selected heads against each baseline</h2><p class='small muted'>p_value: two-sided paired "
             "permutation test over the test proteins, p_holm: Holm-adjusted over the rows; delta_lo/delta_hi: paired "
             "bootstrap interval, descriptive only. See report.md.</p>" + _csv_table(out / "comparison.csv")
             + _img(out, "pr_curves.png", "test PR curves pooled over folds")
             + "<h2>Data efficiency</h2>" + _csv_table(out / "data_efficiency.csv")
             + _img(out, "data_efficiency.png", "test AUPRC against the number of training proteins"))
    if (out / "alphamissense.csv").is_file():
        body += "<h2>AlphaMissense</h2>" + _csv_table(out / "alphamissense.csv")
    return "report", body, {"kind": "report"}, False, []


PAGES = {"predict": _predict, "heads": _heads, "fit": _fit, "evaluate": _evaluate, "report": _report}


def write_report(out: str | Path, command: str) -> Path:
    """Write ``out/report.html`` (and its files in ``out/report_files``) from the outputs ``command``
    left in ``out``; returns its path."""
    out = Path(out)
    record_outputs(out, MARKERS[command], [out / REPORT, out / FILES_DIR / "report.js"])
    title, body, data, viewer, _ = PAGES[command](out)
    if viewer:
        record_outputs(out, MARKERS[command], [out / FILES_DIR / n for n in ("3Dmol-min.js", "3Dmol-LICENSE.txt")])
    copy_assets(out, viewer)
    records = [text for name, text in ((CONFIG, f"<a href='{CONFIG}'>{CONFIG}</a> (replay with <code>--config</code>)"),
                                       (LOG, f"<a href='{LOG}'>{LOG}</a>"))
               if written_by(out / name) == command]  # another command's records (a shared folder) are not this run's
    if records:
        body += "<p class='small muted'>Run records: " + ", ".join(records) + ".</p>"
    return write_text(out / REPORT, document(f"allo_lightning {title}", body, data, viewer))
