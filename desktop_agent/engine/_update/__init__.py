"""Agent builds that update themselves from the server's offers (issue 19's auto-update).

- ``updater``: download, check (size, SHA-256, the release key's signature), trial run, atomic
  swap keeping ``<exe>.previous``, restart, and the rollback of a build that does not heartbeat;
- ``store``: the pending marker and the refused versions in the agent's state folder;
- ``duty``: the daemon's and the tray's idle-moment side.
"""

from .duty import UpdateDuty
from .store import PENDING_FILE, REFUSED_FILE, Pending, UpdateStore
from .updater import (
    CONFIRM_WITHIN,
    REFUSE_FOR,
    TRIAL_TIMEOUT,
    InstallKind,
    Updater,
    UpdateResult,
    child_env,
    install_kind,
    offer_from,
)

__all__ = [
    "CONFIRM_WITHIN",
    "PENDING_FILE",
    "REFUSED_FILE",
    "REFUSE_FOR",
    "TRIAL_TIMEOUT",
    "InstallKind",
    "Pending",
    "UpdateDuty",
    "UpdateResult",
    "UpdateStore",
    "Updater",
    "child_env",
    "install_kind",
    "offer_from",
]
