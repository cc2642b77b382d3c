"""PyInstaller's entry script for the frozen ``backapp-agent`` (the same as the console script)."""

import sys

from desktop_agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
