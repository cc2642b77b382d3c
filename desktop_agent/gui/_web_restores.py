"""Restores asked for from the web console (*Restore to a machine*), performed by the tray app as
the daemon performs them: the server offers a job over the agent's WebSocket or in the heartbeat's
``restoreRequests``; the engine's ``RestoreJobs`` takes it, restores through the engine's restore
path (tar-slip rules, verification, keep-both unless the request says overwrite), sends progress
to the server about once a second (the backup's page shows it live) and reports the outcome.

Here one job at a time runs on a pool thread; its progress comes back to the GUI thread as Qt
signals for the status window, and its end as a notification.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from desktop_agent.engine import (
    AgentSettings,
    ApiClient,
    CancelToken,
    Event,
    EventSink,
    RestoreJobs,
    RestoreOptions,
    RestoreProgress,
    RestoreResult,
    engine_restore,
)
from desktop_agent.engine.protocol import RestoreJob

from ._text import human_bytes
from ._words import failure_text
from ._workers import USER_AGENT

__all__ = ["WebRestore", "WebRestores"]

log = logging.getLogger("desktop_agent.gui")

FINISHED_TITLE = "Web restore finished"
FAILED_TITLE = "Web restore did not finish"


@dataclass(slots=True)
class WebRestore:
    """The web restore running now, as the status window shows it."""

    id: str
    target: str = ""
    files: int = 0
    bytes_written: int = 0

    def text(self) -> str:
        into = f" into {self.target}" if self.target else ""
        return (
            f"Restoring files asked for from the web console{into}: {self.files:,} files, "
            f"{human_bytes(self.bytes_written)} so far"
        )


class _Signals(QObject):
    started = Signal(object)
    """The ``RestoreJob`` taken."""
    progress = Signal(object)
    """A ``RestoreProgress``."""
    finished = Signal(str, object, object)
    """The job's id, its status (``completed``, ``failed``, ``refused``; None: not taken, the
    server did not answer: offered again at a later heartbeat) and the outcome reported."""


class _Plane:
    """The agent API as ``RestoreJobs`` sees it, keeping the outcome it reports (the
    notification says it too)."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.outcome: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def finish_restore_job(self, job_id: str, outcome: dict[str, Any]) -> None:
        self.outcome = dict(outcome)
        self.client.finish_restore_job(job_id, outcome)


class _Worker(QRunnable):
    def __init__(
        self, settings: AgentSettings, api_key: str, job_id: str, cancel: CancelToken
    ) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.settings, self.api_key, self.job_id, self.cancel = settings, api_key, job_id, cancel
        self.signals = _Signals()

    def run(self) -> None:
        status: str | None = None
        outcome: dict[str, Any] = {}
        try:
            assert self.settings.server_url
            with ApiClient(
                self.settings.server_url, self.api_key, user_agent=USER_AGENT, mode="tray"
            ) as client:
                plane = _Plane(client)
                restore = engine_restore(self.settings, self.api_key, client)

                def perform(
                    job: RestoreJob, options: RestoreOptions, sink: EventSink, cancel: CancelToken
                ) -> RestoreResult:
                    self.signals.started.emit(job)
                    return restore(job, options, sink, cancel)

                def events(event: Event) -> None:
                    if isinstance(event, RestoreProgress):
                        self.signals.progress.emit(event)

                jobs = RestoreJobs(plane, perform, events=events)
                jobs.add(self.job_id)
                status = jobs.run_next(self.cancel)
                outcome = plane.outcome
        except Exception as exc:  # a bug costs this job, not the app
            log.exception("the web restore %s failed", self.job_id)
            status, outcome = "failed", {"error": str(exc)}
        self.signals.finished.emit(self.job_id, status, outcome)


class WebRestores(QObject):
    """The web console's restores for this machine: ``add`` (a job's id, from the socket or a
    heartbeat) queues it; one runs at a time. ``changed`` fires as ``current`` moves; ``notify``
    says how a job ended (title, message, is_error)."""

    changed = Signal()
    notify = Signal(str, str, bool)
    requested = Signal(str)
    """A job's id from the socket's thread (queued to the GUI thread)."""

    def __init__(
        self,
        pool: QThreadPool,
        context: Callable[[], tuple[AgentSettings, str] | None],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._pool = pool
        self._context = context
        """The pairing's settings and key now (``None``: not paired: nothing starts)."""
        self._queue: list[str] = []
        self._seen: set[str] = set()
        self._worker: _Worker | None = None
        self._closed = False
        self.current: WebRestore | None = None
        self.requested.connect(self.add)

    @property
    def running(self) -> bool:
        return self._worker is not None

    def add(self, job_id: str) -> None:
        """Queue a job offered by the server (a job seen already is not taken twice)."""
        if self._closed or job_id in self._seen:
            return
        self._seen.add(job_id)
        self._queue.append(job_id)
        log.info("restore %s requested from the web console", job_id)
        self._next()

    def cancel(self, reason: str = "cancelled by the user") -> None:
        """Stop the running job between files (what is restored stays)."""
        if self._worker is not None:
            self._worker.cancel.cancel(reason)

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        self.cancel("agent stopped")

    def _next(self) -> None:
        if self._closed or self._worker is not None or not self._queue:
            return
        context = self._context()
        if context is None:
            return
        settings, key = context
        job_id = self._queue.pop(0)
        worker = _Worker(settings, key, job_id, CancelToken())
        worker.signals.started.connect(self._started)
        worker.signals.progress.connect(self._progress)
        worker.signals.finished.connect(self._finished)
        self._worker = worker
        self.current = WebRestore(job_id)
        self._pool.start(worker)
        self.changed.emit()

    def _started(self, job: object) -> None:
        assert isinstance(job, RestoreJob)
        if self.current is not None and self.current.id == job.id:
            self.current.target = job.target
            self.changed.emit()

    def _progress(self, event: object) -> None:
        assert isinstance(event, RestoreProgress)
        if self.current is not None:
            self.current.files, self.current.bytes_written = event.files, event.bytes_written
            self.changed.emit()

    def _finished(self, job_id: str, status: object, outcome: object) -> None:
        done, self.current, self._worker = self.current, None, None
        report = outcome if isinstance(outcome, dict) else {}
        if status is None:  # not taken: the server did not answer; it offers the job again
            self._seen.discard(job_id)
        elif not self._closed and status in ("completed", "failed"):
            self.notify.emit(*_ending(status, report, done.target if done else ""))
        if not self._closed:
            self.changed.emit()
            self._next()


def _ending(status: object, report: dict[str, Any], target: str) -> tuple[str, str, bool]:
    """The notification of a finished job: what landed where, or why it did not."""
    where = f" into {target}" if target else ""
    if status == "completed":
        counts = (
            f"{int(report.get('files') or 0):,} files ({human_bytes(report.get('bytes') or 0)})"
        )
        kept = int(report.get("renamed") or 0)
        extra = f"; {kept} existing file(s) kept, the restored copy beside each" if kept else ""
        return FINISHED_TITLE, f"Restored {counts}{where}{extra}.", False
    why = failure_text(str(report.get("error") or "see the backup's page in the web console"))
    return FAILED_TITLE, f"The restore{where} failed: {why}", True
