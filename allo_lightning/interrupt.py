"""Stopping on SIGTERM / SIGINT (schedulers, ``timeout``, Ctrl-C) without losing finished work.

The command-line entry point runs every command inside :func:`installed`. Outside a :func:`graceful`
block a signal stops the command at once (an :class:`~allo_lightning.errors.Interrupted` is raised
where the program is, and outputs are only ever written atomically, so no partial result is left that
a later command accepts).
Inside a :func:`graceful` block (extraction) the signal is only recorded: the batch in flight is
finished and cached, then :func:`check` raises. A second signal always stops at once.

Several processes started by Lightning (``--trainer.devices N``: the other ranks are children of this
process): a signal that reaches this process alone (``kill``, ``timeout``; Ctrl-C reaches them all) is
passed on to them (:func:`forward_to`), also one that came while they were still starting, so that no rank
goes on alone (it used to extract its whole share, then fail in the final barrier).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from .errors import Interrupted

_state = {"signal": None, "graceful": 0, "children": None, "installed": False}
_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}
# how a signal is passed on to the processes this one started: a signal of its own, which only ever asks to stop
# after the batch in flight (a child that also got the user's signal, e.g. Ctrl-C, must not take it as a second)
PASSED_ON = getattr(signal, "SIGUSR2", signal.SIGINT)


def _message(signum: int, resume: bool) -> str:
    name = _NAMES.get(signum, f"signal {signum}")
    if resume:
        return (f"interrupted by {name}; finished proteins are cached: run the same command again to resume.")
    return f"interrupted by {name}; no result was written. Run the same command again."


def _raise(signum: int, resume: bool) -> None:
    err = Interrupted(_message(signum, resume))
    err.exit_code = 128 + int(signum)
    raise err


def _handler(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    first = _state["signal"] is None
    _state["signal"] = signum
    # Lightning's own SIGTERM handler (installed for a run until reclaim(), calling this one after its own)
    # passes a first SIGTERM on itself; anything else reaches this handler directly
    if signal.getsignal(signum) is _handler:
        _pass_on(signum)
    if _state["graceful"] and first:
        return  # finish the batch in flight; check() raises afterwards
    _raise(signum, resume=bool(_state["graceful"]))


def _passed_on_handler(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    if _state["signal"] is None:  # the first process was stopped: stop as if by SIGTERM; never a second signal
        _handler(signal.SIGTERM, frame)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Handle SIGTERM and SIGINT as described above while the block runs (main thread only; elsewhere
    nothing changes); the previous handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["signal"], _state["installed"] = None, True
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    if PASSED_ON not in previous:
        previous[PASSED_ON] = signal.signal(PASSED_ON, _passed_on_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state["signal"], _state["children"], _state["installed"] = None, None, False


def _pass_on(signum: int) -> None:
    children = _state["children"]
    for proc in children() if children is not None else ():
        if proc.poll() is None:  # not SIGTERM: Lightning's SIGTERM handler in a child would wait for rank zero
            proc.send_signal(PASSED_ON)


def forward_to(children) -> None:
    """From now on pass a signal that reaches this process on to the processes ``children()`` returns
    (``subprocess.Popen`` objects; None: stop), as PASSED_ON; a signal already received is passed on now."""
    _state["children"] = children
    if children is not None and _state["signal"] is not None:
        _pass_on(_state["signal"])


def reclaim() -> None:
    """Within :func:`installed`: make this module's handler the SIGTERM handler again where Lightning put its
    own for a run (called when prediction starts). Lightning's broadcasts from rank zero inside the signal
    handler; with another rank already waiting in the end-of-extraction exchange, both waited forever."""
    if (_state["installed"] and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is not _handler):
        signal.signal(signal.SIGTERM, _handler)  # Lightning's teardown puts back what it found: this handler


def requested() -> bool:
    return _state["signal"] is not None


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived (call between units of work)."""
    if _state["signal"] is not None:
        _raise(_state["signal"], resume=True)


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """Within this block a first signal is only recorded (see :func:`check`)."""
    _state["graceful"] += 1
    try:
        yield
    finally:
        _state["graceful"] -= 1
