"""The data bundled with the package (see allo_lightning/resources/README.md for sources)."""

from __future__ import annotations

import csv
import dataclasses
import logging
from importlib import resources
from pathlib import Path

from ..errors import AlloError, InputError
from .io import ProteinList, read_proteins, read_table
from .protein import Protein

log = logging.getLogger(__name__)

BUNDLED = {"gpcr": "gpcr_allosteric.tsv", "asd": "asd_allosteric.tsv", "seed": "seed_gpcr_cases.tsv"}
MODULATORS = ("ligand", "all")


def read_bundled(name: str) -> list[Protein]:
    """The proteins of one bundled set, as the package uses them.

    ``seed``: the rows whose ``site_kind`` is ``orthosteric`` list ligand-binding (orthosteric) pockets,
    not allosteric sites: their residues become ``orthosteric_sites`` and ``sites`` is None (no
    allosteric label). Only the A2A sodium-site row (``P29274_Na``) keeps ``sites``; it also gets the A2A
    pocket (same sequence) as ``orthosteric_sites``, so the orthosteric contrast has one protein."""
    path = bundled_path(name)
    proteins = read_table(path)
    if name != "seed":
        return proteins
    with open(path, newline="", encoding="utf-8") as fh:
        kind = {row["id"]: (row.get("site_kind") or "").strip() for row in csv.DictReader(fh, delimiter="\t")}
    out = [dataclasses.replace(p, sites=None, orthosteric_sites=p.sites) if kind.get(p.id) == "orthosteric" else p
           for p in proteins]
    # the orthosteric contrast needs both labels on one protein: a pocket row lends its residues to the
    # allosteric row of the same sequence (A2A: P29274's pocket -> P29274_Na). One protein can never
    # resolve a contrast (sign-flip floor 1/2): it shows the columns, it cannot drop a head.
    pockets = {p.sequence: p.orthosteric_sites for p in out if p.sites is None and p.orthosteric_sites}
    return [dataclasses.replace(p, orthosteric_sites=pockets[p.sequence])
            if p.sites and not p.orthosteric_sites and p.sequence in pockets else p for p in out]


def bundled_path(name: str = "asd") -> Path:
    if name not in BUNDLED:  # DataConfig checks --data.bundled; this guards a name given in Python
        raise AlloError(f"unknown bundled data set {name!r}: choose one of {', '.join(BUNDLED)}, or read your own "
                        "file with read_proteins.")
    return Path(str(resources.files("allo_lightning") / "resources" / BUNDLED[name]))


def _count(value, name: str) -> int | None:
    """``value`` (None, or a whole number >= 1): DataConfig checks the flags; this guards other settings
    objects given in Python (a negative limit would silently drop proteins from the end)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise AlloError(f"load_proteins: {name} must be None or a whole number >= 1, got {value!r}.")
    return value


def load_proteins(cfg, max_length: int | None = None, require_sites: bool = False) -> list[Protein]:
    """Proteins for a DataConfig: ``cfg.path`` (its first ``limit`` proteins, if given), or the bundled
    set with its subset options.

    ``max_length`` is the backbone's limit: a user's file with a longer protein is an error (named, with
    the limit and what to do, before any work starts); the bundled set's longer proteins are skipped
    with a message. ``require_sites`` (training): every protein of a user file must have its sites (see
    read_proteins); the bundled sets are curated (the seed set's pocket rows have no allosteric label)."""
    limit = _count(cfg.limit, "limit")
    if cfg.path:
        proteins = read_proteins(cfg.path, max_length=max_length, require_sites=require_sites)
        if limit and len(proteins) > limit:  # the whole file is checked, then the first N proteins kept
            proteins = ProteinList(proteins[:limit], proteins.notes + [
                f"--data.limit {limit}: using the first {limit} of the {len(proteins)} proteins of {cfg.path}."])
        return proteins
    cfg_max = _count(cfg.max_length, "max_length")
    proteins = read_bundled(cfg.bundled)
    modulators = getattr(cfg, "modulators", "ligand")
    if modulators not in MODULATORS:  # DataConfig checks the flag; this guards other settings objects
        raise AlloError(f"load_proteins: modulators must be one of {', '.join(MODULATORS)}, got {modulators!r}.")
    if modulators == "ligand":  # ASD rows labelled from an ion or a crystallisation additive are left out
        proteins = [p for p in proteins if (p.modulator_class or "ligand") == "ligand"]
    if cfg.family:
        proteins = [p for p in proteins if (p.family or "").lower() == cfg.family.lower()]
        if not proteins:
            families = sorted({p.family for p in read_bundled(cfg.bundled) if p.family})
            raise InputError(
                f"the bundled {cfg.bundled!r} set has no protein of family {cfg.family!r} (--data.family). "
                f"Choose one of: {', '.join(families[:20])}{' ...' if len(families) > 20 else ''}.",
                todo="Choose an existing family.",
            )
    limits = [x for x in (max_length, cfg_max) if x]
    if limits:
        limit_len = min(limits)
        long = [p for p in proteins if p.length > limit_len]
        if long:
            log.warning(f"bundled data: skipping {len(long)} protein(s) longer than {limit_len} residues: "
                        + ", ".join(f"{p.id} ({p.length})" for p in long[:8]) + (" ..." if len(long) > 8 else ""))
        proteins = [p for p in proteins if p.length <= limit_len]
    if limit:
        proteins = proteins[:limit]
    if not proteins:
        raise InputError(
            f"no bundled {cfg.bundled!r} protein is left after the length limit (--data.max_length / the "
            "backbone's context). Raise --data.max_length or choose another backbone.",
            todo="Raise --data.max_length or choose another backbone.",
        )
    groups: dict[str, list[str]] = {}  # the reader's notes, for the proteins kept
    for p in proteins:
        if p.cluster and p.cluster.startswith("seq:"):
            groups.setdefault(p.cluster, []).append(p.id)
    return ProteinList(proteins, [f"bundled {cfg.bundled!r} set: proteins {', '.join(ids[:6])} share a sequence; "
                                  f"they are in cluster {c!r} so that no split puts them on two sides."
                                  for c, ids in groups.items() if len(ids) > 1])
