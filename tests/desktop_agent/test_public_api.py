"""The engine's public face: ``__all__`` is complete, and no Qt anywhere in the engine."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import desktop_agent
import desktop_agent.engine as engine

ENGINE_DIR = Path(engine.__file__).parent
ENGINE_MODULES = sorted(
    m.name.removeprefix("desktop_agent.engine.")
    for m in pkgutil.walk_packages(engine.__path__, "desktop_agent.engine.")
)
"""Every module of the engine, those of its sub-packages too (``_restore.planning``...)."""


def test_all_is_complete_and_exists() -> None:
    public = {name for name in vars(engine) if not name.startswith("_")}
    modules = {m.name for m in pkgutil.iter_modules([str(ENGINE_DIR)])}
    assert public - set(engine.__all__) - modules == set()
    assert all(hasattr(engine, name) for name in engine.__all__)
    assert engine.__all__ == sorted(engine.__all__, key=lambda n: (not n.isupper(), n))


def test_version() -> None:
    assert isinstance(desktop_agent.__version__, str) and desktop_agent.__version__


def test_engine_never_imports_qt() -> None:
    for path in ENGINE_DIR.rglob("*.py"):
        text = path.read_text()
        assert "PySide" not in text and "PyQt" not in text, path
    code = "import sys, desktop_agent.engine, desktop_agent.cli; print(any('PySide' in m or 'Qt' in m for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"desktop_agent.engine.{module}"))
    assert result.failed == 0
