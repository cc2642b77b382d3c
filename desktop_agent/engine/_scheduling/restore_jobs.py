"""Restores asked for from the web console, performed by a running agent (``backapp-agent
daemon``).

The server offers a job's id over the agent's WebSocket (``{"type": "restore"}``) or in the
heartbeat's ``restoreRequests``; ``RestoreJobs`` takes it (``start``: the server hands over what
to restore, where and how), restores through the same engine path as ``backapp-agent restore``
(``Restorer`` for a full archive, ``Snapshots`` for a snapshot: tar-slip rules, verification,
keep-both on conflicts), sends its progress about once a second, and reports the outcome with
its counts. One job at a time, on the daemon's worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._cancel import CancelToken
from .._errors import AgentError, ApiError, BackupCancelled, NetworkError
from .._events import Event, EventSink, RestoreProgress
from .._restore.planning import RestoreOptions
from .._restore.restorer import RestoreResult
from ..protocol import RestoreJob

__all__ = ["Perform", "RestoreJobs", "engine_restore", "job_options", "outcome_of"]

log = logging.getLogger("desktop_agent.engine.restore_jobs")

Perform = Callable[[RestoreJob, RestoreOptions, EventSink, CancelToken], RestoreResult]
"""Restores one job's backup with these options (the engine's restore path)."""

MAX_ERROR = 4000


def job_options(job: RestoreJob) -> RestoreOptions:
    """The engine's options for a job: its folder, its patterns, its conflict rule."""
    return RestoreOptions(
        target=Path(job.target),
        overwrite=job.conflict == "overwrite",
        patterns=tuple(job.paths),
    )


def outcome_of(result: RestoreResult) -> dict[str, Any]:
    """What ``complete`` reports: ``failed`` when patterns were given and nothing matched them,
    else ``completed`` with the counts (members skipped are counted and named in ``error``)."""
    outcome: dict[str, Any] = {
        "status": "completed",
        "files": result.files,
        "bytes": result.bytes,
        "renamed": len(result.renamed),
        "replaced": len(result.replaced),
        "unchanged": result.unchanged,
        "skipped": len(result.skipped),
    }
    problems = [f"{path}: {reason}" for path, reason in result.skipped[:20]]
    if result.unmatched_patterns:
        problems.insert(0, "nothing matched " + ", ".join(map(repr, result.unmatched_patterns)))
        if result.files == 0 and result.dirs == 0 and result.links == 0:
            outcome["status"] = "failed"
    if problems:
        outcome["error"] = "; ".join(problems)[:MAX_ERROR]
    return outcome


class RestoreJobs:
    """The queue of restore jobs offered to this agent and the one that runs them.

    ``plane`` is the agent API (``ApiClient``: ``start_restore_job``, ``restore_job_progress``,
    ``finish_restore_job``); ``perform`` restores (see ``Perform``); ``events`` also gets the
    engine's restore events (the daemon's display). ``add`` may be called from any thread."""

    def __init__(
        self,
        plane: Any,
        perform: Perform,
        *,
        events: EventSink | None = None,
        progress_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plane = plane
        self.perform = perform
        self.events = events
        self.progress_every = progress_every
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: deque[str] = deque()
        self._known: set[str] = set()
        self.finished: deque[tuple[str, str]] = deque(maxlen=100)
        """The latest jobs' ids and outcomes (``completed``, ``failed``, ``refused``)."""

    def add(self, job_id: str) -> bool:
        """Queue a job offered by the server; False when it is already queued or was taken."""
        with self._lock:
            if job_id in self._known:
                return False
            self._known.add(job_id)
            self._queue.append(job_id)
            return True

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(self._queue)

    def run_next(self, cancel: CancelToken) -> str | None:
        """Take and perform the next queued job; its outcome (None when the queue is empty)."""
        with self._lock:
            if not self._queue:
                return None
            job_id = self._queue.popleft()
        try:
            job = self.plane.start_restore_job(job_id)
        except NetworkError as exc:
            log.warning("could not take restore %s: %s (will retry)", job_id, exc)
            with self._lock:
                self._known.discard(job_id)  # offered again at the next heartbeat
            return None
        except ApiError as exc:  # taken already, expired, or not ours: nothing to do
            log.info("restore %s was not taken: %s", job_id, exc.detail)
            self.finished.append((job_id, "refused"))
            return "refused"
        log.info("restoring backup %s into %s (restore %s)", job.backup_id, job.target, job.id)
        outcome = self._perform(job, cancel)
        try:
            self.plane.finish_restore_job(job.id, outcome)
        except AgentError as exc:
            log.warning("could not report restore %s: %s", job.id, exc)
        log.info("restore %s %s", job.id, outcome["status"])
        self.finished.append((job.id, str(outcome["status"])))
        return str(outcome["status"])

    def _perform(self, job: RestoreJob, cancel: CancelToken) -> dict[str, Any]:
        last = [float("-inf")]

        def sink(event: Event) -> None:
            if self.events is not None:
                self.events(event)
            if (
                isinstance(event, RestoreProgress)
                and self._clock() - last[0] >= self.progress_every
            ):
                last[0] = self._clock()
                try:
                    self.plane.restore_job_progress(
                        job.id, files=event.files, bytes_written=event.bytes_written
                    )
                except AgentError as exc:  # progress is a courtesy; the restore goes on
                    log.debug("restore progress not sent: %s", exc)

        try:
            result = self.perform(job, job_options(job), sink, cancel)
        except BackupCancelled as exc:
            return {"status": "failed", "error": f"restore {exc.reason}"}
        except AgentError as exc:
            return {"status": "failed", "error": str(exc)[:MAX_ERROR]}
        except OSError as exc:  # e.g. the target folder cannot be made
            return {"status": "failed", "error": f"cannot write to {job.target}: {exc}"[:MAX_ERROR]}
        return outcome_of(result)


def engine_restore(settings: Any, api_key: str, plane: Any) -> Perform:
    """``Perform`` through the engine, as ``backapp-agent restore`` does: a snapshot with
    ``Snapshots`` (only the packs holding the chosen paths), a full archive with ``Restorer``."""
    from .._recovery.account import Recovery
    from .._repo.access import Snapshots
    from .._repo.keys import RepoKeyStore
    from .._restore.restorer import Restorer
    from .._settings import config_dir
    from .._transport.throttle import Throttle

    def perform(
        job: RestoreJob, options: RestoreOptions, sink: EventSink, cancel: CancelToken
    ) -> RestoreResult:
        info = next((b for b in plane.list_backups(limit=1000) if b.id == job.backup_id), None)
        kind = info.type if info is not None else "full"
        if kind == "incremental":
            with Snapshots.from_settings(settings, api_key) as snapshots:
                return snapshots.restore(job.backup_id, options, events=sink, cancel=cancel)
        # An encrypted archive opens with this machine's key of the agent that made it (no
        # recovery code here: the server never has it).
        recovery = Recovery(plane, RepoKeyStore(config_dir()), server_url=settings.server_url or "")
        maker = info.agent_id if info is not None else None
        with Restorer(
            plane,
            events=sink,
            temp_dir=settings.temp_dir,
            download_limit=Throttle.from_mbps(settings.limit_download),
            identities=lambda _ticket: recovery.archive_identities(maker),
        ) as restorer:
            return restorer.restore(job.backup_id, options, cancel=cancel)

    return perform
