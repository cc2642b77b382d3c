"""The engine package's names load on first use (``_EXPORTS``, PEP 562), and the three lists that
say what it exports agree: ``_EXPORTS`` (what runs), the imports under ``TYPE_CHECKING`` (what type
checkers read) and ``__all__``."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import desktop_agent.engine as engine

INIT = Path(engine.__file__)


def type_checking_imports() -> dict[str, str]:
    """Name -> module (relative, as in ``_EXPORTS``) of the imports under ``TYPE_CHECKING``."""
    found: dict[str, str] = {}
    for node in ast.parse(INIT.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                for alias in imp.names:
                    found[alias.asname or alias.name] = "." * imp.level + (imp.module or "")
    return found


def test_exports_type_checking_imports_and_all_agree() -> None:
    assert engine._WHERE == type_checking_imports()
    assert sorted(engine._WHERE) == sorted(engine.__all__)
    assert len(engine._WHERE) == sum(len(n.split()) for n in engine._EXPORTS.values())


@pytest.mark.parametrize("name", sorted(engine._WHERE))
def test_each_name_is_the_object_its_module_defines(name: str) -> None:
    module = importlib.import_module(engine._WHERE[name], engine.__name__)
    assert getattr(engine, name) is getattr(module, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        engine.Nothing  # noqa: B018
    assert "Restorer" in dir(engine)


def test_importing_the_package_loads_none_of_its_modules() -> None:
    code = (
        "import sys, desktop_agent.engine\n"
        "print(sorted(m for m in sys.modules if m.startswith('desktop_agent.engine.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_name_loads_its_module_and_what_that_needs_only() -> None:
    code = (
        "import sys\nfrom desktop_agent.engine import AgentError\n"
        "print(sorted(m for m in sys.modules if m.startswith('desktop_agent.engine.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['desktop_agent.engine._errors']"
