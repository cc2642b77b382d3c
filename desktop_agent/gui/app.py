"""``backapp-tray``: the tray app's composition, single instance and no-tray fallback.

TrayApp(app)  ->  AgentController (state, intents; workers off the GUI thread)
                  TrayMenu (icon + menu; or the menu only, without a tray)
                  PairingWindow / StatusWindow / SettingsDialog
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QApplication, QMessageBox, QSystemTrayIcon, QWidget

from desktop_agent import __version__
from desktop_agent.engine import KeyStore, RunResult, config_dir, install_log_redaction

from ._controller import AgentController
from ._icons import health_icon
from ._recovery import RecoveryOffer, RecoverySource
from ._restore import RestoreSource
from ._text import KeyRedactor, redact
from ._tray import TrayMenu
from ._windows import PairingWindow, RestoreWindow, SettingsDialog, StatusWindow
from ._windows.recovery import RecoveryWindow
from ._workers import run_task

__all__ = ["NO_TRAY_NOTICE", "TrayApp", "instance_name", "main"]

log = logging.getLogger("desktop_agent.gui")

NO_TRAY_NOTICE = (
    "This desktop has no system tray (notification area), so BackApp shows this window instead. "
    "It keeps backing up while the window is open; closing it quits BackApp. (On GNOME, the "
    "AppIndicator extension adds a tray.)"
)


RECOVERY_HOLD = timedelta(hours=1)
"""The longest the recovery step after pairing holds automatic backups back."""


def instance_name(directory: Path) -> str:
    """The local-socket name of the instance for this user and settings folder."""
    user = os.environ.get("USER") or os.environ.get("USERNAME") or str(os.getuid())
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    return f"backapp-tray-{user}-{digest}"


def forward_to_running(name: str, timeout_ms: int = 500) -> bool:
    """``True`` when another instance listens on ``name`` (it was asked to show its window)."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(timeout_ms):
        return False
    socket.write(b"show\n")
    socket.flush()
    socket.waitForBytesWritten(timeout_ms)
    socket.disconnectFromServer()
    return True


AskFn = Callable[[QWidget | None, str, str], bool]

RESTORE_WINDOW_NOTICES = ("Restore finished", "Restore did not finish")
"""The titles of the notifications about the restore window's own restores (a click on one
brings that window back)."""


def _ask(parent: QWidget | None, title: str, text: str) -> bool:
    """A yes/no question whose default (Enter) and Escape answer are *No*: the questions asked
    are whether to stop something running, and a reflexive Enter must not stop it."""
    no = QMessageBox.StandardButton.No
    box = QMessageBox(
        QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.Yes | no, parent
    )
    box.setDefaultButton(no)
    box.setEscapeButton(no)
    return box.exec() == QMessageBox.StandardButton.Yes


