"""The command-line shell: one parser, one error handler, one console script for every command.

``allo-lightning <command> [flags]`` (or ``python -m allo_lightning <command>``, or
``python -m allo_lightning.<command>``) with the commands extract, heads, fit, evaluate, predict,
report and bench. A command module declares itself with :func:`command`::

    @command("fit", __doc__, sections=("model", "data", "trainer", "heads", "probe"), flags=_flags)
    def main(cfg: Config) -> dict: ...

and gets ``main(args=None)``: parse (flags follow LightningCLI naming, ``--section.key``; ``--config
FILE`` YAML files give the defaults, flags override them), check every value (choices are ``Literal``s,
ranges are checked by the config dataclasses) before any data or model is loaded, run, and turn any
:class:`~allo_lightning.errors.UserError` into one line on stderr and exit status 2 (an interrupted run:
128 + the signal number). Nothing else is caught: a bug keeps its traceback. Every command takes
``-q/--quiet`` and ``-v/--verbose``: the level of its messages (:mod:`allo_lightning.messages`).

One YAML file serves every command: a command reads the sections it uses and ignores the others, but
an unknown section or key is refused (with the closest valid name).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import errno
import functools
import importlib
import json
import os
import stat
import sys
import types
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .config import (
    MAX_SEED,
    DataConfig,
    HeadsConfig,
    ModelConfig,
    ProbeConfig,
    ReportConfig,
    TrainerConfig,
    check_range,
)
from .errors import InputError, Interrupted, OutputError, UserError

SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "trainer": TrainerConfig,
                             "heads": HeadsConfig, "probe": ProbeConfig, "report": ReportConfig}
TOP_LEVEL = ("seed",)
COMMANDS = {
    "extract": "attention statistics of a protein set, cached (resumable)",
    "heads": "which attention heads see the allosteric sites (scores, p/q-values, selection, maps)",
    "fit": "train a probe on the selected heads and save a checkpoint",
    "evaluate": "score a trained probe on your own labelled proteins",
    "predict": "score new proteins with a trained probe (CSV, plots, PyMOL/ChimeraX)",
    "report": "cross-validated metrics per head subset against baselines",
    "bench": "speed and memory benchmarks",
}
# Flags people try that do not exist here, and what to use instead.
HINTS = {
    "--trainer.precision": "--model.dtype fp32|bf16 (precision changes the statistics: it is a model setting "
                           "with its own cache key)",
    "--trainer.max_epochs": "--probe.max_epochs (the probe's Trainer) or --report.max_epochs",
    "--trainer.min_epochs": "--probe.max_epochs",
    "--trainer.deterministic": "--seed (runs are seeded and deterministic)",
    "--probe.precision": "--model.dtype",
    "--model.precision": "--model.dtype",
    "--data.fasta": "--data.path FILE",
    "--fasta": "--data.path FILE",
    "--out": "--trainer.default_root_dir DIR",
}
_MAX_CONFIG_BYTES = 1 << 20


@dataclass
class Spec:
    name: str
    description: str
    sections: tuple[str, ...]
    flags: Callable | None = None
    defaults: dict | None = None
    check: Callable | None = None  # check(cfg): the command's own flag values, before anything heavy is imported


class Config:
    """A parsed command line: ``cfg.model``, ``cfg.data``... are the config dataclasses of the command's
    sections (checked), ``cfg.seed`` the seed, ``cfg.out_dir`` the output folder, and the command's own
    flags are attributes too (``cfg.overwrite``, ``cfg.checkpoint``...; also ``cfg.get(name)``)."""

    def __init__(self, spec: Spec, values: dict, defaults: dict | None = None) -> None:
        self.spec = spec
        self.values = values
        self.defaults = defaults or {}  # what the parser would give with no flag (the run records use it)
        self.seed: int = values.get("seed", 0)
        check_range("seed", self.seed, low=0, high=MAX_SEED, integer=True)
        for name in spec.sections:
            setattr(self, name, SECTIONS[name](**values[name]))
        for key, value in values.items():
            if key not in SECTIONS and key != "seed":
                setattr(self, key, value)
        trainer = getattr(self, "trainer", None)
        self.out_dir = Path(trainer.default_root_dir if trainer is not None else "outputs/run")

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def as_dict(self) -> dict:
        out: dict[str, Any] = {name: asdict(getattr(self, name)) for name in self.spec.sections}
        out["seed"] = self.seed
        return out


# -- argv and config files ------------------------------------------------------------------------
def _gather_lists(argv: list[str], options: set[str], given: dict[str, str]) -> list[str]:
    """``--heads.proteins A B C`` -> ``--heads.proteins=["A", "B", "C"]`` (a YAML list ``[A, B]`` is kept).
    jsonargparse takes a list as one value (or ``--heads.proteins+ A`` per element); the README's
    several-values-after-one-flag form is this rewrite. A list flag is one with a ``FLAG+`` option.
    ``given``: each rewritten value -> the values as typed (for messages)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok, i = argv[i], i + 1
        n = next((j for j in range(i, len(argv)) if argv[j].startswith("--") or argv[j] in options), len(argv)) - i
        if tok + "+" not in options or not n or (n == 1 and argv[i].lstrip().startswith("[")):
            out.append(tok)
            continue
        out.append(f"{tok}={json.dumps(argv[i:i + n])}")
        given[json.dumps(argv[i:i + n])] = " ".join(argv[i:i + n])
        i += n
    return out


