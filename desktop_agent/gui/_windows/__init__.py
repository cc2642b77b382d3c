"""The app's windows, one module each. They read the controller's state when it says ``changed``
and call its intents; nothing here blocks.

* ``pairing``: the first-run (and re-pairing) window;
* ``status``: the status window;
* ``settings``: the settings dialog;
* ``restore``: the restore browser (*Restore Files…*: the backups, a lazy file tree, search, a
  restore with progress); its state and words are ``_restore``'s, not ``AgentController``'s.
"""

from .pairing import PairingWindow
from .restore import RestoreWindow
from .settings import SettingsDialog
from .status import StatusWindow

__all__ = ["PairingWindow", "RestoreWindow", "SettingsDialog", "StatusWindow"]
