"""The errors a user can cause, and nothing else: one base class, one handler in the entry point.

Every :class:`UserError` message names the file, line, id or flag concerned and says what to do; the
command-line entry point prints it as one line on stderr and exits with status 2 (never a traceback).
Anything else that escapes is a bug and keeps its traceback.

The core (``analysis``, ``probe``, ``attention``, ``backbone``, ``data``) raises :class:`AlloError` for
arguments or data it cannot work with; :class:`InputError` (a located input: file, line, id, flag) and
:class:`CheckpointError` (a probe checkpoint) are AlloErrors that say where. A backbone that cannot be
loaded or run as asked is a :class:`BackboneError`, a place that cannot be written an
:class:`OutputError`. Settings are validated once, by the config dataclasses (allo_lightning.config),
which the command line and the Python API both go through.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input or a request that cannot be carried out; the message says where and what to do."""


class AlloError(UserError, ValueError):
    """The one exception the core (``analysis``, ``probe``, ``attention``, ``backbone``, ``data``) raises.

    Raised when a core function is called with arguments or data it cannot work with (wrong shapes,
    unknown names, one class only, ...). It is a :class:`UserError`, so when it is reached from the
    command line it becomes one line on stderr and exit status 2, and a :class:`ValueError`, so Python
    callers' ``except ValueError`` keeps working. Settings are validated once, by the config
    dataclasses; the core does not re-check them with its own wording. Genuine internal invariants (bugs)
    stay ``assert`` statements.
    """


class InputError(AlloError):
    """Bad user input (a data file, a flag, a config value).

    Attributes (None where unknown): ``path``, ``line`` (1-based), ``pid`` (protein id), ``todo``
    (what the user should do) and ``setting`` (the refused setting, ``section.key``). The message is
    ``"<file>, line <n>, id '<id>': <problem> <todo>"``.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 pid: str | None = None, todo: str | None = None,
                 setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.path = None if path is None else str(path)
        self.line = line
        self.pid = pid
        self.todo = todo


class BackboneError(UserError, RuntimeError):
    """The backbone could not be loaded or run as asked (weights, device, dtype)."""


class CheckpointError(AlloError):
    """A probe checkpoint that cannot be used; the message names the file and says what to do."""


class OutputExistsError(UserError, RuntimeError):
    """An output that exists already and would be replaced without ``--overwrite``."""


class OutputError(UserError, OSError):
    """An output (or cache) location that cannot be written."""


class ProcessFailed(UserError, RuntimeError):
    """Another process of a multi-process run (``--trainer.devices N``, ``--trainer.num_nodes M``) failed with
    a user error or a signal; the message is that process's, and ``exit_code`` its exit status."""

    exit_code = 2


class Interrupted(UserError):
    """The run was stopped by a signal (SIGTERM, SIGINT); finished work is kept."""

    exit_code = 130
