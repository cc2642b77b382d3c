"""Blocking work off the GUI thread: ``QRunnable`` workers on the global ``QThreadPool`` that report
through signals (queued to the GUI thread, since their ``QObject`` lives there)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from desktop_agent import __version__
from desktop_agent.engine import (
    AgentSettings,
    AgentSocket,
    ApiClient,
    BackupEngine,
    CancelToken,
    ConfigInfo,
    ControlPlane,
    EngineOptions,
    Event,
    EventSink,
    HttpStorage,
    Job,
    Outcome,
    Runner,
    RunResult,
    StateStore,
)

from ._text import redact

__all__ = ["BackupWorker", "JobWorker", "Task", "run_task"]


class TaskSignals(QObject):
    done = Signal(object)
    failed = Signal(str)


class Task(QRunnable):
    """Runs ``fn()`` on a pool thread; ``signals.done(result)`` or ``signals.failed(message)``. The
    message is redacted: an API key never reaches a dialog."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.fn = fn
        self.signals = TaskSignals()

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # reported to the GUI, which decides what to show
            self.signals.failed.emit(redact(str(exc) or type(exc).__name__))
        else:
            self.signals.done.emit(result)


_live: set[QRunnable] = set()


def run_task(
    fn: Callable[[], Any],
    on_done: Callable[[Any], None],
    on_failed: Callable[[str], None],
    pool: QThreadPool | None = None,
) -> Task:
    """Start ``fn`` on ``pool`` (the global one by default) and call back on the GUI thread."""
    task = Task(fn)
    task.setAutoDelete(False)
    _live.add(task)

    def finish_ok(result: object) -> None:
        _live.discard(task)
        on_done(result)

    def finish_err(message: str) -> None:
        _live.discard(task)
        on_failed(message)

    task.signals.done.connect(finish_ok)
    task.signals.failed.connect(finish_err)
    (pool or QThreadPool.globalInstance()).start(task)
    return task


class BackupSignals(QObject):
    progress = Signal(object)
    """An engine ``Event``, as the engine emitted it."""
    finished = Signal(object)
    """The ``RunResult``."""


class BackupWorker(QRunnable):
    """*Back Up Now*: one manual run (all configs, or ``config_ids``) with a ``CancelToken``, through
    the engine's ``Runner`` like ``backapp-agent run`` (each config's lease first: one running
    elsewhere is skipped, see ``ManualRun.skipped``); records the result in ``state.json``.
    ``signals.finished`` carries the ``ManualRun``."""

    def __init__(
        self,
        settings: AgentSettings,
        api_key: str,
        state: StateStore,
        cancel: CancelToken,
        config_ids: Sequence[str] | None = None,
        socket: AgentSocket | None = None,
    ) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.settings = settings
        self._key = api_key
        self.state = state
        self.cancel = cancel
        self.config_ids = list(config_ids) if config_ids else None
        self.socket = socket
        self.signals = BackupSignals()

    def _emit(self, event: Event) -> None:
        self.signals.progress.emit(event)

    def run(self) -> None:
        try:
            with Runner.from_settings(
                self.settings, self._key, events=self._emit, socket=self.socket
            ) as runner:
                result: RunResult = runner.run_manual(self.config_ids, self.cancel)
        except Exception as exc:  # the engine reports failures in the result; this is a bug
            result = RunResult((), error=redact(f"{type(exc).__name__}: {exc}"))
        try:
            self.state.record(result)
        except OSError:
            pass
        self.signals.finished.emit(result)


class JobWorker(QRunnable):
    """One scheduled or requested job through the engine's ``Runner`` (the config's lease, the
    ``backup/start`` tags, live progress to the server, the retry decision). ``signals.finished``
    carries the ``Outcome``."""

    def __init__(
        self,
        settings: AgentSettings,
        api_key: str,
        state: StateStore,
        cancel: CancelToken,
        job: Job,
        config: ConfigInfo | None,
        socket: AgentSocket | None = None,
    ) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.settings = settings
        self._key = api_key
        self.state = state
        self.cancel = cancel
        self.job = job
        self.config = config
        self.socket = socket
        self.signals = BackupSignals()

    def _emit(self, event: Event) -> None:
        self.signals.progress.emit(event)

    def run(self) -> None:
        agent = f"backapp-agent/{__version__}"
        try:
            assert self.settings.server_url
            options = EngineOptions.from_settings(self.settings)
            with (
                ApiClient(self.settings.server_url, self._key, user_agent=agent) as plane,
                HttpStorage(user_agent=agent) as storage,
            ):

                def make_engine(control: ControlPlane, events: EventSink) -> BackupEngine:
                    return BackupEngine(control, storage, options, events=events)

                runner = Runner(
                    plane, make_engine, events=self._emit, socket=self.socket, state=self.state
                )
                outcome = runner.run(self.job, self.config, self.cancel)
        except Exception as exc:  # the runner reports failures in the outcome; this is a bug
            outcome = Outcome(self.job, "failed", reason=redact(f"{type(exc).__name__}: {exc}"))
        self.signals.finished.emit(outcome)
