"""``python -m allo_lightning.extract --config configs/smoke.yaml``: attention statistics of a
protein set, computed in batches with ``trainer.predict`` and cached on disk.

Safe to interrupt: each protein is cached as soon as its batch is done, and running the same command
again resumes (finished proteins come from the cache, damaged entries are recomputed). The summary
``extraction.json`` describes the cache and is rewritten (atomically) by every run: it holds no
finished work, so no ``--overwrite`` is needed to run again into the same folder (only to replace a
``config.yaml`` or ``run.log`` of yours there)."""

from __future__ import annotations

import logging
import time

from .outputs import claim_out_files, write_json
from .records import RUN_FILES, record_run
from .shell import command

log = logging.getLogger("allo_lightning.extract")  # not __name__: "__main__" under python -m allo_lightning.extract


def _extra(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a config.yaml, run.log or extraction.json of yours in the output folder")


@command("extract", __doc__, sections=("model", "data", "trainer"), flags=_extra)
def main(cfg) -> dict:
    # torch, Lightning and the backbone only once the command line is parsed (--help answers without them)
    import torch

    from .backbone import meaningless_message
    from .pipeline import check_writable_dir, load_inputs, run_extraction

    check_writable_dir(cfg.out_dir, "--trainer.default_root_dir")
    # nothing written through a link; the files of an earlier run here (extraction.json holds no finished work)
    # are replaced without --overwrite, a user's own file of the same name only with it
    claim_out_files(cfg.out_dir, "extraction.json", bool(cfg.get("overwrite")), ("extraction.json",) + RUN_FILES)
    backbone, proteins = load_inputs(cfg)
    t0 = time.perf_counter()
    result = run_extraction(cfg, backbone, proteins)
    seconds = time.perf_counter() - t0
    n_res = sum(p.length for p in proteins)
    count = torch.zeros(backbone.n_layers, backbone.n_heads)
    total = torch.zeros(backbone.n_layers, backbone.n_heads)
    for _, s in result:
        count += s.count.sum(-1)
        total += s.total
    summary = {
        "backbone": backbone.name, "backbone_identity": backbone.identity, "theta": cfg.model.theta,
        "proteins": len(proteins), "residues": n_res, "computed": len(result.computed),
        "from_cache": len(proteins) - len(result.computed), "seconds": round(seconds, 2),
        "layers": backbone.n_layers, "heads": backbone.n_heads, "cache_dir": str(result.cache.dir),
        "confident_pairs_per_residue": round(float(total.sum()) / max(n_res, 1), 3),
        "meaningless": backbone.meaningless, "note": backbone.note,
    }
    write_json(cfg.out_dir / "extraction.json", summary)
    record_run(cfg, cfg.out_dir)  # config.yaml now, run.log at the end (rank zero: the others have left)
    log.info(f"extracted {len(proteins)} proteins ({n_res} residues) with {backbone.name} "
             f"[{backbone.n_layers} layers x {backbone.n_heads} heads] in {seconds:.1f} s: "
             f"{summary['computed']} computed, {summary['from_cache']} from cache")
    log.info(f"theta={cfg.model.theta}: {summary['confident_pairs_per_residue']} confident (query, key) pairs per "
             f"residue over all heads")
    log.info(f"cache: {result.cache.dir}")
    log.info(f"summary: {cfg.out_dir / 'extraction.json'}")
    if backbone.meaningless:
        log.warning(meaningless_message(backbone.name))
    return summary


if __name__ == "__main__":
    main()
