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

``--trainer.strategy ddp_spawn`` (every rank a process spawned by Lightning, the first process only waits):
the first process shares a stop flag with them (:func:`spawn_flag`, set by a signal, also one that came
before they started); each spawned process handles SIGTERM / SIGINT itself (:func:`spawned_worker`: Ctrl-C,
and torch's SIGTERM to the others once one has stopped) and looks at the flag between batches, so every
one stops after its batch in flight (before, they went on to the end of their share).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from .errors import Interrupted

_state = {"signal": None, "graceful": 0, "children": None, "installed": False, "flag": None, "handler": None}
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
    if _state["flag"] is not None:  # ddp_spawn: the processes spawned stop after their batch in flight
        _state["flag"].set()
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
    _state["signal"], _state["installed"], _state["handler"] = None, True, _handler
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    if PASSED_ON not in previous:
        previous[PASSED_ON] = signal.signal(PASSED_ON, _passed_on_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state["signal"], _state["children"], _state["installed"], _state["flag"] = None, None, False, None


def _pass_on(signum: int) -> None:
    children = _state["children"]
    for proc in children() if children is not None else ():
        if proc.poll() is None:  # not SIGTERM: Lightning's SIGTERM handler in a child would wait for rank zero
            proc.send_signal(PASSED_ON)


def spawn_flag():
    """ddp_spawn, in the first process before Lightning spawns the others: a flag they inherit (pickled with
    the callback that holds it) and see set once this process got SIGTERM / SIGINT (already set when the
    signal came earlier). Cleared from this process's state by :func:`installed` at the end of the command."""
    import multiprocessing

    flag = multiprocessing.get_context("spawn").Event()
    if _state["signal"] is not None:
        flag.set()
    _state["flag"] = flag
    return flag


def _spawned_handler(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    if _state["signal"] is None:  # any signal only stops after the batch in flight (check() raises then)
        _state["signal"] = signal.SIGTERM if signum == PASSED_ON else signum


def spawned_worker(flag) -> None:
    """In a process spawned by Lightning (ddp_spawn), when its run starts (main thread): SIGTERM, SIGINT and
    PASSED_ON are only noted, :func:`check` raises after the batch in flight, also once ``flag`` (from
    :func:`spawn_flag`; None: none) is set. Never an immediate stop: a second signal is torch's SIGTERM to
    the others when one process has stopped (their batch in flight is kept); torch kills a process that
    does not end within 30 s, and the process dies with the first process (torch's parent-death signal)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state["installed"], _state["handler"], _state["flag"] = True, _spawned_handler, flag
    _state["graceful"] += 1  # for the rest of this process's life: it only runs the extraction
    for sig in {signal.SIGTERM, signal.SIGINT, PASSED_ON}:
        signal.signal(sig, _spawned_handler)


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
    mine = _state["handler"]
    if (_state["installed"] and mine is not None and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is not mine):
        signal.signal(signal.SIGTERM, mine)  # Lightning's teardown puts back what it found: this handler


def requested() -> bool:
    return _state["signal"] is not None


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived (call between units of work); in a process spawned by
    ddp_spawn also when the first process was stopped (its flag set: as if by SIGTERM)."""
    if _state["signal"] is None and _state["flag"] is not None and _state["handler"] is _spawned_handler \
            and _state["flag"].is_set():
        _state["signal"] = signal.SIGTERM
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
