"""``python -m desktop_agent`` is ``backapp-agent``."""

import sys

from desktop_agent.cli import main

sys.exit(main())
