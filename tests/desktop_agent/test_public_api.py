"""The engine's public face, and no Qt anywhere in the engine.

The engine (``desktop_agent/engine``) has a few public modules: the package itself, ``protocol``
(the wire types and seams it shares with the server), ``repo_protocol`` (the same for snapshots)
and ``schedule`` (the schedule maths); every module of the engine folder whose name does not start
with ``_`` is public and checked here. Every other module is private: its name, or the name of a package it sits in, starts with ``_``. The rules,
each checked here:

1. **Outside code imports only the public modules.** Outside is every Python file of the repository
   (``backend/``, ``desktop_agent/`` but for ``desktop_agent/engine/``, ``bench/``, ``packaging/``,
   ``tests/``, top-level scripts) except the engine's own unit tests: the test modules in a folder
   named ``engine`` under ``tests/`` (``tests/desktop_agent/engine/``). Those test internals on
   purpose, and the folder keeps that exception visible; any other test goes through the public
   face like any other caller. An import counts however it is written: ``import x._y``,
   ``from x._y import z``, ``from x import _y``, a relative import that resolves to one of these, an
   attribute of an imported engine module (``engine._y``), or a dotted string naming a private
   module (``mock.patch``, ``importlib.import_module``).
2. **Each public module's ``__all__`` is sorted and unique, and every name in it exists.** Sorted
   constants first, then by code point (the order the package's ``__all__`` has always had).
3. **A public module lists every public name it defines.** For the public submodules: every
   class, function and variable bound at their top level without a leading underscore (loggers and
   type variables aside: plumbing, not API). For the package, which defines its API by importing
   it: every public name bound in it, its submodules aside (httpx's rule).
4. **Outside code takes from a public module only what its ``__all__`` lists** (or, from the
   package, a public submodule). A name that merely happens to be importable there (``msgspec`` or
   ``Any`` from ``protocol``) is not API and may go without notice.

Rules 1 and 4 together mean: a name other packages use is exported by a public module. The checker
is tested on snippets too (``test_the_checker_*``), so a broken walk cannot pass by finding nothing.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import logging
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pytest

import desktop_agent
import desktop_agent.engine as engine

ENGINE = "desktop_agent.engine"
ENGINE_DIR = Path(engine.__file__).parent
REPO = ENGINE_DIR.parents[1]
PUBLIC: dict[str, ModuleType] = {
    ENGINE: engine,
    **{
        f"{ENGINE}.{path.stem}": importlib.import_module(f"{ENGINE}.{path.stem}")
        for path in sorted(ENGINE_DIR.glob("*.py"))
        if not path.stem.startswith("_")
    },
}
PUBLIC_SUBMODULES = {name.rsplit(".", 1)[1] for name in PUBLIC if name != ENGINE}
#: Folders that hold no source of this project (virtualenvs, build output, caches).
NOT_SOURCE = {"venv", "node_modules", "build", "dist", "__pycache__"}
#: A dotted string naming something in a private part of the engine.
PRIVATE_PATH = re.compile(rf"{re.escape(ENGINE)}(\.\w+)*\._(?!_)\w*(\.\w+)*")


# -- the checker -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Use:
    """One place outside the engine that names something of it."""

    line: int
    module: str
    """The engine module named (dotted), e.g. ``desktop_agent.engine.protocol``."""
    name: str | None
    """What is taken from it (``None``: the module itself)."""
    dynamic: bool = False
    """Named in a string (``mock.patch``): only checked for privacy."""
    text: str = ""
    """The whole dotted name as written (for the message)."""

    @property
    def private(self) -> bool:
        parts = self.module.split(".")[2:] + ([self.name] if self.name else [])
        return any(p.startswith("_") and not p.startswith("__") for p in parts)

    @property
    def dunder(self) -> bool:
        return self.name is not None and self.name.startswith("__")


def _in_engine(module: str) -> bool:
    return module == ENGINE or module.startswith(f"{ENGINE}.")


def _split(dotted: str) -> tuple[str, str | None]:
    """``desktop_agent.engine.protocol.Lease.x`` -> (the engine module, the first name taken)."""
    parts = dotted.split(".")
    if len(parts) == 2:
        return dotted, None
    # a public submodule is a module; anything else after the package is a name of the package
    # (or a private module, which is private either way)
    if parts[2] in PUBLIC_SUBMODULES:
        return ".".join(parts[:3]), parts[3] if len(parts) > 3 else None
    return ENGINE, parts[2]


def engine_uses(source: str, module_name: str, is_package: bool = False) -> Iterator[Use]:
    """Every use of the engine in ``source``, the text of the module ``module_name``."""
    tree = ast.parse(source)
    package = module_name if is_package else module_name.rpartition(".")[0]
    aliases: dict[str, str] = {}  # a name bound by ``import`` -> the module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    aliases[root] = root
                if _in_engine(alias.name):
                    module, name = _split(alias.name)
                    yield Use(node.lineno, module, name, text=alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                dotted = f"{base}.{alias.name}"  # ``from desktop_agent import engine`` counts too
                if not _in_engine(dotted):
                    continue
                aliases[alias.asname or alias.name] = dotted
                module, name = _split(dotted)
                yield Use(node.lineno, module, name, text=dotted)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if PRIVATE_PATH.fullmatch(node.value):
                yield Use(node.lineno, node.value, None, dynamic=True, text=node.value)
    for node in ast.walk(tree):
        # ``engine.Foo`` where ``engine`` was bound by an import (a chain and its inner chains all
        # name the same first name after the module: ``problems`` reports it once)
        if isinstance(node, ast.Attribute):
            chain: list[str] = []
            value: ast.expr = node
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                dotted = ".".join([aliases[value.id], *reversed(chain)])
                if _in_engine(dotted) and dotted != ENGINE:
                    module, name = _split(dotted)
                    if name is not None:
                        yield Use(node.lineno, module, name)


def problems(uses: Iterable[Use], where: str) -> list[str]:
    """What is wrong with ``uses`` (rules 1 and 4), one line each, naming ``where`` and the line."""
    found = []
    for use in uses:
        what = use.module + (f".{use.name}" if use.name else "")
        if use.private:
            found.append(f"{where}:{use.line}: imports the private {use.text or what}")
        elif use.dynamic or use.dunder:
            continue
        elif use.name is not None and use.name not in _exported(use.module):
            also = " nor a public module" if use.module == ENGINE else ""
            found.append(f"{where}:{use.line}: {what} is not in {use.module}.__all__{also}")
    return sorted(set(found))


def _exported(module: str) -> set[str]:
    names = set(PUBLIC[module].__all__)
    return names | PUBLIC_SUBMODULES if module == ENGINE else names


def is_engine_unit_test(path: Path) -> bool:
    """A test module of the engine's own (rule 1): in a folder named ``engine`` under ``tests/``."""
    parts = path.relative_to(REPO).parts
    return parts[0] == "tests" and "engine" in parts[1:-1]


