"""Backups: handing out upload URLs, verifying what landed, and the history.

A backup is ``completed`` only when its object is in storage and its size (and SHA-256, where the
storage can tell) match what the agent reported; otherwise it is ``failed`` with the reason.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec
from piccolo.custom_types import Combinable
from piccolo.query.functions.aggregate import Count, Sum

from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig, BackupLog
from backend.errors import Conflict, InvalidInput, NotFound, StorageUnavailable
from backend.schemas import (
    AgentBackupOut,
    BackupOut,
    BackupTotals,
    CompleteRequest,
    ConfigLastBackups,
    DownloadInfo,
    PartUrl,
    ProgressRequest,
    StartRequest,
    UploadedPart,
    UploadInfo,
)
from backend.services.accounts import CurrentUser
from backend.services.agents import AgentIdentity, parse_uuid
from backend.services.clock import iso, utcnow
from backend.services.keys import backup_key
from backend.services.pubsub import LiveEvents
from backend.services.runs import check_run_request, mark_run_started
from backend.settings import Settings
from backend.storage import CompletedPart, NoSuchUpload, ObjectInfo, ObjectStoreError, Storage
from backend.storage import InvalidParts as StorageInvalidParts

__all__ = ["AGENT_FEATURES", "PRE_LOG_PHASES", "BackupService"]

log = logging.getLogger("backapp.backups")

AGENT_FEATURES = ("progress-by-config", "part-crc32")
"""Extensions an agent may use, listed in the heartbeat response (``features``)."""
PRE_LOG_PHASES = ("scanning", "archiving")
"""The phases a run reports by ``configId``, before its log is open."""

SINGLE_PUT_LIMIT = 5 * 1024**3
MAX_PARTS = 10000
T = TypeVar("T")


async def _storage_call(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return await fn()
    except (NoSuchUpload, StorageInvalidParts):
        raise
    except ObjectStoreError as exc:
        raise StorageUnavailable(f"object storage is unavailable: {exc}") from exc


def _errors_json(errors: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in errors:
        if isinstance(item, str):
            out.append({"message": item})
        else:
            out.append(msgspec.to_builtins(item))
    return out


class BackupService:
    def __init__(
        self, settings: Settings, storage: Storage, live: LiveEvents | None = None
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.live = live

    def _publish(self, row: dict[str, Any], status: str, error: str | None = None) -> None:
        """Tell the owner's open pages that a backup started or finished."""
        if self.live is None:
            return
        self.live.to_user(
            row["user"],
            {
                "type": "backup",
                "backupId": str(row["id"]),
                "configId": str(row["config"]) if row["config"] else None,
                "agentId": str(row["agent"]) if row["agent"] else None,
                "status": status,
                "error": error,
            },
        )

    # --- agent side -------------------------------------------------------------------------

    async def _agent_log(self, agent: AgentIdentity, log_id: str) -> dict[str, Any]:
        row = (
            await BackupLog.select()
            .where(
                (BackupLog.id == parse_uuid(log_id, "backup log"))
                & (BackupLog.agent == agent.id)
                & (BackupLog.user == agent.user_id)
            )
            .first()
        )
        if row is None:
            raise NotFound("logId: no such backup log for this agent")
        return row

    def _expires(self) -> datetime:
        return utcnow() + timedelta(seconds=self.settings.presign_seconds)

    async def start(self, agent: AgentIdentity, req: StartRequest) -> tuple[str, UploadInfo]:
        try:
            config_id = uuid.UUID(req.config_id)
        except ValueError:
            raise NotFound("configId: no such config assigned to this agent") from None
        config = (
            await BackupConfig.select(BackupConfig.id, BackupConfig.name)
            .where(
                (BackupConfig.id == config_id)
                & (BackupConfig.agent == agent.id)
                & (BackupConfig.user == agent.user_id)
                & (BackupConfig.execution_mode == "agent")
            )
            .first()
        )
        if config is None:
            raise NotFound("configId: no such config assigned to this agent")
        max_attempts = req.max_attempts if req.max_attempts is not None else req.attempt
        if req.attempt > max_attempts:
            raise InvalidInput(
                f"attempt: {req.attempt} is more than maxAttempts ({max_attempts})", field="attempt"
            )
        run_request = None
        if req.run_request_id is not None:
            run_request = await check_run_request(agent.id, config_id, req.run_request_id)
        trigger = req.trigger or ("request" if run_request is not None else "manual")
        key = backup_key(
            user_id=agent.user_id, agent_id=agent.id, config_id=config_id, filename=req.filename
        )
        if not req.multipart and req.size is not None and req.size > SINGLE_PUT_LIMIT:
            raise InvalidInput(
                "size: a single upload is limited to 5 GiB; start with multipart: true",
                field="size",
            )
        if await BackupLog.exists().where(BackupLog.s3_path == key):
            raise Conflict(f"filename: {key} is already used by another backup; pick a new name")
        if await _storage_call(lambda: self.storage.head(key)) is not None:
            raise Conflict(f"filename: {key} already holds a backup; pick a new name")

        log_id = uuid.uuid4()
        row = BackupLog(
            id=log_id,
            user=agent.user_id,
            config=config_id,
            agent=agent.id,
            config_name=config["name"],
            status="running",
            s3_path=key,
            filename=req.filename,
            filesize_estimate=req.filesize,
            expected_size=req.size,
            expected_sha256=req.sha256.lower() if req.sha256 else None,
            upload_state="multipart" if req.multipart else "single",
            part_checksum=req.part_checksum if req.multipart else "sha256",
            errors=[],
            started_at=utcnow(),
            trigger=trigger,
            attempt=req.attempt,
            max_attempts=max_attempts,
            run_request=str(run_request) if run_request is not None else None,
        )
        try:
            await row.save()
        except Exception as exc:  # the unique s3_path index caught a concurrent start
            if await BackupLog.exists().where(BackupLog.s3_path == key):
                raise Conflict(f"filename: {key} is already used by another backup") from exc
            raise

        if req.multipart:
            try:
                upload_id = await _storage_call(
                    lambda: self.storage.create_multipart(key, checksum=req.part_checksum)
                )
            except Exception:
                await BackupLog.delete().where(BackupLog.id == log_id)
                raise
            await BackupLog.update({BackupLog.upload_id: upload_id}).where(BackupLog.id == log_id)
            await self._started(agent, log_id, config_id, run_request)
            return str(log_id), UploadInfo(
                method="MULTIPART",
                upload_id=upload_id,
                part_size=self.settings.multipart_part_size,
                max_parts=MAX_PARTS,
                expires_at=iso(self._expires()) or "",
                s3_path=key,
                part_checksum=req.part_checksum,
            )
        await self._started(agent, log_id, config_id, run_request)
        presigned = self.storage.presign_put(
            key,
            expires_in=self.settings.presign_seconds,
            size=req.size,
            sha256=req.sha256.lower() if req.sha256 else None,
        )
        return str(log_id), UploadInfo(
            method="PUT",
            url=presigned.url,
            headers=dict(presigned.headers),
            expires_at=iso(presigned.expires_at) or "",
            s3_path=key,
        )

    async def _started(
        self,
        agent: AgentIdentity,
        log_id: uuid.UUID,
        config_id: uuid.UUID,
        run_request: uuid.UUID | None,
    ) -> None:
        if run_request is not None:
            await mark_run_started(run_request, log_id)
        self._publish(
            {"id": log_id, "user": agent.user_id, "config": config_id, "agent": agent.id},
            "running",
        )

    async def progress(self, agent: AgentIdentity, req: ProgressRequest) -> None:
        """Keep the latest progress event on the running backup and show it on the owner's pages;
        a run whose log is not open yet (``configId``) is only shown, never stored."""
        if (req.log_id is None) == (req.config_id is None):
            raise InvalidInput(
                "send exactly one of logId (a running backup) and configId (a run whose log is "
                "not open yet)",
                field="logId" if req.log_id is not None else "configId",
            )
        event: dict[str, Any] = {
            k: v for k, v in msgspec.to_builtins(req).items() if k not in ("logId", "configId")
        }
        event["at"] = iso(utcnow())
        if req.config_id is not None:
            await self._config_progress(agent, req.config_id, event)
            return
        assert req.log_id is not None
        row = await self._agent_log(agent, req.log_id)
        if row["status"] != "running":
            raise Conflict(f"logId: this backup is already {row['status']}")
        await BackupLog.update({BackupLog.progress: event}).where(
            (BackupLog.id == row["id"]) & (BackupLog.status == "running")
        )
        if self.live is not None:
            self.live.to_user(
                agent.user_id,
                {
                    "type": "progress",
                    "backupId": str(row["id"]),
                    "configId": str(row["config"]) if row["config"] else None,
                    "agentId": str(agent.id),
                    **event,
                },
            )

    async def _config_progress(
        self, agent: AgentIdentity, config_id: str, event: dict[str, Any]
    ) -> None:
        """Progress before ``backup/start`` (the scan; a small archive being built): published to
        the owner's pages with ``backupId: null``, and not kept anywhere (the next one follows
        within a second or so; the backup's own progress and events supersede it)."""
        if event["phase"] not in PRE_LOG_PHASES:
            raise InvalidInput(
                f"phase: with configId only {' or '.join(PRE_LOG_PHASES)} (the log is not open "
                f"yet); send logId for {event['phase']}",
                field="phase",
            )
        try:
            cid = uuid.UUID(config_id)
        except ValueError:
            raise NotFound("configId: no such config assigned to this agent") from None
        if not await BackupConfig.exists().where(
            (BackupConfig.id == cid)
            & (BackupConfig.agent == agent.id)
            & (BackupConfig.user == agent.user_id)
            & (BackupConfig.execution_mode == "agent")
        ):
            raise NotFound("configId: no such config assigned to this agent")
        if self.live is not None:
            self.live.to_user(
                agent.user_id,
                {
                    "type": "progress",
                    "backupId": None,
                    "configId": str(cid),
                    "agentId": str(agent.id),
                    **event,
                },
            )

    async def _running_multipart(self, agent: AgentIdentity, log_id: str) -> dict[str, Any]:
        row = await self._agent_log(agent, log_id)
        if row["status"] != "running":
            raise Conflict(f"logId: this backup is already {row['status']}")
        if row["upload_state"] not in ("multipart", "assembled") or not row["upload_id"]:
            raise Conflict("logId: this backup was not started with multipart: true")
        return row

    async def part_url(
        self,
        agent: AgentIdentity,
        log_id: str,
        part_number: int,
        size: int,
        sha256: str | None,
        crc32: str | None = None,
    ) -> PartUrl:
        row = await self._running_multipart(agent, log_id)
        if row["upload_state"] != "multipart":
            raise Conflict("logId: the upload is already assembled")
        sha256, crc32 = _part_checksum(row, sha256, crc32, "")
        presigned = self.storage.presign_part(
            row["s3_path"],
            row["upload_id"],
            part_number,
            expires_in=self.settings.presign_seconds,
            size=size,
            sha256=sha256,
            crc32=crc32,
        )
        return PartUrl(
            part_number=part_number,
            url=presigned.url,
            method="PUT",
            headers=dict(presigned.headers),
            expires_at=iso(presigned.expires_at) or "",
        )

    async def upload_complete(
        self, agent: AgentIdentity, log_id: str, parts: list[UploadedPart]
    ) -> int:
        row = await self._running_multipart(agent, log_id)
        if row["upload_state"] == "assembled":
            return int(row["size"] or 0)
        numbers = [p.part_number for p in parts]
        if numbers != sorted(set(numbers)):
            raise InvalidInput("parts: part numbers must be unique and ascending", field="parts")
        completed = [
            CompletedPart(
                p.part_number,
                p.etag,
                *_part_checksum(row, p.sha256, p.crc32, f"parts[{i}].", p.part_number),
            )
            for i, p in enumerate(parts)
        ]
        try:
            info: ObjectInfo = await _storage_call(
                lambda: self.storage.complete_multipart(row["s3_path"], row["upload_id"], completed)
            )
        except NoSuchUpload:
            raise Conflict(
                "logId: the multipart upload no longer exists (aborted or expired)"
            ) from None
        except StorageInvalidParts as exc:
            raise InvalidInput(f"parts: {exc}", field="parts") from exc
        await BackupLog.update(
            {
                BackupLog.upload_state: "assembled",
                BackupLog.size: info.size,
                BackupLog.sha256: info.sha256,
            }
        ).where(BackupLog.id == row["id"])
        return info.size

    async def upload_abort(self, agent: AgentIdentity, log_id: str, reason: str) -> None:
        row = await self._agent_log(agent, log_id)
        if row["status"] == "completed":
            raise Conflict("logId: this backup already completed; it cannot be aborted")
        await self._abort_upload(row)
        if row["status"] == "running":
            await self._finish(row, status="failed", error=reason or "aborted by the agent")

    async def _abort_upload(self, row: dict[str, Any]) -> None:
        if row["upload_state"] == "multipart" and row["upload_id"]:
            try:
                await self.storage.abort_multipart(row["s3_path"], row["upload_id"])
            except NoSuchUpload:
                pass
            except ObjectStoreError:
                log.warning(
                    "could not abort multipart upload of log %s; storage lifecycle rules "
                    "will clean it up",
                    row["id"],
                )
                return
            await BackupLog.update({BackupLog.upload_state: "aborted"}).where(
                BackupLog.id == row["id"]
            )

    async def _finish(
        self,
        row: dict[str, Any],
        *,
        status: str,
        error: str | None = None,
        req: CompleteRequest | None = None,
        info: ObjectInfo | None = None,
    ) -> bool:
        """Move a running log to its final state; False when another request finished it first."""
        values: dict[Any, Any] = {
            BackupLog.status: status,
            BackupLog.error: error,
            BackupLog.completed_at: utcnow(),
        }
        if req is not None:
            values.update(
                {
                    BackupLog.files_processed: req.files_processed,
                    BackupLog.bytes_transferred: req.bytes_transferred,
                    BackupLog.duration_ms: req.duration,
                    BackupLog.errors: _errors_json(list(req.errors)),
                }
            )
        if info is not None:
            values[BackupLog.size] = info.size
            values[BackupLog.sha256] = req.sha256.lower() if req and req.sha256 else info.sha256
        updated = (
            await BackupLog.update(values)
            .where((BackupLog.id == row["id"]) & (BackupLog.status == "running"))
            .returning(BackupLog.id)
        )
        if not updated:
            return False
        self._publish(row, status, error)
        if row["agent"]:
            await Agent.update({Agent.last_backup_failed: status == "failed"}).where(
                Agent.id == row["agent"]
            )
        return True

    async def complete(self, agent: AgentIdentity, req: CompleteRequest) -> str:
        """Record the agent's report; returns the log's final status (idempotent on retries)."""
        row = await self._agent_log(agent, req.log_id)
        if row["status"] != "running":
            return self._already_finished(row, req.status)

        if req.status == "failed":
            await self._abort_upload(row)
            await self._finish(
                row, status="failed", error=req.error or "the agent reported a failure", req=req
            )
            return self._already_finished(await self._agent_log(agent, req.log_id), req.status)

        if row["upload_state"] == "multipart":
            raise Conflict(
                "logId: the multipart upload is not assembled yet: call "
                "/api/agent/backup/upload/complete first"
            )
        reason = None
        info = await _storage_call(lambda: self.storage.head(row["s3_path"]))
        reported = req.size if req.size is not None else req.bytes_transferred
        expected_sha = (req.sha256 or row["expected_sha256"] or "").lower() or None
        if info is None:
            reason = "the uploaded object is not in storage"
        elif reported is None:
            reason = "the agent reported no size (size or bytesTransferred) to verify against"
        elif info.size != reported:
            reason = (
                f"size mismatch: storage holds {info.size} bytes, the agent reported {reported}"
            )
        elif row["expected_size"] is not None and info.size != row["expected_size"]:
            reason = (
                f"size mismatch: storage holds {info.size} bytes, backup/start declared "
                f"{row['expected_size']}"
            )
        elif expected_sha and info.sha256 and info.sha256.lower() != expected_sha:
            reason = "sha256 mismatch: the stored object differs from what the agent sent"
        elif req.sha256 and row["expected_sha256"] and req.sha256.lower() != row["expected_sha256"]:
            reason = "sha256 mismatch: complete and start reported different checksums"
        if reason is not None:
            await self._finish(row, status="failed", error=reason, req=req, info=info)
            final = await self._agent_log(agent, req.log_id)
            if final["status"] == "failed":
                raise Conflict(f"backup failed verification: {final['error']}")
            return str(final["status"])
        await self._finish(row, status="completed", req=req, info=info)
        return self._already_finished(await self._agent_log(agent, req.log_id), req.status)

    @staticmethod
    def _already_finished(row: dict[str, Any], requested: str) -> str:
        if row["status"] == requested:
            return str(row["status"])
        raise Conflict(
            f"logId: this backup is already {row['status']}"
            + (f" ({row['error']})" if row["error"] else "")
        )

    # --- restores ----------------------------------------------------------------------------

    async def _restorable_configs(self, agent: AgentIdentity) -> list[uuid.UUID]:
        rows = await BackupConfig.select(BackupConfig.id).where(
            (BackupConfig.agent == agent.id) & (BackupConfig.user == agent.user_id)
        )
        return [r["id"] for r in rows]

    async def restorable(
        self, agent: AgentIdentity, config_id: str | None = None, limit: int = 100
    ) -> list[AgentBackupOut]:
        """Completed backups of the configs assigned to this agent, whoever made them (a
        replacement laptop restores what the old one backed up), newest first."""
        configs = await self._restorable_configs(agent)
        if config_id:
            wanted = _filter_uuid(config_id, "configId")
            configs = [c for c in configs if c == wanted]
        if not configs:
            return []
        rows = (
            await BackupLog.select()
            .where(
                (BackupLog.user == agent.user_id)
                & (BackupLog.config.is_in(configs))
                & (BackupLog.status == "completed")
            )
            .order_by(BackupLog.started_at, ascending=False)
            .limit(limit)
        )
        return [
            AgentBackupOut(
                id=str(r["id"]),
                config_id=str(r["config"]) if r["config"] else None,
                config_name=r["config_name"],
                filename=r["filename"],
                s3_path=r["s3_path"],
                size=r["size"],
                sha256=r["sha256"],
                files_processed=r["files_processed"],
                started_at=iso(r["started_at"]) or "",
                completed_at=iso(r["completed_at"]),
            )
            for r in rows
        ]

    def _download(self, row: dict[str, Any]) -> DownloadInfo:
        presigned = self.storage.presign_get(
            row["s3_path"], expires_in=self.settings.presign_seconds, download_name=row["filename"]
        )
        return DownloadInfo(
            backup_id=str(row["id"]),
            url=presigned.url,
            method="GET",
            expires_at=iso(presigned.expires_at) or "",
            size=row["size"],
            sha256=row["sha256"],
            filename=row["filename"],
            s3_path=row["s3_path"],
        )

    async def restore(self, agent: AgentIdentity, backup_id: str) -> DownloadInfo:
        configs = await self._restorable_configs(agent)
        row = (
            await BackupLog.select()
            .where(
                (BackupLog.id == parse_uuid(backup_id, "backup"))
                & (BackupLog.user == agent.user_id)
            )
            .first()
        )
        if row is None or row["config"] not in configs:
            raise NotFound("backupId: no such backup of a config assigned to this agent")
        if row["status"] != "completed":
            raise Conflict(f"backupId: this backup is {row['status']}, there is nothing to restore")
        return self._download(row)

    async def download(self, user: CurrentUser, backup_id: str) -> DownloadInfo:
        row = (
            await BackupLog.select()
            .where((BackupLog.id == parse_uuid(backup_id, "backup")) & (BackupLog.user == user.id))
            .first()
        )
        if row is None:
            raise NotFound("backup not found")
        if row["status"] != "completed":
            raise Conflict(
                f"this backup is {row['status']}: only completed backups can be downloaded"
            )
        return self._download(row)

    # --- owner side -------------------------------------------------------------------------

    @staticmethod
    def _out(row: dict[str, Any]) -> BackupOut:
        errors = row["errors"]
        if isinstance(errors, str):
            errors = msgspec.json.decode(errors)
        return BackupOut(
            id=str(row["id"]),
            config_id=str(row["config"]) if row["config"] else None,
            config_name=row["config_name"],
            agent_id=str(row["agent"]) if row["agent"] else None,
            status=row["status"],
            s3_path=row["s3_path"],
            filename=row["filename"],
            filesize=row["filesize_estimate"],
            size=row["size"] if row["status"] == "completed" else None,
            sha256=row["sha256"] if row["status"] == "completed" else None,
            files_processed=row["files_processed"],
            bytes_transferred=row["bytes_transferred"],
            duration=row["duration_ms"],
            errors=list(errors or []),
            error=row["error"],
            started_at=iso(row["started_at"]) or "",
            completed_at=iso(row["completed_at"]),
            deleted_at=iso(row.get("deleted_at")),
            trigger=row.get("trigger") or "manual",
            attempt=row.get("attempt") or 1,
            max_attempts=row.get("max_attempts") or 1,
            progress=_json_object(row.get("progress")) if row["status"] == "running" else None,
        )

    async def list_backups(
        self,
        user: CurrentUser,
        *,
        config_id: str | None = None,
        agent_id: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[BackupOut], int]:
        where: Combinable = BackupLog.user == user.id
        if config_id:
            where = where & (BackupLog.config == _filter_uuid(config_id, "configId"))
        if agent_id:
            where = where & (BackupLog.agent == _filter_uuid(agent_id, "agentId"))
        if status:
            where = where & (BackupLog.status == status)
        if since:
            where = where & (BackupLog.started_at >= since)
        if until:
            where = where & (BackupLog.started_at < until)
        total = await BackupLog.count().where(where)
        rows = (
            await BackupLog.select()
            .where(where)
            .order_by(BackupLog.started_at, ascending=False)
            .limit(limit)
            .offset(offset)
        )
        return [self._out(r) for r in rows], total

    async def last_backups(self, user: CurrentUser) -> dict[str, ConfigLastBackups]:
        """Per config of this user: its newest backup and its newest completed backup.

        Two indexed lookups per config at most (one when the newest one completed); a user has
        tens of configs, not thousands."""
        configs = await BackupConfig.select(BackupConfig.id).where(BackupConfig.user == user.id)
        result: dict[str, ConfigLastBackups] = {}
        for config in configs:
            newest = await self._newest(user, config["id"], None)
            if newest is None or newest["status"] == "completed":
                completed = newest
            else:
                completed = await self._newest(user, config["id"], "completed")
            result[str(config["id"])] = ConfigLastBackups(
                config_id=str(config["id"]),
                last=self._out(newest) if newest else None,
                last_completed=self._out(completed) if completed else None,
            )
        return result

    @staticmethod
    async def _newest(
        user: CurrentUser, config_id: uuid.UUID, status: str | None
    ) -> dict[str, Any] | None:
        where: Combinable = (BackupLog.config == config_id) & (BackupLog.user == user.id)
        if status:
            where = where & (BackupLog.status == status)
        row: dict[str, Any] | None = (
            await BackupLog.select()
            .where(where)
            .order_by(BackupLog.started_at, ascending=False)
            .first()
        )
        return row

    async def totals(self, user: CurrentUser) -> BackupTotals:
        """Verified bytes in storage (completed backups) and how many backups are in each state."""
        rows = (
            await BackupLog.select(
                BackupLog.status,
                Count(BackupLog.id).as_alias("n"),
                Sum(BackupLog.size).as_alias("bytes"),
            )
            .where(BackupLog.user == user.id)
            .group_by(BackupLog.status)
        )
        by_status = {r["status"]: r for r in rows}

        def count(status: str) -> int:
            return int(by_status[status]["n"]) if status in by_status else 0

        completed = by_status.get("completed")
        return BackupTotals(
            stored_bytes=int(completed["bytes"] or 0) if completed else 0,
            completed=count("completed"),
            failed=count("failed"),
            running=count("running"),
        )

    async def get(self, user: CurrentUser, backup_id: str) -> BackupOut:
        row = (
            await BackupLog.select()
            .where((BackupLog.id == parse_uuid(backup_id, "backup")) & (BackupLog.user == user.id))
            .first()
        )
        if row is None:
            raise NotFound("backup not found")
        return self._out(row)


def _part_checksum(
    row: dict[str, Any],
    sha256: str | None,
    crc32: str | None,
    prefix: str,
    part_number: int | None = None,
) -> tuple[str | None, str | None]:
    """``(sha256, crc32)`` of a part, exactly the one the upload was started with
    (``partChecksum``), else :class:`InvalidInput` naming the field."""
    expected = row.get("part_checksum") or "sha256"
    other = "sha256" if expected == "crc32" else "crc32"
    given = {"sha256": sha256, "crc32": crc32}
    where = f" (part {part_number})" if part_number is not None else ""
    if given[other] is not None:
        raise InvalidInput(
            f"{prefix}{other}: this upload's parts carry {expected}{where}, not {other}",
            field=f"{prefix}{other}",
        )
    if given[expected] is None:
        raise InvalidInput(
            f"{prefix}{expected}: required for this upload's parts{where}",
            field=f"{prefix}{expected}",
        )
    return (sha256.lower(), None) if sha256 is not None else (None, crc32)


def _json_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return None
    return value if isinstance(value, dict) else None


def _filter_uuid(value: str, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInput(f"{name}: not a valid id", field=name) from None
