"""Request and response shapes (msgspec structs; JSON is camelCase as in the spec).

Litestar validates request bodies against these before a handler runs and builds the OpenAPI schema
from them, so the constraints here are the API's documented limits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

Name = Annotated[str, Meta(min_length=1, max_length=200)]
ShortText = Annotated[str, Meta(max_length=64)]
Email = Annotated[str, Meta(min_length=3, max_length=320)]
Password = Annotated[str, Meta(min_length=1, max_length=1024)]
Hex64 = Annotated[str, Meta(pattern="^[0-9a-fA-F]{64}$")]
Crc32B64 = Annotated[str, Meta(pattern="^[A-Za-z0-9+/]{6}==$")]
"""A CRC32 as S3's ``x-amz-checksum-crc32`` carries it: base64 of its 4 big-endian bytes."""
PartChecksum = Literal["sha256", "crc32"]
Uuid = Annotated[str, Meta(min_length=1, max_length=64)]
MAX_INT64 = 2**63 - 1
"""The largest integer the databases store (a signed 64-bit column)."""
NonNegative = Annotated[int, Meta(ge=0, le=MAX_INT64)]
Level = Literal["debug", "info", "warning", "error"]
BackupStatus = Literal["running", "completed", "failed", "cancelled", "interrupted", "expired"]
AgentStatus = Literal["online", "idle", "offline", "error"]
"""``idle``: a one-shot agent between its runs; ``error`` is no longer produced."""
AgentMode = Literal["daemon", "tray", "oneshot"]
ExecutionMode = Literal["server", "agent"]


class Camel(Struct, rename="camel", omit_defaults=False):
    pass


# --- accounts ---------------------------------------------------------------------------------


class Credentials(Camel):
    email: Email
    password: Password


class UserOut(Camel):
    id: str
    email: str
    is_admin: bool


class UserResponse(Camel):
    user: UserOut
    success: bool = True


class OkResponse(Camel):
    success: bool = True


# --- agent API (the spec's shapes) -------------------------------------------------------------


class RegisterRequest(Camel):
    name: Name
    platform: Annotated[str, Meta(max_length=32)] | None = None


class RegisteredAgent(Camel):
    id: str
    name: str
    api_key: str
    status: AgentStatus


class RegisterResponse(Camel):
    agent: RegisteredAgent
    success: bool = True


class HeartbeatRequest(Camel):
    version: ShortText | None = None
    platform: Annotated[str, Meta(max_length=32)] | None = None
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    """The agent's IANA time zone (``Europe/Paris``): its configs' schedules run in it."""
    mode: AgentMode | None = None
    """``daemon``/``tray`` (always on) or ``oneshot`` (runs from cron); absent: unchanged."""


class AgentRef(Camel):
    id: str
    name: str


class RunRequestRef(Camel):
    """A pending Back Up Now request, as an agent sees it."""

    id: str
    config_id: str
    requested_at: str


class HeartbeatResponse(Camel):
    status: AgentStatus
    poll_interval: int
    agent: AgentRef
    run_requests: list[RunRequestRef] = msgspec.field(default_factory=list)
    restore_requests: list[str] = msgspec.field(default_factory=list)
    """Ids of restores asked for from the web console that wait for this agent."""
    features: list[str] = msgspec.field(default_factory=list)
    """Extensions this server understands (``progress-by-config``); an older server sends none."""
    compact: CompactRequestOut | None = None
    """Set when maintenance asks this agent to compact its repository (``null``: not asked)."""
    limits: dict[str, Any] | None = None
    """The agent's bandwidth limits (``desktop_agent.engine.bandwidth``); ``null``: none."""
    config_limits: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """``{configId: limits}``: this agent's configs with their own ``options.limits``."""
    parallel_backups: int | None = None
    """How many configs the agent backs up at once (1-4); ``null``: the machine's own setting."""
    update: UpdateOut | None = None
    """A signed build to move to (docs/agent-api.md, "Extensions: agent updates"); ``null``: none."""
    success: bool = True


class UpdateOut(Camel):
    """An agent build to download (1-hour URL) and check before it is run."""

    version: str
    url: str
    sha256: str
    size: int
    signature: str


class CompactRequestOut(Camel):
    """The server asks the agent to compact its snapshot repository (docs/agent-api.md)."""

    requested_at: str


class Source(Camel):
    path: Annotated[str, Meta(min_length=1, max_length=4096)]


class Destination(Camel):
    bucket: str
    region: str
    prefix: str