def outside_files() -> list[Path]:
    """Every Python file of the repository outside the engine and its unit tests (rule 1)."""
    found = []
    for folder, dirs, files in os.walk(REPO):
        here = Path(folder)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in NOT_SOURCE
            and not d.endswith(".egg-info")
            and here / d != ENGINE_DIR
        )
        found += [here / f for f in sorted(files) if f.endswith(".py")]
    return [p for p in found if not is_engine_unit_test(p)]


def module_of(path: Path) -> tuple[str, bool]:
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


# -- the checker, on snippets: it finds what it must ----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from desktop_agent.engine._api import X", "backend.x", "imports the private"),
        ("import desktop_agent.engine._transport.client", "backend.x", "imports the private"),
        ("from desktop_agent.engine import _scheduler", "backend.x", "imports the private"),
        ("from desktop_agent.engine._transport import client", "bench.x", "imports the private"),
        ("from .engine._models import Lease", "desktop_agent.cli", "imports the private"),
        ("from ..engine import _errors", "desktop_agent.gui.app", "imports the private"),
        ("from desktop_agent import engine\nengine._api.X", "tests.x", "imports the private"),
        ("import desktop_agent.engine as e\ne._engine.x", "tests.x", "imports the private"),
        ("mock.patch('desktop_agent.engine._scheduler.time')", "tests.x", "imports the private"),
        ("from desktop_agent.engine.protocol import _x", "tests.x", "imports the private"),
        ("from desktop_agent.engine.protocol import msgspec", "backend.x", "not in"),
        ("from desktop_agent.engine import ScheduleError", "backend.x", "not in"),
        ("import desktop_agent.engine\ndesktop_agent.engine.Schedule", "backend.x", "not in"),
        ("from desktop_agent.engine.api import X", "backend.x", "nor a public module"),
    ],
)
def test_the_checker_finds_bad_uses(source: str, module: str, expected: str) -> None:
    found = problems(engine_uses(source, module), "f.py")
    assert len(found) == 1 and expected in found[0] and found[0].startswith("f.py:"), found


