"""The runner: a job from the run lease to the retry decision (several at once, each on its thread).

``Runner`` runs one job: takes the config's lease on the server (another runner holds it: the job is
skipped; a dead process of this agent holds it: the lease is taken over at once, see ``instance``),
renews it every ``ttl/3`` while the engine works (``_LeaseKeeper``), releases it at the end;
tags ``backup/start`` with ``trigger``/``attempt``/``maxAttempts``/``runRequestId`` (``_TaggedPlane``);
streams progress (``ProgressReporter``); and, when a scheduled backup fails, returns the retry job.

``Runner.run_manual`` is ``backapp-agent run`` and the tray's own *Back Up Now*: the engine's run
(heartbeat, configs, each backed up, heartbeat) with every config through ``Runner.run``, so a config
whose lease is held elsewhere is skipped (``ManualRun.skipped``), never run twice.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx

from ... import __version__
from .._cancel import CancelToken
from .._closing import OwnsClients
from .._engine import BackupEngine, connect
from .._errors import AgentError, ConflictError, NotFoundError
from .._events import EventSink
from .._options import EngineOptions
from .._run import not_started, run_configs
from .._settings import AgentSettings
from .._state import StateStore
from .._transport.socket import AgentSocket
from ..protocol import (
    AgentMode,
    BackupResult,
    ConfigInfo,
    ControlPlane,
    Heartbeat,
    Lease,
    LeasePlane,
    RunResult,
    StartBackup,
    StartResponse,
)
from ..repo_protocol import SnapshotStarted, StartSnapshot
from .instance import AgentInstance
from .progress import PROGRESS_BY_CONFIG, ProgressReporter, fan_out
from .queue import Job, Outcome, RetrySettings

__all__ = [
    "DEFAULT_LEASE_TTL",
    "AgentPlane",
    "EngineFactory",
    "ManualRun",
    "Runner",
    "Skipped",
]

log = logging.getLogger("desktop_agent.engine.scheduler")

DEFAULT_LEASE_TTL = 300


@dataclass(frozen=True, slots=True)
class Skipped:
    """A config that a manual run did not back up, and why (e.g. its lease is held elsewhere: ``config
    is already running on Office PC until 2025-01-07T14:35:00Z``)."""

    config_id: str
    config_name: str
    reason: str

    @property
    def title(self) -> str:
        return self.config_name or self.config_id


@dataclass(frozen=True, slots=True)
class ManualRun(RunResult):
    """A ``RunResult`` (the backups that ran) with the configs that were not started: they are not
    ``results`` (nothing ran, so nothing is recorded in ``state.json``), but the run is not ``ok``."""

    skipped: tuple[Skipped, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and not self.skipped and all(r.ok for r in self.results)


class AgentPlane(ControlPlane, LeasePlane, Protocol):
    """The control plane of a scheduled or requested run (``ApiClient`` is one)."""

    def heartbeat(
        self, *, version: str, platform: str, timezone: str | None = None
    ) -> Heartbeat: ...


class _TaggedPlane:
    """The engine's ``ControlPlane`` for one job: the runner's own plane, except that
    ``backup/start`` carries the job's trigger and attempt, and the log id it opens is kept for the
    progress events."""

    def __init__(self, plane: AgentPlane, job: Job) -> None:
        self._plane = plane
        self._job = job
        self.log_id: str | None = None
        self.lease_token: Callable[[], str] | None = None
        """The token of the run lease the runner holds (snapshots present it at start)."""
        self.on_open: Callable[[str], None] | None = None
        """Called (on the engine's thread, before any byte is uploaded) when the server has opened
        the log of the upload; not for the log the engine opens only to record a failure."""
        # The other calls go to the plane untouched.
        self.heartbeat = plane.heartbeat
        self.list_configs = plane.list_configs
        self.part_url = plane.part_url
        self.complete_upload = plane.complete_upload
        self.abort_upload = plane.abort_upload
        self.complete_backup = plane.complete_backup
        self.send_log = plane.send_log

    @property
    def server_features(self) -> frozenset[str] | None:
        """The features the server listed in its last heartbeat (for the uploader's part checksum)."""
        return getattr(self._plane, "server_features", None)

    def start_backup(self, request: StartBackup) -> StartResponse:
        job = self._job
        response = self._plane.start_backup(
            replace(
                request,
                trigger=job.trigger,
                attempt=job.attempt,
                max_attempts=job.max_attempts,
                run_request_id=job.run_request_id,
            )
        )
        self.log_id = response.log_id
        # The uploader's start carries ``multipart`` or the exact size and SHA-256; the engine's
        # start for a failure before the upload carries neither.
        if self.on_open is not None and (request.multipart or request.sha256 is not None):
            self.on_open(response.log_id)
        return response

    def __getattr__(self, name: str) -> Any:
        # The snapshot endpoints (``RepoPlane``) but ``snapshot_start``, and the recovery ones
        # (the wrapped repository key, for the account's and the organisation's recovery keys),
        # go to the plane untouched.
        if name.startswith(("snapshot_", "repo_", "recovery_", "organisation_key_")):
            return getattr(self._plane, name)
        raise AttributeError(name)

    def snapshot_start(self, request: StartSnapshot) -> SnapshotStarted:
        """``snapshot/start`` with the job's trigger and attempt and the run lease the runner
        holds; the snapshot's backup id is kept for the progress events."""
        job = self._job
        tags = {
            "trigger": job.trigger,
            "attempt": job.attempt,
            "maxAttempts": job.max_attempts,
            **({"runRequestId": job.run_request_id} if job.run_request_id else {}),
        }
        lease = self.lease_token() if self.lease_token is not None else None
        started = self._plane.snapshot_start(  # type: ignore[attr-defined]
            replace(
                request, lease_token=request.lease_token or lease, tags={**tags, **request.tags}
            )
        )
        self.log_id = started.backup_id
        if self.on_open is not None:
            self.on_open(started.backup_id)
        return started  # type: ignore[no-any-return]


class _LeaseKeeper:
    """Renews a lease every ``ttl/3`` on a thread; a lost lease cancels the backup."""

    def __init__(
        self,
        plane: LeasePlane,
        config_id: str,
        lease: Lease,
        ttl: int,
        cancel: CancelToken,
        every: float | None = None,
        instance: AgentInstance | None = None,
    ) -> None:
        self._plane = plane
        self._instance = instance
        self.config_id = config_id
        self.lease = lease
        self._ttl = ttl
        self._every = every if every is not None else ttl / 3
        self._cancel = cancel
        self._stop = threading.Event()
        self.renewals = 0
        self._thread = threading.Thread(target=self._run, name="backapp-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.lease = self._plane.renew_lease(self.config_id, self.lease.token, self._ttl)
                self.renewals += 1
                if self._instance is not None:
                    self._instance.touch()
            except ConflictError as exc:
                log.error("lost the run lease of config %s: %s", self.config_id, exc.detail)
                self._cancel.cancel(
                    f"stopped: the run lease was lost ({exc.detail})", deliberate=False
                )
                return
            except AgentError as exc:  # the server is unreachable: keep trying until it lapses
                log.warning("could not renew the run lease of %s: %s", self.config_id, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def release(self) -> None:
        self.stop()
        try:
            self._plane.release_lease(self.config_id, self.lease.token)
        except AgentError as exc:  # it lapses on its own
            log.warning("could not release the run lease of %s: %s", self.config_id, exc)


EngineFactory = Callable[[ControlPlane, EventSink], BackupEngine]


class Runner(OwnsClients):
    """Runs jobs: lease, engine, progress, retry decision (see the module doc). ``run`` may be
    called from several threads at once for different configs (parallel backups): each call has
    its own lease keeper, progress reporter and engine."""

    def __init__(
        self,
        plane: AgentPlane,
        make_engine: EngineFactory,
        *,
        events: EventSink | None = None,
        socket: AgentSocket | None = None,
        state: StateStore | None = None,
        lease_ttl: int = DEFAULT_LEASE_TTL,
        renew_every: float | None = None,
        progress_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        instance_dir: Path | None = None,
    ) -> None:
        """``instance_dir``: where this agent's processes register (``config_dir() / "instances"``),
        so that a lease left by a dead one is taken over at once; ``None``: nowhere (only a lease
        this very process left behind is)."""
        self.plane = plane
        self.instance = AgentInstance.for_process(instance_dir)
        self._make_engine = make_engine
        self._events = events
        self.socket = socket
        self._state = state
        self.lease_ttl = lease_ttl
        self._renew_every = renew_every
        """Seconds between renewals (default ``lease_ttl / 3``)."""
        self._progress_interval = progress_interval
        self._mono = monotonic
        self._rand = rand
        self.keeper: _LeaseKeeper | None = None
        """The lease keeper of the job started last."""
        self.version = __version__
        self.platform = sys.platform
        """What ``run_manual``'s heartbeats report."""
        self.temp_dir: Path | None = None
        """The engine's scratch folder, removed by ``run_manual`` when it is left empty."""
        self.server_features: frozenset[str] | None = None
        """The ``features`` of the server's last heartbeat answer (``None``: not seen yet)."""

    @classmethod
    def from_settings(
        cls,
        settings: AgentSettings,
        api_key: str,
        *,
        events: EventSink | None = None,
        socket: AgentSocket | None = None,
        state: StateStore | None = None,
        transport: httpx.BaseTransport | None = None,
        instance_dir: Path | None = None,
        mode: AgentMode | None = None,
    ) -> Runner:
        """A runner talking to ``settings.server_url`` with ``api_key``, with the real engine (the
        lease-taking counterpart of ``BackupEngine.from_settings``), its lease TTL from the
        settings (``mode``: see ``ApiClient``). Close it when done."""
        plane, storage = connect(settings, api_key, transport, mode=mode)
        options = EngineOptions.from_settings(settings)

        def make_engine(control: ControlPlane, sink: EventSink) -> BackupEngine:
            return BackupEngine(control, storage, options, events=sink)

        runner = cls(
            plane,
            make_engine,
            events=events,
            socket=socket,
            state=state,
            lease_ttl=settings.lease_ttl,
            instance_dir=instance_dir,
        )
        runner.version, runner.platform = options.version, options.platform
        runner.temp_dir = options.temp_dir
        return runner.owning(plane, storage)

    def _features(self) -> frozenset[str]:
        """What the server advertised in its last heartbeat; a runner that has not seen one yet
        (the tray's per-job runner) asks once. Unknown (server unreachable) counts as none."""
        if self.server_features is None:
            try:
                beat = self.plane.heartbeat(version=self.version, platform=self.platform)
            except AgentError as exc:
                log.debug("could not ask the server's features: %s", exc)
                return frozenset()
            self.server_features = frozenset(beat.features)
        return self.server_features

    def _send_progress(self, payload: dict[str, Any]) -> None:
        if self.socket is not None and self.socket.send({"type": "progress", **payload}):
            return
        self.plane.send_progress(payload)

    def _lookup(self, config_id: str) -> ConfigInfo | None:
        for config in self.plane.list_configs():
            if config.id == config_id:
                return config
        return None

    def run(self, job: Job, config: ConfigInfo | None, cancel: CancelToken) -> Outcome:
        """Run ``job`` (``config`` may be ``None`` when the agent's list is stale: it is fetched)."""
        try:
            config = config if config is not None else self._lookup(job.config_id)
        except AgentError as exc:
            log.warning("cannot start the backup of %s: %s", job.config_id, exc)
            return Outcome(job, "deferred", reason=str(exc))
        if config is None:
            log.warning("config %s is not assigned to this agent; not backing it up", job.config_id)
            return Outcome(job, "skipped", reason="not assigned to this agent")
        if cancel.is_set():
            return Outcome(job, "skipped", reason=cancel.reason)
        with self.instance.running(config.id) as take_over:
            return self._run_leased(job, config, cancel, take_over)

    def _run_leased(
        self, job: Job, config: ConfigInfo, cancel: CancelToken, take_over: list[str]
    ) -> Outcome:
        name = config.name or config.id
        try:
            lease = self.plane.acquire_lease(
                config.id, self.lease_ttl, instance=self.instance.id, take_over=take_over
            )
        except ConflictError as exc:
            log.warning("%s: not started, already running elsewhere: %s", name, exc.detail)
            return Outcome(job, "skipped", reason=exc.detail)
        except NotFoundError as exc:
            log.warning("%s: not started: %s", name, exc.detail)
            return Outcome(job, "skipped", reason=exc.detail)
        except AgentError as exc:
            log.warning("%s: cannot take the run lease: %s", name, exc)
            return Outcome(job, "deferred", reason=str(exc))
        what = {
            "schedule": "scheduled backup",
            "retry": f"retry {job.attempt} of {job.max_attempts}",
            "request": "Back Up Now (requested from the web)",
            "manual": "backup",
        }[job.trigger]
        log.info("%s: starting the %s", name, what)
        self.instance.touch()
        keeper = self.keeper = _LeaseKeeper(
            self.plane, config.id, lease, self.lease_ttl, cancel, self._renew_every, self.instance
        )
        keeper.start()
        tagged = _TaggedPlane(self.plane, job)
        reporter = ProgressReporter(
            self._send_progress,
            lambda: tagged.log_id,
            config_id=config.id if PROGRESS_BY_CONFIG in self._features() else None,
            interval=self._progress_interval,
        )

        def log_opened(log_id: str) -> None:
            # Over HTTP, not the socket: stored on the log before the first byte is uploaded.
            reporter.flush(self.plane.send_progress)

        tagged.on_open = log_opened
        tagged.lease_token = lambda: keeper.lease.token
        try:
            engine = self._make_engine(tagged, fan_out(reporter, self._events))
            try:
                result = engine.backup(config, cancel=cancel)
            finally:
                engine.close()
        finally:
            reporter.close()
            keeper.release()
        if self._state is not None:
            try:
                self._state.record(RunResult((result,)))
            except OSError as exc:
                log.warning("could not save the local state: %s", exc)
        if result.ok:
            return Outcome(job, "completed", result)
        if result.status == "cancelled":
            return Outcome(job, "cancelled", result, reason=result.error)
        retry: Job | None = None
        if job.automatic and job.attempt < job.max_attempts and not cancel.is_set():
            settings = RetrySettings.from_options(config.options.retry)
            delay = settings.delay(job.attempt, self._rand)
            retry = replace(
                job, trigger="retry", attempt=job.attempt + 1, not_before=self._mono() + delay
            )
            log.warning(
                "%s: attempt %d of %d failed (%s); retrying in %s",
                name,
                job.attempt,
                job.max_attempts,
                result.error,
                timedelta(seconds=round(delay)),
            )
        return Outcome(job, "failed", result, reason=result.error, retry=retry)

    def run_manual(
        self, config_ids: Sequence[str] | None = None, cancel: CancelToken | None = None
    ) -> ManualRun:
        """``backapp-agent run`` and the tray's *Back Up Now*: heartbeat, fetch the configs (all, or
        ``config_ids``), back each up through ``run`` (trigger ``manual``: the lease, progress to the
        server), final heartbeat; the same events and results as ``BackupEngine.run``. A config that
        could not be started because another runner holds its lease (or it was unassigned
        meanwhile) is in ``skipped``; one whose lease could not be asked for (server unreachable)
        is a failed result. Never raises for a failed config."""
        cancel = cancel or CancelToken()
        skipped: list[Skipped] = []

        def back_up(config: ConfigInfo) -> BackupResult | None:
            outcome = self.run(Job(config.id, trigger="manual"), config, cancel)
            if outcome.result is not None:
                return outcome.result
            if outcome.status == "deferred":
                return not_started(
                    config, f"not started: cannot take the run lease: {outcome.reason}"
                )
            if cancel.is_set():
                return not_started(
                    config, f"{cancel.reason} before it started", cancelled=cancel.deliberate
                )
            skipped.append(Skipped(config.id, config.name, outcome.reason or "not started"))
            return None

        def seen(beat: Heartbeat) -> None:
            self.server_features = frozenset(beat.features)

        run = run_configs(
            self.plane,
            back_up,
            version=self.version,
            platform=self.platform,
            emit=self._events or (lambda event: None),
            config_ids=config_ids,
            cancel=cancel,
            temp_dir=self.temp_dir,
            on_heartbeat=seen,
        )
        return ManualRun(run.results, error=run.error, skipped=tuple(skipped))