ScheduleSpec = dict[str, Any] | str | None
"""``options.schedule``: null, ``{"preset": …}`` or ``{"cron": …}``, stored normalised (with cron)."""
AlertGrace = Annotated[int, Meta(ge=1, le=10080)]


class RetryOptions(Camel, forbid_unknown_fields=True):
    """Retries of a failed scheduled backup (``attempts`` counts the first); the delay doubles."""

    attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    delay_seconds: Annotated[int, Meta(ge=1, le=86400)] = 60


BackupType = Literal["full", "incremental"]


RetentionCount = Annotated[int, Meta(ge=0, le=10000)]


class RetentionPolicy(Camel, forbid_unknown_fields=True):
    """Grandfather-father-son rules (``options.retention``): keep the newest backup of each of the
    last N hours, days, ISO weeks, months and years that have one, in the time zone of the machine
    that runs the config, and the newest ``keepLast`` backups. 0 disables a rule."""

    keep_last: RetentionCount = 0
    keep_hourly: RetentionCount = 0
    keep_daily: RetentionCount = 0
    keep_weekly: RetentionCount = 0
    keep_monthly: RetentionCount = 0
    keep_yearly: RetentionCount = 0


DrillEvery = Literal["daily", "weekly", "monthly"]


class DrillOptions(Camel, forbid_unknown_fields=True):
    """A restore drill (``options.drill``): how often the agent restores and verifies a random
    sample of ``sample`` files of the newest snapshot (incremental configurations only)."""

    every: DrillEvery
    sample: Annotated[int, Meta(ge=1, le=1000)] = 20


Command = Annotated[str, Meta(min_length=1, max_length=4096)]
"""A shell command an agent runs around a backup (``preCommand`` / ``postCommand``)."""
CommandTimeout = Annotated[int, Meta(ge=1, le=86400)]


class Options(Camel):
    type: BackupType = "full"
    """``full``: a tar archive a run; ``incremental``: a deduplicated snapshot (agents only)."""
    compression: bool = True
    encryption: bool = False
    retention_days: Annotated[int, Meta(ge=0, le=36500)] = 30
    retention: RetentionPolicy | None = None
    """GFS rules, keeping some backups older than ``retentionDays`` (backend/services/gfs.py)."""
    compression_format: Literal["gzip", "zstd"] = "gzip"
    exclude_node_modules: bool = False
    schedule: ScheduleSpec = None
    retry: RetryOptions = msgspec.field(default_factory=RetryOptions)
    alert_grace_minutes: AlertGrace = 60
    drill: DrillOptions | None = None
    """Restore drills (``null``: none); see ``DrillOptions``."""
    limits: dict[str, Any] | None = None
    """This config's own bandwidth limits, replacing the agent's while it runs."""
    pre_command: Command | None = None
    post_command: Command | None = None
    command_timeout_seconds: CommandTimeout = 600
    snapshot: Literal["vss", "apfs"] | None = None


class RetentionPreviewRequest(Camel, forbid_unknown_fields=True):
    """A policy to try on a config's existing backups; an absent part is the config's own."""

    retention_days: Annotated[int, Meta(ge=0, le=36500)] | UnsetType = UNSET
    retention: RetentionPolicy | None | UnsetType = UNSET


class PreviewBackup(Camel):
    id: str
    type: BackupType
    finished_at: str | None
    size: int | None
    reasons: list[str]
    """Why it is kept (``newest``, ``within 30 days``, ``last``, ``daily``, …); empty if removed."""


class RetentionPreviewResponse(Camel):
    timezone: str
    """The zone the periods are counted in."""
    remove: list[PreviewBackup]
    keep: list[PreviewBackup]
    success: bool = True


class AgentConfig(Camel):
    id: str
    name: str
    sources: list[Source]
    destination: Destination
    options: Options
    excludes: list[str]


class AgentConfigsResponse(Camel):
    configs: list[AgentConfig]
    success: bool = True


Trigger = Literal["manual", "schedule", "retry", "request"]
Attempt = Annotated[int, Meta(ge=1, le=100)]


class StartRequest(Camel):
    config_id: Uuid
    filename: Annotated[str, Meta(min_length=1, max_length=1000)]
    filesize: NonNegative | None = None
    multipart: bool = False
    size: NonNegative | None = None
    sha256: Hex64 | None = None
    trigger: Trigger | None = None
    """What started it; default ``request`` when ``runRequestId`` is given, else ``manual``."""
    attempt: Attempt = 1
    max_attempts: Attempt | None = None
    run_request_id: Uuid | None = None
    part_checksum: PartChecksum = "sha256"
    """With ``multipart``: the checksum every part carries (``crc32`` needs the heartbeat feature
    ``part-crc32``); the whole archive's SHA-256 is reported on complete either way."""


