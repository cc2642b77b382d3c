"""``RunBridge``: the engine's run orchestration wired to Qt. Schedules, *Back Up Now* (from the menu
or the web, over the agent's WebSocket) and retries all go through the engine's ``Scheduler`` and
``Dispatcher``, which decide what runs next; this module only ticks them with Qt timers and runs
their jobs in workers off the GUI thread (up to ``parallelBackups`` jobs of different configs at
once; a *Back Up Now* from the menu runs alone), whose events come back as Qt signals."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from desktop_agent.engine import (
    AgentSettings,
    AgentSocket,
    CancelToken,
    ConfigInfo,
    Dispatcher,
    ManualRun,
    Outcome,
    RunRequest,
    RunResult,
    Scheduler,
    ScheduleStore,
    StateStore,
    Throttle,
    agent_bandwidth,
    local_timezone_name,
    parallel_backups,
)

from ._pairing import Pairing
from ._status import Status
from ._text import redact
from ._workers import USER_AGENT, BackupWorker, JobWorker, RunContext

__all__ = ["SCHEDULE_TICK_MS", "RunBridge"]

log = logging.getLogger("desktop_agent.gui")

RunLimits = tuple[Throttle | None, Throttle | None]

#: How often the schedules are checked (a schedule may be as frequent as every minute).
SCHEDULE_TICK_MS = 15_000


class RunBridge(QObject):
    """The backups, whatever started them: scheduled and requested jobs up to the agent's
    ``parallelBackups`` at once (each of another config), or one *Back Up Now* from the menu alone.
    ``progress`` carries the running backups' engine events and ``finished`` each run's
    ``RunResult`` (both on the GUI thread); ``changed`` and ``notify`` are the controller's (it
    forwards them)."""

    changed = Signal()
    notify = Signal(str, str, bool)
    progress = Signal(object)
    finished = Signal(object)
    requested = Signal(object)
    """A *Back Up Now* ``RunRequest`` from the socket's thread (queued to the GUI thread)."""
    restore_requested = Signal(str)
    """A web console restore's id from the socket's thread (the controller hands it on)."""

    def __init__(
        self,
        directory: Path,
        pairing: Pairing,
        status: Status,
        state: StateStore,
        pool: QThreadPool,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._pairing = pairing
        self._status = status
        self._state = state
        self._pool = pool
        self.scheduler = Scheduler(ScheduleStore(directory), local_timezone_name())
        self.dispatcher = Dispatcher(self.scheduler)
        self.socket: AgentSocket | None = None
        self.paused_until: datetime | None = None
        self._cancel: CancelToken | None = None
        """The menu's *Back Up Now* run's token."""
        self._worker: BackupWorker | None = None
        """The menu's *Back Up Now* run (it runs alone)."""
        self._jobs: dict[str, tuple[JobWorker, CancelToken]] = {}
        """Scheduled and requested jobs running, by config id."""
        self._limits: tuple[tuple[float | None, float | None], RunLimits] | None = None
        self._server_parallel: int | None = None
        """The web console's ``parallelBackups`` (last heartbeat), replacing the machine's own."""
        self._closed = False

        self._schedule_timer = QTimer(self)
        self._schedule_timer.timeout.connect(self.check_schedules)
        self._retry_timer = QTimer(self)
        self._retry_timer.setSingleShot(True)
        self._retry_timer.timeout.connect(self._dispatch)
        self._pause_timer = QTimer(self)
        self._pause_timer.setSingleShot(True)
        self._pause_timer.timeout.connect(self.resume)
        self.requested.connect(self._run_requested)

    @property
    def worker(self) -> BackupWorker | JobWorker | None:
        """A running backup's worker (its ``signals`` carry the engine's events as they come): the
        menu's *Back Up Now*, else the oldest job."""
        if self._worker is not None:
            return self._worker
        return next((worker for worker, _ in self._jobs.values()), None)

    @property
    def running(self) -> bool:
        return self._worker is not None or bool(self._jobs)

    @property
    def running_jobs(self) -> list[str]:
        """The config ids of the scheduled or requested jobs running now, oldest first."""
        return list(self._jobs)

    @property
    def parallel(self) -> int:
        """How many jobs may run at once (the agent's ``parallelBackups``: the web console's,
        else the machine's own)."""
        return max(
            1, parallel_backups(self._server_parallel, self._pairing.settings.parallel_backups)
        )

    def heard(self, server_parallel: object) -> None:
        """A heartbeat's ``parallelBackups`` (``None``: the machine's own holds; one this agent
        cannot use is logged and ignored). More room is used at the next dispatch."""
        before = self.parallel
        self._server_parallel = parallel_backups(server_parallel, 0) or None
        if self.parallel != before:
            log.info("parallel backups: %d (was %d)", self.parallel, before)

    @property
    def paused(self) -> bool:
        return self.paused_until is not None

    # -- start and stop -----------------------------------------------------------------------------

    def start(self) -> None:
        """Tick the schedules and listen on the agent's WebSocket (paired)."""
        self._schedule_timer.start(SCHEDULE_TICK_MS)
        key = self._pairing.key()
        server = self._pairing.settings.server_url
        if self.socket is not None or key is None or not server:
            return
        self.socket = AgentSocket(
            server,
            key,
            on_run=self.requested.emit,
            on_restore=self.restore_requested.emit,
            user_agent=USER_AGENT,
        )
        self.socket.start()

    def stop(self) -> None:
        """No more schedules or requests from the web (signed out)."""
        self._schedule_timer.stop()
        self._stop_socket()

    def close(self) -> None:
        """Stop the timers and ignore what a worker still reports (the app is going away)."""
        self._closed = True
        self._retry_timer.stop()
        self.stop()

    def _stop_socket(self) -> None:
        if self.socket is not None:
            self.socket.stop()
            self.socket = None

    # -- Back Up Now --------------------------------------------------------------------------------

    def back_up(self, config_ids: Sequence[str] | None = None) -> bool:
        """*Back Up Now*: all assigned configs, or ``config_ids``. ``False`` when one is running or
        the app is not paired."""
        if self.running:
            return False
        key = self._pairing.key()
        if key is None or not self._pairing.settings.server_url:
            return False
        views = self._status.views
        self._status.run_error = None
        targets = list(config_ids) if config_ids else [v.id for v in views.values()]
        for config_id in targets:
            if config_id in views:
                views[config_id].reset("waiting")
        worker = BackupWorker(self._new_run(key), config_ids)
        log.info(
            "Back Up Now: %s",
            ", ".join(views[c].title for c in targets if c in views) or "all configs",
        )
        self._start(worker, self._back_up_done)
        return True

    def cancel(self, reason: str = "cancelled by the user", config_id: str | None = None) -> bool:
        """Stop the running backups cleanly, or only the job of ``config_id`` (the engine aborts
        the upload and records it ``cancelled``). ``finished`` fires for each when it has
        stopped; ``False`` when nothing (of ``config_id``) runs."""
        tokens = [
            cancel
            for job_config, (_, cancel) in self._jobs.items()
            if config_id is None or job_config == config_id
        ]
        if self._cancel is not None and config_id is None:
            tokens.append(self._cancel)
        if not tokens:
            return False
        what = "the running backups" if config_id is None else f"the backup of {config_id}"
        log.info("cancelling %s (%s)", what, reason)
        for token in tokens:
            token.cancel(reason)
        return True

    def _back_up_done(self, result: object) -> None:
        """*Back Up Now* finished: say which configs it did not start (their lease is held by
        another process or machine, which is backing them up), then as any run."""
        if not self._closed and isinstance(result, ManualRun):
            for skip in result.skipped:
                self.notify.emit(
                    "Backup not started", redact(f"'{skip.title}': {skip.reason}"), False
                )
        self._run_done(result)

    # -- schedules, Back Up Now from the web, retries -----------------------------------------------

    def assigned(self, configs: Sequence[ConfigInfo], requests: Sequence[RunRequest]) -> None:
        """A poll's answer: the configs to schedule, and the *Back Up Now* requests from the web."""
        self.dispatcher.set_configs(configs)
        for request in requests:
            if self.dispatcher.request(request):
                log.info(
                    "Back Up Now requested from the web: %s",
                    self._status.view(request.config_id).title,
                )

    def check_schedules(self) -> None:
        """Queue what the scheduler says is due, then run the next job if none is running."""
        if self._closed or not self._pairing.settings.server_url:
            return
        self.dispatcher.poll()
        self._dispatch()

    def _run_requested(self, request: object) -> None:
        assert isinstance(request, RunRequest)
        if not self._closed and self.dispatcher.request(request):
            self._dispatch()

    def _dispatch(self) -> None:
        """Start the queued jobs there is room for (``parallelBackups``, never two of one config;
        none while the menu's *Back Up Now* runs)."""
        if self._closed or self._worker is not None:
            return
        key = self._pairing.key()
        if key is None or not self._pairing.settings.server_url:
            return
        self.dispatcher.parallel = self.parallel
        while len(self._jobs) < self.parallel:
            picked = self.dispatcher.next_job()
            if picked is None:
                break
            job, config = picked
            self._status.run_error = None
            self._status.view(job.config_id).reset("waiting")
            cancel = CancelToken()
            settings = self._pairing.settings
            context = RunContext(
                settings, key, self._state, cancel, self.socket, self._shared_limits(settings)
            )
            worker = JobWorker(context, job, config)
            self._jobs[job.config_id] = (worker, cancel)
            worker.signals.progress.connect(self.progress)
            worker.signals.finished.connect(self._job_done)
            self._pool.start(worker)
            self.changed.emit()
        wait = self.dispatcher.wake_in()
        if wait is not None and len(self._jobs) < self.parallel:
            self._retry_timer.start(int(wait * 1000) + 100)

    def _job_done(self, outcome: object) -> None:
        assert isinstance(outcome, Outcome)
        config_id = outcome.job.config_id
        self._jobs.pop(config_id, None)
        self.dispatcher.finished(outcome)
        result = RunResult((outcome.result,) if outcome.result is not None else ())
        if outcome.result is None and outcome.status == "skipped" and outcome.reason:
            title = self._status.view(config_id).title
            log.info("%s: skipped: %s", title, outcome.reason)
        self._finished(result, (config_id,))

    # -- pause --------------------------------------------------------------------------------------

    def pause(self, duration: timedelta) -> None:
        """No automatic backups until ``now + duration`` (*Back Up Now* still works)."""
        self.paused_until = datetime.now(UTC) + duration
        self.scheduler.pause(self.paused_until)
        self._pause_timer.start(int(duration.total_seconds() * 1000))
        log.info("backups paused until %s", self.paused_until.astimezone().strftime("%H:%M"))
        self.changed.emit()

    def resume(self) -> None:
        if self.paused_until is None or self._closed:
            return  # closed: a late answer after quitting; the timers are gone with the app
        self.paused_until = None
        self.scheduler.resume()
        self._pause_timer.stop()
        log.info("backups resumed")
        self.changed.emit()
        self.check_schedules()  # the slots missed meanwhile: one catch-up run each

    # -- the worker ---------------------------------------------------------------------------------

    def _shared_limits(self, settings: AgentSettings) -> RunLimits:
        """The token buckets every parallel run shares: the agent's process-wide ones, whose rates
        the machine's own limits and the server's (heartbeats) set; ``None``: no local limit in
        that direction (the storage client then follows the process's bucket all the same)."""
        wanted = (settings.limit_upload, settings.limit_download)
        bandwidth = agent_bandwidth(settings)
        if self._limits is None or self._limits[0] != wanted:
            self._limits = (
                wanted,
                (
                    bandwidth.upload if wanted[0] is not None else None,
                    bandwidth.download if wanted[1] is not None else None,
                ),
            )
        return self._limits[1]

    def _new_run(self, key: str) -> RunContext:
        """A new run's context, with a new ``CancelToken`` (``cancel()`` reaches it)."""
        self._cancel = CancelToken()
        return RunContext(self._pairing.settings, key, self._state, self._cancel, self.socket)

    def _start(self, worker: BackupWorker, done: Callable[[object], None]) -> None:
        worker.signals.progress.connect(self.progress)
        worker.signals.finished.connect(done)
        self._worker = worker
        self._pool.start(worker)
        self.changed.emit()

    def _run_done(self, result: object) -> None:
        """The menu's *Back Up Now* finished."""
        assert isinstance(result, RunResult)
        self._worker, self._cancel = None, None
        self._finished(result, None)

    def _finished(self, result: RunResult, config_ids: Sequence[str] | None) -> None:
        """A run ended: its configs (``None``: all) are idle again unless another run has them."""
        if self._closed:
            return
        self._status.run_ended(self._state.load(), config_ids)
        self.changed.emit()
        self.finished.emit(result)
        QTimer.singleShot(0, self._dispatch)  # a scheduled or requested job may be waiting
