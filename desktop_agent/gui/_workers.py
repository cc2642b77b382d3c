"""Blocking work off the GUI thread: ``QRunnable`` workers on the global ``QThreadPool`` that report
through signals (queued to the GUI thread, since their ``QObject`` lives there)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    Throttle,
    instances_dir,
)

from ._text import redact
from ._words import failure_text

__all__ = ["USER_AGENT", "BackupWorker", "JobWorker", "RunContext", "Task", "run_task"]


class TaskSignals(QObject):
    done = Signal(object)
    failed = Signal(str)


class Task(QRunnable):
    """Runs ``fn()`` on a pool thread; ``signals.done(result)`` or ``signals.failed(message)``. The
    message is in words (``failure_text``: no exception names or error numbers) and redacted: an
    API key never reaches a dialog."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.fn = fn
        self.signals = TaskSignals()

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # reported to the GUI, which decides what to show
            self.signals.failed.emit(failure_text(str(exc) or type(exc).__name__))
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


USER_AGENT = f"backapp-agent/{__version__}"


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a backup worker runs with: the pairing's settings and key, the local results
    (``state.json``), the run's ``CancelToken``, the agent's WebSocket, if open, and the bandwidth
    limits shared by every run of the app (``None``: made from the settings for this run)."""

    settings: AgentSettings
    api_key: str = field(repr=False)
    state: StateStore
    cancel: CancelToken
    socket: AgentSocket | None = None
    limits: tuple[Throttle | None, Throttle | None] | None = None
    """Upload and download token buckets: parallel runs share them, so that ``limitUpload`` holds
    for all together."""

    def storage(self) -> HttpStorage:
        """A storage client for this run, under the shared limits."""
        if self.limits is None:
            return HttpStorage.for_settings(self.settings, user_agent=USER_AGENT)
        upload, download = self.limits
        return HttpStorage(
            user_agent=USER_AGENT,
            stall_timeout=self.settings.storage_stall_timeout,
            upload_limit=upload,
            download_limit=download,
        )


class _EngineWorker(QRunnable):
    """A run of the engine off the GUI thread: its events go out on ``signals.progress`` as the
    engine emitted them; ``signals.finished`` carries the outcome."""

    def __init__(self, context: RunContext) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.context = context
        self.signals = BackupSignals()

    def _emit(self, event: Event) -> None:
        self.signals.progress.emit(event)


class BackupWorker(_EngineWorker):
    """*Back Up Now*: one manual run (all configs, or ``config_ids``) with a ``CancelToken``, through
    the engine's ``Runner`` like ``backapp-agent run`` (each config's lease first: one running
    elsewhere is skipped, see ``ManualRun.skipped``); records the result in ``state.json``.
    ``signals.finished`` carries the ``ManualRun``."""

    def __init__(self, context: RunContext, config_ids: Sequence[str] | None = None) -> None:
        super().__init__(context)
        self.config_ids = list(config_ids) if config_ids else None

    def run(self) -> None:
        ctx = self.context
        try:
            with Runner.from_settings(
                ctx.settings,
                ctx.api_key,
                events=self._emit,
                socket=ctx.socket,
                instance_dir=instances_dir(ctx.state.path.parent),
                mode="tray",
            ) as runner:
                result: RunResult = runner.run_manual(self.config_ids, ctx.cancel)
        except Exception as exc:  # the engine reports failures in the result; this is a bug
            result = RunResult((), error=redact(f"{type(exc).__name__}: {exc}"))
        try:
            ctx.state.record(result)
        except OSError:
            pass
        self.signals.finished.emit(result)


class JobWorker(_EngineWorker):
    """One scheduled or requested job through the engine's ``Runner`` (the config's lease, the
    ``backup/start`` tags, live progress to the server, the retry decision). ``signals.finished``
    carries the ``Outcome``."""

    def __init__(self, context: RunContext, job: Job, config: ConfigInfo | None) -> None:
        super().__init__(context)
        self.job = job
        self.config = config

    def run(self) -> None:
        ctx = self.context
        try:
            assert ctx.settings.server_url
            options = EngineOptions.from_settings(ctx.settings)
            with (
                ApiClient(
                    ctx.settings.server_url, ctx.api_key, user_agent=USER_AGENT, mode="tray"
                ) as plane,
                ctx.storage() as storage,
            ):

                def make_engine(control: ControlPlane, events: EventSink) -> BackupEngine:
                    return BackupEngine(control, storage, options, events=events)

                runner = Runner(
                    plane,
                    make_engine,
                    events=self._emit,
                    socket=ctx.socket,
                    state=ctx.state,
                    lease_ttl=ctx.settings.lease_ttl,
                    instance_dir=instances_dir(ctx.state.path.parent),
                )
                outcome = runner.run(self.job, self.config, ctx.cancel)
        except Exception as exc:  # the runner reports failures in the outcome; this is a bug
            outcome = Outcome(self.job, "failed", reason=redact(f"{type(exc).__name__}: {exc}"))
        self.signals.finished.emit(outcome)
