"""``AgentController``: the tray app's state and intents, on top of the engine.

The controller owns no widget. Windows and the tray read its state (``health()``, ``views``,
``online``…) when ``changed`` fires, and call its intents. Blocking calls (heartbeat, config list,
backups) run in workers (``_workers``); their results come back on the GUI thread.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from desktop_agent import __version__
from desktop_agent.autostart import Autostart, AutostartError
from desktop_agent.engine import (
    AgentError,
    AgentSettings,
    AgentSocket,
    ApiClient,
    ArchiveProgress,
    AuthenticationError,
    BackupFailed,
    BackupFinished,
    CancelToken,
    ConfigInfo,
    ConfigStarted,
    ConfigurationError,
    Dispatcher,
    Event,
    FileFailed,
    Heartbeat,
    KeyLocation,
    KeyStore,
    ManualRun,
    Outcome,
    RetryPolicy,
    RunFinished,
    RunRequest,
    RunResult,
    ScanFinished,
    ScanProgress,
    ScanStarted,
    Scheduler,
    ScheduleStore,
    StateStore,
    UploadProgress,
    UploadStarted,
    load_settings,
    local_timezone_name,
    save_settings,
)

from ._text import KeyRedactor, parse_time, redact
from ._workers import BackupWorker, JobWorker, run_task

__all__ = ["OVERDUE_AFTER", "AgentController", "ConfigView", "Health", "PairingResult"]

log = logging.getLogger("desktop_agent.gui")

#: No verified backup for this long: the config is overdue (the web console's rule).
OVERDUE_AFTER = timedelta(hours=24)
MAX_ERRORS_SHOWN = 50
LOG_LINES = 200
#: How often the schedules are checked (a schedule may be as frequent as every minute).
SCHEDULE_TICK_MS = 15_000


class Health(enum.Enum):
    """What the tray icon shows."""

    UNPAIRED = "unpaired"
    IDLE = "idle"
    BUSY = "busy"
    PAUSED = "paused"
    ATTENTION = "attention"


@dataclass(slots=True)
class ConfigView:
    """One config as the windows show it: the current run's progress, or the last result."""

    id: str
    name: str = ""
    sources: tuple[str, ...] = ()
    phase: str = "idle"
    """``idle``, ``waiting``, ``scanning``, ``archiving``, ``completed`` or ``failed``."""
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    uploaded: int = 0
    rate: float = 0.0
    eta: float | None = None
    errors: list[str] = field(default_factory=list)
    last: dict[str, Any] | None = None
    """The last result as ``state.json`` has it (``BackupResult.to_json``)."""

    @property
    def title(self) -> str:
        return self.name or self.id

    @property
    def running(self) -> bool:
        return self.phase in ("waiting", "scanning", "archiving")

    @property
    def last_failed(self) -> bool:
        return self.last is not None and self.last.get("status") == "failed"

    def overdue(self, now: datetime) -> bool:
        if self.last is None:
            return False  # never backed up by this agent: not "overdue", just new
        if self.last.get("status") != "completed":
            return False  # a failure is its own kind of attention
        when = parse_time(str(self.last.get("finishedAt") or ""))
        return when is not None and now - when > OVERDUE_AFTER


@dataclass(frozen=True, slots=True)
class PairingResult:
    server_url: str
    configs: tuple[ConfigInfo, ...]
    location: KeyLocation
    poll_interval: int | None
    agent_name: str | None = None


def _account(server_url: str) -> str:
    return server_url.rstrip("/")


