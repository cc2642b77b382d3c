"""Request and response shapes of restores asked for from the web console
(``docs/agent-api.md``, "Restores from the web console"): the owner's
``POST /api/backups/{id}/restore`` and ``GET /api/restores/{id}``, and the agent's side."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from backend.schemas import Camel, NonNegative, Uuid

__all__ = [
    "MAX_PATHS",
    "RestoreJobCreated",
    "RestoreJobFinish",
    "RestoreJobOut",
    "RestoreJobProgress",
    "RestoreJobRequest",
    "RestoreJobResponse",
    "RestoreJobStatus",
    "RestoreJobTicket",
]

MAX_PATHS = 100
Conflict = Literal["keep-both", "overwrite"]
RestoreJobStatus = Literal["pending", "running", "completed", "failed", "expired"]
PathPattern = Annotated[str, Meta(min_length=1, max_length=4096)]


class RestoreJobRequest(Camel, forbid_unknown_fields=True):
    agent_id: Uuid
    target: Annotated[str, Meta(min_length=1, max_length=4096)]
    """An absolute folder on the target machine."""
    paths: Annotated[list[PathPattern], Meta(max_length=MAX_PATHS)] = []
    """``backapp-agent restore --path`` patterns; empty: everything."""
    conflict: Conflict = "keep-both"


class RestoreJobCreated(Camel):
    id: str
    status: RestoreJobStatus = "pending"
    success: bool = True


class RestoreJobOut(Camel):
    id: str
    backup_id: str
    agent_id: str
    agent_name: str
    paths: list[str]
    target: str
    conflict: Conflict
    status: RestoreJobStatus
    files: int
    bytes: int
    renamed: int
    replaced: int
    unchanged: int
    skipped: int
    error: str | None
    created_at: str
    expires_at: str
    started_at: str | None
    finished_at: str | None


class RestoreJobResponse(Camel):
    restore: RestoreJobOut
    success: bool = True


class RestoreJobTicket(Camel):
    """What the agent gets when it starts a job: what to restore, where, and how."""

    id: str
    backup_id: str
    paths: list[str]
    target: str
    conflict: Conflict


class RestoreJobProgress(Camel):
    files: NonNegative = 0
    bytes: NonNegative = 0


class RestoreJobFinish(Camel, forbid_unknown_fields=True):
    status: Literal["completed", "failed"]
    files: NonNegative = 0
    bytes: NonNegative = 0
    renamed: NonNegative = 0
    replaced: NonNegative = 0
    unchanged: NonNegative = 0
    skipped: NonNegative = 0
    error: Annotated[str, Meta(max_length=4000)] | None = None
