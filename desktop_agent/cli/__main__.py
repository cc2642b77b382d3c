"""``python -m desktop_agent.cli`` is ``backapp-agent``."""

import sys

from desktop_agent.cli import main

sys.exit(main())
