"""What the benchmarks share (extraction, inference, table): the shapes, theta, random proteins, the
backbone with random peaked attention, timing and memory probes. A leaf of ``bench``: it imports no
sibling, so no benchmark module imports one that imports it back."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..backbone.registry import REGISTRY
from ..errors import InputError

# the grid's model shapes (d_model, n_heads, n_layers), from the backbone registry
SHAPES = {name: spec.shape for name, spec in REGISTRY.items()}  # tiny / esm2_tiny: smoke runs of the bench
DEFAULT_SHAPES = ["esmc_300m", "esmc_600m"]
AMINO = "ACDEFGHIKLMNPQRSTVWY"
THETA = 0.3
N_DRAWS = 1000  # the original scripts' random site draws per head


def emit(text: str = "") -> None:
    """One line (or block) of a benchmark's results: the tables are the bench's output, so they go to stdout
    (flushed: a long grid shows each table as it is done). Progress and notes go to the module's logger."""
    print(text, flush=True)


# -- set-up --------------------------------------------------------------------------------------------
def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise InputError(f"--device {name!r}: not a device. Give auto, cpu, cuda, cuda:N or mps.") from None
        mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.type == "cuda" and (device.index or 0) >= n_cuda:
            raise InputError(f"--device {name}: no such CUDA device here. Use --device cpu (or auto).")
        if device.type == "mps" and not mps:
            raise InputError(f"--device {name}: Apple's MPS is not available here. Use --device cpu (or auto).")
        if device.type not in ("cpu", "cuda", "mps"):
            raise InputError(f"--device {name}: not supported here. Give auto, cpu, cuda, cuda:N or mps.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def make_backbone(shape: str, device: torch.device, seed: int = 0):
    from ..backbone.builders import build_model, wrap
    from ..backbone.loading import _sharpen_tiny

    torch.manual_seed(seed)
    spec = REGISTRY[shape]
    model = build_model(spec, device=device)
    # random q/k gains: peaked attention like a trained model's (plain random weights give
    # near-uniform attention with nothing above theta, which would make the original loop look cheap)
    if spec.family == "esmc":
        _sharpen_tiny(model)
    else:
        with torch.no_grad():
            for layer in model.encoder.layer:
                for lin in (layer.attention.self.query, layer.attention.self.key):
                    lin.weight.normal_(0.0, 2.0 / spec.d_model**0.5)
    backbone = wrap(spec, model).freeze()
    backbone.identity = f"{shape}-random-seed{seed}"
    return backbone


def random_protein(length: int, seed: int, pid: str = "P"):
    from ..data import Protein

    rng = random.Random(seed)
    seq = "".join(rng.choice(AMINO) for _ in range(length))
    k = max(3, round(0.04 * length))  # ~16 sites at 400 residues (the ASD set's mean is 15.9)
    return Protein(id=pid, sequence=seq, sites=tuple(sorted(rng.sample(range(1, length + 1), k))))


def labels_of(protein) -> torch.Tensor:
    y = torch.zeros(protein.length, dtype=torch.bool)
    y[[s - 1 for s in protein.sites]] = True
    return y


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Timing:
    wall: float
    cpu: float


def best_of(fn: Callable[[], object], device: torch.device, times: list[Timing]) -> object:
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    times.append(Timing(time.perf_counter() - w0, time.process_time() - c0))
    return out


def extract_on(device: torch.device, backbone, *args, **kwargs):
    """:func:`extract` with ``backbone``, then the backbone back on ``device``: Lightning's teardown moves
    the module it ran to the CPU after ``trainer.predict`` (which made the next direct call on CUDA fail
    with "index is on cuda:0, different from other tensors on cpu")."""
    from ..attention import extract

    try:
        return extract(args[0], backbone, *args[1:], **kwargs)
    finally:
        backbone.to(device)


def best(times: list[Timing]) -> Timing:
    return Timing(min(t.wall for t in times), min(t.cpu for t in times))


# -- memory --------------------------------------------------------------------------------------------
def status_kb(key: str) -> int:
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
