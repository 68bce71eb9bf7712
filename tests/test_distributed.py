"""Which process is global rank zero, from the variables Lightning's launchers, SLURM and torchrun set; only
rank zero prepares an output folder. (The runs on several processes are in test_ddp.py, slow.)"""

from __future__ import annotations

import pytest

from allo_lightning import distributed
from allo_lightning.outputs import prepare_out_dir, record_outputs


@pytest.fixture
def clean_env(monkeypatch):
    for key in distributed.RANK_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.mark.parametrize("env, zero", [
    ({}, True),
    ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
    ({"LOCAL_RANK": "1"}, False),                     # a process Lightning started on this machine
    ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),   # the first process of the second machine
    ({"SLURM_PROCID": "3", "LOCAL_RANK": "0"}, False),
    ({"RANK": "2"}, False),                           # torchrun
    ({"GROUP_RANK": "1"}, False),
    ({"SLURM_PROCID": "0"}, True),
    ({"RANK": "main"}, True),                         # not a number: some other tool's variable, not a rank
    ({"RANK": "main", "LOCAL_RANK": "1"}, False),
])
def test_rank_zero_from_the_environment(clean_env, env, zero):
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert distributed.is_rank_zero() is zero


def test_only_rank_zero_prepares_the_output_folder(clean_env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "heads.csv").write_text("finished\n")
    record_outputs(out, "heads.csv", [out / "maps" / "P.png"])
    (out / "maps").mkdir()
    (out / "maps" / "P.png").write_bytes(b"png")
    clean_env.setenv("LOCAL_RANK", "1")
    assert prepare_out_dir(out, overwrite=True, marker="heads.csv") == out  # rank 1: neither refuses nor deletes
    assert (out / "maps" / "P.png").exists()
    clean_env.setenv("LOCAL_RANK", "0")
    prepare_out_dir(out, overwrite=True, marker="heads.csv")  # rank 0 (--overwrite): the recorded file goes
    assert not (out / "maps" / "P.png").exists()


def test_a_later_extraction_on_rank_zero_uses_its_device_alone():
    kw = {"accelerator": "cuda", "devices": 4, "num_nodes": 2, "strategy": "ddp", "default_root_dir": "x"}
    assert distributed.one_device(kw) == {**kw, "devices": 1, "num_nodes": 1, "strategy": "auto"}


# -- planted survivors (a mutation run on distributed.py, issue 19) ------------------------------------------

@pytest.fixture
def fresh_state(monkeypatch):
    for key in ("shared_phase_over", "threads", "command"):
        monkeypatch.setitem(distributed._state, key, distributed._state[key])


def test_other_ranks_leave_with_exit_status_zero(clean_env, fresh_state):
    """After the shared extraction a rank other than zero ends with status 0: a launcher (torchrun, srun) takes
    a non-zero status for a failed worker and stops the whole job, rank zero's work with it."""
    distributed.begin_command()
    clean_env.setenv("LOCAL_RANK", "1")
    with pytest.raises(SystemExit) as e:
        distributed.end_shared_phase()
    assert e.value.code == 0 and distributed.shared_phase_over()


def test_rank_zero_gets_its_thread_count_back_after_the_shared_phase(clean_env, fresh_state):
    """A launcher lowers the thread count of each process (shared CPUs); rank zero then goes on alone (scores,
    probe) with the count it started with."""
    import torch

    threads = torch.get_num_threads()
    try:
        distributed.begin_command()
        torch.set_num_threads(threads + 1)  # as a launcher changes it during the shared phase
        distributed.end_shared_phase()
        assert torch.get_num_threads() == threads and distributed.shared_phase_over()
    finally:
        torch.set_num_threads(threads)


# -- the API on several processes: the process group an extraction opened is closed at exit --------------------

@pytest.fixture
def gloo_group(monkeypatch):
    """A one-process gloo group, as Lightning's DDP opens one; closed after the test whatever happened."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield dist
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.fixture
def exit_handlers(monkeypatch):
    """The handlers allo_lightning registers for the interpreter's exit (captured, not registered; those of other
    modules, e.g. torch's compiler imported meanwhile, are registered as usual)."""
    import atexit

    handlers: list = []
    register = atexit.register
    monkeypatch.setitem(distributed._state, "close_at_exit", False)
    monkeypatch.setattr(atexit, "register", lambda f, *a, **k: handlers.append(f) if f is distributed._close_group
                        else register(f, *a, **k))
    return handlers


