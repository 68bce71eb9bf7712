"""The command-line parser shared by every entry point.

Flags follow LightningCLI naming (``--config FILE``, ``--model.backbone``, ``--data.path``,
``--trainer.default_root_dir``...) and one YAML file serves every command. Commands add their own
top-level flags (``--checkpoint``, ``--overwrite``...).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import lightning as L
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from .config import DataConfig, HeadsConfig, ModelConfig

_TRAINER_SKIP = {"callbacks", "logger", "plugins", "profiler"}


def _sections():
    from .config import ProbeConfig, ReportConfig  # noqa: PLC0415 - defined with the probe

    return {"model": ModelConfig, "data": DataConfig, "heads": HeadsConfig, "probe": ProbeConfig,
            "report": ReportConfig}


def build_parser(prog: str, description: str, extra: Callable[[ArgumentParser], None] | None = None) -> ArgumentParser:
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (configs/*.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="seed for everything random")
    for name, cls in _sections().items():
        parser.add_class_arguments(cls, name)
    parser.add_class_arguments(L.Trainer, "trainer", skip=_TRAINER_SKIP, instantiate=False)
    parser.set_defaults({"trainer.default_root_dir": "outputs/run"})
    if extra is not None:
        extra(parser)
    return parser


class Config:
    """Parsed configuration: ``cfg.model`` etc. are dataclass instances, ``cfg.trainer`` a dict."""

    def __init__(self, ns: Namespace) -> None:
        self.namespace = ns
        for name, cls in _sections().items():
            setattr(self, name, cls(**ns[name].as_dict()))
        self.trainer: dict = {k: v for k, v in ns.trainer.as_dict().items()}
        self.seed: int = ns.seed
        self.out_dir = Path(self.trainer.get("default_root_dir") or "outputs/run")

    def get(self, key: str, default=None):
        return self.namespace.get(key, default)

    def as_dict(self) -> dict:
        d = {name: asdict(getattr(self, name)) for name in _sections()}
        d["trainer"] = {k: v for k, v in self.trainer.items() if isinstance(v, (str, int, float, bool, type(None)))}
        d["seed"] = self.seed
        return d


def parse(prog: str, description: str, args: list[str] | None = None,
          extra: Callable[[ArgumentParser], None] | None = None) -> Config:
    parser = build_parser(prog, description, extra)
    return Config(parser.parse_args(args))


def quiet_lightning() -> None:
    """Hide Lightning's tips and PyTorch warnings that say nothing to our users."""
    import logging

    warnings.filterwarnings("ignore", message=".*custom batch sampler.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
