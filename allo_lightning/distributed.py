"""Several processes (``--trainer.devices N --trainer.strategy ddp``, ``--trainer.num_nodes M``): the one rule
every command follows.

Extraction is shared: every process runs its share of the batches and writes only its own cache entries.
When the first extraction of a command is over, all processes meet at a barrier (every entry is then
complete); the processes other than global rank zero leave quietly (exit status 0), and everything after
it (scores, probes, outputs, any further extraction on one device) runs once, on rank zero. Before that
point nothing is written to an output folder by a rank other than zero.

Lightning starts the other processes itself (it runs the same command line again with ``LOCAL_RANK`` set)
or a cluster does (SLURM's ``srun``, ``torchrun``, or the variables ``MASTER_ADDR``, ``MASTER_PORT``,
``NODE_RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set by hand); a process tells its rank from the variables
those launchers set, before any model is loaded.

Called from Python (the API: ``extract(..., trainer_kwargs={"strategy": "ddp", ...})`` in a user's script), every
process runs the whole script, as with any Lightning script: ``extract`` shares the work as above and returns
every protein's statistics on every rank (no rank leaves). The process group its Trainer made stays open for the
rest of the script (a later Trainer of the script reuses it, as Lightning expects) and is closed when the
interpreter exits (:func:`close_at_exit`)."""

from __future__ import annotations

import atexit
import os
import sys

# Variables with which Lightning's launchers, SLURM, torchrun and LSF give a process its place; global
# rank zero is the process where every one that is set is 0.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
_state = {"shared_phase_over": False, "threads": None, "close_at_exit": False, "command": False}


def group_open() -> bool:
    """Is a process group open in this process (e.g. one the caller made before calling the API)?"""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def close_at_exit() -> None:
    """Close the process group an extraction's Trainer opened when the interpreter exits (once registered).

    Lightning closes the group it opens only for NCCL; a gloo group left to the interpreter's own teardown
    sometimes aborted a process ("terminate called without an active exception", status -6, or a stray line on
    stderr). Closing it is local to each process: no rank waits for another."""
    if not _state["close_at_exit"]:
        _state["close_at_exit"] = True
        atexit.register(_close_group)


def _close_group() -> None:
    if group_open():
        import torch.distributed as dist

        dist.destroy_process_group()


def is_rank_zero() -> bool:
    """Is this process global rank zero (or the only process)?"""
    if group_open():
        import torch.distributed as dist

        return dist.get_rank() == 0
    for key in RANK_VARIABLES:
        value = os.environ.get(key, "").strip()
        if value and value != "0":
            try:
                if int(value) != 0:
                    return False
            except ValueError:
                continue
    return True


def shared_phase_over() -> bool:
    """True once the first extraction of this command is over (see the module docstring)."""
    return _state["shared_phase_over"]


def in_shared_phase() -> bool:
    """True during a command's first extraction (the shared one), until :func:`end_shared_phase`."""
    return _state["command"] and not _state["shared_phase_over"]


def joins_regardless(trainer) -> bool:
    """In a command's shared extraction, must this process enter ``trainer.predict`` even when its own look at the
    cache found nothing to run? Yes when it is one of several processes that a launcher started (Lightning's
    other ranks, srun, torchrun, variables set by hand): rank zero's plan decides what runs, and a rank that
    looked at the cache at another moment (another job filling it meanwhile, a network file system showing it
    late) and stayed out left the others waiting for it in the rendezvous until gloo's 30-minute timeout. Not
    the first process of Lightning's own launcher: it starts the others only when it enters predict itself."""
    if not in_shared_phase() or trainer.world_size <= 1:
        return False
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    if isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher):
        return False  # ddp_spawn: the spawned processes get the first process's plan
    env = getattr(trainer.strategy, "cluster_environment", None)
    return bool(getattr(env, "creates_processes_externally", False))


def end_shared_phase() -> None:
    """After the first extraction (whose end is a barrier of all processes): the other ranks leave with
    exit status 0; rank zero closes the process group, gets its thread count back and goes on alone."""
    if _state["shared_phase_over"]:
        return
    _state["shared_phase_over"] = True
    zero = is_rank_zero()
    if group_open():
        import torch.distributed as dist

        dist.destroy_process_group()
    if not zero:
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(0)
    if _state["threads"] is not None:
        import torch

        torch.set_num_threads(_state["threads"])


