"""Server-side execution: configs with ``executionMode: "server"`` backed up by the server itself.

The server drives the very same engine as the agents (``desktop_agent.engine.BackupEngine``) through
two in-process seams:

* :class:`ServerControlPlane` implements the engine's ``ControlPlane`` by calling the backup service
  directly (no HTTP, no API key). The engine runs in a worker thread so the event loop keeps
  serving; each call hops back onto the loop (``anyio.from_thread.run``), where the database pool
  lives. Backups are recorded in the same history, with ``agent`` NULL and keys
  ``users/{userId}/server/configs/{configId}/{filename}``, and verified the same way.
* the engine's ``Storage`` is ``HttpStorage`` for S3 (a PUT to the pre-signed URL, exactly what an
  agent does) and :class:`LocalDirectStorage` for the embedded local storage: it checks the signed
  URL with ``LocalStorage.verify`` and hands the body to ``LocalStorage.receive`` in-process. Going
  through the server's own HTTP port instead would need ``BACKAPP_PUBLIC_URL`` to be reachable from
  the server itself (often false behind a proxy) and a listening socket (absent in ASGI tests); the
  in-process path keeps every check a URL carries (signature, expiry, size, SHA-256, no overwrite).

When: a config runs when its schedule is due (evaluated in ``BACKAPP_TIMEZONE``; several missed slots
after downtime give one catch-up run), when a Back Up Now request (RunRequest with agent NULL) is
pending, and for automatic retries of a failed scheduled backup (``options.retry``: attempts 1..10,
default 3, counting the first; ``delaySeconds`` default 60, doubling each time). Each run holds the
``config:{id}`` lease (renewed while it runs), and re-checks under it that the run is still due, so
several server processes never run a slot twice.

Security: sources must lie under ``BACKAPP_SERVER_SOURCE_ROOTS`` (checked when a config is saved and
again, after resolving symbolic links, before each run); only administrators may create or change
server-side configs (``ConfigService``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import httpx
import msgspec

from backend import __version__
from backend.backups.tables import BackupConfig, BackupLog, RunRequest
from backend.errors import Conflict, DomainError, InvalidInput, NotFound
from backend.schemas import CompleteRequest
from backend.schemas import UploadedPart as ServerUploadedPart
from backend.services.agents import AgentIdentity
from backend.services.alerts import config_schedule
from backend.services.backups import BackupService, NewBackup
from backend.services.clock import aware, utcnow
from backend.services.leases import LeaseService, config_lease_name
from backend.services.pubsub import LiveEvents
from backend.settings import Settings
from backend.storage import LocalStorage, ObjectStoreError, Storage
from backend.storage.base import AccessDenied, BadDigest, NoSuchUpload, ObjectExists
from backend.storage.local import ROUTE_PREFIX
from backend.storage.local_routes import RangeNotSatisfiable, parse_range
from desktop_agent.engine import (
    ApiError,
    BackupEngine,
    CancelToken,
    ConflictError,
    EngineOptions,
    HttpStorage,
    NotFoundError,
    StorageError,
)
from desktop_agent.engine import (
    BackupConfig as EngineConfig,
)
from desktop_agent.engine._api import Body
from desktop_agent.engine._backups import BackupInfo, RestoreTicket
from desktop_agent.engine._models import Heartbeat, PartTicket, StartResponse, UploadedPart
from desktop_agent.engine._results import BackupResult
from desktop_agent.engine.schedule import resolve_timezone

__all__ = [
    "LocalDirectStorage",
    "LocalStorageTransport",
    "PlannedRun",
    "ServerControlPlane",
    "ServerRestoreSource",
    "ServerRunner",
    "check_server_sources",
    "retry_policy",
]

log = logging.getLogger("backapp.server_runner")

LEASE_TTL = 300.0
DEFAULT_ATTEMPTS = 3
DEFAULT_DELAY = 60


def retry_policy(options: Mapping[str, Any]) -> tuple[int, int]:
    """``(attempts, delaySeconds)`` of ``options.retry``, with the documented defaults and bounds."""
    retry = options.get("retry")
    attempts, delay = DEFAULT_ATTEMPTS, DEFAULT_DELAY
    if isinstance(retry, dict):
        a, d = retry.get("attempts"), retry.get("delaySeconds")
        if isinstance(a, int) and not isinstance(a, bool):
            attempts = min(10, max(1, a))
        if isinstance(d, int | float) and not isinstance(d, bool) and d >= 0:
            delay = int(d)
    return attempts, delay


def _under(path: str, roots: Sequence[str]) -> bool:
    for root in roots:
        try:
            if os.path.commonpath([path, root]) == root:
                return True
        except ValueError:
            continue
    return False


def check_server_sources(paths: Sequence[str], roots: Sequence[str], *, resolve: bool) -> None:
    """InvalidInput unless every path is absolute and under one of ``roots`` (after resolving
    symbolic links when ``resolve``; the roots are resolved the same way)."""
    if not roots:
        raise InvalidInput(
            "executionMode: server-side backups are disabled on this server "
            "(the administrator must set BACKAPP_SERVER_SOURCE_ROOTS)",
            field="executionMode",
        )
    real_roots = [os.path.realpath(r) for r in roots] if resolve else list(roots)
    for i, raw in enumerate(paths):
        if not os.path.isabs(raw):
            raise InvalidInput(
                f"sources[{i}].path: a server-side source must be an absolute path", field="sources"
            )
        path = os.path.realpath(raw) if resolve else os.path.normpath(raw)
        if not _under(path, real_roots):
            raise InvalidInput(
                f"sources[{i}].path: {raw} is outside the folders server-side backups may read "
                f"({', '.join(roots)})",
                field="sources",
            )


def _options(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = msgspec.json.decode(raw)
    return raw if isinstance(raw, dict) else {}


def _engine_error(exc: DomainError) -> ApiError:
    if isinstance(exc, Conflict):
        return ConflictError(exc.status_code, exc.code, exc.detail)
    if isinstance(exc, NotFound):
        return NotFoundError(exc.status_code, exc.code, exc.detail)
    return ApiError(exc.status_code, exc.code, exc.detail)


class _ServerBackups(BackupService):
    """The backup service with logs looked up for the server (agent NULL) instead of an agent."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        config_id: uuid.UUID,
        live: LiveEvents | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(settings, storage, live, clock)
        self.config_id = config_id

    async def find_log(self, agent: AgentIdentity, log_id: str) -> dict[str, Any]:
        try:
            parsed = uuid.UUID(str(log_id))
        except ValueError:
            raise NotFound("logId: no such server-side backup") from None
        row: dict[str, Any] | None = (
            await BackupLog.select()
            .where(
                (BackupLog.id == parsed)
                & BackupLog.agent.is_null()
                & (BackupLog.user == agent.user_id)
                & (BackupLog.config == self.config_id)
            )
            .first()
        )
        if row is None:
            raise NotFound("logId: no such server-side backup")
        return row