class UploadInfo(Camel):
    method: Literal["PUT", "MULTIPART"]
    expires_at: str
    s3_path: str
    url: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    upload_id: str | None = None
    part_size: int | None = None
    max_parts: int | None = None
    part_checksum: PartChecksum | None = None
    """``MULTIPART`` only: the checksum each part must carry (``sha256`` or ``crc32``)."""


class StartResponse(Camel):
    log_id: str
    upload: UploadInfo
    success: bool = True


class FileError(Camel):
    message: Annotated[str, Meta(max_length=4000)]
    path: Annotated[str, Meta(max_length=8192)] | None = None


class CompleteRequest(Camel):
    log_id: Uuid
    status: Literal["completed", "failed", "cancelled"]
    files_processed: NonNegative | None = None
    bytes_transferred: NonNegative | None = None
    duration: NonNegative | None = None
    errors: Annotated[
        list[FileError | Annotated[str, Meta(max_length=4000)]], Meta(max_length=10000)
    ] = msgspec.field(default_factory=list)
    size: NonNegative | None = None
    sha256: Hex64 | None = None
    error: Annotated[str, Meta(max_length=4000)] | None = None


class CompleteResponse(Camel):
    status: BackupStatus
    success: bool = True


class LogRequest(Camel):
    level: Level
    message: Annotated[str, Meta(min_length=1, max_length=10000)]
    metadata: dict[str, Any] | None = None


# --- owner API ---------------------------------------------------------------------------------


class AgentOut(Camel):
    id: str
    name: str
    status: AgentStatus
    active: bool
    platform: str | None
    version: str | None
    last_seen: str | None
    api_key_prefix: str
    created_at: str
    config_ids: list[str] = msgspec.field(default_factory=list)
    mode: AgentMode | None = None
    """How the agent said it runs (``None``: it did not say; counted as always running)."""
    expected_by: str | None = None
    """A one-shot agent: past this (its next scheduled run plus grace) it is ``offline``."""
    limits: dict[str, Any] | None = None
    """Bandwidth limits set from the web console (``null``: none)."""
    parallel_backups: int | None = None
    """Configs backed up at once, set from the web console (1-4; ``null``: the machine's own)."""


class AgentResponse(Camel):
    agent: AgentOut
    success: bool = True


class AgentListResponse(Camel):
    agents: list[AgentOut]
    next_after: str | None = None
    """The ``after`` cursor of the next page; null on the last one."""
    success: bool = True


class AgentPatch(Camel, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    active: bool | UnsetType = UNSET
    limits: dict[str, Any] | None | UnsetType = UNSET
    """Bandwidth limits (``desktop_agent.engine.bandwidth``); ``null`` removes them."""
    parallel_backups: int | None | UnsetType = UNSET
    """1-4 configs backed up at once; ``null``: the machine's own ``parallelBackups``."""


class AgentLogOut(Camel):
    id: str
    level: str
    message: str
    metadata: dict[str, Any] | None
    timestamp: str


class AgentLogsResponse(Camel):
    logs: list[AgentLogOut]
    next_before: str | None = None
    success: bool = True


class ConfigIn(Camel, forbid_unknown_fields=True):
    name: Name
    sources: Annotated[list[Source], Meta(min_length=1, max_length=100)]
    execution_mode: ExecutionMode = "agent"
    agent_id: Uuid | None = None
    excludes: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=1024)]], Meta(max_length=1000)
    ] = msgspec.field(default_factory=list)
    options: Options = msgspec.field(default_factory=Options)
    destination: dict[str, Any] | None = None


class OptionsPatch(Camel, forbid_unknown_fields=True):
    type: BackupType | UnsetType = UNSET
    compression: bool | UnsetType = UNSET
    encryption: bool | UnsetType = UNSET
    retention_days: Annotated[int, Meta(ge=0, le=36500)] | UnsetType = UNSET
    retention: RetentionPolicy | None | UnsetType = UNSET
    compression_format: Literal["gzip", "zstd"] | UnsetType = UNSET
    exclude_node_modules: bool | UnsetType = UNSET
    schedule: ScheduleSpec | UnsetType = UNSET
    retry: RetryOptions | UnsetType = UNSET
    alert_grace_minutes: AlertGrace | UnsetType = UNSET
    drill: DrillOptions | None | UnsetType = UNSET
    limits: dict[str, Any] | None | UnsetType = UNSET
    pre_command: Command | None | UnsetType = UNSET
    post_command: Command | None | UnsetType = UNSET
    command_timeout_seconds: CommandTimeout | UnsetType = UNSET
    snapshot: Literal["vss", "apfs"] | None | UnsetType = UNSET


