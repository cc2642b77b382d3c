"""What the windows and the tray show, without Qt: a ``ConfigView`` per config (the current run's
progress or the last result), the server connection, the tray's ``Health``, and the engine's events
folded into them, each with the desktop notification it deserves (``Notice``)."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from desktop_agent.engine import (
    ArchiveProgress,
    BackupFailed,
    BackupFinished,
    BandwidthControl,
    ConfigInfo,
    ConfigStarted,
    Event,
    FileFailed,
    Heartbeat,
    RunFinished,
    ScanFinished,
    ScanProgress,
    ScanStarted,
    UploadProgress,
    UploadStarted,
    last_completed_at,
)
from desktop_agent.engine.bandwidth import mbps_text

from ._text import ago, human_bytes, parse_time
from ._words import failure_text

__all__ = [
    "MAX_ERRORS_SHOWN",
    "OVERDUE_AFTER",
    "ConfigView",
    "Health",
    "Notice",
    "Status",
    "last_result_text",
    "limit_text",
    "next_backup_text",
]

log = logging.getLogger("desktop_agent.gui")

#: No verified backup for this long: the config is overdue (the web console's rule).
OVERDUE_AFTER = timedelta(hours=24)
MAX_ERRORS_SHOWN = 50


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
    """``idle``, ``waiting``, ``scanning``, ``archiving``, ``completed``, ``failed`` or
    ``cancelled``."""
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

    @property
    def last_cancelled(self) -> bool:
        return self.last is not None and self.last.get("status") == "cancelled"

    @property
    def completed_at(self) -> datetime | None:
        """When this machine last completed a backup of the config (``None``: never)."""
        return parse_time(last_completed_at(self.last))

    def never_completed(self) -> bool:
        """No completed backup yet: whatever else is true, the config is not up to date."""
        return self.completed_at is None

    def overdue(self, now: datetime) -> bool:
        """The last completed backup is older than ``OVERDUE_AFTER``."""
        when = self.completed_at
        return when is not None and now - when > OVERDUE_AFTER

    def reset(self, phase: str) -> None:
        """A new run begins in ``phase``: the last run's progress and errors go."""
        self.phase = phase
        self.files_done = self.files_total = self.bytes_done = self.bytes_total = 0
        self.uploaded, self.rate, self.eta = 0, 0.0, None
        self.errors = []


def last_result_text(view: ConfigView, now: datetime | None = None) -> str:
    """One line: the current run, or the last result of a config."""
    if view.running:
        if view.phase == "archiving" and view.bytes_total:
            return f"backing up… {100 * view.bytes_done // max(1, view.bytes_total)}%"
        return "scanning…" if view.phase == "scanning" else "waiting…"
    last = view.last
    if last is None:
        return "never backed up"
    when = ago(parse_time(str(last.get("finishedAt") or "")), now)
    if last.get("status") == "completed":
        errs = last.get("errorCount") or 0
        extra = f", {errs} file errors" if errs else ""
        return f"OK {when} ({human_bytes(float(last.get('size') or 0))}{extra})"
    if last.get("status") == "cancelled":  # the user's choice: neither a failure nor a success
        good = view.completed_at
        since = f"last good backup {ago(good, now)}" if good is not None else "never backed up"
        return f"Cancelled {when} ({since})"
    return f"FAILED {when}: {failure_text(str(last.get('error') or 'unknown error'))}"


def limit_text(control: BandwidthControl) -> str | None:
    """What holds a running backup's upload back, in words (the words of its progress on the web
    console): ``Upload limited to 10 Mbit/s``, ``Paused on battery power: …``, or ``None`` (no
    limit). ``control`` is the process's (``agent_bandwidth()``): one bucket for every run."""
    paused = control.upload.paused
    if paused is not None:
        return f"Paused {paused}: the backup goes on by itself when that ends"
    mbps = control.upload.mbps
    return None if mbps is None else f"Upload limited to {mbps_text(round(mbps, 3))}"


