"""BackApp desktop agent: the backup engine (``desktop_agent.engine``), the headless ``backapp-agent``
command line (``desktop_agent.cli``) and, later, the tray app (``desktop_agent.gui``)."""

import sys
from importlib.metadata import PackageNotFoundError, version

# httpx imports its optional command line (click, rich, pygments) whenever those happen to be
# installed, as they are beside the server: 0.1-0.6 s of every short agent command, for a tool the
# agent never runs. A ``None`` in ``sys.modules`` makes that import fail at once, and httpx then
# defines a stub ``httpx.main`` instead (its documented behaviour without the ``cli`` extra).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

try:
    __version__ = version("backapp")
except PackageNotFoundError:  # running from a source checkout that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
