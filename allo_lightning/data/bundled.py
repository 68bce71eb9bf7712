"""The data bundled with the package (see allo_lightning/resources/README.md for sources)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .io import InputError, Protein, read_proteins, read_table

BUNDLED = {"asd": "asd_allosteric.tsv", "seed": "seed_gpcr_cases.tsv"}


def bundled_path(name: str = "asd") -> Path:
    if name not in BUNDLED:
        raise InputError(f"unknown bundled data set {name!r}; choose one of {', '.join(BUNDLED)}.")
    return Path(str(resources.files("allo_lightning") / "resources" / BUNDLED[name]))


def load_proteins(cfg, max_length: int | None = None) -> list[Protein]:
    """Proteins for a DataConfig: ``cfg.path`` whole, or the bundled set with its subset options.

    ``max_length`` is the backbone's limit: a user's file with a longer protein is an error (named),
    the bundled set's longer proteins are skipped with a message."""
    if cfg.path:
        return read_proteins(cfg.path, max_length=max_length)
    proteins = read_table(bundled_path(cfg.bundled))
    if cfg.family:
        proteins = [p for p in proteins if (p.family or "").lower() == cfg.family.lower()]
    limit_len = min(x for x in (max_length, cfg.max_length) if x) if (max_length or cfg.max_length) else None
    if limit_len:
        long = [p for p in proteins if p.length > limit_len]
        if long:
            print(f"bundled data: skipping {len(long)} protein(s) longer than {limit_len} residues: "
                  + ", ".join(f"{p.id} ({p.length})" for p in long[:8]) + (" ..." if len(long) > 8 else ""))
        proteins = [p for p in proteins if p.length <= limit_len]
    if cfg.limit:
        proteins = proteins[: cfg.limit]
    if not proteins:
        raise InputError(f"the bundled {cfg.bundled!r} set has no protein matching family={cfg.family!r}.")
    return proteins
