"""The contract between the engine and a BackApp server: wire types and the seams the engine talks to.

Both sides use this module: the agent decodes the server's answers into these types and reports its
results with them; the server's own server-side mode implements the seams against its services
instead of over HTTP. Four parts:

- the wire types of the agent API (``docs/agent-api.md``), decoded with msgspec; unknown fields are
  ignored, so a newer server that adds fields keeps working with this agent;
- the wire types of the restore extension (``docs/agent-api.md``, "Extensions: restores");
- the messages of a backup's calls (``StartBackup``, ``SignPart``, ``CompleteUpload``,
  ``AbortUpload``, ``CompleteBackup``): one typed message per ``ControlPlane`` call, each with the
  JSON body of its endpoint (``to_json``);
- the results of a backup and of a run;
- the seams: ``ControlPlane`` (the agent API), ``LeasePlane`` (its schedule/lease/progress
  extensions) and ``Storage`` (PUTs to pre-signed URLs), with ``Body``, what a PUT sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "AbortUpload",
    "AgentMode",
    "AgentRef",
    "BackupInfo",
    "BackupOptions",
    "BackupResult",
    "Body",
    "CompactAsk",
    "CompleteBackup",
    "CompleteUpload",
    "ConfigInfo",
    "ControlPlane",
    "Destination",
    "FileError",
    "Heartbeat",
    "Lease",
    "LeasePlane",
    "PartTicket",
    "RestoreJob",
    "RestoreTicket",
    "RunRequest",
    "RunResult",
    "SignPart",
    "Source",
    "StartBackup",
    "StartResponse",
    "Storage",
    "UpdateOffer",
    "UploadTicket",
    "UploadedPart",
]


# -- the agent API --------------------------------------------------------------------------------

AgentMode = Literal["daemon", "tray", "oneshot"]
"""How an agent runs, as its heartbeat says (``mode``): always on (``daemon``, ``tray``), or once
per run from cron or a timer (``oneshot``), silent between runs."""


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
    drill: dict[str, Any] | None = None
    """Extension: restore drills of a snapshot config, ``{"every": "daily|weekly|monthly",
    "sample": N}``; ``None``: none."""
    limits: dict[str, Any] | None = None
    """Extension: this config's own bandwidth limits (``bandwidth``'s JSON form), which replace
    the agent's while it backs up; ``None``: the agent's."""
    pre_command: str | None = None
    """Extension: a shell command run before the backup (only where the agent allows server
    commands); a failure stops the backup."""
    post_command: str | None = None
    """Extension: a shell command run after the backup, whatever its outcome."""
    command_timeout_seconds: int = 600
    """Extension: how long ``pre_command`` / ``post_command`` may run before they are killed."""
    snapshot: str | None = None
    """Extension: ``"vss"`` (Windows shadow copy) or ``"apfs"`` (macOS local snapshot) to back up
    from; ``None``: the live files."""


class ConfigInfo(msgspec.Struct, frozen=True):
    """A backup configuration assigned to this agent (``GET /api/agent/configs``; the spec's
    ``BackupConfig``, a name this code leaves to the server's table)."""

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
    restore_requests: list[str] = msgspec.field(default_factory=list)
    """Ids of restores asked for from the web console that wait for this agent (extension)."""
    features: list[str] = msgspec.field(default_factory=list)
    """Extensions the server understands (``progress-by-config``: progress before the log opens);
    empty from an older server."""
    compact: CompactAsk | None = None
    """Set when the server asks this agent to compact its snapshot repository (extension)."""
    limits: dict[str, Any] | None = None
    """Extension: the agent's bandwidth limits from the web console (``bandwidth``'s JSON form);
    ``None``: none."""
    config_limits: dict[str, Any] | None = None
    """Extension: ``{configId: limits}`` for this agent's configs that set their own
    ``options.limits``; ``None`` from an older server."""
    parallel_backups: Any = None
    """Extension: how many configs to back up at once, set from the web console (1-4; it replaces
    the machine's own ``parallelBackups``); ``None``: not set there, or an older server."""
    update: dict[str, Any] | None = None
    """Extension: the agent build this agent should run (``UpdateOffer``'s fields: version, a
    pre-signed URL, sha256, size, signature); ``None``: stay as it is, and from an older server.
    Kept loose here so that a malformed offer costs the update, never the heartbeat."""


class UpdateOffer(msgspec.Struct, frozen=True, rename="camel"):
    """A build the server offers (the heartbeat's ``update``): where to download it, and what it
    must be. The agent checks every field against the release key's signature before running it."""

    version: str
    url: str
    sha256: str
    size: int
    signature: str


class CompactAsk(msgspec.Struct, frozen=True, rename="camel"):
    """The server's request to compact (``compact`` in the heartbeat's answer)."""

    requested_at: str = ""


class RestoreJob(msgspec.Struct, frozen=True, rename="camel"):
    """A restore asked for from the web console, as the agent takes it
    (``POST /api/agent/restores/{id}/start``): ``paths`` are ``PathFilter`` patterns (empty:
    everything), ``target`` a folder on this machine, ``conflict`` ``keep-both`` or
    ``overwrite``."""

    id: str
    backup_id: str
    target: str
    paths: list[str] = msgspec.field(default_factory=list)
    conflict: str = "keep-both"


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


# -- the restore extension ------------------------------------------------------------------------


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
    type: str = "full"
    """``full`` (one archive) or ``incremental`` (a snapshot in this agent's repository)."""
    new_bytes: int | None = None
    """A snapshot's new data (``size`` is then the bytes of the files it holds)."""
    agent_id: str | None = None
    """The agent that made it: its repository holds a snapshot (another agent's when this one
    inherits it; ``None`` from a server too old to say)."""


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


# -- the messages of a backup's calls -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StartBackup:
    """``backup/start``: open a backup's log and its upload (``ControlPlane.start_backup``)."""

    config_id: str
    filename: str
    filesize: int
    """The archive's size as far as known (an estimate before a multipart upload)."""
    multipart: bool = False
    size: int | None = None
    """A single PUT: the archive's exact size, which the server signs into the URL."""
    sha256: str | None = None
    """A single PUT: the archive's hex SHA-256, which the server signs into the URL."""
    part_checksum: str | None = None
    """``"crc32"`` only for a server whose heartbeat ``features`` list ``part-crc32``; the answer's
    ``upload.part_checksum`` says what the parts carry."""
    trigger: str | None = None
    """The schedule extension's tags (``LeasePlane``): what started the run, which attempt of
    how many, the *Back Up Now* request it answers. ``None``: not sent."""
    attempt: int | None = None
    max_attempts: int | None = None
    run_request_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "configId": self.config_id,
            "filename": self.filename,
            "filesize": self.filesize,
            "multipart": self.multipart,
        }
        for name, value in (
            ("size", self.size),
            ("sha256", self.sha256),
            ("trigger", self.trigger),
            ("attempt", self.attempt),
            ("maxAttempts", self.max_attempts),
            ("runRequestId", self.run_request_id),
            ("partChecksum", self.part_checksum),
        ):
            if value is not None:
                body[name] = value
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class SignPart:
    """``backup/upload/part``: a pre-signed URL for one part (``ControlPlane.part_url``), with
    exactly one of ``sha256`` (hex) and ``crc32`` (base64): the upload's part checksum."""

    log_id: str
    part_number: int
    size: int
    sha256: str | None = None
    crc32: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "logId": self.log_id,
            "partNumber": self.part_number,
            "size": self.size,
        }
        if self.crc32 is not None:
            body["crc32"] = self.crc32
        else:
            body["sha256"] = self.sha256
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteUpload:
    """``backup/upload/complete``: assemble a multipart upload from its parts
    (``ControlPlane.complete_upload``)."""

    log_id: str
    parts: Sequence[UploadedPart]
    crc32: str | None = None
    """An upload with CRC32 parts: the whole archive's CRC32 (base64), which storage checks the
    assembled object against."""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "logId": self.log_id,
            "parts": msgspec.to_builtins(list(self.parts)),
        }
        if self.crc32 is not None:
            body["objectCrc32"] = self.crc32
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortUpload:
    """``backup/upload/abort``: drop a multipart upload's parts (``ControlPlane.abort_upload``)."""

    log_id: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"logId": self.log_id, "reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteBackup:
    """``backup/complete``: record how a backup ended (``ControlPlane.complete_backup``)."""

    log_id: str
    status: str
    """``"completed"`` or ``"failed"``."""
    files_processed: int
    bytes_transferred: int
    duration_ms: int
    errors: Sequence[Mapping[str, str]] = ()
    """Per-file errors (``{"path", "message"}``)."""
    size: int | None = None
    sha256: str | None = None
    error: str | None = None
    """Why it failed."""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "logId": self.log_id,
            "status": self.status,
            "filesProcessed": self.files_processed,
            "bytesTransferred": self.bytes_transferred,
            "duration": self.duration_ms,
            "errors": [dict(e) for e in self.errors],
        }
        for name, value in (("size", self.size), ("sha256", self.sha256), ("error", self.error)):
            if value is not None:
                body[name] = value
        return body