class TrayApp(QObject):
    """The running app. ``ask`` (a yes/no question) is injectable for tests."""

    quitting = Signal()

    def __init__(
        self,
        app: QApplication,
        *,
        directory: Path | None = None,
        keystore: KeyStore | None = None,
        ask: AskFn = _ask,
        open_url: Callable[[QUrl], object] = QDesktopServices.openUrl,
    ) -> None:
        super().__init__()
        self.app = app
        self.directory = directory or config_dir()
        self.controller = AgentController(self.directory, keystore or KeyStore(self.directory))
        self._ask = ask
        self._open_url = open_url
        self.server: QLocalServer | None = None
        self.has_tray = QSystemTrayIcon.isSystemTrayAvailable()
        self.tray_icon: QSystemTrayIcon | None = None
        if self.has_tray:
            self.tray_icon = QSystemTrayIcon(health_icon(self.controller.health()))
        self.menu = TrayMenu(self.controller, self.tray_icon)
        self.status = StatusWindow(self.controller)
        self.status.setWindowIcon(health_icon(self.controller.health()))
        self.pairing: PairingWindow | None = None
        self.settings_dialog: SettingsDialog | None = None
        self.restore: RestoreWindow | None = None
        self.recovery: RecoveryWindow | None = None
        self._restore_source_cache: RestoreSource | None = None
        self._quit_pending = False
        self._disposed = False
        """Set by ``dispose``: a server call still running then must not touch the deleted
        controller or windows when it ends."""
        # Updates wait while the restore window restores files.
        self.controller.busy = lambda: self.restore is not None and self.restore.busy

        self.menu.show_status.connect(self.show_status)
        self.menu.show_settings.connect(self.show_settings)
        self.menu.show_restore.connect(self.show_restore)
        self.menu.show_recovery.connect(self.show_recovery)
        self.menu.open_console.connect(self.open_console)
        self.menu.quit_requested.connect(self.request_quit)
        self.controller.notify.connect(self.menu.notify)
        self.controller.notify.connect(self._noticed)
        self._notice_title: str | None = None
        if self.tray_icon is not None:
            self.tray_icon.messageClicked.connect(self.open_notice)
        self.controller.changed.connect(self._changed)
        self.controller.run_finished.connect(self._run_finished)
        if not self.has_tray:
            self.status.set_notice(NO_TRAY_NOTICE)
            # No tray, no balloon messages: the window's notice carries the latest one.
            self.controller.notify.connect(
                lambda title, message, _error: self.status.set_notice(
                    f"{NO_TRAY_NOTICE}\n\n{title}: {message}"
                )
            )
            self.status.closeEvent = self._status_closed  # type: ignore[method-assign]

    # -- start --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Show what the user needs first: the tray icon; the pairing window on the first run; the
        status window when there is no tray."""
        if self.tray_icon is not None:
            self.tray_icon.show()
        else:
            log.warning("no system tray on this desktop: showing the status window instead")
            self.show_status()
        if not self.controller.paired:
            self.show_pairing()
        else:
            self.controller.start()

    def listen(self, name: str) -> bool:
        """Become the single instance on ``name`` (a stale socket file is removed)."""
        QLocalServer.removeServer(name)
        self.server = QLocalServer(self)
        self.server.newConnection.connect(self._other_instance)
        return self.server.listen(name)

    def _other_instance(self) -> None:
        assert self.server is not None
        while self.server.hasPendingConnections():
            conn = self.server.nextPendingConnection()
            conn.readyRead.connect(conn.readAll)
            conn.disconnected.connect(conn.deleteLater)
        log.info("another launch asked for the window")
        if self.controller.paired:
            self.show_status()
        else:
            self.show_pairing()

    # -- windows ------------------------------------------------------------------------------------

    @staticmethod
    def _bring_forward(window: QWidget) -> None:
        window.show()
        window.raise_()
        window.activateWindow()

    def show_status(self) -> None:
        self._bring_forward(self.status)

    def show_pairing(self) -> None:
        if self.pairing is None:
            self.pairing = PairingWindow(self.controller)
            self.pairing.setWindowIcon(health_icon(self.controller.health()))
            self.pairing.paired.connect(lambda _result: self.offer_recovery())
        self._bring_forward(self.pairing)

    def offer_recovery(self) -> None:
        """The recovery step, right after pairing: when the account has no recovery code yet, or
        this machine replaces one whose backups it could continue (docs/recovery.md)."""
        key = self.controller.pairing.key()
        if not self.controller.settings.server_url or key is None:
            return
        source = RecoverySource(self.controller.settings, key)
        # No automatic backup until the step is done: a machine's first snapshot makes its own
        # repository key, and a repository is continued only before that (an hour at most).
        held = not self.controller.paused
        if held:
            self.controller.pause(RECOVERY_HOLD)

        def release() -> None:
            if held and not self._disposed and self.controller.paused:
                self.controller.resume()

        def offered(result: object) -> None:
            if self._disposed:
                return
            if not isinstance(result, RecoveryOffer) or not result.needed:
                release()
                return
            self._open_recovery(source, result).finished.connect(release)

        def failed(message: str) -> None:
            log.warning("could not ask about recovery: %s", message)
            release()

        run_task(source.offer, offered, failed, self.controller.pool)

    def show_recovery(self) -> None:
        """The recovery step again, from the menu (for whoever skipped it after pairing, or paired
        on the command line): make the code, continue an old machine, or see that recovery is set
        up. A window already open is brought forward, never replaced (it may be showing a code
        that is not saved yet)."""
        if self.recovery is not None and self.recovery.isVisible():
            self._bring_forward(self.recovery)
            return
        key = self.controller.pairing.key()
        if not self.controller.settings.server_url or key is None:
            return
        source = RecoverySource(self.controller.settings, key)

        def offered(result: object) -> None:
            if isinstance(result, RecoveryOffer) and not self._disposed:
                self._open_recovery(source, result)

        def failed(message: str) -> None:
            if self._disposed:
                return
            self.controller.notify.emit(
                "Recovery code", f"Could not ask the server: {redact(message)}", True
            )

        run_task(source.offer, offered, failed, self.controller.pool)

    def _open_recovery(self, source: RecoverySource, offer: RecoveryOffer) -> RecoveryWindow:
        if self.recovery is not None:
            self.recovery.deleteLater()
        self.recovery = RecoveryWindow(source, offer, pool=self.controller.pool)
        self.recovery.setWindowIcon(health_icon(self.controller.health()))
        self._bring_forward(self.recovery)
        return self.recovery

    def show_settings(self) -> None:
        dialog = SettingsDialog(self.controller)
        dialog.repair_requested.connect(self._repair)
        self.settings_dialog = dialog
        self._bring_forward(dialog)

    def show_restore(self) -> None:
        """*Restore Files…*: the restore window, made once (a restore goes on while it is
        closed), its backups listed again each time it opens."""
        if self.restore is None:
            self.restore = RestoreWindow(self._restore_source, pool=self.controller.pool)
            self.restore.setWindowIcon(health_icon(self.controller.health()))
            self.restore.restore_done.connect(self._restore_done)
        self._bring_forward(self.restore)
        if not self.restore.busy:
            self.restore.load_backups()

    def _noticed(self, title: str, message: str, is_error: bool) -> None:
        self._notice_title = title

    def open_notice(self) -> None:
        """A click on the latest notification opens the window it is about: the restore window
        for a restore made there, the status window for the rest (backups, the connection, a
        restore asked from the web console, whose progress it shows)."""
        if self._notice_title in RESTORE_WINDOW_NOTICES and self.restore is not None:
            self._bring_forward(self.restore)
        elif not self.controller.paired:
            self.show_pairing()
        else:
            self.show_status()

    def _restore_done(self, text: str) -> None:
        # The window may have been closed while the restore ran: say how it ended.
        if self.restore is not None and not self.restore.isVisible():
            failed = text.startswith("The restore did not finish")
            title = RESTORE_WINDOW_NOTICES[1] if failed else RESTORE_WINDOW_NOTICES[0]
            self.controller.notify.emit(title, text.splitlines()[0], failed)

    def _restore_source(self) -> RestoreSource | None:
        """The restore window's source, kept while the server and key stay the same (it holds
        the browsing connection)."""
        key = self.controller.pairing.key()
        settings = self.controller.settings
        if not settings.server_url or key is None:
            return None
        current = self._restore_source_cache
        if current is None or current.settings != settings or current.api_key != key:
            if current is not None:
                current.close()
            current = self._restore_source_cache = RestoreSource(settings, key)
        return current

    def _repair(self) -> None:
        if self.pairing is not None:
            self.pairing.deleteLater()
            self.pairing = None
        self.show_pairing()

    def open_console(self) -> None:
        if self.controller.settings.server_url:
            self._open_url(QUrl(self.controller.settings.server_url))

    def _changed(self) -> None:
        icon = health_icon(self.controller.health())
        self.status.setWindowIcon(icon)

    def _status_closed(self, event: object) -> None:
        # Without a tray, the status window is the app: closing it quits (asking if a backup runs).
        from PySide6.QtGui import QCloseEvent

        assert isinstance(event, QCloseEvent)
        if self.request_quit():
            event.accept()
        else:
            event.ignore()

    # -- quit ---------------------------------------------------------------------------------------

    def request_quit(self) -> bool:
        """Quit; during a backup, ask first, then cancel it cleanly and quit once it has stopped.
        ``False`` when the user chose to keep the backup (or a restore) running."""
        if self.restore is not None and self.restore.busy:
            if not self._ask(
                self.restore if self.restore.isVisible() else None,
                "Stop the restore and quit?",
                "Files are being restored. Quitting stops the restore: the files restored so far "
                "stay, the others are not restored. Quit anyway?",
            ):
                return False
            self.restore.cancel_restore()
        if self.controller.running:
            if not self._ask(
                self.status if self.status.isVisible() else None,
                "Stop the backup and quit?",
                "A backup is running. Quitting stops it: the upload is aborted and the backup is "
                "recorded as cancelled. Quit anyway?",
            ):
                return False
            self._quit_pending = True
            self.controller.cancel("cancelled by the user")
            return True
        self._finish_quit()
        return True

    def terminate(self, reason: str = "agent terminated") -> None:
        """SIGTERM/SIGINT: no question; cancel a running backup cleanly, then quit."""
        if self.controller.running:
            self._quit_pending = True
            self.controller.cancel(reason)
        else:
            self._finish_quit()

    def _run_finished(self, result: RunResult) -> None:
        if self._quit_pending:
            self._finish_quit()

    def dispose(self) -> None:
        """Delete the windows, the menu and the controller now, while the ``QApplication`` still
        exists: left to the interpreter's exit, they could outlive it (and crash on the way out)."""
        self._disposed = True
        self.controller.close()
        if self.restore is not None and self.restore.busy:
            self.restore.cancel_restore()  # stops between files; what is restored stays
        if self._restore_source_cache is not None:
            self._restore_source_cache.close()
        for obj in (
            self.status,
            self.pairing,
            self.settings_dialog,
            self.restore,
            self.recovery,
            self.menu.menu,
            self.tray_icon,
        ):
            if obj is not None:
                obj.deleteLater()
        self.menu.deleteLater()
        self.controller.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)

    def _finish_quit(self) -> None:
        self._quit_pending = False
        self.controller.close()
        if self.tray_icon is not None:
            self.tray_icon.hide()
        if self.server is not None:
            self.server.close()
        self.quitting.emit()
        self.app.quit()


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    for handler in logging.getLogger().handlers:
        handler.addFilter(KeyRedactor())
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _install_signal_handlers(tray_app: TrayApp) -> None:
    """Ctrl-C and SIGTERM quit cleanly (a running backup is cancelled and recorded as such). Python
    runs signal handlers only between bytecodes, so a timer wakes the interpreter now and then."""

    def handler(signum: int, frame: object) -> None:
        reason = "cancelled by the user" if signum == signal.SIGINT else "agent terminated"
        QTimer.singleShot(0, lambda: tray_app.terminate(reason))

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    wake = QTimer(tray_app)
    wake.timeout.connect(lambda: None)
    wake.start(300)


