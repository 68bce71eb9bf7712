"""How the package talks to its user: one mechanism for every message.

Library modules never print: they log with ``log = logging.getLogger(__name__)`` (all children of the
``allo_lightning`` logger; a command module, run as ``__main__`` by ``python -m allo_lightning.fit``,
names itself: ``logging.getLogger("allo_lightning.fit")``). A library user (a notebook) configures
logging as they like; by Python's default only warnings and errors reach stderr. ``print`` is left to
the entry points: the shell's usage, ``--version`` and ``error: ...`` lines, and ``python -m
allo_lightning.html``'s (its usage, its error line and the path of the page it wrote, its one result).

The shell calls :func:`configure` once per command, after its flags are parsed: a handler on the
``allo_lightning`` logger prints each record as its plain message, INFO and DEBUG on stdout, WARNING and
above on stderr with a ``WARNING: `` (``ERROR: ``) prefix; level INFO by default, WARNING with
``-q/--quiet`` (which also hides the progress bars: :func:`progress_shown`), DEBUG with
``-v/--verbose``. The stream is looked up for every record, so the run.log
capture (records) and pytest's capsys see it. On a process other than global rank zero
(``allo_lightning.distributed``) records below ERROR are dropped: a run on several processes says each
message once.

:func:`quiet_lightning` is called wherever the package builds a Lightning ``Trainer`` (through the API
too): Lightning's GPU/TPU banners, its advertising tips and its per-rank device lines are not shown.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Callable

LOGGER = "allo_lightning"
_LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                           "lightning.pytorch.accelerators.cuda", "lightning.fabric.accelerators.cuda",
                           # "[rank: 0] Received SIGTERM: 15": the command says it was interrupted, and how to resume
                           "lightning.pytorch.trainer.connectors.signal_connector")
_LIGHTNING_NOISE = (".*custom batch sampler.*", ".*does not have many workers.*", ".*litlogger.*",
                    ".*litmodels.*", ".*isinstance.treespec, LeafSpec.*")


class RankZeroFilter(logging.Filter):
    """Let a record through on global rank zero, or when it is an error (an error of any rank is shown)."""

    def __init__(self, is_rank_zero: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self._is_rank_zero = is_rank_zero

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if self._is_rank_zero is None:
            from .distributed import is_rank_zero

            return is_rank_zero()
        return self._is_rank_zero()


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname}: {text}"
        return text


class ConsoleHandler(logging.Handler):
    """INFO and DEBUG to ``sys.stdout``, WARNING and above to ``sys.stderr``: the streams of the moment the
    record is emitted (not of the moment the handler was made)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.setFormatter(_Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's own policy: never raise from a handler
            self.handleError(record)


def level_of(quiet: bool = False, verbose: bool = False) -> int:
    """The level of ``-q/--quiet`` (WARNING), ``-v/--verbose`` (DEBUG) or neither (INFO)."""
    if quiet and verbose:
        from .errors import InputError

        raise InputError("-q/--quiet and -v/--verbose: give one of them, not both.")
    return logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO


def configure(level: int = logging.INFO, is_rank_zero: Callable[[], bool] | None = None) -> logging.Handler:
    """The command line's console output (see the module docstring); replaces the handler of an earlier
    call (several commands may run in one process). Returns the handler."""
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(old)
    handler = ConsoleHandler()
    handler.addFilter(RankZeroFilter(is_rank_zero))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # the command owns the terminal: a root handler would print each line twice
    return handler


def progress_shown() -> bool:
    """Whether progress bars are drawn: not under the command line's ``-q/--quiet`` (the console configured
    above INFO); through the Python API (nothing configured) the settings alone decide."""
    logger = logging.getLogger(LOGGER)
    configured = any(isinstance(h, ConsoleHandler) for h in logger.handlers)
    return not configured or logger.isEnabledFor(logging.INFO)


def unconfigure() -> None:
    """Undo :func:`configure` (at the end of a command): the library is silent again but for warnings."""
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(old)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def quiet_lightning() -> None:
    """Hide what Lightning says that means nothing to our users (banners of the devices available, tips
    advertising its cloud products, per-rank device lines; warnings about our own batch sampler and
    worker count, and a deprecation inside Lightning). Lightning's warnings and errors still show."""
    for name in _LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
    for message in _LIGHTNING_NOISE:
        warnings.filterwarnings("ignore", message=message)
