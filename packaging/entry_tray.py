"""PyInstaller's entry script for the frozen tray app (the same as ``backapp-tray``)."""

import sys

from desktop_agent.tray import main

if __name__ == "__main__":
    sys.exit(main())
