"""``AgentController``: the tray app's state and intents, the one face the windows and the tray see.

The controller owns no widget. Windows and the tray read its state (``health()``, ``views``,
``online``…) when ``changed`` fires, and call its intents. It composes the parts, each its own
module, and polls the server itself (heartbeat + configs, off the GUI thread):

* ``_pairing.Pairing``: the settings and the API key (keychain);
* ``_status.Status``: the configs' views and the connection, with the engine's events folded in;
* ``_runs.RunBridge``: schedules, *Back Up Now*, retries and pause, up to ``parallelBackups``
  backups of different configs at a time;
* ``_activity_log.ActivityLog``: the recent log lines for the status window.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import cast

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from desktop_agent.autostart import Autostart, AutostartError
from desktop_agent.engine import (
    AgentSettings,
    BandwidthControl,
    ConfigInfo,
    ConfigurationError,
    Event,
    Heartbeat,
    KeyLocation,
    KeyStore,
    PairedAgent,
    StateStore,
    agent_bandwidth,
)

from ._activity_log import LOG_LINES, ActivityLog
from ._compaction import TrayCompactions
from ._pairing import (
    Pairing,
    PairingResult,
    check_key,
    fetch_assignment,
    load_settings_or_default,
    redeem_code,
)
from ._runs import RunBridge
from ._status import ConfigView, Health, Status, limit_text, next_backup_text
from ._text import redact
from ._updates import TrayUpdates
from ._web_restores import WebRestores
from ._workers import run_task

__all__ = ["AgentController"]

log = logging.getLogger("desktop_agent.gui")

_Assignment = tuple[Heartbeat, list[ConfigInfo]]
_Redeemed = tuple[PairedAgent, Heartbeat, list[ConfigInfo]]
#: What a pairing the server accepted gives: its heartbeat, the configs, how to save the key.
_Settled = tuple[Heartbeat, list[ConfigInfo], Callable[[], KeyLocation]]


class AgentController(QObject):
    """State and intents of the tray app. ``changed`` fires on any change of state; ``notify`` asks for
    a desktop notification (title, message, is_error); ``log_line`` carries a new log line (it may come
    from any thread: the connection is queued); ``run_finished`` carries a run's ``RunResult``."""

    changed = Signal()
    notify = Signal(str, str, bool)
    log_line = Signal(str)
    run_finished = Signal(object)

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
        self.pairing = Pairing(keystore, settings or load_settings_or_default())
        self.status = Status()
        self.status.load_results(self.state.load())
        self.log_lines: deque[str] = deque(maxlen=LOG_LINES)
        self._polling = False
        self._closed = False

        self.runs = RunBridge(directory, self.pairing, self.status, self.state, self.pool, self)
        self.runs.changed.connect(self.changed)
        self.runs.notify.connect(self.notify)
        self.runs.progress.connect(self.apply_event)
        self.runs.finished.connect(self.run_finished)

        # Restores asked for from the web console: the socket's and the heartbeat's offers.
        self.web_restores = WebRestores(self.pool, self._restore_context, self)
        self.web_restores.changed.connect(self.changed)
        self.web_restores.notify.connect(self.notify)
        self.runs.restore_requested.connect(self.web_restores.add)
        self.compactions = TrayCompactions(self.pool, self)
        self.bandwidth: BandwidthControl = agent_bandwidth()
        """The process's limits, which every run shares (the heartbeats set them)."""
        # Agent updates, at idle moments; ``busy`` is what the controller cannot see (the app's
        # restore window sets it).
        self.updates = TrayUpdates(directory, self.pool, self, enabled=self.settings.auto_update)
        self.updates.notify.connect(lambda title, text: self.notify.emit(title, text, False))
        self.updates.restart.connect(self._restart_for_update)
        self.busy: Callable[[], bool] = lambda: False

        self.log_line.connect(self._append_log)
        self._activity = ActivityLog(self.log_line.emit)
        self._activity.install()

        self._timer = QTimer(self)
        self._timer.timeout.connect(self.poll)

    def start(self) -> None:
        """Begin polling (at once, then every ``pollInterval``) and running schedules."""
        if self.updates.updater.startup():  # a fresh update that missed its deadline: go back
            self._restart_for_update()
        if not self.paired:
            return
        self._timer.start(max(1000, self.settings.poll_interval_ms))
        self.runs.start()
        self.poll()

    def close(self) -> None:
        """Stop timers and ignore what workers still report (the app is going away)."""
        self._closed = True
        self._timer.stop()
        self.runs.close()
        self.web_restores.close()
        self._activity.remove()

    # -- state --------------------------------------------------------------------------------------

    @property
    def settings(self) -> AgentSettings:
        return self.pairing.settings

    @property
    def paired(self) -> bool:
        return self.pairing.paired

    def _restore_context(self) -> tuple[AgentSettings, str] | None:
        key = self.pairing.key()
        return (self.settings, key) if key is not None and self.settings.server_url else None

    def key_location(self) -> KeyLocation | None:
        return self.pairing.key_location()

    @property
    def views(self) -> dict[str, ConfigView]:
        return self.status.views

    @property
    def online(self) -> bool | None:
        return self.status.online

    @property
    def agent_name(self) -> str | None:
        return self.status.agent_name

    @property
    def running(self) -> bool:
        return self.runs.running

    def running_views(self) -> list[ConfigView]:
        """The configs being backed up now (several with ``parallelBackups`` above 1)."""
        return self.status.running_views()

    @property
    def paused(self) -> bool:
        return self.runs.paused

    @property
    def paused_until(self) -> datetime | None:
        return self.runs.paused_until

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
        return self.status.attention_reasons(now)

    def ordered_views(self) -> list[ConfigView]:
        return self.status.ordered_views()

    def limit_text(self) -> str | None:
        """What holds the running backups' uploads back, in words (``None``: nothing)."""
        return limit_text(self.bandwidth)

    def next_backup(self, config_id: str) -> datetime | None:
        """When the config's schedule runs it next (UTC; a slot already due if one is), or
        ``None`` when it has no schedule."""
        return self.runs.scheduler.next_run(config_id)

    def next_backup_text(self, config_id: str) -> str:
        """``next_backup`` in words (local time), a pause taken into account."""
        return next_backup_text(self.next_backup(config_id), self.paused_until)

    def apply_event(self, event: Event) -> None:
        """Fold an engine event into the views (on the GUI thread)."""
        if self._closed:
            return
        notice = self.status.apply(event)
        if notice is not None:
            self.notify.emit(notice.title, notice.message, notice.is_error)
        self.changed.emit()

    # -- intents: backups and pause -----------------------------------------------------------------

    def back_up(self, config_ids: Sequence[str] | None = None) -> bool:
        """*Back Up Now*: all assigned configs, or ``config_ids``. ``False`` when one is running or
        the app is not paired."""
        return self.runs.back_up(config_ids)

    def cancel(self, reason: str = "cancelled by the user", config_id: str | None = None) -> bool:
        """Stop the running backups cleanly, or only that of ``config_id``; ``run_finished`` fires
        for each when it has stopped."""
        return self.runs.cancel(reason, config_id)

    def check_schedules(self) -> None:
        """Queue what is due, then run the next job if none is running."""
        self.runs.check_schedules()

    def pause(self, duration: timedelta) -> None:
        """No automatic backups until ``now + duration`` (*Back Up Now* still works)."""
        self.runs.pause(duration)

    def resume(self) -> None:
        self.runs.resume()

    # -- polling (heartbeat + configs) --------------------------------------------------------------

    def poll(self) -> None:
        """Heartbeat and fetch the assigned configs, off the GUI thread."""
        if self._polling or not self.settings.server_url:
            return
        key = self.pairing.key()
        if key is None:
            return
        server = self.settings.server_url
        zone = self.runs.scheduler.timezone_name
        self._polling = True
        run_task(
            lambda: fetch_assignment(server, key, zone), self._polled, self._poll_failed, self.pool
        )

    def _polled(self, result: object) -> None:
        self._polling = False
        if self._closed:
            return
        beat, configs = cast(_Assignment, result)
        self.status.heard(beat)
        if self.status.connected(configs):
            log.info("the server answers again")
        self.status.last_poll = datetime.now(UTC)
        self.runs.heard(beat.parallel_backups)
        self.runs.assigned(configs, beat.run_requests)
        for restore_id in beat.restore_requests:
            self.web_restores.add(restore_id)
        if beat.compact is not None and (key := self.pairing.key()) is not None:
            self.compactions.ask(self.settings, key)
        self.changed.emit()
        self.runs.check_schedules()
        idle = not self.runs.running and not self.web_restores.running and not self.busy()
        self.compactions.maybe_run(idle=idle)
        self.updates.heard(beat)
        self.updates.maybe_run(idle=idle and not self.compactions.running)

    def _restart_for_update(self) -> None:
        """A new build is in place (or the previous one is back): become it."""
        log.info("restarting as the new build")
        self.close()
        self.updates.updater.restart()

    def _poll_failed(self, message: str) -> None:
        self._polling = False
        if self._closed:
            return
        if self.status.unreachable(message):
            log.warning("cannot reach the server: %s", message)
        self.status.last_poll = datetime.now(UTC)
        self.changed.emit()

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
        key = api_key.strip()

        def settle(candidate: AgentSettings, result: object) -> _Settled:
            beat, configs = cast(_Assignment, result)
            return beat, configs, partial(self.pairing.save, candidate, key)

        self._pair(
            server_url,
            key,
            "paste the agent's API key (bka_…), shown when the agent was registered",
            lambda server: check_key(server, key),
            settle,
            "",
            on_done,
            on_failed,
            agent_id,
        )

    def pair_with_code(
        self,
        server_url: str,
        code: str,
        on_done: Callable[[PairingResult], None],
        on_failed: Callable[[str], None],
    ) -> None:
        """Trade a pairing code (web console: Agents → Add a machine) for this machine's agent and
        API key off the GUI thread; save the settings and the key (keychain) and call ``on_done``.
        Nothing is saved when the server refuses the code."""

        def settle(candidate: AgentSettings, result: object) -> _Settled:
            paired, beat, configs = cast(_Redeemed, result)
            settings = replace(candidate, agent_id=paired.agent_id)
            return beat, configs, partial(self.pairing.save, settings, paired.api_key)

        self._pair(
            server_url,
            code.strip(),
            "type the pairing code from the web console (Agents → Add a machine)",
            lambda server: redeem_code(server, code),
            settle,
            " by code",
            on_done,
            on_failed,
        )

    def _pair(
        self,
        server_url: str,
        secret: str,
        wanted: str,
        ask: Callable[[str], object],
        settle: Callable[[AgentSettings, object], _Settled],
        how: str,
        on_done: Callable[[PairingResult], None],
        on_failed: Callable[[str], None],
        agent_id: str | None = None,
    ) -> None:
        """Both ways of pairing (by key, by code; ``how`` names it in the log): refuse an address
        that is not one, or an empty ``secret`` (``wanted`` says what to give); else ``ask`` the
        server off the GUI thread and, with its answer, ``settle`` gives the heartbeat, the
        configs and how to save the settings and key, which ``_paired`` does."""
        server = server_url.strip().rstrip("/")
        try:
            candidate = self.pairing.candidate(server, agent_id)
        except ConfigurationError as exc:
            on_failed(redact(str(exc)))
            return
        if not secret:
            on_failed(wanted)
            return

        def done(result: object) -> None:
            if self._closed:
                return
            beat, configs, save = settle(candidate, result)
            self._paired(server, how, beat, configs, save, on_done, on_failed)

        run_task(lambda: ask(server), done, on_failed, self.pool)

    def _paired(
        self,
        server: str,
        how: str,
        beat: Heartbeat,
        configs: list[ConfigInfo],
        save: Callable[[], KeyLocation],
        on_done: Callable[[PairingResult], None],
        on_failed: Callable[[str], None],
    ) -> None:
        """The end of a pairing the server accepted (by key or by code): save the settings and
        the key, show the assignment, and start polling."""
        self.status.heard(beat)
        try:
            location = save()
        except Exception as exc:
            on_failed(redact(f"could not store the settings: {exc}"))
            return
        self.status.connected(configs)
        self.runs.assigned(configs, ())  # their schedules: the next backup of each is known
        self.changed.emit()
        log.info("paired with %s%s (%d configs)", server, how, len(configs))
        on_done(
            PairingResult(
                server, tuple(configs), location, beat.poll_interval, self.status.agent_name
            )
        )
        self.start()

    def sign_out(self) -> None:
        """Forget the key (keychain and file) and the server; stop polling. Configs and the local
        history stay on the server."""
        if self.running:
            self.cancel("agent signed out")
        self._timer.stop()
        self.runs.stop()
        self.web_restores.cancel("agent signed out")
        self.pairing.forget()
        self.status.forget()
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

    def _append_log(self, line: str) -> None:
        self.log_lines.append(line)