@dataclass(frozen=True)
class PlannedRun:
    """One server-side run to make: why (trigger), which attempt, and the request it answers."""

    config_id: uuid.UUID
    trigger: str
    attempt: int = 1
    max_attempts: int = 1
    run_request: str | None = None
    slot: datetime | None = None


class ServerControlPlane:
    """The engine's ``ControlPlane`` in-process; call it only from a thread started by anyio."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        config: dict[str, Any],
        run: PlannedRun,
        live: LiveEvents | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.storage = storage
        self.config = config
        self.run = run
        self.user_id: uuid.UUID = config["user"]
        self.config_id: uuid.UUID = config["id"]
        self.backups = _ServerBackups(settings, storage, self.config_id, live, clock)
        self.identity = AgentIdentity(
            id=uuid.UUID(int=0), user_id=self.user_id, name="server", platform=None, version=None
        )
        self.log_ids: list[str] = []
        self.server_features = frozenset({"part-crc32"})
        """What the engine's uploader may use (CRC32 part checksums: half the CPU of SHA-256)."""
        # The engine calls back from its own threads too (multipart part uploads run in a pool):
        # the token names the event loop to run the services on.
        self.token = anyio.lowlevel.current_token()

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return anyio.from_thread.run(fn, *args, token=self.token)
        except DomainError as exc:
            raise _engine_error(exc) from exc

    # -- ControlPlane ------------------------------------------------------------------------

    def heartbeat(self, *, version: str, platform: str) -> Heartbeat:
        return Heartbeat(status="online")

    def list_configs(self) -> list[EngineConfig]:
        return [engine_config(self.config)]

    def start_backup(
        self,
        *,
        config_id: str,
        filename: str,
        filesize: int,
        multipart: bool = False,
        size: int | None = None,
        sha256: str | None = None,
        part_checksum: str | None = None,
    ) -> StartResponse:
        new = NewBackup(
            user_id=self.user_id,
            agent_id=None,
            config_id=self.config_id,
            config_name=self.config["name"],
            filename=filename,
            filesize=filesize,
            multipart=multipart,
            size=size,
            sha256=sha256,
            part_checksum="crc32" if part_checksum == "crc32" else "sha256",
            trigger=self.run.trigger,
            attempt=self.run.attempt,
            max_attempts=self.run.max_attempts,
            run_request=uuid.UUID(self.run.run_request) if self.run.run_request else None,
        )
        log_id, upload = self._call(self.backups.open_upload, new)
        self.log_ids.append(log_id)
        return msgspec.convert(
            {"logId": log_id, "upload": msgspec.to_builtins(upload)}, StartResponse
        )

    def part_url(
        self,
        *,
        log_id: str,
        part_number: int,
        size: int,
        sha256: str | None = None,
        crc32: str | None = None,
    ) -> PartTicket:
        part = self._call(
            self.backups.part_url, self.identity, log_id, part_number, size, sha256, crc32
        )
        return msgspec.convert(msgspec.to_builtins(part), PartTicket)

    def complete_upload(self, *, log_id: str, parts: Sequence[UploadedPart]) -> int:
        converted = [
            ServerUploadedPart(
                part_number=p.part_number, etag=p.etag, sha256=p.sha256, crc32=p.crc32
            )
            for p in parts
        ]
        return int(self._call(self.backups.upload_complete, self.identity, log_id, converted))

    def abort_upload(self, *, log_id: str, reason: str) -> None:
        self._call(self.backups.upload_abort, self.identity, log_id, reason[:4000])

    def complete_backup(
        self,
        *,
        log_id: str,
        status: str,
        files_processed: int,
        bytes_transferred: int,
        duration_ms: int,
        errors: Sequence[Mapping[str, str]] = (),
        size: int | None = None,
        sha256: str | None = None,
        error: str | None = None,
    ) -> str:
        payload: dict[str, Any] = {
            "logId": log_id,
            "status": status,
            "filesProcessed": files_processed,
            "bytesTransferred": bytes_transferred,
            "duration": duration_ms,
            "errors": [dict(e) for e in errors],
            "size": size,
            "sha256": sha256,
            "error": error[:4000] if error else None,
        }
        req = msgspec.convert(payload, CompleteRequest)
        return str(self._call(self.backups.complete, self.identity, req))

    def send_log(self, level: str, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        logger_level = {"debug": 10, "info": 20, "warning": 30, "error": 40}.get(level, 20)
        log.log(logger_level, "server-side backup: %s", message)


def engine_config(row: dict[str, Any]) -> EngineConfig:
    """A config row as the engine's wire type."""

    def decoded(value: Any) -> Any:
        return msgspec.json.decode(value) if isinstance(value, str) else value

    options = _options(row["options"])
    return msgspec.convert(
        {
            "id": str(row["id"]),
            "name": row["name"],
            "sources": decoded(row["sources"]) or [],
            "options": {
                k: v
                for k, v in options.items()
                if k in ("type", "compression", "encryption", "retentionDays", "compressionFormat")
                or k == "excludeNodeModules"
            },
            "excludes": decoded(row["excludes"]) or [],
        },
        EngineConfig,
    )


class LocalDirectStorage:
    """The engine's ``Storage`` for the embedded local storage, without an HTTP round trip: the
    signed URL is verified exactly as the ``/storage/o`` route does, then the body is stored."""

    def __init__(self, storage: LocalStorage) -> None:
        """Create it on the event loop: part uploads call back from other threads."""
        self.storage = storage
        self.token = anyio.lowlevel.current_token()

    def put(self, url: str, body: Body | Sequence[Body], headers: Mapping[str, str]) -> str | None:
        parts = urlsplit(url)
        if not parts.path.startswith(ROUTE_PREFIX + "/"):
            raise StorageError("not a local-storage URL", status=400)
        key = unquote(parts.path[len(ROUTE_PREFIX) + 1 :])
        pieces = [memoryview(body)] if isinstance(body, Body) else [memoryview(b) for b in body]
        try:
            grant = self.storage.verify("PUT", key, parse_qsl(parts.query, keep_blank_values=True))
        except AccessDenied as exc:
            raise StorageError(f"storage refused the upload: {exc}", status=403) from exc

        async def chunks() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield bytes(piece)

        try:
            etag: str = anyio.from_thread.run(
                self.storage.receive, grant, chunks(), token=self.token
            )
        except BadDigest as exc:
            raise StorageError(f"storage refused the upload: {exc}", status=400) from exc
        except ObjectExists as exc:
            raise StorageError(f"storage refused the upload: {exc}", status=409) from exc
        except NoSuchUpload as exc:
            raise StorageError(f"storage refused the upload: {exc}", status=404) from exc
        except (ObjectStoreError, OSError) as exc:
            raise StorageError(f"storage failed: {exc}", status=503, transient=True) from exc
        return etag


class _Running:
    def __init__(self, task: asyncio.Task[None], cancel: CancelToken) -> None:
        self.task = task
        self.cancel = cancel


class ServerRunner:
    """Decides which server-side configs run now, and runs them (see the module docstring)."""

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
        self.tz = resolve_timezone(settings.timezone)

    # -- planning ------------------------------------------------------------------------------

    async def plan(self, now: datetime) -> list[PlannedRun]:
        """Runs due at ``now``: pending requests first, then schedule slots, then retries."""
        configs = await BackupConfig.select(
            BackupConfig.id, BackupConfig.options, BackupConfig.created_at
        ).where((BackupConfig.execution_mode == "server") & BackupConfig.agent.is_null())
        planned: list[PlannedRun] = []
        for config in configs:
            run = await self._plan_config(config, now)
            if run is not None:
                planned.append(run)
        return planned

    async def _plan_config(self, config: dict[str, Any], now: datetime) -> PlannedRun | None:
        config_id = config["id"]
        request = (
            await RunRequest.select(RunRequest.id)
            .where(
                (RunRequest.config == config_id)
                & RunRequest.agent.is_null()
                & (RunRequest.status == "pending")
            )
            .order_by(RunRequest.requested_at)
            .first()
        )
        if request is not None:
            return PlannedRun(config_id, "request", run_request=str(request["id"]))
        options = _options(config["options"])
        schedule = config_schedule(options)
        if schedule is None:
            return None
        attempts, delay = retry_policy(options)
        last_first = (
            await BackupLog.select(BackupLog.started_at)
            .where((BackupLog.config == config_id) & (BackupLog.trigger == "schedule"))
            .order_by(BackupLog.started_at, ascending=False)
            .first()
        )
        slot = schedule.due(
            aware(last_first["started_at"]) if last_first else None,
            now,
            self.tz,
            since=aware(config["created_at"]),
        )
        if slot is not None:
            return PlannedRun(config_id, "schedule", 1, attempts, slot=slot)
        last = (
            await BackupLog.select(
                BackupLog.status,
                BackupLog.attempt,
                BackupLog.max_attempts,
                BackupLog.completed_at,
                BackupLog.started_at,
            )
            .where((BackupLog.config == config_id) & BackupLog.trigger.is_in(["schedule", "retry"]))
            .order_by(BackupLog.started_at, ascending=False)
            .first()
        )
        if last is None or last["status"] != "failed":
            return None
        attempt = int(last["attempt"] or 1)
        allowed = int(last["max_attempts"] or 1)
        if attempt >= allowed:
            return None
        finished = aware(last["completed_at"]) or aware(last["started_at"])
        assert finished is not None
        if now < finished + timedelta(seconds=delay * 2 ** (attempt - 1)):
            return None
        return PlannedRun(config_id, "retry", attempt + 1, allowed)

    # -- running -------------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> list[asyncio.Task[None]]:
        """Start every due run in the background; returns the tasks started."""
        clock: Callable[[], datetime] = utcnow
        if now is not None:
            frozen = now
            clock = lambda: frozen  # noqa: E731 (a test's controllable clock)
        now = now or utcnow()
        started: list[asyncio.Task[None]] = []
        for run in await self.plan(now):
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
        grant = await self.leases.acquire(name, self.holder, LEASE_TTL)
        if grant is None:
            log.info("server-side config %s is already running elsewhere", run.config_id)
            return
        try:
            if not await self._still_due(run, now):
                return
            await self._run_with_lease(run, cancel or CancelToken(), grant.token, clock)
        except Exception:
            log.exception("server-side backup of config %s failed unexpectedly", run.config_id)
        finally:
            with anyio.CancelScope(shield=True):
                await self.leases.release(name, grant.token)

    async def _still_due(self, run: PlannedRun, now: datetime) -> bool:
        config = (
            await BackupConfig.select(
                BackupConfig.id, BackupConfig.options, BackupConfig.created_at
            )
            .where((BackupConfig.id == run.config_id) & (BackupConfig.execution_mode == "server"))
            .first()
        )
        if config is None:
            return False
        if run.trigger == "request":
            assert run.run_request is not None
            taken = (
                await RunRequest.update(
                    {RunRequest.status: "started", RunRequest.started_at: utcnow()}
                )
                .where(
                    (RunRequest.id == uuid.UUID(run.run_request)) & (RunRequest.status == "pending")
                )
                .returning(RunRequest.id)
            )
            return bool(taken)
        again = await self._plan_config(config, now)
        return again is not None and again.trigger == run.trigger and again.attempt == run.attempt

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
        await anyio.to_thread.run_sync(lambda: temp_dir.mkdir(parents=True, exist_ok=True))
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
            config_id=str(plane.config_id), filename=archive_filename(utcnow(), "gzip"), filesize=0
        )
        plane.complete_backup(
            log_id=response.log_id,
            status="failed",
            files_processed=0,
            bytes_transferred=0,
            duration_ms=0,
            error=f"refused: {reason}",
        )

    async def _renew(self, name: str, token: str, cancel: CancelToken) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL / 3)
            if await self.leases.renew(name, token, LEASE_TTL) is None:
                log.error("lost the lease %s: cancelling the server-side backup", name)
                cancel.cancel("the run lost its lease to another server")
                return

    async def wait(self) -> None:
        """Wait for every run this process started (tests; shutdown)."""
        tasks = [r.task for r in self.running.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        for running in list(self.running.values()):
            running.cancel.cancel("the server is shutting down")
        await self.wait()


# -- restores (the ``backapp restore`` command) ------------------------------------------------------


class ServerRestoreSource:
    """The engine's ``RestoreSource`` for the server's own CLI: any backup of the database, with a
    fresh pre-signed GET from the server's storage each time one is asked for."""

    def __init__(self, settings: Settings, storage: Storage, backups: dict[str, dict[str, Any]]):
        self.settings = settings
        self.storage = storage
        self.backups = backups

    def list_backups(self, *, config_id: str | None = None, limit: int = 100) -> list[BackupInfo]:
        return [
            BackupInfo(id=k, filename=r["filename"], s3_path=r["s3_path"], size=r["size"])
            for k, r in self.backups.items()
        ][:limit]

    def restore_ticket(self, backup_id: str) -> RestoreTicket:
        row = self.backups.get(backup_id)
        if row is None:
            raise NotFoundError(404, "not_found", f"no backup {backup_id}")
        presigned = self.storage.presign_get(
            row["s3_path"], expires_in=self.settings.presign_seconds
        )
        return RestoreTicket(
            backup_id=backup_id,
            url=presigned.url,
            size=int(row["size"] or 0),
            sha256=row["sha256"],
            filename=row["filename"],
            s3_path=row["s3_path"],
        )


async def load_restorable(backup_id: str) -> dict[str, Any]:
    """The completed backup ``backup_id`` (any user: the server operator's command)."""
    try:
        parsed = uuid.UUID(backup_id)
    except ValueError:
        raise NotFound(f"{backup_id} is not a backup id") from None
    row: dict[str, Any] | None = await BackupLog.select().where(BackupLog.id == parsed).first()
    if row is None:
        raise NotFound(f"no backup {backup_id}")
    if row["status"] != "completed":
        raise Conflict(f"backup {backup_id} is {row['status']}: there is nothing to restore")
    return row


class _FileStream(httpx.SyncByteStream):
    def __init__(self, path: Path, start: int, length: int) -> None:
        self.path, self.start, self.length = path, start, length

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as file:
            file.seek(self.start)
            left = self.length
            while left > 0:
                data = file.read(min(1024 * 1024, left))
                if not data:
                    break
                left -= len(data)
                yield data


class LocalStorageTransport(httpx.BaseTransport):
    """Serves the local storage's signed GET URLs in-process (same checks as ``/storage/o``), so
    ``backapp restore`` works without a running server."""

    def __init__(self, storage: LocalStorage) -> None:
        self.storage = storage

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method != "GET" or not path.startswith(ROUTE_PREFIX + "/"):
            return httpx.Response(400, request=request)
        key = unquote(path[len(ROUTE_PREFIX) + 1 :])
        query = parse_qsl(request.url.query.decode("latin-1"), keep_blank_values=True)
        try:
            grant = self.storage.verify("GET", key, query)
        except AccessDenied:
            return httpx.Response(403, request=request)
        file = self.storage.object_path(grant.key)
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            return httpx.Response(404, request=request)
        try:
            byte_range = parse_range(request.headers.get("range"), size)
        except RangeNotSatisfiable:
            return httpx.Response(416, request=request)
        first, last, status = 0, size - 1, 200
        headers = {"accept-ranges": "bytes"}
        if byte_range is not None:
            first, last = byte_range
            status = 206
            headers["content-range"] = f"bytes {first}-{last}/{size}"
        headers["content-length"] = str(last - first + 1)
        return httpx.Response(
            status,
            headers=headers,
            stream=_FileStream(file, first, last - first + 1),
            request=request,
        )
