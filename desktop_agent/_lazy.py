"""Names a package exports, imported from their modules on first use (PEP 562): importing the
package itself stays cheap. The engine and its scheduling package use it; it lives outside the
engine so that importing the engine loads none of the engine's modules."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str], exported: Iterable[str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``: a name of ``where`` is
    imported from its module (``where[name]``, relative to ``package``) when first asked for and
    kept in the package after; ``exported`` is what ``dir()`` shows beside what is loaded."""
    names = frozenset(exported)

    def __getattr__(name: str) -> object:
        """An exported name, imported from its module on first use (and kept here after)."""
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
