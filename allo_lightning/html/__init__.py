"""report.html: one page per run that a user double-clicks (no server, no network).

:func:`write_report` builds the page of a command from the files it wrote; :func:`record_run` writes the
run records (``config.yaml``, ``run.log``). The 3-D view uses the vendored 3Dmol.js (``vendor/``)."""

from .build import REPORT, write_report
from .records import record_run

__all__ = ["REPORT", "record_run", "write_report"]
