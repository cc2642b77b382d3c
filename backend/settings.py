"""Server settings, read once from the environment.

Every setting has an environment variable; the README's configuration reference lists them all.
Tests set the environment (or build a ``Settings`` directly) before the app is created.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import platformdirs

from backend.private_files import make_private_dir

__all__ = ["Settings", "get_settings", "load_secret"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {raw!r}")


def _env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def _env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def _env_str(name: str, default: str | None = None) -> str | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


def _env_timezone(name: str) -> str:
    value = _env_str(name, "UTC") or "UTC"
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name} must be an IANA time zone such as Europe/Paris, not {value!r}"
        ) from None
    return value


def _env_roots(name: str) -> tuple[str, ...]:
    raw = _env_str(name)
    if not raw:
        return ()
    roots = tuple(os.path.normpath(p) for p in raw.split(os.pathsep) if p.strip())
    for root in roots:
        if not os.path.isabs(root):
            raise ValueError(f"{name}: {root!r} is not an absolute path")
    return roots


def _env_proxies(name: str) -> tuple[str, ...]:
    """Addresses or networks (``10.0.0.11``, ``172.18.0.0/16``), comma-separated."""
    raw = _env_str(name)
    if not raw:
        return ()
    proxies = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        if item == "*":
            raise ValueError(
                f"{name} must name the proxy's addresses, not '*': trusting every peer lets any "
                "client choose the address the sign-in limit counts"
            )
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{name}: {item!r} is not an IP address or network") from None
        proxies.append(item)
    return tuple(proxies)


def _env_redis_url(name: str) -> str | None:
    value = _env_str(name)
    if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{name} must start with redis://, rediss:// or unix://")
    return value


def _env_release_key(name: str) -> str | None:
    value = _env_str(name)
    if value is not None:
        from desktop_agent.engine.releases import BadRelease, parse_public_key

        try:
            parse_public_key(value)
        except BadRelease as exc:
            raise ValueError(f"{name}: {exc} (base64 of the raw 32-byte public key)") from None
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told. Field comments name the environment variable."""

    data_dir: Path
    """``BACKAPP_DATA_DIR``: where the embedded defaults live (SQLite file, local objects, secret key).
    Default: the platform's user data directory for ``backapp``."""

    database_url: str
    """``DATABASE_URL``: ``sqlite:///path/to/file.sqlite3`` or ``postgresql://user:pass@host:port/db``.
    Default: ``sqlite:///{data_dir}/backapp.sqlite3``."""

    host: str = "127.0.0.1"
    """``BACKAPP_HOST``: address ``backapp serve`` listens on."""

    port: int = 8000
    """``BACKAPP_PORT``: port ``backapp serve`` listens on."""

    workers: int = 1
    """``BACKAPP_WORKERS``: server processes started by ``backapp serve``."""

    public_url: str | None = None
    """``BACKAPP_PUBLIC_URL``: the URL agents reach this server at (used to build local-storage upload
    URLs and to decide whether cookies are ``Secure``). Default: ``http://{host}:{port}``."""

    secret_key: bytes = b""
    """``BACKAPP_SECRET_KEY``: server secret for API-key digests and local-storage URL signatures. Default:
    generated once into ``{data_dir}/secret.key`` (0600). Several processes must share the same value."""

    allow_signup: bool = False
    """``BACKAPP_ALLOW_SIGNUP``: let anyone sign up after the first (admin) account exists."""

    auto_migrate: bool = True
    """``BACKAPP_AUTO_MIGRATE``: run pending migrations when ``backapp serve`` starts."""

    poll_interval: int = 30
    """``BACKAPP_POLL_INTERVAL``: seconds between agent heartbeats that the server expects."""

    offline_after_polls: float = 3.0
    """``BACKAPP_OFFLINE_AFTER_POLLS``: an agent is ``offline`` once no heartbeat came for this many poll
    intervals."""

    heartbeat_flush_seconds: float = 2.0
    """``BACKAPP_HEARTBEAT_FLUSH_SECONDS``: how often a process writes buffered ``lastSeen`` values."""

    agent_cache_seconds: float = 2.0
    """``BACKAPP_AGENT_CACHE_SECONDS``: how long a process trusts its in-memory copy of an agent's key
    lookup before reading the database again. Revocations made through this process apply at once;
    this bounds how long another process may still accept a revoked key."""

    agent_rate_limit: int = 600
    """``BACKAPP_AGENT_RATE_LIMIT``: requests per minute per agent key, per server process."""

    login_rate_limit: int = 10
    """``BACKAPP_LOGIN_RATE_LIMIT``: failed logins per account (and 3x that per client address) within
    ``BACKAPP_LOGIN_LOCKOUT_SECONDS`` before further attempts are refused with 429. A browser that
    signed in to the account before is counted on its own (this many failures), not with strangers."""

    login_lockout_seconds: int = 900
    """``BACKAPP_LOGIN_LOCKOUT_SECONDS``: the window of the login limit (and of the pairing limit)."""

    pairing_code_minutes: int = 15
    """``BACKAPP_PAIRING_CODE_MINUTES``: how long a pairing code (*Add a machine*) may be used."""

    pairing_rate_limit: int = 10
    """``BACKAPP_PAIRING_RATE_LIMIT``: failed pairing attempts (unknown, used or expired codes) per
    client address within ``BACKAPP_LOGIN_LOCKOUT_SECONDS`` before further attempts are refused
    with 429, right codes included, so that guessing learns nothing."""

    trusted_proxies: tuple[str, ...] = ()
    """``BACKAPP_TRUSTED_PROXIES``: comma-separated addresses or networks of the reverse proxies in
    front of the server (``127.0.0.1``, ``10.0.0.5``, ``172.18.0.0/16``). Only a connection from one
    of them may say, in ``X-Forwarded-For``/``X-Forwarded-Proto``, who the client is; the client is
    then the last address the proxies did not add themselves. Default: none (the connection's own
    address is the client's). ``*`` is refused."""

    session_days: int = 14
    """``BACKAPP_SESSION_DAYS``: how long a sign-in lasts."""

    presign_seconds: int = 3600
    """``BACKAPP_PRESIGN_SECONDS``: lifetime of pre-signed URLs of whole objects (the single PUT of a
    backup, downloads and restores)."""

    presign_part_seconds: int = 900
    """``BACKAPP_PRESIGN_PART_SECONDS``: lifetime of a multipart upload's part URLs. Agents ask for a
    URL just before each part (and a fresh one for each retry), so this only bounds how long an
    agent whose key was revoked can go on uploading parts with URLs it already holds."""

    multipart_part_size: int = 16 * 1024 * 1024
    """``BACKAPP_MULTIPART_PART_SIZE``: the part size the server recommends to agents (bytes)."""

    s3_bucket: str | None = None
    """``AWS_S3_BUCKET``: when set, backups go to this S3 bucket instead of the local data directory."""

    s3_region: str = "us-east-1"
    """``AWS_REGION`` (or ``AWS_S3_REGION``): the bucket's region."""

    s3_endpoint: str | None = None
    """``AWS_S3_ENDPOINT``: an S3-compatible endpoint (MinIO, R2, …); empty for AWS itself."""

    aws_access_key_id: str | None = field(default=None, repr=False)
    """``AWS_ACCESS_KEY_ID``: the server's only cloud credential (boto3's usual chain applies when unset)."""

    aws_secret_access_key: str | None = field(default=None, repr=False)
    """``AWS_SECRET_ACCESS_KEY``."""

    log_level: str = "info"
    """``BACKAPP_LOG_LEVEL``: debug, info, warning or error."""

    redis_url: str | None = None
    """``BACKAPP_REDIS_URL``: e.g. ``redis://host:6379/0``. Live updates (Back Up Now requests to
    agents' WebSockets, progress and log lines to pages) go through Redis pub/sub, so every server
    process sees every event. Unset: in-memory, which only reaches clients of the same process."""

    task_interval: float = 60.0
    """``BACKAPP_TASK_INTERVAL``: seconds between rounds of the server's periodic tasks
    (maintenance: retention then pruning; alerts, server-side schedules and Back Up Now
    requests)."""

    round_budget_seconds: float = 1.0
    """``BACKAPP_ROUND_BUDGET_SECONDS``: how long one round of retention or alerts works through a
    backlog before it leaves the rest to the next round (0: no limit). Keeps every round short
    whatever the fleet; a backlog drains over several rounds."""

    prune_grace_seconds: float = 86400.0
    """``BACKAPP_PRUNE_GRACE_SECONDS``: packs that no snapshot ever named (left by a failed or
    interrupted run, which the next run reuses) are pruned only once they are this old."""

    compact_grace_seconds: float = 604800.0
    """``BACKAPP_COMPACT_GRACE_SECONDS``: packs a compaction replaced stay in storage this long
    (7 days) before pruning may delete them, so that a compaction committed by a lying or broken
    agent can still be undone (docs/agent-api.md, "Compaction")."""

    catalog_keep: int = 14
    """``BACKAPP_CATALOG_KEEP``: how many catalog copies (the server's database, encrypted, under
    ``server/catalog/`` in the bucket) are kept; older ones are deleted after each new copy."""

    catalog_interval_hours: float = 24.0
    """``BACKAPP_CATALOG_INTERVAL_HOURS``: hours between catalog copies made by the periodic task
    (one is also made after migrations change the schema); 0 turns the periodic copy off."""

    timezone: str = "UTC"
    """``BACKAPP_TIMEZONE``: IANA zone in which server-side schedules (and alerts for configs whose
    agent reported no zone) are evaluated."""

    alert_offline_minutes: int = 1440
    """``BACKAPP_ALERT_OFFLINE_MINUTES``: an ``agent_offline`` alert opens after this many minutes
    without a heartbeat from an active agent that has configs."""

    smtp_host: str | None = None
    """``BACKAPP_SMTP_HOST``: SMTP server for alert e-mails; unset = no e-mail."""

    smtp_port: int = 587
    """``BACKAPP_SMTP_PORT``."""

    smtp_username: str | None = None
    """``BACKAPP_SMTP_USERNAME``: log in when set."""

    smtp_password: str | None = field(default=None, repr=False)
    """``BACKAPP_SMTP_PASSWORD``."""

    smtp_from: str = "backapp@localhost"
    """``BACKAPP_SMTP_FROM``: the sender address of alert e-mails."""

    smtp_starttls: bool = True
    """``BACKAPP_SMTP_STARTTLS``: upgrade the connection with STARTTLS before logging in."""

    alert_webhook_url: str | None = None
    """``BACKAPP_ALERT_WEBHOOK_URL``: every alert (open and resolved) is POSTed there as JSON."""

    notify_timeout: float = 10.0
    """``BACKAPP_NOTIFY_TIMEOUT``: seconds before an SMTP or webhook delivery is given up (retried
    next round)."""

    server_source_roots: tuple[str, ...] = ()
    """``BACKAPP_SERVER_SOURCE_ROOTS``: colon-separated folders under which server-side configs may
    back up paths; unset = server-side execution disabled."""

    release_public_key: str | None = None
    """``BACKAPP_RELEASE_PUBLIC_KEY``: base64 of the raw 32-byte Ed25519 public key that agent
    builds must be signed with (``backapp agent-release add`` refuses any other signature). Unset:
    the release key built into the agent. Set it to the same value as on the agents when you build
    and sign agents of your own."""

    release_cache_seconds: float = 30.0
    """``BACKAPP_RELEASE_CACHE_SECONDS``: how long a server process keeps its copy of the list of
    agent builds before reading it again for heartbeats; a build added or removed with ``backapp
    agent-release`` reaches agents within this. 0: read it for every heartbeat that needs it."""

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def offline_after_seconds(self) -> float:
        return self.poll_interval * self.offline_after_polls

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(
            _env_str("BACKAPP_DATA_DIR") or platformdirs.user_data_dir("backapp", appauthor=False)
        ).expanduser()
        database_url = _env_str("DATABASE_URL") or f"sqlite:///{data_dir / 'backapp.sqlite3'}"
        if not database_url.startswith(("sqlite:", "postgres://", "postgresql://")):
            raise ValueError("DATABASE_URL must start with sqlite:/// or postgresql://")
        secret = _env_str("BACKAPP_SECRET_KEY")
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            host=_env_str("BACKAPP_HOST", "127.0.0.1") or "127.0.0.1",
            port=_env_int("BACKAPP_PORT", 8000, minimum=0),
            workers=_env_int("BACKAPP_WORKERS", 1, minimum=1),
            public_url=_env_str("BACKAPP_PUBLIC_URL"),
            secret_key=secret.encode() if secret else load_secret(data_dir),
            allow_signup=_env_bool("BACKAPP_ALLOW_SIGNUP", False),
            auto_migrate=_env_bool("BACKAPP_AUTO_MIGRATE", True),
            poll_interval=_env_int("BACKAPP_POLL_INTERVAL", 30, minimum=1),
            offline_after_polls=_env_float("BACKAPP_OFFLINE_AFTER_POLLS", 3.0, minimum=1.0),
            heartbeat_flush_seconds=_env_float(
                "BACKAPP_HEARTBEAT_FLUSH_SECONDS", 2.0, minimum=0.05
            ),
            agent_cache_seconds=_env_float("BACKAPP_AGENT_CACHE_SECONDS", 2.0, minimum=0.0),
            agent_rate_limit=_env_int("BACKAPP_AGENT_RATE_LIMIT", 600, minimum=1),
            login_rate_limit=_env_int("BACKAPP_LOGIN_RATE_LIMIT", 10, minimum=1),
            login_lockout_seconds=_env_int("BACKAPP_LOGIN_LOCKOUT_SECONDS", 900, minimum=1),
            pairing_code_minutes=_env_int("BACKAPP_PAIRING_CODE_MINUTES", 15, minimum=1),
            pairing_rate_limit=_env_int("BACKAPP_PAIRING_RATE_LIMIT", 10, minimum=1),
            trusted_proxies=_env_proxies("BACKAPP_TRUSTED_PROXIES"),
            session_days=_env_int("BACKAPP_SESSION_DAYS", 14, minimum=1),
            presign_seconds=_env_int("BACKAPP_PRESIGN_SECONDS", 3600, minimum=60),
            presign_part_seconds=_env_int("BACKAPP_PRESIGN_PART_SECONDS", 900, minimum=60),
            multipart_part_size=_env_int(
                "BACKAPP_MULTIPART_PART_SIZE", 16 * 1024 * 1024, minimum=5 * 1024 * 1024
            ),
            s3_bucket=_env_str("AWS_S3_BUCKET"),
            s3_region=_env_str("AWS_REGION") or _env_str("AWS_S3_REGION") or "us-east-1",
            s3_endpoint=_env_str("AWS_S3_ENDPOINT"),
            aws_access_key_id=_env_str("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_env_str("AWS_SECRET_ACCESS_KEY"),
            log_level=(_env_str("BACKAPP_LOG_LEVEL", "info") or "info").lower(),
            redis_url=_env_redis_url("BACKAPP_REDIS_URL"),
            task_interval=_env_float("BACKAPP_TASK_INTERVAL", 60.0, minimum=0.1),
            round_budget_seconds=_env_float("BACKAPP_ROUND_BUDGET_SECONDS", 1.0),
            prune_grace_seconds=_env_float("BACKAPP_PRUNE_GRACE_SECONDS", 86400.0),
            compact_grace_seconds=_env_float("BACKAPP_COMPACT_GRACE_SECONDS", 604800.0),
            catalog_keep=_env_int("BACKAPP_CATALOG_KEEP", 14, minimum=1),
            catalog_interval_hours=_env_float("BACKAPP_CATALOG_INTERVAL_HOURS", 24.0),
            timezone=_env_timezone("BACKAPP_TIMEZONE"),
            alert_offline_minutes=_env_int("BACKAPP_ALERT_OFFLINE_MINUTES", 1440, minimum=1),
            smtp_host=_env_str("BACKAPP_SMTP_HOST"),
            smtp_port=_env_int("BACKAPP_SMTP_PORT", 587, minimum=1),
            smtp_username=_env_str("BACKAPP_SMTP_USERNAME"),
            smtp_password=_env_str("BACKAPP_SMTP_PASSWORD"),
            smtp_from=_env_str("BACKAPP_SMTP_FROM", "backapp@localhost") or "backapp@localhost",
            smtp_starttls=_env_bool("BACKAPP_SMTP_STARTTLS", True),
            alert_webhook_url=_env_str("BACKAPP_ALERT_WEBHOOK_URL"),
            notify_timeout=_env_float("BACKAPP_NOTIFY_TIMEOUT", 10.0, minimum=0.1),
            server_source_roots=_env_roots("BACKAPP_SERVER_SOURCE_ROOTS"),
            release_public_key=_env_release_key("BACKAPP_RELEASE_PUBLIC_KEY"),
            release_cache_seconds=_env_float("BACKAPP_RELEASE_CACHE_SECONDS", 30.0),
        )


def load_secret(data_dir: Path) -> bytes:
    """The server secret from ``{data_dir}/secret.key``, created (0600) on first use."""
    path = data_dir / "secret.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    make_private_dir(data_dir)
    value = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its secret
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
