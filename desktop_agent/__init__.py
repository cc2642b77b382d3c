"""BackApp desktop agent: the backup engine (``desktop_agent.engine``), the headless ``backapp-agent``
command line (``desktop_agent.cli``) and, later, the tray app (``desktop_agent.gui``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("backapp")
except PackageNotFoundError:  # running from a source checkout that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
