"""What an agent sends while a run is in flight: the parts of an archive's multipart upload, the run
lease that proves its runner is alive, and progress events (msgspec structs, camelCase JSON; see
``backend.schemas`` for the shared field types)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from backend.schemas import Camel, Crc32B64, Hex64, NonNegative, Uuid


class PartRequest(Camel):
    log_id: Uuid
    part_number: Annotated[int, Meta(ge=1, le=10000)]
    size: Annotated[int, Meta(ge=1, le=5 * 1024**3)]
    sha256: Hex64 | None = None
    crc32: Crc32B64 | None = None
    """Exactly one of ``sha256`` and ``crc32``: the upload's part checksum."""


class PartUrl(Camel):
    part_number: int
    url: str
    method: Literal["PUT"]
    headers: dict[str, str]
    expires_at: str


class PartResponse(Camel):
    part: PartUrl
    success: bool = True


class UploadedPart(Camel):
    part_number: Annotated[int, Meta(ge=1, le=10000)]
    etag: Annotated[str, Meta(min_length=1, max_length=200)]
    sha256: Hex64 | None = None
    crc32: Crc32B64 | None = None
    """Exactly one of ``sha256`` and ``crc32``: the upload's part checksum."""


class UploadCompleteRequest(Camel):
    log_id: Uuid
    parts: Annotated[list[UploadedPart], Meta(min_length=1, max_length=10000)]
    object_crc32: Crc32B64 | None = None
    """With CRC32 parts: the CRC32 of the whole archive, computed over the stream in the same pass
    as its SHA-256. Storage checks the object it assembles against it (docs/agent-api.md)."""


class UploadCompleteResponse(Camel):
    size: int
    success: bool = True


class AbortRequest(Camel):
    log_id: Uuid
    reason: Annotated[str, Meta(max_length=4000)] = "aborted by the agent"


LeaseTtl = Annotated[int, Meta(ge=30, le=3600)]
LeaseToken = Annotated[str, Meta(min_length=1, max_length=64)]
InstanceId = Annotated[str, Meta(min_length=1, max_length=64, pattern="^[A-Za-z0-9_.:-]+$")]


class LeaseRequest(Camel):
    config_id: Uuid
    ttl_seconds: LeaseTtl = 300
    instance: InstanceId | None = None
    """The agent's process: recorded on the lease, so that a restarted agent can name it."""
    take_over: Annotated[list[InstanceId], Meta(max_length=32)] = msgspec.field(
        default_factory=list
    )
    """Dead processes of this same agent: a live lease one of them holds is taken over at once
    (the run it guarded becomes ``interrupted``) instead of a 409."""


class LeaseRenewRequest(Camel):
    config_id: Uuid
    token: LeaseToken
    ttl_seconds: LeaseTtl = 300


class LeaseReleaseRequest(Camel):
    config_id: Uuid
    token: LeaseToken


class LeaseOut(Camel):
    token: str
    expires_at: str


class LeaseResponse(Camel):
    lease: LeaseOut
    success: bool = True


Phase = Literal["scanning", "archiving", "uploading", "finishing"]


class ProgressRequest(Camel):
    """A progress event (``POST /api/agent/backup/progress``, or ``{"type": "progress", …}`` over
    the agent's WebSocket). Exactly one of ``log_id`` (a running backup) and ``config_id`` (a run
    whose log is not open yet: phases ``scanning`` and ``archiving`` only)."""

    phase: Phase
    log_id: Uuid | None = None
    config_id: Uuid | None = None
    files_done: NonNegative | None = None
    files_total: NonNegative | None = None
    bytes_done: NonNegative | None = None
    bytes_total: NonNegative | None = None
    rate: Annotated[float, Meta(ge=0)] | None = None
    eta: Annotated[float, Meta(ge=0)] | None = None
    waiting: Annotated[str, Meta(max_length=500)] | None = None
    """While the upload retries through a storage (or server) outage: what it waits for, in words
    (``waiting for storage: …``); absent otherwise."""
    limit: Annotated[str, Meta(max_length=200)] | None = None
    """The agent's bandwidth limit in words while one holds (``limited to 10 Mbit/s``, ``paused:
    on battery power``); absent otherwise."""


class RunRequestOut(Camel):
    id: str
    config_id: str
    status: Literal["pending", "started", "expired"]
    requested_at: str


class RunRequestResponse(Camel):
    run_request: RunRequestOut
    success: bool = True
