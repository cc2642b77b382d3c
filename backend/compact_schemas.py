"""Request and response shapes of the compaction endpoints (``docs/agent-api.md``, "Extensions:
compaction"). Litestar checks these limits before a handler runs."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from backend.schemas import Camel, Uuid

# ``ObjectIn``: the forward reference in ``Objects`` is resolved in this module.
from backend.snapshot_schemas import (  # noqa: F401
    Bitmap,
    ObjectIn,
    Objects,
    RepositoryOut,
    Sha256,
)

MAX_COMMIT_SNAPSHOTS = 100_000
MAX_COMMIT_PACKS = 100_000


class CompactStartRequest(Camel, forbid_unknown_fields=True):
    pass


class CompactSnapshotOut(Camel):
    backup_id: str
    config_id: str | None
    packs: str
    """The pack bitmap the snapshot holds now (base64 of zlib of the bits)."""


class CompactStartResponse(Camel):
    compaction_id: str
    expires_at: str
    requested_at: str | None
    repository: RepositoryOut
    snapshots: list[CompactSnapshotOut]
    success: bool = True


class CompactObjectsRequest(Camel, forbid_unknown_fields=True):
    compaction_id: Uuid
    objects: Objects


class CompactSnapshotIn(Camel, forbid_unknown_fields=True):
    backup_id: Uuid
    packs: Bitmap


class CompactCommitRequest(Camel, forbid_unknown_fields=True):
    compaction_id: Uuid
    packs: Annotated[list[Sha256], Meta(max_length=MAX_COMMIT_PACKS)] = msgspec.field(
        default_factory=list
    )
    """The packs this compaction wrote."""
    indexes: Annotated[list[Sha256], Meta(max_length=10_000)] = msgspec.field(default_factory=list)
    """The index objects listing them."""
    snapshots: Annotated[list[CompactSnapshotIn], Meta(max_length=MAX_COMMIT_SNAPSHOTS)] = (
        msgspec.field(default_factory=list)
    )
    """The snapshots whose pack bitmaps change, with their new bitmaps."""


class CompactCommitResponse(Camel):
    status: Literal["committed"]
    snapshots: int
    packs_written: int
    bytes_written: int
    packs_retired: int
    bytes_retired: int
    release_at: str | None
    """When pruning may delete the retired packs (the grace window's end)."""
    success: bool = True


class CompactAbortRequest(Camel, forbid_unknown_fields=True):
    compaction_id: Uuid
    reason: Annotated[str, Meta(max_length=4000)] = ""


class CompactAbortResponse(Camel):
    status: str
    success: bool = True
