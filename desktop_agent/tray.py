"""``backapp-tray``: the entry point, kept free of Qt so a missing Qt gives a clear message."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from desktop_agent.gui.app import main as gui_main
    except ImportError as exc:
        if "PySide6" not in str(exc):
            raise
        print(
            "backapp-tray needs Qt (PySide6), which is not installed. In a checkout of BackApp: "
            'pip install -e ".[tray]" (or use the tray app\'s build, see the README). '
            "For servers, use backapp-agent.",
            file=sys.stderr,
        )
        return 2
    return gui_main()


if __name__ == "__main__":
    sys.exit(main())