def _load_yaml(text: str, where: str):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML keeps the last silently)
    and aliases (``*name``): a few hundred bytes of nested aliases expand to gigabytes (an "alias
    bomb"), and a config file never needs them. ``where`` starts the messages (the file or the flag)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise InputError(f"{where}, line {mark.line + 1}: YAML aliases (*name) are not accepted. Write the "
                                 "value out in full.", todo="Write the value out in full.")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise InputError(f"{where}, line {key_node.start_mark.line + 1}: key {key!r} is given twice in "
                                     f"the same section (first at line {first}); YAML would keep only the last. "
                                     "Keep one of them.", todo="Keep one of them.")
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    loader = Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _check_config_file(path: str) -> None:
    """What jsonargparse does not check before reading a config file: a regular text file of at most
    1 MiB (a 20 GB file would be read whole)."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
        problem = ("not a regular file" if not stat.S_ISREG(st.st_mode) else
                   f"{st.st_size} bytes is too large for a config file" if st.st_size > _MAX_CONFIG_BYTES else
                   "" if "\x00" not in p.read_bytes().decode("utf-8-sig") else "binary")
    except FileNotFoundError:
        raise InputError(f"--config {path}: file not found.",
                         todo="Check the path (e.g. configs/smoke.yaml).") from None
    except OSError as e:
        raise InputError(f"--config {path}: cannot read it ({e.strerror}).") from None
    except UnicodeDecodeError:
        problem = "binary"
    if problem:
        problem = "not a text file (binary or not UTF-8)" if problem == "binary" else problem
        raise InputError(f"--config {path}: {problem}.", todo="Give a YAML config file (configs/*.yaml).")


class _Reader:
    """jsonargparse's value loader for one parse (``set_loader``): config files and flag values are read
    with :func:`_load_yaml`. A file keeps the sections ``spec`` uses and the command's own flags,
    drops the sections of other commands (one YAML serves every command) and refuses unknown sections
    and keys with the closest name. ``files``: each file's values (flat ``section.key``), for blame."""

    def __init__(self, spec: Spec, argv: list[str]) -> None:
        self.spec, self.argv, self.own = spec, argv, frozenset()
        self.listed: tuple[str, ...] = ()  # the command's own settings, for messages
        self.path: str | None = None  # the --config file being read, as given
        self.files: dict[str, dict] = {}
        self.given: dict[str, str] = {}  # see _gather_lists
        self.refused: InputError | None = None  # a refusal inside a flag value (jsonargparse wraps it)

    def load(self, text: str, path: str = ""):
        import yaml

        if not path:  # a flag value
            try:
                return _load_yaml(text, self._flag_of(text))
            except InputError as e:
                self.refused = e
                raise
        path = self.path or str(path)
        try:
            data = _load_yaml(text, f"--config {path}")
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or "invalid YAML"
            raise InputError(f"--config {path}{where}: {problem}.", todo="Fix the YAML syntax.") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InputError(f"--config {path}: expected sections (model:, data:, ...), got a {type(data).__name__}.",
                             todo="See configs/smoke.yaml for the layout.")
        flat = self.files.setdefault(path, {})
        out: dict = {}
        known = list(SECTIONS) + list(TOP_LEVEL)
        for key, value in data.items():
            key = str(key)
            if key in self.own and key not in SECTIONS:
                out[key] = flat[key] = value
                continue
            if key not in known:
                raise self._unknown_key(path, key, known)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise InputError(f"--config {path}: section {key!r} must be a mapping of settings, got {value!r}.")
            fields = [f.name for f in dataclasses.fields(SECTIONS[key])]
            for sub, v in value.items():
                if sub not in fields and f"{key}.{sub}" not in self.own:
                    close = difflib.get_close_matches(str(sub), fields, n=1)
                    hint = f" (did you mean {key}.{close[0]}?)" if close else ""
                    raise InputError(f"--config {path}: unknown setting {key}.{sub}{hint}. Settings of {key}: "
                                     f"{', '.join(fields)}.")
                if key in self.spec.sections or f"{key}.{sub}" in self.own:
                    out.setdefault(key, {})[sub] = flat[f"{key}.{sub}"] = v
        return out

    def _unknown_key(self, path: str, key: str, known: list[str]) -> InputError:
        """A top-level key that is neither a section nor one of the command's own flags: the closest name
        among what this command reads (a command without sections, such as bench, lists its own flags)."""
        own = [k for k in self.listed if "." not in k]
        if not self.spec.sections:
            names = own + [k for k in TOP_LEVEL if k not in own]
            close = difflib.get_close_matches(key, names, n=1)
            return InputError(f"--config {path}: unknown setting {key!r}" + (f" (did you mean {close[0]!r}?)"
                              if close else "") + f". Settings of {self.spec.name}: {', '.join(names)}.")
        own = [k for k in own if k not in known]
        close = difflib.get_close_matches(key, known + own, n=1)
        return InputError(f"--config {path}: unknown section {key!r}" + (f" (did you mean {close[0]!r}?)"
                          if close else "") + f". Sections: {', '.join(known)}"
                          + (f"; settings of {self.spec.name}: {', '.join(own)}." if own else "."))

    def _flag_of(self, text: str) -> str:
        for i, tok in enumerate(self.argv):
            if tok == text and i and self.argv[i - 1].startswith("--"):
                return self.argv[i - 1]
            if tok.startswith("--") and tok.partition("=")[2] == text:
                return tok.partition("=")[0]
        return "a value"


