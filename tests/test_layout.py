"""The shape of the code, kept: no import circle; each folder imports only from the shared ground
and the folders it builds on; and docs/development.md's module table names every module. Sizes
(a module over 400 lines, a class over 250, a function over 60) are reported, not enforced."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "charrnn"
# what each part may import besides itself: the shared ground (charrnn/*.py) imports no folder
MAY_IMPORT = {
    "ground": set(),
    "data": {"ground"},
    "engine": {"ground", "data"},
    "budget": {"ground", "data", "engine"},
    "training": {"ground", "data", "engine", "budget"},
    "interp": {"ground", "data"},
    "evaluation": {"ground", "data", "interp", "engine", "budget", "training"},
    "api": {"ground", "data", "interp", "engine", "budget", "training", "evaluation"},
    "serve": {"ground", "data", "interp", "engine", "budget", "training", "evaluation", "api"},
    "cli": {"ground", "data", "interp", "engine", "budget", "training", "evaluation", "api",
            "serve"},
    "package": {"ground", "api"},  # charrnn/__init__.py, lazily
    "main": {"cli"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def part(module: str) -> str:
    parts = module.split(".")
    if module == "charrnn":
        return "package"
    if module == "charrnn.__main__":
        return "main"
    if module == "charrnn.api":
        return "api"
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "ground"


def imports(module: str, path: Path, known: dict) -> set[str]:
    """The charrnn modules `module` imports, anywhere in it (a function's lazy import too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                     else node.module for a in node.names]
        found |= {n for n in names if n in known and n != module}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_the_graph_is_read_whole():
    g = graph()
    assert "charrnn.training.loop" in g["charrnn.training.prepare"]
    assert "charrnn.api" in g["charrnn.cli.sample"]  # a lazy import, inside a function


def test_runs_are_set_up_through_the_api_alone():
    """One front door: the command line sets a run up (new, --resume, --init-from, --plan-from,
    torchrun) only by calling the API, never charrnn/training/prepare.py or the loop itself."""
    g = graph()
    setting_up = {"charrnn.training.prepare", "charrnn.training.loop"}
    reached = {m: g[m] & setting_up for m in g if part(m) == "cli" and g[m] & setting_up}
    assert not reached, reached
    assert "charrnn.training.prepare" in g["charrnn.api"]


def test_no_import_circle():
    g, done, path = graph(), set(), []

    def visit(m):
        if m in path:
            pytest.fail("import circle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for n in sorted(g[m]):
            visit(n)
        path.pop()
        done.add(m)

    for m in sorted(g):
        visit(m)


def test_nothing_imports_upward():
    upward = [f"{m} imports {n}" for m, ns in graph().items() for n in sorted(ns)
              if part(n) != part(m) and part(n) not in MAY_IMPORT[part(m)]]
    assert upward == []


def test_sizes_are_reported_not_enforced():
    """Sizes are guides (a module of a few hundred lines, a class a screenful or a few), never
    targets: a clear class is better than one cut into functions of an untyped object to pass
    a count. So they are reported, with -rw, and only circles, upward imports and the module
    table fail."""
    import warnings

    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if len(source.splitlines()) > 400:
            long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                limit = 250 if isinstance(node, ast.ClassDef) else 60
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    long.append(f"{name}: {node.name} is {lines} lines")
    if long:
        warnings.warn("longer than the guides: " + "; ".join(long), stacklevel=1)


def test_the_module_table_names_every_module():
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `(charrnn/[\w/]+\.py)` \|", text, re.MULTILINE)
    on_disk = sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")
                     if p.name != "__init__.py")
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert sorted(listed) == on_disk


def test_every_promise_names_tests_that_exist():
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", text)
    assert len(named) > 40
    missing = [f"{f}::{t}" for f, t in named
               if not re.search(rf"^def {t}\(", (ROOT / "tests" / f).read_text(encoding="utf-8"),
                                re.MULTILINE)]
    assert missing == []


def test_the_benchmarks_import_what_exists():
    """Every `from charrnn... import name` of benchmarks/ and docs/ (lazy ones too) names a
    module and a name that exist, so a move of the code cannot leave a benchmark behind."""
    import importlib

    wrong = []
    for path in sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "docs").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("charrnn"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            wrong.append(f"{path.name}: from {node.module} import {alias.name}")
    assert wrong == []
