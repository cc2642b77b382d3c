"""Request and response shapes of the agent's check and drill reports (``docs/agent-api.md``,
"Extensions: checks and restore drills"). Litestar checks these limits before a handler runs.

Reports name packs and blobs by their ids only: file names and paths never leave the agent."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from backend.schemas import MAX_INT64, Camel, NonNegative, Uuid

ProblemKind = Literal[
    "missing_snapshot",
    "missing_tree",
    "missing_blob",
    "missing_pack",
    "damaged_pack",
    "damaged_blob",
    "unreadable",
    "restore_failed",
    "content_mismatch",
]
Percent = Annotated[float, Meta(ge=0, le=100)]
Millis = Annotated[int, Meta(ge=0, le=MAX_INT64)]


class ProblemIn(Camel, forbid_unknown_fields=True):
    """One thing found wrong: ``kind``, the object it concerns (a pack's or blob's hex id, or a
    snapshot's backup id), and what happened in words."""

    kind: ProblemKind
    message: Annotated[str, Meta(min_length=1, max_length=1000)]
    name: Annotated[str, Meta(max_length=64, pattern="^[0-9a-fA-F-]*$")] = ""


Problems = Annotated[list[ProblemIn], Meta(max_length=1000)]


class CheckResultIn(Camel, forbid_unknown_fields=True):
    """What ``backapp-agent check`` found for one configuration's newest snapshot."""

    config_id: Uuid
    backup_id: Uuid
    ok: bool
    trees: NonNegative = 0
    blobs: NonNegative = 0
    packs: NonNegative = 0
    packs_read: NonNegative = 0
    bytes_read: NonNegative = 0
    problems: Problems = msgspec.field(default_factory=list)


class RepoCheckRequest(Camel, forbid_unknown_fields=True):
    """``POST /api/agent/repo/check``."""

    read_data: Percent
    duration: Millis
    results: Annotated[list[CheckResultIn], Meta(min_length=1, max_length=1000)]


class RepoCheckResponse(Camel):
    recorded: int
    alerts_opened: int
    success: bool = True


class DrillRequest(Camel, forbid_unknown_fields=True):
    """``POST /api/agent/drill``: one restore drill of a configuration's newest snapshot."""

    config_id: Uuid
    backup_id: Uuid
    ok: bool
    sample: Annotated[int, Meta(ge=0, le=1000)]
    """Files chosen."""
    files: Annotated[int, Meta(ge=0, le=1000)]
    """Files restored and verified."""
    bytes: NonNegative
    duration: Millis
    time_to_first_byte: Millis | None = None
    throughput: Annotated[float, Meta(ge=0)] | None = None
    """Bytes per second while the sample was restored."""
    snapshot_bytes: NonNegative = 0
    projected_seconds: Annotated[float, Meta(ge=0)] | None = None
    """The time a restore of the whole snapshot would take at the measured rate."""
    error: Annotated[str, Meta(max_length=1000)] | None = None
    problems: Problems = msgspec.field(default_factory=list)


class DrillResponse(Camel):
    summary: str
    success: bool = True