def settle(trainer, failure: BaseException | None, joined: bool = True) -> None:
    """The end of an extraction (``failure``: how this process's share ended, None when it went well).

    One process: ``failure`` is raised as it is. Several: every process tells the others how its share
    ended (this exchange is also the barrier after which every entry is complete, so no rank ever reads
    another's unfinished entry). When all went well nothing more happens. When any failed (an error, a
    signal), every process stops, and only rank zero says why: its own failure, else the first other
    process's (one line, with that process's exit status; a bug is re-raised with its traceback, which that
    process printed). The other processes leave quietly with status 0: a process Lightning started that
    exits otherwise makes Lightning kill every process, rank zero included, before it has said why; and
    a rank waiting in a barrier for a rank that failed got a gloo traceback (or, with NCCL, waited).
    ``joined`` False (this process failed before the batch plan was shared): the failure is raised at once."""
    if trainer.world_size <= 1 or not group_open():
        if failure is not None:
            from . import interrupt

            if trainer.world_size > 1 and interrupt.requested():  # ddp_spawn, this process stopped: its message
                interrupt.check()
            raise _spawned_user_error(failure, trainer.world_size) or failure
        trainer.strategy.barrier("extraction written")
        return
    if failure is not None and not joined:
        # failed before every rank took the batch plan (e.g. out of memory in one rank's setup): the others wait
        # in Lightning's own collectives, not in this exchange, which would then never end; raised as it is, the
        # others' collective fails at once (gloo's connection error) and they stop too
        raise failure
    import torch.distributed as dist

    from .errors import ProcessFailed, UserError

    rank, world = dist.get_rank(), dist.get_world_size()
    mine = None
    if failure is not None:
        user = isinstance(failure, UserError)
        mine = {"rank": rank, "user": user, "code": int(getattr(failure, "exit_code", 2)) if user else 1,
                "message": " ".join(str(failure).split()) if user else f"{type(failure).__name__}: {failure}"}
    from . import interrupt

    outcomes: list = [None] * world
    try:
        with interrupt.graceful():  # a signal now (e.g. passed on by rank zero) is only noted: the exchange ends
            dist.all_gather_object(outcomes, mine)
    except RuntimeError as e:  # a process died without a word (killed, out of memory): gloo's connection error
        if failure is not None:
            raise failure from None
        raise ProcessFailed(f"another process of this {world}-process run stopped before its share of the "
                            f"extraction was done ({type(e).__name__}); finished proteins are cached: run the same "
                            "command again to resume.") from None
    failed = [o for o in outcomes if o is not None]
    if not failed:
        if rank == 0:
            interrupt.check()  # a signal during the exchange stops the command (the other ranks leave anyway)
        return
    dist.destroy_process_group()
    _state["shared_phase_over"] = True
    if rank != 0:
        if failure is not None and not isinstance(failure, UserError):
            import traceback

            traceback.print_exception(failure, file=sys.stderr)  # a bug keeps its traceback
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(0)
    if failure is not None:
        raise failure
    first = failed[0]
    if not first["user"]:
        raise RuntimeError(f"process {first['rank']} of {world} failed ({first['message']}); its traceback is above")
    err = ProcessFailed(f"process {first['rank']} of {world}: {first['message']}")
    err.exit_code = first["code"]
    raise err


def _spawned_user_error(failure: BaseException, world: int):
    """``--trainer.strategy ddp_spawn``: torch gives a spawned process's error as the text of its traceback;
    when it ends in one of this package's user errors, that error as one line (a ProcessFailed), else None."""
    import re

    from . import errors

    if type(failure).__name__ != "ProcessRaisedException":
        return None
    last = [line for line in str(failure).splitlines() if line.strip()][-1:] or [""]
    m = re.match(r"allo_lightning\.errors\.(\w+): (.*)$", last[0])
    kind = getattr(errors, m.group(1), None) if m else None
    if not (isinstance(kind, type) and issubclass(kind, errors.UserError)):
        return None
    err = errors.ProcessFailed(f"process {getattr(failure, 'error_index', '?')} of {world}: {m.group(2)}")
    err.exit_code = int(getattr(kind, "exit_code", 2))
    err.__suppress_context__ = True
    return err


def one_device(trainer_kwargs: dict) -> dict:
    """Trainer arguments for an extraction after the shared phase: rank zero's device alone."""
    return {**trainer_kwargs, "devices": 1, "num_nodes": 1, "strategy": "auto"}


def quiet_other_ranks() -> None:
    """On ranks other than zero, nothing on stdout (rank zero says it once); errors still reach stderr."""
    if not is_rank_zero() and not getattr(sys.stdout, "_allo_quiet", False):
        quiet = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        quiet._allo_quiet = True  # type: ignore[attr-defined]
        sys.stdout = quiet


def begin_command() -> None:
    """At the start of every command (several may run in one process, e.g. in tests): a fresh shared
    phase, torch's thread count noted, stdout quiet on ranks other than zero."""
    import torch

    _state["shared_phase_over"] = False
    _state["command"] = True
    _state["threads"] = torch.get_num_threads()
    quiet_other_ranks()
