"""Server-side execution: configs with ``executionMode: "server"`` backed up by the server itself.

The server drives the very same engine as the agents (``desktop_agent.engine.BackupEngine``) through
two in-process seams, and decides on its own when to run:

    planner.py        which configs are due: Back Up Now requests, schedule slots, retries
    runner.py         runs what is due in the background, each run under its config's lease
    control_plane.py  the engine's ``ControlPlane``: calls the backup service directly (no HTTP, no
                      API key); uploads open with the same ``BackupService.open_upload`` as agents'
    storage.py        the engine's ``Storage`` for the embedded local storage (S3 gets
                      ``HttpStorage``: a PUT to the pre-signed URL, exactly what an agent does), and
                      an httpx transport that serves local downloads to ``backapp restore``
    restore.py        the engine's ``RestoreSource`` for ``backapp restore``
    sources.py        the folders a server-side config may read

When: a config runs when its schedule is due (evaluated in ``BACKAPP_TIMEZONE``; several missed slots
after downtime give one catch-up run), when a Back Up Now request (RunRequest with agent NULL) is
pending, and for automatic retries of a failed scheduled backup (``options.retry``: attempts 1..10,
default 3, counting the first; ``delaySeconds`` default 60, doubling each time). Each run holds the
``config:{id}`` lease (renewed while it runs), and re-checks under it that the run is still due, so
several server processes never run a slot twice.

Security: sources must lie under ``BACKAPP_SERVER_SOURCE_ROOTS`` (checked when a config is saved and
again, after resolving symbolic links, before each run); only administrators may create or change
server-side configs (``ConfigService``).
"""

from .control_plane import ServerControlPlane, engine_config
from .planner import PlannedRun, Planner, retry_policy
from .restore import ServerRestoreSource, load_restorable
from .runner import ServerRunner
from .sources import check_server_sources
from .storage import LocalDirectStorage, LocalStorageTransport

__all__ = [
    "LocalDirectStorage",
    "LocalStorageTransport",
    "PlannedRun",
    "Planner",
    "ServerControlPlane",
    "ServerRestoreSource",
    "ServerRunner",
    "check_server_sources",
    "engine_config",
    "load_restorable",
    "retry_policy",
]