def next_backup_text(
    when: datetime | None, paused_until: datetime | None = None, now: datetime | None = None
) -> str:
    """When a config backs up next by its schedule, in local time: ``today 14:00``, ``tomorrow
    02:00``, ``Mon 7 Dec 02:00``; ``due now``; held by a pause; or no schedule at all.

    >>> from datetime import timedelta
    >>> now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    >>> next_backup_text(None)
    'no schedule (Back Up Now only)'
    >>> next_backup_text(now - timedelta(minutes=1), now=now)
    'due now'
    """
    if when is None:
        return "no schedule (Back Up Now only)"
    now = now or datetime.now(UTC)
    if paused_until is not None and when < paused_until:
        return f"paused until {paused_until.astimezone():%H:%M}, then the missed one at once"
    if when <= now:
        return "due now"
    local, today = when.astimezone(), now.astimezone().date()
    if local.date() == today:
        return f"today {local:%H:%M}"
    if local.date() == today + timedelta(days=1):
        return f"tomorrow {local:%H:%M}"
    return f"{local:%a} {local.day} {local:%b %H:%M}"


@dataclass(frozen=True, slots=True)
class Notice:
    """A desktop notification the app asks for."""

    title: str
    message: str
    is_error: bool


def _finished_at() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Status:
    """The state the windows read: the configs' views, whether the server answers, and why the last
    run could not start. Changed only on the GUI thread; whoever changes it says ``changed``."""

    def __init__(self) -> None:
        self.views: dict[str, ConfigView] = {}
        self.online: bool | None = None
        self.agent_name: str | None = None  # as the server knows it (heartbeat answer)
        self.connection_error: str | None = None
        self.last_poll: datetime | None = None
        self.run_error: str | None = None
        self._succeeded_before: set[str] = set()

    # -- configs ------------------------------------------------------------------------------------

    def view(self, config_id: str) -> ConfigView:
        """The view of ``config_id``, made on first sight."""
        return self.views.setdefault(config_id, ConfigView(id=config_id))

    def ordered_views(self) -> list[ConfigView]:
        return sorted(self.views.values(), key=lambda v: (v.title.lower(), v.id))

    def load_results(self, data: Mapping[str, Any]) -> None:
        """The last results as ``state.json`` has them (``StateStore.load()``)."""
        for config_id, last in data.get("configs", {}).items():
            if not isinstance(last, dict):
                continue
            view = self.view(config_id)
            view.name = view.name or str(last.get("configName") or "")
            view.last = last
            if last.get("status") == "completed":
                self._succeeded_before.add(config_id)

    def apply_configs(self, configs: Sequence[ConfigInfo]) -> None:
        """The assigned configs (from a poll or a pairing): views for new ones, drop unassigned."""
        keep = {c.id for c in configs}
        for config in configs:
            view = self.view(config.id)
            view.name = config.name
            view.sources = tuple(s.path for s in config.sources)
        for config_id in list(self.views):
            if config_id not in keep and not self.views[config_id].running:
                del self.views[config_id]

    def run_ended(self, data: Mapping[str, Any], config_ids: Sequence[str] | None = None) -> None:
        """A run's worker has stopped: configs it did not reach (e.g. cancelled before they started)
        are idle again, and the results are re-read from ``state.json`` (``data``). ``config_ids``:
        the run's configs (a parallel run of another config goes on); ``None``: all."""
        for view in self.views.values():
            if view.running and (config_ids is None or view.id in config_ids):
                view.phase = "idle"
        self.load_results(data)

    def running_views(self) -> list[ConfigView]:
        """The configs being backed up now."""
        return [v for v in self.ordered_views() if v.running]

    # -- the server ---------------------------------------------------------------------------------

    def heard(self, beat: Heartbeat) -> None:
        """A heartbeat answer: the agent's name as the server knows it."""
        if beat.agent is not None:
            self.agent_name = beat.agent.name

    def connected(self, configs: Sequence[ConfigInfo]) -> bool:
        """The server answered with the assigned ``configs``; ``True`` when it was unreachable
        before."""
        was_offline = self.online is False
        self.online, self.connection_error = True, None
        self.apply_configs(configs)
        return was_offline

    def unreachable(self, message: str) -> bool:
        """The server did not answer; ``True`` when that is news (it answered, or was not asked)."""
        news = self.online is not False
        self.online, self.connection_error = False, message
        return news

    def forget(self) -> None:
        """Signed out: no configs, no connection."""
        self.views.clear()
        self.online, self.connection_error = None, None

    def attention_reasons(self, now: datetime | None = None) -> list[str]:
        now = now or datetime.now(UTC)
        reasons: list[str] = []
        if self.online is False:
            reasons.append(f"server unreachable: {self.connection_error or 'no answer'}")
        if self.run_error:
            reasons.append(f"the last run could not start: {self.run_error}")
        for view in self.ordered_views():
            if view.running:
                continue
            if view.last_failed:
                reasons.append(f"{view.title}: last backup failed")
            elif view.never_completed():
                reasons.append(f"{view.title}: not backed up yet")
            elif view.overdue(now):
                reasons.append(f"{view.title}: no backup for more than 24 hours")
        return reasons

    # -- engine events ------------------------------------------------------------------------------

    def apply(self, event: Event) -> Notice | None:
        """Fold an engine event into the views; the notification it calls for, if any."""
        match event:
            case ConfigStarted():
                view = self.view(event.config_id)
                view.name = event.config_name or view.name
                view.sources = event.sources
                view.reset("scanning")
            case ScanStarted():
                self.view(event.config_id).phase = "scanning"
            case ScanProgress() | ScanFinished():
                view = self.view(event.config_id)
                view.files_total, view.bytes_total = event.files, event.bytes
            case ArchiveProgress():
                view = self.view(event.config_id)
                view.phase = "archiving"
                view.files_done, view.files_total = event.files_done, event.files_total
                view.bytes_done, view.bytes_total = event.bytes_done, event.bytes_total
                view.rate, view.eta = event.rate, event.eta
            case UploadStarted():
                self.view(event.config_id).phase = "archiving"
            case UploadProgress():
                self.view(event.config_id).uploaded = event.bytes_uploaded
            case FileFailed():
                view = self.view(event.config_id)
                if len(view.errors) < MAX_ERRORS_SHOWN:
                    view.errors.append(f"{event.path}: {event.message}")
            case BackupFinished():
                return self._completed(event)
            case BackupFailed():
                view = self.view(event.config_id)
                status = "cancelled" if event.cancelled else "failed"
                view.phase = status
                view.last = {
                    "configId": event.config_id,
                    "configName": event.config_name,
                    "status": status,
                    "error": failure_text(event.reason),
                    "finishedAt": _finished_at(),
                    "lastCompletedAt": last_completed_at(view.last),
                }
                if event.cancelled:  # the user asked for it: nothing to tell them
                    log.info("Backup '%s' cancelled: %s", view.title, event.reason)
                    return None
                log.warning("Backup '%s' failed: %s", view.title, event.reason)
                return Notice(
                    "Backup failed", f"'{view.title}': {failure_text(event.reason)}", True
                )
            case RunFinished():
                if event.error:
                    self.run_error = failure_text(event.error)
                    self.unreachable(self.run_error)
                    log.warning("the run could not start: %s", event.error)
                    return Notice("Backup could not start", self.run_error, True)
            case _:
                pass
        return None

    def _completed(self, event: BackupFinished) -> Notice | None:
        view = self.view(event.config_id)
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
            "finishedAt": _finished_at(),
            "lastCompletedAt": None,  # this one (``finishedAt``): see ``last_completed_at``
        }
        log.info("Backup '%s' completed (%s)", view.title, event.filename)
        if event.config_id in self._succeeded_before:
            return None
        self._succeeded_before.add(event.config_id)
        return Notice(
            "First backup completed", f"'{view.title}' is backed up: {event.files} files.", False
        )
