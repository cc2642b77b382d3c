"""Scheduled runs, *Back Up Now* requests and automatic retries, for every long-running agent.

No Qt here: ``backapp-agent daemon`` and the tray app drive the same pieces, one module each:

- ``store``: ``schedule.json``, what the scheduler remembers of each config across restarts;
- ``scheduler``: which configs are due now (time zone, catch-up after sleep, clock jumps, pause);
- ``queue``: the jobs waiting to run (one per config, *Back Up Now* first) and the retry policy;
- ``runner``: one job from the run lease to the retry decision, and ``backapp-agent run``;
- ``progress``: engine events turned into the server's live-progress messages;
- ``restore_jobs``: restores asked for from the web console, taken and performed by the daemon;
- ``daemon``: the headless loop behind ``backapp-agent daemon``.

The names are loaded when first used (PEP 562, as the engine's own): ``backapp-agent status``
reads ``ScheduleStore`` without importing the daemon, the runner and the backup pipeline they use.
"""

import typing as _typing

from desktop_agent._lazy import lazy_exports as _lazy_exports

if _typing.TYPE_CHECKING:
    from .daemon import AgentDaemon
    from .progress import ProgressReporter
    from .queue import Dispatcher, Job, Outcome, RetrySettings, parallel_backups
    from .restore_jobs import RestoreJobs, engine_restore
    from .runner import AgentPlane, ManualRun, Runner, Skipped
    from .scheduler import Due, Scheduler, Tick
    from .store import ScheduleStore

_WHERE = {
    name: f".{module}"
    for module, names in {
        "daemon": "AgentDaemon",
        "progress": "ProgressReporter",
        "queue": "Dispatcher Job Outcome RetrySettings parallel_backups",
        "restore_jobs": "RestoreJobs engine_restore",
        "runner": "AgentPlane ManualRun Runner Skipped",
        "scheduler": "Due Scheduler Tick",
        "store": "ScheduleStore",
    }.items()
    for name in names.split()
}

__all__ = [
    "AgentDaemon",
    "AgentPlane",
    "Dispatcher",
    "Due",
    "Job",
    "ManualRun",
    "Outcome",
    "ProgressReporter",
    "RestoreJobs",
    "RetrySettings",
    "Runner",
    "ScheduleStore",
    "Scheduler",
    "Skipped",
    "Tick",
    "engine_restore",
    "parallel_backups",
]


__getattr__, __dir__ = _lazy_exports(__name__, _WHERE, __all__)
