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

import dataclasses
import difflib
import errno
import functools
import importlib
import json
import os
import re
import stat
import sys
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
        # model last: its backbone name is checked against the backbone table, which imports torch; every
        # other refusal comes first, in a fraction of a second
        for name in sorted(spec.sections, key=lambda n: n == "model"):
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
def _list_flags(sections) -> dict[str, type]:
    """``--section.field`` -> element type, for every list-valued field (``--heads.proteins A B``)."""
    out = {}
    for name in sections:
        hints = typing.get_type_hints(SECTIONS[name])
        for f in dataclasses.fields(SECTIONS[name]):
            t = hints[f.name]
            args = [a for a in typing.get_args(t) if a is not type(None)] if typing.get_origin(t) is typing.Union or \
                type(t).__name__ == "UnionType" else [t]
            for a in args:
                if typing.get_origin(a) is list:
                    (elem,) = typing.get_args(a) or (str,)
                    out[f"--{name}.{f.name}"] = elem
    return out


def _gather_lists(argv: list[str], list_flags: dict[str, type]) -> list[str]:
    """``--heads.proteins A B C`` -> ``--heads.proteins '["A", "B", "C"]'`` (a YAML/JSON list is kept)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        out.append(tok)
        i += 1
        if tok not in list_flags:
            continue
        values = []
        while i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        if len(values) == 1 and values[0].lstrip().startswith("["):
            out.append(values[0])
            continue
        elem = list_flags[tok]
        if elem is int:
            try:
                values = [int(v) for v in values]
            except ValueError:
                bad = next(v for v in values if not re.fullmatch(r"[+-]?\d+", v))
                raise InputError(f"{tok}: {bad!r} is not a whole number.", todo="Give whole numbers.") from None
        out.append(json.dumps(values))
    return out


def _load_yaml(text: str, path: str):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML keeps the last silently)
    and aliases (``*name``): a few hundred bytes of nested aliases expand to gigabytes (an "alias
    bomb"), and a config file never needs them."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise InputError(f"--config {path}, line {mark.line + 1}: YAML aliases (*name) are not accepted in "
                                 "config files. Write the value out in full.", todo="Write the value out in full.")
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
                    raise InputError(f"--config {path}, line {key_node.start_mark.line + 1}: key {key!r} is given "
                                     f"twice in the same section (first at line {first}); YAML would keep only the "
                                     "last. Keep one of them.", todo="Keep one of them.")
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    loader = Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_ALIAS = re.compile(r"(?:^|[\s,\[{:])\*[^\s,\[\]{}]")


def _refuse_aliases(argv: list[str]) -> None:
    """A flag value is read as YAML too: refuse aliases (``*name``) in a list or mapping value, as in
    config files (nested aliases expand to gigabytes when the value is checked)."""
    for i, tok in enumerate(argv):
        flag, value = (tok.split("=", 1) if tok.startswith("--") and "=" in tok else
                       (argv[i - 1] if i else "", tok))
        if value.lstrip().startswith(("[", "{")) and _ALIAS.search(value):
            raise InputError(f"{flag or 'a value'}: YAML aliases (*name) are not accepted. Write the value out in "
                             "full.", todo="Write the value out in full.")


def read_config_file(path: str, spec: Spec, own: frozenset[str] = frozenset()) -> dict:
    """The sections of YAML config ``path`` that ``spec`` uses (flat ``section.key`` -> value); unknown
    sections or keys are refused; sections of other commands are ignored. ``own``: the command's own
    flags (``checkpoint``, ``data.long``...), accepted too (a run's config.yaml records them)."""
    import yaml

    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"--config {path}: file not found.",
                         todo="Check the path (e.g. configs/smoke.yaml).") from None
    except OSError as e:
        raise InputError(f"--config {path}: cannot read it ({e.strerror}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"--config {path}: not a regular file.", todo="Give a YAML config file.")
    if st.st_size > _MAX_CONFIG_BYTES:
        raise InputError(f"--config {path}: {st.st_size} bytes is too large for a config file.",
                         todo="Give a YAML config file (configs/*.yaml).")
    try:
        text = p.read_bytes().decode("utf-8-sig")
        if "\x00" in text:
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "NUL byte")
    except UnicodeDecodeError:
        raise InputError(f"--config {path}: not a text file (binary or not UTF-8).",
                         todo="Give a YAML config file (configs/*.yaml).") from None
    except OSError as e:
        raise InputError(f"--config {path}: cannot read it ({e.strerror}).") from None
    try:
        data = _load_yaml(text, path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise InputError(f"--config {path}{where}: {problem}.", todo="Fix the YAML syntax.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"--config {path}: expected sections (model:, data:, ...), got a {type(data).__name__}.",
                         todo="See configs/smoke.yaml for the layout.")
    flat: dict = {}
    known = list(SECTIONS) + list(TOP_LEVEL)
    for key, value in data.items():
        key = str(key)
        if key in own and key not in known:
            flat[key] = value
            continue
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise InputError(f"--config {path}: unknown section {key!r}" + (f" (did you mean {close[0]!r}?)" if close
                             else "") + f". Sections: {', '.join(known)}.")
        if key in TOP_LEVEL:
            flat[key] = value
            continue
        if value is None:
            continue
        if not isinstance(value, dict):
            raise InputError(f"--config {path}: section {key!r} must be a mapping of settings, got {value!r}.")
        fields = [f.name for f in dataclasses.fields(SECTIONS[key])]
        for sub, v in value.items():
            if f"{key}.{sub}" in own:
                flat[f"{key}.{sub}"] = v
                continue
            if sub not in fields:
                close = difflib.get_close_matches(str(sub), fields, n=1)
                hint = f" (did you mean {key}.{close[0]}?)" if close else ""
                raise InputError(f"--config {path}: unknown setting {key}.{sub}{hint}. Settings of {key}: "
                                 f"{', '.join(fields)}.")
            if key in spec.sections:
                flat[f"{key}.{sub}"] = v
    return flat


def _split_configs(argv: list[str]) -> tuple[list[str], list[str]]:
    rest, configs = [], []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--config":
            if i + 1 >= len(argv):
                raise InputError("--config: give a YAML file (e.g. --config configs/smoke.yaml).")
            configs.append(argv[i + 1])
            i += 2
            continue
        if tok.startswith("--config="):
            configs.append(tok.split("=", 1)[1])
        else:
            rest.append(tok)
        i += 1
    return rest, configs


# -- the parser -------------------------------------------------------------------------------------
def build_parser(spec: Spec, prog: str | None = None):
    from jsonargparse import ArgumentParser

    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    prog = prog or f"allo-lightning {spec.name}"
    parser = ArgumentParser(prog=prog, description=spec.description, exit_on_error=False, default_env=False,
                            usage=f"{prog} [--config FILE] [--section.key VALUE ...]")
    parser.add_argument("--config", type=str, default=None,
                        help="YAML config file (configs/*.yaml); flags override it. May be given more than once.")
    parser.add_argument("--seed", type=int, default=0, help="seed for everything random")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debugging messages too")
    for name in spec.sections:
        parser.add_class_arguments(SECTIONS[name], name)
    if spec.flags is not None:
        spec.flags(parser)
    if spec.defaults:
        parser.set_defaults(spec.defaults)
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
    return re.sub(r"\s+", " ", str(text)).strip()


def _parse_error(message: str, parser) -> InputError:
    msg = str(message)
    m = re.search(r"unrecognized arguments: (.*)", msg, re.S)
    if m:
        tokens = m.group(1).split()
        flag = next((t for t in tokens if t.startswith("-")), None)
        if flag is None:
            return InputError(f"unexpected argument {tokens[0]!r}: flags look like --section.key VALUE.",
                              todo="See --help.")
        return InputError(f"unknown flag {flag.split('=', 1)[0]}.{_did_you_mean(flag, parser)}")
    m = re.search(r'Parser key "([^"]+)":\s*(.*)', msg, re.S)
    if m:
        key, rest = m.group(1), _one_line(m.group(2))
        got = re.search(r"(?:Got value|Given value): (.*?)(?: - |$)", rest)
        value = got.group(1) if got else ""
        choices = re.findall(r"Literal\[([^\]]*)\]", rest)
        if choices:
            allowed = ", ".join(c.strip().strip("'\"") for c in choices[0].split(","))
            extra = " (or a whole number)" if "int" in rest and "Union" in rest else ""
            return InputError(f"--{key}: {value!r} is not accepted; choose one of: {allowed}{extra}.")
        kinds = re.findall(r"Expected a <class '(\w+)'>", rest)
        kind = {"float": "a number", "int": "a whole number", "bool": "true or false", "str": "text",
                "list": "a list, e.g. [a, b] or several values", "dict": "a mapping, e.g. {A: [1, 2]}"}.get(
                    kinds[0] if kinds else "", "another value")
        if "NoneType" in rest:
            kind += " (or null)"
        return InputError(f"--{key}: {value!r} is not accepted; expected {kind}.")
    m = re.search(r"Group '(\w+)' does not accept option '([^']+)'", msg) or \
        re.search(r"Option '([\w.]+)' is not accepted", msg)
    if m:
        flag = "--" + (".".join(m.groups()) if len(m.groups()) == 2 else m.group(1))
        return InputError(f"unknown setting {flag}.{_did_you_mean(flag, parser)}")
    m = re.search(r"expected one argument", msg)
    if m:
        return InputError(f"{_one_line(msg)}.", todo="Give a value after the flag.")
    return InputError(_one_line(msg))


def parse(spec: Spec, args: list[str] | None = None, prog: str | None = None) -> Config:
    """Parse and check ``args`` for ``spec``; any problem is an :class:`InputError` naming the flag."""
    from jsonargparse import ArgumentError

    argv = list(sys.argv[1:] if args is None else args)
    parser = build_parser(spec, prog)
    argv, configs = _split_configs(argv)
    from_files: dict = {}
    own = frozenset(o[2:] for o in _option_strings(parser)) - {"config", "help"}
    source: dict[str, str] = {}  # key -> the config file that set it (the last one wins, as for the value)
    for path in configs:
        got = read_config_file(path, spec, own)
        from_files.update(got)
        source.update(dict.fromkeys(got, path))
    on_command_line = {tok[2:].split("=", 1)[0] for tok in argv if tok.startswith("--")}
    _refuse_aliases(argv)
    # config values become flags placed before the command line's own: checked exactly like flags,
    # and overridden by them
    prefix = [f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in from_files.items()]
    argv = prefix + _gather_lists(argv, _list_flags(spec.sections))

    def blame(err: InputError, in_files: bool) -> InputError:
        """Name the config file when the bad value came from it (not when the command line set the key)."""
        key = str(err).split(":")[0].lstrip("-")
        if key in source and (in_files or key not in on_command_line):
            return InputError(f"--config {source[key]}: {err}", todo=err.todo)
        return err

    try:
        if from_files:  # the files' values alone first: an error there is the file's, even if a flag overrides it
            # (files hold section settings and the seed only: a parser without the command's own flags,
            # some of which are required, checks them)
            files_parser = build_parser(dataclasses.replace(spec, flags=None), prog)
            known = frozenset(o[2:] for o in _option_strings(files_parser))
            # a run's config.yaml also records the command's own flags (checked with the command line below)
            sections_only = [f for f, key in zip(prefix, from_files) if key in known]
            try:
                files_parser.parse_args(sections_only)
            except ArgumentError as e:
                raise blame(_parse_error(str(e), parser), in_files=True) from None
        ns = parser.parse_args(argv)
    except ArgumentError as e:
        raise blame(_parse_error(str(e), parser), in_files=False) from None
    values = ns.as_dict()
    values.pop("config", None)
    values.pop("__path__", None)
    for name in SECTIONS:  # the group-config actions (--model CONFIG) leave no key of their own
        values.pop(f"{name}.__path__", None)
    try:
        return Config(spec, values, parser.get_defaults().as_dict())
    except InputError as e:
        raise blame(e, in_files=False) from None


# -- running a command ------------------------------------------------------------------------------
def report_error(err: BaseException) -> int:
    """Print ``err`` as one line on stderr; return the exit status."""
    print(f"error: {_one_line(str(err))}", file=sys.stderr)
    return int(getattr(err, "exit_code", 2))


def run(spec: Spec, body: Callable[[Config], Any], args: list[str] | None = None, prog: str | None = None) -> Any:
    """Parse, check and run ``body`` with the one error handler (see the module docstring); what it prints,
    the error line included, also goes to the run.log of the command's output folder (html.records)."""
    from .html.records import capture

    with capture(args):
        return _run(spec, body, args, prog)


def _run(spec: Spec, body: Callable[[Config], Any], args: list[str] | None, prog: str | None) -> Any:
    from . import distributed, interrupt, messages

    messages.quiet_lightning()
    try:
        with interrupt.installed():
            cfg = parse(spec, args, prog)
            messages.configure(messages.level_of(cfg.get("quiet", False), cfg.get("verbose", False)))
            if spec.check is not None:
                spec.check(cfg)
            distributed.begin_command()  # imports torch; several processes: see allo_lightning.distributed
            return body(cfg)
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
        release_locks()  # the output folder's lock (outputs.lock_out_dir) ends with the command


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
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        if not argv:
            raise SystemExit(2)
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
