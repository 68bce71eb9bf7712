"""``python -m allo_lightning.heads --config configs/gpcr.yaml``: which attention heads put their
confident attention on allosteric sites (Allo-Allo head selection).

Scores every head over the labelled proteins (``--heads.proteins`` picks a subset, e.g. the training
split), selects heads with ``--heads.strategy`` and writes to ``--trainer.default_root_dir``:
heads.csv, heads.json, heads_heatmap.png, maps/<protein>.png and attention_to_sites.csv.
An existing heads.csv is not replaced without ``--overwrite``.
"""

from __future__ import annotations

import logging
import time

from .html import PAGE_FILES, write_report
from .outputs import claim_out_files, prepare_out_dir, record_outputs
from .records import RUN_FILES, record_run
from .shell import command
from .tables import file_names

log = logging.getLogger("allo_lightning.heads")  # not __name__: "__main__" under python -m allo_lightning.heads

HEATMAP = "heads_heatmap.png"
MAPS_DIR = "maps"
FILES = ("heads.csv", "heads.json", HEATMAP, "attention_to_sites.csv")  # and maps/<protein>.png


def _extra(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing heads.csv and its siblings")


@command("heads", __doc__, sections=("model", "data", "trainer", "heads"), flags=_extra)
def main(cfg) -> dict:
    # torch, Lightning and the backbone only once the command line is parsed (--help answers without them)
    from .analysis import (
        Selection,
        analyse_heads,
        head_label,
        write_attention_to_sites,
        write_heads_csv,
        write_heads_json,
    )
    from .backbone import meaningless_message
    from .pipeline import load_inputs, run_extraction, select_subset

    overwrite = bool(cfg.get("overwrite"))
    out = prepare_out_dir(cfg.out_dir, overwrite, "heads.csv")
    from .plots.heads import plot_head_heatmap, plot_protein_map

    def claim(ps) -> None:  # before the backbone: no user's file replaced, nothing written through a link
        ps = select_subset(ps, cfg.heads.proteins)
        names = set(file_names(p.id for p in ps).values()) | {file_names([p.id])[p.id] for p in ps}
        claim_out_files(out, "heads.csv", overwrite, FILES + PAGE_FILES + RUN_FILES,
                        [out / MAPS_DIR / f"{n}.png" for n in sorted(names)] if cfg.heads.plot_proteins > 0 else ())
        record_run(cfg, out)  # config.yaml now, run.log at the end

    backbone, proteins = load_inputs(cfg, check=claim, require_sites=True)
    proteins = select_subset(proteins, cfg.heads.proteins)
    t0 = time.perf_counter()
    extraction = run_extraction(cfg, backbone, proteins)
    t_extract = time.perf_counter() - t0
    t0 = time.perf_counter()
    analysis = analyse_heads(extraction, proteins, Selection.of(cfg.heads), seed=cfg.seed)
    t_score = time.perf_counter() - t0
    used = [p for p in proteins if p.id in set(analysis.protein_ids)]

    write_heads_csv(out / "heads.csv", analysis)
    s = cfg.heads.score
    plot_head_heatmap(
        analysis.get(""), analysis.selected, out / HEATMAP, label=f"pooled {s}",
        title=f"{backbone.label}: pooled {s} over {len(used)} proteins (theta={cfg.model.theta}); "
              f"strategy {analysis.strategy}" + (" [FALLBACK]" if analysis.fallback else ""),
    )
    # second pass, only over the proteins that get a map or CSV rows and only up to the deepest
    # selected layer (their full statistics are cached already)
    plot_ids = {p.id for p in used[: max(0, cfg.heads.plot_proteins)]}
    second = [p for p in used if p.id in plot_ids or p.sites]
    with_maps = run_extraction(cfg, backbone, second, map_heads=analysis.selected,
                               heads=analysis.selected or None)
    write_attention_to_sites(out / "attention_to_sites.csv", with_maps)
    heads_text = ", ".join(head_label(ly, h) for ly, h in analysis.selected[:8])
    if len(analysis.selected) > 8:
        heads_text += ", ..."
    plotted, to_plot = [], used[: max(0, cfg.heads.plot_proteins)]
    map_files = {pid: out / MAPS_DIR / f"{name}.png" for pid, name in file_names(p.id for p in to_plot).items()}
    record_outputs(out, "heads.csv", map_files.values())  # the next --overwrite run removes them
    for protein in to_plot:
        stats = with_maps.stats(protein)
        path = map_files[protein.id]
        plot_protein_map(stats.maps.mean(0), protein.sites or (), path, sequence=protein.sequence,
                         orthosteric=protein.orthosteric_sites or cfg.heads.orthosteric.get(protein.id, ()),
                         title=f"{protein.id} ({protein.length} aa, {backbone.label}): mean attention of "
                               f"{len(analysis.selected)} selected heads\n{heads_text}")
        plotted.append(str(path))
    files = {"heads_csv": str(out / "heads.csv"), "heads_json": str(out / "heads.json"),
             "heatmap": str(out / HEATMAP), "maps": plotted,
             "map_files": {pid: str(path) for pid, path in map_files.items()},
             "attention_to_sites": str(out / "attention_to_sites.csv")}
    # heads.json last: its presence means the run finished
    write_heads_json(out / "heads.json", analysis, backbone=backbone.name, meaningless=backbone.meaningless,
                     note=backbone.note, files=files,
                     seconds={"extraction": round(t_extract, 2), "scoring": round(t_score, 3)})

    log.info(analysis.summary())
    if analysis.fallback:  # in the summary too; a warning is shown under -q
        log.warning(f"FALLBACK: {analysis.fallback}")
    if analysis.excluded:
        log.warning(f"left out {len(analysis.excluded)} proteins: "
                    + "; ".join(f"{k} ({v})" for k, v in list(analysis.excluded.items())[:5]))
    log.info(f"scored {analysis.n_layers * analysis.n_heads} heads in {t_score:.2f} s; outputs in {out}/ "
             f"(heads.csv, heads.json, {HEATMAP}, {MAPS_DIR}/, attention_to_sites.csv)")
    log.info(f"report: {write_report(out, 'heads')} (open it in a browser)")
    if backbone.meaningless:
        log.warning(meaningless_message(backbone.name))
    return {"analysis": analysis, "files": files, "out_dir": str(out)}


if __name__ == "__main__":
    main()