# -- results of a backup and of a run -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileError:
    """A per-file problem: the file was skipped or archived incompletely, the backup went on."""

    path: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupResult:
    """The outcome of one config's backup."""

    config_id: str
    config_name: str = ""
    status: Literal["completed", "failed", "cancelled"]
    """``cancelled``: stopped on purpose (the user, a signal), which is not a failure."""
    error: str | None = None
    """Why the backup failed or was cancelled (``None`` when it completed)."""
    log_id: str | None = None
    filename: str | None = None
    s3_path: str | None = None
    size: int = 0
    """Bytes of the archive as uploaded."""
    sha256: str | None = None
    files_processed: int = 0
    bytes_read: int = 0
    """Bytes of file content read from disk."""
    duration_ms: int = 0
    started_at: str = ""
    finished_at: str = ""
    errors: tuple[FileError, ...] = ()
    multipart: bool = False
    backup_type: str = "full"
    """``full`` (one archive) or ``incremental`` (a snapshot: ``size`` is then the new data it
    uploaded, ``total_bytes`` the size of the files it holds)."""
    total_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def to_json(self) -> dict[str, object]:
        return {
            "configId": self.config_id,
            "configName": self.config_name,
            "status": self.status,
            "error": self.error,
            "logId": self.log_id,
            "filename": self.filename,
            "s3Path": self.s3_path,
            "size": self.size,
            "sha256": self.sha256,
            "filesProcessed": self.files_processed,
            "bytesRead": self.bytes_read,
            "duration": self.duration_ms,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "errorCount": len(self.errors),
            "errors": [e.to_json() for e in self.errors[:100]],
            "multipart": self.multipart,
            "type": self.backup_type,
            "totalBytes": self.total_bytes,
        }


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of a run: one result per config, and a run-level error if the run could not even
    start (server unreachable, key refused)."""

    results: tuple[BackupResult, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.results)

    @property
    def cancelled(self) -> bool:
        """Something was cancelled and nothing failed (``ok`` is ``False`` then too)."""
        return (
            self.error is None
            and any(r.status == "cancelled" for r in self.results)
            and all(r.status in ("completed", "cancelled") for r in self.results)
        )

    @property
    def has_file_errors(self) -> bool:
        return any(r.errors for r in self.results)


# -- the seams ------------------------------------------------------------------------------------


class ControlPlane(Protocol):
    """What the engine needs from the BackApp server (the agent API of ``docs/agent-api.md``)."""

    def heartbeat(self, *, version: str, platform: str) -> Heartbeat: ...

    def list_configs(self) -> list[ConfigInfo]: ...

    def start_backup(self, request: StartBackup) -> StartResponse: ...

    def part_url(self, request: SignPart) -> PartTicket: ...

    def complete_upload(self, request: CompleteUpload) -> int:
        """The size storage assembled (``-1`` when the server did not say)."""
        ...

    def abort_upload(self, request: AbortUpload) -> None: ...

    def complete_backup(self, request: CompleteBackup) -> str:
        """The status the server recorded (it may refuse a ``completed``)."""
        ...

    def send_log(
        self, level: str, message: str, metadata: Mapping[str, Any] | None = None
    ) -> None: ...


class LeasePlane(Protocol):
    """The schedule/lease/progress extensions (``docs/agent-api.md``), which a scheduled or requested
    run needs on top of ``ControlPlane``. Such a plane also sends the tags of ``StartBackup``
    (``trigger``, ``attempt``, ``max_attempts``, ``run_request_id``)."""

    def acquire_lease(
        self,
        config_id: str,
        ttl_seconds: int,
        *,
        instance: str | None = None,
        take_over: Sequence[str] = (),
    ) -> Lease:
        """Take the config's run lease for this process (``instance``); a lease that one of the
        ``take_over`` processes (dead ones of this agent) holds is taken over at once."""
        ...

    def renew_lease(self, config_id: str, token: str, ttl_seconds: int) -> Lease: ...

    def release_lease(self, config_id: str, token: str) -> None: ...

    def send_progress(self, payload: Mapping[str, Any]) -> None: ...


Body = bytes | bytearray | memoryview
"""A request body, or one piece of it."""


class Storage(Protocol):
    """Where archive bytes go: a PUT to a pre-signed URL. Returns the ``ETag`` (if any).

    ``body`` is one buffer or a sequence of buffers sent back to back (no joined copy is made);
    ``put`` may be called again with the same body to retry."""

    def put(
        self, url: str, body: Body | Sequence[Body], headers: Mapping[str, str]
    ) -> str | None: ...