def test_the_group_closes_at_exit_once_registered(gloo_group, exit_handlers):
    """Lightning closes the group it opens only for NCCL; left to the interpreter's teardown a gloo group sometimes
    aborted a process of a user's script ('terminate called without an active exception', -6)."""
    distributed.close_at_exit()
    distributed.close_at_exit()
    assert len(exit_handlers) == 1, "one handler, however many extractions"
    assert gloo_group.is_initialized()  # open for the rest of the script (a later Trainer reuses it)
    exit_handlers[0]()
    assert not gloo_group.is_initialized()
    exit_handlers[0]()  # closed already (e.g. by a command's end of the shared phase): nothing to do


def test_a_group_the_caller_opened_is_left_to_the_caller(gloo_group, exit_handlers, tmp_path, tiny):
    from allo_lightning.attention import extract
    from tests.conftest import CPU, random_proteins

    extract(random_proteins(2, lo=10, hi=20, seed=0), tiny, 0.3, cache_dir=str(tmp_path / "cache"),
            trainer_kwargs={**CPU, "default_root_dir": str(tmp_path)})
    assert gloo_group.is_initialized() and not exit_handlers


# -- planted survivors (a mutation run on distributed.py, this branch) ----------------------------------------

def _trainer(world: int = 2, external: bool = True, spawn: bool = False):
    from types import SimpleNamespace

    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    launcher = object.__new__(_MultiProcessingLauncher) if spawn else None
    env = SimpleNamespace(creates_processes_externally=external)
    return SimpleNamespace(world_size=world, strategy=SimpleNamespace(cluster_environment=env, launcher=launcher))


def test_who_joins_a_shared_extraction_with_nothing_of_its_own_to_run(clean_env, fresh_state, monkeypatch):
    """A process a launcher started (Lightning's other ranks, srun, torchrun) enters the shared extraction of a command
    whatever its own look at the cache found; not the first process of Lightning's own launcher (it starts the
    others only by entering), not ddp_spawn (one plan, pickled), not one process, not the API, not after the phase."""
    monkeypatch.setitem(distributed._state, "command", False)
    assert not distributed.joins_regardless(_trainer())  # the API: each call decides from its own look
    distributed.begin_command()
    assert distributed.in_shared_phase()
    assert distributed.joins_regardless(_trainer())
    assert not distributed.joins_regardless(_trainer(external=False))
    assert not distributed.joins_regardless(_trainer(world=1))
    assert not distributed.joins_regardless(_trainer(spawn=True))
    distributed.end_shared_phase()
    assert not distributed.in_shared_phase() and not distributed.joins_regardless(_trainer())


def test_the_end_of_the_shared_phase_happens_once(clean_env, fresh_state, gloo_group):
    """A later extraction of the command (on rank zero's device alone) ends in end_shared_phase again: it must leave
    alone whatever is open by then."""
    distributed.begin_command()
    gloo_group.destroy_process_group()
    distributed.end_shared_phase()
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_port()}", rank=0, world_size=1)
    distributed.end_shared_phase()
    assert dist.is_initialized()


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_other_ranks_print_nothing_on_stdout(clean_env, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "stdout", sys.stdout)
    distributed.quiet_other_ranks()
    kept = sys.stdout
    assert not getattr(kept, "_allo_quiet", False), "rank zero speaks"
    clean_env.setenv("LOCAL_RANK", "1")
    distributed.quiet_other_ranks()
    assert sys.stdout is not kept and sys.stdout._allo_quiet


def test_a_spawned_process_error_keeps_its_exit_status():
    """ddp_spawn gives a spawned process's error as its traceback text: the one line and the exit status of the
    error it ends in (an interruption: 130, not 2)."""
    ProcessRaisedException = type("ProcessRaisedException", (Exception,), {})
    failure = ProcessRaisedException("Traceback ...\nallo_lightning.errors.Interrupted: interrupted by SIGTERM\n")
    failure.error_index = 1
    err = distributed._spawned_user_error(failure, 2)
    assert str(err) == "process 1 of 2: interrupted by SIGTERM" and err.exit_code == 130
    assert distributed._spawned_user_error(ProcessRaisedException("Traceback ...\nKeyError: 'x'\n"), 2) is None
