"""Restores by the server's own CLI (``backapp restore``): any completed backup in the database."""

from __future__ import annotations

import uuid
from typing import Any

from backend.backups.tables import BackupLog
from backend.errors import Conflict, NotFound
from backend.settings import Settings
from backend.storage import Storage
from desktop_agent.engine import NotFoundError
from desktop_agent.engine.protocol import BackupInfo, RestoreTicket

__all__ = ["ServerRestoreSource", "load_restorable"]


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
