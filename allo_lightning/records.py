"""Run records: ``config.yaml`` (every resolved setting of the run, replayable with ``--config``) and
``run.log`` (what the command printed) in the output folder.

:func:`capture` (around every command, in :mod:`allo_lightning.shell`) copies what is printed to
stdout/stderr into memory while it still reaches the terminal; a command calls :func:`record_run` once
its output folder is accepted, and ``run.log`` is written there when the command ends (also when it
fails with an error or is interrupted). Only the main process (rank zero) writes them."""

from __future__ import annotations

import re
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from .outputs import write_text

CONFIG = "config.yaml"
LOG = "run.log"
_HEAD = "# allo_lightning "  # the first line of both records: the command, then its argv (run.log) or ":" (config.yaml)


def written_by(path: Path) -> str | None:
    """The command whose record (config.yaml, run.log) ``path`` is, from the first line written above; None for
    a file that is not one. Commands sharing a folder (heads, fit and report in outputs/smoke) each write their
    own records there: the folder keeps the last command's."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return None
    if not first.startswith(_HEAD):
        return None
    word = first[len(_HEAD):].split(" ", 1)[0].strip()
    return word.removesuffix(":") or None
RUN_FILES = (CONFIG, LOG)  # what record_run writes: every command declares them (outputs.claim_out_files)
NOT_RECORDED = ("overwrite", "config", "quiet", "verbose")  # actions of one run, not settings

_current: dict = {}


class _Tee:
    """Writes go to the stream and to the buffer; everything else (encoding, isatty...) is the stream's.
    After the capture a tee is detached: something that kept it (a logging handler made during the run)
    then writes to whatever ``sys.<name>`` is now, and nothing more is buffered."""

    def __init__(self, stream, buffer: list[str], name: str) -> None:
        self._stream, self._buffer, self._name = stream, buffer, name

    def detach(self) -> None:
        self._buffer = None
        self._stream = None

    def write(self, text: str) -> int:
        if self._buffer is None:
            return getattr(sys, self._name).write(text)
        self._buffer.append(text)
        return self._stream.write(text)

    def _target(self):
        return getattr(sys, self._name) if self._stream is None else self._stream

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:
        return self._target().fileno()

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._target(), name)


def _rank_zero() -> bool:
    from .distributed import is_rank_zero  # the launchers' variables (SLURM's too)

    return is_rank_zero()


def clean_log(text: str) -> str:
    """Terminal output as a file: a line redrawn with carriage returns (progress bars) keeps its last
    state; terminal colour codes are removed."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n"))


@contextmanager
def capture(argv: list[str] | None = None):
    """Copy stdout/stderr into memory for run.log (written if :func:`record_run` named a folder)."""
    buffer: list[str] = []
    saved = sys.stdout, sys.stderr, dict(_current)
    _current.clear()
    _current.update(buffer=buffer, started=time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    argv=list(sys.argv[1:] if argv is None else argv))
    tees = _Tee(sys.stdout, buffer, "stdout"), _Tee(sys.stderr, buffer, "stderr")
    sys.stdout, sys.stderr = tees
    status = "failed"
    try:
        yield
        status = "finished"
    except SystemExit as e:
        status = "finished" if e.code in (0, None) else f"exited with status {e.code}"
        raise
    except BaseException:  # a bug or an interruption outside the handler: keep its traceback in run.log too
        buffer.append(traceback.format_exc())
        raise
    finally:
        sys.stdout, sys.stderr = saved[0], saved[1]
        for tee in tees:
            tee.detach()
        out = _current.get("out")
        if out is not None and _rank_zero():
            head = (f"{_HEAD}{_current.get('command', '')} {' '.join(map(str, _current['argv']))}\n"
                    f"# started {_current['started']}, ended {time.strftime('%Y-%m-%d %H:%M:%S %z')}: {status}\n")
            try:
                write_text(Path(out) / LOG, head + clean_log("".join(buffer)))
            except OSError:
                pass  # the folder went away: the terminal still has everything
        _current.clear()
        _current.update(saved[2])


def resolved_config(cfg) -> dict:
    """Every setting of the run as a config file gives them (sections as mappings, the command's own
    flags at the top level); ``--overwrite`` is left out, and so is a null that is also the default
    (``model.seed: null`` = "from the checkpoint", which a config file cannot spell for an int)."""
    defaults = cfg.defaults

    def keep(value, default) -> bool:
        return not (value is None and default is None)

    out = {}
    for k, v in cfg.values.items():
        if k in NOT_RECORDED or not keep(v, defaults.get(k, 0)):
            continue
        if isinstance(v, dict):
            d = defaults.get(k) if isinstance(defaults.get(k), dict) else {}
            v = {a: b for a, b in v.items() if keep(b, d.get(a, 0))}
        out[k] = v
    return out


def record_run(cfg, out: str | Path) -> None:
    """Write ``out/config.yaml`` now and ``out/run.log`` when the command ends."""
    import yaml

    if not _rank_zero():
        return
    out = Path(out)
    _current["out"] = out
    _current["command"] = cfg.spec.name
    text = (f"{_HEAD}{cfg.spec.name}: every setting of this run. Replay it with\n"
            f"#   allo-lightning {cfg.spec.name} --config {out / CONFIG} [flags that override it]\n"
            + yaml.safe_dump(resolved_config(cfg), sort_keys=False, allow_unicode=True))
    write_text(out / CONFIG, text)
