"""Restores and downloads: which completed backups a caller may fetch, and a signed GET for one.

An agent may restore any completed backup of a config assigned to it, whoever made it (a replacement
laptop restores what the old one backed up), and every completed backup made by an agent it
inherits (the owner's mark, :mod:`backend.services.inheritance`); the owner may download any of
their completed backups.
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
from backend.services.inheritance import readable_agent_ids, target_agent
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
        self,
        agent: AgentIdentity,
        config_id: str | None = None,
        limit: int = 100,
        agent_id: str | None = None,
    ) -> list[AgentBackupOut]:
        """Completed backups of the configs assigned to this agent, whoever made them (a
        replacement laptop restores what the old one backed up), newest first. With
        ``agent_id`` of an agent this one inherits: the completed backups that agent made (full
        archives and snapshots); 404 for any other agent."""
        made_by = await target_agent(agent, agent_id)
        if made_by != agent.id:
            where = (
                (BackupLog.user == agent.user_id)
                & (BackupLog.agent == made_by)
                & (BackupLog.status == "completed")
            )
            if config_id:
                where = where & (BackupLog.config == filter_uuid(config_id, "configId"))
        else:
            configs = await self._restorable_configs(agent)
            if config_id:
                wanted = filter_uuid(config_id, "configId")
                configs = [c for c in configs if c == wanted]
            if not configs:
                return []
            where = (
                (BackupLog.user == agent.user_id)
                & (BackupLog.config.is_in(configs))
                & (BackupLog.status == "completed")
                # A snapshot is in its own agent's encrypted repository: only that agent (and
                # those that inherit it, with agentId) reads it.
                & ((BackupLog.backup_type != "incremental") | (BackupLog.agent == agent.id))
            )
        rows = (
            await BackupLog.select()
            .where(where)
            .order_by(BackupLog.started_at, ascending=False)
            .limit(limit)
        )
        return [_backup_out(r) for r in rows]

    async def readable(self, agent: AgentIdentity, backup_id: str) -> dict[str, Any]:
        """The row of a backup this agent may read: of a config assigned to it (a snapshot only
        when it made it), or made by an agent it inherits. :class:`NotFound` otherwise."""
        row = (
            await BackupLog.select()
            .where(
                (BackupLog.id == parse_uuid(backup_id, "backup"))
                & (BackupLog.user == agent.user_id)
            )
            .first()
        )
        if row is not None:
            maker = row["agent"]
            if maker is not None and maker != agent.id:
                inherited = maker in await readable_agent_ids(agent.user_id, agent.id)
            else:
                inherited = False
            if inherited:
                return dict(row)
            if row["config"] in await self._restorable_configs(agent) and (
                row.get("backup_type") != "incremental" or maker == agent.id
            ):
                return dict(row)
        raise NotFound("backupId: no such backup of a config assigned to this agent")

    async def backup(self, agent: AgentIdentity, backup_id: str) -> AgentBackupOut:
        """One backup this agent may read (``GET /api/agent/backups/{id}``), whatever its
        status: the agent learns its type and whose repository holds it."""
        return _backup_out(await self.readable(agent, backup_id))

    def _download(self, row: dict[str, Any]) -> DownloadInfo:
        return self.signed_get(row)

    def signed_get(self, row: dict[str, Any]) -> DownloadInfo:
        """A signed GET of the object of backup ``row`` (whoever may read it was checked)."""
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
        """A signed GET of a completed backup of a config assigned to this agent, or made by an
        agent it inherits."""
        row = await self.readable(agent, backup_id)
        if row["status"] != "completed":
            raise Conflict(f"backupId: this backup is {row['status']}, there is nothing to restore")
        if row.get("backup_type") == "incremental":
            where = "" if row["agent"] == agent.id else f" (agentId {row['agent']})"
            raise Conflict(
                "backupId: this backup is a snapshot; read its objects with "
                f"/api/agent/repo/read{where}"
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


def _backup_out(r: dict[str, Any]) -> AgentBackupOut:
    return AgentBackupOut(
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
        status=r["status"],
        type=r.get("backup_type") or "full",
        new_bytes=r.get("new_bytes"),
        agent_id=str(r["agent"]) if r["agent"] else None,
    )
