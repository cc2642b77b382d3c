"""The BackApp tray app (``backapp-tray``): the only package that imports Qt.

It shows state and sends intents; the work is the engine's (``desktop_agent.engine``), run off the GUI
thread in ``QRunnable`` workers whose signals carry the engine's progress events back (maestral-qt's
shape). Modules:

* ``_controller``: ``AgentController``, the one face of the app's state and intents (poll, back up,
  cancel, pause, pair, sign out) over its parts:

  * ``_pairing``: the settings and the API key in the keychain (Qt-free);
  * ``_status``: the configs' views, the connection and ``Health``, with the engine's events folded
    in and the notifications they call for (Qt-free);
  * ``_runs``: ``RunBridge``, the engine's scheduler and dispatcher ticked by Qt timers, one backup
    at a time in a worker;
  * ``_activity_log``: the recent log lines for the status window;

* ``_restore``: the restore browser's state and words, and its blocking calls (Qt-free);
* ``_workers``: the ``QRunnable`` workers;
* ``_icons``: the tray icon per state, drawn with ``QPainter``;
* ``_windows``: one module per window (pairing, status, settings, restore);
* ``_tray``: the tray icon and its menu;
* ``_text``: Qt-free text helpers (sizes, durations, key redaction);
* ``_refcounts``: the guard against the Qt binding's reference counting of ``None`` on CPython 3.11;
* ``app``: ``main()``, single instance and the no-tray fallback.
"""

from ._controller import AgentController
from ._refcounts import guard as _guard_refcounts
from ._status import ConfigView, Health
from .app import TrayApp, main

# Before the app (or a test) makes its first call into Qt: see ``_refcounts`` (the crash when
# quitting mid-backup). Importing the modules above only defines classes.
_guard_refcounts()

__all__ = ["AgentController", "ConfigView", "Health", "TrayApp", "main"]
