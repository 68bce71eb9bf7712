"""report.html: one page per run that a user double-clicks (no server, no network).

:func:`write_report` builds the page of a command from the files it wrote (the run records it shows,
``config.yaml`` and ``run.log``, are written by :mod:`allo_lightning.records`). The 3-D view uses the
vendored 3Dmol.js (``vendor/``)."""

from .build import PAGE_FILES, REPORT, write_report

__all__ = ["PAGE_FILES", "REPORT", "write_report"]
