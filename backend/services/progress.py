"""Progress of a run: kept on its running backup (the latest event) and shown live on the owner's pages.

Agents send it by ``POST /api/agent/backup/progress`` or over their WebSocket; a run whose log is
not open yet (the scan, a small archive being built) names its config instead and is only shown.
"""

from __future__ import annotations

from typing import Any

import msgspec

from backend.backups.tables import BackupLog
from backend.errors import Conflict, InvalidInput
from backend.run_schemas import ProgressRequest
from backend.services.agents import AgentIdentity, assigned_config
from backend.services.backups import BackupService
from backend.services.clock import iso, utcnow
from backend.services.pubsub import LiveEvents

__all__ = ["PRE_LOG_PHASES", "ProgressService"]

PRE_LOG_PHASES = ("scanning", "archiving")
"""The phases a run reports before its log is open (with ``configId``)."""


class ProgressService:
    """Records and publishes progress events of running backups."""

    def __init__(self, backups: BackupService, live: LiveEvents | None) -> None:
        self.backups = backups
        self.live = live

    async def record(self, agent: AgentIdentity, req: ProgressRequest) -> None:
        """Keep the latest progress event on the running backup and show it on the owner's pages;
        a run whose log is not open yet (``configId``) is only shown, never stored."""
        if (req.log_id is None) == (req.config_id is None):
            raise InvalidInput(
                "send exactly one of logId (a running backup) and configId (a run whose log is "
                "not open yet)",
                field="logId" if req.log_id is not None else "configId",
            )
        event: dict[str, Any] = {
            k: v
            for k, v in msgspec.to_builtins(req).items()
            if k not in ("logId", "configId") and not (k in ("waiting", "limit") and v is None)
        }
        event["at"] = iso(utcnow())
        if req.config_id is not None:
            await self._config_progress(agent, req.config_id, event)
            return
        assert req.log_id is not None
        row = await self.backups.find_log(agent, req.log_id)
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
        cid, _ = await assigned_config(agent, config_id)
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
