"""Backups being made: opening an upload, its parts and progress, and verifying what landed.

A backup is ``completed`` only when its object is in storage and its size (and SHA-256, where the
storage can tell) match what the runner reported; otherwise it is ``failed`` with the reason.

Two runners make backups and both open their upload with :meth:`BackupService.open_upload`: an agent
through ``POST /api/agent/backup/start`` (:meth:`BackupService.start` checks what it asks for
first), and the server itself for server-side configs (:mod:`backend.services.server_side`). What
the owner reads afterwards is :mod:`backend.services.history`; restores are
:mod:`backend.services.restores`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

import msgspec

from backend.backups.tables import BackupLog, Lease
from backend.errors import Conflict, InvalidInput, StorageUnavailable
from backend.run_schemas import (
    PartUrl,
    UploadedPart,
)
from backend.schemas import (
    CompleteRequest,
    StartRequest,
    UploadInfo,
)
from backend.services.agents import AgentIdentity, agents_row, assigned_config, parse_uuid
from backend.services.backup_start import NewBackup, agent_backup
from backend.services.catalog.metadata import write_quietly
from backend.services.clock import iso, utcnow
from backend.services.keys import backup_key
from backend.services.last_backup import refresh_last_backups
from backend.services.leases import SERVER_OWNER, agent_owner, config_lease_name
from backend.services.pubsub import LiveEvents
from backend.services.runs import mark_run_started
from backend.settings import Settings
from backend.storage import (
    CompletedPart,
    NoSuchUpload,
    ObjectChecksumMismatch,
    ObjectInfo,
    ObjectStoreError,
    Storage,
)
from backend.storage import InvalidParts as StorageInvalidParts

__all__ = [
    "AGENT_FEATURES",
    "BackupService",
    "NewBackup",
    "errors_json",
    "storage_call",
]

log = logging.getLogger("backapp.backups")

AGENT_FEATURES = ("progress-by-config", "part-crc32", "snapshots", "backup-cancelled")
"""Extensions an agent may use, listed in the heartbeat response (``features``)."""
"""The phases a run reports by ``configId``, before its log is open."""

SINGLE_PUT_LIMIT = 5 * 1024**3
MAX_PARTS = 10000
T = TypeVar("T")


async def storage_call(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a storage call; an unreachable store becomes ``StorageUnavailable`` (a 503 with the
    reason). Shared with the snapshot service, which signs its objects through the same store."""
    try:
        return await fn()
    except (NoSuchUpload, StorageInvalidParts):
        raise
    except ObjectStoreError as exc:
        raise StorageUnavailable(f"object storage is unavailable: {exc}") from exc


def errors_json(errors: list[Any]) -> list[Any]:
    """An agent's per-file errors as stored on a log (a bare string becomes ``{"message": …}``)."""
    out: list[Any] = []
    for item in errors:
        if isinstance(item, str):
            out.append({"message": item})
        else:
            out.append(msgspec.to_builtins(item))
    return out


