"""The BackApp tray app (``backapp-tray``): the only package that imports Qt.

It shows state and sends intents; the work is the engine's (``desktop_agent.engine``), run off the GUI
thread in ``QRunnable`` workers whose signals carry the engine's progress events back (maestral-qt's
shape). Modules:

* ``_controller``: ``AgentController``, the app's state (configs, runs, connection) and its intents
  (poll, back up, cancel, pause, pair, sign out);
* ``_workers``: the ``QRunnable`` workers;
* ``_icons``: the tray icon per state, drawn with ``QPainter``;
* ``_windows``: the first-run (pairing) window, the status window and the settings dialog;
* ``_tray``: the tray icon and its menu;
* ``app``: ``main()``, single instance and the no-tray fallback.
"""

from ._controller import AgentController, ConfigView, Health
from .app import TrayApp, main

__all__ = ["AgentController", "ConfigView", "Health", "TrayApp", "main"]