@pytest.mark.parametrize(
    "source",
    [
        "from desktop_agent.engine import BackupEngine, protocol, schedule",
        "from desktop_agent.engine.protocol import ConfigInfo, ControlPlane",
        "from desktop_agent.engine.schedule import Schedule",
        "import desktop_agent.engine as engine\nengine.__all__, engine.ApiClient",
        "import desktop_agent.engine.protocol as p\np.Lease",
        "from desktop_agent import _terminal",  # private to desktop_agent, not to the engine
        "log = logging.getLogger('desktop_agent.engine.api')",
    ],
)
def test_the_checker_lets_good_uses_pass(source: str) -> None:
    assert problems(engine_uses(source, "backend.x"), "f.py") == []


def test_the_checker_walks_every_outside_folder() -> None:
    files = outside_files()
    tops = {p.relative_to(REPO).parts[0] for p in files}
    assert {"backend", "bench", "desktop_agent", "packaging", "tests"} <= tops
    assert REPO / "backend" / "services" / "server_side" / "control_plane.py" in files
    assert not any(ENGINE_DIR in p.parents for p in files)
    assert not any(is_engine_unit_test(p) for p in files)
    assert is_engine_unit_test(REPO / "tests" / "desktop_agent" / "engine" / "test_engine.py")
    assert not is_engine_unit_test(REPO / "tests" / "desktop_agent" / "test_cli.py")


# -- the rules ---------------------------------------------------------------------------------------


def test_nothing_outside_the_engine_imports_a_private_module_or_an_unexported_name() -> None:
    """Rules 1 and 4."""
    found = []
    for path in outside_files():
        module, is_package = module_of(path)
        uses = engine_uses(path.read_text(encoding="utf-8"), module, is_package)
        found += problems(uses, str(path.relative_to(REPO)))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_all_is_sorted_unique_and_exists(name: str) -> None:
    """Rule 2."""
    module = PUBLIC[name]
    names = list(module.__all__)
    assert names == sorted(set(names), key=lambda n: (not n.isupper(), n))
    assert [n for n in names if not hasattr(module, n)] == []


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_is_in_all(name: str) -> None:
    """Rule 3."""
    module = PUBLIC[name]
    if name == ENGINE:
        submodules = {m.name for m in pkgutil.iter_modules([str(ENGINE_DIR)])}
        defined = {n for n in vars(module) if not n.startswith("_")} - submodules
    else:
        defined = {
            n for n in _top_level_names(Path(str(module.__file__))) if not n.startswith("_")
        } - {n for n, v in vars(module).items() if isinstance(v, logging.Logger | TypeVar)}
    assert defined - set(module.__all__) == set()


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names - {"__all__"}


# -- and the rest --------------------------------------------------------------------------------------


def test_version() -> None:
    assert isinstance(desktop_agent.__version__, str) and desktop_agent.__version__


def test_engine_never_imports_qt() -> None:
    for path in ENGINE_DIR.rglob("*.py"):
        text = path.read_text()
        assert "PySide" not in text and "PyQt" not in text, path
    code = "import sys, desktop_agent.engine, desktop_agent.cli; print(any('PySide' in m or 'Qt' in m for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


ENGINE_MODULES = sorted(m.name for m in pkgutil.walk_packages([str(ENGINE_DIR)], f"{ENGINE}."))


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0