class BackupService:
    """Opens uploads, signs their parts, keeps their progress and verifies them on completion."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        live: LiveEvents | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``clock`` stamps when a backup starts and ends (a test's server runner controls it)."""
        self.settings = settings
        self.storage = storage
        self.live = live
        self.clock = clock

    async def _publish(self, row: dict[str, Any], status: str, error: str | None = None) -> None:
        """A backup started or ended: refresh its config's newest backup, tell the owner's pages."""
        await refresh_last_backups([row.get("config")])
        if self.live is not None:
            self.live.backup_changed(row, status, error)

    async def find_log(self, agent: AgentIdentity, log_id: str) -> dict[str, Any]:
        """The log ``log_id`` if this runner made it, else :class:`NotFound`. Every call on a
        running backup finds its log here (the server's own runner scopes it otherwise)."""
        return await agents_row(
            BackupLog,
            agent,
            parse_uuid(log_id, "backup log"),
            "logId: no such backup log for this agent",
        )

    # --- opening an upload --------------------------------------------------------------------

    async def start(self, agent: AgentIdentity, req: StartRequest) -> tuple[str, UploadInfo]:
        """``POST /api/agent/backup/start``: check the config, attempts and request the agent
        names, then :meth:`open_upload`."""
        config_id, config_name = await assigned_config(agent, req.config_id)
        new = await agent_backup(agent, req, config_id, config_name, req.filename)
        return await self.open_upload(
            replace(
                new,
                filesize=req.filesize,
                multipart=req.multipart,
                size=req.size,
                sha256=req.sha256,
                part_checksum=req.part_checksum,
            )
        )

    async def open_upload(self, new: NewBackup) -> tuple[str, UploadInfo]:
        """Open the upload of a new backup; returns its log id and how to upload.

        Builds the object key (refusing a bad file name), refuses a key that a backup or an
        object already holds, records the ``running`` log (tied to the config lease its runner
        holds, see :mod:`backend.services.orphans`), creates the multipart upload or signs the
        single PUT, marks the Back Up Now request it answers as started and tells the owner's
        pages. A storage that does not answer is :class:`StorageUnavailable` and leaves no log.
        """
        key = backup_key(
            user_id=new.user_id,
            agent_id=new.agent_id,
            config_id=new.config_id,
            filename=new.filename,
        )
        if not new.multipart and new.size is not None and new.size > SINGLE_PUT_LIMIT:
            raise InvalidInput(
                "size: a single upload is limited to 5 GiB; start with multipart: true",
                field="size",
            )
        if await BackupLog.exists().where(BackupLog.s3_path == key):
            raise Conflict(f"filename: {key} is already used by another backup; pick a new name")
        if await storage_call(lambda: self.storage.head(key)) is not None:
            raise Conflict(f"filename: {key} already holds a backup; pick a new name")

        sha256 = new.sha256.lower() if new.sha256 else None
        lease = (
            await Lease.select(Lease.token)
            .where(
                (Lease.name == config_lease_name(new.config_id))
                & (
                    Lease.owner
                    == (agent_owner(new.agent_id) if new.agent_id is not None else SERVER_OWNER)
                )
                & (Lease.expires_at > utcnow())
            )
            .first()
        )
        log_id = uuid.uuid4()
        row = self._running_row(
            new,
            log_id,
            key,
            expected_size=new.size,
            expected_sha256=sha256,
            upload_state="multipart" if new.multipart else "single",
            part_checksum=new.part_checksum if new.multipart else "sha256",
            lease_token=lease["token"] if lease is not None else None,
        )
        try:
            await row.save()
        except Exception as exc:  # the unique s3_path index caught a concurrent start
            if await BackupLog.exists().where(BackupLog.s3_path == key):
                raise Conflict(f"filename: {key} is already used by another backup") from exc
            raise

        if new.multipart:
            try:
                upload_id = await storage_call(
                    lambda: self.storage.create_multipart(key, checksum=new.part_checksum)
                )
            except Exception:
                await BackupLog.delete().where(BackupLog.id == log_id)
                raise
            await BackupLog.update({BackupLog.upload_id: upload_id}).where(BackupLog.id == log_id)
            await self._started(new, log_id)
            return str(log_id), UploadInfo(
                method="MULTIPART",
                upload_id=upload_id,
                part_size=self.settings.multipart_part_size,
                max_parts=MAX_PARTS,
                expires_at=iso(utcnow() + timedelta(seconds=self.settings.presign_seconds)) or "",
                s3_path=key,
                part_checksum=new.part_checksum,
            )
        await self._started(new, log_id)
        presigned = self.storage.presign_put(
            key, expires_in=self.settings.presign_seconds, size=new.size, sha256=sha256
        )
        return str(log_id), UploadInfo(
            method="PUT",
            url=presigned.url,
            headers=dict(presigned.headers),
            expires_at=iso(presigned.expires_at) or "",
            s3_path=key,
        )

    async def open_log(
        self,
        new: NewBackup,
        *,
        log_id: uuid.UUID,
        key: str,
        backup_type: str,
        lease_token: str | None = None,
    ) -> None:
        """Record the ``running`` log of a backup that uploads no single object (a snapshot,
        whose objects the snapshot service signs), mark the Back Up Now request it answers as
        started and tell the owner's pages."""
        row = self._running_row(new, log_id, key, backup_type=backup_type, lease_token=lease_token)
        await row.save()
        await self._started(new, log_id)

    def _running_row(self, new: NewBackup, log_id: uuid.UUID, key: str, **kind: Any) -> BackupLog:
        """The ``running`` log row of a new backup; ``kind`` adds the columns its kind sets."""
        return BackupLog(
            id=log_id,
            user=new.user_id,
            config=new.config_id,
            agent=new.agent_id,
            config_name=new.config_name,
            status="running",
            s3_path=key,
            filename=new.filename,
            filesize_estimate=new.filesize,
            errors=[],
            started_at=self.clock(),
            trigger=new.trigger,
            attempt=new.attempt,
            max_attempts=new.max_attempts,
            run_request=str(new.run_request) if new.run_request is not None else None,
            **kind,
        )

    async def _started(self, new: NewBackup, log_id: uuid.UUID) -> None:
        if new.run_request is not None:
            await mark_run_started(new.run_request, log_id)
        row = {"id": log_id, "user": new.user_id, "config": new.config_id, "agent": new.agent_id}
        await self._publish(row, "running")

    # --- while it runs: the parts of a multipart upload -------------------------------------

    async def _running_multipart(self, agent: AgentIdentity, log_id: str) -> dict[str, Any]:
        row = await self.find_log(agent, log_id)
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
            expires_in=self.settings.presign_part_seconds,
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
        self,
        agent: AgentIdentity,
        log_id: str,
        parts: list[UploadedPart],
        *,
        object_crc32: str | None = None,
    ) -> int:
        """Assemble a multipart upload. Each part's checksum was signed into its URL (storage
        checked the body) and is checked again by storage against the part list here. With
        ``object_crc32`` (CRC32 parts), the whole object must have that CRC32: storage checks it
        where it can and the server compares what storage reports; another object fails the
        backup (409) and is deleted."""
        row = await self._running_multipart(agent, log_id)
        if row["upload_state"] == "assembled":
            return int(row["size"] or 0)
        numbers = [p.part_number for p in parts]
        if numbers != sorted(set(numbers)):
            raise InvalidInput("parts: part numbers must be unique and ascending", field="parts")
        if object_crc32 is not None and row.get("part_checksum") != "crc32":
            raise InvalidInput(
                "objectCrc32: only for an upload whose parts carry crc32", field="objectCrc32"
            )
        completed = [
            CompletedPart(
                p.part_number,
                p.etag,
                *_part_checksum(row, p.sha256, p.crc32, f"parts[{i}].", p.part_number),
            )
            for i, p in enumerate(parts)
        ]
        try:
            info: ObjectInfo = await storage_call(
                lambda: self.storage.complete_multipart(
                    row["s3_path"], row["upload_id"], completed, object_crc32=object_crc32
                )
            )
        except NoSuchUpload:
            raise Conflict(
                "logId: the multipart upload no longer exists (aborted or expired)"
            ) from None
        except ObjectChecksumMismatch as exc:
            await self._refuse_assembled(row, str(exc), delete=False)
        except StorageInvalidParts as exc:
            raise InvalidInput(f"parts: {exc}", field="parts") from exc
        if object_crc32 is not None:
            if info.crc32 is None:
                log.warning(
                    "storage reported no full-object CRC32 for backup %s: its whole-object "
                    "checksum could not be compared",
                    row["id"],
                )
            elif info.crc32 != object_crc32:
                await self._refuse_assembled(
                    row,
                    f"storage assembled an object whose CRC32 is {info.crc32}, not the "
                    f"{object_crc32} the agent computed over what it sent",
                    delete=True,
                )
        await BackupLog.update(
            {
                BackupLog.upload_state: "assembled",
                BackupLog.size: info.size,
                BackupLog.sha256: info.sha256,
            }
        ).where(BackupLog.id == row["id"])
        return info.size

    async def _refuse_assembled(
        self, row: dict[str, Any], reason: str, *, delete: bool
    ) -> NoReturn:
        """A multipart upload whose object is not what the agent streamed: the backup fails with
        the reason, the upload and (``delete``) the object are removed, and the agent gets 409."""
        error = f"CRC32 mismatch: {reason}"
        await self._abort_upload(row)
        if delete:
            try:
                await self.storage.delete(row["s3_path"])
            except ObjectStoreError:
                log.warning("could not delete the mismatching object of backup %s", row["id"])
        await self.finish(row, status="failed", error=error)
        raise Conflict(f"backup failed verification: {error}")

    async def upload_abort(self, agent: AgentIdentity, log_id: str, reason: str) -> None:
        row = await self.find_log(agent, log_id)
        if row["status"] == "completed":
            raise Conflict("logId: this backup already completed; it cannot be aborted")
        await self._abort_upload(row)
        if row["status"] == "running":
            await self.finish(row, status="failed", error=reason or "aborted by the agent")

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

    async def finish(
        self,
        row: dict[str, Any],
        *,
        status: str,
        error: str | None = None,
        req: CompleteRequest | None = None,
        info: ObjectInfo | None = None,
        values: dict[Any, Any] | None = None,
    ) -> bool:
        """Move a running log to its final state (with more ``values`` to set); False when
        another request finished it first. Tells the owner's pages and the agent's status."""
        values = {
            **(values or {}),
            BackupLog.status: status,
            BackupLog.error: error,
            BackupLog.completed_at: self.clock(),
        }
        if req is not None:
            values.update(
                {
                    BackupLog.files_processed: req.files_processed,
                    BackupLog.bytes_transferred: req.bytes_transferred,
                    BackupLog.duration_ms: req.duration,
                    BackupLog.errors: errors_json(list(req.errors)),
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
        await self._publish(row, status, error)
        if status == "completed":  # the metadata beside it, for a rebuild; never fatal
            await write_quietly(self.storage, self.settings.secret_key, row["id"])
        return True

    async def complete(self, agent: AgentIdentity, req: CompleteRequest) -> str:
        """Record the agent's report; returns the log's final status (idempotent on retries)."""
        row = await self.find_log(agent, req.log_id)
        if row["status"] != "running":
            return self._already_finished(row, req.status)

        if req.status in ("failed", "cancelled"):
            await self._abort_upload(row)
            default = "cancelled" if req.status == "cancelled" else "the agent reported a failure"
            await self.finish(row, status=req.status, error=req.error or default, req=req)
            return self._already_finished(await self.find_log(agent, req.log_id), req.status)

        if row["upload_state"] == "multipart":
            raise Conflict(
                "logId: the multipart upload is not assembled yet: call "
                "/api/agent/backup/upload/complete first"
            )
        reason = None
        info = await storage_call(lambda: self.storage.head(row["s3_path"]))
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
            await self.finish(row, status="failed", error=reason, req=req, info=info)
            final = await self.find_log(agent, req.log_id)
            if final["status"] == "failed":
                raise Conflict(f"backup failed verification: {final['error']}")
            return str(final["status"])
        await self.finish(row, status="completed", req=req, info=info)
        return self._already_finished(await self.find_log(agent, req.log_id), req.status)

    @staticmethod
    def _already_finished(row: dict[str, Any], requested: str) -> str:
        if row["status"] == requested:
            return str(row["status"])
        raise Conflict(
            f"logId: this backup is already {row['status']}"
            + (f" ({row['error']})" if row["error"] else "")
        )


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
