"""BackApp desktop agent: the backup engine (``desktop_agent.engine``), the headless ``backapp-agent``
command line (``desktop_agent.cli``) and, later, the tray app (``desktop_agent.gui``)."""

import os
import sys
from typing import TYPE_CHECKING

# httpx imports its optional command line (click, rich, pygments) whenever those happen to be
# installed, as they are beside the server: 0.1-0.6 s of every short agent command, for a tool the
# agent never runs. A ``None`` in ``sys.modules`` makes that import fail at once, and httpx then
# defines a stub ``httpx.main`` instead (its documented behaviour without the ``cli`` extra).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


#: The data file a frozen build carries its version in (written by ``packaging/build.py``).
FROZEN_VERSION_FILE = "_frozen_version.txt"


def _frozen_version() -> str | None:
    """The version a frozen build was made with (``packaging/build.py --version``): a data file
    beside this package in the build, because the package metadata it would otherwise read is
    the build machine's installed version, not necessarily the build's."""
    if not getattr(sys, "frozen", False):
        return None
    try:
        with open(
            os.path.join(os.path.dirname(__file__), FROZEN_VERSION_FILE), encoding="utf-8"
        ) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _read_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return _frozen_version() or version("backapp")
    except PackageNotFoundError:  # running from a source checkout that was never installed
        return "0.0.0"


if TYPE_CHECKING:
    __version__: str


def __getattr__(name: str) -> str:
    """``__version__``, read on first use: the package metadata costs a short command (``--help``)
    a good part of its start (importlib.metadata), and most commands never show the version."""
    if name == "__version__":
        value = globals()["__version__"] = _read_version()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FROZEN_VERSION_FILE", "__version__"]