class _LogBuffer(logging.Handler):
    """Keeps the last lines of the agent's log for the status window (keys redacted)."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.addFilter(KeyRedactor())
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink(redact(self.format(record)))
        except Exception:  # a log line must never break the app
            self.handleError(record)


class AgentController(QObject):
    """State and intents of the tray app. ``changed`` fires on any change of state; ``notify`` asks for
    a desktop notification (title, message, is_error); ``log_line`` carries a new log line (it may come
    from any thread: the connection is queued)."""

    changed = Signal()
    notify = Signal(str, str, bool)
    log_line = Signal(str)
    run_finished = Signal(object)
    run_requested = Signal(object)
    """A *Back Up Now* ``RunRequest`` from the socket's thread (queued to the GUI thread)."""

    def __init__(
        self,
        directory: Path,
        keystore: KeyStore,
        *,
        settings: AgentSettings | None = None,
        pool: QThreadPool | None = None,
        parent: QObject | None = None,
        autostart: Autostart | None = None,
    ) -> None:
        super().__init__(parent)
        self.directory = directory
        self.autostart = autostart or Autostart()  # "Start at login" (Settings)
        self.keystore = keystore
        self.state = StateStore(directory)
        self.pool = pool or QThreadPool.globalInstance()
        self.settings = settings or self._load_settings()
        self.views: dict[str, ConfigView] = {}
        self.online: bool | None = None
        self.agent_name: str | None = None  # as the server knows it (heartbeat answer)
        self.connection_error: str | None = None
        self.last_poll: datetime | None = None
        self.paused_until: datetime | None = None
        self.run_error: str | None = None
        self.log_lines: deque[str] = deque(maxlen=LOG_LINES)
        self._cancel: CancelToken | None = None
        self._worker: BackupWorker | JobWorker | None = None
        # Schedules, Back Up Now from the web and retries: the engine decides, Qt only wires.
        self.scheduler = Scheduler(ScheduleStore(directory), local_timezone_name())
        self.dispatcher = Dispatcher(self.scheduler)
        self.socket: AgentSocket | None = None
        self._polling = False
        self._closed = False
        self._key_cache: tuple[str, str, KeyLocation] | None = None
        self._succeeded_before: set[str] = set()
        self._load_state()

        self.log_line.connect(self._append_log)
        self._log_handler = _LogBuffer(self.log_line.emit)
        for name in ("desktop_agent", "backapp-agent"):
            logging.getLogger(name).addHandler(self._log_handler)
        agent_logger = logging.getLogger("desktop_agent")
        self._previous_level = agent_logger.level
        if agent_logger.getEffectiveLevel() > logging.INFO:  # the status window shows INFO lines
            agent_logger.setLevel(logging.INFO)

        self._timer = QTimer(self)
        self._timer.timeout.connect(self.poll)
        self._pause_timer = QTimer(self)
        self._pause_timer.setSingleShot(True)
        self._pause_timer.timeout.connect(self.resume)
        self._schedule_timer = QTimer(self)
        self._schedule_timer.timeout.connect(self.check_schedules)
        self._retry_timer = QTimer(self)
        self._retry_timer.setSingleShot(True)
        self._retry_timer.timeout.connect(self._dispatch)
        self.run_requested.connect(self._run_requested)

    # -- set-up -------------------------------------------------------------------------------------

    def _load_settings(self) -> AgentSettings:
        try:
            return load_settings()
        except ConfigurationError as exc:
            log.warning("ignoring unreadable settings: %s", exc)
            return AgentSettings()

    def _load_state(self) -> None:
        data = self.state.load()
        for config_id, last in data.get("configs", {}).items():
            if not isinstance(last, dict):
                continue
            view = self.views.setdefault(config_id, ConfigView(id=config_id))
            view.name = view.name or str(last.get("configName") or "")
            view.last = last
            if last.get("status") == "completed":
                self._succeeded_before.add(config_id)

    def close(self) -> None:
        """Stop timers and ignore what workers still report (the app is going away)."""
        self._closed = True
        self._timer.stop()
        self._schedule_timer.stop()
        self._retry_timer.stop()
        self._stop_socket()
        for name in ("desktop_agent", "backapp-agent"):
            logging.getLogger(name).removeHandler(self._log_handler)
        logging.getLogger("desktop_agent").setLevel(self._previous_level)

    @property
    def paired(self) -> bool:
        return bool(self.settings.server_url) and self._key() is not None

    def _key(self) -> str | None:
        """The API key, read from the keychain once per pairing and kept in memory: a keychain
        read per poll or per progress event would mean a keychain prompt every time on some
        systems."""
        if not self.settings.server_url:
            return None
        if self._key_cache is None or self._key_cache[0] != self.settings.server_url:
            found = self.keystore.load(_account(self.settings.server_url))
            if found is None:
                return None
            self._key_cache = (self.settings.server_url, found[0], found[1])
        return self._key_cache[1]

    def key_location(self) -> KeyLocation | None:
        return self._key_cache[2] if self._key() is not None and self._key_cache else None

    def start(self) -> None:
        """Begin polling (at once, then every ``pollInterval``)."""
        if not self.paired:
            return
        self._timer.start(max(1000, self.settings.poll_interval_ms))
        self._schedule_timer.start(SCHEDULE_TICK_MS)
        self._start_socket()
        self.poll()

    def _start_socket(self) -> None:
        key = self._key()
        if self.socket is not None or key is None or not self.settings.server_url:
            return
        self.socket = AgentSocket(
            self.settings.server_url,
            key,
            on_run=self.run_requested.emit,
            user_agent=f"backapp-agent/{__version__}",
        )
        self.socket.start()

    def _stop_socket(self) -> None:
        if self.socket is not None:
            self.socket.stop()
            self.socket = None

    # -- state --------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker is not None

    @property
    def paused(self) -> bool:
        return self.paused_until is not None

    def health(self, now: datetime | None = None) -> Health:
        now = now or datetime.now(UTC)
        if not self.settings.server_url:
            return Health.UNPAIRED
        if self.running:
            return Health.BUSY
        if self.attention_reasons(now):
            return Health.ATTENTION
        if self.paused:
            return Health.PAUSED
        return Health.IDLE

    def attention_reasons(self, now: datetime | None = None) -> list[str]:
        now = now or datetime.now(UTC)
        reasons: list[str] = []
        if self.online is False:
            reasons.append(f"server unreachable: {self.connection_error or 'no answer'}")
        if self.run_error:
            reasons.append(f"the last run could not start: {self.run_error}")
        for view in self.ordered_views():
            if view.last_failed and not view.running:
                reasons.append(f"{view.title}: last backup failed")
            elif view.overdue(now):
                reasons.append(f"{view.title}: no backup for more than 24 hours")
        return reasons

    def ordered_views(self) -> list[ConfigView]:
        return sorted(self.views.values(), key=lambda v: (v.title.lower(), v.id))

    # -- polling (heartbeat + configs) --------------------------------------------------------------

    def poll(self) -> None:
        """Heartbeat and fetch the assigned configs, off the GUI thread."""
        if self._polling or not self.settings.server_url:
            return
        key = self._key()
        if key is None:
            return
        server = self.settings.server_url
        zone = self.scheduler.timezone_name
        self._polling = True

        def work() -> tuple[Heartbeat, list[ConfigInfo]]:
            with ApiClient(server, key, retry=RetryPolicy(max_attempts=2)) as client:
                beat = client.heartbeat(version=__version__, platform=sys.platform, timezone=zone)
                return beat, client.list_configs()

        run_task(work, self._polled, self._poll_failed, self.pool)

    def _polled(self, result: object) -> None:
        self._polling = False
        if self._closed:
            return
        beat, configs = cast(tuple[Heartbeat, list[ConfigInfo]], result)
        if beat.agent is not None:
            self.agent_name = beat.agent.name
        was_offline = self.online is False
        self.online, self.connection_error = True, None
        self.last_poll = datetime.now(UTC)
        if was_offline:
            log.info("the server answers again")
        self.apply_configs(configs)
        self.dispatcher.set_configs(configs)
        for request in beat.run_requests:
            if self.dispatcher.request(request):
                log.info(
                    "Back Up Now requested from the web: %s", self._view(request.config_id).title
                )
        self.changed.emit()
        self.check_schedules()

    def _poll_failed(self, message: str) -> None:
        self._polling = False
        if self._closed:
            return
        if self.online is not False:
            log.warning("cannot reach the server: %s", message)
        self.online, self.connection_error = False, message
        self.last_poll = datetime.now(UTC)
        self.changed.emit()

    def apply_configs(self, configs: Sequence[ConfigInfo]) -> None:
        """The assigned configs (from a poll or a pairing): views for new ones, drop unassigned."""
        keep = {c.id for c in configs}
        for config in configs:
            view = self.views.setdefault(config.id, ConfigView(id=config.id))
            view.name = config.name
            view.sources = tuple(s.path for s in config.sources)
        for config_id in list(self.views):
            if config_id not in keep and not self.views[config_id].running:
                del self.views[config_id]

    # -- backups ------------------------------------------------------------------------------------

    def back_up(self, config_ids: Sequence[str] | None = None) -> bool:
        """*Back Up Now*: all assigned configs, or ``config_ids``. ``False`` when one is running or
        the app is not paired."""
        if self.running:
            return False
        key = self._key()
        if key is None or not self.settings.server_url:
            return False
        self.run_error = None
        targets = list(config_ids) if config_ids else [v.id for v in self.views.values()]
        for config_id in targets:
            if config_id in self.views:
                self._reset(self.views[config_id], "waiting")
        self._cancel = CancelToken()
        worker = BackupWorker(
            self.settings, key, self.state, self._cancel, config_ids, socket=self.socket
        )
        worker.signals.progress.connect(self.apply_event)
        worker.signals.finished.connect(self._back_up_done)
        self._worker = worker
        log.info(
            "Back Up Now: %s",
            ", ".join(self.views[c].title for c in targets if c in self.views) or "all configs",
        )
        self.pool.start(worker)
        self.changed.emit()
        return True

    def cancel(self, reason: str = "cancelled by the user") -> bool:
        """Stop the running backup cleanly (the engine aborts the upload and marks the log failed
        with ``reason``). ``run_finished`` fires when it has stopped."""
        if self._cancel is None:
            return False
        log.info("cancelling the running backup (%s)", reason)
        self._cancel.cancel(reason)
        return True

    @staticmethod
    def _reset(view: ConfigView, phase: str) -> None:
        view.phase = phase
        view.files_done = view.files_total = view.bytes_done = view.bytes_total = 0
        view.uploaded, view.rate, view.eta = 0, 0.0, None
        view.errors = []

    def _view(self, config_id: str) -> ConfigView:
        return self.views.setdefault(config_id, ConfigView(id=config_id))

    def apply_event(self, event: Event) -> None:
        """Fold an engine event into the views (on the GUI thread)."""
        if self._closed:
            return
        match event:
            case ConfigStarted():
                view = self._view(event.config_id)
                view.name = event.config_name or view.name
                view.sources = event.sources
                self._reset(view, "scanning")
            case ScanStarted():
                self._view(event.config_id).phase = "scanning"
            case ScanProgress() | ScanFinished():
                view = self._view(event.config_id)
                view.files_total, view.bytes_total = event.files, event.bytes
            case ArchiveProgress():
                view = self._view(event.config_id)
                view.phase = "archiving"
                view.files_done, view.files_total = event.files_done, event.files_total
                view.bytes_done, view.bytes_total = event.bytes_done, event.bytes_total
                view.rate, view.eta = event.rate, event.eta
            case UploadStarted():
                self._view(event.config_id).phase = "archiving"
            case UploadProgress():
                self._view(event.config_id).uploaded = event.bytes_uploaded
            case FileFailed():
                view = self._view(event.config_id)
                if len(view.errors) < MAX_ERRORS_SHOWN:
                    view.errors.append(f"{event.path}: {event.message}")
            case BackupFinished():
                view = self._view(event.config_id)
                view.phase = "completed"
                view.files_done, view.bytes_done = event.files, event.bytes
                view.eta = 0.0
                view.last = {
                    "configId": event.config_id,
                    "configName": event.config_name,
                    "status": "completed",
                    "error": None,
                    "filename": event.filename,
                    "size": event.archive_size,
                    "filesProcessed": event.files,
                    "duration": event.duration_ms,
                    "errorCount": event.errors,
                    "finishedAt": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                log.info("Backup '%s' completed (%s)", view.title, event.filename)
                if event.config_id not in self._succeeded_before:
                    self._succeeded_before.add(event.config_id)
                    self.notify.emit(
                        "First backup completed",
                        f"'{view.title}' is backed up: {event.files} files.",
                        False,
                    )
            case BackupFailed():
                view = self._view(event.config_id)
                view.phase = "failed"
                view.last = {
                    "configId": event.config_id,
                    "configName": event.config_name,
                    "status": "failed",
                    "error": redact(event.reason),
                    "finishedAt": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                log.warning("Backup '%s' failed: %s", view.title, event.reason)
                self.notify.emit("Backup failed", f"'{view.title}': {redact(event.reason)}", True)
            case RunFinished():
                if event.error:
                    self.run_error = redact(event.error)
                    self.online, self.connection_error = False, self.run_error
                    log.warning("the run could not start: %s", event.error)
                    self.notify.emit("Backup could not start", self.run_error, True)
            case _:
                pass
        self.changed.emit()

    def _back_up_done(self, result: object) -> None:
        """*Back Up Now* finished: say which configs it did not start (their lease is held by
        another process or machine, which is backing them up), then as any run."""
        if not self._closed and isinstance(result, ManualRun):
            for skip in result.skipped:
                self.notify.emit(
                    "Backup not started", redact(f"'{skip.title}': {skip.reason}"), False
                )
        self._run_done(result)

    def _run_done(self, result: object) -> None:
        assert isinstance(result, RunResult)
        self._worker, self._cancel = None, None
        if self._closed:
            return
        for view in self.views.values():
            if view.running:  # not reached (e.g. cancelled before it started)
                view.phase = "idle"
        self._load_state()
        self.changed.emit()
        self.run_finished.emit(result)
        QTimer.singleShot(0, self._dispatch)  # a scheduled or requested job may be waiting

    # -- schedules, Back Up Now from the web, retries -----------------------------------------------

    def check_schedules(self) -> None:
        """Queue what the scheduler says is due, then run the next job if none is running."""
        if self._closed or not self.settings.server_url:
            return
        self.dispatcher.poll()
        self._dispatch()

    def _run_requested(self, request: object) -> None:
        assert isinstance(request, RunRequest)
        if not self._closed and self.dispatcher.request(request):
            self._dispatch()

    def _dispatch(self) -> None:
        """Start the next queued job (one backup at a time, whatever started it)."""
        if self._closed or self.running:
            return
        key = self._key()
        if key is None or not self.settings.server_url:
            return
        picked = self.dispatcher.next_job()
        if picked is None:
            wait = self.dispatcher.wake_in()
            if wait is not None:
                self._retry_timer.start(int(wait * 1000) + 100)
            return
        job, config = picked
        self.run_error = None
        self._reset(self._view(job.config_id), "waiting")
        self._cancel = CancelToken()
        worker = JobWorker(self.settings, key, self.state, self._cancel, job, config, self.socket)
        worker.signals.progress.connect(self.apply_event)
        worker.signals.finished.connect(self._job_done)
        self._worker = worker
        self.pool.start(worker)
        self.changed.emit()

    def _job_done(self, outcome: object) -> None:
        assert isinstance(outcome, Outcome)
        self.dispatcher.finished(outcome)
        result = RunResult((outcome.result,) if outcome.result is not None else ())
        if outcome.result is None and outcome.status == "skipped" and outcome.reason:
            log.info("%s: skipped: %s", self._view(outcome.job.config_id).title, outcome.reason)
        self._run_done(result)

    # -- pause --------------------------------------------------------------------------------------

    def pause(self, duration: timedelta) -> None:
        """No automatic backups until ``now + duration`` (*Back Up Now* still works)."""
        self.paused_until = datetime.now(UTC) + duration
        self.scheduler.pause(self.paused_until)
        self._pause_timer.start(int(duration.total_seconds() * 1000))
        log.info("backups paused until %s", self.paused_until.astimezone().strftime("%H:%M"))
        self.changed.emit()

    def resume(self) -> None:
        if self.paused_until is None:
            return
        self.paused_until = None
        self.scheduler.resume()
        self._pause_timer.stop()
        log.info("backups resumed")
        self.changed.emit()
        self.check_schedules()  # the slots missed meanwhile: one catch-up run each

    # -- pairing ------------------------------------------------------------------------------------

    def check_pairing(
        self,
        server_url: str,
        api_key: str,
        on_done: Callable[[PairingResult], None],
        on_failed: Callable[[str], None],
        *,
        agent_id: str | None = None,
    ) -> None:
        """Check ``api_key`` against ``server_url`` (heartbeat + configs) off the GUI thread; when the
        server accepts it, save the settings and the key (keychain) and call ``on_done``. Nothing is
        saved when it refuses."""
        server = server_url.strip().rstrip("/")
        key = api_key.strip()
        try:
            candidate = replace(self.settings, server_url=server).validated()
            if agent_id:
                candidate = replace(candidate, agent_id=agent_id.strip())
        except ConfigurationError as exc:
            on_failed(redact(str(exc)))
            return
        if not key:
            on_failed("paste the agent's API key (bka_…), shown when the agent was registered")
            return

        def work() -> tuple[Heartbeat, list[ConfigInfo]]:
            with ApiClient(server, key, retry=RetryPolicy(max_attempts=2)) as client:
                try:
                    beat = client.heartbeat(version=__version__, platform=sys.platform)
                except AuthenticationError as exc:
                    raise AgentError(
                        "the server refused this API key. Check that you pasted all of it, or "
                        "create a new key for this agent in the web console."
                    ) from exc
                return beat, client.list_configs()

        def done(result: object) -> None:
            if self._closed:
                return
            beat, configs = cast(tuple[Heartbeat, list[ConfigInfo]], result)
            if beat.agent is not None:
                self.agent_name = beat.agent.name
            try:
                location = self._save_pairing(candidate, key)
            except Exception as exc:
                on_failed(redact(f"could not store the settings: {exc}"))
                return
            self.online, self.connection_error = True, None
            self.apply_configs(configs)
            self.changed.emit()
            log.info("paired with %s (%d configs)", server, len(configs))
            on_done(
                PairingResult(server, tuple(configs), location, beat.poll_interval, self.agent_name)
            )
            self.start()

        run_task(work, done, on_failed, self.pool)

    def _save_pairing(self, settings: AgentSettings, key: str) -> KeyLocation:
        old = self.settings.server_url
        save_settings(settings)
        if old and _account(old) != _account(settings.server_url or ""):
            self.keystore.delete(_account(old))
        location = self.keystore.save(_account(settings.server_url or ""), key)
        self.settings = settings
        self._key_cache = (settings.server_url or "", key, location)
        return location

    def sign_out(self) -> None:
        """Forget the key (keychain and file) and the server; stop polling. Configs and the local
        history stay on the server."""
        if self.running:
            self.cancel("agent signed out")
        self._timer.stop()
        self._schedule_timer.stop()
        self._stop_socket()
        if self.settings.server_url:
            self.keystore.delete(_account(self.settings.server_url))
        self._key_cache = None
        self.settings = replace(self.settings, server_url=None, agent_id=None)
        save_settings(self.settings)
        self.views.clear()
        self.online, self.connection_error = None, None
        log.info("signed out")
        self.changed.emit()

    # -- start at login -----------------------------------------------------------------------------

    def set_start_at_login(self, enabled: bool) -> str | None:
        """Turn start at login on or off; the reason when it could not be changed."""
        try:
            self.autostart.set_enabled(enabled)
        except AutostartError as exc:
            log.warning("%s", exc)
            return str(exc)
        log.info("start at login %s (%s)", "on" if enabled else "off", self.autostart.describe())
        return None

    # -- log ----------------------------------------------------------------------------------------

    def _append_log(self, line: str) -> None:
        self.log_lines.append(line)
