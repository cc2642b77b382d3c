"""Wire types of the agent API (``docs/agent-api.md``), decoded with msgspec.

Unknown fields are ignored, so a newer server that adds fields keeps working with this agent.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Source(msgspec.Struct, frozen=True):
    """One folder (or file) to back up, as a path on the agent's machine."""

    path: str


class Destination(msgspec.Struct, frozen=True, rename="camel"):
    """Where the server stores the archives (informational: the agent only uses pre-signed URLs)."""

    bucket: str | None = None
    region: str | None = None
    prefix: str | None = None


class BackupOptions(msgspec.Struct, frozen=True, rename="camel"):
    """The spec's ``options`` plus the extensions this agent understands."""

    type: str = "full"
    compression: bool = True
    encryption: bool = False
    retention_days: int | None = None
    compression_format: str | None = None
    """``"gzip"`` (the default when ``compression`` is true) or ``"zstd"``."""
    exclude_node_modules: bool = False
    """Extension: also skip every ``node_modules`` folder."""
    schedule: dict[str, Any] | None = None
    """Extension: when to run (normalised by the server, ``cron`` always present); ``None``: only
    when asked. See ``desktop_agent.engine.schedule``."""
    retry: dict[str, Any] | None = None
    """Extension: automatic retries of a failed scheduled backup, ``{"attempts", "delaySeconds"}``."""


class BackupConfig(msgspec.Struct, frozen=True):
    """A backup configuration assigned to this agent (``GET /api/agent/configs``)."""

    id: str
    name: str = ""
    sources: list[Source] = msgspec.field(default_factory=list)
    destination: Destination | None = None
    options: BackupOptions = msgspec.field(default_factory=BackupOptions)
    excludes: list[str] = msgspec.field(default_factory=list)


class AgentRef(msgspec.Struct, frozen=True, rename="camel"):
    """Who the server says this key belongs to (extension)."""

    id: str
    name: str


class RunRequest(msgspec.Struct, frozen=True, rename="camel"):
    """A pending *Back Up Now* request (heartbeat ``runRequests`` or a WebSocket ``run`` message)."""

    id: str
    config_id: str
    requested_at: str | None = None


class Lease(msgspec.Struct, frozen=True, rename="camel"):
    """A config's run lease (``POST /api/agent/lease``): renew it before ``expires_at``."""

    token: str
    expires_at: str | None = None


class Heartbeat(msgspec.Struct, frozen=True, rename="camel"):
    """The answer to a heartbeat."""

    agent: AgentRef | None = None
    status: str | None = "online"
    poll_interval: int | None = None
    """Seconds between heartbeats the server expects (extension)."""
    run_requests: list[RunRequest] = msgspec.field(default_factory=list)
    """Pending *Back Up Now* requests for this agent (extension; the fallback of the WebSocket)."""
    features: list[str] = msgspec.field(default_factory=list)
    """Extensions the server understands (``progress-by-config``: progress before the log opens);
    empty from an older server."""


class UploadTicket(msgspec.Struct, frozen=True, rename="camel"):
    """``upload`` of a ``backup/start`` answer: a single pre-signed PUT, or a multipart upload."""

    method: str
    s3_path: str = ""
    url: str | None = None
    headers: dict[str, str] | None = None
    expires_at: str | None = None
    upload_id: str | None = None
    part_size: int | None = None
    max_parts: int | None = None
    part_checksum: str | None = None
    """``MULTIPART``: the checksum each part carries, ``"sha256"`` (also when absent: an older
    server) or ``"crc32"``."""


class StartResponse(msgspec.Struct, frozen=True, rename="camel"):
    log_id: str
    upload: UploadTicket


class PartTicket(msgspec.Struct, frozen=True, rename="camel"):
    """A pre-signed URL for one part of a multipart upload."""

    part_number: int
    url: str
    method: str = "PUT"
    headers: dict[str, str] | None = None
    expires_at: str | None = None


class UploadedPart(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """A part that storage accepted; listed in ``upload/complete`` with the upload's checksum."""

    part_number: int
    etag: str
    sha256: str | None = None
    """Hex SHA-256 (an upload with ``sha256`` parts)."""
    crc32: str | None = None
    """Base64 of the 4 big-endian bytes of the CRC32 (an upload with ``crc32`` parts)."""
