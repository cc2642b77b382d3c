"""Wire types of the restore extension of the agent API (``docs/agent-api.md``, "Extensions:
restores"), decoded with msgspec. Unknown fields are ignored."""

from __future__ import annotations

import msgspec

__all__ = ["BackupInfo", "RestoreTicket"]


class BackupInfo(msgspec.Struct, frozen=True, rename="camel"):
    """A completed backup this agent may restore (``GET /api/agent/backups``)."""

    id: str
    config_id: str = ""
    config_name: str = ""
    filename: str = ""
    s3_path: str = ""
    size: int | None = None
    sha256: str | None = None
    files_processed: int | None = None
    started_at: str | None = None
    completed_at: str | None = None
    status: str = "completed"


class RestoreTicket(msgspec.Struct, frozen=True, rename="camel"):
    """A pre-signed GET for one backup's object (``POST /api/agent/restore``)."""

    backup_id: str
    url: str
    size: int
    sha256: str | None
    """``None`` only for a backup whose storage could not tell (then only the size is checked)."""
    filename: str
    method: str = "GET"
    expires_at: str | None = None
    s3_path: str = ""