# -- the parser -------------------------------------------------------------------------------------
def build_parser(spec: Spec, prog: str | None = None, reader: _Reader | None = None):
    import yaml
    from jsonargparse import ActionConfigFile, ArgumentParser, set_loader

    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    reader = reader or _Reader(spec, [])
    set_loader("allo_lightning", reader.load, exceptions=(yaml.YAMLError,))  # this parse's reader
    prog = prog or f"allo-lightning {spec.name}"
    parser = ArgumentParser(prog=prog, description=spec.description, exit_on_error=False, default_env=False,
                            parser_mode="allo_lightning", allow_abbrev=False, print_config=None,
                            usage=f"{prog} [--config FILE] [--section.key VALUE ...]")

    class ConfigFile(ActionConfigFile):
        """jsonargparse's config-file action, after :func:`_check_config_file`; tells the loader the file's
        name as the user gave it (jsonargparse passes it relative to the file's folder)."""

        def __call__(self, parser, cfg, values, option_string=None):
            _check_config_file(values)
            reader.path = values
            try:
                super().__call__(parser, cfg, values, option_string)
            finally:
                reader.path = None

    parser.add_argument("--config", action=ConfigFile,
                        help="YAML config file (configs/*.yaml); flags override it. May be given more than once.")
    parser.add_argument("--seed", type=int, default=0, help="seed for everything random")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors (no progress bars)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debugging messages too")
    from . import __version__

    parser.add_argument("-V", "--version", action="version", version=f"allo_lightning {__version__}")
    for name in spec.sections:
        parser.add_class_arguments(SECTIONS[name], name)
    if spec.flags is not None:
        spec.flags(parser)
    if spec.defaults:
        parser.set_defaults(spec.defaults)
    # a command's own flags as a config file names them: as typed (--max-length) and as config.yaml records
    # them (max_length, the setting's name)
    reader.own = frozenset(o[2:] for o in _option_strings(parser) if not o.endswith("+")) \
        | {a.dest for a in parser._actions if any(o.startswith("--") for o in a.option_strings)} \
        - {"config", "help"}
    # the settings an unknown-key message names: the documented ones, as config.yaml records them
    reader.listed = tuple(sorted({a.dest for a in parser._actions if a.help != argparse.SUPPRESS
                                  and any(o.startswith("--") for o in a.option_strings)}
                                 - {"config", "help", "version", "quiet", "verbose"} - set(SECTIONS)))
    # --help is made of docstrings (the command module's, the config sections' and their fields'): their reST
    # ``literals`` read as plain text
    parser.description = (parser.description or "").replace("``", "")
    for item in (*parser._actions, *parser._action_groups):
        for attr in ("help", "description", "title"):
            if isinstance(getattr(item, attr, None), str):
                setattr(item, attr, getattr(item, attr).replace("``", ""))
    return parser


