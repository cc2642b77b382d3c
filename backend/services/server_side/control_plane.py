"""The engine's ``ControlPlane`` in-process: the server's own runs call the backup service directly.

The engine runs in a worker thread so the event loop keeps serving; each call hops back onto the
loop (``anyio.from_thread.run``), where the database pool lives. Backups are recorded in the same
history as the agents' ones, with ``agent`` NULL and keys
``users/{userId}/server/configs/{configId}/{filename}``, and verified the same way.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import anyio.from_thread
import anyio.lowlevel
import msgspec

from backend.backups.tables import BackupLog
from backend.db import json_value
from backend.errors import Conflict, DomainError, NotFound
from backend.run_schemas import (
    UploadedPart as ServerUploadedPart,
)
from backend.schemas import CompleteRequest
from backend.services.agents import AgentIdentity
from backend.services.alerts import config_options
from backend.services.backups import BackupService, NewBackup
from backend.services.clock import utcnow
from backend.services.pubsub import LiveEvents
from backend.settings import Settings
from backend.storage import Storage
from desktop_agent.engine import ApiError, ConflictError, NotFoundError
from desktop_agent.engine.protocol import (
    AbortUpload,
    CompleteBackup,
    CompleteUpload,
    ConfigInfo,
    Heartbeat,
    PartTicket,
    SignPart,
    StartBackup,
    StartResponse,
)

from .planner import PlannedRun

__all__ = ["ServerControlPlane", "engine_config"]

log = logging.getLogger("backapp.server_runner")


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

    def list_configs(self) -> list[ConfigInfo]:
        return [engine_config(self.config)]

    def start_backup(self, request: StartBackup) -> StartResponse:
        # The run's own tags, not the request's: this plane belongs to one planned run.
        new = NewBackup(
            user_id=self.user_id,
            agent_id=None,
            config_id=self.config_id,
            config_name=self.config["name"],
            filename=request.filename,
            filesize=request.filesize,
            multipart=request.multipart,
            size=request.size,
            sha256=request.sha256,
            part_checksum="crc32" if request.part_checksum == "crc32" else "sha256",
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

    def part_url(self, request: SignPart) -> PartTicket:
        part = self._call(
            self.backups.part_url,
            self.identity,
            request.log_id,
            request.part_number,
            request.size,
            request.sha256,
            request.crc32,
        )
        return msgspec.convert(msgspec.to_builtins(part), PartTicket)

    def complete_upload(self, request: CompleteUpload) -> int:
        parts = [
            ServerUploadedPart(
                part_number=p.part_number, etag=p.etag, sha256=p.sha256, crc32=p.crc32
            )
            for p in request.parts
        ]
        assemble = functools.partial(self.backups.upload_complete, object_crc32=request.crc32)
        return int(self._call(assemble, self.identity, request.log_id, parts))

    def abort_upload(self, request: AbortUpload) -> None:
        self._call(self.backups.upload_abort, self.identity, request.log_id, request.reason[:4000])

    def complete_backup(self, request: CompleteBackup) -> str:
        # What an agent would send, read the way the agent API reads it.
        error = request.error[:4000] if request.error else None
        req = msgspec.convert(replace(request, error=error).to_json(), CompleteRequest)
        return str(self._call(self.backups.complete, self.identity, req))

    def send_log(self, level: str, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        logger_level = {"debug": 10, "info": 20, "warning": 30, "error": 40}.get(level, 20)
        log.log(logger_level, "server-side backup: %s", message)


def engine_config(row: dict[str, Any]) -> ConfigInfo:
    """A config row as the engine's wire type."""
    options = config_options(row["options"])
    return msgspec.convert(
        {
            "id": str(row["id"]),
            "name": row["name"],
            "sources": json_value(row["sources"]) or [],
            "options": {
                k: v
                for k, v in options.items()
                if k in ("type", "compression", "encryption", "retentionDays", "compressionFormat")
                or k == "excludeNodeModules"
            },
            "excludes": json_value(row["excludes"]) or [],
        },
        ConfigInfo,
    )
