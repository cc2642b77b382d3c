"""Runs the server-side backups the planner finds due, each under its config's lease.

A config runs when its schedule is due (evaluated in ``BACKAPP_TIMEZONE``; several missed slots after
downtime give one catch-up run), when a Back Up Now request (RunRequest with agent NULL) is pending,
and for automatic retries of a failed scheduled backup. Each run holds the ``config:{id}`` lease
(renewed while it runs), and re-checks under it that the run is still due, so several server
processes never run a slot twice. Sources are checked again, after resolving symbolic links, before
each run.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread

from backend import __version__
from backend.backups.tables import BackupConfig
from backend.errors import InvalidInput
from backend.private_files import make_private_dir
from backend.services.clock import utcnow
from backend.services.leases import SERVER_OWNER, LeaseService, config_lease_name
from backend.services.pubsub import LiveEvents
from backend.settings import Settings
from backend.storage import LocalStorage, Storage
from desktop_agent.engine import BackupEngine, CancelToken, EngineOptions, HttpStorage
from desktop_agent.engine.protocol import BackupResult, CompleteBackup, StartBackup
from desktop_agent.engine.schedule import resolve_timezone

from .control_plane import ServerControlPlane, engine_config
from .planner import PlannedRun, Planner
from .sources import check_server_sources
from .storage import LocalDirectStorage

__all__ = ["LEASE_TTL", "ServerRunner"]

log = logging.getLogger("backapp.server_runner")

LEASE_TTL = 300.0


class _Running:
    def __init__(self, task: asyncio.Task[None], cancel: CancelToken) -> None:
        self.task = task
        self.cancel = cancel


class ServerRunner:
    """Runs the server-side backups its :class:`Planner` finds due (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        leases: LeaseService,
        holder: str,
        *,
        live: LiveEvents | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.live = live
        self.leases = leases
        self.holder = holder
        self.running: dict[uuid.UUID, _Running] = {}
        self.planner = Planner(resolve_timezone(settings.timezone))

    async def tick(self, now: datetime | None = None) -> list[asyncio.Task[None]]:
        """Start every due run in the background; returns the tasks started."""
        clock: Callable[[], datetime] = utcnow
        if now is not None:
            frozen = now
            clock = lambda: frozen  # noqa: E731 (a test's controllable clock)
        now = now or utcnow()
        started: list[asyncio.Task[None]] = []
        for run in await self.planner.plan(now):
            if run.config_id in self.running:
                continue
            cancel = CancelToken()
            task = asyncio.get_running_loop().create_task(self.execute(run, now, cancel, clock))
            self.running[run.config_id] = _Running(task, cancel)
            task.add_done_callback(self._forget(run.config_id))
            started.append(task)
        return started

    def _forget(self, config_id: uuid.UUID) -> Callable[[asyncio.Task[None]], None]:
        def done(_: asyncio.Task[None]) -> None:
            self.running.pop(config_id, None)

        return done

    async def execute(
        self,
        run: PlannedRun,
        now: datetime,
        cancel: CancelToken | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """Run one planned backup under the config's lease (skipped when someone else holds it or
        when, under the lease, it turns out to be no longer due)."""
        name = config_lease_name(run.config_id)
        grant = await self.leases.acquire(name, self.holder, LEASE_TTL, owner=SERVER_OWNER)
        if grant is None:
            log.info("server-side config %s is already running elsewhere", run.config_id)
            return
        try:
            if not await self.planner.still_due(run, now):
                return
            await self._run_with_lease(run, cancel or CancelToken(), grant.token, clock)
        except Exception:
            log.exception("server-side backup of config %s failed unexpectedly", run.config_id)
        finally:
            with anyio.CancelScope(shield=True):
                await self.leases.release(name, grant.token)

    async def _run_with_lease(
        self, run: PlannedRun, cancel: CancelToken, token: str, clock: Callable[[], datetime]
    ) -> None:
        config = await BackupConfig.select().where(BackupConfig.id == run.config_id).first()
        if config is None:
            return
        plane = ServerControlPlane(self.settings, self.storage, config, run, self.live, clock)
        sources = [s.path for s in engine_config(config).sources]
        try:
            check_server_sources(sources, self.settings.server_source_roots, resolve=True)
        except InvalidInput as exc:
            await anyio.to_thread.run_sync(self._record_refusal, plane, exc.detail)
            return
        engine_storage: Any
        if isinstance(self.storage, LocalStorage):
            engine_storage = LocalDirectStorage(self.storage)
        else:
            engine_storage = HttpStorage(user_agent=f"backapp-server/{__version__}")
        temp_dir = self.settings.data_dir / "tmp" / "server-runs"
        await anyio.to_thread.run_sync(make_private_dir, temp_dir)
        engine = BackupEngine(
            plane,
            engine_storage,
            EngineOptions(
                temp_dir=temp_dir,
                version=__version__,
                platform="server",
            ),
            now=clock,
        )
        name = config_lease_name(run.config_id)
        renewer = asyncio.get_running_loop().create_task(self._renew(name, token, cancel))
        try:
            result: BackupResult = await anyio.to_thread.run_sync(
                lambda: engine.backup(engine_config(config), cancel=cancel)
            )
        finally:
            renewer.cancel()
            if isinstance(engine_storage, HttpStorage):
                engine_storage.close()
        log.info(
            "server-side backup of '%s' (%s, attempt %d/%d): %s%s",
            config["name"],
            run.trigger,
            run.attempt,
            run.max_attempts,
            result.status,
            f" ({result.error})" if result.error else "",
        )

    @staticmethod
    def _record_refusal(plane: ServerControlPlane, reason: str) -> None:
        from desktop_agent.engine import archive_filename

        response = plane.start_backup(
            StartBackup(
                config_id=str(plane.config_id),
                filename=archive_filename(utcnow(), "gzip"),
                filesize=0,
            )
        )
        plane.complete_backup(
            CompleteBackup(
                log_id=response.log_id,
                status="failed",
                files_processed=0,
                bytes_transferred=0,
                duration_ms=0,
                error=f"refused: {reason}",
            )
        )

    async def _renew(self, name: str, token: str, cancel: CancelToken) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL / 3)
            if await self.leases.renew(name, token, LEASE_TTL) is None:
                log.error("lost the lease %s: cancelling the server-side backup", name)
                cancel.cancel("the run lost its lease to another server", deliberate=False)
                return

    async def wait(self) -> None:
        """Wait for every run this process started (tests; shutdown)."""
        tasks = [r.task for r in self.running.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        for running in list(self.running.values()):
            running.cancel.cancel("the server is shutting down", deliberate=False)
        await self.wait()
