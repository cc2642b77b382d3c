"""No import circle among the project's modules (``backend``, ``desktop_agent``).

A circle makes the import order matter and hides which room depends on which; the one the web
console had (``_auth`` → ``_render`` → ``_live`` → ``_auth``) was dodged by an import inside a
function, so every import counts here: at module level, inside functions and under
``TYPE_CHECKING``. An edge goes to the most specific module an import names: ``from a.b import c``
is ``a.b.c`` when that is a module, else ``a.b`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGES = ("backend", "desktop_agent")


def modules(root: Path, packages: Iterable[str]) -> dict[str, tuple[Path, bool]]:
    """Dotted name → (file, is a package) for every module of ``packages`` (migrations aside:
    they are loaded by Piccolo, not imported)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "piccolo_migrations" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = (path, is_package)
    return found


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module → the project's modules it imports (anywhere in its source)."""
    known = modules(root, packages)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, (path, is_package) in known.items():
        package = module if is_package else module.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                targets |= {resolve(f"{base}.{alias.name}") for alias in node.names}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_among_the_projects_modules() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 100, "the walk found too few modules to mean anything"
    found = circles(graph)
    detail = {" ↔ ".join(c): {m: sorted(graph[m] & set(c)) for m in c} for c in found}
    assert found == [], f"import circles (module → the members it imports): {detail}"


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # the web console's old circle: the last edge an import inside a function
            {
                "app/__init__.py": "",
                "app/auth.py": "from app.render import HEADERS\n",
                "app/render.py": "def f():\n    from app.live import text\n",
                "app/live.py": "from app import auth\n",
            },
            [["app.auth", "app.live", "app.render"]],
        ),
        (  # relative imports and a name taken from the package's own __init__
            {
                "app/__init__.py": "from .a import A\n",
                "app/a.py": "from . import b\nA = 1\n",
                "app/b.py": "from app import A\n",
            },
            [["app", "app.a", "app.b"]],
        ),
        (  # under TYPE_CHECKING it still counts
            {
                "app/__init__.py": "",
                "app/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
                "app/b.py": "from .a import A\n",
            },
            [["app.a", "app.b"]],
        ),
        (  # a chain without a way back, and a sub-package importing its parent's sibling
            {
                "app/__init__.py": "",
                "app/a.py": "from app.b import x\nimport os\n",
                "app/b.py": "from app.sub.c import y\n",
                "app/sub/__init__.py": "",
                "app/sub/c.py": "from ..d import z\n",
                "app/d.py": "",
            },
            [],
        ),
    ],
)
def test_the_circle_check_sees_what_it_should(
    tmp_path: Path, files: dict[str, str], expected: list[list[str]]
) -> None:
    _tree(tmp_path, files)
    assert circles(import_graph(tmp_path, ["app"])) == expected