#: Quit this many milliseconds after start (a smoke test of a build: ``QT_QPA_PLATFORM=offscreen
#: BACKAPP_TRAY_QUIT_AFTER_MS=2000 backapp-tray`` must print a start line and exit 0).
ENV_QUIT_AFTER = "BACKAPP_TRAY_QUIT_AFTER_MS"


def _quit_after_ms() -> int | None:
    raw = os.environ.get(ENV_QUIT_AFTER, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ValueError(f"{ENV_QUIT_AFTER} must be a number of milliseconds, not {raw!r}")
    return int(raw)


def _schedule_quit(tray_app: TrayApp, ms: int) -> None:
    def started() -> None:
        tray = "a tray icon" if tray_app.has_tray else "no system tray"
        print(
            f"backapp-tray {__version__} started (Qt platform {tray_app.app.platformName()}, "
            f"{tray}); quitting in {ms} ms as {ENV_QUIT_AFTER} asks",
            file=sys.stderr,
            flush=True,
        )
        QTimer.singleShot(ms, lambda: tray_app.terminate("agent terminated"))

    QTimer.singleShot(0, started)


def main(argv: Sequence[str] | None = None) -> int:
    """``backapp-tray``."""
    args = list(sys.argv if argv is None else argv)
    if "--version" in args[1:]:
        print(f"backapp-tray {__version__}")
        return 0
    try:
        quit_after = _quit_after_ms()
    except ValueError as exc:
        print(f"backapp-tray: {exc}", file=sys.stderr)
        return 2
    _setup_logging()
    app = QApplication(args)
    app.setApplicationName("BackApp")
    app.setApplicationVersion(__version__)
    app.setQuitOnLastWindowClosed(False)
    directory = config_dir()
    name = instance_name(directory)
    if forward_to_running(name):
        print("BackApp is already running; its window was brought forward.", file=sys.stderr)
        return 0
    tray_app = TrayApp(app, directory=directory)
    if not tray_app.listen(name):
        log.warning("single-instance socket unavailable: %s", name)
    _install_signal_handlers(tray_app)
    QTimer.singleShot(0, tray_app.start)
    if quit_after is not None:
        _schedule_quit(tray_app, quit_after)
    status = app.exec()
    tray_app.dispose()
    del tray_app
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