class ConfigPatch(Camel, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    sources: Annotated[list[Source], Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    execution_mode: ExecutionMode | UnsetType = UNSET
    agent_id: Uuid | None | UnsetType = UNSET
    excludes: (
        Annotated[list[Annotated[str, Meta(min_length=1, max_length=1024)]], Meta(max_length=1000)]
        | UnsetType
    ) = UNSET
    options: OptionsPatch | UnsetType = UNSET
    destination: dict[str, Any] | None | UnsetType = UNSET


class ConfigOut(Camel):
    id: str
    name: str
    execution_mode: ExecutionMode
    agent_id: str | None
    sources: list[Source]
    excludes: list[str]
    destination: Destination
    options: Options
    created_at: str
    updated_at: str


class ConfigResponse(Camel):
    config: ConfigOut
    success: bool = True


class ConfigListResponse(Camel):
    configs: list[ConfigOut]
    next_after: str | None = None
    """The ``after`` cursor of the next page; null on the last one."""
    success: bool = True


class BackupOut(Camel):
    id: str
    config_id: str | None
    config_name: str
    agent_id: str | None
    status: BackupStatus
    s3_path: str
    filename: str
    filesize: int | None
    size: int | None
    sha256: str | None
    files_processed: int | None
    bytes_transferred: int | None
    duration: int | None
    errors: list[Any]
    error: str | None
    started_at: str
    completed_at: str | None
    deleted_at: str | None = None
    """When retention deleted the object (status ``expired``)."""
    trigger: str = "manual"
    attempt: int = 1
    max_attempts: int = 1
    progress: dict[str, Any] | None = None
    """The latest progress event while the backup runs (null once finished)."""
    type: Literal["full", "incremental"] = "full"
    """``full``: one archive at ``s3Path``; ``incremental``: a snapshot (``size`` is the bytes of
    its files, ``newBytes`` what it uploaded)."""
    new_bytes: int | None = None


class AlertOut(Camel):
    """An open alert: ``kind`` is missed_backup, agent_offline or backup_failed."""

    id: str
    kind: str
    subject: str
    message: str
    created_at: str
    notified_at: str | None = None
    notify_error: str | None = None


class AlertListResponse(Camel):
    alerts: list[AlertOut]
    success: bool = True


class BackupResponse(Camel):
    backup: BackupOut
    success: bool = True


class BackupListResponse(Camel):
    backups: list[BackupOut]
    total: int | None
    """How many match in all (offset paging); null when paging with ``after`` (not counted)."""
    next_after: str | None = None
    """The ``after`` cursor of the next page; null on the last one."""
    success: bool = True


class ConfigLastBackups(Camel):
    """A config's newest backup (any status) and newest completed one, for the dashboard."""

    config_id: str
    last: BackupOut | None
    last_completed: BackupOut | None


class BackupTotals(Camel):
    """What a user has in storage: verified bytes and backup counts by status."""

    stored_bytes: int
    completed: int
    failed: int
    running: int


class ErrorResponse(Camel):
    status: int
    error: str
    detail: str
    field: str | None = None
    success: bool = False


# --- restores ----------------------------------------------------------------------------------


class AgentBackupOut(Camel):
    id: str
    config_id: str | None
    config_name: str
    filename: str
    s3_path: str
    size: int | None
    sha256: str | None
    files_processed: int | None
    started_at: str
    completed_at: str | None
    status: BackupStatus = "completed"
    type: Literal["full", "incremental"] = "full"
    new_bytes: int | None = None
    agent_id: str | None = None
    """The agent that made it (null once that agent is deleted)."""


class AgentBackupsResponse(Camel):
    backups: list[AgentBackupOut]
    success: bool = True


class AgentBackupResponse(Camel):
    backup: AgentBackupOut
    success: bool = True


class RestoreRequest(Camel):
    backup_id: Uuid


class DownloadInfo(Camel):
    backup_id: str
    url: str
    method: Literal["GET"]
    expires_at: str
    size: int | None
    sha256: str | None
    filename: str
    s3_path: str


class RestoreResponse(Camel):
    restore: DownloadInfo
    success: bool = True


class DownloadResponse(Camel):
    download: DownloadInfo
    success: bool = True