def _option_strings(parser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def _did_you_mean(flag: str, parser) -> str:
    name = flag.split("=", 1)[0]
    if name in HINTS:
        return f" Use {HINTS[name]}."
    close = difflib.get_close_matches(name, _option_strings(parser), n=1, cutoff=0.6)
    return f" Did you mean {close[0]}?" if close else " See --help for the flags."


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text",
          list: "a list, e.g. [a, b] or several values", dict: "a mapping, e.g. {A: [1, 2]}"}


def _choices(hint) -> list:
    """The Literal choices anywhere in ``hint`` (``Literal[...]``, ``list[Literal[...]]``, unions)."""
    return list(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else \
        [c for a in typing.get_args(hint) for c in _choices(a)]


def _refused_item(hint, value):
    """For a list of choices, the first element outside them (the dataclass names that one, so the
    command line does too); None when ``value`` is not such a list."""
    if not _choices(hint):
        return None
    if isinstance(value, str) and value.lstrip().startswith("["):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return None
    if isinstance(value, list):
        return next((v for v in value if v not in _choices(hint)), None)
    return None


def _expected(hint) -> str:
    """What a value of type ``hint`` (a config field's or a flag's declared type) looks like, in words."""
    def members(t) -> list:
        return [m for a in typing.get_args(t) for m in members(a)] if typing.get_origin(t) in (
            typing.Union, getattr(types, "UnionType", typing.Union)) else [t]

    alts = members(hint)
    if _choices(hint):
        return f"choose one of: {', '.join(map(str, _choices(hint)))}" + (" (or a whole number)" if int in alts else "")
    kind = next((_KINDS[typing.get_origin(a) or a] for a in alts if (typing.get_origin(a) or a) in _KINDS),
                "another value")
    elem = next((typing.get_args(a)[0] for a in alts if typing.get_origin(a) is list), None)
    if elem in (int, float):  # list[int]: say what an element must be
        kind = f"a list of {'whole ' if elem is int else ''}numbers (several values or [1, 2])"
    return f"expected {kind}" + (" (or null)" if type(None) in alts else "")


def _culprit(parser, reader: _Reader, argv: list[str]) -> InputError | None:
    """The flag (or config file value) jsonargparse refused, found by parsing each one alone (the
    refusal carries no key): one line from the flag's declared type and the value given."""
    from jsonargparse import ArgumentError

    actions = {s: a for a in parser._actions for s in a.option_strings}
    required = [t for a in parser._actions if a.required for t in (a.option_strings[0], "x")]

    def refused(tokens: list[str]) -> bool:
        try:
            parser.parse_args(tokens + required, defaults=False)
        except ArgumentError:
            return True
        return False

    def message(key: str, value) -> InputError:
        section, _, field = key.partition(".")
        hints = typing.get_type_hints(SECTIONS[section]) if section in SECTIONS else {}
        # a section's field: its dataclass type; a command's own flag: the type it was declared with
        hint = hints.get(field, getattr(actions[f"--{key}"], "_typehint", str))
        shown = _refused_item(hint, value)
        shown = reader.given.get(value, value) if shown is None else shown
        return InputError(f"--{key}: {shown!r} is not accepted; {_expected(hint)}.")

    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if not name.startswith("-"):
            return InputError(f"unexpected argument {argv[i]!r}: flags look like --section.key VALUE.",
                              todo="See --help.")
        if name not in actions:
            return InputError(f"unknown flag {name}.{_did_you_mean(name, parser)}")
        takes = 0 if actions[name].nargs == 0 else 1
        if not eq and takes:
            if i + 1 >= len(argv):
                return InputError(f"{name}: give a value after the flag.", todo="Give a value after the flag.")
            value, i = argv[i + 1], i + 1
        i += 1
        if name == "--config":
            for key, v in reader.files.get(value, {}).items():
                if refused([f"--{key}={v if isinstance(v, str) else json.dumps(v)}"]):  # as typed in a flag
                    return InputError(f"--config {value}: {message(key, v)}")
        elif refused([f"{name}={value}"] if takes else [name]):
            return message(name[2:], value)
    return None


def _missing(parser, reader: _Reader, argv: list[str]) -> InputError | None:
    """The required flags neither the command line nor a ``--config`` file gave, named as flags with what
    they are (jsonargparse says ``the following arguments are required: out``)."""
    given = {tok.partition("=")[0] for tok in argv} | {key for values in reader.files.values() for key in values}
    missing = [a for a in parser._actions if a.required and a.dest not in given
               and not any(o in given for o in a.option_strings)]
    if not missing:
        return None
    flags = [f"{a.option_strings[0]} {a.metavar or 'VALUE'}" for a in missing]
    what = "; ".join(f"{a.option_strings[0]}: {a.help}" for a in missing)
    return InputError(f"missing {' and '.join(flags)} ({what}). Add {'them' if len(flags) > 1 else 'it'} to the "
                      "command line; see --help.")


def parse(spec: Spec, args: list[str] | None = None, prog: str | None = None) -> Config:
    """Parse and check ``args`` for ``spec``; any problem is an :class:`InputError` naming the flag."""
    from jsonargparse import ArgumentError

    reader = _Reader(spec, list(sys.argv[1:] if args is None else args))
    parser = build_parser(spec, prog, reader)
    options = {s for a in parser._actions for s in a.option_strings}
    argv = reader.argv = _gather_lists(reader.argv, options, reader.given)
    on_command_line = {tok[2:].split("=", 1)[0] for tok in argv if tok.startswith("--")}

    def blame(err: InputError) -> InputError:
        """Name the config file when the bad value came from it (the command line did not set the key)."""
        key = err.setting  # set by the config dataclasses' checks (None: not one setting's value)
        files = [path for path, values in reader.files.items() if key is not None and key in values]
        if files and key not in on_command_line:
            return InputError(f"--config {files[-1]}: {err}", todo=err.todo, setting=key)
        return err

    try:
        ns = parser.parse_args(argv)
    except ArgumentError as e:
        raise reader.refused or _culprit(parser, reader, argv) or _missing(parser, reader, argv) \
            or InputError(_one_line(str(e))) from None
    if reader.refused:
        raise reader.refused
    values = ns.as_dict()
    values.pop("config", None)
    values.pop("__path__", None)
    for name in SECTIONS:  # the group-config actions (--model CONFIG) leave no key of their own
        values.pop(f"{name}.__path__", None)
    try:
        return Config(spec, values, parser.get_defaults().as_dict())
    except InputError as e:
        raise blame(e) from None


# -- running a command ------------------------------------------------------------------------------
def report_error(err: BaseException) -> int:
    """Print ``err`` as one line on stderr; return the exit status."""
    print(f"error: {_one_line(str(err))}", file=sys.stderr)
    return int(getattr(err, "exit_code", 2))


def run(spec: Spec, body: Callable[[Config], Any], args: list[str] | None = None, prog: str | None = None) -> Any:
    """Parse, check and run ``body`` with the one error handler (see the module docstring); what it prints,
    the error line included, also goes to the run.log of the command's output folder (records)."""
    from .records import capture

    with capture(args):
        return _run(spec, body, args, prog)


def _run(spec: Spec, body: Callable[[Config], Any], args: list[str] | None, prog: str | None) -> Any:
    from . import distributed, interrupt, messages

    messages.quiet_lightning()
    done = False
    try:
        with interrupt.installed():
            cfg = parse(spec, args, prog)
            messages.configure(messages.level_of(cfg.get("quiet", False), cfg.get("verbose", False)))
            if spec.check is not None:
                spec.check(cfg)
            distributed.begin_command()  # imports torch; several processes: see allo_lightning.distributed
            result = body(cfg)
            done = True
            return result
    except Interrupted as e:
        raise SystemExit(report_error(e)) from None
    except UserError as e:
        raise SystemExit(report_error(e)) from None
    except OSError as e:  # a file or folder the user named (disk full, permissions): not a bug
        if getattr(e, "filename", None) is None:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # a write to an open file (streamed rows)
                raise SystemExit(report_error(OutputError(f"writing the outputs failed ({e.strerror or e}). Free "
                                                          "space and run the same command again."))) from None
            raise
        raise SystemExit(report_error(InputError(f"{e.filename}: {e.strerror or e}. Check the path, its "
                                                 "permissions and the free disk space."))) from None
    finally:
        from .outputs import release_locks

        messages.unconfigure()
        release_locks(failed=not done)  # the output folder's lock (outputs.lock_out_dir) ends with the command


def command(name: str, description: str | None, sections: tuple[str, ...], flags: Callable | None = None,
            defaults: dict | None = None, check: Callable | None = None) -> Callable:
    """Decorator of a command's body ``body(cfg) -> result``: gives ``main(args=None, prog=None)``.

    ``flags(parser)`` adds the command's own flags and ``check(cfg)`` refuses their bad values; both run
    before torch is imported, so the body imports torch, Lightning and the backbone itself (inside the
    function): ``--help`` and flag errors then answer at once."""
    spec = Spec(name, (description or "").strip(), tuple(sections), flags, defaults, check)

    def decorate(body: Callable[[Config], Any]) -> Callable:
        @functools.wraps(body)
        def main(args: list[str] | None = None, prog: str | None = None) -> Any:
            return run(spec, body, args, prog or (None if args is not None else _module_prog(name)))

        main.spec = spec  # type: ignore[attr-defined]
        main.body = body  # type: ignore[attr-defined]
        return main

    return decorate


def _module_prog(name: str) -> str:
    script = Path(sys.argv[0]).name
    return f"python -m allo_lightning.{name}" if script == f"{name}.py" else f"allo-lightning {name}"


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: allo-lightning COMMAND [--config FILE] [--section.key VALUE ...]", "",
             "Attention heads of a frozen protein language model that see allosteric sites, and a probe "
             "trained on them.", "", "commands:"]
    lines += [f"  {c:<{width}}  {d}" for c, d in COMMANDS.items()]
    lines += ["", "allo-lightning COMMAND --help lists the flags of a command; allo-lightning --version prints the "
              "version."]
    return "\n".join(lines)


def console_main(argv: list[str] | None = None) -> None:
    """The ``allo-lightning`` console script: ``allo-lightning COMMAND [flags]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):  # answered before anything heavy is imported
        from . import __version__

        print(f"allo_lightning {__version__}")
        return None
    if not argv:  # a misuse like any other: one line on stderr (it printed the usage on stdout, exit 2)
        print(f"error: give a command: {', '.join(COMMANDS)}. allo-lightning --help says what each does.",
              file=sys.stderr)
        raise SystemExit(2)
    if argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return None
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        print(f"error: unknown command {name!r}." + (f" Did you mean {close[0]!r}?" if close else "")
              + f" Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        raise SystemExit(2)
    # the dispatcher is not a command; a command module imports torch and Lightning only inside its body,
    # once its flags are parsed and checked (--help and flag errors answer without them)
    module = importlib.import_module(f"allo_lightning.{name}")
    module.main(rest, prog=f"allo-lightning {name}")
    return None  # the console script exits with what this returns: 0 on success
