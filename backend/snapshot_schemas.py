"""Request and response shapes of the snapshot endpoints (``docs/agent-api.md``, "Extensions:
snapshots"). Limits here are the API's documented limits; Litestar checks them before a handler
runs."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from backend.run_schemas import (
    LeaseOut,
)
from backend.schemas import (
    Attempt,
    Camel,
    FileError,
    NonNegative,
    Trigger,
    Uuid,
)

ObjectKind = Literal["config", "data", "index", "snapshot"]
ObjectName = Annotated[str, Meta(min_length=1, max_length=64)]
Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]
MAX_OBJECTS = 256
Objects = Annotated[list["ObjectIn"], Meta(min_length=1, max_length=MAX_OBJECTS)]
ReadRefs = Annotated[list["ObjectRef"], Meta(min_length=1, max_length=MAX_OBJECTS)]
Bitmap = Annotated[str, Meta(max_length=8 * 1024 * 1024)]


class SnapshotStartRequest(Camel, forbid_unknown_fields=True):
    config_id: Uuid
    lease_token: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    trigger: Trigger | None = None
    attempt: Attempt = 1
    max_attempts: Attempt | None = None
    run_request_id: Uuid | None = None


class ParentOut(Camel):
    backup_id: str
    completed_at: str | None


class RepositoryOut(Camel):
    agent_id: str
    initialized: bool
    pack_count: int
    live_packs: str


class SnapshotStartResponse(Camel):
    backup_id: str
    lease: LeaseOut | None
    parent: ParentOut | None
    repository: RepositoryOut
    success: bool = True


class ObjectIn(Camel, forbid_unknown_fields=True):
    kind: ObjectKind
    name: ObjectName
    size: Annotated[int, Meta(ge=1)]
    sha256: Sha256


class ObjectsRequest(Camel, forbid_unknown_fields=True):
    backup_id: Uuid
    objects: Objects


class PutOut(Camel):
    url: str
    method: str
    headers: dict[str, str]
    expires_at: str


class ObjectSlotOut(Camel):
    kind: str
    name: str
    exists: bool
    seq: int | None = None
    upload: PutOut | None = None


class ObjectsResponse(Camel):
    objects: list[ObjectSlotOut]
    success: bool = True


class SnapshotCompleteRequest(Camel, forbid_unknown_fields=True):
    backup_id: Uuid
    status: Literal["completed", "failed"]
    files_processed: NonNegative = 0
    size: NonNegative = 0
    new_bytes: NonNegative = 0
    duration: NonNegative = 0
    errors: Annotated[
        list[FileError | Annotated[str, Meta(max_length=4000)]], Meta(max_length=10000)
    ] = msgspec.field(default_factory=list)
    packs: Bitmap = ""
    indexes: Annotated[list[Sha256], Meta(max_length=10_000)] = msgspec.field(default_factory=list)
    error: Annotated[str, Meta(max_length=4000)] | None = None


class SnapshotCompleteResponse(Camel):
    status: str
    success: bool = True


class SnapshotAbortRequest(Camel, forbid_unknown_fields=True):
    backup_id: Uuid
    reason: Annotated[str, Meta(max_length=4000)] = ""
    cancelled: bool = False


class ObjectRef(Camel, forbid_unknown_fields=True):
    kind: ObjectKind
    name: ObjectName


class RepoReadRequest(Camel, forbid_unknown_fields=True):
    objects: ReadRefs


class ReadOut(Camel):
    kind: str
    name: str
    size: int
    url: str
    method: str
    expires_at: str


class RepoReadResponse(Camel):
    objects: list[ReadOut]
    missing: list[ObjectRef]
    success: bool = True


class ListedOut(Camel):
    name: str
    size: int
    seq: int | None = None


class RepoListResponse(Camel):
    objects: list[ListedOut]
    next: str | None
    success: bool = True
