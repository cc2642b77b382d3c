"""Where tests live: the layout the conftest files describe, kept by a test so it cannot drift.

1. Every end-to-end test is under ``tests/e2e/``: a test module elsewhere neither asks for
   ``live_server_factory`` (a real ``backapp serve``), the browser (``chromium``, ``page``), a
   frozen build (``frozen_agent``, ``frozen_tray``) nor carries the ``e2e`` mark.
2. A test module imports no other test module and no ``conftest``: helpers shared by several
   modules live in ``tests/support/``, fixtures in the ``conftest.py`` files.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT

TESTS = ROOT / "tests"
E2E = TESTS / "e2e"
#: Fixtures only an end-to-end test needs.
E2E_FIXTURES = {"live_server_factory", "chromium", "context", "page", "frozen_agent", "frozen_tray"}


def _test_modules() -> Iterator[Path]:
    for path in sorted(TESTS.rglob("test_*.py")):
        if "__pycache__" not in path.parts:
            yield path


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _e2e_traits(tree: ast.AST) -> set[str]:
    """What makes a module end-to-end: the fixtures its tests ask for, the ``e2e`` mark."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            found |= {a.arg for a in args} & E2E_FIXTURES
        if isinstance(node, ast.Attribute) and node.attr == "e2e":
            if isinstance(node.value, ast.Attribute) and node.value.attr == "mark":
                found.add("the e2e mark")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getfixturevalue":
            if node.args and isinstance(node.args[0], ast.Constant):
                found |= {str(node.args[0].value)} & E2E_FIXTURES
    return found


def _imported_tests(tree: ast.AST, module: str) -> set[str]:
    """The test modules and conftests ``module`` imports (absolute or relative)."""
    package = module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {
        n
        for n in names
        if n.startswith("tests.")
        and n.rsplit(".", 1)[-1].startswith(("test_", "conftest"))
        and n != module
    }


def test_end_to_end_tests_are_all_under_tests_e2e() -> None:
    misplaced = {
        str(path.relative_to(ROOT)): sorted(traits)
        for path in _test_modules()
        if E2E not in path.parents and (traits := _e2e_traits(ast.parse(path.read_text())))
    }
    assert misplaced == {}, f"end-to-end tests outside tests/e2e/<feature>/: {misplaced}"


def test_test_modules_import_helpers_from_support_not_from_each_other() -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported)
        for path in _test_modules()
        if (imported := _imported_tests(ast.parse(path.read_text()), _dotted(path)))
    }
    assert wrong == {}, f"move shared helpers to tests/support/, fixtures to a conftest.py: {wrong}"


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("def test_x(live_server_factory): ...", "tests.backend.test_a", {"live_server_factory"}),
        ("async def test_x(page, s3_server): ...", "tests.backend.test_a", {"page"}),
        ("pytestmark = pytest.mark.e2e", "tests.backend.test_a", {"the e2e mark"}),
        (
            "def test_x(request):\n request.getfixturevalue('frozen_agent')",
            "tests.a",
            {"frozen_agent"},
        ),
        ("def test_x(client, tmp_path): ...", "tests.backend.test_a", set()),
    ],
)
def test_the_e2e_check_sees_what_it_should(source: str, module: str, expected: set[str]) -> None:
    assert _e2e_traits(ast.parse(source)) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .test_b import helper", {"tests.x.test_b"}),
        ("from tests.x import test_b", {"tests.x.test_b"}),
        ("from ..fakes import config", set()),
        ("from .conftest import Thing", {"tests.x.conftest"}),
        ("from tests.conftest import make_settings", {"tests.conftest"}),
        ("from tests.support.trees import snapshot", set()),
        ("import tests.x.test_c", {"tests.x.test_c"}),
    ],
)
def test_the_import_check_sees_what_it_should(source: str, expected: set[str]) -> None:
    assert _imported_tests(ast.parse(source), "tests.x.test_a") == expected
