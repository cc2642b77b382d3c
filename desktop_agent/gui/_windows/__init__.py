"""The app's windows, one module each. They read the controller's state when it says ``changed``
and call its intents; nothing here blocks.

* ``pairing``: the first-run (and re-pairing) window;
* ``status``: the status window;
* ``settings``: the settings dialog.

The restore browser (*Restore Files…*: the backups, a lazy file tree, search, a restore with
progress) comes here as ``restore``; its state and intents go in a part of their own beside the
controller's (see the package's docstring), not into ``AgentController``.
"""

from .pairing import PairingWindow
from .settings import SettingsDialog
from .status import StatusWindow

__all__ = ["PairingWindow", "SettingsDialog", "StatusWindow"]
