"""The package's modules import each other in one direction only: no import cycle, at module level or
inside functions (a function-level import that closes a circle is still a circle, only a later one).

The graph is read from the source with ``ast``: an edge ``a -> b`` for every ``from .x import y`` /
``from allo_lightning.x import y`` / ``import allo_lightning.x`` in ``a``, wherever it is in the file;
``b`` is the module named (a package: its ``__init__``), or the submodule ``x.y`` when ``y`` is one.
The implicit import of a module's parent packages is not an edge (a package's ``__init__`` importing its
own modules is the normal shape of a package, not a circle)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import allo_lightning

ROOT = Path(allo_lightning.__file__).parent
PACKAGE = "allo_lightning"
OPTIONAL = {"allo_lightning.attention.triton_stats": "triton",  # module -> the optional package it needs
            "allo_lightning.attention.flash_stats": "triton"}


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([PACKAGE, *parts])] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its source)."""
    modules = _module_names()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        here = module if is_package else module.rpartition(".")[0]  # the package relative imports start from
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # `from . import inference`: the submodule itself
                    sub = f"{target}.{alias.name}"
                    targets.append(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for t in targets:
                while t and t not in modules and t.startswith(PACKAGE + "."):
                    t = t.rpartition(".")[0]  # `import allo_lightning.x.Name` -> the module
                if t in modules and t != module:
                    graph[module].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a closed list of nodes (first == last), or None (depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt, WHITE) == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour.get(nxt, WHITE) == WHITE:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def test_every_module_imports():
    """Each module of the package imports (the ``__main__`` modules would run a command: read only; the
    Triton kernels only where Triton is installed, i.e. with CUDA)."""
    modules = [m for m in _module_names() if not m.endswith("__main__")
               and not (m in OPTIONAL and importlib.util.find_spec(OPTIONAL[m]) is None)]
    assert len(modules) > 50
    for m in modules:
        importlib.import_module(m)


def test_no_import_cycle_among_package_modules():
    graph = import_graph()
    # the graph is read, not empty: known edges are there
    assert "allo_lightning.backbone.registry" in graph["allo_lightning.backbone.esmc"]
    assert "allo_lightning.bench.common" in graph["allo_lightning.bench.inference"]
    assert "allo_lightning.bench.inference" in graph["allo_lightning.bench.extraction"]  # function-level
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_one_way_rules():
    """The README's one-way rules: the model modules never import the factory above them, ``data`` does not
    import ``backbone``, ``analysis`` does not import the CLI's config, no bench module imports the
    dispatcher (``extraction``; only ``command``, the bench command of the shell, runs it) or the shell,
    ``outputs`` does not import ``tables``, and each module of ``structures`` imports only the ones before
    it (formats, references, alignment, resolve, write, scripts)."""
    graph = import_graph()
    for model in ("esmc", "esm2", "registry", "base"):
        assert "allo_lightning.backbone.builders" not in graph[f"allo_lightning.backbone.{model}"]
    for m, deps in graph.items():
        if m.startswith("allo_lightning.data"):
            assert not any(d.startswith("allo_lightning.backbone") for d in deps), (m, deps)
        if m.startswith("allo_lightning.analysis"):
            assert "allo_lightning.config" not in deps and "allo_lightning.shell" not in deps, (m, deps)
        if m.startswith("allo_lightning.bench") and m != "allo_lightning.bench.extraction":
            assert "allo_lightning.bench.extraction" not in deps or m.endswith(".command"), (m, deps)
        if m.startswith("allo_lightning.bench") and not m.endswith((".command", "bench", "__main__")):
            # the benchmarks get their settings as a parameter; only the command module knows the shell
            assert "allo_lightning.shell" not in deps, (m, deps)
    assert "allo_lightning.tables" not in graph["allo_lightning.outputs"]
    order = ["formats", "references", "alignment", "resolve", "write", "scripts"]
    assert {m for m in graph if m.startswith("allo_lightning.structures.")} == {f"allo_lightning.structures.{n}"
                                                                               for n in order}
    for k, name in enumerate(order):
        inside = {d.rpartition(".")[2] for d in graph[f"allo_lightning.structures.{name}"]
                  if d.startswith("allo_lightning.structures.")}
        assert inside <= set(order[:k]), (name, inside)


def test_a_planted_cycle_is_found():
    """The check can fail: each of the circles this package had, put back into the real graph, is found."""
    for a, b in [("allo_lightning.backbone.registry", "allo_lightning.backbone.builders"),
                 ("allo_lightning.bench.common", "allo_lightning.bench.extraction"),
                 ("allo_lightning.outputs", "allo_lightning.tables")]:
        graph = import_graph()
        graph[a].add(b)
        cycle = find_cycle(graph)
        assert cycle is not None and a in cycle and b in cycle, (a, b, cycle)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
