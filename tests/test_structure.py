"""The package's import structure: no cycles, no imports from the package root, no private
names imported across modules.

Every module under ``insmix_fast/`` and ``kernels/`` (installed as ``insmix_fast.kernels``) is
parsed with :mod:`ast`; every import counts — module level and inside functions, absolute and
relative, ``from . import x`` resolving to the submodule ``x``. Nothing is imported, so these
tests run in well under a second and see optional modules (DALI, CUDA) too. Imports made at run
time through ``importlib`` (the lazy re-exports of ``insmix_fast.experiments``) are not seen.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "insmix_fast"
#: Source folders and the dotted name they install as.
SOURCES = {ROOT / "insmix_fast": PACKAGE, ROOT / "kernels": f"{PACKAGE}.kernels"}


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module = field(repr=False)


def _discover() -> dict[str, Module]:
    mods: dict[str, Module] = {}
    for folder, dotted in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if rel.parts[0] == "kernels" and dotted == PACKAGE:  # the insmix_fast/kernels symlink
                continue
            parts = list(rel.with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([dotted, *parts])
            mods[name] = Module(name, path, is_package, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return mods


MODULES = _discover()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module the import statement loads (inside the package)
    names: tuple[str, ...]  # names taken from ``target`` by ``from target import ...``
    line: int


def _base(mod: Module, level: int) -> str:
    parts = mod.name.split(".")
    if not mod.is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts)


def _inside(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def imports_of(mod: Module) -> list[Import]:
    """Every import in ``mod`` of a module of the package (with ``from`` names that are not modules)."""
    out = []
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _inside(a.name):
                    out.append(Import(mod.name, a.name, (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            src = _base(mod, node.level) + ("." + node.module if node.module else "") if node.level else node.module
            if not src or not _inside(src):
                continue
            names = []
            for a in node.names:
                sub = f"{src}.{a.name}"
                if sub in MODULES:  # ``from pkg import submodule``
                    out.append(Import(mod.name, sub, (), node.lineno))
                else:
                    names.append(a.name)
            if names:
                out.append(Import(mod.name, src, tuple(names), node.lineno))
    return out


IMPORTS = [imp for mod in MODULES.values() for imp in imports_of(mod)]


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in IMPORTS:
        if imp.target in MODULES and imp.target != imp.importer:
            g[imp.importer].add(imp.target)
    return g


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each with one
    concrete cycle through it for the message."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # recursion depth ≤ number of modules (~100)
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def _a_cycle(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One cycle inside a strongly connected component (breadth-first back to the start)."""
    members = set(comp)
    start = comp[0]
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp  # pragma: no cover - a component always has a cycle


def _where(imp: Import) -> str:
    return f"{MODULES[imp.importer].path.relative_to(ROOT)}:{imp.line}"


def test_discovers_the_package():
    assert PACKAGE in MODULES and f"{PACKAGE}.kernels.rng" in MODULES and f"{PACKAGE}.cli" in MODULES
    assert len(MODULES) > 40 and any(imp.target == f"{PACKAGE}.kernels.rng" for imp in IMPORTS)


def test_cycle_finder_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(g) == [["a", "b", "c"]]
    assert _a_cycle(g, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve():
    fake = Module(f"{PACKAGE}.gan.cli", ROOT / "x.py", False,
                  ast.parse("from .. import cli\nfrom ..data import base\nfrom . import train as t\n"
                            "def f():\n    from ..errors import ConfigError\n"))
    got = {(i.target, i.names) for i in imports_of(fake)}
    assert got == {(f"{PACKAGE}.cli", ()), (f"{PACKAGE}.data.base", ()), (f"{PACKAGE}.gan.train", ()),
                   (f"{PACKAGE}.errors", ("ConfigError",))}


def test_no_import_cycles():
    graph = _graph()
    cycles = find_cycles(graph)
    if cycles:
        lines = []
        for comp in cycles:
            cyc = _a_cycle(graph, comp)
            edges = []
            for a, b in zip(cyc, cyc[1:]):
                at = next(_where(i) for i in IMPORTS if i.importer == a and i.target == b)
                edges.append(f"{a} -> {b} ({at})")
            lines.append(f"{len(comp)} modules in a cycle: {', '.join(comp)}\n    e.g. " + "\n         ".join(edges))
        pytest.fail("import cycles inside the package:\n  " + "\n  ".join(lines))


def test_no_imports_from_the_package_root():
    bad = [f"{_where(i)}: from {PACKAGE} import {', '.join(i.names)}" for i in IMPORTS
           if i.target == PACKAGE and i.importer != PACKAGE]
    bad += [f"{_where(i)}: import {PACKAGE}" for i in IMPORTS
            if i.target == PACKAGE and not i.names and i.importer != PACKAGE]
    assert not bad, "modules must import a name from the module that defines it, not the package root:\n" + "\n".join(bad)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _module_aliases(mod: Module) -> dict[str, str]:
    """Local names bound to modules of the package (``from . import x as y``, ``import a.b as y``)."""
    aliases = {}
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                one = Module(mod.name, mod.path, mod.is_package, ast.Module([ast.ImportFrom(node.module, [a], node.level, lineno=node.lineno)], []))
                for imp in imports_of(one):
                    if not imp.names:
                        aliases[a.asname or a.name] = imp.target
    return aliases


def test_no_private_names_across_modules():
    bad = []
    for imp in IMPORTS:
        for n in imp.names:
            if _private(n):
                bad.append(f"{_where(imp)}: {n} from {imp.target}")
        # a private module (``_optional``) is for its own package (and the packages below it)
        last = imp.target.rpartition(".")[2]
        if _private(last) and not imp.importer.startswith(_parent(imp.target)):
            bad.append(f"{_where(imp)}: private module {imp.target}")
    for mod in MODULES.values():  # ``from . import other; other._x``
        aliases = _module_aliases(mod)
        for node in ast.walk(mod.tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and _private(node.attr) and aliases[node.value.id] != mod.name):
                bad.append(f"{mod.path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(sorted(set(bad)))


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_sub_clis_do_not_import_the_main_cli():
    """Sub-CLIs register into the one parser of insmix_fast.cli, which imports them (never the reverse)."""
    graph = _graph()
    main_cli = f"{PACKAGE}.cli"
    subs = [m for m in MODULES if m.endswith(".cli") and m != main_cli]
    assert subs, "no sub-CLI modules found"
    bad = [m for m in subs if main_cli in _reachable(graph, m)]
    assert not bad, f"these sub-CLIs import {main_cli} (directly or through other modules): {bad}"
    missing = sorted(set(subs) - graph[main_cli])
    assert not missing, f"{main_cli} should import (and list in COMMANDS) every sub-CLI; missing: {missing}"
