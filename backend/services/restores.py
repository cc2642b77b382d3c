"""Restores and downloads: which completed backups a caller may fetch, and a signed GET for one.

An agent may restore any completed backup of a config assigned to it, whoever made it (a replacement
laptop restores what the old one backed up); the owner may download any of their completed backups.
"""

from __future__ import annotations

import uuid
from typing import Any

from backend.backups.tables import BackupConfig, BackupLog
from backend.errors import Conflict, NotFound
from backend.schemas import AgentBackupOut, DownloadInfo
from backend.services.accounts import CurrentUser
from backend.services.agents import AgentIdentity, filter_uuid, parse_uuid
from backend.services.clock import iso
from backend.services.history import user_log
from backend.settings import Settings
from backend.storage import Storage

__all__ = ["RestoreService"]


class RestoreService:
    """Finds what may be restored and signs the GET for it; nothing here changes a row."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage

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
            wanted = filter_uuid(config_id, "configId")
            configs = [c for c in configs if c == wanted]
        if not configs:
            return []
        rows = (
            await BackupLog.select()
            .where(
                (BackupLog.user == agent.user_id)
                & (BackupLog.config.is_in(configs))
                & (BackupLog.status == "completed")
                # A snapshot is in its own agent's encrypted repository: only that agent reads it.
                & ((BackupLog.backup_type != "incremental") | (BackupLog.agent == agent.id))
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
                type=r.get("backup_type") or "full",
                new_bytes=r.get("new_bytes"),
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
        """A signed GET of a completed backup of a config assigned to this agent."""
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
        if row.get("backup_type") == "incremental":
            if row["agent"] != agent.id:
                raise NotFound("backupId: no such backup of a config assigned to this agent")
            raise Conflict(
                "backupId: this backup is a snapshot; read its objects with /api/agent/repo/read"
            )
        return self._download(row)

    async def download(self, user: CurrentUser, backup_id: str) -> DownloadInfo:
        """A signed GET of one of the owner's completed backups (the download button)."""
        row = await user_log(user, backup_id)
        if row["status"] != "completed":
            raise Conflict(
                f"this backup is {row['status']}: only completed backups can be downloaded"
            )
        if row.get("backup_type") == "incremental":
            raise Conflict(
                "this is an incremental backup: its files are encrypted on the agent and are "
                "restored there (backapp-agent restore, or Restore Files in the tray app)"
            )
        return self._download(row)
